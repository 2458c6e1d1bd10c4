//! Whether a message is addressed to the bot, and what it asks: mentions, the `!ai` command
//! and its sub-commands, and the user's text with the address taken off. Pure functions.

use lattice_plugin_sdk::serde_json::Value;

/// The command word (`!ai …`).
pub const WORD: &str = "ai";

/// What `!ai <args>` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A prompt for the model.
    Ask(&'a str),
    /// `!ai model <name>` (one word): this room's model.
    SetModel(&'a str),
    /// `!ai model`
    ShowModel,
    /// `!ai prompt <text>`: this room's system prompt.
    SetPrompt(&'a str),
    /// `!ai prompt`
    ShowPrompt,
    /// `!ai reset`: back to the configured model and system prompt.
    Reset,
    /// `!ai stop`: stop the answer being written in this thread.
    Stop,
    /// `!ai` alone.
    Help,
}

/// Parses what followed `!ai` (trimmed by the host). `!ai model` takes one word, so that
/// `!ai model of an atom?` is still a question.
pub fn parse_request(args: &str) -> Request<'_> {
    let args = args.trim();
    let (first, rest) = match args.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim()),
        None => (args, ""),
    };
    match (first.to_ascii_lowercase().as_str(), rest) {
        ("", _) => Request::Help,
        ("model", "") => Request::ShowModel,
        ("model", name) if !name.contains(char::is_whitespace) => Request::SetModel(name),
        ("prompt", "") => Request::ShowPrompt,
        ("prompt", text) => Request::SetPrompt(text),
        ("reset", "") => Request::Reset,
        ("stop", "") => Request::Stop,
        _ => Request::Ask(args),
    }
}

/// What follows `!ai` in a message body (`Some("")` for `!ai` alone), `None` if it is not an
/// `!ai` command (the host's rule: `!ai` then whitespace or the end).
pub fn command_args(body: &str) -> Option<&str> {
    let rest = body.strip_prefix('!')?.strip_prefix(WORD)?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim())
}

/// The localpart of a user id (`@chatgpt:example.org` → `chatgpt`).
pub fn localpart(user_id: &str) -> &str {
    let id = user_id.strip_prefix('@').unwrap_or(user_id);
    id.split_once(':').map_or(id, |(local, _)| local)
}

/// Characters of a localpart (and of words around it).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.=/+".contains(c)
}

/// Whether a message's content mentions the bot `bot` (a full user id):
/// - `m.mentions.user_ids` contains it, or
/// - the body contains the user id, or
/// - the body contains the localpart as a word (any case) written `@chatgpt`, `chatgpt:` or
///   `chatgpt,` (not `@chatgpt:elsewhere`, someone else), or
/// - the HTML body links to the user (`https://matrix.to/#/@chatgpt:…`).
pub fn mentions(content: &Value, bot: &str) -> bool {
    let listed = content["m.mentions"]["user_ids"]
        .as_array()
        .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(bot)));
    let body = content["body"].as_str().unwrap_or_default();
    let html = content["formatted_body"].as_str().unwrap_or_default();
    listed
        || body.contains(bot)
        || names_localpart(body, bot)
        || html.contains(&format!("matrix.to/#/{bot}"))
        || html.contains(&format!("matrix.to/#/{}", bot.replace('@', "%40").replace(':', "%3A")))
}

/// Whether `body` contains the bot's localpart as an address (see [`mentions`]).
fn names_localpart(body: &str, bot: &str) -> bool {
    let local = localpart(bot).to_ascii_lowercase();
    if local.is_empty() {
        return false;
    }
    // ASCII lowercasing keeps byte offsets.
    let lower = body.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(&local) {
        let start = from + found;
        let end = start + local.len();
        from = start + 1;
        let before = lower[..start].chars().next_back();
        let after = lower[end..].chars().next();
        let at = before == Some('@');
        if before.is_some_and(|c| is_name_char(c) && c != '.') {
            continue;
        }
        // `.` ends a word only before a non-name character ("ask @chatgpt.").
        let after_word = match after {
            None => true,
            Some('.') => !lower[end + 1..].starts_with(is_name_char),
            Some(c) => !is_name_char(c),
        };
        if !after_word {
            continue;
        }
        match after {
            // `@chatgpt:server` is a user id: ours only if it is the bot's.
            Some(':') if at => {
                if lower[start - 1..].starts_with(&bot.to_ascii_lowercase()) {
                    return true;
                }
            }
            _ if at => return true,
            Some(':' | ',') => return true,
            _ => {}
        }
    }
    false
}

/// The body without a leading address to the bot: its user id, `@localpart` or `localpart`
/// (any case), then an optional `:` or `,`, then whitespace.
pub fn strip_mention<'a>(body: &'a str, bot: &str) -> &'a str {
    let body = body.trim_start();
    let local = localpart(bot);
    let candidates = [bot.to_owned(), format!("@{local}"), local.to_owned()];
    for name in candidates.iter().filter(|n| !n.is_empty()) {
        let Some(head) = body.get(..name.len()) else { continue };
        if !head.eq_ignore_ascii_case(name) {
            continue;
        }
        let rest = &body[name.len()..];
        let rest = rest.strip_prefix([':', ',']).unwrap_or(rest);
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return rest.trim_start();
        }
    }
    body
}

