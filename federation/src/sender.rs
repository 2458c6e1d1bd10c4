//! Sending: this server's events to the other servers of their rooms.
//!
//! Routing decides who gets an event when it happens, not when it is sent: a supervisor follows
//! the event stream (woken by every advance) from the persisted routed position, and for each of
//! this server's events queues one outbox row per destination — the other servers with a user
//! joined to the room at that event, plus, for a leave or ban, the server it is about (so a
//! kicked or banned server learns of it; an invite reaches the invitee's server through
//! `/invite`). A server that joins later never receives the events
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
//! Read receipts of this server's users are routed like events (they hold stream positions):
//! to the servers with a user joined to the room, sent as one `m.receipt` EDU per room in the
//! transaction that carries their positions. Presence changes of this server's users are
//! routed the same way, to the servers sharing a room with the user, as one `m.presence` EDU
//! per transaction. Typing notices are ephemeral: queued in memory for
//! the room's servers, sent with the next transaction (or one of their own), dropped after 30
//! seconds undelivered. Member events this server accepted as a room's resident for another
//! server (`send_join`, `send_leave`) are marked before they are placed and forwarded to every
//! other server in the room.
//!
//! Catch-up: a destination back from an outage (failing, or nothing delivered for a minute) and
//! owed more than `federation.catch_up_cap` positions (at least 50) gets the newest of them and the latest event of every room among the older ones;
//! it fills the gaps itself (`get_missing_events`, the state before a gapped event, backfill).
//!
//! Announcing: a peer that tried to reach this server while it was down has it in backoff, and
//! would wait that out (hours, for a long outage) before sending what it holds. At start-up,
//! every destination reached in the last week with nothing owed gets one empty transaction;
//! like any authenticated request, it tells the peer this server is back (Synapse and Lattice
//! both clear the backoff then). Destinations with something owed are told by its delivery.
//!
//! Not yet: retiring idle destinations.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use homeserver_core::{Error, streams::StreamPos, time::now_millis};
use homeserver_storage::{events::EventRow, presence::PresenceRow, receipts::ReceiptRow};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, OwnedUserId, ServerName, UserId,
    api::federation::transactions::send_transaction_message, serde::Raw,
};
use serde_json::{Value, json, value::RawValue};
use tokio::{sync::Notify, time::Instant};

use crate::{FederationState, transactions::MAX_PDUS};

const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Events routed per read of the stream.
const ROUTE_BATCH: i64 = 1_000;
/// Without a delivery for this long, a destination counts as back from an outage.
const OUTAGE_MS: i64 = 60_000;
/// Typing notices kept per destination while it cannot be reached, and for how long.
const MAX_EPHEMERAL: usize = 50;
/// Most EDUs in one transaction (the spec's limit).
const MAX_EDUS: usize = 100;
const EPHEMERAL_TTL: Duration = Duration::from_secs(30);
/// When, after accepting another server's join, this server's users' presence is sent to it.
const JOIN_PRESENCE_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];
/// Most users whose presence a server that joins a room is sent.
const MAX_JOIN_PRESENCE: i64 = 100;
/// Destinations reached this recently are told at start-up that this server is back.
const ANNOUNCE_WITHIN_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most destinations told at start-up (the most recently reached).
const MAX_ANNOUNCED: usize = 1_000;
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
    /// Typing notices waiting for each destination's next transaction, with when they were
    /// queued (not persisted: stale ones are dropped).
    ephemeral: Mutex<HashMap<OwnedServerName, Vec<(Instant, Value)>>>,
    /// Destinations owed one transaction, empty if need be, to learn that this server is up.
    announce: Mutex<HashSet<OwnedServerName>>,
    /// Numbers transactions without positions, so two in one millisecond differ.
    unpositioned: std::sync::atomic::AtomicU64,
}

