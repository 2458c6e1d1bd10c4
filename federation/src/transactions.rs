//! Receiving transactions: `PUT /_matrix/federation/v1/send/{txnId}`.
//!
//! A transaction is answered once per `(origin, txnId)`: a repeat — while the first is still
//! being processed or after it finished — gets the first one's answer, so a sender retrying after
//! a lost response never makes events count twice. At most 50 PDUs and 100 EDUs (400 otherwise);
//! the body must name the authenticated origin.
//!
//! PDUs are grouped by room, in the order sent. For each room: unknown rooms and servers the
//! room's ACL refuses get an error for their events; the keys the events are signed with are
//! fetched before the room model sees them (it never waits on the network); the room model's
//! remote path checks and places them; an event whose prev events are unknown sends this
//! server's ingress to ask the origin for the gap (`get_missing_events`, bounded) and is tried
//! again after the gap's events. The answer maps every event id to `{}` or an error, as the spec
//! says (soft-failed events count as received). EDUs are not processed yet.

use std::{
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
/// Most events asked for to fill one gap.
const GAP_LIMIT: u32 = 50;

/// A transaction's answer, computed once however often it is asked for.
type Answer = Arc<OnceCell<Value>>;

/// The answers of recent transactions, by `(origin, txnId)`.
pub struct Transactions(Mutex<LruCache<(OwnedServerName, String), Answer>>);

impl Default for Transactions {
    fn default() -> Self {
        Self(Mutex::new(LruCache::new(NonZeroUsize::new(REMEMBERED).expect("non-zero"))))
    }
}

impl Transactions {
    fn cell(&self, origin: &ServerName, txn_id: &str) -> Arc<OnceCell<Value>> {
        let mut seen = self.0.lock().expect("transactions poisoned");
        seen.get_or_insert((origin.to_owned(), txn_id.to_owned()), || Arc::new(OnceCell::new())).clone()
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
    let answer = cell.get_or_try_init(|| receive_pdus(&state, &origin, &req.body.pdus)).await?;
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
        // Without the room's version the events' ids cannot even be computed.
        return Ok(());
    };
    let refuse = |results: &mut Map<String, Value>, events: &[Received], why: &str| {
        for event in events {
            if let Some(id) = event_id_of(&event.value, &rules) {
                results.insert(id.to_string(), json!({ "error": why }));
            }
        }
    };
    if !state.rooms.server_allowed(room_id, origin).await? {
        refuse(results, &events, "the room's server ACL forbids the origin");
        return Ok(());
    }
    for event in &events {
        state.keys.prefetch_for_event(&event.value).await?;
    }
    let incoming: Vec<IncomingPdu> = events.iter().map(|e| IncomingPdu::new(e.json.clone())).collect();
    let verdicts = state.rooms.receive_remote(room_id, incoming, Arrival::Live).await?;
    for (event, verdict) in events.iter().zip(verdicts) {
        let verdict = match verdict {
            Verdict::Missing(id, missing) => {
                fill_gap(state, origin, room_id, &id, &event.value, &missing).await?;
                let again = IncomingPdu::new(event.json.clone());
                let mut retried = state.rooms.receive_remote(room_id, vec![again], Arrival::Live).await?;
                retried.pop().unwrap_or(Verdict::Missing(id, missing))
            }
            other => other,
        };
        // Soft-failed events were received (they are stored); only refusals are errors.
        let error = match &verdict {
            Verdict::SoftFailed(_) => None,
            other => other.rejection().map(|r| r.to_string()),
        };
        let Some(id) = verdict.event_id().cloned().or_else(|| event_id_of(&event.value, &rules)) else {
            continue;
        };
        let outcome = match error {
            Some(error) => json!({ "error": error }),
            None => json!({}),
        };
        results.insert(id.to_string(), outcome);
    }
    Ok(())
}

/// Asks the origin for the events between the room's forward extremities and `event`, and
/// places them oldest first. Failures are logged: the event then stays missing its prevs.
async fn fill_gap(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    event: &Value,
    missing: &[OwnedEventId],
) -> Result<(), Error> {
    let earliest: Vec<OwnedEventId> = state
        .db
        .room_extremities(room_id.as_str())
        .await?
        .into_iter()
        .filter_map(|id| EventId::parse(id).ok())
        .collect();
    let depth = event.get("depth").and_then(Value::as_u64).unwrap_or(0);
    let mut request =
        get_missing_events::v1::Request::new(room_id.to_owned(), earliest, vec![event_id.to_owned()]);
    request.limit = GAP_LIMIT.into();
    request.min_depth = depth.saturating_sub(u64::from(GAP_LIMIT) * 2).try_into().unwrap_or_default();
    let response = match state.client.send(origin, request).await {
        Ok(response) => response,
        Err(err) => {
            tracing::info!(%origin, %room_id, %event_id, missing = missing.len(), error = %err, "could not fetch missing events");
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
        state.keys.prefetch_for_event(&event.value).await?;
    }
    let incoming = fetched.into_iter().map(|(_, e)| IncomingPdu::new(e.json)).collect();
    state.rooms.receive_remote(room_id, incoming, Arrival::Live).await?;
    Ok(())
}

/// The id of an event of a room of these rules (its reference hash), if it can be computed.
fn event_id_of(value: &Value, rules: &RoomVersionRules) -> Option<OwnedEventId> {
    let mut object: CanonicalJsonObject = serde_json::from_value(value.clone()).ok()?;
    object.remove("unsigned");
    object.remove("event_id");
    let hash = ruma::signatures::reference_hash(&object, rules).ok()?;
    EventId::parse(format!("${hash}")).ok()
}
