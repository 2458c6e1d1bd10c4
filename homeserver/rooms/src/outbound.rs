//! What this server asks of other servers on behalf of its users: joining rooms it is not in,
//! and reading remote users' profiles. The room model does not know how (that is federation's
//! `make_join`/`send_join` and `/query/profile`), so a [`RemoteServers`] implementation is
//! plugged in once the federation side exists, and [`Rooms::join_remote`] and
//! [`Rooms::remote_profile`] hand the work to it. The client API depends only on this crate, so
//! it never reaches into federation.

use std::{future::Future, pin::Pin, sync::Arc};

use homeserver_core::{Error, ErrorKind};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId};
use serde_json::{Map, Value};

use crate::Rooms;

/// A boxed future of a request to other servers.
pub type RemoteFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// How this server reaches other servers for its users.
pub trait RemoteServers: Send + Sync {
    /// Joins `user` (a local user) to `room_id` through one of `via`.
    fn join(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()>;

    /// The profile (`displayname`, `avatar_url`) of a user of another server, from that server.
    fn profile(&self, user: OwnedUserId) -> RemoteFuture<Map<String, Value>>;
}

impl Rooms {
    /// Plugs in how other servers are reached (once, at start-up).
    pub fn set_remote_servers(&self, remote: Arc<dyn RemoteServers>) {
        let _ = self.shared.remote_servers.set(remote);
    }

    fn remote(&self) -> Result<&Arc<dyn RemoteServers>, Error> {
        self.shared.remote_servers.get().ok_or_else(|| Error::not_found("This server does not federate"))
    }

    /// Joins a local user to a room this server does not know, through `via`.
    pub async fn join_remote(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        via: Vec<OwnedServerName>,
    ) -> Result<(), Error> {
        let remote = self.remote()?;
        if via.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, "Unknown room: no server to join it through"));
        }
        remote.join(room_id, user, via).await
    }

    /// The profile of a user of another server.
    pub async fn remote_profile(&self, user: OwnedUserId) -> Result<Map<String, Value>, Error> {
        self.remote()?.profile(user).await
    }
}