/// The body without a reply fallback (`> <@alice:x> quoted` lines and the blank line after
/// them), which older clients still put in replies.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// What a user's message says to the model: the text after `!ai`, or the body without a
/// leading mention; `None` for sub-commands (`!ai model …`, `!ai stop`…), `!ai` alone, other
/// bots' commands (`!word …`) and empty texts.
pub fn user_text<'a>(body: &'a str, bot: &str) -> Option<&'a str> {
    let body = strip_reply_fallback(body).trim();
    let text = match command_args(body) {
        Some(args) => match parse_request(args) {
            Request::Ask(text) => text,
            _ => return None,
        },
        None if body.starts_with('!') => return None,
        None => strip_mention(body, bot).trim(),
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use lattice_plugin_sdk::serde_json::json;

    use super::*;

    const BOT: &str = "@chatgpt:example.org";

    #[test]
    fn requests() {
        assert_eq!(parse_request("What is 2+2?"), Request::Ask("What is 2+2?"));
        assert_eq!(parse_request(""), Request::Help);
        assert_eq!(parse_request("model"), Request::ShowModel);
        assert_eq!(parse_request("model gpt-4o"), Request::SetModel("gpt-4o"));
        assert_eq!(parse_request("Model  gpt-4o "), Request::SetModel("gpt-4o"));
        assert_eq!(parse_request("model of an atom?"), Request::Ask("model of an atom?"));
        assert_eq!(parse_request("prompt"), Request::ShowPrompt);
        assert_eq!(parse_request("prompt Answer in French."), Request::SetPrompt("Answer in French."));
        assert_eq!(parse_request("reset"), Request::Reset);
        assert_eq!(parse_request("stop"), Request::Stop);
        assert_eq!(parse_request("stop the war?"), Request::Ask("stop the war?"));
        assert_eq!(parse_request("reset my password"), Request::Ask("reset my password"));
    }

    #[test]
    fn command_prefix() {
        assert_eq!(command_args("!ai What is 2+2?"), Some("What is 2+2?"));
        assert_eq!(command_args("!ai\nhi"), Some("hi"));
        assert_eq!(command_args("!ai"), Some(""));
        assert_eq!(command_args("!aim high"), None);
        assert_eq!(command_args("ai hi"), None);
    }

    #[test]
    fn localparts() {
        assert_eq!(localpart("@chatgpt:example.org"), "chatgpt");
        assert_eq!(localpart("@chatgpt:example.org:8448"), "chatgpt");
    }

    #[test]
    fn mentions_of_the_bot() {
        let body = |b: &str| json!({ "msgtype": "m.text", "body": b });
        for yes in [
            "@chatgpt:example.org what is 2+2?",
            "hey @chatgpt:example.org",
            "ChatGPT: what is 2+2?",
            "chatgpt, tell me",
            "what do you think, @chatgpt?",
            "ask @chatgpt.",
            "@ChatGPT hi",
        ] {
            assert!(mentions(&body(yes), BOT), "{yes}");
        }
        for no in [
            "hello everyone",
            "I like chatgpt",
            "chatgpt is great",
            "@chatgpt:elsewhere.org hi",
            "@chatgpt2 hi",
            "mychatgpt: hi",
            "@chatgpt.bot hi",
        ] {
            assert!(!mentions(&body(no), BOT), "{no}");
        }
        let listed = json!({ "body": "hi", "m.mentions": { "user_ids": ["@alice:x", BOT] } });
        assert!(mentions(&listed, BOT));
        let pill = json!({
            "body": "GPT hi",
            "formatted_body": "<a href=\"https://matrix.to/#/%40chatgpt%3Aexample.org\">GPT</a> hi",
        });
        assert!(mentions(&pill, BOT));
    }

    #[test]
    fn leading_mentions_are_stripped() {
        assert_eq!(strip_mention("@chatgpt:example.org: what?", BOT), "what?");
        assert_eq!(strip_mention("@chatgpt:example.org what?", BOT), "what?");
        assert_eq!(strip_mention("ChatGPT: what?", BOT), "what?");
        assert_eq!(strip_mention("@chatgpt, what?", BOT), "what?");
        assert_eq!(strip_mention("chatgpt", BOT), "");
        assert_eq!(strip_mention("chatgptx what?", BOT), "chatgptx what?");
        assert_eq!(strip_mention("what, @chatgpt?", BOT), "what, @chatgpt?");
    }

    #[test]
    fn reply_fallbacks_are_stripped() {
        assert_eq!(strip_reply_fallback("> <@alice:x> question\n> more\n\nanswer"), "answer");
        assert_eq!(strip_reply_fallback("no fallback"), "no fallback");
        assert_eq!(strip_reply_fallback(">not a quote"), ">not a quote");
    }

    #[test]
    fn what_users_say_to_the_model() {
        assert_eq!(user_text("!ai What is 2+2?", BOT), Some("What is 2+2?"));
        assert_eq!(user_text("And doubled?", BOT), Some("And doubled?"));
        assert_eq!(user_text("@chatgpt:example.org: hi", BOT), Some("hi"));
        assert_eq!(user_text("> <@bob:x> hi\n\nchatgpt: and you?", BOT), Some("and you?"));
        for none in ["!ai model gpt-4o", "!ai stop", "!ai", "!echo hi", "   ", "chatgpt:"] {
            assert_eq!(user_text(none, BOT), None, "{none}");
        }
    }
}
