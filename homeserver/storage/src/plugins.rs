//! WASM plugins' persistent state: each plugin's delivery cursor and lifecycle flags
//! (`plugin_state`), the events it could not take (`plugin_dead_letters`), its key-value store
//! (`plugin_kv`, versioned for compare-and-set, with expiry) and its timers (`plugin_timers`).
//! Quotas are the host's business; this module reports the sizes it needs.

use homeserver_core::streams::StreamPos;
use sqlx::{AssertSqlSafe, Row};

use crate::{
    Db, Result,
    events::{EVENT_COLUMNS, EventRow, IN_TIMELINE, event_from_row},
};

/// A plugin's stored lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStateRow {
    pub stream_pos: StreamPos,
    pub version: Option<String>,
    pub disabled: bool,
}

/// An event a plugin failed to take after every retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    pub stream_pos: StreamPos,
    pub event_id: String,
    pub room_id: String,
    pub attempts: i64,
    pub error: String,
    pub failed_ts: i64,
}

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub version: i64,
}

/// What a compare-and-set asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvWrite {
    /// Whatever is stored.
    Always,
    /// Only if the stored version is this one (0: nothing stored).
    IfVersion(i64),
}

impl Db {
    /// A plugin's state, created at `start` (the current stream position) the first time.
    pub async fn plugin_state(&self, plugin: &str, start: StreamPos) -> Result<PluginStateRow> {
        sqlx::query("INSERT INTO plugin_state (plugin_id, stream_pos) VALUES ($1, $2) ON CONFLICT (plugin_id) DO NOTHING")
            .bind(plugin)
            .bind(start.get())
            .execute(self.writer())
            .await?;
        let row = sqlx::query("SELECT stream_pos, version, disabled FROM plugin_state WHERE plugin_id = $1")
            .bind(plugin)
            .fetch_one(self.writer())
            .await?;
        Ok(PluginStateRow {
            stream_pos: StreamPos::new(row.try_get("stream_pos")?),
            version: row.try_get("version")?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
        })
    }

    /// Moves a plugin's delivery cursor (never backwards).
    pub async fn set_plugin_cursor(&self, plugin: &str, pos: StreamPos) -> Result<()> {
        sqlx::query("UPDATE plugin_state SET stream_pos = $2 WHERE plugin_id = $1 AND stream_pos < $2")
            .bind(plugin)
            .bind(pos.get())
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Records the plugin version whose migration succeeded.
    pub async fn set_plugin_version(&self, plugin: &str, version: &str) -> Result<()> {
        sqlx::query("UPDATE plugin_state SET version = $2 WHERE plugin_id = $1")
            .bind(plugin)
            .bind(version)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Disables or enables a plugin (kept across restarts).
    pub async fn set_plugin_disabled(&self, plugin: &str, disabled: bool) -> Result<()> {
        sqlx::query("UPDATE plugin_state SET disabled = $2 WHERE plugin_id = $1")
            .bind(plugin)
            .bind(i64::from(disabled))
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Events of the live stream in `(after, up_to]`, in stream order, at most `limit`: what
    /// plugins are offered (each decides which concern it).
    pub async fn stream_events(
        &self,
        after: StreamPos,
        up_to: StreamPos,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_pos > $1 AND stream_pos <= $2 \
             AND ({IN_TIMELINE} OR outlier = 1) ORDER BY stream_pos LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after.get())
            .bind(up_to.get())
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Files an event a plugin could not take.
    pub async fn add_dead_letter(&self, plugin: &str, letter: &DeadLetterRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO plugin_dead_letters (plugin_id, stream_pos, event_id, room_id, attempts, error, failed_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (plugin_id, stream_pos) \
             DO UPDATE SET attempts = excluded.attempts, error = excluded.error, failed_ts = excluded.failed_ts",
        )
        .bind(plugin)
        .bind(letter.stream_pos.get())
        .bind(letter.event_id.as_str())
        .bind(letter.room_id.as_str())
        .bind(letter.attempts)
        .bind(letter.error.as_str())
        .bind(letter.failed_ts)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// A plugin's dead letters, oldest first.
    pub async fn dead_letters(&self, plugin: &str, limit: i64) -> Result<Vec<DeadLetterRow>> {
        let rows = sqlx::query(
            "SELECT stream_pos, event_id, room_id, attempts, error, failed_ts FROM plugin_dead_letters \
             WHERE plugin_id = $1 ORDER BY stream_pos LIMIT $2",
        )
        .bind(plugin)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetterRow {
                    stream_pos: StreamPos::new(r.try_get("stream_pos")?),
                    event_id: r.try_get("event_id")?,
                    room_id: r.try_get("room_id")?,
                    attempts: r.try_get("attempts")?,
                    error: r.try_get("error")?,
                    failed_ts: r.try_get("failed_ts")?,
                })
            })
            .collect()
    }

    /// How many dead letters a plugin has.
    pub async fn dead_letter_count(&self, plugin: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM plugin_dead_letters WHERE plugin_id = $1")
            .bind(plugin)
            .fetch_one(self.reader())
            .await?)
    }

