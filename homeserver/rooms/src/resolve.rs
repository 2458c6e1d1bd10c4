//! State resolution v2 (room versions 2–12, v12's changes included) through ruma's
//! `state_res::resolve`, fed from the DAG index and run off the room actor; version 1's
//! algorithm is [`crate::resolve_v1`].
//!
//! Resolving forks whose states agree costs nothing: the union is the answer. Otherwise the
//! inputs are gathered first — the auth chain of each state (for the auth difference) and, for
//! v12, the conflicted state subgraph (auth paths between conflicted events) — and the
//! algorithm runs on a blocking thread, where events it asks for are read through the shared
//! cache. Results are cached by the set of state groups they merge: groups never change, so
//! neither does their resolution.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use homeserver_core::Error;
use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap},
};

use crate::{Shared, pdu::Pdu};

/// A room state: `(type, state key)` to event id.
pub type State = StateMap<OwnedEventId>;

/// Events the actor accepted in its current batch: not stored yet, but part of the DAG.
pub(crate) type Unstored = HashMap<OwnedEventId, Arc<Pdu>>;

/// Resolves the states of several forks into one.
pub(crate) async fn resolve(
    shared: &Arc<Shared>,
    rules: &RoomVersionRules,
    states: &[Arc<State>],
    unstored: &Unstored,
) -> Result<State, Error> {
    let conflicted = conflicted_events(states);
    tracing::debug!(states = states.len(), conflicted = conflicted.len(), "state resolution");
    if conflicted.is_empty() {
        let mut union = State::new();
        for state in states {
            union.extend(state.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        return Ok(union);
    }
    let Some(v2_rules) = rules.state_res.v2_rules().copied() else {
        return resolve_v1(shared, rules, states, unstored).await;
    };
    // ruma takes the states' auth chains only to compute their difference; handing it the
    // difference itself (and an empty chain) gives it the same input at a fraction of the cost.
    let refs: Vec<&State> = states.iter().map(|s| &**s).collect();
    let difference = crate::auth_difference::auth_difference(&shared.db, &refs, unstored).await?;
    let auth_chains = vec![difference.into_iter().collect(), Default::default()];
    let subgraph = if v2_rules.consider_conflicted_state_subgraph {
        conflicted_subgraph(shared, &conflicted, unstored).await?
    } else {
        HashSet::new()
    };
    let unstored = unstored.clone();
    let shared = shared.clone();
    let rules = rules.clone();
    let states: Vec<State> = states.iter().map(|s| (**s).clone()).collect();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let fetch = |id: &EventId| match unstored.get(id) {
            Some(pdu) => Some(pdu.clone()),
            None => handle.block_on(shared.cache.get(id)).ok().flatten(),
        };
        state_res::resolve(&rules.authorization, &v2_rules, states.iter(), auth_chains, fetch, |_| {
            Some(subgraph.iter().cloned().collect())
        })
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("state resolution panicked: {e}")))?
}

/// State resolution v1 (room version 1), on a blocking thread like v2.
async fn resolve_v1(
    shared: &Arc<Shared>,
    rules: &RoomVersionRules,
    states: &[Arc<State>],
    unstored: &Unstored,
) -> Result<State, Error> {
    let (unstored, shared, rules) = (unstored.clone(), shared.clone(), rules.clone());
    let states: Vec<Arc<State>> = states.to_vec();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // A read that fails must fail the resolution, not quietly drop a candidate.
        let failed = std::cell::Cell::new(None);
        let fetch = |id: &EventId| match unstored.get(id) {
            Some(pdu) => Some(pdu.clone()),
            None => handle.block_on(shared.cache.get(id)).unwrap_or_else(|e| {
                failed.set(Some(e));
                None
            }),
        };
        let refs: Vec<&State> = states.iter().map(|s| &**s).collect();
        let resolved = crate::resolve_v1::resolve(&rules.authorization, &refs, fetch);
        match failed.take() {
            Some(err) => Err(err),
            None => Ok(resolved),
        }
    })
    .await
    .map_err(|e| Error::internal(format!("state resolution panicked: {e}")))?
}

