//! Reading rooms, events, state groups and memberships.
//!
//! Events are returned as [`EventRow`]s: the stored PDU text plus the server-side metadata that
//! sits next to it (stream position, state groups, redaction, transaction id). Turning a row into
//! what a client sees is the room model's job, not storage's.

use homeserver_core::streams::StreamPos;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, events::room::member::MembershipState};
use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use crate::{Db, Result, placeholders};

/// A room's fixed facts.
#[derive(Debug, Clone)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub published: bool,
    pub created_ts: i64,
    /// The resolved state at the room's forward extremities (0 before the create event).
    pub current_state_group: i64,
}

/// One stored event and its metadata.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub depth: i64,
    pub origin_server_ts: i64,
    pub json: String,
    pub unsigned_extra: Option<String>,
    pub state_before: i64,
    pub state_after: i64,
    pub redacted_by: Option<String>,
    pub txn_device: Option<String>,
    pub txn_id: Option<String>,
    /// Known only as the auth or state of other events: not part of the room's timeline.
    pub outlier: bool,
    /// Accepted into the DAG but failed the auth rules against the room's current state: never
    /// shown to clients.
    pub soft_failed: bool,
    /// Why the event was rejected; `None` for events that passed the auth rules.
    pub rejected_reason: Option<String>,
}

impl EventRow {
    /// Stored out of band: a local user's membership of a room no user of this server was in
    /// (a remote invite, its rejection, a knock) — an outlier, yet at a live stream position
    /// (other outliers sit outside the live stream).
    pub fn is_out_of_band(&self) -> bool {
        self.outlier && self.stream_pos.is_live()
    }
}

/// The condition that keeps only events of the room's timeline: neither outliers nor
/// soft-failed nor rejected events. Every timeline read (pages, sync, search, relations) uses it.
pub(crate) const IN_TIMELINE: &str = "rejected = 0 AND soft_failed = 0 AND outlier = 0";

/// A point in a room's topological order, "after the event at (depth, position)": pagination
/// reads events at or before it going backward and events after it going forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopoPos {
    pub depth: i64,
    pub stream_pos: StreamPos,
}

/// Where a timeline read starts or stops: a stream position (a sync token: every event at or
/// below it, whatever its depth) or a point in topological order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Stream(StreamPos),
    Topo(TopoPos),
}

impl EventRow {
    /// The event's own point in topological order.
    pub fn topo(&self) -> TopoPos {
        TopoPos { depth: self.depth, stream_pos: self.stream_pos }
    }

    /// The point just before the event in topological order (positions are integers, so no
    /// event sits between it and the event).
    pub fn topo_before(&self) -> TopoPos {
        TopoPos { depth: self.depth, stream_pos: self.stream_pos.before() }
    }
}

/// A user's current membership in a room.
#[derive(Debug, Clone)]
pub struct MembershipRow {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub membership: MembershipState,
    pub event_id: OwnedEventId,
    pub stream_pos: StreamPos,
    pub forgotten: bool,
    /// Where the user's current stay began (the event that made them join); 0 if not joined.
    pub joined_pos: StreamPos,
}

/// `chain(group_id, prev_group, lvl)`: the delta chain of the state group `$1`, newest first.
const STATE_CHAIN: &str = "WITH RECURSIVE chain(group_id, prev_group, lvl) AS ( \
    SELECT group_id, prev_group, 0 FROM state_groups WHERE group_id = $1 \
    UNION ALL \
    SELECT g.group_id, g.prev_group, c.lvl + 1 FROM state_groups g JOIN chain c ON g.group_id = c.prev_group \
)";

/// One link of a state group's delta chain.
#[derive(Debug, Clone)]
pub struct StateGroupDelta {
    pub group_id: i64,
    /// `None` for the full snapshot that starts the chain.
    pub prev_group: Option<i64>,
    /// The keys it sets or (no event) removes; empty for the snapshot.
    pub entries: Vec<crate::persist::StateGroupEntry>,
}

/// One `(type, state_key) -> event_id` entry of a room state.
pub type StateEntry = (String, String, String);

pub(crate) const EVENT_COLUMNS: &str = "stream_pos, event_id, room_id, event_type, state_key, sender, depth, \
     origin_server_ts, json, unsigned_extra, state_before, state_after, redacted_by, txn_device, txn_id, \
     outlier, soft_failed, rejected, rejected_reason";

