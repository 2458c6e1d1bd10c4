//! Authorising events with the room version's auth rules (ruma's implementation).
//!
//! ruma's checks take synchronous lookups, so callers first gather the events the check can ask
//! for (the auth events, and the current state entries of [`auth_state_keys`]) into an
//! [`AuthEvents`] map and then run [`check`] without touching the database.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    EventId, OwnedEventId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::AuthorizationRules,
    state_res,
};
use serde_json::value::RawValue;

use crate::{pdu::Pdu, rejection::Rejection};

/// The state keys the auth rules consult for an event (ruma's auth-event selection).
pub fn auth_state_keys(
    kind: &str,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawValue,
    rules: &AuthorizationRules,
) -> Result<Vec<(StateEventType, String)>, Rejection> {
    let kind = TimelineEventType::from(kind);
    state_res::auth_types_for_event(&kind, sender, state_key, content, rules).map_err(Rejection::Malformed)
}

/// Events available to an auth check: by id (for `auth_events`) and by state key (the state the
/// event is checked against).
#[derive(Default)]
pub struct AuthEvents {
    pub by_id: HashMap<OwnedEventId, Arc<Pdu>>,
    pub by_key: HashMap<(StateEventType, String), Arc<Pdu>>,
}

/// Runs the state-independent and state-dependent auth rules. The rejection names the rule that
/// failed.
pub fn check(rules: &AuthorizationRules, pdu: &Pdu, events: &AuthEvents) -> Result<(), Rejection> {
    let fetch_event = |id: &EventId| events.by_id.get(id).cloned();
    state_res::check_state_independent_auth_rules(rules, pdu, fetch_event)
        .map_err(Rejection::Unauthorized)?;
    let fetch_state =
        |ty: &StateEventType, key: &str| events.by_key.get(&(ty.clone(), key.to_owned())).cloned();
    state_res::check_state_dependent_auth_rules(rules, pdu, fetch_state).map_err(Rejection::Unauthorized)
}
