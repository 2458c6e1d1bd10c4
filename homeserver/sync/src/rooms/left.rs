//! A left (or banned) room's section: the timeline up to the departure.

use homeserver_core::Error;
use homeserver_rooms::format::RoomIdField;
use homeserver_storage::events::MembershipRow;
use ruma::RoomId;
use serde_json::{Value, json};

use crate::{
    context::SyncContext,
    rooms::{
        state::state_section,
        timeline::{Reader, prev_batch, start_group, timeline},
    },
};

/// A left room's section: the timeline up to the departure; full state if the room is new to
/// the client (e.g. joined and left within the window).
pub(crate) async fn left_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    m: &MembershipRow,
    new_to_client: bool,
) -> Result<Option<Value>, Error> {
    let departure = ctx.syncer.db.event(m.event_id.as_str()).await.map_err(Error::from)?;
    if let Some(departure) = departure.as_ref().filter(|row| row.is_out_of_band()) {
        // A rejected invite or withdrawn knock of a room this server holds no state of (the
        // departure is stored out of band): it is all there is to show.
        let departure = departure.clone();
        let events =
            ctx.syncer.rooms.client_events(&[departure], Some(ctx.viewer()), RoomIdField::Omit).await?;
        return Ok(Some(json!({
            "timeline": { "events": events, "limited": false },
            "state": { "events": [] },
            "account_data": { "events": [] },
        })));
    }
    let since = ctx.since_pos();
    let timeline_filter = &ctx.filter.room.timeline;
    let tl = timeline(ctx, room_id, (since, m.stream_pos), timeline_filter, Reader::Departed).await?;
    let group = start_group(ctx, room_id, &tl, m.stream_pos).await?;
    let full_state = new_to_client || ctx.full_state;
    // The room's state only if the user could see the room where the timeline starts: someone
    // who only rejected an invite or withdrew a knock sees their own event, not the members.
    let user = ctx.user;
    let may_read = ctx.syncer.rooms.may_read_state_at(user, room_id, group).await?
        || match &departure {
            Some(departure) => ctx.syncer.rooms.may_read_state_around(user, room_id, departure).await?,
            None => false,
        };
    let state = match may_read {
        true => state_section(ctx, room_id, &tl, group, full_state, (since, m.stream_pos)).await?,
        false => Vec::new(),
    };
    let v = Some(ctx.viewer());
    Ok(Some(json!({
        "timeline": {
            "events": ctx.syncer.rooms.client_events(&tl.rows, v, RoomIdField::Omit).await?,
            "limited": tl.limited,
            "prev_batch": prev_batch(&tl, m.stream_pos),
        },
        "state": { "events": ctx.syncer.rooms.client_events(&state, v, RoomIdField::Omit).await? },
        "account_data": { "events": [] },
    })))
}
