//! A joined room's section: timeline, state, ephemeral events, unread counts and summary.

use homeserver_core::{Error, streams::StreamPos};
use homeserver_rooms::format::RoomIdField;
use ruma::RoomId;
use serde_json::{Map, Value, json};

use crate::{
    context::SyncContext,
    ephemeral::{Ephemeral, ephemeral_events},
    rooms::{
        state::state_section,
        timeline::{Reader, prev_batch, start_group, timeline},
    },
};

pub(crate) fn empty_joined_room() -> Value {
    json!({
        "timeline": { "events": [], "limited": false },
        "state": { "events": [] },
        "account_data": { "events": [] },
        "ephemeral": { "events": [] },
        "unread_notifications": {},
    })
}

pub(crate) async fn summary(ctx: &SyncContext<'_>, room_id: &RoomId) -> Result<Value, Error> {
    let db = &ctx.syncer.db;
    let joined = db.room_members(room_id.as_str(), "join").await.map_err(Error::from)?;
    let invited = db.room_members(room_id.as_str(), "invite").await.map_err(Error::from)?;
    let me = ctx.user.as_str();
    let mut summary = json!({
        "m.joined_member_count": joined.len(),
        "m.invited_member_count": invited.len(),
    });
    // Heroes name a room that has no name or canonical alias of its own.
    let named = ctx.syncer.rooms.current_state_event(room_id, "m.room.name", "").await?.is_some()
        || ctx.syncer.rooms.current_state_event(room_id, "m.room.canonical_alias", "").await?.is_some();
    if !named {
        let heroes: Vec<&String> =
            joined.iter().chain(invited.iter()).filter(|u| u.as_str() != me).take(5).collect();
        summary["m.heroes"] = json!(heroes);
    }
    Ok(summary)
}

/// A joined room's section. `new_to_client`: the user was not joined at `since` (or this is an
/// initial sync), so the client gets the room's whole state and a timeline from its history.
/// A joined room's section. `joined_at` is where the user's stay began: unread counts start
/// there when the user has no receipt yet (their own invite does not count).
pub(crate) async fn joined_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    new_to_client: bool,
    joined_at: StreamPos,
    ephemeral: Ephemeral,
) -> Result<Option<Value>, Error> {
    let up_to = ctx.now;
    let since = ctx.since_pos();
    let timeline_from = if new_to_client { StreamPos::ZERO } else { since };
    let full_state = new_to_client || ctx.full_state;
    let timeline_filter = &ctx.filter.room.timeline;
    let mut tl = timeline(ctx, room_id, (timeline_from, up_to), timeline_filter, Reader::Member).await?;
    // A room joined since the last sync has history the client has not seen (as Synapse says).
    tl.limited |= new_to_client && ctx.since.is_some();
    let group = start_group(ctx, room_id, &tl, up_to).await?;
    let state = state_section(ctx, room_id, &tl, group, full_state, (since, up_to)).await?;
    let ephemeral_events = ephemeral_events(ctx, ephemeral);
    if !full_state && tl.rows.is_empty() && state.is_empty() && ephemeral_events.is_empty() {
        return Ok(None);
    }
    let app = ctx.syncer;
    let v = Some(ctx.viewer());
    let members_changed =
        full_state || tl.rows.iter().chain(state.iter()).any(|r| r.event_type == "m.room.member");
    let mut room = empty_joined_room();
    room["timeline"] = json!({
        "events": app.rooms.client_events(&tl.rows, v, RoomIdField::Omit).await?,
        "limited": tl.limited,
        "prev_batch": prev_batch(&tl, up_to),
    });
    room["state"] = json!({ "events": app.rooms.client_events(&state, v, RoomIdField::Omit).await? });
    room["ephemeral"] = json!({ "events": ephemeral_events });
    let per_thread = ctx.filter.room.timeline.unread_thread_notifications;
    let user = ctx.user.as_str();
    let counts = app
        .live
        .unread
        .counts(user, room_id.as_str(), joined_at.get(), per_thread, &ctx.ignored, ctx.now.get())
        .await?;
    room["unread_notifications"] =
        json!({ "notification_count": counts.main.0, "highlight_count": counts.main.1 });
    if per_thread {
        let threads: Map<String, Value> = counts
            .threads
            .into_iter()
            .map(|(t, n, h)| (t, json!({ "notification_count": n, "highlight_count": h })))
            .collect();
        room["unread_thread_notifications"] = Value::Object(threads);
    }
    if members_changed {
        room["summary"] = summary(ctx, room_id).await?;
    }
    Ok(Some(room))
}