pub(crate) fn event_from_row(row: &AnyRow) -> Result<EventRow> {
    Ok(EventRow {
        stream_pos: StreamPos::new(row.try_get("stream_pos")?),
        event_id: row.try_get("event_id")?,
        room_id: row.try_get("room_id")?,
        event_type: row.try_get("event_type")?,
        state_key: row.try_get("state_key")?,
        sender: row.try_get("sender")?,
        depth: row.try_get("depth")?,
        origin_server_ts: row.try_get("origin_server_ts")?,
        json: row.try_get("json")?,
        unsigned_extra: row.try_get("unsigned_extra")?,
        state_before: row.try_get("state_before")?,
        state_after: row.try_get("state_after")?,
        redacted_by: row.try_get("redacted_by")?,
        txn_device: row.try_get("txn_device")?,
        txn_id: row.try_get("txn_id")?,
        outlier: row.try_get::<i64, _>("outlier")? != 0,
        soft_failed: row.try_get::<i64, _>("soft_failed")? != 0,
        rejected_reason: match row.try_get::<i64, _>("rejected")? {
            0 => None,
            _ => Some(row.try_get::<Option<String>, _>("rejected_reason")?.unwrap_or_default()),
        },
    })
}

fn membership_from_row(row: &AnyRow) -> Result<MembershipRow> {
    Ok(MembershipRow {
        room_id: parse_id(row.try_get("room_id")?)?,
        user_id: parse_id(row.try_get("user_id")?)?,
        membership: MembershipState::from(row.try_get::<String, _>("membership")?),
        event_id: parse_id(row.try_get("event_id")?)?,
        stream_pos: StreamPos::new(row.try_get("stream_pos")?),
        forgotten: row.try_get::<i64, _>("forgotten")? != 0,
        joined_pos: StreamPos::new(row.try_get("joined_pos")?),
    })
}

/// A stored id, typed; one that does not parse means the row is corrupt.
pub(crate) fn parse_id<T: TryFrom<String>>(text: String) -> Result<T> {
    T::try_from(text.clone()).map_err(|_| crate::StorageError::Corrupt(format!("invalid id {text:?}")))
}

/// `stream_pos {cmp} $n` or `(depth, stream_pos) {cmp} ($n, $n+1)` for a bound, on the events
/// table or its alias `table` (`"e."`).
pub(crate) fn bound_condition(bound: &Bound, table: &str, cmp: &str, first: usize) -> String {
    match bound {
        Bound::Stream(_) => format!("{table}stream_pos {cmp} ${first}"),
        Bound::Topo(_) => format!("({table}depth, {table}stream_pos) {cmp} (${first}, ${})", first + 1),
    }
}

/// Binds a bound's values for [`bound_condition`].
pub(crate) fn bind_bound<'q>(q: crate::persist::AnyQuery<'q>, bound: &Bound) -> crate::persist::AnyQuery<'q> {
    match *bound {
        Bound::Stream(pos) => q.bind(pos.get()),
        Bound::Topo(t) => q.bind(t.depth).bind(t.stream_pos.get()),
    }
}

pub(crate) fn bound_params(bound: &Bound) -> usize {
    match bound {
        Bound::Stream(_) => 1,
        Bound::Topo(_) => 2,
    }
}

/// Direction of a timeline read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Newest first, positions `<= from`.
    Backward,
    /// Oldest first, positions `> from`.
    Forward,
}

impl Db {
    /// The highest stream position that may have been handed out: the persisted horizon, or
    /// the highest position any table holds if that is higher (seeds the allocator at start-up).
    pub async fn max_stream_pos(&self) -> Result<i64> {
        let horizon: Option<i64> =
            sqlx::query_scalar("SELECT MAX(pos) FROM stream_horizon").fetch_one(self.writer()).await?;
        let receipts: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM receipts").fetch_one(self.reader()).await?;
        let events: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM events").fetch_one(self.reader()).await?;
        let account: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM account_data").fetch_one(self.reader()).await?;
        let presence: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM presence").fetch_one(self.reader()).await?;
        Ok([horizon, receipts, events, account, presence].into_iter().flatten().max().unwrap_or(0))
    }

