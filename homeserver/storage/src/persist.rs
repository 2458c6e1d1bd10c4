//! Applying a [`PersistPlan`]: a batch of room events with everything they change, in one
//! transaction.
//!
//! The room pipeline decides *what* changes (events, their DAG edges, new state groups, the new
//! current state and forward extremities, membership, redactions, transaction ids, aliases); this
//! module only writes it. Either all of it commits or none of it does, so a crash at any moment
//! leaves the room exactly as it was before the batch or exactly as after it.

use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::{Db, Result, StorageError, conflict_or};

/// A room being created by this batch.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub room_version: String,
    pub creator: String,
    pub created_ts: i64,
    pub published: bool,
}

/// A client transaction id to remember for idempotency.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    pub user_id: String,
    pub device_id: String,
    pub scope: String,
    pub txn_id: String,
}

/// One event to persist.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub stream_pos: i64,
    pub event_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU, exactly as it is signed.
    pub json: String,
    /// Server-computed `unsigned` additions for clients (e.g. `prev_content`), kept apart from the
    /// PDU so the PDU text stays byte-identical.
    pub unsigned_extra: Option<String>,
    pub state_before: i64,
    pub state_after: i64,
    pub redacts: Option<String>,
    pub txn: Option<TxnRecord>,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    /// Known only as the auth or state of other events (no place in the timeline).
    pub outlier: bool,
    /// Failed the auth rules against the room's current state: kept, never shown.
    pub soft_failed: bool,
    /// Failed the auth rules against its own auth events or the state before it: kept with the
    /// reason, never part of any state.
    pub rejected_reason: Option<String>,
    /// The event is stored as an outlier and now takes its place in the DAG (de-outliered):
    /// the outlier row is replaced.
    pub replaces_outlier: bool,
}

/// A change to a room's current state. Derived tables (`current_state`, `memberships`, the
/// room's join rule) are written only from these, so they cannot drift from the state.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub event_type: String,
    pub state_key: String,
    /// The event now holding the key; `None` removes the key (state resolution can).
    pub event_id: Option<String>,
    /// For member keys: the membership the change gives the user and the position it takes
    /// effect at (its event's, or the merge's that brought it back).
    pub membership: Option<MembershipUpdate>,
}

/// What a member key's change means for the `memberships` table.
#[derive(Debug, Clone)]
pub struct MembershipUpdate {
    pub membership: String,
    pub stream_pos: i64,
    /// The member event's display name and avatar, for the user directory (how users of other
    /// servers are found).
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// A new state group: the delta against `prev_group` (or a full snapshot when it is `None`).
/// An entry without event id removes the key; a resolved state names every state it merged in
/// `parents` (the first is `prev_group`).
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    pub group_id: i64,
    pub prev_group: Option<i64>,
    pub chain_len: i64,
    pub entries: Vec<StateGroupEntry>,
    pub parents: Vec<i64>,
}

/// `(type, state_key, event_id)` of a state group; no event id removes the key.
pub type StateGroupEntry = (String, String, Option<String>);

/// Who an event notifies, as the push rules decided.
#[derive(Debug, Clone)]
pub struct PushActionRow {
    pub user_id: String,
    pub event_id: String,
    pub stream_pos: i64,
    /// False for a member a broadcast row would otherwise notify.
    pub notify: bool,
    pub highlight: bool,
    pub thread_id: Option<String>,
    /// The push rule actions (JSON array).
    pub actions: String,
}

/// Push actions for every member of the room but the sender and those with their own row.
#[derive(Debug, Clone)]
pub struct PushBroadcastRow {
    pub event_id: String,
    pub stream_pos: i64,
    pub sender: String,
    pub highlight: bool,
    pub thread_id: Option<String>,
    pub actions: String,
}

/// An `m.relates_to` link from an event to another.
#[derive(Debug, Clone)]
pub struct RelationRow {
    pub event_id: String,
    pub relates_to: String,
    pub rel_type: String,
    pub event_type: String,
    pub sender: String,
    /// The reaction key of an `m.annotation`.
    pub aggregation_key: Option<String>,
    pub stream_pos: i64,
}

/// Searchable text of an event, already tokenised for the index.
#[derive(Debug, Clone)]
pub struct SearchRow {
    pub stream_pos: i64,
    /// `content.body`, `content.name` or `content.topic`.
    pub key: String,
    pub text: String,
}

