//! A thread as a chat conversation: the thread's messages (oldest first) become `user` and
//! `assistant` turns after a `system` prompt, trimmed to a budget of characters. Pure functions.

use lattice_plugin_sdk::serde_json::{Value, json};

use crate::{addressing, texts};

/// The key the bot puts (as `true`) in the content of its answers — the placeholder and, in
/// `m.new_content`, every edit — so that they are told apart from its other notices.
pub const ANSWER_MARKER: &str = "org.lattice.chatgpt.answer";

/// The content of one of the bot's answers (the placeholder, or an edit's new content): an
/// `m.notice`, which bots do not answer, with [`ANSWER_MARKER`].
pub fn answer_content(text: &str) -> Value {
    json!({ "msgtype": "m.notice", "body": text, (ANSWER_MARKER): true })
}

/// One message of the thread, as far as the conversation cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadMessage {
    pub id: String,
    pub sender: String,
    pub msgtype: Option<String>,
    /// The body; for the bot's messages, the text of their latest edit if the caller found one.
    pub body: Option<String>,
    /// The event this one edits (`m.replace`), if it is an edit.
    pub replaces: Option<String>,
    /// The edit's `m.new_content.body`.
    pub new_body: Option<String>,
    /// Whether the content carries [`ANSWER_MARKER`] (`true`).
    pub answer_marker: bool,
}

impl ThreadMessage {
    /// From an event's id, sender and content.
    pub fn from_content(id: &str, sender: &str, content: &Value) -> ThreadMessage {
        let relates = &content["m.relates_to"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        ThreadMessage {
            id: id.to_owned(),
            sender: sender.to_owned(),
            msgtype: text(&content["msgtype"]),
            body: text(&content["body"]),
            replaces: (relates["rel_type"] == "m.replace").then(|| text(&relates["event_id"])).flatten(),
            new_body: text(&content["m.new_content"]["body"]),
            answer_marker: content[ANSWER_MARKER] == true,
        }
    }

    /// Whether this is one of the bot's answers: an `m.notice` from `bot` with the marker, not
    /// an edit. Its settings and help notices have no marker; `m.text` messages are never its.
    pub fn is_answer_of(&self, bot: &str) -> bool {
        self.sender == bot
            && self.replaces.is_none()
            && self.answer_marker
            && self.msgtype.as_deref() == Some("m.notice")
    }
}

/// A turn of the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

impl Turn {
    pub fn new(role: &'static str, content: impl Into<String>) -> Turn {
        Turn { role, content: content.into() }
    }