/// Events of keys the states do not agree on (a key some state lacks counts).
fn conflicted_events(states: &[Arc<State>]) -> HashSet<OwnedEventId> {
    let mut keys: HashSet<&(StateEventType, String)> = HashSet::new();
    for state in states {
        keys.extend(state.keys());
    }
    let mut out = HashSet::new();
    for key in keys {
        let values: Vec<Option<&OwnedEventId>> = states.iter().map(|s| s.get(key)).collect();
        if values.windows(2).any(|w| w[0] != w[1]) {
            out.extend(values.into_iter().flatten().cloned());
        }
    }
    out
}

/// The v12 conflicted state subgraph: every event on an auth path from one conflicted event
/// to another, endpoints included.
async fn conflicted_subgraph(
    shared: &Shared,
    conflicted: &HashSet<OwnedEventId>,
    unstored: &Unstored,
) -> Result<HashSet<OwnedEventId>, Error> {
    let ids: Vec<OwnedEventId> = conflicted.iter().cloned().collect();
    let edges: Vec<(String, String)> = crate::auth_difference::auth_edges(&shared.db, &ids, unstored)
        .await?
        .into_iter()
        .map(|(e, a)| (e.to_string(), a.to_string()))
        .collect();
    let seeds: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut auth_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (event, auth) in &edges {
        auth_of.entry(event.as_str()).or_default().push(auth.as_str());
    }
    let targets: HashSet<&str> = seeds.iter().map(String::as_str).collect();
    // Memoised: does following auth edges from this event reach a conflicted event?
    let mut reaches: HashMap<&str, bool> = HashMap::new();
    let mut on_path = HashSet::new();
    for seed in &seeds {
        mark_reaching(seed.as_str(), &auth_of, &targets, &mut reaches);
    }
    for (event, yes) in &reaches {
        if *yes && let Ok(id) = EventId::parse(*event) {
            on_path.insert(id);
        }
    }
    Ok(on_path)
}

/// Whether `event` is, or leads through auth edges to, one of `targets`; iterative so a long
/// auth chain cannot overflow the stack. Records every visited event's answer.
fn mark_reaching<'a>(
    start: &'a str,
    auth_of: &HashMap<&'a str, Vec<&'a str>>,
    targets: &HashSet<&'a str>,
    reaches: &mut HashMap<&'a str, bool>,
) {
    // Depth-first: a node is finished once all its auth events are.
    let mut stack: Vec<(&'a str, bool)> = vec![(start, false)];
    while let Some((event, expanded)) = stack.pop() {
        if reaches.contains_key(event) && !expanded {
            continue;
        }
        let auths = auth_of.get(event).map(Vec::as_slice).unwrap_or(&[]);
        if expanded {
            let via_auth =
                auths.iter().any(|a| reaches.get(a).copied().unwrap_or(false) || targets.contains(a));
            reaches.insert(event, via_auth);
            continue;
        }
        // Provisionally "no" so cycles (impossible in a valid DAG) terminate.
        reaches.insert(event, false);
        stack.push((event, true));
        for auth in auths {
            if !reaches.contains_key(auth) {
                stack.push((auth, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subgraph_walk_finds_paths_between_conflicted_events() {
        // a -> b -> c -> d, and a -> e (dead end). Conflicted: a and c.
        let edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "e")];
        let mut auth_of: HashMap<&str, Vec<&str>> = HashMap::new();
        for (e, a) in edges {
            auth_of.entry(e).or_default().push(a);
        }
        let targets: HashSet<&str> = ["a", "c"].into();
        let mut reaches = HashMap::new();
        for seed in ["a", "c"] {
            mark_reaching(seed, &auth_of, &targets, &mut reaches);
        }
        let on: HashSet<&str> = reaches.iter().filter(|(_, y)| **y).map(|(e, _)| *e).collect();
        // a reaches c through b; b reaches c. c itself reaches no other conflicted event, but it
        // is a path's endpoint — the caller's conflicted set holds it already.
        assert_eq!(on, ["a", "b"].into());
    }
}