    /// The highest state group id in use (state groups have their own id sequence).
    pub async fn max_state_group(&self) -> Result<i64> {
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(group_id) FROM state_groups").fetch_one(self.writer()).await?;
        Ok(max.unwrap_or(0))
    }

    /// The lowest position of any event: positions below it are free for events outside the
    /// live stream (backfilled history, outliers, soft-failed and rejected events).
    pub async fn min_event_pos(&self) -> Result<i64> {
        let min: Option<i64> =
            sqlx::query_scalar("SELECT MIN(stream_pos) FROM events").fetch_one(self.writer()).await?;
        Ok(min.unwrap_or(0).min(0))
    }

    /// Persists a new stream horizon (never lowering it); durable when this returns.
    pub async fn raise_stream_horizon(&self, to: i64) -> Result<()> {
        sqlx::query("UPDATE stream_horizon SET pos = $1 WHERE id = 1 AND pos < $1")
            .bind(to)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRecord>> {
        let row = sqlx::query(
            "SELECT room_id, room_version, creator, published, created_ts, current_state_group FROM rooms \
             WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| {
            Ok(RoomRecord {
                room_id: row.try_get("room_id")?,
                room_version: row.try_get("room_version")?,
                creator: row.try_get("creator")?,
                published: row.try_get::<i64, _>("published")? != 0,
                created_ts: row.try_get("created_ts")?,
                current_state_group: row.try_get("current_state_group")?,
            })
        })
        .transpose()
    }