impl Sender {
    /// The sender, not running yet (see [`Sender::run`]): commands of the `lattice` binary
    /// build a server without serving it, and must not deliver anything.
    pub fn new(state: FederationState) -> Arc<Sender> {
        Arc::new(Sender {
            state,
            workers: Mutex::new(HashMap::new()),
            remote_members: Mutex::new(HashMap::new()),
            saved: Mutex::new(StreamPos::ZERO),
            ephemeral: Mutex::new(HashMap::new()),
            announce: Mutex::new(HashSet::new()),
            unpositioned: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Starts the supervisor, the typing relay and the workers of destinations with queued
    /// events; they stop when the event stream shuts down.
    pub fn run(self: &Arc<Self>) {
        tokio::spawn(supervise(self.clone()));
        tokio::spawn(forward_typing(self.clone()));
        if let Some(heard) = self.state.recovery.take_heard() {
            tokio::spawn(crate::recovery::retry_heard(self.clone(), heard));
        }
    }
}

impl Sender {
    /// Clears a destination's backoff and tries it at once (the admin API's reset); false if
    /// the destination is not known.
    pub async fn retry_now(self: &Arc<Self>, destination: &ServerName) -> Result<bool, Error> {
        let known = self.state.db.reset_backoff(destination.as_str()).await?;
        if known {
            tracing::info!(%destination, "federation backoff reset");
            self.wake(destination);
        }
        Ok(known)
    }

    /// Queues a typing notice for a destination and wakes its worker.
    fn queue_ephemeral(self: &Arc<Self>, destination: &ServerName, edu: Value) {
        {
            let mut queues = self.ephemeral.lock().expect("sender poisoned");
            let queue = queues.entry(destination.to_owned()).or_default();
            if queue.len() >= MAX_EPHEMERAL {
                queue.remove(0);
            }
            queue.push((Instant::now(), edu));
        }
        self.wake(destination);
    }

    /// The typing notices waiting for a destination that are still fresh.
    fn take_ephemeral(&self, destination: &ServerName) -> Vec<Value> {
        let queued = self.ephemeral.lock().expect("sender poisoned").remove(destination).unwrap_or_default();
        queued.into_iter().filter(|(at, _)| at.elapsed() < EPHEMERAL_TTL).map(|(_, edu)| edu).collect()
    }

    /// Whether a destination is still to be told that this server is up (and no longer is).
    fn take_announce(&self, destination: &ServerName) -> bool {
        self.announce.lock().expect("sender poisoned").remove(destination)
    }

    /// Wakes the workers of destinations owed something, and has those recently reached and
    /// owed nothing sent an empty transaction, so peers that backed off learn this server is up.
    fn wake_at_start(self: &Arc<Self>, rows: &[homeserver_storage::destinations::DestinationRow]) {
        let now = now_millis() as i64;
        let mut idle: Vec<(i64, OwnedServerName)> = Vec::new();
        for row in rows {
            let Ok(name) = ServerName::parse(&row.destination) else { continue };
            match row.last_success_ts {
                _ if row.queued > 0 => self.wake(&name),
                Some(ts) if row.failures == 0 && now - ts < ANNOUNCE_WITHIN_MS => idle.push((ts, name)),
                _ => {}
            }
        }
        idle.sort_unstable_by_key(|(ts, _)| std::cmp::Reverse(*ts));
        idle.truncate(MAX_ANNOUNCED);
        self.announce.lock().expect("sender poisoned").extend(idle.iter().map(|(_, name)| name.clone()));
        for (_, name) in &idle {
            self.wake(name);
        }
    }

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
            let mut events = state.db.events_to_route(ours.as_str(), from, up_to, ROUTE_BATCH).await?;
            let mut receipts =
                state.db.receipts_to_route(ours.as_str(), from.get(), up_to.get(), ROUTE_BATCH).await?;
            // A full batch of either ends the stretch routed this round where that batch ends.
            let reached_events = match events.len() as i64 {
                n if n < ROUTE_BATCH => up_to,
                _ => events.last().map_or(up_to, |e| e.stream_pos),
            };
            let reached_receipts = match receipts.len() as i64 {
                n if n < ROUTE_BATCH => up_to,
                _ => receipts.last().map_or(up_to, |r| StreamPos::new(r.stream_pos)),
            };
            let mut presence = match state.live.presence.enabled {
                true => {
                    state.db.presence_to_route(ours.as_str(), from.get(), up_to.get(), ROUTE_BATCH).await?
                }
                false => Vec::new(),
            };
            let reached_presence = match presence.len() as i64 {
                n if n < ROUTE_BATCH => up_to,
                _ => presence.last().map_or(up_to, |p| StreamPos::new(p.stream_pos)),
            };
            let (mut to_device, reached_to_device) =
                state.db.to_device_to_route(from.get(), up_to.get(), ROUTE_BATCH).await?;
            let reached_to_device = StreamPos::new(reached_to_device);
            let mut device_lists = state
                .db
                .device_list_changes_to_route(ours.as_str(), from.get(), up_to.get(), ROUTE_BATCH)
                .await?;
            let reached_device_lists = match device_lists.len() as i64 {
                n if n < ROUTE_BATCH => up_to,
                _ => device_lists.last().map_or(up_to, |(_, pos)| StreamPos::new(*pos)),
            };
            let reached = reached_events
                .min(reached_receipts)
                .min(reached_presence)
                .min(reached_to_device)
                .min(reached_device_lists);
            events.retain(|e| e.stream_pos <= reached);
            receipts.retain(|r| r.stream_pos <= reached.get());
            presence.retain(|p| p.stream_pos <= reached.get());
            to_device.retain(|(_, pos)| *pos <= reached.get());
            device_lists.retain(|(_, pos)| *pos <= reached.get());
            let mut owed: Vec<(String, StreamPos)> = Vec::new();
            let mut forwarded: Vec<String> = Vec::new();
            for event in &events {
                self.presence_for_a_join(event).await?;
                let (destinations, forward) = self.destinations_of(event).await?;
                if forward {
                    forwarded.push(event.event_id.clone());
                }
                for destination in destinations {
                    owed.push((destination.to_string(), event.stream_pos));
                }
            }
            for receipt in &receipts {
                for destination in self.servers_in_room(&receipt.room_id).await? {
                    owed.push((destination.to_string(), StreamPos::new(receipt.stream_pos)));
                }
            }
            for row in &presence {
                for destination in self.servers_sharing_a_room(&row.user_id).await? {
                    owed.push((destination.to_string(), StreamPos::new(row.stream_pos)));
                }
            }
            // To-device messages name their destination; device-list changes go to every
            // server sharing a room with the user (it then fetches the devices).
            for (destination, pos) in &to_device {
                owed.push((destination.clone(), StreamPos::new(*pos)));
            }
            for (user, pos) in &device_lists {
                for destination in self.servers_sharing_a_room(user).await? {
                    owed.push((destination.to_string(), StreamPos::new(*pos)));
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
            if !forwarded.is_empty() {
                state.db.forget_forwarded(&forwarded).await?;
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

    /// A join brings two servers' users together in a room: the joiner's server is sent the
    /// presence of this server's users in it, or — when the joiner is this server's — the other
    /// servers of the room are sent the joiner's, so both sides show each other at once (as
    /// Synapse does) rather than at the next change. Sent with a transaction soon after, like
    /// typing notices: a presence lost to an outage is corrected by the next change.
    async fn presence_for_a_join(self: &Arc<Self>, event: &EventRow) -> Result<(), Error> {
        let ours = self.state.key.server_name();
        if !self.state.live.presence.enabled || event.event_type != "m.room.member" {
            return Ok(());
        }
        let Some(joiner) = event.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else {
            return Ok(());
        };
        let joined = serde_json::from_str::<serde_json::Value>(&event.json).ok().is_some_and(|v| {
            v.get("content").and_then(|c| c.get("membership")).and_then(|m| m.as_str()) == Some("join")
        });
        // A profile change is a join after a join: nobody new is in the room.
        let rejoined = event
            .unsigned_extra
            .as_deref()
            .and_then(|u| serde_json::from_str::<serde_json::Value>(u).ok())
            .is_some_and(|u| {
                u.get("prev_content").and_then(|c| c.get("membership")).and_then(|m| m.as_str())
                    == Some("join")
            });
        if !joined || rejoined {
            return Ok(());
        }
        if joiner.server_name() == ours {
            let rows: Vec<PresenceRow> = self.state.db.presence(joiner.as_str()).await?.into_iter().collect();
            if let Some(edu) = presence_edu(&rows) {
                for destination in self.servers_in_room(&event.room_id).await? {
                    self.queue_ephemeral(&destination, edu.clone());
                }
            }
            return Ok(());
        }
        let rows = self.state.db.joined_presence(&event.room_id, ours.as_str(), MAX_JOIN_PRESENCE).await?;
        if let Some(edu) = presence_edu(&rows) {
            // The joining server takes presence only of users it shares a room with, and it is
            // still taking in the room's state when its join is accepted here: the presence
            // follows a moment later, and once more later still for a big room's slower join
            // (an unchanged presence is a no-op for the receiver).
            let (sender, destination) = (self.clone(), joiner.server_name().to_owned());
            tokio::spawn(async move {
                let mut waited = Duration::ZERO;
                for delay in JOIN_PRESENCE_DELAYS {
                    tokio::time::sleep(delay.saturating_sub(waited)).await;
                    waited = delay;
                    sender.queue_ephemeral(&destination, edu.clone());
                }
            });
        }
        Ok(())
    }

    /// The servers an event goes to, keeping the room's remote members current, and whether it
    /// is another server's event this server forwards (one it accepted as the room's resident
    /// through `send_join` or `send_leave`; it goes to every server but the sender's). Other
    /// servers' events go nowhere: their own servers send them.
    async fn destinations_of(&self, event: &EventRow) -> Result<(Vec<OwnedServerName>, bool), Error> {
        let ours = self.state.key.server_name();
        self.load_room(&event.room_id).await?;
        let mut servers = {
            let mut members = self.remote_members.lock().expect("sender poisoned");
            let room = members.entry(event.room_id.clone()).or_default();
            let mut servers: HashSet<OwnedServerName> =
                room.iter().map(|u| u.server_name().to_owned()).collect();
            let target = (event.event_type == "m.room.member")
                .then(|| event.state_key.as_deref().and_then(|k| UserId::parse(k).ok()))
                .flatten();
            if let Some(target) = &target {
                let membership = serde_json::from_str::<serde_json::Value>(&event.json)
                    .ok()
                    .and_then(|v| v.get("content")?.get("membership")?.as_str().map(str::to_owned));
                // The server a kick or ban is about hears of it, joined or not. (An invite
                // reached the invitee's server through `/invite`; as a PDU it would be an event
                // of a room that server is not in, as Synapse does not send it either.)
                if matches!(membership.as_deref(), Some("leave" | "ban")) {
                    servers.insert(target.server_name().to_owned());
                }
                if target.server_name() != ours {
                    if membership.as_deref() == Some("join") {
                        room.insert(target.clone());
                    } else {
                        room.remove(target);
                    }
                }
            }
            servers
        };
        servers.remove(ours);
        let Ok(sender) = UserId::parse(&event.sender) else { return Ok((Vec::new(), false)) };
        if sender.server_name() == ours {
            return Ok((servers.into_iter().collect(), false));
        }
        if event.event_type == "m.room.member" && self.state.db.is_forwarded(&event.event_id).await? {
            servers.remove(sender.server_name());
            return Ok((servers.into_iter().collect(), true));
        }
        Ok((Vec::new(), false))
    }

    /// The other servers with a user in a room with `user` now (where their presence goes).
    async fn servers_sharing_a_room(&self, user: &str) -> Result<Vec<OwnedServerName>, Error> {
        let ours = self.state.key.server_name();
        let servers: HashSet<OwnedServerName> = self
            .state
            .db
            .room_mates(user)
            .await?
            .iter()
            .filter_map(|u| UserId::parse(u).ok())
            .map(|u| u.server_name().to_owned())
            .filter(|s| s != ours)
            .collect();
        Ok(servers.into_iter().collect())
    }

    /// The other servers with a user joined to the room now.
    async fn servers_in_room(&self, room_id: &str) -> Result<Vec<OwnedServerName>, Error> {
        self.load_room(room_id).await?;
        let members = self.remote_members.lock().expect("sender poisoned");
        let servers: HashSet<OwnedServerName> =
            members.get(room_id).into_iter().flatten().map(|u| u.server_name().to_owned()).collect();
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
        Ok(rows) => sender.wake_at_start(&rows),
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

/// Passes this server's users' typing changes to the other servers of the room.
async fn forward_typing(sender: Arc<Sender>) {
    let stream = sender.state.rooms.stream().clone();
    let mut shutting = stream.watch_current();
    let mut changes = sender.state.live.typing.subscribe();
    let ours = sender.state.key.server_name().to_owned();
    while !stream.is_shutting_down() {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = shutting.changed() => continue,
        };
        let change = match change {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if change.user_id.server_name() != ours {
            continue;
        }
        let servers = match sender.servers_in_room(change.room_id.as_str()).await {
            Ok(servers) => servers,
            Err(err) => {
                tracing::debug!(error = %err.message, "typing notice not passed on");
                continue;
            }
        };
        let edu = json!({
            "edu_type": "m.typing",
            "content": { "room_id": change.room_id, "user_id": change.user_id, "typing": change.typing },
        });
        for server in servers {
            sender.queue_ephemeral(&server, edu.clone());
        }
    }
}

/// Delivers what `destination` is owed, until the server shuts down.
async fn deliver(sender: Arc<Sender>, destination: OwnedServerName, wake: Arc<Notify>) {
    let stream = sender.state.rooms.stream().clone();
    let mut shutting = stream.watch_current();
    while !stream.is_shutting_down() {
        let wait = match deliver_once(&sender, &destination).await {
            Ok(wait) => wait,
            Err(err) => {
                tracing::warn!(%destination, error = %err.message, "outbound federation failed");
                Some(FIRST_BACKOFF)
            }
        };
        match wait {
            Some(Duration::ZERO) => {}
            // Backing off; an admin's reset (or new work, which waits its turn) wakes it.
            Some(wait) => tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = wake.notified() => {}
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
async fn deliver_once(sender: &Sender, destination: &ServerName) -> Result<Option<Duration>, Error> {
    let state = &sender.state;
    let now = now_millis() as i64;
    let row = state.db.destination(destination.as_str()).await?;
    if let Some(row) = &row
        && row.retry_at > now
    {
        return Ok(Some(Duration::from_millis((row.retry_at - now) as u64)));
    }
    let cap = i64::from(state.catch_up_cap).max(MAX_PDUS as i64);
    if let Some(row) = &row
        && row.queued > cap
        && (row.failures > 0 || row.last_success_ts.is_none_or(|ts| now - ts > OUTAGE_MS))
    {
        // Back from an outage further behind than is worth replaying: the recent part, and
        // the latest event of each room so the destination fills the gaps itself. A healthy
        // destination with a backlog is sent everything.
        let dropped = state.db.compact_outbox(destination.as_str(), cap).await?;
        tracing::info!(%destination, dropped, "catch-up capped: recent events and each room's latest kept");
    }
    let mut positions = state.db.outbox(destination.as_str(), MAX_PDUS as i64).await?;
    let raw: Vec<i64> = positions.iter().map(|p| p.get()).collect();
    let mut to_device = state.db.to_device_edus_at(destination.as_str(), &raw).await?;
    // A transaction stays well inside every server's body limit: to-device EDUs (up to 64 KiB
    // each) end it early, at a position boundary (always after the first position).
    if let Some(cut) = to_device_cut(&to_device) {
        positions.retain(|p| p.get() < cut || Some(*p) == raw.first().map(|f| StreamPos::new(*f)));
        let last = positions.last().map_or(0, |p| p.get());
        to_device.retain(|(pos, _)| *pos <= last);
    }
    let ephemeral = sender.take_ephemeral(destination);
    let announcing = sender.take_announce(destination);
    if positions.is_empty() && ephemeral.is_empty() && !announcing {
        return Ok(None);
    }
    let raw: Vec<i64> = positions.iter().map(|p| p.get()).collect();
    let mut events = state.db.events_at(&raw).await?;
    events.sort_by_key(|e| e.stream_pos);
    let receipts = state.db.receipts_at(&raw).await?;
    let presence = state.db.presence_at(&raw).await?;
    let device_lists =
        crate::device_lists::outbound_edus(state, &state.db.device_list_changes_at(&raw).await?).await?;
    // The transaction id is fixed by the positions it carries, so a retry keeps it; one with
    // only typing notices or nothing (never retried) is named by the time.
    let txn_id: OwnedTransactionId = match (positions.first(), positions.last()) {
        (Some(first), Some(last)) => format!("{first}-{last}").into(),
        _ => {
            let n = sender.unpositioned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("e{}-{n}", now_millis()).into()
        }
    };
    let mut request = send_transaction_message::v1::Request::new(
        txn_id,
        state.key.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = events.into_iter().filter_map(|e| RawValue::from_string(e.json).ok()).collect();
    let mut edus: Vec<Value> = receipt_edus(&receipts)
        .into_iter()
        .chain(presence_edu(&presence))
        .chain(to_device.iter().filter_map(|(_, edu)| serde_json::from_str::<Value>(edu).ok()))
        .chain(device_lists)
        .collect();
    // The spec's limit is 100 EDUs a transaction (receivers refuse more): typing notices, best
    // effort and never retried, take what room is left.
    edus.extend(ephemeral.into_iter().take(MAX_EDUS.saturating_sub(edus.len())));
    request.edus =
        edus.iter().filter_map(|e| serde_json::value::to_raw_value(e).ok().map(Raw::from_json)).collect();
    match state.client.send(destination, request).await {
        // A 2xx is an acknowledgement whatever its body says (SyTest's, for one, has no `pdus`):
        // per-PDU errors are the receiver's to act on, and a retry would not change them.
        Ok(_) | Err(crate::FederationError::Response(_)) => {
            let up_to = positions.last().copied().unwrap_or(StreamPos::ZERO);
            state.db.delivered(destination.as_str(), up_to, now).await?;
            state.recovery.reachable(destination);
            if let Some(failures) = row.as_ref().map(|r| r.failures).filter(|f| *f > 0) {
                tracing::info!(%destination, failures, "destination reachable again");
            }
            Ok(Some(Duration::ZERO))
        }
        Err(err) => {
            let failures = row.map_or(0, |r| r.failures) + 1;
            let doubling = 1u32 << failures.clamp(1, 20).saturating_sub(1) as u32;
            let backoff = FIRST_BACKOFF.saturating_mul(doubling).min(MAX_BACKOFF);
            tracing::info!(%destination, failures, error = %err, "transaction not delivered; backing off");
            state
                .db
                .delivery_failed(destination.as_str(), failures, now + backoff.as_millis() as i64, now)
                .await?;
            state.recovery.backed_off(destination);
            Ok(Some(backoff))
        }
    }
}

/// Most to-device EDU bytes, and EDUs, one transaction carries (the spec allows 100 EDUs;
/// receipts, presence, device lists and typing share the rest).
const MAX_TO_DEVICE_BYTES: usize = 4 << 20;
const MAX_TO_DEVICE_EDUS: usize = 40;

/// Where a transaction's to-device EDUs (position, EDU, in order) pass the limits: the first
/// position left out, if any.
fn to_device_cut(edus: &[(i64, String)]) -> Option<i64> {
    let (mut bytes, mut count) = (0, 0);
    for (pos, edu) in edus {
        bytes += edu.len();
        count += 1;
        if bytes > MAX_TO_DEVICE_BYTES || count > MAX_TO_DEVICE_EDUS {
            return Some(*pos);
        }
    }
    None
}

/// One `m.presence` EDU for the presence rows a transaction carries (none if there are none).
fn presence_edu(rows: &[PresenceRow]) -> Option<Value> {
    if rows.is_empty() {
        return None;
    }
    let now = now_millis() as i64;
    let push: Vec<Value> = rows
        .iter()
        .map(|p| {
            let mut update = json!({
                "user_id": p.user_id,
                "presence": p.state,
                "last_active_ago": (now - p.last_active_ts).max(0),
                "currently_active": p.currently_active,
            });
            if let Some(msg) = &p.status_msg {
                update["status_msg"] = json!(msg);
            }
            update
        })
        .collect();
    Some(json!({ "edu_type": "m.presence", "content": { "push": push } }))
}

/// One `m.receipt` EDU per room for the receipts a transaction carries.
fn receipt_edus(receipts: &[ReceiptRow]) -> Vec<Value> {
    let mut rooms: HashMap<&str, serde_json::Map<String, Value>> = HashMap::new();
    for r in receipts {
        let mut data = json!({ "ts": r.ts });
        if !r.thread_id.is_empty() {
            data["thread_id"] = json!(r.thread_id);
        }
        rooms
            .entry(r.room_id.as_str())
            .or_default()
            .insert(r.user_id.clone(), json!({ "event_ids": [r.event_id], "data": data }));
    }
    rooms
        .into_iter()
        .map(|(room, users)| json!({ "edu_type": "m.receipt", "content": { room: { "m.read": users } } }))
        .collect()
}
