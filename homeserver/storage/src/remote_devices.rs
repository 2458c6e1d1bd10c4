//! Other servers' users' device lists, cached while they share a room with a user of this
//! server. Their servers send every change (`m.device_list_update`, each naming the previous
//! change it follows as `prev_id`); a change that follows the cached `stream_id` is applied
//! here, anything else (a gap, a first sight) drops the cache and the list is fetched whole.
//!
//! A cache is *usable* only while it is known complete: some room holds both the remote user
//! and a user of this server, both joined since before the cache was last brought up to date
//! (`synced_pos`). A break in sharing (they left, or this server did) means changes may have
//! gone unsent, so the cache is not trusted until fetched again.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, placeholders};

/// One cached device of a remote user.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDevice {
    pub device_id: String,
    pub display_name: Option<String>,
    /// The signed device keys as their server sent them (JSON), if it has any.
    pub keys: Option<String>,
}

/// A remote user's cached device list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteDeviceList {
    /// Their server's number for the list's newest change.
    pub stream_id: i64,
    pub master_key: Option<String>,
    pub self_signing_key: Option<String>,
    pub devices: Vec<RemoteDevice>,
}

/// One change of a cached list, as an `m.device_list_update` carries it.
#[derive(Debug, Clone)]
pub struct RemoteDeviceUpdate {
    pub device_id: String,
    pub stream_id: i64,
    pub deleted: bool,
    pub display_name: Option<String>,
    pub keys: Option<String>,
}

