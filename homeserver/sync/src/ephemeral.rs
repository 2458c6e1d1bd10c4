//! The ephemeral streams of a joined room's section: typing (from `homeserver_live::typing`,
//! whose serial is the ephemeral part of the token) and receipts (read only for rooms whose
//! receipt watermark moved since the token).

use std::collections::HashMap;

use homeserver_core::{Error, streams::watermarks::Mark};
use homeserver_storage::{events::MembershipRow, receipts::ReceiptRow};
use ruma::{OwnedUserId, RoomId, events::room::member::MembershipState};
use serde_json::{Map, Value, json};

use crate::context::SyncContext;

/// The ephemeral events of one room in this sync.
#[derive(Default)]
pub(crate) struct Ephemeral {
    /// Who is typing, when the client should be told (changed since `since`, or a new room).
    pub typing: Option<Vec<OwnedUserId>>,
    pub receipts: Vec<ReceiptRow>,
}

impl Ephemeral {
    pub fn is_empty(&self) -> bool {
        self.typing.is_none() && self.receipts.is_empty()
    }
}

/// The receipts and typing changes of the rooms in one sync.
pub(crate) struct EphemeralStreams {
    receipts_by_room: HashMap<String, Vec<ReceiptRow>>,
    /// The typing serial of the client's token.
    typing_since: u64,
}

impl EphemeralStreams {
    /// Reads the receipts of the joined rooms whose watermark says they may have new ones.
    pub async fn read(ctx: &SyncContext<'_>, memberships: &[MembershipRow]) -> Result<Self, Error> {
        let since = ctx.since_pos();
        let marks = ctx.syncer.stream.marks();
        let receipt_rooms: Vec<String> = memberships
            .iter()
            .filter(|m| m.membership == MembershipState::Join)
            .filter(|m| marks.changed_after(Mark::RoomReceipts, m.room_id.as_str(), since.as_live()))
            .map(|m| m.room_id.to_string())
            .collect();
        let mut receipts_by_room: HashMap<String, Vec<ReceiptRow>> = HashMap::new();
        if !receipt_rooms.is_empty() {
            for r in ctx.syncer.db.receipts_between(&receipt_rooms, since.get(), ctx.now.get()).await? {
                receipts_by_room.entry(r.room_id.clone()).or_default().push(r);
            }
        }
        Ok(Self { receipts_by_room, typing_since: ctx.since.map(|s| s.ephemeral).unwrap_or(0) })
    }

    /// What a room's section carries: typing if it changed since the token (or the room is new
    /// to the client and someone types), and its new receipts.
    pub fn take(&mut self, ctx: &SyncContext<'_>, room_id: &RoomId, new_to_client: bool) -> Ephemeral {
        let (typing_users, room_serial) = ctx.syncer.live.typing.typing_in(room_id);
        let typing_changed = room_serial > self.typing_since || (new_to_client && !typing_users.is_empty());
        Ephemeral {
            typing: typing_changed.then_some(typing_users),
            receipts: self.receipts_by_room.remove(room_id.as_str()).unwrap_or_default(),
        }
    }
}

/// The typing and receipt events a room's section carries, as the ephemeral filter allows.
pub(crate) fn ephemeral_events(ctx: &SyncContext<'_>, ephemeral: Ephemeral) -> Vec<Value> {
    let filter = &ctx.filter.room.ephemeral;
    let mut events = Vec::new();
    if let Some(users) = ephemeral.typing
        && filter.allows("m.typing", "")
    {
        let users: Vec<_> = users.into_iter().filter(|u| !ctx.ignored.contains(u.as_str())).collect();
        events.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
    }
    let receipts: Vec<ReceiptRow> =
        ephemeral.receipts.into_iter().filter(|r| !ctx.ignored.contains(&r.user_id)).collect();
    if filter.allows("m.receipt", "")
        && let Some(event) = receipt_event(&receipts, ctx.user.as_str())
    {
        events.push(event);
    }
    events
}

/// The `m.receipt` ephemeral event for a set of receipts, as `viewer` may see them (private
/// receipts only their own).
pub fn receipt_event(receipts: &[ReceiptRow], viewer: &str) -> Option<Value> {
    let mut content: Map<String, Value> = Map::new();
    for r in receipts {
        if r.receipt_type == "m.read.private" && r.user_id != viewer {
            continue;
        }
        let mut info = json!({ "ts": r.ts });
        if !r.thread_id.is_empty() {
            info["thread_id"] = json!(r.thread_id);
        }
        let by_type = content.entry(r.event_id.clone()).or_insert_with(|| json!({}));
        by_type[&r.receipt_type][&r.user_id] = info;
    }
    (!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content }))
}