    pub fn to_json(&self) -> Value {
        json!({ "role": self.role, "content": self.content })
    }
}

/// The conversation for answering the prompt `prompt_id` (whose text for the model is
/// `prompt_text`) in a thread whose messages are `thread`, oldest first:
///
/// - the system prompt first;
/// - the thread up to the prompt: the bot's answers (see [`ThreadMessage::is_answer_of`]) as
///   `assistant` turns (their latest edit's text; placeholders, apologies and stops left out),
///   others' `m.text` messages as `user` turns (without `!ai` or a leading mention;
///   sub-commands and other bots' commands left out); everything else (notices, the bot's
///   unmarked messages) is left out; edits are applied to the messages they edit, not turns of
///   their own;
/// - the prompt last, as a `user` turn (added if the thread did not contain it);
/// - then trimmed with [`trim`] to `max_chars`.
pub fn build(
    thread: &[ThreadMessage],
    bot: &str,
    prompt_id: &str,
    prompt_text: &str,
    system_prompt: &str,
    max_chars: usize,
) -> Vec<Turn> {
    let mut turns = vec![Turn::new("system", system_prompt)];
    let upto = thread.iter().position(|m| m.id == prompt_id).unwrap_or(thread.len());
    for message in &thread[..upto] {
        let from_bot = message.is_answer_of(bot);
        let from_user = message.sender != bot
            && message.replaces.is_none()
            && message.msgtype.as_deref() == Some("m.text");
        if !from_bot && !from_user {
            continue;
        }
        let edited = thread[..upto]
            .iter()
            .rev()
            .find(|e| e.replaces.as_deref() == Some(message.id.as_str()) && e.sender == message.sender)
            .and_then(|e| e.new_body.as_deref());
        let Some(body) = edited.or(message.body.as_deref()) else { continue };
        if from_bot {
            let text = texts::without_note(body).trim();
            if !texts::is_noise(text) {
                turns.push(Turn::new("assistant", text));
            }
        } else if let Some(text) = addressing::user_text(body, bot) {
            turns.push(Turn::new("user", text));
        }
    }
    turns.push(Turn::new("user", prompt_text));
    trim(turns, max_chars)
}

/// Drops the oldest turns after the system prompt until the contents add up to at most
/// `max_chars` characters; the system prompt and the newest turn always stay. A conversation
/// then starts with a `user` turn (a leading `assistant` turn is dropped too).
pub fn trim(mut turns: Vec<Turn>, max_chars: usize) -> Vec<Turn> {
    let chars = |t: &Turn| t.content.chars().count();
    let mut total: usize = turns.iter().map(chars).sum();
    while turns.len() > 2 && (total > max_chars || turns[1].role == "assistant") {
        total -= chars(&turns.remove(1));
    }
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "@chatgpt:x";

    fn msg(id: &str, sender: &str, body: &str) -> ThreadMessage {
        ThreadMessage {
            id: id.into(),
            sender: sender.into(),
            msgtype: Some("m.text".into()),
            body: Some(body.into()),
            ..Default::default()
        }
    }

    /// One of the bot's answers: a marked `m.notice`.
    fn answer(id: &str, body: &str) -> ThreadMessage {
        ThreadMessage { msgtype: Some("m.notice".into()), answer_marker: true, ..msg(id, BOT, body) }
    }

    fn edit(id: &str, sender: &str, target: &str, body: &str) -> ThreadMessage {
        ThreadMessage {
            replaces: Some(target.into()),
            new_body: Some(body.into()),
            ..msg(id, sender, &format!("* {body}"))
        }
    }

    fn roles(turns: &[Turn]) -> Vec<(&str, &str)> {
        turns.iter().map(|t| (t.role, t.content.as_str())).collect()
    }

    #[test]
    fn answers_are_marked_notices() {
        let content = answer_content("…");
        assert_eq!(
            content,
            json!({ "msgtype": "m.notice", "body": "…", "org.lattice.chatgpt.answer": true })
        );
        assert!(ThreadMessage::from_content("$a", BOT, &content).is_answer_of(BOT));
        assert!(!ThreadMessage::from_content("$a", "@bob:x", &content).is_answer_of(BOT));
        let notice = json!({ "msgtype": "m.notice", "body": "Nothing to stop." });
        assert!(!ThreadMessage::from_content("$n", BOT, &notice).is_answer_of(BOT));
        let text = json!({ "msgtype": "m.text", "body": "4", "org.lattice.chatgpt.answer": true });
        assert!(!ThreadMessage::from_content("$t", BOT, &text).is_answer_of(BOT));
        // What the host makes of an edit: the new content at the top and in m.new_content.
        let mut edit = answer_content("* 4");
        edit["m.new_content"] = answer_content("4");
        edit["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": "$a" });
        let edit = ThreadMessage::from_content("$e", BOT, &edit);
        assert!(!edit.is_answer_of(BOT), "an edit is not an answer of its own");
        assert_eq!((edit.replaces.as_deref(), edit.new_body.as_deref()), (Some("$a"), Some("4")));
    }

    #[test]
    fn a_first_prompt() {
        let thread = [msg("$p", "@alice:x", "!ai What is 2+2?")];
        let turns = build(&thread, BOT, "$p", "What is 2+2?", "Be brief.", 12_000);
        assert_eq!(roles(&turns), [("system", "Be brief."), ("user", "What is 2+2?")]);
        assert_eq!(turns[1].to_json(), json!({ "role": "user", "content": "What is 2+2?" }));
    }

