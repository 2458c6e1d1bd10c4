//! The auth difference of several room states — state resolution v2's input — computed from the
//! events the states do not share, so resolving forks of a room with 10,000 state events does
//! not walk 10,000 auth chains.
//!
//! By definition the auth difference is the union of the states' full auth chains minus their
//! intersection. With C the events common to every state and D_i the rest of state i, the chain
//! of state i is chain(C) ∪ chain(D_i), so the difference is
//! (∪ chain(D_i) − ∩ chain(D_i)) − chain(C). The candidates come from walking *up* the auth DAG
//! from the few differing events (`event_auth`); a candidate drops out when some common event
//! descends from it, found by walking *down* the reverse index (`event_auth_by_auth`, state
//! events only) level by level from all candidates at once, each stopping at its first common
//! event. [`by_definition`] computes the same set from the full chains; the tests hold the two
//! equal.

use std::collections::{HashMap, HashSet};

use homeserver_core::Error;
use homeserver_storage::Db;
use ruma::{EventId, OwnedEventId};

use crate::resolve::{State, Unstored};

/// The most events the downward walk may visit before it gives up (far beyond a real room's
/// needs; an attacker's DAG cannot make it unbounded).
const MAX_VISITED: usize = 500_000;

/// The auth difference of `states`.
pub(crate) async fn auth_difference(
    db: &Db,
    states: &[&State],
    unstored: &Unstored,
) -> Result<HashSet<OwnedEventId>, Error> {
    let mut common: HashSet<&OwnedEventId> = states.first().map(|s| s.values().collect()).unwrap_or_default();
    for state in states.iter().skip(1) {
        let ids: HashSet<&OwnedEventId> = state.values().collect();
        common.retain(|id| ids.contains(id));
    }
    let mut chains = Vec::with_capacity(states.len());
    for state in states {
        let differing: Vec<OwnedEventId> =
            state.values().filter(|id| !common.contains(id)).cloned().collect();
        chains.push(auth_chain(db, &differing, unstored).await?);
    }
    let union: HashSet<&OwnedEventId> = chains.iter().flatten().collect();
    let candidates: Vec<OwnedEventId> =
        union.into_iter().filter(|id| !chains.iter().all(|c| c.contains(*id))).cloned().collect();
    let common: HashSet<OwnedEventId> = common.into_iter().cloned().collect();
    let covered = match descend_to_common(db, &candidates, &common, unstored).await? {
        Some(covered) => covered,
        // The graph below the candidates is too large to walk down: walk up from the common
        // events instead (their whole auth chain; slower, never wrong).
        None => {
            let common: Vec<OwnedEventId> = common.into_iter().collect();
            auth_chain(db, &common, unstored).await?
        }
    };
    Ok(candidates.into_iter().filter(|id| !covered.contains(id)).collect())
}

/// The auth difference from the states' full auth chains: the definition, for checking.
#[cfg(test)]
pub(crate) async fn by_definition(
    db: &Db,
    states: &[&State],
    unstored: &Unstored,
) -> Result<HashSet<OwnedEventId>, Error> {
    let mut chains = Vec::with_capacity(states.len());
    for state in states {
        let ids: Vec<OwnedEventId> = state.values().cloned().collect();
        chains.push(auth_chain(db, &ids, unstored).await?);
    }
    let union: HashSet<&OwnedEventId> = chains.iter().flatten().collect();
    Ok(union.into_iter().filter(|id| !chains.iter().all(|c| c.contains(*id))).cloned().collect())
}

/// The auth chain of `events`, through unstored events (their `auth_events`) and stored ones.
pub(crate) async fn auth_chain(
    db: &Db,
    events: &[OwnedEventId],
    unstored: &Unstored,
) -> Result<HashSet<OwnedEventId>, Error> {
    Ok(auth_edges(db, events, unstored).await?.into_iter().map(|(_, auth)| auth).collect())
}

/// Every auth edge reachable from `events`.
pub(crate) async fn auth_edges(
    db: &Db,
    events: &[OwnedEventId],
    unstored: &Unstored,
) -> Result<HashSet<(OwnedEventId, OwnedEventId)>, Error> {
    let mut edges = HashSet::new();
    let mut stored_seeds = Vec::new();
    let mut seen = HashSet::new();
    let mut queue: Vec<OwnedEventId> = events.to_vec();
    while let Some(id) = queue.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        match unstored.get(&id) {
            Some(pdu) => {
                for auth in &pdu.auth_events {
                    edges.insert((id.clone(), auth.clone()));
                    queue.push(auth.clone());
                }
            }
            None => stored_seeds.push(id.to_string()),
        }
    }
    for (event, auth) in db.auth_chain_edges(&stored_seeds).await.map_err(Error::from)? {
        if let (Ok(event), Ok(auth)) = (EventId::parse(event), EventId::parse(auth)) {
            edges.insert((event, auth));
        }
    }
    Ok(edges)
}

