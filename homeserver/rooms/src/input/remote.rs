//! The room actor's remote-event path: events other servers created, checked in the spec's
//! order and placed in the DAG, next to the local fast path.
//!
//! For each event: format, signatures and hashes ([`crate::remote::check`]); duplicates are
//! no-ops; auth events must be stored (else [`Verdict::Missing`]); auth against the event's own
//! auth events (else rejected); for outliers that is all. Otherwise the state before the event
//! is the state after its prev event, or the resolution of its prev events' states (or the
//! state the caller supplies when prev events are unknown); auth against it (else rejected);
//! then, for live events, auth against the room's current state (else soft-failed). Accepted
//! live events move the forward extremities and, through resolution when forks merge, the
//! current state — as a delta between the old and the new current state, removals included.
//! Backfilled events take their place in topological order only.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use homeserver_core::Error;
use homeserver_storage::{
    events::StateGroupDelta,
    persist::{MembershipUpdate, NewEvent, NewStateGroup, StateChange},
};
use ruma::{EventId, OwnedEventId, UserId, events::StateEventType, room_version_rules::RoomVersionRules};
use tracing::debug;

use super::{Extremity, Journal, Outcome, RoomActor, StateKey};
use crate::{
    auth, event_format,
    pdu::Pdu,
    redaction,
    rejection::Rejection,
    remote::{Arrival, IncomingPdu, Verdict, check},
    resolve::{self, State},
    state_groups,
};

/// Where an event sits in the DAG as far as the room model needs to know.
#[derive(Debug, Clone, Copy)]
pub(super) struct DagInfo {
    /// The state group after the event (0 for outliers).
    pub state_after: i64,
    pub outlier: bool,
    /// Accepted into the live timeline (not backfilled, soft-failed or rejected).
    pub live: bool,
}

/// What a command added to the batch's working sets, so a failed command can take it back.
pub(super) enum BatchEntry {
    Event(OwnedEventId),
    Group(i64),
    Resolution(Vec<i64>),
}

/// The state before a remote event.
enum Before {
    /// A stored (or this batch's) state group.
    Group(i64),
    /// The resolution of several groups, not stored yet.
    Resolved { parents: Vec<i64>, state: Arc<State> },
}

