//! Pusher changes, from the client API (`/pushers/set`) to the push sender: a set or updated
//! pusher is looked at at once (it may have been parked in a long retry delay for a URL the
//! update just fixed) rather than at the user's next notification.

use homeserver_storage::pushers::PusherKey;
use tokio::sync::broadcast;

/// Changes waiting for the push sender; past this it lags and looks at every pusher.
const CAPACITY: usize = 1024;

/// The channel of changed pushers.
pub struct PusherChanges {
    tx: broadcast::Sender<PusherKey>,
}

impl Default for PusherChanges {
    fn default() -> Self {
        PusherChanges { tx: broadcast::channel(CAPACITY).0 }
    }
}

impl PusherChanges {
    /// A pusher was set or updated.
    pub fn changed(&self, key: PusherKey) {
        // Nobody listening (no push sender in this process) is fine.
        let _ = self.tx.send(key);
    }

    /// The changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PusherKey> {
        self.tx.subscribe()
    }
}
