//! Receiving transactions: `PUT /_matrix/federation/v1/send/{txnId}`.
//!
//! A transaction is answered once per `(origin, txnId)`: a repeat — while the first is still
//! being processed or after it finished — gets the first one's answer, so a sender retrying after
//! a lost response never makes events count twice. At most 50 PDUs and 100 EDUs (400 otherwise);
//! the body must name the authenticated origin.
//!
//! One transaction per origin is processed at a time. PDUs are grouped by room, in the order
//! sent. For each room: events of rooms this server does not know get no entry (their ids cannot
//! be computed without the room version); an origin the room's ACL refuses gets an error for
//! each event; the keys the spec requires for each event are fetched before the room model sees
//! them (it never waits on the network); the room model's remote path checks and places them.
//! Events whose prev events are unknown make one request for the whole gap
//! (`get_missing_events`, at most 50 events) and are tried again once, after the gap's events.
//! The answer maps every event id to `{}` or an error, as the spec says (soft-failed events count
//! as received; the first outcome of an event sent twice stands). A failure of storage answers
//! 500 even if earlier rooms were placed: the origin retries, and placed events are duplicates
//! then. EDUs follow the PDUs (see `edus`).

use std::{
    collections::HashMap,
    future::Future,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_rooms::{
    remote::{Arrival, IncomingPdu, Verdict},
    versions,
};
use lru::LruCache;
use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, ServerName,
    api::federation::{event::get_missing_events, transactions::send_transaction_message},
    room_version_rules::RoomVersionRules,
};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::FederationState;

/// Most PDUs and EDUs a transaction may carry.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// Transactions whose answers are remembered for repeats.
const REMEMBERED: usize = 10_000;
/// Most events asked for to fill one gap, and the largest answer read.
const GAP_LIMIT: u32 = 50;
const GAP_RESPONSE_BYTES: usize = GAP_LIMIT as usize * 65_536 + 65_536;

/// A transaction's answer, computed once however often it is asked for.
type Answer = Arc<OnceCell<Value>>;

/// The answers of recent transactions, by `(origin, txnId)`, and whose turn it is: one
/// transaction per origin is processed at a time (as Synapse does), so no origin can occupy
/// more than one handler with slow work.
pub struct Transactions {
    answers: Mutex<LruCache<(OwnedServerName, String), Answer>>,
    turns: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Transactions {
    fn default() -> Self {
        Self {
            answers: Mutex::new(LruCache::new(NonZeroUsize::new(REMEMBERED).expect("non-zero"))),
            turns: Mutex::new(HashMap::new()),
        }
    }
}

impl Transactions {
    fn cell(&self, origin: &ServerName, txn_id: &str) -> Arc<OnceCell<Value>> {
        let mut seen = self.answers.lock().expect("transactions poisoned");
        seen.get_or_insert((origin.to_owned(), txn_id.to_owned()), || Arc::new(OnceCell::new())).clone()
    }

    /// Runs `work` when it is `origin`'s turn.
    async fn in_turn<T>(&self, origin: &ServerName, work: impl Future<Output = T>) -> T {
        let turn =
            self.turns.lock().expect("transactions poisoned").entry(origin.to_owned()).or_default().clone();
        let result = {
            let _turn = turn.lock().await;
            work.await
        };
        let mut turns = self.turns.lock().expect("transactions poisoned");
        if Arc::strong_count(&turn) == 2 {
            turns.remove(origin);
        }
        result
    }
}

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(send_transaction)
}

/// `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction(
    state: FederationState,
    req: Ruma<send_transaction_message::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let origin = req.auth;
    if req.body.origin != origin {
        return Err(Error::forbidden("the transaction's origin is not the signing server").into());
    }
    if req.body.pdus.len() > MAX_PDUS || req.body.edus.len() > MAX_EDUS {
        return Err(Error::new(
            ErrorKind::BadJson,
            format!("a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"),
        )
        .into());
    }
    let cell = state.transactions.cell(&origin, req.body.transaction_id.as_str());
    let work = cell.get_or_try_init(|| async {
        let answer = receive_pdus(&state, &origin, &req.body.pdus).await?;
        crate::edus::receive_edus(&state, &origin, &req.body.edus).await?;
        Ok::<Value, Error>(answer)
    });
    let answer = state.transactions.in_turn(&origin, work).await?;
    Ok(JsonBody(answer.clone()))
}

/// One PDU of a transaction, parsed enough to route it.
struct Received {
    json: String,
    value: Value,
}

