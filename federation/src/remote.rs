//! The federation side of the room model's [`RemoteServers`]: what local users' requests need
//! from other servers (joins through `joiner`, leaves of rooms held elsewhere through `leaver`,
//! invites through `invites`, profiles through `/query/profile`), plugged into the room model
//! at start-up.

use std::sync::Arc;

use homeserver_rooms::outbound::{RemoteFuture, RemoteInvite, RemoteServers};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId};
use serde_json::{Map, Value};

use crate::{FederationState, invites, joiner, leaver, query};

/// [`RemoteServers`] over federation.
pub struct Remote(pub FederationState);

impl RemoteServers for Remote {
    fn join(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()> {
        let state = self.0.clone();
        Box::pin(async move { joiner::join(&state, &room_id, &user, &via).await })
    }

    fn leave(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()> {
        let state = self.0.clone();
        Box::pin(async move { leaver::leave(&state, &room_id, &user, &via).await })
    }

    fn invite(&self, invite: RemoteInvite) -> RemoteFuture<String> {
        let state = self.0.clone();
        Box::pin(async move { invites::send_invite(&state, invite).await })
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
