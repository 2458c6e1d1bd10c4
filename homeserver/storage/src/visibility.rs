//! What history visibility needs from storage: the events that change what a user may see in a
//! room (their own membership events and the room's `m.room.history_visibility` events), and
//! position ranges as an SQL filter, so aggregate queries (search counts, thread summaries,
//! edits, jump to date) only ever look at events the user may see.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, persist::AnyQuery};

/// A range of stream positions of one room, both ends included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRange {
    pub room_id: String,
    pub from: i64,
    pub to: i64,
}

/// An event that changes what a user may see: its position, type and content (JSON).
#[derive(Debug, Clone)]
pub struct VisibilityChange {
    pub stream_pos: i64,
    pub event_type: String,
    pub content: serde_json::Value,
}

/// The most ranges one query filters by; the rest are left out (so events are hidden rather than
/// shown when a user somehow accumulated more join/leave periods than this in one query).
pub const MAX_RANGES: usize = 3_000;

/// What a user may see of some rooms: everything, except in `restricted` rooms, where only the
/// positions in `ranges` (possibly none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisibleSet {
    pub restricted: Vec<String>,
    pub ranges: Vec<PositionRange>,
}

impl VisibleSet {
    /// Whether every position of every room is visible.
    pub fn is_everything(&self) -> bool {
        self.restricted.is_empty()
    }

    /// An SQL condition that `{room_col}`/`{pos_col}` are visible, with placeholders numbered
    /// from `first`; bind its values with [`VisibleSet::bind`]. Rooms that are not restricted
    /// pass on the room test alone, so a common word in many fully visible rooms is not
    /// checked against every range.
    pub fn condition(&self, room_col: &str, pos_col: &str, first: usize) -> String {
        if self.is_everything() {
            return "1 = 1".to_owned();
        }
        let rooms = crate::placeholders(first, self.restricted.len());
        let ranges = self.ranges.len().clamp(1, MAX_RANGES);
        let base = first + self.restricted.len();
        let values: Vec<String> = (0..ranges)
            .map(|i| {
                let at = base + i * 3;
                format!("(${at}, ${}, ${})", at + 1, at + 2)
            })
            .collect();
        format!(
            "({room_col} NOT IN ({rooms}) OR EXISTS (SELECT 1 FROM (VALUES {}) AS v \
             WHERE v.column1 = {room_col} AND {pos_col} >= v.column2 AND {pos_col} <= v.column3))",
            values.join(", ")
        )
    }

    /// How many placeholders [`VisibleSet::condition`] uses.
    pub fn placeholders(&self) -> usize {
        if self.is_everything() {
            0
        } else {
            self.restricted.len() + self.ranges.len().clamp(1, MAX_RANGES) * 3
        }
    }

    /// Binds the values of [`VisibleSet::condition`].
    pub fn bind<'q>(&'q self, mut query: AnyQuery<'q>) -> AnyQuery<'q> {
        if self.is_everything() {
            return query;
        }
        for room in &self.restricted {
            query = query.bind(room.as_str());
        }
        if self.ranges.is_empty() {
            return query.bind("").bind(0_i64).bind(-1_i64);
        }
        for range in self.ranges.iter().take(MAX_RANGES) {
            query = query.bind(range.room_id.as_str()).bind(range.from).bind(range.to);
        }
        query
    }
}

impl Db {
    /// For each of `rooms`: the user's own membership events there and the room's
    /// history-visibility events, oldest first (index `events_by_room_state`).
    pub async fn visibility_changes(
        &self,
        rooms: &[String],
        user_id: &str,
    ) -> Result<HashMap<String, Vec<VisibilityChange>>> {
        let mut out: HashMap<String, Vec<VisibilityChange>> = HashMap::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT room_id, stream_pos, event_type, json FROM events WHERE room_id IN ({}) AND {} \
                 AND ((event_type = 'm.room.member' AND state_key = $1) \
                  OR (event_type = 'm.room.history_visibility' AND state_key = '')) \
                 ORDER BY stream_pos",
                crate::placeholders(2, chunk.len()),
                crate::events::IN_TIMELINE
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(user_id);
            for room in chunk {
                q = q.bind(room.as_str());
            }
            for r in q.fetch_all(self.reader()).await? {
                let json: String = r.try_get("json")?;
                let content = serde_json::from_str::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|mut v| v.get_mut("content").map(serde_json::Value::take))
                    .unwrap_or_default();
                out.entry(r.try_get("room_id")?).or_default().push(VisibilityChange {
                    stream_pos: r.try_get("stream_pos")?,
                    event_type: r.try_get("event_type")?,
                    content,
                });
            }
        }
        Ok(out)
    }

    /// Which of `rooms` the user is joined to now.
    pub async fn joined_among(
        &self,
        rooms: &[String],
        user_id: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join' AND room_id IN ({})",
                crate::placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql)).bind(user_id);
            for room in chunk {
                q = q.bind(room.as_str());
            }
            out.extend(q.fetch_all(self.reader()).await?);
        }
        Ok(out)
    }
}