/// Places the transaction's PDUs and returns the answer body.
async fn receive_pdus(
    state: &FederationState,
    origin: &ServerName,
    pdus: &[Box<serde_json::value::RawValue>],
) -> Result<Value, Error> {
    let mut by_room: Vec<(OwnedRoomId, Vec<Received>)> = Vec::new();
    for raw in pdus {
        let Ok(value) = serde_json::from_str::<Value>(raw.get()) else { continue };
        let Some(room_id) = value.get("room_id").and_then(Value::as_str).and_then(|r| RoomId::parse(r).ok())
        else {
            continue;
        };
        let received = Received { json: raw.get().to_owned(), value };
        match by_room.iter_mut().find(|(r, _)| *r == room_id) {
            Some((_, list)) => list.push(received),
            None => by_room.push((room_id, vec![received])),
        }
    }
    let mut results = Map::new();
    for (room_id, events) in by_room {
        receive_room(state, origin, &room_id, events, &mut results).await?;
    }
    Ok(json!({ "pdus": results }))
}

async fn receive_room(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    events: Vec<Received>,
    results: &mut Map<String, Value>,
) -> Result<(), Error> {
    let Some(rules) = state.rooms.room_version(room_id).await?.as_ref().and_then(versions::rules) else {
        // Without the room's version the events' ids cannot even be computed: no entry.
        return Ok(());
    };
    let refusal = if !state.rooms.server_allowed(room_id, origin).await? {
        Some("the room's server ACL forbids the origin")
    } else if !has_local_member(state, room_id).await? {
        // A room known only through outliers (or one everyone here left) takes no events.
        Some("this server has no user in the room")
    } else {
        None
    };
    if let Some(why) = refusal {
        for event in &events {
            if let Some(id) = event_id_of(&event.value, &rules) {
                record(results, &id, Some(why.into()));
            }
        }
        return Ok(());
    }
    for event in &events {
        state.keys.prefetch_for_event(&event.value, &rules).await?;
    }
    let incoming: Vec<IncomingPdu> = events.iter().map(|e| IncomingPdu::new(e.json.clone())).collect();
    let mut verdicts = state.rooms.receive_remote(room_id, incoming, Arrival::Live).await?;
    // Events whose prev events are unknown (whatever else they lack: an auth event the gap
    // holds too): one request for the whole gap, then one retry of those events (in the order
    // sent).
    let waiting: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v, Verdict::Missing(..)))
        .map(|(i, _)| i)
        .collect();
    let prevs: Vec<String> = waiting
        .iter()
        .flat_map(|i| homeserver_rooms::event_format::referenced_ids(&events[*i].value, "prev_events"))
        .map(str::to_owned)
        .collect();
    let held = if prevs.is_empty() { Default::default() } else { state.db.known_event_ids(&prevs).await? };
    let gapped: Vec<usize> = waiting
        .into_iter()
        .filter(|i| {
            let value = &events[*i].value;
            let unknown_prev = homeserver_rooms::event_format::referenced_ids(value, "prev_events")
                .iter()
                .any(|p| !held.contains(*p));
            // A prev event held only as an outlier is no place in the DAG either.
            unknown_prev
                || matches!(&verdicts[*i], Verdict::Missing(_, missing) if lacks_prev(value, missing))
        })
        .collect();
    if !gapped.is_empty() {
        let latest: Vec<OwnedEventId> =
            gapped.iter().filter_map(|i| verdicts[*i].event_id().cloned()).collect();
        let min_depth =
            gapped.iter().filter_map(|i| events[*i].value.get("depth")?.as_u64()).min().unwrap_or(0);
        fill_gap(state, origin, room_id, latest, min_depth, &rules).await?;
        let again: Vec<IncomingPdu> =
            gapped.iter().map(|i| IncomingPdu::new(events[*i].json.clone())).collect();
        let retried = state.rooms.receive_remote(room_id, again, Arrival::Live).await?;
        for (i, verdict) in gapped.iter().copied().zip(retried) {
            verdicts[i] = verdict;
        }
        // Still missing prev events after the fill (the origin would not say what they are):
        // the event is refused, as Synapse refuses it. A gap deeper than one request was
        // bridged inside the fill, at the oldest event the origin handed over.
    }
    for (event, verdict) in events.iter().zip(verdicts) {
        // Soft-failed and rejected events were received: they are stored, with their outcome,
        // and sending them again changes nothing (Synapse answers them `{}` too). Only events
        // that were not taken in at all — dropped, or missing what they need — are errors.
        let error = match &verdict {
            Verdict::SoftFailed(_) | Verdict::Rejected(..) => None,
            other => other.rejection().map(|r| r.to_string()),
        };
        if let Some(id) = verdict.event_id().cloned().or_else(|| event_id_of(&event.value, &rules)) {
            record(results, &id, error);
        }
    }
    Ok(())
}

