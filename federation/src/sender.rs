//! Sending: this server's events to the other servers of their rooms.
//!
//! Routing decides who gets an event when it happens, not when it is sent: a supervisor follows
//! the event stream (woken by every advance) from the persisted routed position, and for each of
//! this server's events queues one outbox row per destination — the other servers with a user
//! joined to the room at that event, plus, for a membership event, the server it is about (so a
//! kicked or banned server learns of it). A server that joins later never receives the events
//! from before; one that left is not sent what came after. Membership changes of every server
//! keep the per-room set of remote users current; it is loaded from the database when a room is
//! first seen. Queuing and the routed position commit together, so a restart resumes where
//! routing stopped, and the supervisor routes once more when the server shuts down.
//!
//! One worker per destination sends its outbox, oldest first, at most 50 PDUs per transaction
//! and one transaction in flight; the transaction id is made of the batch's positions, which the
//! outbox fixes, so a retried batch keeps its id. An acknowledgement removes what the
//! transaction carried; a failure backs off exponentially (5 s doubling to an hour, persisted).
//!
//! Not yet: EDUs, forwarding joins accepted through `send_join`, a cap on catch-up after long
//! outages, and retiring idle destinations.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use homeserver_core::{Error, streams::StreamPos, time::now_millis};
use homeserver_storage::events::EventRow;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, OwnedUserId, ServerName, UserId,
    api::federation::transactions::send_transaction_message,
};
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::{FederationState, transactions::MAX_PDUS};

const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Events routed per read of the stream.
const ROUTE_BATCH: i64 = 1_000;
/// Positions after which the routed position is saved even if nothing was owed.
const SAVE_EVERY: i64 = 10_000;

/// The outbound side of federation.
pub struct Sender {
    state: FederationState,
    workers: Mutex<HashMap<OwnedServerName, Arc<Notify>>>,
    /// The joined users of other servers, per room seen so far.
    remote_members: Mutex<HashMap<String, HashSet<OwnedUserId>>>,
    /// The routed position last saved.
    saved: Mutex<StreamPos>,
}

/// Starts the supervisor and the workers of destinations with queued events.
pub fn start(state: FederationState) -> Arc<Sender> {
    let sender = Arc::new(Sender {
        state,
        workers: Mutex::new(HashMap::new()),
        remote_members: Mutex::new(HashMap::new()),
        saved: Mutex::new(StreamPos::ZERO),
    });
    tokio::spawn(supervise(sender.clone()));
    sender
}

impl Sender {
    /// Wakes (starting if needed) the worker of a destination.
    fn wake(self: &Arc<Self>, destination: &ServerName) {
        let mut workers = self.workers.lock().expect("sender poisoned");
        let notify = workers.entry(destination.to_owned()).or_insert_with(|| {
            let notify = Arc::new(Notify::new());
            tokio::spawn(deliver(self.clone(), destination.to_owned(), notify.clone()));
            notify
        });
        notify.notify_one();
    }

    /// Routes `(after, up_to]`; returns how far it got.
    async fn route(self: &Arc<Self>, after: StreamPos, up_to: StreamPos) -> Result<StreamPos, Error> {
        let state = &self.state;
        let ours = state.key.server_name();
        let mut from = after;
        while from < up_to {
            let events = state.db.events_to_route(ours.as_str(), from, up_to, ROUTE_BATCH).await?;
            let reached = if (events.len() as i64) < ROUTE_BATCH {
                up_to
            } else {
                events.last().map_or(up_to, |e| e.stream_pos)
            };
            let mut owed: Vec<(String, StreamPos)> = Vec::new();
            for event in &events {
                for destination in self.destinations_of(event).await? {
                    owed.push((destination.to_string(), event.stream_pos));
                }
            }
            // Routing that owes nothing is not written each time (a server without federation
            // would pay a write per event): re-routing such a stretch after a restart finds
            // nothing again. The position is saved at least every `SAVE_EVERY` positions.
            // A stretch with membership changes is always saved: replaying one after a restart
            // would apply old changes to the current members.
            let members_changed = events.iter().any(|e| e.event_type == "m.room.member");
            let last_saved = *self.saved.lock().expect("sender poisoned");
            if !owed.is_empty() || members_changed || reached.get() - last_saved.get() >= SAVE_EVERY {
                state.db.route(&owed, reached).await?;
                *self.saved.lock().expect("sender poisoned") = reached;
            }
            let woken: HashSet<&String> = owed.iter().map(|(d, _)| d).collect();
            for destination in woken {
                if let Ok(name) = ServerName::parse(destination) {
                    self.wake(&name);
                }
            }
            from = reached;
        }
        Ok(up_to)
    }

