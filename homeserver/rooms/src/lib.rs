//! homeserver-rooms: the room model — PDUs, the event DAG, auth rules, state, and the room input
//! pipeline that is the only writer of room events.
//!
//! Layout:
//! - [`pdu`]: [`pdu::Pdu`], the stored event text plus a parsed view (ruma's state-res `Event`).
//! - [`builder`]: local event creation (prev/auth events, depth, hashes, signature, event id).
//! - [`auth`]: the room version's auth rules (ruma), run on preloaded events; [`acl`]: server ACLs.
//! - [`input`]: the per-room actor that authorises, orders and persists events (group commit).
//! - [`create`], [`membership`], [`send`]: the operations the client API performs on rooms;
//!   [`resident`]: what this server offers a server whose user joins over federation;
//!   [`outbound`]: what this server asks of other servers (joins, leaves, invites, backfill,
//!   profiles, directories) and out-of-band memberships.
//! - [`read`]: state and event queries; [`directory`]: the public room directory;
//!   [`visibility`]: history visibility; [`format`]: the client event format (redaction
//!   applied, `unsigned` filled in).
//! - [`rejection`]: why the room model refuses an event, and the one mapping to client errcodes.
//! - [`redaction`]: whether a redaction takes effect (redaction authority); [`validate`]:
//!   content rules for local events.
//! - [`power`], [`versions`], [`cache`]: helpers.
//!
//! Architecture invariant: nothing outside [`input`] writes room events, and [`input`] has exactly
//! one actor per room, so per-room ordering needs no locks anywhere else.

pub mod acl;
pub mod auth;
mod auth_difference;
pub mod builder;
pub mod cache;
mod commit;
pub mod create;
pub mod create_request;
pub mod derive;
pub mod directory;
pub mod event_format;
pub mod format;
mod guests;
pub mod input;
pub mod membership;
pub mod outbound;
pub mod pdu;
pub mod policy;
pub mod power;
pub mod push;
pub mod read;
pub mod redaction;
pub mod rejection;
pub mod remote;
pub mod resident;
mod resolve;
mod resolve_v1;
pub mod send;
mod state_groups;
pub mod upgrade;
pub mod validate;
pub mod versions;
pub mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use homeserver_core::{Error, keys::ServerKey, streams::EventStream};
use homeserver_storage::Db;
use ruma::{OwnedRoomId, RoomId, RoomVersionId};
use tokio::sync::{mpsc, oneshot};

use crate::{
    cache::EventCache,
    input::{ActorHandle, Command, RoomActor, Submission},
    pdu::Pdu,
};

/// Settings of the room model.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// The version of rooms created without an explicit `room_version`.
    pub default_room_version: RoomVersionId,
    /// How many parsed events the shared cache keeps.
    pub event_cache_size: usize,
    /// Users that application services own (they may be invited before they are registered).
    pub appservice_users: Option<membership::AppserviceUsers>,
    /// Where verify keys of other servers come from (the federation layer's key store); by
    /// default an empty [`remote::KeyRing`] plus this server's own key.
    pub server_keys: Option<ServerKeysHandle>,
    /// The exclusive user and alias namespaces of application services and plugins.
    pub claims: Arc<appservices::Claims>,
}

/// A shared [`remote::ServerKeys`] source.
#[derive(Clone)]
pub struct ServerKeysHandle(pub Arc<dyn remote::ServerKeys>);

impl std::fmt::Debug for ServerKeysHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeysHandle(..)")
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_room_version: RoomVersionId::V12,
            event_cache_size: 20_000,
            appservice_users: None,
            server_keys: None,
            claims: Arc::default(),
        }
    }
}

/// The room model's facade: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Rooms {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub db: Db,
    pub key: ServerKey,
    pub stream: Arc<EventStream>,
    pub cache: EventCache,
    pub(crate) committer: commit::Committer,
    pub(crate) state_group_ids: state_groups::StateGroupIds,
    pub(crate) outside_positions: state_groups::OutsidePositions,
    pub(crate) server_keys: Arc<dyn remote::ServerKeys>,
    /// The built-in key store (the source of `server_keys` unless the config plugs another).
    key_ring: Arc<remote::KeyRing>,
    /// Whole states by group, for resolution (a few large maps).
    pub(crate) state_maps: Mutex<lru::LruCache<i64, Arc<resolve::State>>>,
    /// The group a set of forks' states resolved to (sorted group ids).
    pub(crate) resolved_groups: Mutex<lru::LruCache<Vec<i64>, i64>>,
    pub push: push::PushRules,
    pub config: RoomsConfig,
    /// One actor per active room. A std mutex: held only to look up or insert a handle.
    actors: Mutex<HashMap<OwnedRoomId, ActorHandle>>,
    /// Room versions never change, so they are cached forever once read.
    versions: Mutex<HashMap<OwnedRoomId, RoomVersionId>>,
    /// How rooms this server is not in are joined (federation plugs it in).
    remote_servers: std::sync::OnceLock<Arc<dyn outbound::RemoteServers>>,
    /// What local users' events are checked against (a policy plugin plugs it in).
    policy: std::sync::OnceLock<Arc<dyn policy::EventPolicy>>,
    /// `(state group, type, state key) -> event id`: immutable, so cached without invalidation.
    state_entries: Mutex<lru::LruCache<(i64, String, String), Option<String>>>,
}

