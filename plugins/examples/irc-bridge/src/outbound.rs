//! What a Matrix message becomes on IRC: PRIVMSG, CTCP ACTION or NOTICE lines to a channel,
//! replies as `nick: text` without the quoted fallback, edits as `* new text`, and text cut into
//! lines that fit IRC's line limit as other clients receive them.

use lattice_plugin_sdk::serde_json::Value;

use crate::message::{MAX_LINE_BYTES, line};
use crate::text::{self, ACTION_OVERHEAD};

/// What the server puts in front of a relayed line (`:nick!user@host `) is not known to the
/// sender; this much is kept free for it.
pub const SOURCE_BUDGET: usize = 100;
/// The most lines one Matrix message becomes (more would be a flood on IRC); the last one says
/// how much was left out.
pub const MAX_LINES: usize = 10;

/// How a message goes out on IRC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Privmsg,
    Action,
    Notice,
}

/// A Matrix message ready for IRC: its verb and its text (possibly several lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub verb: Verb,
    pub text: String,
}

/// The event a message replies to (`m.relates_to.m.in_reply_to.event_id`), unless the reply is
/// only a thread's fallback for clients without threads.
pub fn reply_target(content: &Value) -> Option<&str> {
    let relates = &content["m.relates_to"];
    if relates["is_falling_back"] == Value::Bool(true) {
        return None;
    }
    relates["m.in_reply_to"]["event_id"].as_str()
}

/// Whether the message edits another (`rel_type` `m.replace`).
pub fn is_edit(content: &Value) -> bool {
    content["m.relates_to"]["rel_type"] == "m.replace"
}

/// What an `m.room.message` content becomes on IRC, `None` for nothing to say. `reply_nick`:
/// the IRC nick of the sender of the message this one replies to, if it is a reply.
pub fn render(content: &Value, reply_nick: Option<&str>) -> Option<Rendered> {
    let edit = is_edit(content);
    // An edit's new text is in `m.new_content`; the top-level body is a `* …` fallback.
    let shown = if edit { &content["m.new_content"] } else { content };
    let body = shown["body"].as_str()?;
    let verb = match shown["msgtype"].as_str() {
        Some("m.emote") => Verb::Action,
        Some("m.notice") => Verb::Notice,
        _ => Verb::Privmsg,
    };
    let mut text = match shown["msgtype"].as_str() {
        Some(kind @ ("m.image" | "m.file" | "m.video" | "m.audio")) => {
            format!("[{}] {}", kind.trim_start_matches("m."), body.trim())
        }
        _ if edit => body.trim().to_owned(),
        _ => text::strip_reply_fallback(body).trim().to_owned(),
    };
    if text.is_empty() {
        return None;
    }
    if edit {
        text = format!("* {text}");
    } else if let Some(nick) = reply_nick.filter(|_| reply_target(content).is_some()) {
        text = format!("{nick}: {text}");
    }
    Some(Rendered { verb, text })
}

/// The bytes of text that fit in one line of `verb` to `target`, leaving [`SOURCE_BUDGET`].
pub fn text_budget(verb: Verb, target: &str) -> usize {
    let command = match verb {
        Verb::Notice => "NOTICE",
        Verb::Privmsg | Verb::Action => "PRIVMSG",
    };
    // `COMMAND target :text`
    let overhead = command.len() + 1 + target.len() + 2;
    let ctcp = if verb == Verb::Action { ACTION_OVERHEAD } else { 0 };
    MAX_LINE_BYTES.saturating_sub(SOURCE_BUDGET + overhead + ctcp)
}

/// The IRC lines for a rendered message to `target`: one per line of text, each cut to
/// [`text_budget`], at most [`MAX_LINES`].
pub fn lines(target: &str, rendered: &Rendered) -> Vec<String> {
    build(target, rendered.verb, &rendered.text, "")
}

/// The IRC lines for a message of a Matrix user without a connection of their own (a user of
/// another server), said by the bridge's own connection: every line starts with `<speaker> `,
/// and an emote is `* speaker text` (a CTCP ACTION would be the bridge's own).
pub fn relayed_lines(target: &str, rendered: &Rendered, speaker: &str) -> Vec<String> {
    match rendered.verb {
        Verb::Action => build(target, Verb::Privmsg, &rendered.text, &format!("* {speaker} ")),
        verb => build(target, verb, &rendered.text, &format!("<{speaker}> ")),
    }
}

