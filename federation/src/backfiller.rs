//! Backfilling as the late joiner: history this server does not hold, asked of other servers
//! in the room (`GET /backfill`) when a client pages back past what is stored.
//!
//! The answer (at most 100 events of the room) is placed oldest first with the room model's
//! `Backfill` arrival: history sorts before what the room shows and never touches its
//! extremities or current state. An event whose prev events are neither stored nor in the
//! answer (the far edge of what came back) gets the state before it from the same server
//! (`/state_ids`), the events of that state and its auth chain fetched (`/event`, at most
//! [`MAX_FETCH`] per backfill) and stored as outliers first. Events the room model refuses are
//! left out; nothing else is retried. Callers bound how often a room is backfilled.

use std::collections::HashSet;

use homeserver_core::Error;
use homeserver_rooms::{
    remote::{Arrival, IncomingPdu, Verdict},
    versions,
};
use ruma::{
    OwnedEventId, OwnedServerName, RoomId, ServerName, UInt,
    api::federation::{
        backfill::get_backfill,
        event::{get_event, get_room_state_ids},
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::Value;

use crate::{FederationState, client::remote_error, joiner::in_auth_order, transactions::event_id_of};

/// Servers asked for one backfill.
const MAX_SERVERS: usize = 3;
/// Most events fetched one by one (state and auth chain at the far edge) per backfill.
pub(crate) const MAX_FETCH: usize = 500;
/// Most events asked for at once.
const MAX_LIMIT: u32 = 100;
/// Fewest events asked for in one `/backfill`.
const MIN_BATCH: u32 = 100;
/// Most far-edge events of one backfill that get their state from the server.
const MAX_EDGES: usize = 5;
/// Most ids a `/state_ids` answer may name (the room model's cap on supplied state), and the
/// largest answer read.
const MAX_STATE_IDS: usize = 200_000;
const MAX_STATE_IDS_BYTES: usize = 24 * 1024 * 1024;

/// Backfills `room_id` from before `from` (its backward extremities) through the first of
/// `servers` that answers; returns how many events were placed.
pub(crate) async fn backfill(
    state: &FederationState,
    room_id: &RoomId,
    from: Vec<OwnedEventId>,
    limit: u32,
    servers: &[OwnedServerName],
) -> Result<usize, Error> {
    let version = state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
    let mut last = Error::not_found("No server could backfill the room");
    for server in servers.iter().filter(|s| **s != state.key.server_name()).take(MAX_SERVERS) {
        // At least a full batch (100, as Synapse asks for) whatever the page needs: the
        // oldest event of a batch needs its state from the other server, so fewer, larger
        // batches cross fewer such edges (and servers that cannot answer `/state_ids` still
        // hand over small rooms whole).
        let limit = UInt::from(limit.clamp(MIN_BATCH, MAX_LIMIT));
        let request = get_backfill::v1::Request::new(room_id.to_owned(), from.clone(), limit);
        match state.client.send(server, request).await {
            Ok(answer) => return place(state, room_id, &rules, server, &from, answer.pdus).await,
            Err(err) => {
                tracing::info!(%room_id, %server, error = %err, "backfill failed");
                last = remote_error(err);
            }
        }
    }
    Err(last)
}

/// One event of the answer.
struct Fetched {
    id: OwnedEventId,
    depth: u64,
    text: String,
    value: Value,
}

async fn place(
    state: &FederationState,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    server: &ServerName,
    from: &[OwnedEventId],
    pdus: Vec<Box<serde_json::value::RawValue>>,
) -> Result<usize, Error> {
    let mut batch: Vec<Fetched> = Vec::new();
    let mut ids: HashSet<OwnedEventId> = HashSet::new();
    for raw in pdus.iter().take(MAX_LIMIT as usize) {
        let Ok(value) = serde_json::from_str::<Value>(raw.get()) else { continue };
        let Some(id) = event_id_of(&value, rules) else { continue };
        if value.get("room_id").and_then(Value::as_str) != Some(room_id.as_str()) || !ids.insert(id.clone()) {
            continue;
        }
        let depth = value.get("depth").and_then(Value::as_u64).unwrap_or(0);
        batch.push(Fetched { id, depth, text: raw.get().to_owned(), value });
    }
    // Only history of what was asked for: events reachable from `from` through prev events
    // within the answer (a server cannot slip in events elsewhere in the room).
    let mut reachable: HashSet<OwnedEventId> = from.iter().cloned().collect();
    batch.sort_by_key(|e| std::cmp::Reverse(e.depth));
    for event in &batch {
        if reachable.contains(&event.id) {
            for prev in prev_ids(&event.value) {
                if let Ok(prev) = OwnedEventId::try_from(prev.as_str()) {
                    reachable.insert(prev);
                }
            }
        }
    }
    batch.retain(|e| reachable.contains(&e.id));
    let ids: HashSet<OwnedEventId> = batch.iter().map(|e| e.id.clone()).collect();
    batch.sort_by_key(|e| e.depth);
    let mut fetched_budget = MAX_FETCH;
    let mut edges = 0;
    let mut incoming = Vec::with_capacity(batch.len());
    for event in &batch {
        state.keys.prefetch_for_event(&event.value, rules).await?;
        let prevs = prev_ids(&event.value);
        let mut edge = false;
        for prev in &prevs {
            if ids.iter().any(|i| i.as_str() == prev) {
                continue;
            }
            if state.db.event(prev).await?.is_none_or(|row| row.outlier) {
                edge = true;
                break;
            }
        }
        let state_before = if edge {
            if edges >= MAX_EDGES {
                continue;
            }
            edges += 1;
            match state_before_event(
                state,
                room_id,
                rules,
                server,
                (&event.id, &event.value),
                &mut fetched_budget,
            )
            .await
            {
                Ok(ids) => Some(ids),
                // This edge stays unplaced; the events that follow it come back as missing.
                Err(err) => {
                    tracing::info!(%room_id, %server, event_id = %event.id, error = %err.message, "no state for a backfilled edge");
                    continue;
                }
            }
        } else {
            None
        };
        incoming.push(IncomingPdu { json: event.text.clone(), state_before });
    }
    let verdicts = state.rooms.receive_remote(room_id, incoming, Arrival::Backfill).await?;
    Ok(verdicts.iter().filter(|v| matches!(v, Verdict::Accepted(_))).count())
}

/// The prev event ids an event names.
fn prev_ids(value: &Value) -> Vec<String> {
    homeserver_rooms::event_format::referenced_ids(value, "prev_events")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The state to supply for an event whose prev events this server lacks in its timeline, from
/// `server`, with the events it names stored (as outliers) first. When one prev event is
/// lacking — nearly always — it is the state after that prev event, asked for the way Synapse
/// asks (the state at the prev event, then the prev event itself, stored as an outlier, on
/// top), which peers that answer only what they expect to be asked (SyTest's) understand; the
/// room model resolves it with the states after the prev events it holds. When several are
/// lacking, it is the state before the event itself.
pub(crate) async fn state_before_event(
    state: &FederationState,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    server: &ServerName,
    event: (&OwnedEventId, &Value),
    budget: &mut usize,
) -> Result<Vec<OwnedEventId>, Error> {
    let (event_id, value) = event;
    // The room model resolves what is supplied with the states after the prev events it holds
    // in its timeline; the state supplied stands for the others.
    let mut unplaced = Vec::new();
    for prev in prev_ids(value) {
        if state.db.event(&prev).await?.is_none_or(|row| row.outlier) {
            unplaced.push(prev);
        }
    }
    let [prev] = unplaced.as_slice() else {
        return edge_state(state, room_id, rules, server, event_id, budget).await;
    };
    let prev = OwnedEventId::try_from(prev.as_str()).map_err(|e| Error::bad_json(e.to_string()))?;
    let mut ids = edge_state(state, room_id, rules, server, &prev, budget).await?;
    let held = match state.rooms.cache().get(&prev).await? {
        Some(pdu) => pdu,
        None => {
            *budget =
                budget.checked_sub(1).ok_or_else(|| Error::forbidden("The history's state is too large"))?;
            let answer = state
                .client
                .send(server, get_event::v1::Request::new(prev.clone()))
                .await
                .map_err(remote_error)?;
            let value: Value =
                serde_json::from_str(answer.pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
            state.keys.prefetch_for_event(&value, rules).await?;
            let incoming = IncomingPdu::new(answer.pdu.get().to_owned());
            state.rooms.receive_remote(room_id, vec![incoming], Arrival::Outlier).await?;
            state
                .rooms
                .cache()
                .get(&prev)
                .await?
                .ok_or_else(|| Error::forbidden("The prev event was not valid"))?
        }
    };
    // The prev event on top of the state before it, if it is a state event the room took.
    if let Some(key) = held.state_key.as_deref().filter(|_| !held.rejected) {
        let entries = state.rooms.cache().get_many(&ids).await?;
        ids.retain(|id| {
            entries.get(id).is_none_or(|e| e.kind != held.kind || e.state_key.as_deref() != Some(key))
        });
        ids.push(prev);
    }
    Ok(ids)
}

/// The state before an event by its id (`/state_ids`), with the events it and its auth chain
/// name stored (as outliers) first.
pub(crate) async fn edge_state(
    state: &FederationState,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    server: &ServerName,
    event_id: &OwnedEventId,
    budget: &mut usize,
) -> Result<Vec<OwnedEventId>, Error> {
    let request = get_room_state_ids::v1::Request::new(event_id.clone(), room_id.to_owned());
    let answer =
        state.client.send_limited(server, request, MAX_STATE_IDS_BYTES).await.map_err(remote_error)?;
    if answer.pdu_ids.len() + answer.auth_chain_ids.len() > MAX_STATE_IDS {
        return Err(Error::forbidden("The state named is larger than this server takes"));
    }
    let mut ids: Vec<String> =
        answer.pdu_ids.iter().chain(answer.auth_chain_ids.iter()).map(|id| id.to_string()).collect();
    ids.sort();
    ids.dedup();
    let known = state.db.known_event_ids(&ids).await?;
    let missing: Vec<OwnedEventId> = ids
        .iter()
        .filter(|id| !known.contains(*id))
        .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
        .collect();
    if missing.len() > *budget {
        return Err(Error::forbidden("The history's state is larger than one backfill fetches"));
    }
    *budget -= missing.len();
    let mut raws = Vec::with_capacity(missing.len());
    for id in missing {
        let answer =
            state.client.send(server, get_event::v1::Request::new(id)).await.map_err(remote_error)?;
        raws.push(answer.pdu);
    }
    let known = in_auth_order(raws.iter(), rules)?;
    for event in &known {
        state.keys.prefetch_for_event(&event.value, rules).await?;
    }
    let outliers = known.iter().map(|e| IncomingPdu::new(e.text.clone())).collect();
    state.rooms.receive_remote(room_id, outliers, Arrival::Outlier).await?;
    Ok(answer.pdu_ids)
}
