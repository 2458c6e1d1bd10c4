//! Server-side key backup (migration 0027): versions and the encrypted room keys in them. The
//! server never reads the keys; it keeps, per session, the better of two uploads (verified over
//! unverified, then the lower first message index, then fewer forwards), and counts an `etag`
//! up with every change of a version's keys.

use sqlx::Row;

use crate::{Db, Result};

/// A backup version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
    pub count: i64,
}

/// One backed-up room key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackedUpKey {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

impl BackedUpKey {
    /// Whether this key should replace `old` (the spec's order of preference).
    pub fn better_than(&self, old: &BackedUpKey) -> bool {
        if self.is_verified != old.is_verified {
            return self.is_verified;
        }
        if self.first_message_index != old.first_message_index {
            return self.first_message_index < old.first_message_index;
        }
        self.forwarded_count < old.forwarded_count
    }
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<BackedUpKey> {
    Ok(BackedUpKey {
        room_id: r.try_get("room_id")?,
        session_id: r.try_get("session_id")?,
        first_message_index: r.try_get("first_message_index")?,
        forwarded_count: r.try_get("forwarded_count")?,
        is_verified: r.try_get::<i64, _>("is_verified")? != 0,
        session_data: r.try_get("session_data")?,
    })
}

impl Db {
    /// Creates the next version (the new current one); its number.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64> {
        let mut tx = self.writer().begin().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM key_backup_versions WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        let version = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// A version (not deleted) with its key count, or the current one when `version` is `None`.
    pub async fn backup_version(&self, user_id: &str, version: Option<i64>) -> Result<Option<BackupVersion>> {
        let row = sqlx::query(
            "SELECT v.version, v.algorithm, v.auth_data, v.etag, \
             (SELECT COUNT(*) FROM key_backup_sessions s WHERE s.user_id = v.user_id AND s.version = v.version) AS n \
             FROM key_backup_versions v WHERE v.user_id = $1 AND v.deleted = 0 AND ($2 < 0 OR v.version = $2) \
             ORDER BY v.version DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(version.unwrap_or(-1))
        .fetch_optional(self.reader())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(BackupVersion {
            version: r.try_get("version")?,
            algorithm: r.try_get("algorithm")?,
            auth_data: r.try_get("auth_data")?,
            etag: r.try_get("etag")?,
            count: r.try_get("n")?,
        }))
    }

    /// Replaces a version's `auth_data`; whether the version exists.
    pub async fn update_backup_version(&self, user_id: &str, version: i64, auth_data: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a version and its keys; whether it existed.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query(
            "UPDATE key_backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores keys in a version, each only if better than the one it would replace, and counts
    /// the etag up if anything changed (one transaction).
    pub async fn put_backup_keys(&self, user_id: &str, version: i64, keys: &[BackedUpKey]) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let mut changed = false;
        for key in keys {
            let old = sqlx::query(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
                 FROM key_backup_sessions WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(old) = old
                && !key.better_than(&key_from_row(&old)?)
            {
                continue;
            }
            sqlx::query(
                "INSERT INTO key_backup_sessions (user_id, version, room_id, session_id, first_message_index, \
                 forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                 first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
                 is_verified = excluded.is_verified, session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(key.is_verified as i64)
            .bind(&key.session_data)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            bump_etag(&mut tx, user_id, version).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keys of a version: all, a room's, or one session's.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackedUpKey>> {
        let rows = sqlx::query(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
             FROM key_backup_sessions WHERE user_id = $1 AND version = $2 \
             AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4) ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Deletes keys of a version: all, a room's, or one session's (etag counted up if any).
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query(
            "DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2 \
             AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            bump_etag(&mut tx, user_id, version).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn bump_etag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    version: i64,
) -> Result<()> {
    sqlx::query("UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verified: bool, index: i64, forwards: i64) -> BackedUpKey {
        BackedUpKey {
            room_id: "!r:x".into(),
            session_id: "s".into(),
            first_message_index: index,
            forwarded_count: forwards,
            is_verified: verified,
            session_data: "{}".into(),
        }
    }

    #[test]
    fn the_better_key_is_kept() {
        assert!(key(true, 9, 9).better_than(&key(false, 0, 0)), "verified first");
        assert!(!key(false, 0, 0).better_than(&key(true, 9, 9)));
        assert!(key(false, 1, 9).better_than(&key(false, 2, 0)), "then the lower first index");
        assert!(key(false, 1, 0).better_than(&key(false, 1, 1)), "then fewer forwards");
        assert!(!key(false, 1, 1).better_than(&key(false, 1, 1)), "an equal key changes nothing");
    }
}