/// Everything one batch changes in one room.
#[derive(Debug, Clone, Default)]
pub struct PersistPlan {
    pub room_id: String,
    pub new_room: Option<NewRoom>,
    pub events: Vec<NewEvent>,
    pub state_groups: Vec<NewStateGroup>,
    /// How the room's current state changes, in order (a later change of a key wins).
    pub state_delta: Vec<StateChange>,
    /// The room's current state group after the batch.
    pub current_state_group: Option<i64>,
    /// Every change of the current state group in the batch, as `(live position, group)`, for
    /// `room_state_history` (changes at positions outside the live stream are not recorded).
    pub state_history: Vec<(i64, i64)>,
    /// The room's forward extremities after the batch (replaces the stored set).
    pub extremities: Option<Vec<String>>,
    /// Backward extremities the batch resolves (events now held) and opens (prev events not
    /// held yet).
    pub backward_extremities_closed: Vec<String>,
    pub backward_extremities_opened: Vec<String>,
    /// Aliases to create with the batch, `(alias, creator)`; a taken alias aborts the batch.
    pub aliases: Vec<(String, String)>,
    pub push_actions: Vec<PushActionRow>,
    pub push_broadcasts: Vec<PushBroadcastRow>,
    pub relations: Vec<RelationRow>,
    pub search: Vec<SearchRow>,
    /// The room's join rule when the batch changes it.
    pub join_rule: Option<String>,
    /// The room's history visibility when the batch changes it ("" for a setting without one).
    pub history_visibility: Option<String>,
    /// Memberships of this server's users in a room it has no state of (a remote invite, its
    /// rejection, a knock): written to `memberships` directly, the one exception to "derived
    /// from the current state" — there is none.
    pub out_of_band: Vec<OutOfBandMembership>,
}

/// A local user's membership of a room this server holds no state of, from an event stored
/// out of band (outside the DAG, at a live position so syncs see it).
#[derive(Debug, Clone)]
pub struct OutOfBandMembership {
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_pos: i64,
}

impl PersistPlan {
    /// Folds another plan of the same room (a later command of the same batch) into this one.
    pub fn merge(&mut self, from: PersistPlan) {
        if from.new_room.is_some() {
            self.new_room = from.new_room;
        }
        self.events.extend(from.events);
        self.state_groups.extend(from.state_groups);
        self.state_delta.extend(from.state_delta);
        if from.current_state_group.is_some() {
            self.current_state_group = from.current_state_group;
        }
        self.state_history.extend(from.state_history);
        if from.extremities.is_some() {
            self.extremities = from.extremities;
        }
        self.backward_extremities_closed.extend(from.backward_extremities_closed);
        self.backward_extremities_opened.extend(from.backward_extremities_opened);
        self.aliases.extend(from.aliases);
        self.push_actions.extend(from.push_actions);
        self.push_broadcasts.extend(from.push_broadcasts);
        self.relations.extend(from.relations);
        self.search.extend(from.search);
        if from.join_rule.is_some() {
            self.join_rule = from.join_rule;
        }
        if from.history_visibility.is_some() {
            self.history_visibility = from.history_visibility;
        }
        self.out_of_band.extend(from.out_of_band);
    }
}

/// Text taken from an event's content for a column of its own, without U+0000: another server's
/// event may carry it (escaped in the event's JSON, which is stored as is), and PostgreSQL
/// refuses it in text, which would fail the whole batch.
fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

impl Db {
    /// Writes the whole plan in one transaction. A taken alias surfaces as
    /// `StorageError::AliasTaken`, any other unique violation (a replayed transaction id, a
    /// duplicate event) as `StorageError::Conflict`, and nothing is written.
    pub async fn persist(&self, plan: &PersistPlan) -> Result<()> {
        self.persist_many(std::slice::from_ref(plan)).await
    }

    /// Writes several plans (of different rooms) in one transaction: all of them or none.
    pub async fn persist_many(&self, plans: &[PersistPlan]) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for plan in plans {
            apply(&mut tx, plan, self.engine()).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// `($first, …), (…)` for `rows` rows of `columns` placeholders.
pub(crate) fn values(columns: usize, rows: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&n.to_string());
            n += 1;
        }
        out.push(')');
    }
    out
}

