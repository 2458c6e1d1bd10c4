//! Serving events to other servers: `GET /_matrix/federation/v1/event/{eventId}`, `POST
//! /_matrix/federation/v1/get_missing_events/{roomId}` and `GET /_matrix/federation/v1/backfill/{roomId}`.
//!
//! Every answer goes through [`readable_room`] (the room exists here, the origin passes its
//! server ACL and has a joined member in it) and, per event, `Rooms::server_may_see` (the
//! room's history visibility for that server's users). Rejected events and outliers are never
//! served: a rejected event is `M_NOT_FOUND`, as if unknown.

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use axum::Router;
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::{
    OwnedEventId, OwnedRoomId, RoomId, ServerName,
    api::federation::{
        authentication::ServerSignatures,
        backfill::get_backfill,
        event::{get_event, get_missing_events},
    },
};
use serde_json::{json, value::RawValue};

use crate::FederationState;

/// Most events one `get_missing_events` or `backfill` answer holds.
const MAX_MISSING: usize = 100;
/// Most starting events a `backfill` request may name.
const MAX_BACKFILL_FROM: usize = 20;
/// Most events looked at while walking back for one answer.
const MAX_WALK: usize = 1_000;

/// `get_missing_events`, parsed as Synapse parses it: `earliest_events` and `latest_events`
/// may be left out (empty lists), `limit` defaults to 10 and `min_depth` to 0. ruma requires the first, so the
/// request type is declared here.
pub struct MissingEventsRequest {
    pub room_id: OwnedRoomId,
    pub earliest_events: Vec<OwnedEventId>,
    pub latest_events: Vec<OwnedEventId>,
    pub limit: u64,
    pub min_depth: u64,
}

#[derive(serde::Deserialize)]
struct MissingEventsBody {
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    #[serde(default)]
    latest_events: Vec<OwnedEventId>,
    #[serde(default = "default_missing_limit")]
    limit: u64,
    #[serde(default)]
    min_depth: u64,
}

fn default_missing_limit() -> u64 {
    10
}

impl ruma::api::Metadata for MissingEventsRequest {
    const METHOD: http::Method = http::Method::POST;
    const RATE_LIMITED: bool = false;
    type Authentication = ServerSignatures;
    type PathBuilder = ruma::api::path_builder::SinglePath;
    const PATH_BUILDER: ruma::api::path_builder::SinglePath =
        ruma::api::path_builder::SinglePath::new("/_matrix/federation/v1/get_missing_events/{room_id}");
}

impl ruma::api::IncomingRequest for MissingEventsRequest {
    type EndpointError = <get_missing_events::v1::Request as ruma::api::IncomingRequest>::EndpointError;
    // Never built: the handler answers with its own body.
    type OutgoingResponse = get_missing_events::v1::Response;

    fn try_from_http_request_inner(
        request: http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, ruma::api::error::DeserializationError> {
        let body: MissingEventsBody = serde_json::from_slice(request.body())?;
        Ok(Self {
            room_id: RoomId::parse(path_args.first().copied().unwrap_or_default())?,
            earliest_events: body.earliest_events,
            latest_events: body.latest_events,
            limit: body.limit,
            min_depth: body.min_depth,
        })
    }
}

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(event).ruma_route(missing_events).ruma_route(backfill)
}

/// Whether `origin` may read `room_id` at all: the room is known, the ACL admits the origin, and
/// one of its users is joined.
pub(crate) async fn readable_room(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
) -> Result<(), Error> {
    if state.rooms.room_version(room_id).await?.is_none() {
        return Err(Error::not_found("Unknown room"));
    }
    if !state.rooms.server_allowed(room_id, origin).await? {
        return Err(Error::forbidden("The room's server ACL forbids this server"));
    }
    if !state.db.has_joined_member_of(room_id.as_str(), origin.as_str()).await? {
        return Err(Error::forbidden("This server has no joined member in the room"));
    }
    Ok(())
}

/// Whether `origin` may see events placed between these state groups, remembered per pair
/// within one request (a walk visits many events of few states).
type SeenGroups = HashMap<(i64, i64), bool>;

