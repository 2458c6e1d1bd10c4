//! State resolution v1, which room version 1 uses (ruma implements only v2), written from the
//! spec's description (`rooms/v1.md`).
//!
//! `R` starts as the entries the states agree on; a key some states lack is not a conflict,
//! as Synapse treats it. Conflicts over power levels, then join rules, then each member key
//! are settled by walking their candidates in ascending depth (descending `sha1(event_id)` on
//! ties): the first is taken, each next one replaces it while the auth rules allow it in `R`
//! (holding the walk's current candidate), and the walk stops at the first that is not
//! allowed; the keys of one pass are all judged against `R` as the pass began. Every other conflict takes the deepest
//! candidate (lowest `sha1(event_id)` on ties) that the auth rules allow in `R` — or, if none
//! is allowed, the shallowest, as Synapse does, so a key never vanishes.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    EventId, OwnedEventId, events::StateEventType, room_version_rules::AuthorizationRules, state_res,
};
use sha1::{Digest, Sha1};

use crate::{pdu::Pdu, resolve::State};

/// Resolves `states`; `fetch` reads events by id (an event it cannot find takes no part).
pub(crate) fn resolve(
    rules: &AuthorizationRules,
    states: &[&State],
    fetch: impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> State {
    let mut candidates: BTreeMap<(StateEventType, String), Vec<OwnedEventId>> = BTreeMap::new();
    for state in states {
        for (key, id) in state.iter() {
            let ids = candidates.entry(key.clone()).or_default();
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
    }
    let mut resolved = State::new();
    let mut conflicts = Vec::new();
    for (key, ids) in candidates {
        match <[OwnedEventId; 1]>::try_from(ids) {
            Ok([id]) => {
                resolved.insert(key, id);
            }
            Err(ids) => conflicts.push((key, ids)),
        }
    }
    let events = |ids: &[OwnedEventId]| -> Vec<Arc<Pdu>> { ids.iter().filter_map(|id| fetch(id)).collect() };
    for kind in [StateEventType::RoomPowerLevels, StateEventType::RoomJoinRules, StateEventType::RoomMember] {
        // Every key of a pass is judged against R as the pass began (as Synapse does), so the
        // answer does not depend on the order keys are visited in.
        let mut settled = Vec::new();
        for (key, ids) in conflicts.iter().filter(|(key, _)| key.0 == kind) {
            let mut list = events(ids);
            list.sort_by(|a, b| {
                a.depth.cmp(&b.depth).then_with(|| sha1_of(&b.event_id).cmp(&sha1_of(&a.event_id)))
            });
            let mut walk = list.into_iter();
            let Some(mut current) = walk.next() else { continue };
            for next in walk {
                let with_current = Overlay { state: &resolved, key, id: Some(&current.event_id) };
                if !allowed(rules, &next, &with_current, &fetch) {
                    break;
                }
                current = next;
            }
            settled.push((key.clone(), current.event_id.clone()));
        }
        resolved.extend(settled);
    }
    let auth_kinds =
        [StateEventType::RoomPowerLevels, StateEventType::RoomJoinRules, StateEventType::RoomMember];
    let mut settled = Vec::new();
    for (key, ids) in conflicts.iter().filter(|(key, _)| !auth_kinds.contains(&key.0)) {
        let mut list = events(ids);
        list.sort_by(|a, b| {
            b.depth.cmp(&a.depth).then_with(|| sha1_of(&a.event_id).cmp(&sha1_of(&b.event_id)))
        });
        let as_is = Overlay { state: &resolved, key, id: None };
        if let Some(pdu) = list.iter().find(|pdu| allowed(rules, pdu, &as_is, &fetch)).or(list.last()) {
            settled.push((key.clone(), pdu.event_id.clone()));
        }
    }
    resolved.extend(settled);
    resolved
}

/// R, with the entry of one key replaced by the candidate a walk currently holds.
struct Overlay<'a> {
    state: &'a State,
    key: &'a (StateEventType, String),
    id: Option<&'a OwnedEventId>,
}

impl Overlay<'_> {
    fn get(&self, key: &(StateEventType, String)) -> Option<&OwnedEventId> {
        match self.id {
            Some(id) if key == self.key => Some(id),
            _ => self.state.get(key),
        }
    }
}

