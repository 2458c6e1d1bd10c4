//! Joining rooms this server is not in: the room model does not know how (that is federation's
//! `make_join`/`send_join`), so a [`RemoteJoins`] implementation is plugged in once the
//! federation side exists, and [`Rooms::join_remote`] hands the work to it. The client API
//! depends only on this crate, so it never reaches into federation.

use std::{future::Future, pin::Pin, sync::Arc};

use homeserver_core::{Error, ErrorKind};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId};

use crate::Rooms;

/// A boxed future of a remote join.
pub type JoinFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// How this server joins a room through other servers.
pub trait RemoteJoins: Send + Sync {
    /// Joins `user` (a local user) to `room_id` through one of `via`.
    fn join(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> JoinFuture;
}

impl Rooms {
    /// Plugs in how remote joins are done (once, at start-up).
    pub fn set_remote_joins(&self, joins: Arc<dyn RemoteJoins>) {
        let _ = self.shared.remote_joins.set(joins);
    }

    /// Joins a local user to a room this server does not know, through `via`.
    pub async fn join_remote(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        via: Vec<OwnedServerName>,
    ) -> Result<(), Error> {
        let Some(joins) = self.shared.remote_joins.get() else {
            return Err(Error::not_found("Unknown room, and this server does not federate"));
        };
        if via.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, "Unknown room: no server to join it through"));
        }
        joins.join(room_id, user, via).await
    }
}