fn build(target: &str, verb: Verb, text: &str, prefix: &str) -> Vec<String> {
    let budget = text_budget(verb, target).saturating_sub(prefix.len()).max(1);
    let mut pieces: Vec<String> =
        text.lines().flat_map(|l| text::split_to_fit(&text::strip_formatting(l), budget)).collect();
    if pieces.len() > MAX_LINES {
        let left_out = pieces.len() - (MAX_LINES - 1);
        pieces.truncate(MAX_LINES - 1);
        pieces.push(format!("(… {left_out} more lines not sent to IRC)"));
    }
    pieces
        .iter()
        .map(|piece| {
            let piece = format!("{prefix}{piece}");
            match verb {
                Verb::Privmsg => line("PRIVMSG", &[target, &piece]),
                Verb::Action => line("PRIVMSG", &[target, &text::action(&piece)]),
                Verb::Notice => line("NOTICE", &[target, &piece]),
            }
        })
        .collect()
}

/// The most characters of a relayed speaker's name.
pub const MAX_SPEAKER_CHARS: usize = 32;

/// How a relayed message names its Matrix sender: their display name, else their localpart,
/// else the whole id; without control characters (CR, LF, NUL, CTCP's `\x01`, IRC's formatting
/// codes) or bidirectional overrides, runs of whitespace as one space, at most
/// [`MAX_SPEAKER_CHARS`] characters (the last `…` if cut).
pub fn speaker_name(displayname: Option<&str>, user_id: &str) -> String {
    let localpart = crate::names::localpart(user_id);
    [displayname.unwrap_or(""), localpart, user_id]
        .into_iter()
        .map(clean_name)
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "someone".to_owned())
}