/// Which of `candidates` a `common` event descends from (through auth edges, the candidate
/// itself not counting): one level-by-level walk down for all of them, each origin stopping at
/// its first common descendant. `None` when the walk would visit more than [`MAX_VISITED`]
/// events (rejected events, which no accepted event descends from, are not walked).
async fn descend_to_common(
    db: &Db,
    candidates: &[OwnedEventId],
    common: &HashSet<OwnedEventId>,
    unstored: &Unstored,
) -> Result<Option<HashSet<OwnedEventId>>, Error> {
    // Unstored events' auth edges, reversed (stored ones come from the index).
    let mut unstored_children: HashMap<&EventId, Vec<&OwnedEventId>> = HashMap::new();
    for (id, pdu) in unstored {
        if pdu.state_key.is_some() && !pdu.rejected {
            for auth in &pdu.auth_events {
                unstored_children.entry(auth).or_default().push(id);
            }
        }
    }
    let mut covered: HashSet<OwnedEventId> = HashSet::new();
    // node -> the candidates (by index) that reach it and are not covered yet.
    let mut frontier: HashMap<OwnedEventId, HashSet<usize>> =
        candidates.iter().enumerate().map(|(i, id)| (id.clone(), HashSet::from([i]))).collect();
    let mut propagated: HashMap<OwnedEventId, HashSet<usize>> = HashMap::new();
    let mut visited = 0usize;
    while !frontier.is_empty() {
        let parents: Vec<String> = frontier.keys().map(|id| id.to_string()).collect();
        let mut edges: Vec<(OwnedEventId, OwnedEventId)> = Vec::new();
        for (parent, child) in db.state_children(&parents).await.map_err(Error::from)? {
            if let (Ok(parent), Ok(child)) = (EventId::parse(parent), EventId::parse(child)) {
                edges.push((parent, child));
            }
        }
        for parent in frontier.keys() {
            for child in unstored_children.get(&**parent).into_iter().flatten() {
                edges.push((parent.clone(), (*child).clone()));
            }
        }
        let mut next: HashMap<OwnedEventId, HashSet<usize>> = HashMap::new();
        for (parent, child) in edges {
            let Some(origins) = frontier.get(&parent) else { continue };
            if common.contains(&child) {
                covered.extend(origins.iter().map(|i| candidates[*i].clone()));
                continue;
            }
            let done = propagated.entry(child.clone()).or_default();
            let fresh: Vec<usize> = origins.iter().filter(|i| done.insert(**i)).copied().collect();
            if !fresh.is_empty() {
                next.entry(child).or_default().extend(fresh);
            }
        }
        // Origins already covered need no further walking.
        next.retain(|_, origins| {
            origins.retain(|i| !covered.contains(&candidates[*i]));
            !origins.is_empty()
        });
        visited += next.len();
        if visited > MAX_VISITED {
            return Ok(None);
        }
        frontier = next;
    }
    Ok(Some(covered))
}

#[cfg(test)]
mod tests {
    use homeserver_storage::{
        persist::{NewEvent, PersistPlan},
        testing::TestDatabase,
    };
    use ruma::events::StateEventType;

    use super::*;

    /// A deterministic pseudo-random sequence.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    fn id(i: usize) -> OwnedEventId {
        EventId::parse(format!("$e{i}")).unwrap()
    }

    /// A random auth DAG of `n` state events over `keys` state keys, each authorised by up to
    /// four earlier events; returns each event's key.
    async fn random_dag(db: &Db, rng: &mut Rng, n: usize, keys: usize) -> Vec<usize> {
        let mut key_of = Vec::with_capacity(n);
        let mut events = Vec::with_capacity(n);
        for i in 0..n {
            let key = rng.next(keys);
            key_of.push(key);
            let auth: Vec<String> = if i == 0 {
                Vec::new()
            } else {
                let mut a: Vec<String> = (0..1 + rng.next(4)).map(|_| id(rng.next(i)).to_string()).collect();
                a.sort();
                a.dedup();
                a
            };
            events.push(NewEvent {
                stream_pos: i as i64 + 1,
                event_id: id(i).to_string(),
                event_type: "m.test".into(),
                state_key: Some(format!("k{key}")),
                sender: "@a:x".into(),
                depth: i as i64 + 1,
                origin_server_ts: 0,
                json: "{}".into(),
                unsigned_extra: None,
                state_before: 0,
                state_after: 0,
                redacts: None,
                txn: None,
                prev_events: Vec::new(),
                auth_events: auth,
                outlier: false,
                soft_failed: false,
                rejected_reason: None,
                replaces_outlier: false,
            });
        }
        db.persist(&PersistPlan { room_id: "!r:x".into(), events, ..Default::default() }).await.unwrap();
        key_of
    }

    /// A state holding, per key, one of the events of that key among the first `upto`.
    fn random_state(rng: &mut Rng, key_of: &[usize], upto: usize) -> State {
        let mut state = State::new();
        for (i, key) in key_of.iter().enumerate().take(upto) {
            if rng.next(3) > 0 {
                state.insert((StateEventType::from("m.test"), format!("k{key}")), id(i));
            }
        }
        state
    }

    #[tokio::test]
    async fn the_difference_from_the_differing_events_is_the_definition() {
        let tdb = TestDatabase::create().await;
        let db = Db::connect(&tdb.url).await.unwrap();
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let key_of = random_dag(&db, &mut rng, 400, 60).await;
        let unstored = Unstored::new();
        let mut nonempty = 0;
        for round in 0..40 {
            // A shared base, forked: each state changes a few keys to later events.
            let upto = 200 + rng.next(150);
            let base = random_state(&mut rng, &key_of, upto);
            let forks = 2 + round % 2;
            let mut states = Vec::new();
            for _ in 0..forks {
                let mut state = base.clone();
                for _ in 0..1 + rng.next(5) {
                    let i = rng.next(key_of.len());
                    state.insert((StateEventType::from("m.test"), format!("k{}", key_of[i])), id(i));
                }
                if rng.next(4) == 0
                    && let Some(key) = state.keys().next().cloned()
                {
                    state.remove(&key);
                }
                states.push(state);
            }
            let refs: Vec<&State> = states.iter().collect();
            let fast = auth_difference(&db, &refs, &unstored).await.unwrap();
            let slow = by_definition(&db, &refs, &unstored).await.unwrap();
            assert_eq!(fast, slow, "round {round}");
            nonempty += usize::from(!fast.is_empty());
        }
        assert!(nonempty > 10, "the rounds exercise non-empty differences ({nonempty})");
    }
}
