//! Serving a room's state and auth chains to other servers: `GET /state_ids/{roomId}`, `GET
//! /state/{roomId}` (the state before an event, with the auth chain of that state) and `GET
//! /event_auth/{roomId}/{eventId}` (an event's auth chain). The same gate as events
//! ([`crate::events::readable_room`]), and the event named must be one the origin may see.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::events::EventRow;
use ruma::{
    EventId, RoomId, ServerName,
    api::federation::{
        authorization::get_event_authorization,
        event::{get_room_state, get_room_state_ids},
    },
};
use serde_json::{json, value::RawValue};

use crate::{FederationState, events::readable_room};

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(state_ids).ruma_route(state).ruma_route(event_auth)
}

/// The event `origin` asks about, if it belongs to the room and the origin may see it.
async fn anchor(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<EventRow, Error> {
    readable_room(state, origin, room_id).await?;
    let row = state.db.event(event_id.as_str()).await?;
    let row = row.filter(|r| r.room_id == room_id.as_str() && !r.outlier && r.rejected_reason.is_none());
    let Some(row) = row else { return Err(Error::not_found("Unknown event")) };
    if !state.rooms.server_may_see(origin, &row).await? {
        return Err(Error::forbidden("This server may not see that event"));
    }
    Ok(row)
}

/// The state before `row` (ids) and the auth chain of that state (ids, not repeating the state).
async fn state_and_chain(
    state: &FederationState,
    row: &EventRow,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let entries = state.rooms.state_at_group(row.state_before).await?;
    let ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
    let mut chain: Vec<String> = state.db.auth_chain(&ids).await?.into_iter().collect();
    chain.sort();
    Ok((ids, chain))
}

/// The PDUs of `ids` (unknown ids skipped), oldest first, so an event's auth events come
/// before it.
async fn pdus(state: &FederationState, ids: &[String]) -> Result<Vec<Box<RawValue>>, Error> {
    let mut rows = state.db.events(ids).await?;
    rows.sort_by_key(|r| (r.depth, r.stream_pos));
    Ok(rows.into_iter().filter_map(|r| RawValue::from_string(r.json).ok()).collect())
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
async fn state_ids(
    state: FederationState,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let row = anchor(&state, &req.auth, &req.body.room_id, &req.body.event_id).await?;
    let (ids, chain) = state_and_chain(&state, &row).await?;
    Ok(JsonBody(json!({ "pdu_ids": ids, "auth_chain_ids": chain })))
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`
async fn state(state: FederationState, req: Ruma<get_room_state::v1::Request>) -> Result<JsonBody, ApiError> {
    let row = anchor(&state, &req.auth, &req.body.room_id, &req.body.event_id).await?;
    let (ids, chain) = state_and_chain(&state, &row).await?;
    Ok(JsonBody(json!({ "pdus": pdus(&state, &ids).await?, "auth_chain": pdus(&state, &chain).await? })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth(
    state: FederationState,
    req: Ruma<get_event_authorization::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let row = anchor(&state, &req.auth, &req.body.room_id, &req.body.event_id).await?;
    let mut chain: Vec<String> =
        state.db.auth_chain(&[row.event_id]).await.map_err(Error::from)?.into_iter().collect();
    chain.sort();
    Ok(JsonBody(json!({ "auth_chain": pdus(&state, &chain).await? })))
}
