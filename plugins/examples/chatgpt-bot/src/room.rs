//! What the bot reads from and sends to a room besides the answer's edits: direct chats,
//! threads it answered in, a thread's messages with the bot's latest edits, stop requests,
//! typing, the placeholder and short notices. Sends carry a transaction id derived from the
//! event they answer, so a retried delivery reuses the first attempt's message.

use lattice_plugin_sdk::matrix::{SendOptions, thread_relation};
use lattice_plugin_sdk::raw::matrix as host;
use lattice_plugin_sdk::serde_json::{Value, json};
use lattice_plugin_sdk::{self as sdk, Error, Event};

use crate::addressing;
use crate::conversation::{self, ThreadMessage};
use crate::{settings, texts};

/// Replies of a thread read for the conversation (the root and the newest 99 replies).
const THREAD_LIMIT: u32 = 100;
/// Replies read to look for `!ai stop` while streaming.
const STOP_LIMIT: u32 = 20;
/// How long a typing notice lasts unless renewed.
pub const TYPING_MS: u32 = 30_000;

/// Whether a host call's failure is worth the host retrying the delivery (returned from the
/// handler) rather than giving up on the message (logged).
pub fn retry_worthy(error: &Error) -> bool {
    matches!(error, Error::RateLimited(_) | Error::Internal(_))
}

/// `Ok(Some(value))`, or for a failure: `Err` if a retry may help, else logged and `Ok(None)`.
pub fn settle<T>(result: sdk::Result<T>, doing: &str) -> sdk::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if retry_worthy(&e) => Err(e),
        Err(e) => {
            sdk::warn!("{doing}: {}", e.message());
            Ok(None)
        }
    }
}

fn with_txn(txn: String) -> SendOptions {
    SendOptions { txn_id: Some(txn), ..SendOptions::default() }
}

/// Whether the room's joined members are exactly the bot and one other user.
pub fn is_direct_chat(room: &str, bot: &str) -> sdk::Result<bool> {
    let members = host::members(room)?;
    Ok(members.len() == 2 && members.iter().any(|m| m == bot))
}

/// Whether the bot answered in the thread rooted at `root` (it has an answer there — a marked
/// `m.notice`, see [`ThreadMessage::is_answer_of`]; its other notices do not count).
pub fn bot_answered_in_thread(room: &str, root: &str, bot: &str) -> sdk::Result<bool> {
    Ok(host::thread(room, root, THREAD_LIMIT)?.into_iter().map(Event::from_raw).any(|e| {
        e.id() != root && ThreadMessage::from_content(e.id(), e.sender(), e.content()).is_answer_of(bot)
    }))
}

/// Whether `sender` may change the bot's settings in `room` (see
/// [`settings::may_change_settings`]); the room's creators are looked up only when needed.
pub fn may_change_settings(room: &str, sender: &str) -> sdk::Result<bool> {
    let power_levels = host::get_state(room, "m.room.power_levels", "")?
        .and_then(|json| sdk::serde_json::from_str::<Value>(&json).ok());
    if settings::may_change_settings(power_levels.as_ref(), sender, false) {
        return Ok(true);
    }
    Ok(settings::may_change_settings(power_levels.as_ref(), sender, is_creator(room, sender)?))
}