/// Rows per multi-row INSERT: about 1,000 bound parameters. SQLite finds each parameter's name
/// by a linear scan, so binding costs grow with the square of a statement's parameters (a
/// 30,000-parameter snapshot of a large room's state took hundreds of milliseconds to bind);
/// PostgreSQL pays a round trip per statement, negligible at this size.
pub(crate) fn chunk_rows(columns: usize) -> usize {
    (1_000 / columns).max(1)
}

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Runs `INSERT INTO {head} VALUES … {tail}` for `rows`, chunked; `bind` binds one row.
pub(crate) async fn insert_rows<'r, T: 'r>(
    tx: &mut Transaction<'_, Any>,
    head: &str,
    tail: &str,
    columns: usize,
    rows: &'r [T],
    bind: impl for<'q> Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<()> {
    for chunk in rows.chunks(chunk_rows(columns)) {
        let sql = format!("INSERT INTO {head} VALUES {} {tail}", values(columns, chunk.len()));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut **tx).await.map_err(conflict_or)?;
    }
    Ok(())
}

/// Keeps the last entry per key (a multi-row upsert may not touch one row twice).
fn last_per_key<T: Clone, K: Eq + std::hash::Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<T> = items.iter().rev().filter(|i| seen.insert(key(i))).cloned().collect();
    out.reverse();
    out
}

/// Writes out-of-band memberships (the last one per user wins).
async fn apply_out_of_band(
    tx: &mut Transaction<'_, Any>,
    room_id: &str,
    rows: &[OutOfBandMembership],
) -> Result<()> {
    let rows = last_per_key(rows, |m| m.user_id.clone());
    insert_rows(
        tx,
        "memberships (room_id, user_id, membership, event_id, stream_pos, forgotten, joined_pos)",
        "ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
         event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0, joined_pos = 0",
        7,
        &rows,
        |q, m| {
            q.bind(room_id)
                .bind(m.user_id.as_str())
                .bind(m.membership.as_str())
                .bind(m.event_id.as_str())
                .bind(m.stream_pos)
                .bind(0_i64)
                .bind(0_i64)
        },
    )
    .await
}