impl Db {
    /// The cached list's `stream_id` (the end of its prev_id chain), if the user is cached.
    pub async fn remote_device_list_stream_id(&self, user_id: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT stream_id FROM remote_device_lists WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.reader())
            .await?)
    }

    /// Replaces a user's cached list with one fetched whole, known complete from `synced_pos`;
    /// false (nothing changed) if the cache is already further along its chain.
    pub async fn replace_remote_device_list(
        &self,
        user_id: &str,
        list: &RemoteDeviceList,
        synced_pos: i64,
    ) -> Result<bool> {
        let mut tx = self.locked_tx(&format!("rdl:{user_id}")).await?;
        let cached: Option<i64> =
            sqlx::query_scalar("SELECT stream_id FROM remote_device_lists WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if cached.is_some_and(|cached| cached > list.stream_id) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM remote_devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO remote_device_lists (user_id, stream_id, synced_pos, master_key, self_signing_key) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, \
             synced_pos = excluded.synced_pos, master_key = excluded.master_key, \
             self_signing_key = excluded.self_signing_key",
        )
        .bind(user_id)
        .bind(list.stream_id)
        .bind(synced_pos)
        .bind(list.master_key.as_deref())
        .bind(list.self_signing_key.as_deref())
        .execute(&mut *tx)
        .await?;
        for device in &list.devices {
            sqlx::query(
                "INSERT INTO remote_devices (user_id, device_id, display_name, keys) VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(&device.device_id)
            .bind(device.display_name.as_deref())
            .bind(device.keys.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Applies one change to a cached list if the list still ends at `after` (the change's
    /// prev_id); false if it does not (or the user is not cached): the caller resyncs. The
    /// position the cache is known complete from stays: only a whole fetch moves it (a chain
    /// cannot show what a server never sent while no room was shared).
    pub async fn apply_remote_device_update(
        &self,
        user_id: &str,
        after: i64,
        update: &RemoteDeviceUpdate,
    ) -> Result<bool> {
        let mut tx = self.locked_tx(&format!("rdl:{user_id}")).await?;
        let moved = sqlx::query(
            "UPDATE remote_device_lists SET stream_id = $3 WHERE user_id = $1 AND stream_id = $2",
        )
        .bind(user_id)
        .bind(after)
        .bind(update.stream_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        if update.deleted {
            sqlx::query("DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(&update.device_id)
                .execute(&mut *tx)
                .await?;
        } else {
            // A change that names no keys (or no name) keeps what was known.
            sqlx::query(
                "INSERT INTO remote_devices (user_id, device_id, display_name, keys) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET \
                 display_name = COALESCE(excluded.display_name, remote_devices.display_name), \
                 keys = COALESCE(excluded.keys, remote_devices.keys)",
            )
            .bind(user_id)
            .bind(&update.device_id)
            .bind(update.display_name.as_deref())
            .bind(update.keys.as_deref())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Sets a cached user's cross-signing keys (an `m.signing_key_update`); false if the user
    /// is not cached.
    pub async fn set_remote_cross_signing_keys(
        &self,
        user_id: &str,
        master_key: Option<&str>,
        self_signing_key: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE remote_device_lists SET master_key = COALESCE($2, master_key), \
             self_signing_key = COALESCE($3, self_signing_key) WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(master_key)
        .bind(self_signing_key)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Drops a user's cached list (a gap in its chain): the next query fetches it whole.
    pub async fn forget_remote_device_list(&self, user_id: &str) -> Result<()> {
        let mut tx = self.locked_tx(&format!("rdl:{user_id}")).await?;
        sqlx::query("DELETE FROM remote_devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM remote_device_lists WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Which of `users` have cached lists known complete now (see the module header), with
    /// the lists; `ours` is this server's name.
    pub async fn usable_remote_device_lists(
        &self,
        users: &[String],
        ours: &str,
    ) -> Result<HashMap<String, RemoteDeviceList>> {
        let mut out = HashMap::new();
        for chunk in users.chunks(200) {
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT r.user_id, r.stream_id, r.master_key, r.self_signing_key FROM remote_device_lists r \
                 WHERE r.user_id IN ({list}) AND EXISTS (SELECT 1 FROM memberships y \
                 JOIN memberships x ON x.room_id = y.room_id WHERE y.user_id = r.user_id \
                 AND y.membership = 'join' AND y.joined_pos <= r.synced_pos AND x.membership = 'join' \
                 AND x.joined_pos <= r.synced_pos AND x.user_id LIKE $1)"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(format!("%:{ours}"));
            for user in chunk {
                q = q.bind(user);
            }
            for r in q.fetch_all(self.reader()).await? {
                let list = RemoteDeviceList {
                    stream_id: r.try_get("stream_id")?,
                    master_key: r.try_get("master_key")?,
                    self_signing_key: r.try_get("self_signing_key")?,
                    devices: Vec::new(),
                };
                out.insert(r.try_get::<String, _>("user_id")?, list);
            }
            let list = placeholders(1, chunk.len());
            let sql = format!(
                "SELECT user_id, device_id, display_name, keys FROM remote_devices WHERE user_id IN ({list}) \
                 ORDER BY user_id, device_id"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for user in chunk {
                q = q.bind(user);
            }
            for r in q.fetch_all(self.reader()).await? {
                let user: String = r.try_get("user_id")?;
                if let Some(cached) = out.get_mut(&user) {
                    cached.devices.push(RemoteDevice {
                        device_id: r.try_get("device_id")?,
                        display_name: r.try_get("display_name")?,
                        keys: r.try_get("keys")?,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl Db {
    /// Which of `users` share a joined room with a user of `ours` (their servers send this
    /// server their device-list changes).
    pub async fn sharing_a_room(&self, users: &[String], ours: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in users.chunks(200) {
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT DISTINCT y.user_id FROM memberships y JOIN memberships x ON x.room_id = y.room_id \
                 WHERE y.user_id IN ({list}) AND y.membership = 'join' AND x.membership = 'join' \
                 AND x.user_id LIKE $1"
            );
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql)).bind(format!("%:{ours}"));
            for user in chunk {
                q = q.bind(user);
            }
            out.extend(q.fetch_all(self.reader()).await?);
        }
        Ok(out)
    }
}
