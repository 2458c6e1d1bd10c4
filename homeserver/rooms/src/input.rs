//! The room input pipeline: the only writer of room events.
//!
//! Each active room has one actor task that owns the room's current state, forward extremities
//! and depth in memory. Everything that adds events to a room is a [`Command`] sent to that actor,
//! so events of one room are built, authorised and persisted strictly one after another, while
//! different rooms proceed in parallel.
//!
//! The actor drains its queue in batches: it builds and authorises every queued event against the
//! state as it evolves through the batch, then persists the whole batch with one transaction
//! (group commit), and only then answers the callers and makes the new stream positions visible.
//! A command whose event fails validation or the auth rules is answered with the error and its
//! in-memory effects are rolled back from a journal; the rest of the batch is unaffected. If the
//! transaction fails, nothing of the batch is visible, the actor reloads its state from the
//! database and, for batches of several commands, retries them one by one so a single bad command
//! cannot fail its neighbours.
//!
//! Idle actors retire after a while; the next command for the room starts a fresh one that loads
//! the state from the database.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use homeserver_core::{
    Error, ErrorKind,
    streams::{Reservation, watermarks::Mark},
};
use homeserver_storage::{
    StorageError,
    persist::{
        MembershipUpdate, NewEvent, NewRoom, PersistPlan, PushActionRow, PushBroadcastRow, StateChange,
        TxnRecord,
    },
};
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId, events::StateEventType,
    room_version_rules::RoomVersionRules,
};
use serde_json::value::to_raw_value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{
    Shared, auth,
    builder::{EventTemplate, Placement, build_pdu},
    derive, event_format,
    pdu::Pdu,
    power::PowerLevels,
    push, redaction,
    rejection::Rejection,
    remote::{Arrival, IncomingPdu, Verdict},
    state_groups::{self, MAX_STATE_CHAIN},
    validate, versions,
};

/// How many commands one batch may take from the queue.
const MAX_BATCH: usize = 128;
/// At most this many forward extremities are referenced as prev_events.
pub(crate) const MAX_PREV_EVENTS: usize = 10;
/// The highest depth an event may have: the largest integer canonical JSON allows (room
/// versions 6 and later); a room already there stays there.
pub(crate) const MAX_DEPTH: u64 = (1 << 53) - 1;
/// An actor with nothing to do for this long retires.
const IDLE_RETIRE: Duration = Duration::from_secs(300);

mod out_of_band;
mod remote;

type StateKey = (StateEventType, String);

/// What a caller asks the pipeline to do.
pub enum Submission {
    /// Build and append events (in order) to an existing room. `txn` makes the last one idempotent.
    Events { templates: Vec<EventTemplate>, txn: Option<TxnRecord> },
    /// Create a room: the already built create event, then the initial events, plus the aliases
    /// to claim with it (a taken alias aborts the creation).
    Create {
        create: Box<Pdu>,
        version: RoomVersionId,
        templates: Vec<EventTemplate>,
        room: NewRoom,
        aliases: Vec<(String, String)>,
    },
    /// Check and place events other servers created ([`crate::remote`]).
    Remote { pdus: Vec<IncomingPdu>, arrival: Arrival },
    /// Store a local user's membership event of a room this server holds no state of (a remote
    /// invite, its rejection, a knock), with `unsigned_extra` (an invite's stripped state).
    OutOfBand { json: String, version: RoomVersionId, unsigned_extra: Option<String> },
    /// Delete the room and everything stored about it (admin purge). Runs alone, after the
    /// commands queued before it, so no write to the room races the deletion.
    Purge,
}

pub(crate) struct Command {
    pub submission: Submission,
    pub reply: oneshot::Sender<Result<Answer, Error>>,
}

/// What a command produced: the events it stored and, for remote events, one verdict each.
#[derive(Default)]
pub(crate) struct Answer {
    pub pdus: Vec<Arc<Pdu>>,
    pub verdicts: Vec<Verdict>,
}

/// A forward extremity: an event no other event of the room references yet.
#[derive(Debug, Clone)]
pub(crate) struct Extremity {
    pub id: OwnedEventId,
    pub depth: u64,
    /// The state group after it.
    pub group: i64,
}

/// The push actions of one event: the broadcast row for everyone the common outcome fits, and
/// the rows of members it does not.
#[derive(Default)]
struct PushOutcome {
    broadcast: Option<PushBroadcastRow>,
    rows: Vec<PushActionRow>,
}

/// What makes an annotation a duplicate: the same target, sender, event type and key (the
/// spec's rule), as one string triple; None for other relations.
fn annotation_key(rel: &homeserver_storage::persist::RelationRow) -> Option<(String, String, String)> {
    let key = rel.aggregation_key.as_ref().filter(|_| rel.rel_type == "m.annotation")?;
    Some((rel.relates_to.clone(), rel.sender.clone(), format!("{}\0{key}", rel.event_type)))
}

/// A handle to a room's actor.
pub(crate) type ActorHandle = mpsc::Sender<Command>;

struct Loaded {
    rules: RoomVersionRules,
    /// Display names of members (for push rules), kept in step with member events.
    display_names: HashMap<OwnedUserId, String>,
    state: HashMap<StateKey, OwnedEventId>,
    group: i64,
    chain_len: i64,
    extremities: Vec<Extremity>,
    memberships: HashMap<OwnedUserId, String>,
    create_event: Option<OwnedEventId>,
}

