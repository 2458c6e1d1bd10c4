//! Guest access in rooms (the spec's guest access module, server behaviour): a guest of this
//! server joins a room only while its `m.room.guest_access` is `can_join`, and when a room stops
//! allowing guests, this server's guests leave it (their own leave, as Synapse does: no power
//! is needed, and guests stay a concept local to their server). Every local join passes
//! [`Rooms::vet_guest_join`] (through the membership templates); the room actor calls
//! [`Rooms::after_guest_access_change`] when a batch it committed changed the setting (whether
//! the change came from a client here or from another server) or let a guest in (a join vetted
//! just before a revocation committed is caught there), and [`Rooms::sweep_guests`] runs at
//! start-up, for a check a crash interrupted.

use homeserver_core::{Error, ErrorKind};
use ruma::{
    OwnedRoomId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde_json::{Map, Value, json};
use tracing::warn;

use crate::{Rooms, pdu::Pdu};

/// The state event type that says whether guests may join.
pub(crate) const GUEST_ACCESS: &str = "m.room.guest_access";

impl Rooms {
    /// Whether the room's guest access is `can_join`.
    async fn guests_may_join(&self, room_id: &RoomId) -> Result<bool, Error> {
        let setting = self.current_state_event(room_id, GUEST_ACCESS, "").await?;
        Ok(setting.and_then(|e| e.content_str("guest_access")).as_deref() == Some("can_join"))
    }

    /// For a join by a guest of this server: refuses it unless the room lets guests join, and
    /// marks the member event `kind: guest` (as Synapse does). Anyone else passes unchanged.
    pub(crate) async fn vet_guest_join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        content: &mut Map<String, Value>,
    ) -> Result<(), Error> {
        if user.server_name() != self.server_name() || !self.db().is_guest(user.as_str()).await? {
            return Ok(());
        }
        if !self.guests_may_join(room_id).await? {
            return Err(Error::new(ErrorKind::Forbidden, "Guest access is not allowed in this room"));
        }
        content.insert("kind".into(), json!("guest"));
        Ok(())
    }

    /// A guest of this server joins a room this server is not in only on an invite whose
    /// stripped state says guests may join (`m.room.guest_access` `can_join`, which this server
    /// puts in the stripped state of its own invites): the room's state cannot be checked before
    /// the join.
    pub(crate) async fn refuse_remote_guest_join(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(), Error> {
        if !self.db().is_guest(user.as_str()).await? {
            return Ok(());
        }
        let invite_admits_guests = match self.out_of_band(room_id, user).await? {
            Some(oob) if oob.membership == MembershipState::Invite => oob
                .event
                .unsigned_extra
                .as_deref()
                .and_then(|extra| serde_json::from_str::<Value>(extra).ok())
                .is_some_and(|extra| stripped_state_admits_guests(&extra)),
            _ => false,
        };
        if invite_admits_guests {
            return Ok(());
        }
        Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest access is not allowed in this room"))
    }

    /// After the room's guest access changed: unless guests may still join, this server's
    /// guests in the room (joined or invited) leave it. Runs apart from the room actor that
    /// committed the change, since the leaves go through that actor.
    pub(crate) fn after_guest_access_change(&self, room_id: OwnedRoomId) {
        let rooms = self.clone();
        tokio::spawn(async move {
            if let Err(err) = rooms.remove_guests_unless_allowed(&room_id).await {
                warn!(room_id = %room_id, error = %err, "could not remove guests from the room");
            }
        });
    }

    /// Checks every room this server's guests are in (at start-up: a check the room actor had
    /// spawned before a crash is not lost).
    pub async fn sweep_guests(&self) -> Result<(), Error> {
        for room in self.db().rooms_with_guests().await? {
            let Ok(room_id) = RoomId::parse(room) else { continue };
            self.remove_guests_unless_allowed(&room_id).await?;
        }
        Ok(())
    }

    async fn remove_guests_unless_allowed(&self, room_id: &RoomId) -> Result<(), Error> {
        if self.guests_may_join(room_id).await? {
            return Ok(());
        }
        for guest in self.db().guests_in_room(room_id.as_str()).await? {
            let Ok(guest) = UserId::parse(guest) else { continue };
            if let Err(err) = self.leave(room_id, &guest, Some("Guest access was revoked")).await {
                warn!(room_id = %room_id, user = %guest, error = %err, "guest could not leave");
            }
        }
        Ok(())
    }
}

/// Whether an invite's stripped state (`invite_room_state`) says guests may join.
fn stripped_state_admits_guests(extra: &Value) -> bool {
    extra.get("invite_room_state").and_then(Value::as_array).is_some_and(|events| {
        events.iter().any(|e| {
            e.get("type").and_then(Value::as_str) == Some(GUEST_ACCESS)
                && e.pointer("/content/guest_access").and_then(Value::as_str) == Some("can_join")
        })
    })
}

/// Whether an event is a guest's join (its member event says `kind: guest`).
pub(crate) fn is_guest_join(pdu: &Pdu) -> bool {
    pdu.kind == TimelineEventType::RoomMember
        && pdu.content_str("membership").as_deref() == Some("join")
        && pdu.content_str("kind").as_deref() == Some("guest")
}
