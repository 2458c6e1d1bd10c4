//! The federation side of the room model's [`RemoteServers`]: what local users' requests need
//! from other servers (joins through `joiner`, leaves of rooms held elsewhere through `leaver`,
//! invites through `invites`, profiles through `/query/profile`, history through
//! `backfiller`, aliases and public rooms through `directory`), plugged into the room model at
//! start-up.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use homeserver_rooms::outbound::{DirectoryQuery, RemoteFuture, RemoteInvite, RemoteServers};
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName,
    OwnedUserId,
};
use serde_json::{Map, Value};

use crate::{
    FederationState, backfiller, directory, e2ee, invites, joiner, knocker, leaver, query, sender::Sender,
};

/// [`RemoteServers`] over federation.
pub struct Remote {
    state: FederationState,
    sender: Arc<Sender>,
    backfills: Arc<BackfillSlots>,
}

/// Rooms being backfilled, and when a backfill last brought nothing: one backfill per room at a
/// time, and none for [`FRUITLESS_PAUSE`] after a fruitless one, however many clients page back
/// in it.
#[derive(Default)]
struct BackfillSlots(Mutex<HashMap<OwnedRoomId, Backfill>>);

enum Backfill {
    Running,
    Fruitless(Instant),
}

/// A claimed backfill, released when dropped (also when its request is abandoned midway).
struct Claim {
    slots: Arc<BackfillSlots>,
    room_id: OwnedRoomId,
    placed: usize,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.slots.release(&self.room_id, self.placed);
    }
}

/// How long a room is not backfilled after a backfill brought nothing.
const FRUITLESS_PAUSE: Duration = Duration::from_secs(10);

impl BackfillSlots {
    /// Claims a room's backfill; false while one runs or a fruitless one is recent.
    fn claim(&self, room_id: &OwnedRoomId) -> bool {
        let mut backfills = self.0.lock().expect("backfills poisoned");
        let now = Instant::now();
        backfills.retain(|_, b| match b {
            Backfill::Running => true,
            Backfill::Fruitless(at) => now.duration_since(*at) < FRUITLESS_PAUSE,
        });
        if backfills.contains_key(room_id) {
            return false;
        }
        backfills.insert(room_id.clone(), Backfill::Running);
        true
    }

    /// Releases a room's backfill, pausing the room if it brought nothing.
    fn release(&self, room_id: &OwnedRoomId, placed: usize) {
        let mut backfills = self.0.lock().expect("backfills poisoned");
        match placed {
            0 => backfills.insert(room_id.clone(), Backfill::Fruitless(Instant::now())),
            _ => backfills.remove(room_id),
        };
    }
}

impl RemoteServers for Remote {
    fn join(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()> {
        let state = self.state.clone();
        Box::pin(async move { joiner::join(&state, &room_id, &user, &via).await })
    }

    fn leave(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()> {
        let state = self.state.clone();
        Box::pin(async move { leaver::leave(&state, &room_id, &user, &via).await })
    }

    fn knock(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        via: Vec<OwnedServerName>,
        reason: Option<String>,
    ) -> RemoteFuture<()> {
        let state = self.state.clone();
        Box::pin(async move { knocker::knock(&state, &room_id, &user, &via, reason).await })
    }

    fn invite(&self, invite: RemoteInvite) -> RemoteFuture<String> {
        let state = self.state.clone();
        Box::pin(async move { invites::send_invite(&state, invite).await })
    }

    fn profile(&self, user: OwnedUserId) -> RemoteFuture<Map<String, Value>> {
        let state = self.state.clone();
        Box::pin(async move { query::fetch_profile(&state, &user).await })
    }

    fn query_keys(
        &self,
        server: OwnedServerName,
        device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> RemoteFuture<Value> {
        let state = self.state.clone();
        Box::pin(async move { crate::remote_lists::query(&state, &server, device_keys).await })
    }

    fn claim_keys(
        &self,
        server: OwnedServerName,
        claims: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> RemoteFuture<Value> {
        let state = self.state.clone();
        Box::pin(async move { e2ee::claim_remote_keys(&state, &server, claims).await })
    }

    fn public_rooms(&self, server: OwnedServerName, query: DirectoryQuery) -> RemoteFuture<Value> {
        let state = self.state.clone();
        Box::pin(async move { directory::fetch_public_rooms(&state, &server, query).await })
    }

    fn resolve_alias(&self, alias: OwnedRoomAliasId) -> RemoteFuture<(OwnedRoomId, Vec<OwnedServerName>)> {
        let state = self.state.clone();
        Box::pin(async move { directory::fetch_alias(&state, &alias).await })
    }

    fn retry_destination(&self, destination: OwnedServerName) -> RemoteFuture<bool> {
        let sender = self.sender.clone();
        Box::pin(async move { sender.retry_now(&destination).await })
    }

    fn backfill(
        &self,
        room_id: OwnedRoomId,
        from: Vec<OwnedEventId>,
        limit: u32,
        servers: Vec<OwnedServerName>,
    ) -> RemoteFuture<usize> {
        if !self.backfills.claim(&room_id) {
            return Box::pin(async { Ok(0) });
        }
        let state = self.state.clone();
        let claim = Claim { slots: self.backfills.clone(), room_id: room_id.clone(), placed: 0 };
        Box::pin(async move {
            // The whole claim moves into the future, so dropping the future releases it.
            let mut claim = claim;
            let result = backfiller::backfill(&state, &room_id, from, limit, &servers).await;
            claim.placed = *result.as_ref().unwrap_or(&0);
            result
        })
    }
}

/// Plugs federation into the room model.
pub fn install(state: &FederationState, sender: Arc<Sender>) {
    let remote = Remote { state: state.clone(), sender, backfills: Arc::default() };
    state.rooms.set_remote_servers(Arc::new(remote));
}