    /// Removes a dead letter (delivered on replay); whether there was one.
    pub async fn remove_dead_letter(&self, plugin: &str, pos: StreamPos) -> Result<bool> {
        let done = sqlx::query("DELETE FROM plugin_dead_letters WHERE plugin_id = $1 AND stream_pos = $2")
            .bind(plugin)
            .bind(pos.get())
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Who of a plugin's users (its bot and puppets, by `users.plugin_owner`) is joined to which
    /// room as of stream position `at`: (room, user) pairs.
    pub async fn plugin_joined_at(&self, plugin: &str, at: StreamPos) -> Result<Vec<(String, String)>> {
        let sql = format!(
            "SELECT room_id, state_key, json FROM events WHERE event_type = 'm.room.member' \
             AND state_key IN (SELECT user_id FROM users WHERE plugin_owner = $1 AND deactivated = 0) \
             AND stream_pos > 0 AND stream_pos <= $2 AND {IN_TIMELINE} ORDER BY stream_pos"
        );
        let rows =
            sqlx::query(AssertSqlSafe(sql)).bind(plugin).bind(at.get()).fetch_all(self.reader()).await?;
        let mut latest = std::collections::BTreeMap::new();
        for row in &rows {
            let json: String = row.try_get("json")?;
            let joined = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .is_some_and(|v| v["content"]["membership"] == "join");
            let key = (row.try_get::<String, _>("room_id")?, row.try_get::<String, _>("state_key")?);
            latest.insert(key, joined);
        }
        Ok(latest.into_iter().filter(|(_, joined)| *joined).map(|(key, _)| key).collect())
    }

    /// Creates a plugin's bot account (no password: nobody logs in as it), or finds the one it
    /// owns. `Ok(false)` if the id belongs to another account.
    pub async fn ensure_plugin_user(
        &self,
        user_id: &str,
        plugin: &str,
        displayname: &str,
        now: i64,
    ) -> Result<bool> {
        sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, created_ts, displayname, plugin_owner) \
             VALUES ($1, NULL, 0, 0, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now)
        .bind(displayname)
        .bind(plugin)
        .execute(self.writer())
        .await?;
        Ok(self.plugin_owner(user_id).await?.as_deref() == Some(plugin))
    }