/// Undo information for one command's in-memory effects.
struct Journal {
    txns: Vec<String>,
    /// Length of the batch log when the command began.
    log_len: usize,
    group: i64,
    chain_len: i64,
    extremities: Vec<Extremity>,
    state: Vec<(StateKey, Option<OwnedEventId>)>,
    memberships: Vec<(OwnedUserId, Option<String>)>,
    create_event: Option<OwnedEventId>,
}

/// The state groups around an accepted event.
struct AppliedState {
    state_before: i64,
    state_after: i64,
    /// `prev_content` and friends for clients, when the event replaced a state entry.
    unsigned_extra: Option<String>,
}

/// What one successful command contributes to the batch.
#[derive(Default)]
struct Outcome {
    pdus: Vec<Arc<Pdu>>,
    verdicts: Vec<Verdict>,
    plan: PersistPlan,
    reservations: Vec<Reservation>,
    woken: Vec<OwnedUserId>,
}

pub(crate) struct RoomActor {
    shared: Arc<Shared>,
    room_id: OwnedRoomId,
    loaded: Option<Loaded>,
    /// Transaction ids used earlier in the current batch (not yet committed).
    batch_txns: HashMap<String, Arc<Pdu>>,
    /// Events accepted earlier in the current batch: later events of the batch may reference them
    /// before they are committed (and before the shared cache may hold them).
    batch_pdus: HashMap<OwnedEventId, Arc<Pdu>>,
    /// Reactions `(target, sender, key)` accepted earlier in the current batch.
    batch_annotations: HashSet<(String, String, String)>,
    /// Where events stored earlier in the batch sit in the DAG.
    batch_info: HashMap<OwnedEventId, remote::DagInfo>,
    /// State groups created in the batch (storage holds them only once it commits).
    batch_groups: HashMap<i64, homeserver_storage::persist::NewStateGroup>,
    /// Whole states of the batch's groups, and the groups forks resolved to in the batch:
    /// published to the shared caches only once the batch commits.
    batch_state_maps: HashMap<i64, Arc<crate::resolve::State>>,
    batch_resolved: HashMap<Vec<i64>, i64>,
    /// What each command added to the batch's working sets, in order (for rollback).
    batch_log: Vec<remote::BatchEntry>,
    /// Positions reserved for the history a backfill command applies, lowest first.
    outside_block: Option<std::ops::Range<i64>>,
}

