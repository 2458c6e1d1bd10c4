//! Pushers: where a user's notifications go (`/pushers`), each with its durable delivery
//! cursor. The notifications themselves are the push actions the room pipeline stored
//! (`notifications`); a pusher's `last_pos` says how far the push sender got through them, so
//! delivery resumes after a restart without skipping or repeating one.

use sqlx::Row;

use crate::{Db, Result};

/// Most pushers one user may have.
pub const MAX_PUSHERS_PER_USER: i64 = 100;

/// One pusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    /// `http` (the only kind this server delivers).
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object as JSON (`url`, `format`, anything else the app put there).
    pub data: String,
    /// The device that set it; the pusher is deleted with the device.
    pub device_id: Option<String>,
    pub created_ts: i64,
    /// Every notification up to this stream position was delivered or given up on.
    pub last_pos: i64,
    /// When delivering the notification after `last_pos` first failed.
    pub failing_since: Option<i64>,
}

/// Names one pusher.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PusherKey {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
}

/// Why a pusher was not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetPusher {
    Set,
    /// The user has [`MAX_PUSHERS_PER_USER`] pushers already.
    TooMany,
}

const COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, device_display_name, \
     profile_tag, lang, data, device_id, created_ts, last_pos, failing_since";

fn pusher_of(r: &sqlx::any::AnyRow) -> Result<PusherRow> {
    Ok(PusherRow {
        user_id: r.try_get("user_id")?,
        app_id: r.try_get("app_id")?,
        pushkey: r.try_get("pushkey")?,
        kind: r.try_get("kind")?,
        app_display_name: r.try_get("app_display_name")?,
        device_display_name: r.try_get("device_display_name")?,
        profile_tag: r.try_get("profile_tag")?,
        lang: r.try_get("lang")?,
        data: r.try_get("data")?,
        device_id: r.try_get("device_id")?,
        created_ts: r.try_get("created_ts")?,
        last_pos: r.try_get("last_pos")?,
        failing_since: r.try_get("failing_since")?,
    })
}

