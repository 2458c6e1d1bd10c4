//! Event policies: checks of the events this server's users send to existing rooms, made before
//! the events reach the room actor (so a slow check never holds a room) and waited for. A
//! policy plugin plugs one in ([`Rooms::set_event_policy`]); every local event goes through
//! [`Rooms::check_policy`], called by the one way into the pipeline (`submit`).

use std::{future::Future, pin::Pin, sync::Arc};

use homeserver_core::Error;
use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::{Rooms, builder::EventTemplate, input::Submission};

/// An event a local user is about to send.
pub struct ProposedEvent<'a> {
    pub room_id: &'a RoomId,
    pub sender: &'a UserId,
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a Value,
}

pub type PolicyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Decides about proposed events: `Err(reason)` refuses one (the sender gets `M_FORBIDDEN`).
pub trait EventPolicy: Send + Sync {
    fn check<'a>(&'a self, event: ProposedEvent<'a>) -> PolicyFuture<'a>;
}

impl Rooms {
    /// Plugs the policy in (once; later calls are ignored).
    pub fn set_event_policy(&self, policy: Arc<dyn EventPolicy>) {
        let _ = self.shared.policy.set(policy);
    }

    /// Asks the policy about each of a submission's local events.
    pub(crate) async fn check_policy(&self, room_id: &RoomId, submission: &Submission) -> Result<(), Error> {
        let (Some(policy), Submission::Events { templates, .. }) = (self.shared.policy.get(), submission)
        else {
            return Ok(());
        };
        for EventTemplate { kind, state_key, content, sender, .. } in templates {
            let proposed = ProposedEvent { room_id, sender, kind, state_key: state_key.as_deref(), content };
            policy.check(proposed).await.map_err(Error::forbidden)?;
        }
        Ok(())
    }
}