/// The PDU text of an event `origin` may see, or `None`.
async fn servable(
    state: &FederationState,
    origin: &ServerName,
    event_id: &OwnedEventId,
    seen: &mut SeenGroups,
) -> Result<Option<Box<RawValue>>, Error> {
    let Some(row) = state.db.event(event_id.as_str()).await? else { return Ok(None) };
    if row.outlier || row.rejected_reason.is_some() {
        return Ok(None);
    }
    let groups = (row.state_before, row.state_after);
    let visible = match seen.get(&groups) {
        Some(visible) => *visible,
        None => {
            let visible = state.rooms.server_may_see(origin, &row).await?;
            seen.insert(groups, visible);
            visible
        }
    };
    Ok(if visible { RawValue::from_string(row.json).ok() } else { None })
}
/// `GET /_matrix/federation/v1/event/{eventId}`
async fn event(state: FederationState, req: Ruma<get_event::v1::Request>) -> Result<JsonBody, ApiError> {
    let origin = &req.auth;
    let Some(row) = state.db.event(req.body.event_id.as_str()).await.map_err(Error::from)? else {
        return Err(Error::not_found("Unknown event").into());
    };
    let room_id = RoomId::parse(&row.room_id).map_err(|e| Error::internal(e.to_string()))?;
    readable_room(&state, origin, &room_id).await?;
    let Some(pdu) = servable(&state, origin, &req.body.event_id, &mut SeenGroups::new()).await? else {
        return Err(Error::not_found("Unknown event").into());
    };
    Ok(JsonBody(json!({
        "origin": state.key.server_name(),
        "origin_server_ts": now_millis(),
        "pdus": [pdu],
    })))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the events before `latest_events`
/// back to `earliest_events`, breadth first, at least `min_depth` deep, oldest first.
async fn missing_events(
    state: FederationState,
    req: Ruma<MissingEventsRequest>,
) -> Result<JsonBody, ApiError> {
    let origin = &req.auth;
    let room_id = &req.body.room_id;
    readable_room(&state, origin, room_id).await?;
    let limit = usize::try_from(req.body.limit).unwrap_or(MAX_MISSING).min(MAX_MISSING);
    let min_depth = req.body.min_depth;
    let mut seen: HashSet<OwnedEventId> =
        req.body.earliest_events.iter().chain(req.body.latest_events.iter()).cloned().collect();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for latest in req.body.latest_events.iter().take(MAX_MISSING) {
        if let Some(pdu) = state.rooms.cache().get(latest).await?
            && pdu.room_id == *room_id
        {
            queue.extend(pdu.prev_events.iter().cloned());
        }
    }
    let mut found: Vec<(u64, Box<RawValue>)> = Vec::new();
    let mut visible = SeenGroups::new();
    let mut walked = 0;
    while let Some(id) = queue.pop_front() {
        if found.len() >= limit || walked >= MAX_WALK {
            break;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        walked += 1;
        let Some(pdu) = state.rooms.cache().get(&id).await? else { continue };
        if pdu.room_id != *room_id || pdu.depth < min_depth {
            continue;
        }
        if let Some(json) = servable(&state, origin, &id, &mut visible).await? {
            found.push((pdu.depth, json));
        }
        queue.extend(pdu.prev_events.iter().cloned());
    }
    found.sort_by_key(|(depth, _)| *depth);
    let events: Vec<Box<RawValue>> = found.into_iter().map(|(_, json)| json).collect();
    Ok(JsonBody(json!({ "events": events })))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=…`: the events `v` names and those
/// before them, deepest first (a walk along prev events that always takes the deepest event
/// it has reached), at most `limit` (100).
async fn backfill(
    state: FederationState,
    req: Ruma<get_backfill::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let origin = &req.auth;
    let room_id = &req.body.room_id;
    readable_room(&state, origin, room_id).await?;
    let limit = usize::try_from(u64::from(req.body.limit)).unwrap_or(MAX_MISSING).min(MAX_MISSING);
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut frontier: BinaryHeap<(u64, OwnedEventId)> = BinaryHeap::new();
    for start in req.body.v.iter().take(MAX_BACKFILL_FROM) {
        if let Some(pdu) = state.rooms.cache().get(start).await?
            && pdu.room_id == *room_id
            && seen.insert(start.clone())
        {
            frontier.push((pdu.depth, start.clone()));
        }
    }
    let mut pdus: Vec<Box<RawValue>> = Vec::new();
    let mut visible = SeenGroups::new();
    let mut walked = 0;
    while let Some((_, id)) = frontier.pop() {
        if pdus.len() >= limit || walked >= MAX_WALK {
            break;
        }
        walked += 1;
        let Some(pdu) = state.rooms.cache().get(&id).await? else { continue };
        if let Some(json) = servable(&state, origin, &id, &mut visible).await? {
            pdus.push(json);
        }
        for prev in &pdu.prev_events {
            if seen.insert(prev.clone())
                && let Some(prev_pdu) = state.rooms.cache().get(prev).await?
                && prev_pdu.room_id == *room_id
            {
                frontier.push((prev_pdu.depth, prev.clone()));
            }
        }
    }
    Ok(JsonBody(json!({
        "origin": state.key.server_name(),
        "origin_server_ts": now_millis(),
        "pdus": pdus,
    })))
}