impl RoomActor {
    /// Checks and places remote events in order, one verdict each.
    pub(super) async fn ingest(
        &mut self,
        pdus: &[IncomingPdu],
        arrival: Arrival,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        // History takes its positions as one block, in the order it is applied.
        self.outside_block = match arrival {
            Arrival::Backfill => {
                Some(self.shared.outside_positions.block(&self.shared.db, pdus.len()).await?)
            }
            _ => None,
        };
        let mut result = Ok(());
        for incoming in pdus {
            match self.ingest_one(incoming, arrival, outcome, journal).await {
                Ok(verdict) => outcome.verdicts.push(verdict),
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        self.outside_block = None;
        result
    }

    async fn ingest_one(
        &mut self,
        incoming: &IncomingPdu,
        arrival: Arrival,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<Verdict, Error> {
        let rules = self.loaded().rules.clone();
        let pdu = match check::check_pdu(&incoming.json, &self.room_id, &rules, &*self.shared.server_keys) {
            Ok(checked) => {
                if checked.redacted {
                    debug!(event_id = %checked.pdu.event_id, "content hash mismatch: event redacted");
                }
                checked.pdu
            }
            Err(reason) => return Ok(Verdict::Dropped(reason)),
        };
        let id = pdu.event_id.clone();
        if event_format::ids_are_named(&rules)
            && let Some(reason) = self.reused_id(&pdu, &rules).await?
        {
            return Ok(Verdict::Dropped(reason));
        }
        let outlier = arrival == Arrival::Outlier;
        let replaces_outlier = match self.dag_info(std::slice::from_ref(&id)).await?.remove(&id) {
            Some(info) if info.outlier && !outlier => true,
            Some(_) => return Ok(Verdict::Duplicate(id)),
            None => false,
        };
        // The auth events (plus, in rooms whose id names the create event, that event: it is
        // never listed) must be stored, whatever became of them.
        let mut needed = pdu.auth_events.clone();
        if rules.authorization.room_create_event_id_as_room_id
            && pdu.kind != ruma::events::TimelineEventType::RoomCreate
            && let Ok(create) = EventId::parse(format!("${}", &self.room_id.as_str()[1..]))
        {
            needed.push(create);
        }
        let auth_events = self.events(&needed).await?;
        let missing: Vec<OwnedEventId> =
            needed.iter().filter(|a| !auth_events.contains_key(*a)).cloned().collect();
        if !missing.is_empty() {
            return Ok(Verdict::Missing(id, missing));
        }
        let own = auth::AuthEvents {
            by_key: auth_events
                .values()
                .filter_map(|ev| Some(((ev.kind.to_string().into(), ev.state_key.clone()?), ev.clone())))
                .collect(),
            by_id: auth_events,
        };
        // The state before the event: needed even to store it rejected, since later events may
        // reference it and build on that state.
        let before_group = if outlier {
            0
        } else {
            match self.state_before(&pdu, incoming.state_before.as_deref()).await? {
                Ok(before) => self.materialise(before, outcome).await?,
                Err(Unplaceable::Missing(missing)) => return Ok(Verdict::Missing(id, missing)),
                Err(Unplaceable::Invalid(reason)) => return Ok(Verdict::Dropped(reason)),
            }
        };
        // Step 4: the auth rules against the event's own auth events — and a redaction of an
        // event this server holds in another room is no redaction of this room at all.
        let checked = match self.cross_room_redaction(&pdu).await? {
            Some(rejection) => Err(rejection),
            None => auth::check(&rules.authorization, &pdu, &own),
        };
        if let Err(rejection) = checked {
            return self
                .store_rejected(pdu, rejection, before_group, outlier, replaces_outlier, outcome)
                .await;
        }
        if outlier {
            let pos = self.outside_position().await?;
            self.record(&pdu, pos, (0, 0), Status::Outlier, replaces_outlier, None, outcome);
            return Ok(Verdict::Accepted(id));
        }
        // Step 5: the auth rules against the state before the event.
        let at_event = self.auth_events_at(before_group, &pdu, &own.by_id).await?;
        if let Err(rejection) = auth::check(&rules.authorization, &pdu, &at_event) {
            return self.store_rejected(pdu, rejection, before_group, false, replaces_outlier, outcome).await;
        }
        let after_group = self.group_after(before_group, &pdu, outcome).await?;
        // Step 6: the auth rules against the room's current state (live events only). The one
        // exception is this server's own join of a room it knows so far only through outliers
        // (a join over federation): there is no current state to fail against yet, and the
        // join's state becomes current. Nothing another server sends can take that place: only
        // this server signs its users' joins.
        let own_first_join = self.loaded().group == 0
            && pdu.kind == ruma::events::TimelineEventType::RoomMember
            && pdu.sender.server_name() == self.shared.key.server_name()
            && pdu.state_key.as_deref() == Some(pdu.sender.as_str());
        if arrival == Arrival::Live && !own_first_join {
            let current = self.auth_events_at(self.loaded().group, &pdu, &own.by_id).await?;
            if auth::check(&rules.authorization, &pdu, &current).is_err() {
                let pos = self.outside_position().await?;
                let groups = (before_group, after_group);
                self.record(&pdu, pos, groups, Status::SoftFailed, replaces_outlier, None, outcome);
                return Ok(Verdict::SoftFailed(id));
            }
        }
        let redacts = self.remote_redaction(&pdu).await?;
        let groups = (before_group, after_group);
        if arrival == Arrival::Live {
            let reservation = self.shared.stream.reserve(1).await?;
            let pos = reservation.first() as i64;
            outcome.reservations.push(reservation);
            self.record(&pdu, pos, groups, Status::Shown, replaces_outlier, redacts, outcome);
            let capped = self.advance_remote_extremities(&pdu, after_group, outcome).await?;
            let groups = (before_group, after_group);
            self.recompute_current(&pdu, groups, capped, pos, outcome, journal).await?;
            outcome.woken.push(pdu.sender.clone());
            self.derive_effects(&pdu, pos, outcome).await?;
        } else {
            // History: its place in topological order only. Forward extremities and the
            // current state belong to the live edge of the DAG and stay as they are.
            let pos = self.outside_position().await?;
            self.record(&pdu, pos, groups, Status::Shown, replaces_outlier, redacts, outcome);
            if let Some(relation) = crate::derive::relation(&pdu, pos) {
                outcome.plan.relations.push(relation);
            }
            outcome.plan.search.extend(crate::derive::search_row(&pdu, pos));
        }
        self.track_backward_extremities(&pdu, outcome).await?;
        Ok(Verdict::Accepted(id))
    }

    /// Stores an event that failed the auth rules: in the DAG (with the state before it, which
    /// is also the state after it), never in any state.
    async fn store_rejected(
        &mut self,
        pdu: Arc<Pdu>,
        rejection: Rejection,
        group: i64,
        outlier: bool,
        replaces_outlier: bool,
        outcome: &mut Outcome,
    ) -> Result<Verdict, Error> {
        let pos = self.outside_position().await?;
        let reason = rejection.to_string();
        let mut rejected = (*pdu).clone();
        rejected.rejected = true;
        let rejected = Arc::new(rejected);
        let status = Status::Rejected { reason: reason.clone(), outlier };
        self.record(&rejected, pos, (group, group), status, replaces_outlier, None, outcome);
        Ok(Verdict::Rejected(pdu.event_id.clone(), reason))
    }

    /// Adds a stored event to the plan and to what later events of the batch can see.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        pdu: &Arc<Pdu>,
        pos: i64,
        (state_before, state_after): (i64, i64),
        status: Status,
        replaces_outlier: bool,
        redacts: Option<OwnedEventId>,
        outcome: &mut Outcome,
    ) {
        let outlier = matches!(status, Status::Outlier | Status::Rejected { outlier: true, .. });
        let status_live = matches!(status, Status::Shown) && pos > 0;
        outcome.plan.events.push(NewEvent {
            redacts: redacts.map(|r| r.to_string()),
            outlier,
            soft_failed: matches!(status, Status::SoftFailed),
            rejected_reason: match status {
                Status::Rejected { reason, .. } => Some(reason),
                _ => None,
            },
            replaces_outlier,
            ..super::new_event(pdu, pos, (state_before, state_after))
        });
        self.batch_info.insert(pdu.event_id.clone(), DagInfo { state_after, outlier, live: status_live });
        self.batch_pdus.insert(pdu.event_id.clone(), pdu.clone());
        self.batch_log.push(BatchEntry::Event(pdu.event_id.clone()));
        outcome.pdus.push(pdu.clone());
    }

    /// A position outside the live stream (below zero).
    async fn outside_position(&mut self) -> Result<i64, Error> {
        if let Some(block) = &mut self.outside_block
            && let Some(pos) = block.next()
        {
            return Ok(pos);
        }
        self.shared.outside_positions.next(&self.shared.db).await
    }

    /// In rooms whose events carry their own ids (versions 1 and 2) an id is only a name its
    /// server chose: an id already held — in this room or another — must name the same event
    /// (the same reference hash), or the newcomer is dropped. Otherwise a server could have one
    /// event stored and served and another one indexed under the same id.
    async fn reused_id(&self, pdu: &Pdu, rules: &RoomVersionRules) -> Result<Option<String>, Error> {
        let Some(held) = self.events(std::slice::from_ref(&pdu.event_id)).await?.remove(&pdu.event_id) else {
            return Ok(None);
        };
        let same = held.room_id == pdu.room_id
            && event_format::reference_hash(&held.json, rules)
                == event_format::reference_hash(&pdu.json, rules);
        Ok((!same).then(|| "the event id names another event already held".to_owned()))
    }

    /// DAG facts of events of this room stored earlier (this batch first). Events of other
    /// rooms are not this room's: they read as unknown.
    pub(super) async fn dag_info(
        &self,
        ids: &[OwnedEventId],
    ) -> Result<HashMap<OwnedEventId, DagInfo>, Error> {
        let mut out = HashMap::new();
        let mut rest = Vec::new();
        for id in ids {
            match self.batch_info.get(id) {
                Some(info) => {
                    out.insert(id.clone(), *info);
                }
                None => rest.push(id.to_string()),
            }
        }
        if !rest.is_empty() {
            for row in self.shared.db.dag_events(&rest).await.map_err(Error::from)? {
                if row.room_id != self.room_id.as_str() {
                    continue;
                }
                if let Ok(id) = EventId::parse(&row.event_id) {
                    let live = row.stream_pos.is_live()
                        && !row.outlier
                        && !row.soft_failed
                        && row.rejected_reason.is_none();
                    out.insert(id, DagInfo { state_after: row.state_after, outlier: row.outlier, live });
                }
            }
        }
        Ok(out)
    }

    /// The state before an event: the state after its one prev event, the resolution of its
    /// prev events' states, and — when some prev events are not placed — the state the caller
    /// supplies for them, resolved with those that are.
    async fn state_before(
        &self,
        pdu: &Pdu,
        supplied: Option<&[OwnedEventId]>,
    ) -> Result<Result<Before, Unplaceable>, Error> {
        let infos = self.dag_info(&pdu.prev_events).await?;
        let placed: BTreeSet<i64> = infos.values().filter(|i| !i.outlier).map(|i| i.state_after).collect();
        let unplaced: Vec<OwnedEventId> =
            pdu.prev_events.iter().filter(|p| infos.get(*p).is_none_or(|i| i.outlier)).cloned().collect();
        if unplaced.is_empty() {
            return Ok(Ok(self.resolve_groups(placed).await?));
        }
        let Some(ids) = supplied else { return Ok(Err(Unplaceable::Missing(unplaced))) };
        let state = match self.supplied_state(ids).await? {
            Ok(state) => state,
            Err(err) => return Ok(Err(err)),
        };
        if placed.is_empty() {
            return Ok(Ok(Before::Resolved { parents: Vec::new(), state: Arc::new(state) }));
        }
        let mut states = Vec::with_capacity(placed.len() + 1);
        for group in &placed {
            states.push(self.state_of(*group).await?);
        }
        states.push(Arc::new(state));
        let state = resolve::resolve(&self.shared, &self.loaded().rules, &states, &self.batch_pdus).await?;
        Ok(Ok(Before::Resolved { parents: placed.into_iter().collect(), state: Arc::new(state) }))
    }

    /// The state a caller supplies (by event id): stored events of this room, one per key;
    /// rejected ones are no state.
    async fn supplied_state(&self, ids: &[OwnedEventId]) -> Result<Result<State, Unplaceable>, Error> {
        if ids.len() > MAX_SUPPLIED_STATE {
            return Ok(Err(Unplaceable::Invalid(format!("more than {MAX_SUPPLIED_STATE} state events"))));
        }
        let events = self.events(ids).await?;
        let missing: Vec<OwnedEventId> = ids.iter().filter(|i| !events.contains_key(*i)).cloned().collect();
        if !missing.is_empty() {
            return Ok(Err(Unplaceable::Missing(missing)));
        }
        let mut state = State::new();
        for event in ids.iter().filter_map(|id| events.get(id)) {
            let Some(key) = &event.state_key else {
                return Ok(Err(Unplaceable::Invalid(format!("{} is not a state event", event.event_id))));
            };
            if event.room_id != self.room_id {
                return Ok(Err(Unplaceable::Invalid(format!("{} is of another room", event.event_id))));
            }
            if event.rejected {
                continue;
            }
            if state.insert((event.kind.to_string().into(), key.clone()), event.event_id.clone()).is_some() {
                return Ok(Err(Unplaceable::Invalid(format!(
                    "two state events for ({}, {key})",
                    event.kind
                ))));
            }
        }
        Ok(Ok(state))
    }

    /// The state the given groups resolve to (one group is itself).
    async fn resolve_groups(&self, groups: BTreeSet<i64>) -> Result<Before, Error> {
        if groups.len() <= 1 {
            return Ok(Before::Group(groups.into_iter().next().unwrap_or(0)));
        }
        let key: Vec<i64> = groups.iter().copied().collect();
        if let Some(group) = self.batch_resolved.get(&key) {
            return Ok(Before::Group(*group));
        }
        if let Some(group) = self.shared.resolved_groups.lock().expect("resolution cache poisoned").get(&key)
        {
            return Ok(Before::Group(*group));
        }
        let mut states = Vec::with_capacity(key.len());
        for group in &key {
            states.push(self.state_of(*group).await?);
        }
        let state = resolve::resolve(&self.shared, &self.loaded().rules, &states, &self.batch_pdus).await?;
        Ok(Before::Resolved { parents: key, state: Arc::new(state) })
    }

    /// A stored group for the state before an event: a resolved state is laid out as a delta on
    /// its first parent (removals included) and remembered for the same set of forks.
    async fn materialise(&mut self, before: Before, outcome: &mut Outcome) -> Result<i64, Error> {
        let (parents, state) = match before {
            Before::Group(group) => return Ok(group),
            Before::Resolved { parents, state } => (parents, state),
        };
        let id = self.shared.state_group_ids.next(&self.shared.db).await?;
        let base_group = parents.first().copied().unwrap_or(0);
        let base_state = self.state_of(base_group).await?;
        let changes = diff(&base_state, &state)
            .into_iter()
            .map(|((ty, key), id)| (ty.to_string(), key, id.map(|i| i.to_string())))
            .collect();
        let base = state_groups::Base { group: base_group, chain_len: self.chain_len_of(base_group).await? };
        let full =
            || state.iter().map(|((t, k), id)| (t.to_string(), k.clone(), Some(id.to_string()))).collect();
        let group = state_groups::layout(id, &base, changes, full, parents.clone());
        self.push_group(group, outcome);
        // Remembered for this batch only; published once it commits.
        if !parents.is_empty() {
            self.batch_resolved.insert(parents.clone(), id);
            self.batch_log.push(BatchEntry::Resolution(parents));
        }
        self.batch_state_maps.insert(id, state);
        Ok(id)
    }

    /// The group after an accepted event: the state before plus the event, if it is state.
    async fn group_after(&mut self, before: i64, pdu: &Pdu, outcome: &mut Outcome) -> Result<i64, Error> {
        let Some(state_key) = &pdu.state_key else { return Ok(before) };
        let id = self.shared.state_group_ids.next(&self.shared.db).await?;
        let change = (pdu.kind.to_string(), state_key.clone(), Some(pdu.event_id.to_string()));
        let base = state_groups::Base { group: before, chain_len: self.chain_len_of(before).await? };
        let base_state = if base.group == 0 || base.chain_len + 1 >= state_groups::MAX_STATE_CHAIN {
            Some(self.state_of(before).await?)
        } else {
            None
        };
        let full = || {
            let mut state: State = base_state.as_deref().cloned().unwrap_or_default();
            state.insert((pdu.kind.to_string().into(), state_key.clone()), pdu.event_id.clone());
            state.iter().map(|((t, k), id)| (t.to_string(), k.clone(), Some(id.to_string()))).collect()
        };
        let group = state_groups::layout(id, &base, vec![change], full, Vec::new());
        self.push_group(group, outcome);
        Ok(id)
    }

    fn push_group(&mut self, group: NewStateGroup, outcome: &mut Outcome) {
        self.batch_log.push(BatchEntry::Group(group.group_id));
        self.batch_groups.insert(group.group_id, group.clone());
        outcome.plan.state_groups.push(group);
    }

    /// The delta-chain length of a group (a long one forces a snapshot next).
    async fn chain_len_of(&self, group: i64) -> Result<i64, Error> {
        if let Some(created) = self.batch_groups.get(&group) {
            return Ok(created.chain_len);
        }
        if group == self.loaded().group {
            return Ok(self.loaded().chain_len);
        }
        Ok(self
            .shared
            .db
            .state_group_chain_len(group)
            .await
            .map_err(Error::from)?
            .unwrap_or(state_groups::MAX_STATE_CHAIN))
    }

    /// The whole state of a group (the actor's own map for the current group).
    pub(super) async fn state_of(&self, group: i64) -> Result<Arc<State>, Error> {
        if group == 0 {
            return Ok(Arc::new(State::new()));
        }
        if group == self.loaded().group {
            return Ok(Arc::new(self.loaded().state.clone()));
        }
        if let Some(state) = self.batch_state_maps.get(&group) {
            return Ok(state.clone());
        }
        if let Some(state) = self.shared.state_maps.lock().expect("state cache poisoned").get(&group) {
            return Ok(state.clone());
        }
        // Near the current state (a fork of it), derive the state from it: only the keys either
        // side changed since they parted are looked at.
        if let Some(state) = self.state_from_current(group).await? {
            let state = Arc::new(state);
            if !self.batch_groups.contains_key(&group) {
                self.shared.state_maps.lock().expect("state cache poisoned").put(group, state.clone());
            }
            return Ok(state);
        }
        // Groups this batch created are not stored yet: replay their deltas on the stored base.
        let mut deltas = Vec::new();
        let mut base = Some(group);
        while let Some(g) = base
            && let Some(created) = self.batch_groups.get(&g)
        {
            deltas.push(created);
            base = created.prev_group;
        }
        let mut state: State = match base {
            Some(stored) if stored != 0 => {
                let rows = self.shared.db.state_group(stored).await.map_err(Error::from)?;
                rows.into_iter()
                    .filter_map(|(ty, key, id)| {
                        Some(((StateEventType::from(ty), key), EventId::parse(id).ok()?))
                    })
                    .collect()
            }
            _ => State::new(),
        };
        for delta in deltas.into_iter().rev() {
            for (ty, key, id) in &delta.entries {
                let key = (StateEventType::from(ty.as_str()), key.clone());
                match id.as_deref().and_then(|i| EventId::parse(i).ok()) {
                    Some(id) => state.insert(key, id),
                    None => state.remove(&key),
                };
            }
        }
        let state = Arc::new(state);
        if !self.batch_groups.contains_key(&group) {
            // Stored groups never change: safe to share at once.
            self.shared.state_maps.lock().expect("state cache poisoned").put(group, state.clone());
        }
        Ok(state)
    }

    /// A group's delta chain, newest first, through this batch's groups and then storage.
    async fn deltas_of(&self, group: i64) -> Result<Vec<StateGroupDelta>, Error> {
        let mut out = Vec::new();
        let mut next = Some(group).filter(|g| *g != 0);
        while let Some(id) = next {
            let Some(created) = self.batch_groups.get(&id) else {
                out.extend(self.shared.db.state_group_deltas(id).await.map_err(Error::from)?);
                break;
            };
            let entries = if created.prev_group.is_some() { created.entries.clone() } else { Vec::new() };
            out.push(StateGroupDelta { group_id: id, prev_group: created.prev_group, entries });
            next = created.prev_group;
        }
        Ok(out)
    }

    /// The state of `group` derived from the actor's current state, when both descend from a
    /// common group on one delta chain: the keys the current side changed since then are set
    /// back, the other side's changes applied. `None` when the chains do not meet.
    async fn state_from_current(&self, group: i64) -> Result<Option<State>, Error> {
        let ours = self.deltas_of(self.loaded().group).await?;
        let theirs = self.deltas_of(group).await?;
        let position: HashMap<i64, usize> = ours.iter().enumerate().map(|(i, d)| (d.group_id, i)).collect();
        let Some((j, i)) =
            theirs.iter().enumerate().find_map(|(j, d)| position.get(&d.group_id).map(|i| (j, *i)))
        else {
            return Ok(None);
        };
        let mut state = self.loaded().state.clone();
        let mut undo: HashSet<(String, String)> = HashSet::new();
        for delta in &ours[..i] {
            undo.extend(delta.entries.iter().map(|(t, k, _)| (t.clone(), k.clone())));
        }
        for (ty, key) in undo {
            let found = ours[i..].iter().find_map(|d| {
                d.entries.iter().find(|(t, k, _)| *t == ty && *k == key).map(|(_, _, id)| id.clone())
            });
            let value = match found {
                Some(value) => value,
                None => self.entry_in_snapshot(ours.last(), &ty, &key).await?,
            };
            set_entry(&mut state, &ty, &key, value.as_deref());
        }
        for delta in theirs[..j].iter().rev() {
            for (ty, key, id) in &delta.entries {
                set_entry(&mut state, ty, key, id.as_deref());
            }
        }
        Ok(Some(state))
    }

    /// A key's event in the full snapshot that starts a delta chain.
    async fn entry_in_snapshot(
        &self,
        root: Option<&StateGroupDelta>,
        ty: &str,
        key: &str,
    ) -> Result<Option<String>, Error> {
        let Some(root) = root else { return Ok(None) };
        if let Some(created) = self.batch_groups.get(&root.group_id) {
            return Ok(created
                .entries
                .iter()
                .find(|(t, k, _)| t == ty && k == key)
                .and_then(|(_, _, id)| id.clone()));
        }
        crate::Rooms { shared: self.shared.clone() }.state_entry(root.group_id, ty, key).await
    }

    /// The events the auth rules consult for `pdu` in the state of `group` (by key, and by id
    /// with `by_id`, the event's own auth events), for local and remote events alike.
    pub(super) async fn auth_events_at(
        &self,
        group: i64,
        pdu: &Pdu,
        by_id: &HashMap<OwnedEventId, Arc<Pdu>>,
    ) -> Result<auth::AuthEvents, Error> {
        let rules = &self.loaded().rules;
        let keys = auth::auth_state_keys(
            pdu.kind.to_string().as_str(),
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .unwrap_or_default();
        let mut wanted: Vec<(StateKey, OwnedEventId)> = Vec::new();
        for key in keys.into_iter().chain([(StateEventType::RoomCreate, String::new())]) {
            let found = if group == self.loaded().group {
                self.loaded().state.get(&key).cloned()
            } else if self.batch_groups.contains_key(&group) {
                self.state_of(group).await?.get(&key).cloned()
            } else {
                let rooms = crate::Rooms { shared: self.shared.clone() };
                rooms
                    .state_entry(group, &key.0.to_string(), &key.1)
                    .await?
                    .and_then(|id| EventId::parse(id).ok())
            };
            if let Some(id) = found {
                wanted.push((key, id));
            }
        }
        let ids: Vec<OwnedEventId> = wanted.iter().map(|(_, id)| id.clone()).collect();
        let fetched = self.events(&ids).await?;
        let mut events = auth::AuthEvents { by_id: by_id.clone(), by_key: HashMap::new() };
        for (key, id) in wanted {
            if let Some(ev) = fetched.get(&id) {
                events.by_key.insert(key, ev.clone());
            }
        }
        // The state events are reachable by id too (a v12 room's create event is never listed).
        events.by_id.extend(fetched);
        Ok(events)
    }

    /// A redaction naming an event held here in another room: rejected (as Synapse ignores it).
    async fn cross_room_redaction(&self, pdu: &Pdu) -> Result<Option<Rejection>, Error> {
        let Some(target) = redaction::target(pdu) else { return Ok(None) };
        let target = target.to_owned();
        let held = self.events(std::slice::from_ref(&target)).await?.remove(&target);
        Ok(held
            .filter(|original| original.room_id != pdu.room_id)
            .map(|_| Rejection::Unauthorized("the redacted event belongs to another room".into())))
    }

    /// A remote redaction redacts only where it takes effect (redaction authority), and only
    /// events this server holds in the same room.
    async fn remote_redaction(&self, pdu: &Pdu) -> Result<Option<OwnedEventId>, Error> {
        let Some(target) = redaction::target(pdu) else { return Ok(None) };
        let target = target.to_owned();
        let Some(original) = self.events(std::slice::from_ref(&target)).await?.remove(&target) else {
            return Ok(None);
        };
        let effective = original.room_id == pdu.room_id
            && redaction::takes_effect(
                pdu,
                &original,
                &self.power_levels_now().await?,
                redaction::Origin::Remote,
            );
        Ok(effective.then_some(target))
    }

    /// Forward extremities after an accepted live event: (old ∪ {e}) − prev(e), without those
    /// events already in the timeline reference (an event fetched late to fill a gap, an
    /// extremity backfilled history continues from), at most [`MAX_EXTREMITIES`] (the deepest).
    /// Returns whether the cap dropped any: their forks then live on only in the old current
    /// state, which the next resolution must include.
    async fn advance_remote_extremities(
        &mut self,
        pdu: &Pdu,
        after: i64,
        outcome: &mut Outcome,
    ) -> Result<bool, Error> {
        let mut extremities = self.loaded().extremities.clone();
        extremities.retain(|x| !pdu.prev_events.contains(&x.id));
        extremities.push(Extremity { id: pdu.event_id.clone(), depth: pdu.depth, group: after });
        if extremities.len() > 1 {
            let ids: Vec<String> = extremities.iter().map(|x| x.id.to_string()).collect();
            let referenced = self.shared.db.referenced_in_timeline(&ids).await.map_err(Error::from)?;
            let batch_refs: HashSet<&OwnedEventId> = self
                .batch_pdus
                .iter()
                .filter(|(id, _)| self.batch_info.get(*id).is_some_and(|i| i.live))
                .flat_map(|(_, p)| p.prev_events.iter())
                .collect();
            let kept: Vec<Extremity> = extremities
                .iter()
                .filter(|x| !referenced.contains(x.id.as_str()) && !batch_refs.contains(&x.id))
                .cloned()
                .collect();
            if !kept.is_empty() {
                extremities = kept;
            }
        }
        // Over the cap, the earliest arrivals go (depth is the sender's claim, arrival is ours).
        let capped = extremities.len() > MAX_EXTREMITIES;
        if capped {
            let excess = extremities.len() - MAX_EXTREMITIES;
            extremities.drain(..excess);
        }
        outcome.plan.extremities = Some(extremities.iter().map(|x| x.id.to_string()).collect());
        self.loaded.as_mut().expect("loaded").extremities = extremities;
        Ok(capped)
    }

    /// The current state after an accepted live event: the resolved state at the forward
    /// extremities, written as a delta against the old current state.
    async fn recompute_current(
        &mut self,
        pdu: &Pdu,
        (before, after): (i64, i64),
        keep_current: bool,
        pos: i64,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        let (single, current) = {
            let l = self.loaded();
            (l.extremities.len() == 1, l.group)
        };
        // Fast path: the event extends the current state (one extremity, built on it).
        if single && before == current {
            if after != current
                && let Some(key) = &pdu.state_key
            {
                let change = vec![((pdu.kind.to_string().into(), key.clone()), Some(pdu.event_id.clone()))];
                self.change_current(change, after, pos, outcome, journal).await?;
            }
            return Ok(());
        }
        self.resolve_current(keep_current, pos, outcome, journal).await
    }

    /// Makes the current state the resolved state at the forward extremities (and the old
    /// current state, when extremities were dropped that only it still reflects).
    async fn resolve_current(
        &mut self,
        keep_current: bool,
        pos: i64,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        let current = self.loaded().group;
        let mut groups: BTreeSet<i64> = self.loaded().extremities.iter().map(|x| x.group).collect();
        if keep_current {
            groups.insert(current);
        }
        let new_group = self.materialise(self.resolve_groups(groups).await?, outcome).await?;
        if new_group == current {
            return Ok(());
        }
        let new_state = self.state_of(new_group).await?;
        let changes = diff(&self.loaded().state, &new_state);
        self.change_current(changes, new_group, pos, outcome, journal).await
    }

    /// Applies changes to the current state: in memory (journaled) and as the plan's state
    /// delta, from which storage derives `current_state`, `memberships` and the join rule.
    async fn change_current(
        &mut self,
        changes: Vec<(StateKey, Option<OwnedEventId>)>,
        new_group: i64,
        pos: i64,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        let ids: Vec<OwnedEventId> = changes.iter().filter_map(|(_, id)| id.clone()).collect();
        let events = self.events(&ids).await?;
        let chain_len = self.chain_len_of(new_group).await?;
        let l = self.loaded.as_mut().expect("loaded");
        for (key, id) in changes {
            let old = match &id {
                Some(id) => l.state.insert(key.clone(), id.clone()),
                None => l.state.remove(&key),
            };
            journal.state.push((key.clone(), old));
            let event = id.as_ref().and_then(|id| events.get(id));
            let mut membership = None;
            if key.0 == StateEventType::RoomMember
                && let Ok(user) = UserId::parse(key.1.as_str())
            {
                let value = event.and_then(|e| e.content_str("membership"));
                let old = match &value {
                    Some(m) => l.memberships.insert(user.clone(), m.clone()),
                    None => l.memberships.remove(&user),
                };
                journal.memberships.push((user.clone(), old));
                match event.and_then(|e| e.content_str("displayname")) {
                    Some(name) => l.display_names.insert(user.clone(), name),
                    None => l.display_names.remove(&user),
                };
                membership = value.map(|m| MembershipUpdate {
                    membership: m,
                    stream_pos: pos,
                    displayname: event.and_then(|e| e.content_str("displayname")),
                    avatar_url: event.and_then(|e| e.content_str("avatar_url")),
                });
                outcome.woken.push(user);
            }
            if key.0 == StateEventType::RoomCreate && key.1.is_empty() {
                l.create_event = id.clone();
            }
            if key.0 == StateEventType::RoomJoinRules && key.1.is_empty() {
                outcome.plan.join_rule = event.and_then(|e| e.content_str("join_rule"));
            }
            if key.0 == StateEventType::RoomHistoryVisibility && key.1.is_empty() {
                outcome.plan.history_visibility =
                    Some(event.and_then(|e| e.content_str("history_visibility")).unwrap_or_default());
            }
            outcome.plan.state_delta.push(StateChange {
                event_type: key.0.to_string(),
                state_key: key.1.clone(),
                event_id: id.map(|i| i.to_string()),
                membership,
            });
        }
        l.group = new_group;
        l.chain_len = chain_len;
        outcome.plan.current_state_group = Some(new_group);
        outcome.plan.state_history.push((pos, new_group));
        Ok(())
    }

    /// The event is held now (no longer a backward extremity); its prev events that are not —
    /// or are held only as outliers (fetched for a state, not placed in the timeline) — become
    /// backward extremities, so paging back still fetches the history behind them.
    async fn track_backward_extremities(&self, pdu: &Pdu, outcome: &mut Outcome) -> Result<(), Error> {
        outcome.plan.backward_extremities_closed.push(pdu.event_id.to_string());
        let known = self.dag_info(&pdu.prev_events).await?;
        let in_timeline = |p: &OwnedEventId| known.get(p).is_some_and(|info| !info.outlier);
        outcome
            .plan
            .backward_extremities_opened
            .extend(pdu.prev_events.iter().filter(|p| !in_timeline(p)).map(|p| p.to_string()));
        Ok(())
    }
}

/// How an event is stored.
enum Status {
    Shown,
    Outlier,
    SoftFailed,
    Rejected { reason: String, outlier: bool },
}

/// Why an event cannot be placed in the DAG yet, or at all.
enum Unplaceable {
    /// These events must be stored first.
    Missing(Vec<OwnedEventId>),
    /// What the caller supplied cannot be the state before the event.
    Invalid(String),
}

/// The most state events a caller may supply for the state before an event.
const MAX_SUPPLIED_STATE: usize = 200_000;
/// The most forward extremities a room keeps: beyond, the earliest arrivals are dropped (their
/// forks stay in the current state, which the resolution then includes; local events reference
/// the deepest extremities, so they merge the rest over time).
const MAX_EXTREMITIES: usize = 50;

/// Sets (or, without event, removes) one entry of a state.
fn set_entry(state: &mut State, ty: &str, key: &str, id: Option<&str>) {
    let k = (StateEventType::from(ty), key.to_owned());
    match id.and_then(|i| EventId::parse(i).ok()) {
        Some(id) => state.insert(k, id),
        None => state.remove(&k),
    };
}

/// The changes that turn state `from` into state `to` (`None`: the key is removed).
fn diff(from: &State, to: &State) -> Vec<(StateKey, Option<OwnedEventId>)> {
    let mut out: Vec<(StateKey, Option<OwnedEventId>)> = to
        .iter()
        .filter(|(k, v)| from.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    out.extend(from.keys().filter(|k| !to.contains_key(*k)).map(|k| (k.clone(), None)));
    // Deterministic order (creation first, as state is applied).
    out.sort_by(|a, b| {
        let create = |k: &StateKey| k.0 != StateEventType::RoomCreate;
        (create(&a.0), &a.0).cmp(&(create(&b.0), &b.0))
    });
    out
}