/// Applies state changes to `current_state` and `memberships`: the last change of each key
/// wins; a change without event removes the key (and a member key's membership row).
async fn apply_state_delta(
    tx: &mut Transaction<'_, Any>,
    room_id: &str,
    delta: &[StateChange],
) -> Result<()> {
    let changes = last_per_key(delta, |c| (c.event_type.clone(), c.state_key.clone()));
    let (set, removed): (Vec<&StateChange>, Vec<&StateChange>) =
        changes.iter().partition(|c| c.event_id.is_some());
    for change in &removed {
        sqlx::query("DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
            .bind(room_id)
            .bind(&change.event_type)
            .bind(&change.state_key)
            .execute(&mut **tx)
            .await?;
        if change.event_type == "m.room.member" {
            sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(&change.state_key)
                .execute(&mut **tx)
                .await?;
        }
    }
    insert_rows(
        tx,
        "current_state (room_id, event_type, state_key, event_id)",
        "ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
        4,
        &set,
        |q, c| {
            q.bind(room_id).bind(c.event_type.as_str()).bind(c.state_key.as_str()).bind(c.event_id.as_deref())
        },
    )
    .await?;
    let memberships: Vec<(&StateChange, &MembershipUpdate)> =
        set.iter().filter_map(|c| Some((*c, c.membership.as_ref()?))).collect();
    insert_rows(
        tx,
        "memberships (room_id, user_id, membership, event_id, stream_pos, forgotten, joined_pos, \
         displayname, avatar_url)",
        "ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
         event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0, \
         displayname = excluded.displayname, avatar_url = excluded.avatar_url, \
         joined_pos = CASE WHEN excluded.membership <> 'join' THEN 0 \
                           WHEN memberships.membership = 'join' THEN memberships.joined_pos \
                           ELSE excluded.joined_pos END",
        9,
        &memberships,
        |q, (c, m)| {
            let joined_pos = if m.membership == "join" { m.stream_pos } else { 0 };
            q.bind(room_id)
                .bind(c.state_key.as_str())
                .bind(m.membership.as_str())
                .bind(c.event_id.as_deref())
                .bind(m.stream_pos)
                .bind(0_i64)
                .bind(joined_pos)
                .bind(m.displayname.as_deref().map(without_nul))
                .bind(m.avatar_url.as_deref().map(without_nul))
        },
    )
    .await
}

async fn apply(tx: &mut Transaction<'_, Any>, plan: &PersistPlan, engine: crate::Engine) -> Result<()> {
    let room_id = plan.room_id.as_str();
    if let Some(room) = &plan.new_room {
        sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(room_id)
        .bind(&room.room_version)
        .bind(&room.creator)
        .bind(room.published as i64)
        .bind(room.created_ts)
        .execute(&mut **tx)
        .await
        .map_err(conflict_or)?;
    }
    let created_ts = plan.events.first().map(|e| e.origin_server_ts).unwrap_or(0);
    insert_rows(
        tx,
        "room_aliases (alias, room_id, creator, created_ts)",
        "",
        4,
        &plan.aliases,
        |q, (alias, creator)| q.bind(alias.as_str()).bind(room_id).bind(creator.as_str()).bind(created_ts),
    )
    .await
    .map_err(|e| match e {
        StorageError::Conflict => StorageError::AliasTaken,
        other => other,
    })?;
    insert_rows(
        tx,
        "state_groups (group_id, room_id, prev_group, chain_len)",
        "",
        4,
        &plan.state_groups,
        |q, g| q.bind(g.group_id).bind(room_id).bind(g.prev_group).bind(g.chain_len),
    )
    .await?;
    let entries: Vec<(i64, &StateGroupEntry)> =
        plan.state_groups.iter().flat_map(|g| g.entries.iter().map(move |e| (g.group_id, e))).collect();
    insert_rows(
        tx,
        "state_group_entries (group_id, event_type, state_key, event_id)",
        "",
        4,
        &entries,
        |q, (group, (ty, key, id))| q.bind(*group).bind(ty.as_str()).bind(key.as_str()).bind(id.as_deref()),
    )
    .await?;
    let parents: Vec<(i64, i64)> =
        plan.state_groups.iter().flat_map(|g| g.parents.iter().map(move |p| (g.group_id, *p))).collect();
    insert_rows(tx, "state_group_parents (group_id, parent_group)", "", 2, &parents, |q, (g, p)| {
        q.bind(*g).bind(*p)
    })
    .await?;
    // A de-outliered event keeps its row (and whatever redacted it meanwhile): it takes its
    // place in the DAG by an update.
    for ev in plan.events.iter().filter(|e| e.replaces_outlier) {
        sqlx::query(
            "UPDATE events SET stream_pos = $2, depth = $3, state_before = $4, state_after = $5, outlier = 0, \
             soft_failed = $6, rejected = $7, rejected_reason = $8, redacts = $9 WHERE event_id = $1 AND outlier = 1",
        )
        .bind(&ev.event_id)
        .bind(ev.stream_pos)
        .bind(ev.depth)
        .bind(ev.state_before)
        .bind(ev.state_after)
        .bind(ev.soft_failed as i64)
        .bind(ev.rejected_reason.is_some() as i64)
        .bind(ev.rejected_reason.as_deref())
        .bind(ev.redacts.as_deref())
        .execute(&mut **tx)
        .await?;
    }
    let new_events: Vec<&NewEvent> = plan.events.iter().filter(|e| !e.replaces_outlier).collect();
    insert_rows(
        tx,
        "events (stream_pos, event_id, room_id, event_type, state_key, sender, depth, origin_server_ts, \
         json, unsigned_extra, state_before, state_after, redacts, txn_device, txn_id, outlier, soft_failed, \
         rejected, rejected_reason)",
        "",
        19,
        &new_events,
        |q, ev| {
            q.bind(ev.stream_pos)
                .bind(ev.event_id.as_str())
                .bind(room_id)
                .bind(ev.event_type.as_str())
                .bind(ev.state_key.as_deref())
                .bind(ev.sender.as_str())
                .bind(ev.depth)
                .bind(ev.origin_server_ts)
                .bind(ev.json.as_str())
                .bind(ev.unsigned_extra.as_deref())
                .bind(ev.state_before)
                .bind(ev.state_after)
                .bind(ev.redacts.as_deref())
                .bind(ev.txn.as_ref().map(|t| t.device_id.as_str()))
                .bind(ev.txn.as_ref().map(|t| t.txn_id.as_str()))
                .bind(ev.outlier as i64)
                .bind(ev.soft_failed as i64)
                .bind(ev.rejected_reason.is_some() as i64)
                .bind(ev.rejected_reason.as_deref())
        },
    )
    .await?;
    let edges: Vec<(&str, &str)> = plan
        .events
        .iter()
        .flat_map(|ev| ev.prev_events.iter().map(move |p| (ev.event_id.as_str(), p.as_str())))
        .collect();
    insert_rows(
        tx,
        "event_edges (event_id, prev_event_id)",
        "ON CONFLICT DO NOTHING",
        2,
        &edges,
        |q, (e, p)| q.bind(*e).bind(*p),
    )
    .await?;
    let auth: Vec<(&str, &str)> = plan
        .events
        .iter()
        .flat_map(|ev| ev.auth_events.iter().map(move |a| (ev.event_id.as_str(), a.as_str())))
        .collect();
    insert_rows(
        tx,
        "event_auth (event_id, auth_event_id)",
        "ON CONFLICT DO NOTHING",
        2,
        &auth,
        |q, (e, a)| q.bind(*e).bind(*a),
    )
    .await?;
    // Out-of-band rows first: a membership the batch's state gives the same user (a join
    // placed after an invite in one batch) must win.
    apply_out_of_band(tx, room_id, &plan.out_of_band).await?;
    apply_state_delta(tx, room_id, &plan.state_delta).await?;
    insert_rows(
        tx,
        "event_push_actions (user_id, room_id, event_id, stream_pos, highlight, thread_id, actions, notify)",
        "ON CONFLICT DO NOTHING",
        8,
        &plan.push_actions,
        |q, a| {
            q.bind(a.user_id.as_str())
                .bind(room_id)
                .bind(a.event_id.as_str())
                .bind(a.stream_pos)
                .bind(a.highlight as i64)
                .bind(a.thread_id.as_deref())
                .bind(a.actions.as_str())
                .bind(a.notify as i64)
        },
    )
    .await?;
    insert_rows(
        tx,
        "event_push_broadcast (room_id, event_id, stream_pos, sender, highlight, thread_id, actions)",
        "ON CONFLICT DO NOTHING",
        7,
        &plan.push_broadcasts,
        |q, b| {
            q.bind(room_id)
                .bind(b.event_id.as_str())
                .bind(b.stream_pos)
                .bind(b.sender.as_str())
                .bind(b.highlight as i64)
                .bind(b.thread_id.as_deref())
                .bind(b.actions.as_str())
        },
    )
    .await?;
    insert_rows(
        tx,
        "event_relations (event_id, room_id, relates_to, rel_type, event_type, sender, aggregation_key, stream_pos)",
        "ON CONFLICT DO NOTHING",
        8,
        &plan.relations,
        |q, r| {
            q.bind(r.event_id.as_str())
                .bind(room_id)
                .bind(r.relates_to.as_str())
                .bind(r.rel_type.as_str())
                .bind(r.event_type.as_str())
                .bind(r.sender.as_str())
                .bind(r.aggregation_key.as_deref())
                .bind(r.stream_pos)
        },
    )
    .await?;
    let thread_updates =
        last_per_key(&plan.relations.iter().filter(|r| r.rel_type == "m.thread").collect::<Vec<_>>(), |r| {
            r.relates_to.clone()
        });
    insert_rows(
        tx,
        "threads (room_id, root_id, latest_event_id, latest_pos)",
        "ON CONFLICT (room_id, root_id) DO UPDATE SET latest_event_id = excluded.latest_event_id, \
         latest_pos = excluded.latest_pos WHERE excluded.latest_pos > threads.latest_pos",
        4,
        &thread_updates,
        |q, r| q.bind(room_id).bind(r.relates_to.as_str()).bind(r.event_id.as_str()).bind(r.stream_pos),
    )
    .await?;
    crate::search::index(tx, engine, room_id, &plan.search).await?;
    if let Some(join_rule) = &plan.join_rule {
        sqlx::query("UPDATE rooms SET join_rule = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(without_nul(join_rule))
            .execute(&mut **tx)
            .await?;
    }
    if let Some(history_visibility) = &plan.history_visibility {
        sqlx::query("UPDATE rooms SET history_visibility = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(without_nul(history_visibility))
            .execute(&mut **tx)
            .await?;
    }
    for ev in plan.events.iter().filter(|e| e.redacts.is_some()) {
        let redacts = ev.redacts.as_deref().unwrap_or_default();
        let done = sqlx::query(
            "UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND room_id = $3 AND redacted_by IS NULL",
        )
        .bind(&ev.event_id)
        .bind(redacts)
        .bind(room_id)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() > 0 {
            // A redacted member event's display name and avatar leave the user directory.
            sqlx::query("UPDATE memberships SET displayname = NULL, avatar_url = NULL WHERE event_id = $1")
                .bind(redacts)
                .execute(&mut **tx)
                .await?;
            // A redacted event no longer counts as a relation, and is no longer searchable.
            sqlx::query("DELETE FROM event_relations WHERE event_id = $1")
                .bind(redacts)
                .execute(&mut **tx)
                .await?;
            crate::search::unindex(tx, engine, redacts).await?;
            // A thread whose latest reply was redacted falls back to the reply before it.
            sqlx::query(
                "UPDATE threads SET \
                   latest_event_id = COALESCE((SELECT r.event_id FROM event_relations r \
                     WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread' \
                     ORDER BY r.stream_pos DESC LIMIT 1), ''), \
                   latest_pos = COALESCE((SELECT MAX(r.stream_pos) FROM event_relations r \
                     WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread'), 0) \
                 WHERE room_id = $1 AND latest_event_id = $2",
            )
            .bind(room_id)
            .bind(redacts)
            .execute(&mut **tx)
            .await?;
            // A redacted root ends its thread's listing; a recalled message stops notifying.
            sqlx::query("DELETE FROM threads WHERE room_id = $1 AND (latest_event_id = '' OR root_id = $2)")
                .bind(room_id)
                .bind(redacts)
                .execute(&mut **tx)
                .await?;
            for table in ["event_push_actions", "event_push_broadcast"] {
                sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE stream_pos = (SELECT stream_pos FROM events WHERE event_id = $1)"
                )))
                .bind(redacts)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    let txns: Vec<(&NewEvent, &TxnRecord)> =
        plan.events.iter().filter_map(|e| e.txn.as_ref().map(|t| (e, t))).collect();
    insert_rows(
        tx,
        "txn_ids (user_id, device_id, scope, txn_id, event_id, created_ts)",
        "",
        6,
        &txns,
        |q, (ev, t)| {
            q.bind(t.user_id.as_str())
                .bind(t.device_id.as_str())
                .bind(t.scope.as_str())
                .bind(t.txn_id.as_str())
                .bind(ev.event_id.as_str())
                .bind(ev.origin_server_ts)
        },
    )
    .await?;
    if let Some(group) = plan.current_state_group {
        sqlx::query("UPDATE rooms SET current_state_group = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(group)
            .execute(&mut **tx)
            .await?;
    }
    let history = last_per_key(
        &plan.state_history.iter().filter(|(pos, _)| *pos > 0).copied().collect::<Vec<_>>(),
        |(pos, _)| *pos,
    );
    insert_rows(
        tx,
        "room_state_history (room_id, stream_pos, state_group)",
        "ON CONFLICT (room_id, stream_pos) DO UPDATE SET state_group = excluded.state_group",
        3,
        &history,
        |q, (pos, group)| q.bind(room_id).bind(*pos).bind(*group),
    )
    .await?;
    for id in &plan.backward_extremities_closed {
        sqlx::query("DELETE FROM room_backward_extremities WHERE room_id = $1 AND event_id = $2")
            .bind(room_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    // An event the batch opens as a gap and also stores (a child came before its parent) is
    // no gap.
    let opened: Vec<&String> = plan
        .backward_extremities_opened
        .iter()
        .filter(|id| !plan.backward_extremities_closed.contains(id))
        .collect();
    insert_rows(
        tx,
        "room_backward_extremities (room_id, event_id)",
        "ON CONFLICT DO NOTHING",
        2,
        &opened,
        |q, id| q.bind(room_id).bind(id.as_str()),
    )
    .await?;
    if let Some(extremities) = &plan.extremities {
        sqlx::query("DELETE FROM room_extremities WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut **tx)
            .await?;
        insert_rows(tx, "room_extremities (room_id, event_id)", "", 2, extremities, |q, id| {
            q.bind(room_id).bind(id.as_str())
        })
        .await?;
    }
    Ok(())
}