/// Whether a user of this server is joined to the room.
async fn has_local_member(state: &FederationState, room_id: &RoomId) -> Result<bool, Error> {
    state.rooms.local_user_joined(room_id).await
}

/// Notes an event's outcome; the first outcome of an event sent twice stands.
fn record(results: &mut Map<String, Value>, id: &EventId, error: Option<String>) {
    let outcome = match error {
        Some(error) => json!({ "error": error }),
        None => json!({}),
    };
    results.entry(id.to_string()).or_insert(outcome);
}

/// Whether any of the `missing` events is one of the event's prev events.
fn lacks_prev(event: &Value, missing: &[OwnedEventId]) -> bool {
    let prevs = homeserver_rooms::event_format::referenced_ids(event, "prev_events");
    prevs.iter().any(|p| missing.iter().any(|m| *p == m.as_str()))
}

/// Asks the origin for the events between the room's forward extremities and `latest`, and
/// places them oldest first. Failures are logged: the events then stay missing their prevs.
async fn fill_gap(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    latest: Vec<OwnedEventId>,
    min_depth: u64,
    rules: &RoomVersionRules,
) -> Result<(), Error> {
    let earliest: Vec<OwnedEventId> = state
        .db
        .room_extremities(room_id.as_str())
        .await?
        .into_iter()
        .filter_map(|id| EventId::parse(id).ok())
        .collect();
    let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest, latest);
    request.limit = GAP_LIMIT.into();
    request.min_depth = min_depth.saturating_sub(u64::from(GAP_LIMIT) * 2).try_into().unwrap_or_default();
    let response = match state.client.send_limited(origin, request, GAP_RESPONSE_BYTES).await {
        Ok(response) => response,
        Err(err) => {
            tracing::info!(%origin, %room_id, error = %err, "could not fetch missing events");
            return Ok(());
        }
    };
    let mut fetched: Vec<(u64, Received)> = response
        .events
        .iter()
        .take(GAP_LIMIT as usize)
        .filter_map(|raw| {
            let value: Value = serde_json::from_str(raw.get()).ok()?;
            let depth = value.get("depth").and_then(Value::as_u64).unwrap_or(0);
            Some((depth, Received { json: raw.get().to_owned(), value }))
        })
        .collect();
    fetched.sort_by_key(|(depth, _)| *depth);
    for (_, event) in &fetched {
        state.keys.prefetch_for_event(&event.value, rules).await?;
    }
    let incoming = fetched.iter().map(|(_, e)| IncomingPdu::new(e.json.clone())).collect();
    let verdicts = state.rooms.receive_remote(room_id, incoming, Arrival::Live).await?;
    // The chain goes back further than one request: its oldest unplaced event takes the state
    // before it from the origin, and the rest of the chain follows it.
    let unplaced: Vec<&Received> = fetched
        .iter()
        .zip(&verdicts)
        .filter(|((_, e), v)| matches!(v, Verdict::Missing(_, missing) if lacks_prev(&e.value, missing)))
        .map(|((_, e), _)| e)
        .collect();
    if let Some((oldest, rest)) = unplaced.split_first()
        && place_with_state(state, origin, room_id, rules, oldest).await?.is_some()
    {
        let rest = rest.iter().map(|e| IncomingPdu::new(e.json.clone())).collect();
        state.rooms.receive_remote(room_id, rest, Arrival::Live).await?;
    }
    Ok(())
}

/// Places an event whose prev events are not held, with the state before it from the origin
/// (`/state_ids`, the events it names fetched and stored first). `None` if the origin could
/// not say; the event then stays missing its prevs.
async fn place_with_state(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    event: &Received,
) -> Result<Option<Verdict>, Error> {
    let Some(id) = event_id_of(&event.value, rules) else { return Ok(None) };
    let mut budget = crate::backfiller::MAX_FETCH;
    let state_ids = match crate::backfiller::state_before_event(
        state,
        room_id,
        rules,
        origin,
        (&id, &event.value),
        &mut budget,
    )
    .await
    {
        Ok(ids) => ids,
        Err(err) => {
            tracing::info!(%origin, %room_id, event_id = %id, error = %err.message, "no state for a gapped event");
            return Ok(None);
        }
    };
    let incoming = IncomingPdu { json: event.json.clone(), state_before: Some(state_ids) };
    Ok(state.rooms.receive_remote(room_id, vec![incoming], Arrival::Live).await?.pop())
}

/// The id of an event of a room of these rules, if it can be computed.
pub(crate) fn event_id_of(value: &Value, rules: &RoomVersionRules) -> Option<OwnedEventId> {
    let object: CanonicalJsonObject = serde_json::from_value(value.clone()).ok()?;
    homeserver_rooms::event_format::event_id_of(&object, rules).ok()
}
