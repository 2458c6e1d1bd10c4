//! The federation side of the room model's [`RemoteServers`]: what local users' requests need
//! from other servers (joins through `joiner`, profiles through `/query/profile`), plugged into
//! the room model at start-up.

use std::sync::Arc;

use homeserver_rooms::outbound::{RemoteFuture, RemoteServers};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId};
use serde_json::{Map, Value};

use crate::{FederationState, joiner, query};

/// [`RemoteServers`] over federation.
pub struct Remote(pub FederationState);

impl RemoteServers for Remote {
    fn join(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()> {
        let state = self.0.clone();
        Box::pin(async move { joiner::join(&state, &room_id, &user, &via).await })
    }

    fn profile(&self, user: OwnedUserId) -> RemoteFuture<Map<String, Value>> {
        let state = self.0.clone();
        Box::pin(async move { query::fetch_profile(&state, &user).await })
    }
}

/// Plugs federation into the room model.
pub fn install(state: &FederationState) {
    state.rooms.set_remote_servers(Arc::new(Remote(state.clone())));
}
