//! Noticing that a destination in backoff is back. Any request it makes here that passes
//! `X-Matrix` authentication shows it is up, so — as Synapse does — its backoff is cleared and
//! its queue woken at once, instead of after a backoff that may have grown to an hour.
//!
//! The set of destinations in backoff is kept in memory by the sender (filled when a delivery
//! fails, emptied when one succeeds), so the check on each inbound request is one lookup in a
//! small set; only the first request after a failure sends anything to the sender.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use ruma::{OwnedServerName, ServerName};
use tokio::sync::mpsc;

/// Destinations heard from while in backoff, on their way to the sender.
const QUEUE: usize = 256;

/// Shared by the inbound authentication and the sender.
pub struct Recovery {
    backed_off: Mutex<HashSet<OwnedServerName>>,
    heard: mpsc::Sender<OwnedServerName>,
    receiver: Mutex<Option<mpsc::Receiver<OwnedServerName>>>,
}

impl Default for Recovery {
    fn default() -> Self {
        let (heard, receiver) = mpsc::channel(QUEUE);
        Self { backed_off: Mutex::default(), heard, receiver: Mutex::new(Some(receiver)) }
    }
}

impl Recovery {
    /// A delivery to `destination` failed: it is in backoff now.
    pub fn backed_off(&self, destination: &ServerName) {
        self.backed_off.lock().expect("recovery poisoned").insert(destination.to_owned());
    }

    /// A delivery to `destination` succeeded.
    pub fn reachable(&self, destination: &ServerName) {
        self.backed_off.lock().expect("recovery poisoned").remove(destination);
    }

    /// `origin` made an authenticated request: if it was in backoff, the sender retries it.
    pub fn heard_from(&self, origin: &ServerName) {
        let was_backed_off = self.backed_off.lock().expect("recovery poisoned").remove(origin);
        if was_backed_off && self.heard.try_send(origin.to_owned()).is_err() {
            // The sender is busy with many such servers: this one waits out its backoff.
            self.backed_off(origin);
        }
    }

    /// The stream of destinations to retry (once: the sender takes it when it starts).
    pub(crate) fn take_heard(&self) -> Option<mpsc::Receiver<OwnedServerName>> {
        self.receiver.lock().expect("recovery poisoned").take()
    }
}

/// Retries each destination heard from while in backoff.
pub(crate) async fn retry_heard(
    sender: Arc<crate::sender::Sender>,
    mut heard: mpsc::Receiver<OwnedServerName>,
) {
    while let Some(destination) = heard.recv().await {
        if let Err(err) = sender.retry_now(&destination).await {
            tracing::info!(%destination, error = %err.message, "could not clear a backoff");
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::server_name;

    use super::*;

    #[test]
    fn only_the_first_request_of_a_backed_off_server_is_passed_on() {
        let recovery = Recovery::default();
        let mut heard = recovery.take_heard().expect("the receiver");
        assert!(recovery.take_heard().is_none(), "taken once");
        recovery.heard_from(server_name!("up.example"));
        recovery.backed_off(server_name!("down.example"));
        recovery.heard_from(server_name!("down.example"));
        recovery.heard_from(server_name!("down.example"));
        assert_eq!(heard.try_recv().unwrap(), "down.example");
        assert!(heard.try_recv().is_err(), "once, and nothing for a server not in backoff");
        recovery.backed_off(server_name!("again.example"));
        recovery.reachable(server_name!("again.example"));
        recovery.heard_from(server_name!("again.example"));
        assert!(heard.try_recv().is_err(), "delivered since: nothing to clear");
    }
}
