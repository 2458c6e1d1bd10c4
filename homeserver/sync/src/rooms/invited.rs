//! Sections of rooms the user is invited to or knocked on: the stripped state they may see
//! before joining, and their own membership event.

use homeserver_core::Error;
use homeserver_rooms::format::RoomIdField;
use homeserver_storage::events::{EventRow, MembershipRow};
use ruma::RoomId;
use serde_json::{Value, json};

use crate::context::SyncContext;

/// The room summary an invitee or knocker sees before joining: from the room's state when this
/// server holds it, otherwise the stripped state another server sent with the invite (or in
/// answer to the knock).
pub(crate) async fn stripped_state(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    invite: Option<&EventRow>,
) -> Result<Vec<Value>, Error> {
    let events = ctx.syncer.rooms.stripped_state(room_id).await?;
    if !events.is_empty() {
        return Ok(events);
    }
    Ok(invite.map(invite_room_state).unwrap_or_default())
}

/// The `invite_room_state` another server sent with an invite, or the `knock_room_state` it
/// answered a knock with (kept with the event): only well-formed stripped events, at most
/// [`MAX_INVITE_STATE`].
fn invite_room_state(invite: &EventRow) -> Vec<Value> {
    let Some(extra) = invite.unsigned_extra.as_deref() else { return Vec::new() };
    let Ok(extra) = serde_json::from_str::<Value>(extra) else { return Vec::new() };
    let events = extra.get("invite_room_state").or_else(|| extra.get("knock_room_state"));
    let Some(events) = events.and_then(Value::as_array) else { return Vec::new() };
    events
        .iter()
        .filter(|e| {
            e.get("type").is_some_and(Value::is_string)
                && e.get("state_key").is_some_and(Value::is_string)
                && e.get("sender").is_some_and(Value::is_string)
                && e.get("content").is_some_and(Value::is_object)
        })
        .take(MAX_INVITE_STATE)
        .map(|e| json!({ "type": e["type"], "state_key": e["state_key"], "content": e["content"], "sender": e["sender"] }))
        .collect()
}

/// Most stripped events of another server's invite shown.
const MAX_INVITE_STATE: usize = 50;

/// A room the user knocked on: its stripped state and the knock itself.
pub(crate) async fn knocked_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    m: &MembershipRow,
) -> Result<Value, Error> {
    let row = ctx.syncer.db.event(m.event_id.as_str()).await.map_err(Error::from)?;
    let mut events = stripped_state(ctx, room_id, row.as_ref()).await?;
    if let Some(row) = row {
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
    let invite = app.db.event(m.event_id.as_str()).await.map_err(Error::from)?;
    if invite.as_ref().is_some_and(|i| ctx.ignored.contains(&i.sender)) {
        // Invites from ignored users are not shown at all.
        return Ok(None);
    }
    let mut events = stripped_state(ctx, room_id, invite.as_ref()).await?;
    if let Some(row) = invite {
        if let Ok(sender) = ruma::UserId::parse(&row.sender)
            && let Some(inviter) =
                app.rooms.current_state_event(room_id, "m.room.member", sender.as_str()).await?
        {
            events.push(homeserver_rooms::read::stripped(&inviter));
        }
        let mut invite_event = app.rooms.client_event(&row, Some(ctx.viewer()), RoomIdField::Omit).await?;
        if let Some(obj) = invite_event.as_object_mut() {
            obj.remove("unsigned");
        }
        events.push(invite_event);
    }
    Ok(Some(json!({ "invite_state": { "events": events } })))
}
