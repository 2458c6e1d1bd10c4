//! Sections of rooms the user is invited to or knocked on: the stripped state they may see
//! before joining, and their own membership event.

use homeserver_core::Error;
use homeserver_rooms::format::RoomIdField;
use homeserver_storage::events::MembershipRow;
use ruma::RoomId;
use serde_json::{Value, json};

use crate::context::SyncContext;

/// Event types shown to invitees in `invite_state`.
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.topic",
];

/// The room summary an invitee or knocker sees before joining: name, topic, join rules and such.
pub(crate) async fn stripped_state(ctx: &SyncContext<'_>, room_id: &RoomId) -> Result<Vec<Value>, Error> {
    let mut events = Vec::new();
    for ty in STRIPPED_STATE_TYPES {
        if let Some(pdu) = ctx.syncer.rooms.current_state_event(room_id, ty, "").await? {
            events.push(json!({
                "type": pdu.kind.to_string(),
                "state_key": pdu.state_key,
                "content": pdu.content_value(),
                "sender": pdu.sender,
            }));
        }
    }
    Ok(events)
}

/// A room the user knocked on: its stripped state and the knock itself.
pub(crate) async fn knocked_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    m: &MembershipRow,
) -> Result<Value, Error> {
    let mut events = stripped_state(ctx, room_id).await?;
    if let Some(row) = ctx.syncer.db.event(m.event_id.as_str()).await.map_err(Error::from)? {
        let mut knock_event =
            ctx.syncer.rooms.client_event(&row, Some(ctx.viewer()), RoomIdField::Omit).await?;
        if let Some(obj) = knock_event.as_object_mut() {
            obj.remove("unsigned");
        }
        events.push(knock_event);
    }
    Ok(json!({ "knock_state": { "events": events } }))
}

pub(crate) async fn invited_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    m: &MembershipRow,
) -> Result<Option<Value>, Error> {
    let app = ctx.syncer;
    if let Some(invite) = app.db.event(m.event_id.as_str()).await.map_err(Error::from)?
        && ctx.ignored.contains(&invite.sender)
    {
        // Invites from ignored users are not shown at all.
        return Ok(None);
    }
    let mut events = stripped_state(ctx, room_id).await?;
    if let Some(row) = app.db.event(m.event_id.as_str()).await.map_err(Error::from)? {
        if let Ok(sender) = ruma::UserId::parse(&row.sender)
            && let Some(inviter) =
                app.rooms.current_state_event(room_id, "m.room.member", sender.as_str()).await?
        {
            events.push(json!({
                "type": "m.room.member",
                "state_key": inviter.state_key,
                "content": inviter.content_value(),
                "sender": inviter.sender,
            }));
        }
        let mut invite_event = app.rooms.client_event(&row, Some(ctx.viewer()), RoomIdField::Omit).await?;
        if let Some(obj) = invite_event.as_object_mut() {
            obj.remove("unsigned");
        }
        events.push(invite_event);
    }
    Ok(Some(json!({ "invite_state": { "events": events } })))
}
