//! Policy plugins as the room model's [`EventPolicy`]: every event a local user sends to an
//! existing room is offered to each plugin granted `policy`, in turn, before it is stored. A
//! plugin is skipped for events of its own users (it would wait on itself), while disabled or
//! suspended by its breaker; a failed or slow answer allows the event (the server fails open)
//! and counts as a crash, so a hostile policy is soon suspended and stops costing latency.

use std::sync::Weak;

use homeserver_rooms::policy::{EventPolicy, PolicyFuture, ProposedEvent};

use crate::{
    bindings::policy_guest::{self, Verdict},
    plugin::{Plugin, truncate},
};

/// Longest refusal reason passed on to the client.
const MAX_REASON: usize = 1000;

/// Weak: the room model holds the policies, and plugins hold the room model.
pub(crate) struct Policies {
    pub plugins: Vec<Weak<Plugin>>,
}

impl EventPolicy for Policies {
    fn check<'a>(&'a self, event: ProposedEvent<'a>) -> PolicyFuture<'a> {
        Box::pin(async move {
            for plugin in self.plugins.iter().filter_map(Weak::upgrade) {
                let ctx = &plugin.ctx;
                let disabled = plugin.health.lock().expect("health poisoned").disabled;
                if disabled || plugin.suspended_until().is_some() || ctx.is_own(event.sender.as_str()) {
                    continue;
                }
                let proposed = policy_guest::ProposedEvent {
                    room_id: event.room_id.to_string(),
                    sender: event.sender.to_string(),
                    event_type: event.kind.to_owned(),
                    state_key: event.state_key.map(str::to_owned),
                    content_json: event.content.to_string(),
                };
                match plugin.check(proposed).await {
                    Ok(Verdict::Allow) => {}
                    Ok(Verdict::Deny(reason)) => {
                        ctx.count("policy_denied", 1);
                        let mut reason = truncate(reason);
                        if reason.len() > MAX_REASON {
                            let mut cut = MAX_REASON;
                            while !reason.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            reason.truncate(cut);
                        }
                        return Err(reason);
                    }
                    Err(err) => {
                        ctx.count("policy_failed_open", 1);
                        ctx.log(
                            "warn",
                            format!("policy check failed, the event was allowed: {}", err.describe()),
                        );
                    }
                }
            }
            Ok(())
        })
    }
}