    /// The active accounts a plugin owns (its bot and its puppets).
    pub async fn plugin_users(&self, plugin: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM users WHERE plugin_owner = $1 AND deactivated = 0")
            .bind(plugin)
            .fetch_all(self.reader())
            .await?)
    }

    /// The plugin that owns this (active) account, if one does.
    pub async fn plugin_owner(&self, user_id: &str) -> Result<Option<String>> {
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT plugin_owner FROM users WHERE user_id = $1 AND deactivated = 0")
                .bind(user_id)
                .fetch_optional(self.reader())
                .await?;
        Ok(owner.flatten())
    }

    /// The live event at a stream position.
    pub async fn event_at(&self, pos: StreamPos) -> Result<Option<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_pos = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(pos.get()).fetch_optional(self.reader()).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// A plugin's value under `key`, unless expired at `now`.
    pub async fn kv_get(&self, plugin: &str, key: &str, now: i64) -> Result<Option<KvEntry>> {
        let row = sqlx::query(
            "SELECT value, version FROM plugin_kv WHERE plugin_id = $1 AND key = $2 \
             AND (expires_ts IS NULL OR expires_ts > $3)",
        )
        .bind(plugin)
        .bind(key)
        .bind(now)
        .fetch_optional(self.reader())
        .await?;
        row.map(|r| Ok(KvEntry { value: r.try_get("value")?, version: r.try_get("version")? })).transpose()
    }

    /// Stores a value if `write` allows; returns the new version, or `None` if the stored
    /// version was not the expected one. An expired entry counts as absent (version 0).
    pub async fn kv_put(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        expires_ts: Option<i64>,
        write: KvWrite,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.locked_tx(&format!("plugin_kv:{plugin}:{key}")).await?;
        let stored: Option<(i64, Option<i64>)> =
            sqlx::query("SELECT version, expires_ts FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get("version")?, r.try_get("expires_ts")?)))
                .transpose()?;
        let live_version = match stored {
            Some((version, expires)) if expires.is_none_or(|e| e > now) => version,
            _ => 0,
        };
        if let KvWrite::IfVersion(expected) = write
            && expected != live_version
        {
            return Ok(None);
        }
        // Versions keep growing across deletes and expiry only while the row exists; a new
        // row starts after whatever a reader could have seen (the old version, if any).
        let version = stored.map_or(0, |(v, _)| v) + 1;
        sqlx::query(
            "INSERT INTO plugin_kv (plugin_id, key, value, version, expires_ts) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value, version = excluded.version, \
             expires_ts = excluded.expires_ts",
        )
        .bind(plugin)
        .bind(key)
        .bind(value.to_vec())
        .bind(version)
        .bind(expires_ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    /// Deletes a value; whether a live one was there.
    pub async fn kv_delete(&self, plugin: &str, key: &str, now: i64) -> Result<bool> {
        let live = self.kv_get(plugin, key, now).await?.is_some();
        sqlx::query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
            .bind(plugin)
            .bind(key)
            .execute(self.writer())
            .await?;
        Ok(live)
    }

    /// Live keys starting with `prefix`, in order, after `after`.
    pub async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
        now: i64,
    ) -> Result<Vec<String>> {
        // Prefix matching by range, not LIKE: keys may hold `%` and `_`.
        let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM plugin_kv WHERE plugin_id = $1 AND key >= $2 AND key <> $3 \
             AND (expires_ts IS NULL OR expires_ts > $4) ORDER BY key LIMIT $5",
        )
        .bind(plugin)
        .bind(lower)
        .bind(after.unwrap_or(""))
        .bind(now)
        .bind(limit.saturating_mul(2).saturating_add(1))
        .fetch_all(self.reader())
        .await?;
        Ok(keys.into_iter().take_while(|k| k.starts_with(prefix)).take(limit as usize).collect())
    }

    /// Bytes a plugin's live values and keys take, for its quota.
    pub async fn kv_usage(&self, plugin: &str, now: i64) -> Result<i64> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(LENGTH(key) + LENGTH(value)) AS BIGINT) FROM plugin_kv WHERE plugin_id = $1 \
             AND (expires_ts IS NULL OR expires_ts > $2)",
        )
        .bind(plugin)
        .bind(now)
        .fetch_one(self.reader())
        .await?;
        Ok(used.unwrap_or(0))
    }

    /// Drops a plugin's expired values.
    pub async fn kv_expire(&self, plugin: &str, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND expires_ts <= $2")
            .bind(plugin)
            .bind(now)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
    }

    /// Sets (or moves) a timer.
    pub async fn set_plugin_timer(&self, plugin: &str, tag: &str, due_ts: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO plugin_timers (plugin_id, tag, due_ts) VALUES ($1, $2, $3) \
             ON CONFLICT (plugin_id, tag) DO UPDATE SET due_ts = excluded.due_ts",
        )
        .bind(plugin)
        .bind(tag)
        .bind(due_ts)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Removes a timer if it is still due at `due_ts` (a timer moved meanwhile stays), or any
    /// timer with the tag when `due_ts` is `None`; whether one was removed.
    pub async fn remove_plugin_timer(&self, plugin: &str, tag: &str, due_ts: Option<i64>) -> Result<bool> {
        let query = match due_ts {
            Some(due) => {
                sqlx::query("DELETE FROM plugin_timers WHERE plugin_id = $1 AND tag = $2 AND due_ts = $3")
                    .bind(plugin)
                    .bind(tag)
                    .bind(due)
            }
            None => sqlx::query("DELETE FROM plugin_timers WHERE plugin_id = $1 AND tag = $2")
                .bind(plugin)
                .bind(tag),
        };
        Ok(query.execute(self.writer()).await?.rows_affected() > 0)
    }

    /// A plugin's timers, soonest first.
    pub async fn plugin_timers(&self, plugin: &str, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT tag, due_ts FROM plugin_timers WHERE plugin_id = $1 ORDER BY due_ts, tag LIMIT $2",
        )
        .bind(plugin)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("tag")?, r.try_get("due_ts")?))).collect()
    }

    /// How many timers a plugin has.
    pub async fn plugin_timer_count(&self, plugin: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM plugin_timers WHERE plugin_id = $1")
            .bind(plugin)
            .fetch_one(self.reader())
            .await?)
    }
}