/// Whether the auth rules allow `pdu` in a room whose state is `state`.
fn allowed(
    rules: &AuthorizationRules,
    pdu: &Arc<Pdu>,
    state: &Overlay<'_>,
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> bool {
    let fetch_state = |kind: &StateEventType, key: &str| {
        state.get(&(kind.clone(), key.to_owned())).and_then(|id| fetch(id))
    };
    state_res::check_state_dependent_auth_rules(rules, &**pdu, fetch_state).is_ok()
}

fn sha1_of(id: &EventId) -> [u8; 20] {
    Sha1::digest(id.as_str().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ruma::RoomVersionId;
    use serde_json::json;

    use super::*;

    /// Unsigned events are enough: state resolution runs the state-dependent auth rules only.
    struct Room(HashMap<OwnedEventId, Arc<Pdu>>);

    impl Room {
        fn add(
            &mut self,
            id: &str,
            kind: &str,
            key: &str,
            sender: &str,
            depth: u64,
            content: serde_json::Value,
        ) {
            let json = json!({
                "room_id": "!r:a", "sender": sender, "type": kind, "state_key": key, "content": content,
                "origin_server_ts": depth, "depth": depth, "prev_events": [], "auth_events": [],
            });
            let id = EventId::parse(id).unwrap();
            let pdu = Pdu::parse(id.clone(), None, Arc::from(json.to_string())).unwrap();
            self.0.insert(id, Arc::new(pdu));
        }

        fn state(&self, ids: &[&str]) -> State {
            ids.iter()
                .map(|id| {
                    let pdu = &self.0[&EventId::parse(*id).unwrap()];
                    ((pdu.kind.to_string().into(), pdu.state_key.clone().unwrap()), pdu.event_id.clone())
                })
                .collect()
        }

        fn resolve(&self, states: &[&State]) -> State {
            let rules = RoomVersionId::V1.rules().unwrap();
            resolve(&rules.authorization, states, |id| self.0.get(id).cloned())
        }
    }

    fn key(kind: &str, state_key: &str) -> (StateEventType, String) {
        (kind.into(), state_key.into())
    }

    #[test]
    fn conflicts_resolve_by_depth_within_what_the_auth_rules_allow() {
        let mut room = Room(HashMap::new());
        room.add("$create:a", "m.room.create", "", "@alice:a", 1, json!({ "creator": "@alice:a" }));
        room.add("$alice:a", "m.room.member", "@alice:a", "@alice:a", 2, json!({ "membership": "join" }));
        room.add("$rules:a", "m.room.join_rules", "", "@alice:a", 3, json!({ "join_rule": "public" }));
        room.add("$bob:a", "m.room.member", "@bob:a", "@bob:a", 4, json!({ "membership": "join" }));
        let levels = |users: serde_json::Value| json!({ "users": users, "state_default": 50 });
        room.add("$pl1:a", "m.room.power_levels", "", "@alice:a", 3, levels(json!({ "@alice:a": 100 })));
        // Bob, without power, claims it: not allowed once Alice's levels are in R.
        room.add("$pl2:a", "m.room.power_levels", "", "@bob:a", 5, levels(json!({ "@bob:a": 100 })));
        room.add("$topic1:a", "m.room.topic", "", "@alice:a", 6, json!({ "topic": "one" }));
        room.add("$topic2:a", "m.room.topic", "", "@alice:a", 7, json!({ "topic": "two" }));
        room.add("$topic3:a", "m.room.topic", "", "@bob:a", 8, json!({ "topic": "bob's" }));
        let common = ["$create:a", "$alice:a", "$rules:a", "$bob:a"];
        let with = |extra: &[&str]| room.state(&[&common[..], extra].concat());
        let (one, two, three) =
            (with(&["$pl1:a", "$topic1:a"]), with(&["$pl2:a", "$topic2:a"]), with(&["$topic3:a"]));
        let resolved = room.resolve(&[&one, &two, &three]);
        // Power levels: the shallowest first, then Bob's is not allowed — Alice's stands.
        assert_eq!(resolved[&key("m.room.power_levels", "")].as_str(), "$pl1:a");
        // The topic: the deepest the rules allow (Bob's needs power he lacks), not the deepest.
        assert_eq!(resolved[&key("m.room.topic", "")].as_str(), "$topic2:a");
        // What the states agree on, or only one has, stays.
        assert_eq!(resolved[&key("m.room.member", "@bob:a")].as_str(), "$bob:a");
        assert_eq!(resolved.len(), 6);
        // The answer does not depend on the order of the states.
        assert_eq!(room.resolve(&[&three, &two, &one]), resolved);
    }

    #[test]
    fn a_conflict_nothing_passes_keeps_the_shallowest_candidate() {
        let mut room = Room(HashMap::new());
        room.add("$create:a", "m.room.create", "", "@alice:a", 1, json!({ "creator": "@alice:a" }));
        room.add("$alice:a", "m.room.member", "@alice:a", "@alice:a", 2, json!({ "membership": "join" }));
        // Neither sender is in the room.
        room.add("$n1:a", "m.room.name", "", "@eve:a", 3, json!({ "name": "x" }));
        room.add("$n2:a", "m.room.name", "", "@mallory:a", 4, json!({ "name": "y" }));
        let one = room.state(&["$create:a", "$alice:a", "$n1:a"]);
        let two = room.state(&["$create:a", "$alice:a", "$n2:a"]);
        assert_eq!(room.resolve(&[&one, &two])[&key("m.room.name", "")].as_str(), "$n1:a");
    }
}