    /// Rooms listed in the public directory.
    pub async fn published_rooms(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT room_id FROM rooms WHERE published = 1 ORDER BY room_id")
            .fetch_all(self.reader())
            .await?)
    }

    pub async fn set_room_published(&self, room_id: &str, published: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE rooms SET published = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(published as i64)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1 AND rejected = 0"
        )))
        .bind(event_id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Events by id, in no particular order; unknown and rejected ids are skipped. Outliers and
    /// soft-failed events are returned: they are real events of the room (room state may name
    /// them), only not part of its timeline.
    pub async fn events(&self, event_ids: &[String]) -> Result<Vec<EventRow>> {
        self.events_where(event_ids, "AND rejected = 0").await
    }

    /// Events by id whatever their status, rejected ones included: the room model must tell a
    /// rejected event from one it has never seen.
    pub async fn dag_events(&self, event_ids: &[String]) -> Result<Vec<EventRow>> {
        self.events_where(event_ids, "").await
    }

    /// Which of these events are stored (in any status), by id only: cheap for long lists.
    pub async fn known_event_ids(&self, event_ids: &[String]) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for chunk in event_ids.chunks(500) {
            let sql =
                format!("SELECT event_id FROM events WHERE event_id IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(self.reader()).await?);
        }
        Ok(out)
    }

    async fn events_where(&self, event_ids: &[String], condition: &str) -> Result<Vec<EventRow>> {
        let mut out = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(500) {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({}) {condition}",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(self.reader()).await? {
                out.push(event_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Up to `limit` events of the room's live stream starting at position `from` in direction
    /// `dir`, not beyond `to` (exclusive for backward reads, inclusive for forward reads), in
    /// stream order: what arrived, in the order it arrived (sync). Positions at or below zero
    /// (backfilled history) are never part of it.
    pub async fn room_events(
        &self,
        room_id: &str,
        from: StreamPos,
        to: Option<StreamPos>,
        dir: Direction,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let sql = match dir {
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos <= $2 \
                 AND stream_pos > $3 AND {IN_TIMELINE} ORDER BY stream_pos DESC LIMIT $4"
            ),
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos > $2 \
                 AND stream_pos <= $3 AND {IN_TIMELINE} ORDER BY stream_pos ASC LIMIT $4"
            ),
        };
        let to = to
            .map(StreamPos::get)
            .unwrap_or(match dir {
                Direction::Backward => 0,
                Direction::Forward => i64::MAX,
            })
            .max(0);
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(from.get())
            .bind(to)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A page of the room's timeline in topological order (depth, then position): up to `limit`
    /// events at or before `from` going backward (newest first), or after it going forward,
    /// stopping at `to` (exclusive backward, inclusive forward). Backfilled history sorts by its
    /// depth, before the events that follow it in the DAG.
    pub async fn room_page(
        &self,
        room_id: &str,
        from: Bound,
        to: Option<Bound>,
        dir: Direction,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let (from_cmp, to_cmp, order) = match dir {
            Direction::Backward => ("<=", ">", "DESC"),
            Direction::Forward => (">", "<=", "ASC"),
        };
        let mut conditions = vec![bound_condition(&from, "", from_cmp, 2)];
        if let Some(to) = &to {
            conditions.push(bound_condition(to, "", to_cmp, 2 + bound_params(&from)));
        }
        let limit_at = 2 + bound_params(&from) + to.as_ref().map_or(0, bound_params);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND {} AND {IN_TIMELINE} \
             ORDER BY depth {order}, stream_pos {order} LIMIT ${limit_at}",
            conditions.join(" AND ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(room_id);
        for bound in std::iter::once(&from).chain(to.as_ref()) {
            q = bind_bound(q, bound);
        }
        let rows = q.bind(limit).fetch_all(self.reader()).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Rooms the user has a membership in that have events in `(after, up_to]`, with their newest
    /// position.
    pub async fn rooms_changed_between(
        &self,
        user_id: &str,
        after: StreamPos,
        up_to: StreamPos,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT room_id, MAX(stream_pos) AS pos FROM events \
             WHERE stream_pos > $2 AND stream_pos <= $3 \
             AND room_id IN (SELECT room_id FROM memberships WHERE user_id = $1) GROUP BY room_id",
        )
        .bind(user_id)
        .bind(after.get())
        .bind(up_to.get())
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("room_id")?, r.try_get("pos")?))).collect()
    }

    /// The state of a room as of a state group: walks the delta chain in one recursive query and
    /// lets the newest entry for each key win (an entry without event removes the key).
    ///
    /// The chain queries join with `CROSS JOIN … WHERE`: SQLite then keeps the chain (at most
    /// 100 groups) as the outer loop and looks entries up by primary key; left to itself, it
    /// may scan every stored entry of every snapshot instead (100 ms in a room with 10,000 state
    /// events). PostgreSQL plans `CROSS JOIN … WHERE` like any inner join.
    pub async fn state_group(&self, group_id: i64) -> Result<Vec<StateEntry>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{STATE_CHAIN} SELECT c.lvl, e.event_type, e.state_key, e.event_id FROM chain c \
               CROSS JOIN state_group_entries e WHERE e.group_id = c.group_id ORDER BY c.lvl DESC"
        )))
        .bind(group_id)
        .fetch_all(self.reader())
        .await?;
        // Oldest level first, so later (newer) entries overwrite earlier ones.
        let mut map = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let ty: String = row.try_get("event_type")?;
            let key: String = row.try_get("state_key")?;
            let id: Option<String> = row.try_get("event_id")?;
            map.insert((ty, key), id);
        }
        Ok(map.into_iter().filter_map(|((t, k), id)| Some((t, k, id?))).collect())
    }

    /// One entry of a state group (the newest along its delta chain, `None` if that removes the
    /// key), without loading the rest.
    pub async fn state_group_entry(
        &self,
        group_id: i64,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "{STATE_CHAIN} SELECT e.event_id FROM chain c CROSS JOIN state_group_entries e \
             WHERE e.group_id = c.group_id AND e.event_type = $2 AND e.state_key = $3 ORDER BY c.lvl ASC LIMIT 1"
        )))
        .bind(group_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(self.reader())
        .await?
        .flatten())
    }

    /// The room's current state group as of stream position `pos` (0 before its first state).
    pub async fn current_state_group_at(&self, room_id: &str, pos: StreamPos) -> Result<i64> {
        let group: Option<i64> = sqlx::query_scalar(
            "SELECT state_group FROM room_state_history WHERE room_id = $1 AND stream_pos <= $2 \
             ORDER BY stream_pos DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(pos.get())
        .fetch_optional(self.reader())
        .await?;
        Ok(group.unwrap_or(0))
    }

    /// A state group's delta: its parent (`None` for a full snapshot) and the entries it sets
    /// or removes.
    pub async fn state_group_delta(
        &self,
        group_id: i64,
    ) -> Result<Option<(Option<i64>, Vec<crate::persist::StateGroupEntry>)>> {
        let Some(prev): Option<Option<i64>> =
            sqlx::query_scalar("SELECT prev_group FROM state_groups WHERE group_id = $1")
                .bind(group_id)
                .fetch_optional(self.reader())
                .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT event_type, state_key, event_id FROM state_group_entries WHERE group_id = $1",
        )
        .bind(group_id)
        .fetch_all(self.reader())
        .await?;
        let entries = rows
            .iter()
            .map(|r| Ok((r.try_get("event_type")?, r.try_get("state_key")?, r.try_get("event_id")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((prev, entries)))
    }

    /// A state group's delta chain, newest first: each group with its parent and the entries it
    /// changes, back to the full snapshot that starts the chain (whose entries are left out: it
    /// is the whole state, not a change).
    pub async fn state_group_deltas(&self, group_id: i64) -> Result<Vec<StateGroupDelta>> {
        // The chain first, then the deltas' entries by primary key: two plain lookups that
        // both engines plan well (a join of the two let PostgreSQL scan every entry).
        let chain = sqlx::query(AssertSqlSafe(format!(
            "{STATE_CHAIN} SELECT group_id, prev_group FROM chain ORDER BY lvl"
        )))
        .bind(group_id)
        .fetch_all(self.reader())
        .await?;
        let mut out = Vec::with_capacity(chain.len());
        for row in &chain {
            out.push(StateGroupDelta {
                group_id: row.try_get("group_id")?,
                prev_group: row.try_get("prev_group")?,
                entries: Vec::new(),
            });
        }
        let deltas: Vec<i64> = out.iter().filter(|d| d.prev_group.is_some()).map(|d| d.group_id).collect();
        let index: std::collections::HashMap<i64, usize> =
            out.iter().enumerate().map(|(i, d)| (d.group_id, i)).collect();
        for chunk in deltas.chunks(500) {
            let sql = format!(
                "SELECT group_id, event_type, state_key, event_id FROM state_group_entries WHERE group_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for group in chunk {
                q = q.bind(*group);
            }
            for row in q.fetch_all(self.reader()).await? {
                let group: i64 = row.try_get("group_id")?;
                if let Some(i) = index.get(&group) {
                    out[*i].entries.push((
                        row.try_get("event_type")?,
                        row.try_get("state_key")?,
                        row.try_get("event_id")?,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The delta-chain length of a state group (0 for a full snapshot).
    pub async fn state_group_chain_len(&self, group_id: i64) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT chain_len FROM state_groups WHERE group_id = $1")
            .bind(group_id)
            .fetch_optional(self.reader())
            .await?)
    }

    pub async fn current_state(&self, room_id: &str) -> Result<Vec<StateEntry>> {
        let rows =
            sqlx::query("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(self.reader())
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("event_type")?, r.try_get("state_key")?, r.try_get("event_id")?)))
            .collect()
    }

    /// Which of these events are the room's current state for their key, in one query per
    /// 300 keys (each key looked up by the table's primary key).
    pub async fn in_current_state(
        &self,
        room_id: &str,
        events: &[(&str, &str, &str)],
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for chunk in events.chunks(300) {
            let keys: Vec<String> = (0..chunk.len())
                .map(|i| format!("(event_type = ${} AND state_key = ${})", 2 + 2 * i, 3 + 2 * i))
                .collect();
            let sql =
                format!("SELECT event_id FROM current_state WHERE room_id = $1 AND ({})", keys.join(" OR "));
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(room_id);
            for (event_type, state_key, _) in chunk {
                q = q.bind(*event_type).bind(*state_key);
            }
            let current = q.fetch_all(self.reader()).await?;
            out.extend(
                chunk.iter().filter(|(_, _, id)| current.iter().any(|c| c == id)).map(|e| e.2.to_owned()),
            );
        }
        Ok(out)
    }

    pub async fn current_state_event_id(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
        )
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .fetch_optional(self.reader())
        .await?)
    }

    /// Prev events the room's events name that this server does not hold (where backfill goes on).
    pub async fn backward_extremities(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM room_backward_extremities WHERE room_id = $1 ORDER BY event_id",
        )
        .bind(room_id)
        .fetch_all(self.reader())
        .await?)
    }

    pub async fn room_extremities(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT event_id FROM room_extremities WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(self.reader())
            .await?)
    }

    /// All rooms the user has a membership row in (any membership).
    pub async fn memberships_of_user(&self, user_id: &str) -> Result<Vec<MembershipRow>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten, joined_pos FROM memberships \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        // A row that cannot be read is skipped (and logged) rather than failing every sync of
        // the user.
        Ok(rows
            .iter()
            .filter_map(|row| {
                membership_from_row(row)
                    .inspect_err(|err| tracing::warn!(user_id, error = %err, "unreadable membership row"))
                    .ok()
            })
            .collect())
    }

    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<MembershipRow>> {
        let row = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream_pos, forgotten, joined_pos FROM memberships \
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(membership_from_row).transpose()
    }

    /// Current members of a room with the given membership (e.g. `join`).
    pub async fn room_members(&self, room_id: &str, membership: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = $2 ORDER BY user_id",
        )
        .bind(room_id)
        .bind(membership)
        .fetch_all(self.reader())
        .await?)
    }

    /// Every membership row of a room, `(user_id, membership)`.
    pub async fn room_memberships(&self, room_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT user_id, membership FROM memberships WHERE room_id = $1")
            .bind(room_id)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("user_id")?, r.try_get("membership")?))).collect()
    }

    /// `(room_id, user_id)` of deactivated local users still joined to or invited to rooms.
    pub async fn deactivated_members(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT m.room_id, m.user_id FROM memberships m JOIN users u ON u.user_id = m.user_id \
             WHERE u.deactivated = 1 AND m.membership IN ('join', 'invite', 'knock')",
        )
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("room_id")?, r.try_get("user_id")?))).collect()
    }

    /// Whether a user of `server` is joined to the room.
    pub async fn has_joined_member_of(&self, room_id: &str, server: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships WHERE room_id = $1 AND membership = 'join' AND user_id LIKE $2 LIMIT 1",
        )
        .bind(room_id)
        .bind(format!("%:{server}"))
        .fetch_optional(self.reader())
        .await?;
        Ok(found.is_some())
    }

    pub async fn joined_member_count(&self, room_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership = 'join'")
            .bind(room_id)
            .fetch_one(self.reader())
            .await?)
    }

    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2 \
             AND membership IN ('leave', 'ban')",
        )
        .bind(room_id)
        .bind(user_id)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Membership events about `user_id` with positions in `(after, up_to]`, oldest first.
    pub async fn membership_changes(
        &self,
        user_id: &str,
        after: StreamPos,
        up_to: StreamPos,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE state_key = $1 AND event_type = 'm.room.member' \
             AND stream_pos > $2 AND stream_pos <= $3 AND {IN_TIMELINE} ORDER BY stream_pos"
        )))
        .bind(user_id)
        .bind(after.get())
        .bind(up_to.get())
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// State events of a room with positions in `(after, before)`, oldest first.
    pub async fn room_state_events_between(
        &self,
        room_id: &str,
        after: StreamPos,
        before: StreamPos,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 \
             AND state_key IS NOT NULL AND {IN_TIMELINE} ORDER BY stream_pos"
        )))
        .bind(room_id)
        .bind(after.get())
        .bind(before.get())
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The newest event of a room at or below `up_to`.
    pub async fn latest_room_event(&self, room_id: &str, up_to: StreamPos) -> Result<Option<EventRow>> {
        Ok(self.room_events(room_id, up_to, None, Direction::Backward, 1).await?.into_iter().next())
    }

    /// Up to `limit` events nearest a timestamp among the positions in `visible`: at or before
    /// it, newest first (`dir` backward), or at or after it, oldest first (forward). The index
    /// `events_by_room_ts` holds the positions, so events outside `visible` are passed over in
    /// the index without reading their rows.
    pub async fn events_near_timestamp(
        &self,
        room_id: &str,
        ts: i64,
        dir: Direction,
        limit: i64,
        visible: &crate::visibility::VisibleSet,
    ) -> Result<Vec<EventRow>> {
        let seen = visible.condition("room_id", "stream_pos", 3);
        let limit_at = 3 + visible.placeholders();
        let sql = match dir {
            Direction::Backward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts <= $2 AND {seen} \
                 AND {IN_TIMELINE} ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT ${limit_at}"
            ),
            Direction::Forward => format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts >= $2 AND {seen} \
                 AND {IN_TIMELINE} ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT ${limit_at}"
            ),
        };
        let q = sqlx::query(AssertSqlSafe(sql)).bind(room_id).bind(ts);
        let rows = visible.bind(q).bind(limit).fetch_all(self.reader()).await?;
        rows.iter().map(event_from_row).collect()
    }
}
