//! Queries for server administration (the `/_synapse/admin` API): paged user lists, room
//! summaries, blocking and purging rooms.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Engine, Result, accounts::User};

/// Which users a listing shows and in what order.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub offset: i64,
    pub limit: i64,
    /// Case-insensitive substring of the user id or display name.
    pub name: Option<String>,
    pub include_deactivated: bool,
    pub admins: Option<bool>,
    /// One of `name`, `displayname`, `creation_ts`, `admin`, `deactivated`.
    pub order_by: String,
    pub descending: bool,
}

/// A room as the admin room list shows it.
#[derive(Debug, Clone, Default)]
pub struct RoomSummary {
    pub room_id: String,
    pub version: String,
    pub creator: String,
    pub published: bool,
    pub joined_members: i64,
    pub joined_local_members: i64,
    pub state_events: i64,
    /// `(type, content)` of the room's name, topic, avatar, canonical alias, join rules, guest
    /// access, history visibility, encryption and create events.
    pub state: HashMap<String, serde_json::Value>,
}

const SUMMARY_STATE: &str = "'m.room.name', 'm.room.topic', 'm.room.avatar', 'm.room.canonical_alias', \
     'm.room.join_rules', 'm.room.guest_access', 'm.room.history_visibility', 'm.room.encryption', 'm.room.create'";

fn like_pattern(term: &str) -> String {
    format!("%{}%", term.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

impl Db {
    /// One page of users and the total matching the query.
    pub async fn list_users(&self, q: &UserQuery) -> Result<(Vec<User>, i64)> {
        let column = match q.order_by.as_str() {
            "displayname" => "displayname",
            "creation_ts" => "created_ts",
            "admin" => "is_admin",
            "deactivated" => "deactivated",
            _ => "user_id",
        };
        let dir = if q.descending { "DESC" } else { "ASC" };
        let filter = "($1 = '' OR LOWER(user_id) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(displayname, '')) LIKE $1 ESCAPE '\\') \
             AND ($2 = 1 OR deactivated = 0) AND ($3 < 0 OR is_admin = $3)";
        let pattern = q.name.as_deref().filter(|n| !n.is_empty()).map(like_pattern).unwrap_or_default();
        let admins = q.admins.map(i64::from).unwrap_or(-1);
        let sql = format!(
            "SELECT user_id, password_hash, is_admin, deactivated, created_ts, displayname, avatar_url, is_guest \
             FROM users WHERE {filter} ORDER BY {column} {dir}, user_id {dir} LIMIT $4 OFFSET $5"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&pattern)
            .bind(q.include_deactivated as i64)
            .bind(admins)
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(self.reader())
            .await?;
        let users = rows.iter().map(crate::accounts::user_from_row).collect::<Result<Vec<_>>>()?;
        let total: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM users WHERE {filter}")))
                .bind(&pattern)
                .bind(q.include_deactivated as i64)
                .bind(admins)
                .fetch_one(self.reader())
                .await?;
        Ok((users, total))
    }

    /// Turns a deactivated account back on (it needs a new password to log in).
    pub async fn reactivate_user(&self, user_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET deactivated = 0 WHERE user_id = $1")
            .bind(user_id)
            .execute(self.writer())
            .await?;
        self.tokens.invalidate();
        Ok(done.rows_affected() > 0)
    }

    /// Summaries of every room (or one), with member counts; `server_name` decides which members
    /// are local. Three queries however many rooms there are.
    pub async fn room_summaries(&self, server_name: &str, only: Option<&str>) -> Result<Vec<RoomSummary>> {
        let only = only.unwrap_or("");
        let local = format!("%:{server_name}");
        let rows = sqlx::query(
            "SELECT r.room_id, r.room_version, r.creator, r.published, \
               (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined, \
               (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join' \
                  AND m.user_id LIKE $2) AS joined_local, \
               (SELECT COUNT(*) FROM current_state cs WHERE cs.room_id = r.room_id) AS state_events \
             FROM rooms r WHERE ($1 = '' OR r.room_id = $1)",
        )
        .bind(only)
        .bind(&local)
        .fetch_all(self.reader())
        .await?;
        let mut by_room: HashMap<String, RoomSummary> = HashMap::with_capacity(rows.len());
        for r in rows {
            let summary = RoomSummary {
                room_id: r.try_get("room_id")?,
                version: r.try_get("room_version")?,
                creator: r.try_get("creator")?,
                published: r.try_get::<i64, _>("published")? != 0,
                joined_members: r.try_get("joined")?,
                joined_local_members: r.try_get("joined_local")?,
                state_events: r.try_get("state_events")?,
                state: HashMap::new(),
            };
            by_room.insert(summary.room_id.clone(), summary);
        }
        let sql = format!(
            "SELECT cs.room_id, cs.event_type, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id \
             WHERE cs.state_key = '' AND cs.event_type IN ({SUMMARY_STATE}) AND ($1 = '' OR cs.room_id = $1)"
        );
        for r in sqlx::query(AssertSqlSafe(sql)).bind(only).fetch_all(self.reader()).await? {
            let room_id: String = r.try_get("room_id")?;
            let json: String = r.try_get("json")?;
            let content = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v.get("content").cloned())
                .unwrap_or_default();
            if let Some(summary) = by_room.get_mut(&room_id) {
                summary.state.insert(r.try_get("event_type")?, content);
            }
        }
        Ok(by_room.into_values().collect())
    }

    pub async fn block_room(&self, room_id: &str, by: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO blocked_rooms (room_id, blocked_by, created_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(by)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn is_room_blocked(&self, room_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blocked_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(self.reader())
            .await?;
        Ok(n > 0)
    }

    /// Deletes everything stored about a room — events, state, memberships, aliases, receipts,
    /// notifications, relations, search entries, room account data — in one transaction. The
    /// caller (the room's pipeline) makes sure nothing writes to the room meanwhile.
    pub async fn purge_room(&self, room_id: &str) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let by_event = "IN (SELECT event_id FROM events WHERE room_id = $1)";
        let mut statements = vec![
            format!("DELETE FROM event_edges WHERE event_id {by_event}"),
            format!("DELETE FROM event_auth WHERE event_id {by_event}"),
            format!("DELETE FROM txn_ids WHERE event_id {by_event}"),
            "DELETE FROM state_group_entries WHERE group_id IN (SELECT group_id FROM state_groups WHERE room_id = $1)"
                .to_owned(),
            "DELETE FROM state_group_parents WHERE group_id IN (SELECT group_id FROM state_groups WHERE room_id = $1)"
                .to_owned(),
        ];
        if self.engine() == Engine::Sqlite {
            statements.push(
                "DELETE FROM event_search WHERE rowid IN (SELECT stream_pos FROM event_search_meta WHERE room_id = $1)"
                    .to_owned(),
            );
        }
        for table in [
            "event_search_meta",
            "state_groups",
            "current_state",
            "memberships",
            "room_extremities",
            "room_backward_extremities",
            "room_state_history",
            "room_aliases",
            "receipts",
            "event_push_actions",
            "event_push_broadcast",
            "event_relations",
            "threads",
            "account_data",
            "events",
            "rooms",
        ] {
            statements.push(format!("DELETE FROM {table} WHERE room_id = $1"));
        }
        for sql in statements {
            sqlx::query(AssertSqlSafe(sql)).bind(room_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