/// Whether `user` is one of the room's privileged creators (rooms whose id is the create
/// event's hash, version 12 on: its sender and `additional_creators`, not in the power levels).
fn is_creator(room: &str, user: &str) -> sdk::Result<bool> {
    let Some(hash) = room.strip_prefix('!').filter(|h| !h.contains(':')) else { return Ok(false) };
    let create = host::get_state(room, "m.room.create", "")?
        .and_then(|json| sdk::serde_json::from_str::<Value>(&json).ok())
        .unwrap_or_default();
    let additional = create["additional_creators"]
        .as_array()
        .is_some_and(|users| users.iter().any(|u| u.as_str() == Some(user)));
    if additional {
        return Ok(true);
    }
    match host::get_event(room, &format!("${hash}")) {
        Ok(event) => Ok(Event::from_raw(event).sender() == user),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The thread rooted at `root`, oldest first, the bot's messages with the text of their latest
/// edit (edits are not thread events: they relate to the message they edit).
pub fn thread_messages(room: &str, root: &str, bot: &str) -> sdk::Result<Vec<ThreadMessage>> {
    let mut messages: Vec<ThreadMessage> = host::thread(room, root, THREAD_LIMIT)?
        .into_iter()
        .map(Event::from_raw)
        .map(|e| ThreadMessage::from_content(e.id(), e.sender(), e.content()))
        .collect();
    for message in messages.iter_mut().filter(|m| m.sender == bot && m.replaces.is_none()) {
        if let Some(text) = latest_edit(room, &message.id, bot) {
            message.body = Some(text);
        }
    }
    Ok(messages)
}

/// The `m.new_content.body` of the bot's newest edit of `target`.
fn latest_edit(room: &str, target: &str, bot: &str) -> Option<String> {
    let edits = host::relations(room, target, Some("m.replace"), 5)
        .inspect_err(|e| sdk::debug!("reading the edits of {target}: {}", e.message()))
        .ok()?;
    edits
        .into_iter()
        .rev()
        .map(Event::from_raw)
        .find(|e| e.sender() == bot)
        .and_then(|e| e.content()["m.new_content"]["body"].as_str().map(str::to_owned))
}

/// Why an answer stops early.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The prompt was redacted.
    Redacted,
    /// An `!ai stop` message (its event id) from the prompt's sender, in the thread.
    Command(String),
}

/// Whether the answer to `prompt` (in the thread rooted at `root`) should stop: the prompt was
/// redacted, or its sender said `!ai stop` in the thread since. Read failures count as no.
pub fn stop_requested(room: &str, prompt: &Event, root: &str) -> Option<Stop> {
    match host::get_event(room, prompt.id()).map(Event::from_raw) {
        Err(Error::NotFound(_)) => return Some(Stop::Redacted),
        Ok(event) if event.body().is_none() => return Some(Stop::Redacted),
        _ => {}
    }
    let thread: Vec<ThreadMessage> = host::thread(room, root, STOP_LIMIT)
        .ok()?
        .into_iter()
        .map(Event::from_raw)
        .map(|e| ThreadMessage::from_content(e.id(), e.sender(), e.content()))
        .collect();
    find_stop(&thread, prompt.id(), prompt.sender()).map(|id| Stop::Command(id.to_owned()))
}

/// The id of an `!ai stop` from `sender` after the prompt in `thread` (the root and the newest
/// replies, oldest first; a prompt not among them is older than all the replies listed).
pub fn find_stop<'a>(thread: &'a [ThreadMessage], prompt_id: &str, sender: &str) -> Option<&'a str> {
    let after = match thread.iter().position(|m| m.id == prompt_id) {
        Some(at) => at + 1,
        None => 1,
    };
    thread.get(after..)?.iter().find_map(|m| {
        let is_stop = m.sender == sender
            && m.replaces.is_none()
            && m.msgtype.as_deref() == Some("m.text")
            && m.body.as_deref().and_then(addressing::command_args).map(addressing::parse_request)
                == Some(addressing::Request::Stop);
        is_stop.then_some(m.id.as_str())
    })
}

/// Turns the bot's typing notice on or off (best effort: a failure is only logged).
pub fn typing(room: &str, on: bool) {
    if let Err(e) = host::set_typing(None, room, on, TYPING_MS) {
        sdk::debug!("typing {on} in {room}: {}", e.message());
    }
}

fn send_in_thread(event: &Event, mut content: Value, txn: String) -> sdk::Result<String> {
    content["m.relates_to"] = thread_relation(event);
    host::send(event.room_id(), "m.room.message", &content.to_string(), &with_txn(txn))
}

/// The placeholder reply to `prompt` (a marked `m.notice` `…` in its thread, or starting one at
/// it, with a reply fallback) that the answer is edited into.
pub fn placeholder(prompt: &Event) -> sdk::Result<String> {
    let content = conversation::answer_content(texts::PLACEHOLDER);
    send_in_thread(prompt, content, format!("chatgpt/answer/{}", prompt.id()))
}

/// Edits the placeholder `target` to `text`, a marked `m.notice` again (the host puts the new
/// content in `m.new_content` and at the top of the edit). Returns `target`.
pub fn edit_answer(room: &str, target: &str, text: &str) -> sdk::Result<String> {
    let content = conversation::answer_content(text);
    host::edit(room, target, &content.to_string(), &SendOptions::default())
}

/// A short `m.notice` reply in `event`'s thread (settings, warnings, help), without the
/// answer marker.
pub fn notice_in_thread(event: &Event, text: &str) -> sdk::Result<String> {
    let content = json!({ "msgtype": "m.notice", "body": text });
    send_in_thread(event, content, format!("chatgpt/notice/{}", event.id()))
}

/// Reacts to `event` with `key`.
pub fn react(event: &Event, key: &str) -> sdk::Result<String> {
    host::react(event.room_id(), event.id(), key, &with_txn(format!("chatgpt/react/{}", event.id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, sender: &str, body: &str) -> ThreadMessage {
        ThreadMessage {
            id: id.into(),
            sender: sender.into(),
            msgtype: Some("m.text".into()),
            body: Some(body.into()),
            ..Default::default()
        }
    }

    #[test]
    fn stops_after_the_prompt_from_its_sender() {
        let thread = [
            msg("$root", "@alice:x", "!ai tell a story"),
            msg("$old", "@alice:x", "!ai stop"),
            msg("$p", "@alice:x", "and another"),
            msg("$a", "@chatgpt:x", "…"),
            msg("$bob", "@bob:x", "!ai stop"),
            msg("$talk", "@alice:x", "stop it"),
            msg("$s", "@alice:x", "!ai  stop "),
        ];
        assert_eq!(find_stop(&thread, "$p", "@alice:x"), Some("$s"));
        assert_eq!(find_stop(&thread[..6], "$p", "@alice:x"), None);
        // The prompt older than the replies read: any of them counts, the root does not.
        assert_eq!(find_stop(&thread, "$gone", "@alice:x"), Some("$old"));
        assert_eq!(find_stop(&[msg("$root", "@alice:x", "!ai stop")], "$gone", "@alice:x"), None);
    }
}