    #[test]
    fn a_follow_up_has_the_thread_as_context() {
        let thread = [
            msg("$p", "@alice:x", "!ai What is 2+2?"),
            // The bot's reply: its final text comes from the caller (or an edit in the list).
            answer("$a", "The answer is 4."),
            msg("$f", "@alice:x", "And doubled?"),
            msg("$later", "@bob:x", "not yet"),
        ];
        let turns = build(&thread, BOT, "$f", "And doubled?", "Be brief.", 12_000);
        assert_eq!(
            roles(&turns),
            [
                ("system", "Be brief."),
                ("user", "What is 2+2?"),
                ("assistant", "The answer is 4."),
                ("user", "And doubled?"),
            ]
        );
    }

    #[test]
    fn edits_placeholders_and_commands() {
        let thread = [
            msg("$p", "@alice:x", "@chatgpt:x: tell a story"),
            answer("$a", "…"),
            edit("$e1", BOT, "$a", "Once"),
            edit("$e2", BOT, "$a", "Once upon a time"),
            edit("$forged", "@bob:x", "$a", "forged"),
            msg("$q", "@alice:x", "!ai model gpt-4o"),
            answer("$b", "…"),
            edit("$e3", BOT, "$b", &texts::status_apology(503)),
            answer("$c", "…"),
            answer("$d", "(stopped)"),
            msg("$o", "@bob:x", "!echo hi"),
            // Its settings notices (no marker), unmarked messages, and anyone else's notices
            // (even marked) are not the conversation.
            ThreadMessage {
                msgtype: Some("m.notice".into()),
                ..msg("$n", BOT, "Model for this room: gpt-4o.")
            },
            msg("$unmarked", BOT, "not an answer"),
            ThreadMessage { sender: "@otherbot:x".into(), ..answer("$other", "another bot's answer") },
            answer("$cut", &texts::cut_short("A long", "the answer took too long")),
            msg("$f", "@alice:x", "go on"),
        ];
        let turns = build(&thread, BOT, "$f", "go on", "S", 12_000);
        assert_eq!(
            roles(&turns),
            [
                ("system", "S"),
                ("user", "tell a story"),
                ("assistant", "Once upon a time"),
                ("assistant", "A long"),
                ("user", "go on"),
            ]
        );
    }

    #[test]
    fn a_prompt_missing_from_the_thread_is_added() {
        let thread = [msg("$p", "@alice:x", "!ai hi"), answer("$a", "Hello!")];
        let turns = build(&thread, BOT, "$new", "and now?", "S", 12_000);
        assert_eq!(
            roles(&turns),
            [("system", "S"), ("user", "hi"), ("assistant", "Hello!"), ("user", "and now?")]
        );
    }

    #[test]
    fn trimming_drops_the_oldest_turns() {
        let turns = vec![
            Turn::new("system", "12345"),
            Turn::new("user", "aaaaaaaaaa"),
            Turn::new("assistant", "bbbbbbbbbb"),
            Turn::new("user", "cccccccccc"),
            Turn::new("assistant", "dddddddddd"),
            Turn::new("user", "eeeee"),
        ];
        assert_eq!(trim(turns.clone(), 100), turns);
        // 50 in all; at most 30: drop "a" (40), then "b" (30), but a leading assistant turn
        // goes too: "c" stays as the first turn.
        let trimmed = trim(turns.clone(), 30);
        assert_eq!(
            roles(&trimmed),
            [("system", "12345"), ("user", "cccccccccc"), ("assistant", "dddddddddd"), ("user", "eeeee")]
        );
        // Too small for anything but the system prompt and the newest turn.
        assert_eq!(roles(&trim(turns, 0)), [("system", "12345"), ("user", "eeeee")]);
        // Characters, not bytes.
        let wide = vec![Turn::new("system", "é"), Turn::new("user", "éé"), Turn::new("user", "é")];
        assert_eq!(trim(wide.clone(), 4), wide);
    }
}
