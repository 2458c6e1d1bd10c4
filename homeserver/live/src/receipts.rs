//! Read receipts (`m.read`, `m.read.private`): the one write path, fed by the client API's
//! receipt endpoints for local users and by federation's `m.receipt` EDUs for remote ones.
//!
//! A receipt names an event of its room (the event must be known here), takes a position in
//! the event stream (so syncs and outbound federation see it in order) and only ever moves
//! forward. A public receipt wakes the room's joined members, a private one only its owner.

use std::sync::Arc;

use homeserver_core::{
    Error,
    streams::{
        EventStream,
        watermarks::{Mark, user_in_room},
    },
};
use homeserver_storage::{Db, receipts::ReceiptRow};
use ruma::{EventId, RoomId, UserId};

/// A receipt to store.
pub struct NewReceipt<'a> {
    pub room_id: &'a RoomId,
    pub user_id: &'a UserId,
    pub event_id: &'a EventId,
    /// `m.read` or `m.read.private`.
    pub receipt_type: &'a str,
    /// `""` for an unthreaded receipt, `"main"` or a thread root id otherwise.
    pub thread_id: &'a str,
    /// When the user read it (now for local users, the origin's time for remote ones).
    pub ts: i64,
}

pub struct Receipts {
    db: Db,
    stream: Arc<EventStream>,
}

impl Receipts {
    pub fn new(db: Db, stream: Arc<EventStream>) -> Self {
        Self { db, stream }
    }

    /// Stores a receipt for an event of the room and wakes who should see it. Returns whether
    /// it moved the user's receipt forward.
    pub async fn store(&self, receipt: &NewReceipt<'_>) -> Result<bool, Error> {
        let room_id = receipt.room_id.as_str();
        let event = self
            .db
            .event(receipt.event_id.as_str())
            .await?
            .filter(|e| e.room_id == room_id && !e.outlier)
            .ok_or_else(|| Error::not_found("Event not found in this room"))?;
        let reservation = self.stream.reserve(1).await?;
        let stored = self
            .db
            .set_receipt(&ReceiptRow {
                room_id: room_id.to_owned(),
                user_id: receipt.user_id.to_string(),
                receipt_type: receipt.receipt_type.to_owned(),
                thread_id: receipt.thread_id.to_owned(),
                event_id: receipt.event_id.to_string(),
                event_pos: event.stream_pos.get(),
                ts: receipt.ts,
                stream_pos: reservation.first() as i64,
            })
            .await?;
        if stored {
            let marks = self.stream.marks();
            marks.advance(Mark::RoomReceipts, room_id, reservation.first());
            let key = user_in_room(receipt.user_id.as_str(), room_id);
            marks.advance(Mark::UserReceipts, &key, reservation.first());
        }
        let woken = if !stored {
            Vec::new()
        } else if receipt.receipt_type == "m.read.private" {
            vec![receipt.user_id.to_owned()]
        } else {
            self.db
                .room_members(room_id, "join")
                .await?
                .into_iter()
                .filter_map(|u| UserId::parse(u).ok())
                .collect()
        };
        reservation.complete(woken);
        Ok(stored)
    }
}