fn clean_name(name: &str) -> String {
    // Marks that reorder or hide text (LRM/RLM, embeddings, overrides, isolates, zero widths).
    let invisible = |c: char| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
    let spaced: String =
        name.chars().filter(|c| !invisible(*c)).map(|c| if c.is_control() { ' ' } else { c }).collect();
    let words = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= MAX_SPEAKER_CHARS {
        return words;
    }
    let cut: String = words.chars().take(MAX_SPEAKER_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use lattice_plugin_sdk::serde_json::json;

    use super::*;

    fn rendered(verb: Verb, text: &str) -> Option<Rendered> {
        Some(Rendered { verb, text: text.into() })
    }

    #[test]
    fn message_types() {
        assert_eq!(render(&json!({"msgtype": "m.text", "body": "hi"}), None), rendered(Verb::Privmsg, "hi"));
        assert_eq!(
            render(&json!({"msgtype": "m.emote", "body": "waves"}), None),
            rendered(Verb::Action, "waves")
        );
        assert_eq!(
            render(&json!({"msgtype": "m.notice", "body": "fyi"}), None),
            rendered(Verb::Notice, "fyi")
        );
        assert_eq!(
            render(&json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/y"}), None),
            rendered(Verb::Privmsg, "[image] cat.png")
        );
        assert_eq!(render(&json!({"msgtype": "m.text", "body": "  "}), None), None);
        assert_eq!(render(&json!({"msgtype": "m.text"}), None), None);
    }

    #[test]
    fn replies_name_the_nick_without_the_fallback() {
        let content = json!({
            "msgtype": "m.text",
            "body": "> <@irc_bob:example.org> how are you?\n\nfine, thanks",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
        });
        assert_eq!(reply_target(&content), Some("$q"));
        assert_eq!(render(&content, Some("bob")), rendered(Verb::Privmsg, "bob: fine, thanks"));
        // Without a nick to name (unknown sender), just the text.
        assert_eq!(render(&content, None), rendered(Verb::Privmsg, "fine, thanks"));
        // Replies without a fallback (Matrix 1.13 on) keep their whole body.
        let bare = json!({"msgtype": "m.text", "body": "sure\n> not first", "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}});
        assert_eq!(render(&bare, Some("bob")), rendered(Verb::Privmsg, "bob: sure\n> not first"));
    }

    #[test]
    fn thread_fallbacks_are_not_replies() {
        let content = json!({
            "msgtype": "m.text",
            "body": "in a thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": true, "m.in_reply_to": {"event_id": "$last"}},
        });
        assert_eq!(reply_target(&content), None);
        assert_eq!(render(&content, Some("bob")), rendered(Verb::Privmsg, "in a thread"));
    }

    #[test]
    fn edits_are_corrections() {
        let content = json!({
            "msgtype": "m.text",
            "body": "* helo wrold",
            "m.new_content": {"msgtype": "m.text", "body": "hello world"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        });
        assert!(is_edit(&content));
        assert_eq!(render(&content, Some("bob")), rendered(Verb::Privmsg, "* hello world"));
        let emote = json!({
            "m.new_content": {"msgtype": "m.emote", "body": "dances"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        });
        assert_eq!(render(&emote, None), rendered(Verb::Action, "* dances"));
    }

    #[test]
    fn builds_lines_per_verb() {
        assert_eq!(
            lines("#test", &Rendered { verb: Verb::Privmsg, text: "hi there".into() }),
            ["PRIVMSG #test :hi there"]
        );
        assert_eq!(
            lines("#test", &Rendered { verb: Verb::Action, text: "waves".into() }),
            ["PRIVMSG #test :\u{1}ACTION waves\u{1}"]
        );
        assert_eq!(
            lines("#test", &Rendered { verb: Verb::Notice, text: "a\n\nb".into() }),
            ["NOTICE #test a", "NOTICE #test b"]
        );
    }

    #[test]
    fn long_messages_fit_the_line_limit() {
        let long = "word ".repeat(300);
        for verb in [Verb::Privmsg, Verb::Action, Verb::Notice] {
            let out = lines("#test", &Rendered { verb, text: long.clone() });
            assert!(out.len() > 1);
            for l in &out {
                assert!(l.len() + SOURCE_BUDGET <= MAX_LINE_BYTES, "{} bytes", l.len());
            }
        }
        assert!(
            (390..=400).contains(&text_budget(Verb::Privmsg, "#test")),
            "{}",
            text_budget(Verb::Privmsg, "#test")
        );
    }

    #[test]
    fn relayed_messages_name_the_speaker() {
        let say = |verb, text: &str| relayed_lines("#t", &Rendered { verb, text: text.into() }, "Alice");
        assert_eq!(say(Verb::Privmsg, "hi\nthere"), ["PRIVMSG #t :<Alice> hi", "PRIVMSG #t :<Alice> there"]);
        assert_eq!(say(Verb::Notice, "fyi"), ["NOTICE #t :<Alice> fyi"]);
        assert_eq!(say(Verb::Action, "waves"), ["PRIVMSG #t :* Alice waves"]);
        // Cut to fit with the prefix on every piece.
        let out = say(Verb::Privmsg, &"word ".repeat(300));
        assert!(out.len() > 1);
        for l in &out {
            assert!(
                l.starts_with("PRIVMSG #t :<Alice> ") && l.len() + SOURCE_BUDGET <= MAX_LINE_BYTES,
                "{l}"
            );
        }
        let many = (1..=25).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        assert_eq!(say(Verb::Privmsg, &many).len(), MAX_LINES);
    }

    #[test]
    fn speaker_names_are_clean_and_short() {
        assert_eq!(speaker_name(Some("Alice Liddell"), "@alice:evil.org"), "Alice Liddell");
        assert_eq!(speaker_name(None, "@alice:evil.org"), "alice");
        assert_eq!(speaker_name(Some(" \u{3}\u{1} "), "@alice:evil.org"), "alice");
        assert_eq!(speaker_name(Some("a\r\nPRIVMSG #x :b\0c"), "@a:x"), "a PRIVMSG #x :b c");
        assert_eq!(speaker_name(Some("\u{1}ACTION x\u{1}"), "@a:x"), "ACTION x");
        assert_eq!(speaker_name(Some("\u{202e}evil\u{200b}"), "@a:x"), "evil");
        let long = speaker_name(Some(&"x".repeat(100)), "@a:x");
        assert_eq!(long.chars().count(), MAX_SPEAKER_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(speaker_name(Some(""), "@:x"), "@:x");
    }

    #[test]
    fn very_long_messages_are_capped() {
        let many = (1..=25).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let out = lines("#t", &Rendered { verb: Verb::Privmsg, text: many });
        assert_eq!(out.len(), MAX_LINES);
        assert_eq!(out[0], "PRIVMSG #t :line 1");
        assert_eq!(out[MAX_LINES - 1], "PRIVMSG #t :(… 16 more lines not sent to IRC)");
    }
}