impl Db {
    /// Adds or updates a pusher (`/pushers/set`). Either way it starts at `pusher.last_pos`
    /// (the stream's position when it was set: it is owed only what comes after, as Synapse
    /// restarts an updated pusher) with no failure on record; an update keeps the device that
    /// first set it (another session may edit a phone's pusher; it still goes with the phone).
    /// Unless `append`, other users' pushers with the same app id and pushkey are removed (the
    /// pushkey names one device of the app: its new owner takes it).
    pub async fn set_pusher(&self, pusher: &PusherRow, append: bool) -> Result<SetPusher> {
        let mut tx = self.locked_tx(&format!("pushers:{}", pusher.user_id)).await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            sqlx::query(
                "UPDATE pushers SET kind = $4, app_display_name = $5, device_display_name = $6, \
                 profile_tag = $7, lang = $8, data = $9, created_ts = $10, last_pos = $11, \
                 failing_since = NULL WHERE app_id = $1 AND pushkey = $2 AND user_id = $3",
            )
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .bind(&pusher.user_id)
            .bind(&pusher.kind)
            .bind(&pusher.app_display_name)
            .bind(&pusher.device_display_name)
            .bind(&pusher.profile_tag)
            .bind(&pusher.lang)
            .bind(&pusher.data)
            .bind(pusher.created_ts)
            .bind(pusher.last_pos)
            .execute(&mut *tx)
            .await?;
        } else {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pushers WHERE user_id = $1")
                .bind(&pusher.user_id)
                .fetch_one(&mut *tx)
                .await?;
            if count >= MAX_PUSHERS_PER_USER {
                return Ok(SetPusher::TooMany);
            }
            let sql = format!(
                "INSERT INTO pushers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&pusher.user_id)
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.kind)
                .bind(&pusher.app_display_name)
                .bind(&pusher.device_display_name)
                .bind(&pusher.profile_tag)
                .bind(&pusher.lang)
                .bind(&pusher.data)
                .bind(&pusher.device_id)
                .bind(pusher.created_ts)
                .bind(pusher.last_pos)
                .execute(&mut *tx)
                .await?;
        }
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(SetPusher::Set)
    }

    /// Removes one of a user's pushers; whether it existed.
    pub async fn delete_pusher(&self, key: &PusherKey) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3")
            .bind(&key.app_id)
            .bind(&key.pushkey)
            .bind(&key.user_id)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A user's pushers, oldest first.
    pub async fn pushers(&self, user_id: &str) -> Result<Vec<PusherRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(self.reader()).await?;
        rows.iter().map(pusher_of).collect()
    }

    /// One pusher.
    pub async fn pusher(&self, key: &PusherKey) -> Result<Option<PusherRow>> {
        let sql =
            format!("SELECT {COLUMNS} FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&key.app_id)
            .bind(&key.pushkey)
            .bind(&key.user_id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(pusher_of).transpose()
    }

    /// Every pusher (the push sender looks at each once when it starts).
    pub async fn all_pusher_keys(&self) -> Result<Vec<PusherKey>> {
        let rows =
            sqlx::query("SELECT user_id, app_id, pushkey FROM pushers").fetch_all(self.reader()).await?;
        rows.iter().map(key_of).collect()
    }

    /// Moves a pusher's cursor to `pos` (never back) and clears its failure; whether the
    /// pusher still exists.
    pub async fn advance_pusher(&self, key: &PusherKey, pos: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE pushers SET last_pos = CASE WHEN last_pos < $4 THEN $4 ELSE last_pos END, \
             failing_since = NULL WHERE app_id = $1 AND pushkey = $2 AND user_id = $3",
        )
        .bind(&key.app_id)
        .bind(&key.pushkey)
        .bind(&key.user_id)
        .bind(pos)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records when delivering a pusher's next notification began to fail.
    pub async fn set_pusher_failing(&self, key: &PusherKey, since: i64) -> Result<()> {
        sqlx::query(
            "UPDATE pushers SET failing_since = $4 WHERE app_id = $1 AND pushkey = $2 AND user_id = $3",
        )
        .bind(&key.app_id)
        .bind(&key.pushkey)
        .bind(&key.user_id)
        .bind(since)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The pushers whose users have notifications in `(after, up_to]`: what the push sender
    /// wakes after the stream moved. A user's own notifying rows, and the broadcast rows of
    /// the rooms they were joined to unless their own row says otherwise (a muted room).
    pub async fn pushers_notified(&self, after: i64, up_to: i64) -> Result<Vec<PusherKey>> {
        let rows = sqlx::query(
            "SELECT p.user_id, p.app_id, p.pushkey FROM event_push_actions a \
             JOIN pushers p ON p.user_id = a.user_id \
             WHERE a.stream_pos > $1 AND a.stream_pos <= $2 AND a.notify = 1 \
             UNION \
             SELECT p.user_id, p.app_id, p.pushkey FROM event_push_broadcast b \
             JOIN memberships m ON m.room_id = b.room_id \
             JOIN pushers p ON p.user_id = m.user_id \
             WHERE b.stream_pos > $1 AND b.stream_pos <= $2 AND m.membership = 'join' \
             AND b.stream_pos > m.joined_pos AND b.sender <> m.user_id \
             AND NOT EXISTS (SELECT 1 FROM event_push_actions x \
               WHERE x.user_id = m.user_id AND x.stream_pos = b.stream_pos)",
        )
        .bind(after)
        .bind(up_to)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(key_of).collect()
    }
}

impl Db {
    /// The pushers of users whose read receipts moved in `(after, up_to]`: their badge may
    /// have gone down.
    pub async fn pushers_with_new_receipts(&self, after: i64, up_to: i64) -> Result<Vec<PusherKey>> {
        let rows = sqlx::query(
            "SELECT DISTINCT p.user_id, p.app_id, p.pushkey FROM receipts r \
             JOIN pushers p ON p.user_id = r.user_id \
             WHERE r.stream_pos > $1 AND r.stream_pos <= $2 \
             AND r.receipt_type IN ('m.read', 'm.read.private')",
        )
        .bind(after)
        .bind(up_to)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(key_of).collect()
    }

    /// How many rooms a user is invited to (part of a push's badge, as Synapse counts it).
    pub async fn count_invites(&self, user_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE user_id = $1 AND membership = 'invite'",
        )
        .bind(user_id)
        .fetch_one(self.reader())
        .await?)
    }
}

fn key_of(r: &sqlx::any::AnyRow) -> Result<PusherKey> {
    Ok(PusherKey {
        user_id: r.try_get("user_id")?,
        app_id: r.try_get("app_id")?,
        pushkey: r.try_get("pushkey")?,
    })
}
