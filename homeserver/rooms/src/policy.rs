//! Event policies: checks of the events this server's users send, made before the events reach
//! the room actor (so a slow check never holds a room) and waited for. A policy plugin plugs
//! one in ([`Rooms::set_event_policy`]); every event built here goes through
//! [`Rooms::check_policy`], called by the one way into the pipeline (`submit`): those of
//! existing rooms and a new room's initial events and invites alike. Leaving and banning are
//! never refused (a policy must not trap anyone in a room, nor keep a moderator from acting),
//! and membership changes in rooms of other servers — which another server builds — are not
//! seen here.

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
        let Some(policy) = self.shared.policy.get() else { return Ok(()) };
        let templates = match submission {
            Submission::Events { templates, .. } | Submission::Create { templates, .. } => templates,
            Submission::Remote { .. } | Submission::OutOfBand { .. } | Submission::Purge => return Ok(()),
        };
        for EventTemplate { kind, state_key, content, sender, .. } in templates.iter().filter(|t| !is_exit(t))
        {
            let proposed = ProposedEvent { room_id, sender, kind, state_key: state_key.as_deref(), content };
            policy.check(proposed).await.map_err(Error::forbidden)?;
        }
        Ok(())
    }
}

/// A leave or a ban: never refused.
fn is_exit(template: &EventTemplate) -> bool {
    template.kind == "m.room.member"
        && matches!(template.content.get("membership").and_then(Value::as_str), Some("leave" | "ban"))
}