    /// The servers an event goes to (none for other servers' events), keeping the room's
    /// remote members current.
    async fn destinations_of(&self, event: &EventRow) -> Result<Vec<OwnedServerName>, Error> {
        let ours = self.state.key.server_name();
        self.load_room(&event.room_id).await?;
        let mut members = self.remote_members.lock().expect("sender poisoned");
        let room = members.entry(event.room_id.clone()).or_default();
        let mut servers: HashSet<OwnedServerName> = room.iter().map(|u| u.server_name().to_owned()).collect();
        let target = (event.event_type == "m.room.member")
            .then(|| event.state_key.as_deref().and_then(|k| UserId::parse(k).ok()))
            .flatten();
        if let Some(target) = &target {
            // The server a membership is about hears of it, joined or not.
            servers.insert(target.server_name().to_owned());
            if target.server_name() != ours {
                let membership = serde_json::from_str::<serde_json::Value>(&event.json)
                    .ok()
                    .and_then(|v| v.get("content")?.get("membership")?.as_str().map(str::to_owned));
                if membership.as_deref() == Some("join") {
                    room.insert(target.clone());
                } else {
                    room.remove(target);
                }
            }
        }
        let sent_here = UserId::parse(&event.sender).is_ok_and(|s| s.server_name() == ours);
        if !sent_here {
            return Ok(Vec::new());
        }
        servers.remove(ours);
        Ok(servers.into_iter().collect())
    }

    /// Loads a room's remote members the first time the room is routed.
    async fn load_room(&self, room_id: &str) -> Result<(), Error> {
        if self.remote_members.lock().expect("sender poisoned").contains_key(room_id) {
            return Ok(());
        }
        let ours = self.state.key.server_name();
        let users: HashSet<OwnedUserId> = self
            .state
            .db
            .joined_users(room_id)
            .await?
            .into_iter()
            .filter_map(|u| UserId::parse(u).ok())
            .filter(|u| u.server_name() != ours)
            .collect();
        self.remote_members.lock().expect("sender poisoned").entry(room_id.to_owned()).or_insert(users);
        Ok(())
    }
}

async fn supervise(sender: Arc<Sender>) {
    let state = &sender.state;
    let stream = state.rooms.stream().clone();
    let mut advanced = stream.watch_current();
    match state.db.destinations().await {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.queued > 0) {
                if let Ok(name) = ServerName::parse(&row.destination) {
                    sender.wake(&name);
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not load federation destinations"),
    }
    // A first start routes from now on; a restart resumes where routing stopped.
    let mut routed = match state.db.routed_position().await {
        Ok(Some(pos)) => pos,
        Ok(None) => StreamPos::live(stream.current()),
        Err(err) => {
            tracing::error!(error = %err, "cannot read the routed position; outbound federation is off");
            return;
        }
    };
    *sender.saved.lock().expect("sender poisoned") = routed;
    loop {
        let now = StreamPos::live(stream.current());
        match sender.route(routed, now).await {
            Ok(reached) => routed = reached,
            Err(err) => tracing::warn!(error = %err.message, "could not route new events to other servers"),
        }
        if stream.is_shutting_down() {
            return;
        }
        tokio::select! {
            changed = advanced.changed() => if changed.is_err() { return },
            // A failed routing is tried again even if nothing new arrives.
            () = tokio::time::sleep(FIRST_BACKOFF), if routed < now => {}
        }
    }
}

/// Delivers what `destination` is owed, until the server shuts down.
async fn deliver(sender: Arc<Sender>, destination: OwnedServerName, wake: Arc<Notify>) {
    let stream = sender.state.rooms.stream().clone();
    let mut shutting = stream.watch_current();
    while !stream.is_shutting_down() {
        let wait = match deliver_once(&sender.state, &destination).await {
            Ok(wait) => wait,
            Err(err) => {
                tracing::warn!(%destination, error = %err.message, "outbound federation failed");
                Some(FIRST_BACKOFF)
            }
        };
        match wait {
            Some(Duration::ZERO) => {}
            Some(wait) => tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutting.changed() => {}
            },
            None => tokio::select! {
                () = wake.notified() => {}
                _ = shutting.changed() => {}
            },
        }
    }
}

/// Sends one transaction if one is owed and allowed. `Ok(None)`: nothing owed, wait for news;
/// `Ok(Some(d))`: look again after `d`.
async fn deliver_once(state: &FederationState, destination: &ServerName) -> Result<Option<Duration>, Error> {
    let now = now_millis() as i64;
    let Some(row) = state.db.destination(destination.as_str()).await? else { return Ok(None) };
    if row.retry_at > now {
        return Ok(Some(Duration::from_millis((row.retry_at - now) as u64)));
    }
    let positions = state.db.outbox(destination.as_str(), MAX_PDUS as i64).await?;
    let (Some(first), Some(last)) = (positions.first().copied(), positions.last().copied()) else {
        return Ok(None);
    };
    let raw: Vec<i64> = positions.iter().map(|p| p.get()).collect();
    let mut events = state.db.events_at(&raw).await?;
    events.sort_by_key(|e| e.stream_pos);
    let txn_id: OwnedTransactionId = format!("{first}-{last}").into();
    let mut request = send_transaction_message::v1::Request::new(
        txn_id,
        state.key.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = events.into_iter().filter_map(|e| RawValue::from_string(e.json).ok()).collect();
    match state.client.send(destination, request).await {
        Ok(_) => {
            state.db.delivered(destination.as_str(), last, now).await?;
            Ok(Some(Duration::ZERO))
        }
        Err(err) => {
            let failures = row.failures + 1;
            let doubling = 1u32 << failures.clamp(1, 20).saturating_sub(1) as u32;
            let backoff = FIRST_BACKOFF.saturating_mul(doubling).min(MAX_BACKOFF);
            tracing::info!(%destination, failures, error = %err, "transaction not delivered; backing off");
            state
                .db
                .delivery_failed(destination.as_str(), failures, now + backoff.as_millis() as i64)
                .await?;
            Ok(Some(backoff))
        }
    }
}
