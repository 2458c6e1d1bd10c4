//! Sending message, state and redaction events on behalf of a local user.

use homeserver_core::Error;
use homeserver_storage::persist::TxnRecord;
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{Rooms, builder::EventTemplate, input::Submission};

impl Rooms {
    async fn submit_one(
        &self,
        room_id: &RoomId,
        template: EventTemplate,
        txn: Option<TxnRecord>,
    ) -> Result<OwnedEventId, Error> {
        if self.room_version(room_id).await?.is_none() {
            return Err(Error::not_found("room not found"));
        }
        let pdus = self.submit(room_id, Submission::Events { templates: vec![template], txn }).await?;
        pdus.last().map(|p| p.event_id.clone()).ok_or_else(|| Error::internal("no event produced"))
    }

    /// Sends a message-like event; `txn` makes retries return the same event.
    pub async fn send_message(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        content: Value,
        txn: Option<TxnRecord>,
    ) -> Result<OwnedEventId, Error> {
        self.submit_one(room_id, EventTemplate::new(kind, sender, content), txn).await
    }

    /// Sends a message-like event dated `origin_server_ts` (bridged history; the caller decides
    /// who may).
    pub async fn send_message_dated(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        content: Value,
        txn: Option<TxnRecord>,
        origin_server_ts: u64,
    ) -> Result<OwnedEventId, Error> {
        let template = EventTemplate {
            origin_server_ts: Some(origin_server_ts),
            ..EventTemplate::new(kind, sender, content)
        };
        self.submit_one(room_id, template, txn).await
    }

    /// Sets a state event. Re-sending the current content by the same sender returns the
    /// existing event instead of creating a duplicate (as Synapse does).
    pub async fn send_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: &str,
        state_key: &str,
        content: Value,
    ) -> Result<OwnedEventId, Error> {
        if let Some(current) = self.current_state_event(room_id, kind, state_key).await?
            && current.sender == sender
            && current.content_value() == content
        {
            return Ok(current.event_id.clone());
        }
        self.submit_one(room_id, EventTemplate::state(kind, state_key, sender, content), None).await
    }

    /// Redacts an event. Whether the redaction is allowed (the room's `redact` power level, or
    /// the sender's own event) is decided by the pipeline for every redaction, however sent.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &EventId,
        reason: Option<&str>,
        txn: Option<TxnRecord>,
    ) -> Result<OwnedEventId, Error> {
        let mut content = json!({});
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        let mut template = EventTemplate::new("m.room.redaction", sender, content);
        template.redacts = Some(target.to_owned());
        self.submit_one(room_id, template, txn).await
    }
}
