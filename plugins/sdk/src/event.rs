//! [`Event`]: a room event with its content parsed, and [`Command`]: a `!word args` invocation.

use serde_json::Value;

use crate::Relation;
use crate::bindings::lattice::plugin::types::Event as RawEvent;

/// A room event as the plugin sees it (redactions applied), with `content` parsed as JSON.
#[derive(Clone, Debug)]
pub struct Event {
    raw: RawEvent,
    content: Value,
}

impl Event {
    /// Wraps a generated event; content that is not valid JSON becomes `Value::Null`.
    pub fn from_raw(raw: RawEvent) -> Self {
        let content = serde_json::from_str(&raw.content_json).unwrap_or(Value::Null);
        Event { raw, content }
    }

    /// The generated record, as the host sent it.
    pub fn raw(&self) -> &RawEvent {
        &self.raw
    }

    pub fn into_raw(self) -> RawEvent {
        self.raw
    }

    /// The event id (`$…`).
    pub fn id(&self) -> &str {
        &self.raw.event_id
    }

    /// The room id (`!…`).
    pub fn room_id(&self) -> &str {
        &self.raw.room_id
    }

    pub fn sender(&self) -> &str {
        &self.raw.sender
    }

    /// The event type (`m.room.message`, `m.room.member`, …).
    pub fn event_type(&self) -> &str {
        &self.raw.event_type
    }

    /// `Some` for state events.
    pub fn state_key(&self) -> Option<&str> {
        self.raw.state_key.as_deref()
    }

    /// Milliseconds since the Unix epoch, as the origin server stamped it.
    pub fn origin_server_ts(&self) -> u64 {
        self.raw.origin_server_ts
    }

    /// The event's `content`.
    pub fn content(&self) -> &Value {
        &self.content
    }

    /// A string field of the content.
    pub fn content_str(&self, field: &str) -> Option<&str> {
        self.content.get(field)?.as_str()
    }

    /// `content.body` (messages).
    pub fn body(&self) -> Option<&str> {
        self.content_str("body")
    }

    /// `content.msgtype` (`m.text`, `m.notice`, …).
    pub fn msgtype(&self) -> Option<&str> {
        self.content_str("msgtype")
    }

    /// `content.membership` of an `m.room.member` event.
    pub fn membership(&self) -> Option<&str> {
        if self.event_type() == "m.room.member" { self.content_str("membership") } else { None }
    }

    /// `m.relates_to`, if it has a `rel_type` and `event_id`.
    pub fn relation(&self) -> Option<&Relation> {
        self.raw.relation.as_ref()
    }

    /// The root of the thread the event is in, if any.
    pub fn thread_root(&self) -> Option<&str> {
        self.raw.thread_root.as_deref()
    }

    /// Whether this is an `m.room.message`.
    pub fn is_message(&self) -> bool {
        self.event_type() == "m.room.message"
    }

    /// Whether this is an invite of `user` (an `m.room.member` event with `state_key == user`
    /// and membership `invite`).
    pub fn is_invite_for(&self, user: &str) -> bool {
        self.membership() == Some("invite") && self.state_key() == Some(user)
    }
}

/// A command: a message `!name args…` for one of the words the plugin registered.
#[derive(Clone, Debug)]
pub struct Command {
    /// The message that carried the command.
    pub event: Event,
    /// The command word, without the `!`.
    pub name: String,
    /// What followed the command word, trimmed.
    pub args: String,
}
