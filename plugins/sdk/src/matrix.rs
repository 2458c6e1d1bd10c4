//! Matrix helpers over the `matrix` import, acting as the plugin's bot user or, for a bridge, as
//! one of its puppets.
//!
//! Acting as a puppet: the `*_as` helpers ([`send_json_as`], [`send_text_as`], [`join_as`],
//! [`leave_as`]), or [`as_user`] for the options of any sending call (with
//! [`SendOptions::with_txn_id`] and [`SendOptions::with_origin_ts`]). The user must be in the
//! plugin's `grants.namespaces.users` and created with [`crate::puppets::ensure`]; the host
//! refuses anyone else (and, in the `bot` world, anyone but the bot) with `denied`.
//!
//! Everything else the interface offers (state, redactions, room creation, reading events and
//! threads…) is in [`crate::raw::matrix`]; pass [`SendOptions::default()`] (or [`as_user`])
//! where it wants options.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::bindings::lattice::plugin::matrix as host;
use crate::{Event, Result};

/// Options of the sending calls: `as_user`, `txn_id`, `origin_ts`; `default()` sets none.
pub use host::SendOptions;

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { as_user: None, txn_id: None, origin_ts: None }
    }
}

impl SendOptions {
    /// The same options with a transaction id: a retried call with the same id returns the first
    /// call's event instead of sending again.
    pub fn with_txn_id(mut self, txn_id: impl Into<String>) -> Self {
        self.txn_id = Some(txn_id.into());
        self
    }

    /// The same options with the event's timestamp (milliseconds since the Unix epoch), for
    /// bridged history; only honoured for puppets (`as_user` in the namespaces).
    pub fn with_origin_ts(mut self, origin_ts: u64) -> Self {
        self.origin_ts = Some(origin_ts);
        self
    }
}

/// Options that send as `user`, a puppet in the plugin's namespaces, instead of the bot.
pub fn as_user(user: &str) -> SendOptions {
    SendOptions { as_user: Some(user.to_owned()), ..SendOptions::default() }
}

/// The bot's user id (asked of the host once per instance, then remembered).
pub fn whoami() -> &'static str {
    static ME: OnceLock<String> = OnceLock::new();
    ME.get_or_init(host::whoami)
}

/// Sends an event of type `event_type` with this content; returns its event id.
pub fn send_json(room: &str, event_type: &str, content: &Value) -> Result<String> {
    host::send(room, event_type, &content.to_string(), &SendOptions::default())
}

/// Sends an event with these options (as a puppet, with a transaction id…); returns its id.
pub fn send_json_with(
    room: &str,
    event_type: &str,
    content: &Value,
    options: &SendOptions,
) -> Result<String> {
    host::send(room, event_type, &content.to_string(), options)
}

/// Sends an event as the puppet `user`; returns its event id.
pub fn send_json_as(user: &str, room: &str, event_type: &str, content: &Value) -> Result<String> {
    send_json_with(room, event_type, content, &as_user(user))
}

/// Sends an `m.text` message as the puppet `user`.
pub fn send_text_as(user: &str, room: &str, text: &str) -> Result<String> {
    send_json_as(user, room, "m.room.message", &json!({ "msgtype": "m.text", "body": text }))
}

/// Sends an `m.text` message.
pub fn send_text(room: &str, text: &str) -> Result<String> {
    send_json(room, "m.room.message", &json!({ "msgtype": "m.text", "body": text }))
}

/// Sends an `m.notice` message (what bots conventionally send, and other bots ignore).
pub fn send_notice(room: &str, text: &str) -> Result<String> {
    send_json(room, "m.room.message", &json!({ "msgtype": "m.notice", "body": text }))
}

/// The `m.relates_to` of a threaded reply to `event`: in the event's thread, or starting a thread
/// at the event, with a reply fallback to the event for clients without threads.
pub fn thread_relation(event: &Event) -> Value {
    let root = event.thread_root().unwrap_or(event.id());
    json!({
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": true,
        "m.in_reply_to": { "event_id": event.id() },
    })
}

/// Replies to `event` with an `m.text` in its thread (starting one at `event` if it is in none).
pub fn reply_in_thread(event: &Event, text: &str) -> Result<String> {
    let content = json!({
        "msgtype": "m.text",
        "body": text,
        "m.relates_to": thread_relation(event),
    });
    send_json(event.room_id(), "m.room.message", &content)
}

/// Replaces the text of the earlier message `target` with an `m.text` of `text`. The host builds
/// the `m.replace` event and coalesces edits of one message to at most one per second (the last
/// one always goes out). Returns `target`.
pub fn edit(room: &str, target: &str, text: &str) -> Result<String> {
    let content = json!({ "msgtype": "m.text", "body": text });
    host::edit(room, target, &content.to_string(), &SendOptions::default())
}

/// Reacts to `target` with the annotation `key` (usually an emoji); returns the reaction's id.
pub fn react(room: &str, target: &str, key: &str) -> Result<String> {
    host::react(room, target, key, &SendOptions::default())
}

/// Joins a room by id or alias; returns the room id.
pub fn join(room_or_alias: &str) -> Result<String> {
    host::join(None, room_or_alias, &[])
}

/// Joins a room by id or alias as the puppet `user`; returns the room id. The room's join rules
/// apply as for anyone (a public room, or one the puppet was invited to).
pub fn join_as(user: &str, room_or_alias: &str) -> Result<String> {
    host::join(Some(user), room_or_alias, &[])
}

/// Leaves a room as the puppet `user`.
pub fn leave_as(user: &str, room: &str) -> Result<()> {
    host::leave(Some(user), room)
}

/// If `event` invites the bot, joins the room and returns `Ok(true)`; `Ok(false)` for any other
/// event. A failed join is returned as the error, so returning it from `on_event` has the host
/// retry the delivery.
pub fn accept_invite(event: &Event) -> Result<bool> {
    if !event.is_invite_for(whoami()) {
        return Ok(false);
    }
    join(event.room_id())?;
    Ok(true)
}
