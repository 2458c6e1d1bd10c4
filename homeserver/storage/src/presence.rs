//! Presence: a user's state (`online`, `unavailable`, `offline`), status message and last activity.

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, placeholders};

#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub currently_active: bool,
    pub stream_pos: i64,
}

impl PresenceRow {
    /// The presence of a user never seen online: offline, no activity, no position.
    pub fn never_seen(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            state: "offline".into(),
            status_msg: None,
            last_active_ts: 0,
            currently_active: false,
            stream_pos: 0,
        }
    }
}

fn presence_row(r: &sqlx::any::AnyRow) -> Result<PresenceRow> {
    Ok(PresenceRow {
        user_id: r.try_get("user_id")?,
        state: r.try_get("state")?,
        status_msg: r.try_get("status_msg")?,
        last_active_ts: r.try_get("last_active_ts")?,
        currently_active: r.try_get::<i64, _>("currently_active")? != 0,
        stream_pos: r.try_get("stream_pos")?,
    })
}

impl Db {
    /// Stores a user's presence (at the row's stream position).
    pub async fn set_presence(&self, row: &PresenceRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_pos) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg, \
               last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active, \
               stream_pos = excluded.stream_pos",
        )
        .bind(row.user_id.as_str())
        .bind(row.state.as_str())
        .bind(row.status_msg.as_deref())
        .bind(row.last_active_ts)
        .bind(row.currently_active as i64)
        .bind(row.stream_pos)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn presence(&self, user_id: &str) -> Result<Option<PresenceRow>> {
        let row = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_pos FROM presence \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(presence_row).transpose()
    }

    /// The newest stream position of any presence row (0 if none).
    pub async fn newest_presence_pos(&self) -> Result<i64> {
        let pos: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM presence").fetch_one(self.reader()).await?;
        Ok(pos.unwrap_or(0))
    }

    /// This server's users (`user_id` ending in `:{ours}`) whose stored state is not offline,
    /// for the timers after a restart (other servers' users have no timers here).
    pub async fn present_users(&self, ours: &str) -> Result<Vec<PresenceRow>> {
        let rows = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_pos FROM presence \
             WHERE state <> 'offline' AND user_id LIKE $1",
        )
        .bind(format!("%:{ours}"))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(presence_row).collect()
    }

    /// Presence rows of this server's users with positions in `(after, up_to]`, oldest first:
    /// what outbound federation routes.
    pub async fn presence_to_route(
        &self,
        ours: &str,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<PresenceRow>> {
        let rows = sqlx::query(
            "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_pos FROM presence \
             WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id LIKE $3 ORDER BY stream_pos LIMIT $4",
        )
        .bind(after)
        .bind(up_to)
        .bind(format!("%:{ours}"))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(presence_row).collect()
    }

    /// The presence rows at these positions (a row rewritten since is no longer at its old one).
    pub async fn presence_at(&self, positions: &[i64]) -> Result<Vec<PresenceRow>> {
        let columns = "user_id, state, status_msg, last_active_ts, currently_active, stream_pos";
        crate::rows_at_positions(self, "presence", columns, positions, presence_row).await
    }

    /// The presence of at most `limit` users of server `ours` joined to a room (what a server
    /// that has just joined it is sent).
    pub async fn joined_presence(&self, room_id: &str, ours: &str, limit: i64) -> Result<Vec<PresenceRow>> {
        let rows = sqlx::query(
            "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.currently_active, p.stream_pos \
             FROM presence p JOIN memberships m ON m.user_id = p.user_id \
             WHERE m.room_id = $1 AND m.membership = 'join' AND p.user_id LIKE $2 \
             ORDER BY p.stream_pos DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(format!("%:{ours}"))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(presence_row).collect()
    }

    /// The stored presence of these users (those never seen have none).
    pub async fn presence_of(&self, users: &[String]) -> Result<Vec<PresenceRow>> {
        let mut out = Vec::new();
        for chunk in users.chunks(500) {
            let sql = format!(
                "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_pos \
                 FROM presence WHERE user_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for user in chunk {
                query = query.bind(user);
            }
            for row in query.fetch_all(self.reader()).await? {
                out.push(presence_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Whether a user shares a joined room with a user of server `ours`.
    pub async fn shares_room_with_server(&self, user_id: &str, ours: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
             WHERE x.user_id = $1 AND x.membership = 'join' AND y.membership = 'join' AND y.user_id LIKE $2 LIMIT 1",
        )
        .bind(user_id)
        .bind(format!("%:{ours}"))
        .fetch_optional(self.reader())
        .await?;
        Ok(found.is_some())
    }

    /// Users who share a joined room with `user_id` (including the user).
    pub async fn room_mates(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT y.user_id FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
             WHERE x.user_id = $1 AND x.membership = 'join' AND y.membership = 'join'",
        )
        .bind(user_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// Presence of `user_id` and everyone sharing a joined room with them, changed in
    /// `(after, up_to]` (everything known when `after` is 0).
    pub async fn presence_of_room_mates(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<PresenceRow>> {
        let rows = sqlx::query(
            "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.currently_active, p.stream_pos \
             FROM presence p \
             WHERE p.stream_pos > $2 AND p.stream_pos <= $3 AND (p.user_id = $1 OR p.user_id IN ( \
               SELECT y.user_id FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
               WHERE x.user_id = $1 AND x.membership = 'join' AND y.membership = 'join'))",
        )
        .bind(user_id)
        .bind(after)
        .bind(up_to)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(presence_row).collect()
    }

    /// Whether two users share at least one room in which both are joined.
    pub async fn share_a_room(&self, a: &str, b: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
             WHERE x.user_id = $1 AND y.user_id = $2 AND x.membership = 'join' AND y.membership = 'join'",
        )
        .bind(a)
        .bind(b)
        .fetch_one(self.reader())
        .await?;
        Ok(n > 0)
    }
}