impl RoomActor {
    pub(crate) fn spawn(shared: Arc<Shared>, room_id: OwnedRoomId) -> ActorHandle {
        let (tx, rx) = mpsc::channel(1024);
        let actor = RoomActor {
            shared,
            room_id,
            loaded: None,
            batch_txns: HashMap::new(),
            batch_pdus: HashMap::new(),
            batch_annotations: HashSet::new(),
            batch_info: HashMap::new(),
            batch_groups: HashMap::new(),
            batch_state_maps: HashMap::new(),
            batch_resolved: HashMap::new(),
            batch_log: Vec::new(),
            outside_block: None,
        };
        tokio::spawn(actor.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let first = match tokio::time::timeout(IDLE_RETIRE, rx.recv()).await {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(_) => {
                    if self.shared.retire_actor(&self.room_id, &rx) {
                        break;
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH
                && !matches!(batch.last(), Some(c) if matches!(c.submission, Submission::Purge))
            {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let purge = match batch.last() {
                Some(c) if matches!(c.submission, Submission::Purge) => batch.pop(),
                _ => None,
            };
            if !batch.is_empty() {
                self.process(batch).await;
            }
            if let Some(purge) = purge {
                self.purge(purge).await;
            }
            self.clear_batch();
        }
        debug!(room_id = %self.room_id, "room actor retired");
    }

    /// Deletes the room from the database and forgets it in memory.
    async fn purge(&mut self, cmd: Command) {
        let result = self.shared.db.purge_room(self.room_id.as_str()).await.map_err(Error::from);
        self.loaded = None;
        self.shared.forget_room(&self.room_id);
        let _ = cmd.reply.send(result.map(|()| Answer::default()));
    }

    async fn process(&mut self, batch: Vec<Command>) {
        let retry_singly = batch.len() > 1;
        let mut accepted: Vec<(Command, Outcome)> = Vec::with_capacity(batch.len());
        for cmd in batch {
            match self.run_command(&cmd.submission).await {
                Ok(outcome) => accepted.push((cmd, outcome)),
                Err(err) => {
                    let _ = cmd.reply.send(Err(err));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let mut plan = PersistPlan { room_id: self.room_id.to_string(), ..Default::default() };
        for (_, outcome) in &mut accepted {
            plan.merge(std::mem::take(&mut outcome.plan));
        }
        if plan.events.is_empty() {
            // Only replays of earlier transactions: nothing to write.
            for (cmd, outcome) in accepted {
                let _ = cmd.reply.send(Ok(Answer { pdus: outcome.pdus, verdicts: outcome.verdicts }));
            }
            return;
        }
        // A change of guest access, or a guest's join (vetted before a revocation might have
        // committed), makes the actor check the room's guests once the batch is committed.
        let check_guests = plan
            .state_delta
            .iter()
            .any(|c| c.event_type == crate::guests::GUEST_ACCESS && c.state_key.is_empty())
            || accepted.iter().any(|(_, o)| o.pdus.iter().any(|p| crate::guests::is_guest_join(p)));
        let memberships_changed = plan.state_delta.iter().any(|c| c.event_type == "m.room.member");
        match self.shared.committer.commit(plan).await {
            Ok(()) => {
                if check_guests {
                    crate::Rooms { shared: self.shared.clone() }
                        .after_guest_access_change(self.room_id.clone());
                }
                let mut woken: HashSet<OwnedUserId> = self.joined_members().collect();
                let ours = self.shared.key.server_name();
                for (_, outcome) in &mut accepted {
                    woken.extend(outcome.woken.drain(..).filter(|u| u.server_name() == ours));
                }
                let mut reservations: Vec<Reservation> =
                    accepted.iter_mut().flat_map(|(_, o)| std::mem::take(&mut o.reservations)).collect();
                self.publish_batch_caches();
                // Committed: raise the room's watermark before any of it becomes visible.
                if let Some(newest) = reservations.iter().map(|r| r.first() + r.count() - 1).max() {
                    self.shared.stream.marks().advance(Mark::RoomEvents, self.room_id.as_str(), newest);
                    if memberships_changed {
                        self.shared.stream.marks().advance(Mark::Memberships, self.room_id.as_str(), newest);
                    }
                }
                let last = reservations.pop();
                for r in reservations {
                    r.complete(Vec::new());
                }
                if let Some(last) = last {
                    last.complete(woken.into_iter().collect());
                }
                for (cmd, outcome) in accepted {
                    for pdu in &outcome.pdus {
                        self.shared.cache.insert(pdu.clone());
                    }
                    let _ = cmd.reply.send(Ok(Answer { pdus: outcome.pdus, verdicts: outcome.verdicts }));
                }
            }
            Err(err) => {
                // Nothing of the batch is committed; forget the in-memory effects, and the
                // state groups the batch would have created.
                self.loaded = None;
                self.clear_batch();
                if retry_singly {
                    warn!(room_id = %self.room_id, error = %err, "batch failed; retrying commands singly");
                    for (cmd, outcome) in accepted {
                        drop(outcome);
                        Box::pin(self.process(vec![cmd])).await;
                    }
                } else {
                    let error = persist_error(err);
                    for (cmd, _) in accepted {
                        let _ = cmd.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    fn clear_batch(&mut self) {
        self.batch_txns.clear();
        self.batch_pdus.clear();
        self.batch_annotations.clear();
        self.batch_info.clear();
        self.batch_groups.clear();
        self.batch_state_maps.clear();
        self.batch_resolved.clear();
        self.batch_log.clear();
    }

    /// After a commit: the batch's states and resolutions are stored now, so others may use them.
    fn publish_batch_caches(&mut self) {
        let mut maps = self.shared.state_maps.lock().expect("state cache poisoned");
        for (group, state) in self.batch_state_maps.drain() {
            maps.put(group, state);
        }
        drop(maps);
        let mut resolved = self.shared.resolved_groups.lock().expect("resolution cache poisoned");
        for (groups, group) in self.batch_resolved.drain() {
            resolved.put(groups, group);
        }
    }

    /// This server's joined members: the users whose syncs a commit wakes (other servers'
    /// users have no sync here).
    fn joined_members(&self) -> impl Iterator<Item = OwnedUserId> + '_ {
        let ours = self.shared.key.server_name();
        self.loaded
            .iter()
            .flat_map(|l| l.memberships.iter())
            .filter(move |(u, m)| m.as_str() == "join" && u.server_name() == ours)
            .map(|(u, _)| u.clone())
    }

    async fn ensure_loaded(&mut self) -> Result<(), Error> {
        if self.loaded.is_some() {
            return Ok(());
        }
        let db = &self.shared.db;
        let room_id = self.room_id.as_str();
        let Some(room) = db.room(room_id).await.map_err(Error::from)? else {
            return Err(Error::not_found("room not found"));
        };
        let version = RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|e| Error::internal(e.to_string()))?;
        let rules = versions::rules(&version)
            .ok_or_else(|| Error::internal(format!("unsupported room version {version}")))?;
        let mut state = HashMap::new();
        let mut create_event = None;
        for (ty, key, id) in db.current_state(room_id).await.map_err(Error::from)? {
            let id = EventId::parse(&id).map_err(|e| Error::internal(e.to_string()))?;
            if ty == "m.room.create" && key.is_empty() {
                create_event = Some(id.clone());
            }
            state.insert((StateEventType::from(ty), key), id);
        }
        let extremity_ids = db.room_extremities(room_id).await.map_err(Error::from)?;
        let extremities =
            db.dag_events(&extremity_ids).await.map_err(Error::from)?.into_iter().filter_map(|row| {
                let id = EventId::parse(&row.event_id).ok()?;
                Some(Extremity { id, depth: row.depth.max(0) as u64, group: row.state_after })
            });
        let group = room.current_state_group;
        let chain_len =
            db.state_group_chain_len(group).await.map_err(Error::from)?.unwrap_or(MAX_STATE_CHAIN);
        let memberships = db
            .room_memberships(room_id)
            .await
            .map_err(Error::from)?
            .into_iter()
            .filter_map(|(u, m)| Some((UserId::parse(u).ok()?, m)))
            .collect();
        let member_ids: Vec<OwnedEventId> = state
            .iter()
            .filter(|((ty, _), _)| *ty == StateEventType::RoomMember)
            .map(|(_, id)| id.clone())
            .collect();
        let display_names = self
            .shared
            .cache
            .get_many(&member_ids)
            .await?
            .into_values()
            .filter_map(|pdu| {
                let user = UserId::parse(pdu.state_key.as_deref()?).ok()?;
                Some((user, pdu.content_str("displayname")?))
            })
            .collect();
        self.loaded = Some(Loaded {
            rules,
            display_names,
            state,
            group,
            chain_len,
            extremities: extremities.collect(),
            memberships,
            create_event,
        });
        Ok(())
    }

    /// Runs one command against the in-memory state; on error its effects are rolled back.
    async fn run_command(&mut self, submission: &Submission) -> Result<Outcome, Error> {
        let mut new_room = None;
        if let Submission::Create { version, .. } = submission {
            if self.loaded.is_some()
                || self.shared.db.room(self.room_id.as_str()).await.map_err(Error::from)?.is_some()
            {
                return Err(Error::new(ErrorKind::RoomInUse, "room already exists"));
            }
            self.start_empty(version)?;
        } else if let Submission::Remote { pdus, .. } = submission
            && self.loaded.is_none()
            && self.shared.db.room(self.room_id.as_str()).await.map_err(Error::from)?.is_none()
        {
            // A room this server learns of through its create event.
            let Some((version, room)) = pdus.first().and_then(|p| remote_create(&p.json)) else {
                return Err(Error::not_found("room not found"));
            };
            self.start_empty(&version)?;
            new_room = Some(room);
        } else if let Submission::OutOfBand { .. } = submission
            && self.loaded.is_none()
            && self.shared.db.room(self.room_id.as_str()).await.map_err(Error::from)?.is_none()
        {
            // Nothing to load: the room is not known here.
        } else {
            self.ensure_loaded().await?;
        }
        let mut journal = self.journal();
        let mut outcome = Outcome {
            plan: PersistPlan { new_room: new_room.clone(), ..Default::default() },
            ..Default::default()
        };
        let result = self.run_submission(submission, &mut outcome, &mut journal).await;
        let created = matches!(submission, Submission::Create { .. }) || new_room.is_some();
        // Only an accepted create event founds a room (a rejected one is no room's start).
        let founded = outcome.plan.events.iter().any(|e| {
            e.event_type == "m.room.create"
                && e.state_key.as_deref() == Some("")
                && e.rejected_reason.is_none()
        });
        if created && (result.is_err() || !founded) {
            // The room never came to exist; the next command starts from the database.
            self.loaded = None;
            outcome.plan.new_room = None;
        }
        match result {
            Ok(()) => Ok(outcome),
            Err(err) => {
                if !created {
                    self.rollback(journal);
                }
                Err(err)
            }
        }
    }

    /// An empty in-memory room of `version`, about to be created.
    fn start_empty(&mut self, version: &RoomVersionId) -> Result<(), Error> {
        let rules = versions::rules(version)
            .ok_or_else(|| Error::new(ErrorKind::UnsupportedRoomVersion, "unsupported room version"))?;
        self.loaded = Some(Loaded {
            rules,
            display_names: HashMap::new(),
            state: HashMap::new(),
            group: 0,
            chain_len: MAX_STATE_CHAIN,
            extremities: Vec::new(),
            memberships: HashMap::new(),
            create_event: None,
        });
        Ok(())
    }

    async fn run_submission(
        &mut self,
        submission: &Submission,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        match submission {
            Submission::Create { create, templates, room, aliases, .. } => {
                outcome.plan.new_room = Some(room.clone());
                outcome.plan.aliases = aliases.clone();
                self.authorize_and_append(Arc::new((**create).clone()), None, outcome, journal).await?;
                for template in templates {
                    self.append_template(template, None, outcome, journal).await?;
                }
            }
            Submission::Purge => return Err(Error::internal("a purge cannot be part of a batch")),
            Submission::Remote { pdus, arrival } => self.ingest(pdus, *arrival, outcome, journal).await?,
            Submission::OutOfBand { json, version, unsigned_extra } => {
                self.out_of_band(json, version, unsigned_extra.as_deref(), outcome).await?
            }
            Submission::Events { templates, txn } => {
                if let Some(txn) = txn
                    && let Some(existing) = self.replayed(txn, outcome).await?
                {
                    outcome.pdus.push(existing);
                    return Ok(());
                }
                let last = templates.len().saturating_sub(1);
                for (i, template) in templates.iter().enumerate() {
                    let txn = if i == last { txn.clone() } else { None };
                    self.append_template(template, txn, outcome, journal).await?;
                }
            }
        }
        Ok(())
    }

    /// The event an earlier request with the same transaction id produced (committed, or earlier
    /// in this very batch).
    async fn replayed(&self, txn: &TxnRecord, outcome: &Outcome) -> Result<Option<Arc<Pdu>>, Error> {
        let _ = outcome;
        if let Some(pdu) = self.batch_txns.get(&txn_key(txn)) {
            return Ok(Some(pdu.clone()));
        }
        let existing = self
            .shared
            .db
            .txn_event(&txn.user_id, &txn.device_id, &txn.scope, &txn.txn_id)
            .await
            .map_err(Error::from)?;
        match existing {
            Some(id) => {
                let id = EventId::parse(id).map_err(|e| Error::internal(e.to_string()))?;
                self.shared.cache.get(&id).await
            }
            None => Ok(None),
        }
    }

    fn loaded(&self) -> &Loaded {
        self.loaded.as_ref().expect("room state is loaded before commands run")
    }

    /// Where the command begins, to roll back to. A room with nothing loaded (out-of-band
    /// memberships of an unknown room) has only the batch log to roll back.
    fn journal(&self) -> Journal {
        let l = self.loaded.as_ref();
        Journal {
            log_len: self.batch_log.len(),
            group: l.map_or(0, |l| l.group),
            chain_len: l.map_or(MAX_STATE_CHAIN, |l| l.chain_len),
            extremities: l.map(|l| l.extremities.clone()).unwrap_or_default(),
            state: Vec::new(),
            memberships: Vec::new(),
            create_event: l.and_then(|l| l.create_event.clone()),
            txns: Vec::new(),
        }
    }

    fn rollback(&mut self, journal: Journal) {
        for key in journal.txns {
            self.batch_txns.remove(&key);
        }
        for entry in self.batch_log.drain(journal.log_len..).collect::<Vec<_>>() {
            match entry {
                remote::BatchEntry::Event(id) => {
                    self.batch_pdus.remove(&id);
                    self.batch_info.remove(&id);
                }
                remote::BatchEntry::Group(group) => {
                    self.batch_groups.remove(&group);
                    self.batch_state_maps.remove(&group);
                }
                remote::BatchEntry::Resolution(groups) => {
                    self.batch_resolved.remove(&groups);
                }
            }
        }
        let Some(l) = self.loaded.as_mut() else { return };
        for (key, old) in journal.state.into_iter().rev() {
            match old {
                Some(id) => l.state.insert(key, id),
                None => l.state.remove(&key),
            };
        }
        for (user, old) in journal.memberships.into_iter().rev() {
            match old {
                Some(m) => l.memberships.insert(user, m),
                None => l.memberships.remove(&user),
            };
        }
        l.group = journal.group;
        l.chain_len = journal.chain_len;
        l.extremities = journal.extremities;
        l.create_event = journal.create_event;
    }

    /// Builds a PDU from a template at the room's current position, then authorises and appends it.
    async fn append_template(
        &mut self,
        template: &EventTemplate,
        txn: Option<TxnRecord>,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        self.check_local_template(template, outcome).await?;
        let (rules, room_id, (prev_events, depth)) = {
            let l = self.loaded();
            (l.rules.clone(), self.room_id.clone(), next_placement(&l.extremities))
        };
        let content =
            to_raw_value(&template.content).map_err(|e| Error::bad_json(format!("invalid content: {e}")))?;
        let keys = auth::auth_state_keys(
            &template.kind,
            &template.sender,
            template.state_key.as_deref(),
            &content,
            &rules.authorization,
        )?;
        let auth_ids: Vec<OwnedEventId> =
            keys.iter().filter_map(|k| self.loaded().state.get(k).cloned()).collect();
        let room_for_pdu = Some(&*room_id);
        let references = if event_format::references_carry_hashes(&rules) {
            let ids: Vec<OwnedEventId> = prev_events.iter().chain(&auth_ids).cloned().collect();
            event_format::hashes_of(self.events(&ids).await?.values(), &rules)
        } else {
            Default::default()
        };
        let pdu = build_pdu(
            &self.shared.key,
            &rules,
            template,
            &Placement {
                room_id: room_for_pdu,
                prev_events: &prev_events,
                auth_events: &auth_ids,
                depth,
                origin_server_ts: template.origin_server_ts.unwrap_or_else(homeserver_core::time::now_millis),
                references: &references,
            },
        )?;
        self.authorize_and_append(Arc::new(pdu), txn, outcome, journal).await
    }

    /// The local rules every event of our users passes before it is built: membership changes
    /// only through [`crate::membership`] (and only while the membership it expects still
    /// holds), and content validation ([`validate`]).
    async fn check_local_template(&self, template: &EventTemplate, outcome: &Outcome) -> Result<(), Error> {
        if template.kind == "m.room.member" {
            if !template.membership_vetted {
                return Err(Rejection::LocalRule(
                    "membership changes go through the membership endpoints".into(),
                )
                .into());
            }
            if let Some(expected) = template.expect_membership {
                let target = template.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
                let current = target.and_then(|t| self.loaded().memberships.get(&t).cloned());
                if current.as_deref() != Some(expected) {
                    return Err(Rejection::LocalRule("the membership changed meanwhile".into()).into());
                }
            }
        }
        let mut current_aliases = Vec::new();
        if template.kind == "m.room.canonical_alias"
            && let Some(id) =
                self.loaded().state.get(&(StateEventType::RoomCanonicalAlias, String::new())).cloned()
            && let Some(current) = self.events(std::slice::from_ref(&id)).await?.remove(&id)
        {
            current_aliases = validate::listed_aliases(&current.content_value());
        }
        let ctx = validate::Context {
            db: &self.shared.db,
            server_name: self.shared.key.server_name(),
            room_id: &self.room_id,
            claimed_aliases: &outcome.plan.aliases,
            current_aliases: &current_aliases,
        };
        validate::local_event(&ctx, template).await
    }

    /// Checks the auth rules for `pdu` against the current state and, if it passes, applies it to
    /// the in-memory state and adds it to the outcome's plan.
    async fn authorize_and_append(
        &mut self,
        pdu: Arc<Pdu>,
        txn: Option<TxnRecord>,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<(), Error> {
        let rules = self.loaded().rules.clone();
        // A malformed event is the client's bad JSON, not a forbidden one.
        auth::auth_state_keys(
            pdu.kind.to_string().as_str(),
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )?;
        let own = self.events(&pdu.auth_events).await?;
        let events = self.auth_events_at(self.loaded().group, &pdu, &own).await?;
        auth::check(&rules.authorization, &pdu, &events)?;
        self.check_relation(&pdu).await?;
        let redacts = self.redaction_effect(&pdu).await?;

        // Accepted: give it a stream position and apply it.
        let reservation = self.shared.stream.reserve(1).await?;
        let pos = reservation.first() as i64;
        let applied = self.apply_state(&pdu, pos, outcome, journal).await?;
        self.advance_extremities(&pdu, applied.state_after, outcome);
        if let Some(txn) = &txn {
            let key = txn_key(txn);
            journal.txns.push(key.clone());
            self.batch_txns.insert(key, pdu.clone());
        }
        outcome.woken.push(pdu.sender.clone());
        self.derive_effects(&pdu, pos, outcome).await?;
        outcome.plan.events.push(NewEvent {
            unsigned_extra: applied.unsigned_extra,
            redacts: redacts.map(|r| r.to_string()),
            txn,
            ..new_event(&pdu, pos, (applied.state_before, applied.state_after))
        });
        outcome.reservations.push(reservation);
        self.batch_pdus.insert(pdu.event_id.clone(), pdu.clone());
        let info = remote::DagInfo { state_after: applied.state_after, outlier: false, live: true };
        self.batch_info.insert(pdu.event_id.clone(), info);
        self.batch_log.push(remote::BatchEntry::Event(pdu.event_id.clone()));
        outcome.pdus.push(pdu);
        Ok(())
    }

    /// Applies an accepted event to the room's state: a state event replaces its key, gets a new
    /// state group (a delta on the current one) and changes the current state through the plan's
    /// state delta, from which storage derives `current_state` and `memberships`.
    async fn apply_state(
        &mut self,
        pdu: &Pdu,
        pos: i64,
        outcome: &mut Outcome,
        journal: &mut Journal,
    ) -> Result<AppliedState, Error> {
        let state_before = self.loaded().group;
        let Some(state_key) = &pdu.state_key else {
            return Ok(AppliedState { state_before, state_after: state_before, unsigned_extra: None });
        };
        let event_id = pdu.event_id.clone();
        let key: StateKey = (pdu.kind.to_string().into(), state_key.clone());
        let previous = self.loaded().state.get(&key).cloned();
        let mut unsigned_extra = None;
        if let Some(prev_id) = &previous
            && let Some(prev) = self.events(std::slice::from_ref(prev_id)).await?.remove(prev_id)
        {
            unsigned_extra = Some(
                serde_json::json!({
                    "prev_content": serde_json::from_str::<serde_json::Value>(prev.content.get())
                        .unwrap_or_default(),
                    "prev_sender": prev.sender,
                    "replaces_state": prev_id,
                })
                .to_string(),
            );
        }
        let group_id = self.shared.state_group_ids.next(&self.shared.db).await?;
        journal.state.push((key.clone(), previous));
        let l = self.loaded.as_mut().expect("loaded");
        l.state.insert(key, event_id.clone());
        let change = (pdu.kind.to_string(), state_key.clone(), Some(event_id.to_string()));
        let base = state_groups::Base { group: l.group, chain_len: l.chain_len };
        let group = state_groups::layout(
            group_id,
            &base,
            vec![change],
            || l.state.iter().map(|((t, k), id)| (t.to_string(), k.clone(), Some(id.to_string()))).collect(),
            Vec::new(),
        );
        l.group = group_id;
        l.chain_len = group.chain_len;
        outcome.plan.state_groups.push(group);
        outcome.plan.current_state_group = Some(group_id);
        outcome.plan.state_history.push((pos, group_id));
        let mut membership = None;
        if pdu.kind == ruma::events::TimelineEventType::RoomCreate {
            l.create_event = Some(event_id.clone());
        }
        if pdu.kind == ruma::events::TimelineEventType::RoomMember
            && let Ok(target) = UserId::parse(state_key.as_str())
        {
            match pdu.content_str("displayname") {
                Some(name) => l.display_names.insert(target.clone(), name),
                None => l.display_names.remove(&target),
            };
            let value = pdu.content_str("membership").unwrap_or_else(|| "leave".into());
            let old = l.memberships.insert(target.clone(), value.clone());
            journal.memberships.push((target.clone(), old));
            membership = Some(MembershipUpdate {
                membership: value,
                stream_pos: pos,
                displayname: pdu.content_str("displayname"),
                avatar_url: pdu.content_str("avatar_url"),
            });
            outcome.woken.push(target);
        }
        if pdu.kind == ruma::events::TimelineEventType::RoomJoinRules && state_key.is_empty() {
            outcome.plan.join_rule = pdu.content_str("join_rule");
        }
        if pdu.kind == ruma::events::TimelineEventType::RoomHistoryVisibility && state_key.is_empty() {
            outcome.plan.history_visibility = Some(pdu.content_str("history_visibility").unwrap_or_default());
        }
        outcome.plan.state_delta.push(StateChange {
            event_type: pdu.kind.to_string(),
            state_key: state_key.clone(),
            event_id: Some(event_id.to_string()),
            membership,
        });
        Ok(AppliedState { state_before, state_after: group_id, unsigned_extra })
    }

    /// The forward extremities after an accepted event: the old ones and the event, minus what
    /// it references.
    fn advance_extremities(&mut self, pdu: &Pdu, group: i64, outcome: &mut Outcome) {
        let l = self.loaded.as_mut().expect("loaded");
        l.extremities.retain(|x| !pdu.prev_events.contains(&x.id));
        l.extremities.push(Extremity { id: pdu.event_id.clone(), depth: pdu.depth, group });
        outcome.plan.extremities = Some(l.extremities.iter().map(|x| x.id.to_string()).collect());
    }

    /// What an accepted event means for readers, derived in the same transaction: its relation,
    /// its search text and whom it notifies.
    async fn derive_effects(&mut self, pdu: &Pdu, pos: i64, outcome: &mut Outcome) -> Result<(), Error> {
        if let Some(relation) = derive::relation(pdu, pos) {
            if let Some(key) = annotation_key(&relation) {
                self.batch_annotations.insert(key);
            }
            outcome.plan.relations.push(relation);
        }
        if let Some(search) = derive::search_row(pdu, pos) {
            outcome.plan.search.push(search);
        }
        let push = self.push_actions(pdu, pos).await?;
        outcome.plan.push_actions.extend(push.rows);
        outcome.plan.push_broadcasts.extend(push.broadcast);
        Ok(())
    }

    /// The event a local redaction redacts. The rule is [`redaction::takes_effect`]; a local
    /// redaction that would not take effect is refused (as Synapse does) rather than stored
    /// without effect, so the client learns it was not allowed.
    async fn redaction_effect(&self, pdu: &Pdu) -> Result<Option<OwnedEventId>, Error> {
        let Some(target) = redaction::target(pdu) else { return Ok(None) };
        let target = target.to_owned();
        let Some(original) = self.events(std::slice::from_ref(&target)).await?.remove(&target) else {
            return Err(Error::not_found("event not found"));
        };
        if original.room_id != pdu.room_id {
            return Err(Error::invalid_param("cannot redact an event of another room"));
        }
        if !redaction::takes_effect(pdu, &original, &self.power_levels_now().await?, redaction::Origin::Local)
        {
            return Err(Rejection::LocalRule("You don't have permission to redact this event".into()).into());
        }
        Ok(Some(target))
    }

    /// The room's power levels in the actor's current state.
    async fn power_levels_now(&self) -> Result<PowerLevels, Error> {
        let l = self.loaded();
        let ids: Vec<OwnedEventId> = [
            l.state.get(&(StateEventType::RoomCreate, String::new())),
            l.state.get(&(StateEventType::RoomPowerLevels, String::new())),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let events = self.events(&ids).await?;
        let lookup = |ty: StateEventType| {
            l.state.get(&(ty, String::new())).and_then(|id| events.get(id)).map(|p| &**p)
        };
        Ok(PowerLevels::from_events(
            &l.rules.authorization,
            lookup(StateEventType::RoomCreate),
            lookup(StateEventType::RoomPowerLevels),
        ))
    }

    /// Relation rules for locally sent events, as Synapse applies them: the related event, when
    /// known, is in the same room; a thread cannot start from an event that itself relates to
    /// another; and one reaction per user, target and key (`M_DUPLICATE_ANNOTATION`).
    async fn check_relation(&self, pdu: &Pdu) -> Result<(), Error> {
        let Some(rel) = derive::relation(pdu, 0) else { return Ok(()) };
        let parent = self.shared.db.event(&rel.relates_to).await.map_err(Error::from)?;
        if let Some(parent) = &parent {
            if parent.room_id != pdu.room_id.as_str() {
                return Err(Error::bad_json("Relations must be in the same room"));
            }
            if rel.rel_type == "m.thread" {
                let parent_rel = serde_json::from_str::<serde_json::Value>(&parent.json).ok().and_then(|v| {
                    v.get("content")?.get("m.relates_to")?.get("rel_type")?.as_str().map(str::to_owned)
                });
                match parent_rel.as_deref() {
                    Some("m.thread") => {
                        return Err(Error::bad_json("Cannot start threads from an event in a thread"));
                    }
                    Some(_) => {
                        return Err(Error::bad_json("Cannot start threads from an event with a relation"));
                    }
                    None => {}
                }
            }
        }
        let (Some(key), Some(batch_key)) = (&rel.aggregation_key, annotation_key(&rel)) else {
            return Ok(());
        };
        if self.batch_annotations.contains(&batch_key)
            || self
                .shared
                .db
                .has_annotation(&rel.relates_to, &rel.sender, &rel.event_type, key)
                .await
                .map_err(Error::from)?
        {
            return Err(Error::new(ErrorKind::DuplicateAnnotation, "you already reacted with this key"));
        }
        Ok(())
    }

    /// Evaluates the members' push rules for an accepted event: who it notifies or highlights.
    /// The common outcome (a stand-in member with the default rules) becomes one broadcast row;
    /// members it may not fit — own rules, invited or mentioned — are evaluated fully and
    /// get their own row where their outcome differs.
    async fn push_actions(&self, pdu: &Pdu, pos: i64) -> Result<PushOutcome, Error> {
        let l = self.loaded();
        // Push rules are this server's users' business: other servers notify their own.
        let ours = self.shared.key.server_name();
        let mut targets: Vec<OwnedUserId> = l
            .memberships
            .iter()
            .filter(|(u, m)| m.as_str() == "join" && **u != pdu.sender && u.server_name() == ours)
            .map(|(u, _)| u.clone())
            .collect();
        // An invitee is not a member yet, but their invite should notify them.
        let mut invitee = None;
        if pdu.kind == ruma::events::TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            && target != pdu.sender
            && target.server_name() == ours
            && !targets.contains(&target)
        {
            invitee = Some(target.clone());
            targets.push(target);
        }
        if targets.is_empty() {
            return Ok(PushOutcome::default());
        }
        let Some(flat) = push::flatten(&pdu.json) else { return Ok(PushOutcome::default()) };
        let power_content = match l.state.get(&(StateEventType::RoomPowerLevels, String::new())) {
            Some(id) => self.events(std::slice::from_ref(id)).await?.remove(id).map(|p| p.content_value()),
            None => None,
        };
        let creators = match &l.create_event {
            Some(id) if l.rules.authorization.explicitly_privilege_room_creators => {
                match self.events(std::slice::from_ref(id)).await?.remove(id) {
                    Some(create) => {
                        let mut c = vec![create.sender.clone()];
                        if let Some(extra) =
                            create.content_value().get("additional_creators").and_then(|v| v.as_array())
                        {
                            c.extend(extra.iter().filter_map(|u| UserId::parse(u.as_str()?).ok()));
                        }
                        c
                    }
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let room = push::RoomPushContext {
            room_id: self.room_id.clone(),
            member_count: l.memberships.values().filter(|m| m.as_str() == "join").count() as u64,
            power_levels: Some(push::power_levels_ctx(
                power_content.as_ref(),
                &l.rules.authorization,
                creators,
            )),
        };
        let rulesets = self.shared.push.rulesets(&targets).await?;
        let thread_id = derive::thread_of(pdu);
        let triggers = push::PersonalTriggers::of(pdu.state_key.as_deref(), &pdu.content_value());
        let (generic_user, generic_rules) = self.shared.push.generic();
        let generic =
            push::actions_for(&flat, generic_rules, &room, generic_user, generic_user.localpart()).await;
        let generic_notifies = generic.iter().any(ruma::push::Action::should_notify);
        let to_json =
            |actions: &[ruma::push::Action]| serde_json::to_string(actions).unwrap_or_else(|_| "[]".into());
        let generic_json = to_json(&generic);
        let mut outcome = PushOutcome::default();
        if generic_notifies {
            outcome.broadcast = Some(PushBroadcastRow {
                event_id: pdu.event_id.to_string(),
                stream_pos: pos,
                sender: pdu.sender.to_string(),
                highlight: generic.iter().any(ruma::push::Action::is_highlight),
                thread_id: thread_id.clone(),
                actions: generic_json.clone(),
            });
        }
        for user in &targets {
            let Some(rules) = rulesets.get(user) else { continue };
            let personal = rules.custom || invitee.as_ref() == Some(user) || triggers.may_concern(user);
            if !personal {
                continue; // The broadcast row (or its absence) is right for this member.
            }
            let name = l.display_names.get(user).map(String::as_str).unwrap_or_else(|| user.localpart());
            let actions = push::actions_for(&flat, &rules.rules, &room, user, name).await;
            let notify = actions.iter().any(ruma::push::Action::should_notify);
            let covered = generic_notifies && invitee.as_ref() != Some(user);
            // A member's own row only where the broadcast would be wrong for them.
            if (covered && to_json(&actions) == generic_json) || (!covered && !notify) {
                continue;
            }
            outcome.rows.push(PushActionRow {
                user_id: user.to_string(),
                event_id: pdu.event_id.to_string(),
                stream_pos: pos,
                notify,
                highlight: actions.iter().any(ruma::push::Action::is_highlight),
                thread_id: thread_id.clone(),
                actions: to_json(&actions),
            });
        }
        Ok(outcome)
    }

    /// Events by id from this batch, the cache or the database.
    async fn events(&self, ids: &[OwnedEventId]) -> Result<HashMap<OwnedEventId, Arc<Pdu>>, Error> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut rest = Vec::new();
        for id in ids {
            match self.batch_pdus.get(id) {
                Some(pdu) => {
                    found.insert(id.clone(), pdu.clone());
                }
                None => rest.push(id.clone()),
            }
        }
        if !rest.is_empty() {
            found.extend(self.shared.cache.get_many(&rest).await?);
        }
        Ok(found)
    }
}

/// The row of an event accepted into the timeline at `pos` with the state groups around it;
/// callers add what is particular to them (transaction id, redaction, status).
pub(crate) fn new_event(pdu: &Pdu, pos: i64, (state_before, state_after): (i64, i64)) -> NewEvent {
    NewEvent {
        stream_pos: pos,
        event_id: pdu.event_id.to_string(),
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        sender: pdu.sender.to_string(),
        depth: pdu.depth.min(i64::MAX as u64) as i64,
        origin_server_ts: u64::from(pdu.origin_server_ts.get()) as i64,
        json: pdu.json.to_string(),
        unsigned_extra: None,
        state_before,
        state_after,
        redacts: None,
        txn: None,
        prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
        auth_events: pdu.auth_events.iter().map(|e| e.to_string()).collect(),
        outlier: false,
        soft_failed: false,
        rejected_reason: None,
        replaces_outlier: false,
    }
}

/// The prev events and depth of a new local event: the deepest forward extremities (all of
/// them up to [`MAX_PREV_EVENTS`], so forks merge), and one more than the deepest of those.
fn next_placement(extremities: &[Extremity]) -> (Vec<OwnedEventId>, u64) {
    let mut chosen: Vec<&Extremity> = extremities.iter().collect();
    chosen.sort_by_key(|x| std::cmp::Reverse(x.depth));
    chosen.truncate(MAX_PREV_EVENTS);
    let depth = chosen.iter().map(|x| x.depth).max().map_or(1, |d| d.saturating_add(1)).min(MAX_DEPTH);
    (chosen.into_iter().map(|x| x.id.clone()).collect(), depth)
}

/// The version and room record a remote `m.room.create` event founds (unchecked: the remote
/// path checks the event itself).
fn remote_create(json: &str) -> Option<(RoomVersionId, NewRoom)> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    if value.get("type")?.as_str()? != "m.room.create" {
        return None;
    }
    let version = value.get("content")?.get("room_version").and_then(|v| v.as_str()).unwrap_or("1");
    let room = NewRoom {
        room_version: version.to_owned(),
        creator: value.get("sender")?.as_str()?.to_owned(),
        created_ts: value.get("origin_server_ts")?.as_i64()?,
        published: false,
    };
    Some((RoomVersionId::try_from(version).ok()?, room))
}

fn txn_key(txn: &TxnRecord) -> String {
    format!("{}\u{0}{}\u{0}{}\u{0}{}", txn.user_id, txn.device_id, txn.scope, txn.txn_id)
}

fn persist_error(err: StorageError) -> Error {
    match err {
        StorageError::AliasTaken => Error::new(ErrorKind::RoomInUse, "room alias already taken"),
        other => Error::from(other),
    }
}