impl Shared {
    /// Drops what is cached about a purged room.
    pub(crate) fn forget_room(&self, room_id: &RoomId) {
        self.versions.lock().expect("versions poisoned").remove(room_id);
    }

    /// Called by an idle actor: removes it unless a command arrived meanwhile. Holding the map
    /// lock while checking the queue means no sender can obtain this handle and then find the
    /// actor gone without retrying.
    pub(crate) fn retire_actor(&self, room_id: &RoomId, rx: &mpsc::Receiver<Command>) -> bool {
        let mut actors = self.actors.lock().expect("actors poisoned");
        if rx.is_empty() {
            actors.remove(room_id);
            true
        } else {
            false
        }
    }
}

impl Rooms {
    pub fn new(db: Db, key: ServerKey, stream: Arc<EventStream>, config: RoomsConfig) -> Self {
        let cache = EventCache::new(db.clone(), config.event_cache_size);
        let committer = commit::Committer::spawn(db.clone());
        let push = push::PushRules::new(db.clone());
        let key_ring = Arc::new(remote::KeyRing::default());
        if let Ok(public) = ruma::serde::Base64::parse(key.public_key_base64()) {
            key_ring.add(key.server_name().as_str(), &key.key_id(), public);
        }
        // The configured source first (federation's key store), then the built-in ring (this
        // server's own key, and keys pinned through `key_ring`).
        let server_keys: Arc<dyn remote::ServerKeys> = match &config.server_keys {
            Some(handle) => Arc::new(remote::LayeredKeys(handle.0.clone(), key_ring.clone())),
            None => key_ring.clone(),
        };
        Self {
            shared: Arc::new(Shared {
                committer,
                state_group_ids: state_groups::StateGroupIds::default(),
                outside_positions: state_groups::OutsidePositions::default(),
                server_keys,
                key_ring,
                state_maps: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(32).expect("non-zero"),
                )),
                resolved_groups: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(1024).expect("non-zero"),
                )),
                push,
                db,
                key,
                stream,
                cache,
                config,
                actors: Mutex::new(HashMap::new()),
                versions: Mutex::new(HashMap::new()),
                remote_servers: std::sync::OnceLock::new(),
                policy: std::sync::OnceLock::new(),
                state_entries: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(50_000).expect("non-zero"),
                )),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    pub fn key(&self) -> &ServerKey {
        &self.shared.key
    }

    pub fn stream(&self) -> &Arc<EventStream> {
        &self.shared.stream
    }

    /// The built-in store of other servers' verify keys (used unless the config plugs another
    /// [`remote::ServerKeys`]).
    pub fn key_ring(&self) -> &remote::KeyRing {
        &self.shared.key_ring
    }

    pub fn cache(&self) -> &EventCache {
        &self.shared.cache
    }

    pub fn push_rules(&self) -> &push::PushRules {
        &self.shared.push
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.shared.config
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        self.shared.key.server_name()
    }

    /// Deletes a room and everything stored about it, after the writes already queued for it.
    /// Local members should have left first (the admin API makes them).
    pub async fn purge_room(&self, room_id: &RoomId) -> Result<(), Error> {
        self.submit(room_id, Submission::Purge).await.map(|_| ())
    }

    /// Checks and places events other servers created, in order; one verdict per event. The
    /// room is created by its `m.room.create` event if this server does not know it yet.
    pub async fn receive_remote(
        &self,
        room_id: &RoomId,
        pdus: Vec<remote::IncomingPdu>,
        arrival: remote::Arrival,
    ) -> Result<Vec<remote::Verdict>, Error> {
        Ok(self.submit_for_answer(room_id, Submission::Remote { pdus, arrival }).await?.verdicts)
    }

    /// Hands a submission to the room's actor and waits until it is committed (or refused).
    pub(crate) async fn submit(
        &self,
        room_id: &RoomId,
        submission: Submission,
    ) -> Result<Vec<Arc<Pdu>>, Error> {
        Ok(self.submit_for_answer(room_id, submission).await?.pdus)
    }

    async fn submit_for_answer(
        &self,
        room_id: &RoomId,
        submission: Submission,
    ) -> Result<input::Answer, Error> {
        self.check_policy(room_id, &submission).await?;
        let (reply, answer) = oneshot::channel();
        let mut command = Command { submission, reply };
        loop {
            let handle = {
                let mut actors = self.shared.actors.lock().expect("actors poisoned");
                actors
                    .entry(room_id.to_owned())
                    .or_insert_with(|| RoomActor::spawn(self.shared.clone(), room_id.to_owned()))
                    .clone()
            };
            match handle.send(command).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => {
                    // The actor retired between lookup and send: drop its handle and start anew.
                    let mut actors = self.shared.actors.lock().expect("actors poisoned");
                    if actors.get(room_id).is_some_and(|h| h.same_channel(&handle)) {
                        actors.remove(room_id);
                    }
                    command = returned;
                }
            }
        }
        answer.await.map_err(|_| Error::internal("room pipeline stopped"))?
    }
}
