//! End-to-end encryption's tables (migration 0026): device keys, one-time and fallback keys,
//! and to-device messages. Keys are kept as the JSON their owner uploaded (signed objects: the
//! server never changes them). Only keys of devices that still exist are ever handed out, and a
//! device's rows go with it (see `accounts`).

use sqlx::Row;

use crate::{Db, Result};

/// A to-device message waiting for its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToDeviceRow {
    pub pos: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// One recipient device of a to-device message, with the message's content for it.
#[derive(Debug, Clone)]
pub struct ToDeviceMessage {
    pub user_id: String,
    pub device_id: String,
    pub content: String,
}

/// What one `sendToDevice` request writes besides its recipients: who sent it under which
/// transaction id, the event type, its stream position and when.
#[derive(Debug, Clone, Copy)]
pub struct ToDeviceBatch<'a> {
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub txn_scope: &'a str,
    pub txn_id: &'a str,
    pub event_type: &'a str,
    pub pos: i64,
    pub now_ms: i64,
}

/// A one-time or fallback key: `algorithm:key_id` and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    pub algorithm: String,
    pub key_id: String,
    pub key_json: String,
}

/// Deletes a device's encryption rows (keys and waiting messages) and pushers inside a transaction that
/// deletes the device: all of the user's devices, or all but `except`.
pub(crate) async fn forget_devices(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    except: Option<&str>,
) -> Result<()> {
    for table in ["device_keys", "one_time_keys", "fallback_keys", "to_device_messages", "pushers"] {
        let sql = match except {
            Some(_) => format!("DELETE FROM {table} WHERE user_id = $1 AND device_id <> $2"),
            None => format!("DELETE FROM {table} WHERE user_id = $1"),
        };
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
        let query = match except {
            Some(keep) => query.bind(keep),
            None => query,
        };
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// One claim inside a claiming transaction.
async fn claim_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<OneTimeKey>> {
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(&mut **tx)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let one_time = sqlx::query(
        "SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
         ORDER BY key_id LIMIT 1",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = one_time {
        let key_id: String = row.try_get("key_id")?;
        sqlx::query(
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(&key_id)
        .execute(&mut **tx)
        .await?;
        return Ok(Some(OneTimeKey {
            algorithm: algorithm.to_owned(),
            key_id,
            key_json: row.try_get("key_json")?,
        }));
    }
    let fallback = sqlx::query(
        "SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = fallback else { return Ok(None) };
    sqlx::query("UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3")
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .execute(&mut **tx)
        .await?;
    Ok(Some(OneTimeKey {
        algorithm: algorithm.to_owned(),
        key_id: row.try_get("key_id")?,
        key_json: row.try_get("key_json")?,
    }))
}

/// [`forget_devices`] for a list of devices.
pub(crate) async fn forget_listed_devices(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    devices: &[String],
) -> Result<()> {
    for table in ["device_keys", "one_time_keys", "fallback_keys", "to_device_messages", "pushers"] {
        for device in devices {
            let sql = format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(device).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

impl Db {
    /// Stores a device's keys (replacing what it uploaded before); whether they are new or
    /// different.
    pub async fn put_device_keys(&self, user_id: &str, device_id: &str, key_json: &str) -> Result<bool> {
        let old: Option<String> =
            sqlx::query_scalar("SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(self.writer())
                .await?;
        if old.as_deref() == Some(key_json) {
            return Ok(false);
        }
        // Only for a device that exists: an upload racing the device's deletion leaves nothing.
        sqlx::query(
            "INSERT INTO device_keys (user_id, device_id, key_json) SELECT $1, $2, $3 WHERE EXISTS \
             (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(key_json)
        .execute(self.writer())
        .await?;
        Ok(true)
    }

    /// The keys of `user_id`'s existing devices: device id, key JSON, display name.
    pub async fn device_keys_of(&self, user_id: &str) -> Result<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT k.device_id, k.key_json, d.display_name FROM device_keys k \
             JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("device_id")?, r.try_get("key_json")?, r.try_get("display_name")?)))
            .collect()
    }

    /// Adds one-time keys (a key id already stored is kept as it was).
    pub async fn add_one_time_keys(&self, user_id: &str, device_id: &str, keys: &[OneTimeKey]) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json) \
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS \
                 (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(&key.key_json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets the device's fallback keys (one per algorithm, replacing the old one; a new key is
    /// unused, the same key uploaded again keeps its state).
    pub async fn put_fallback_keys(&self, user_id: &str, device_id: &str, keys: &[OneTimeKey]) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) \
                 SELECT $1, $2, $3, $4, $5, 0 WHERE EXISTS \
                 (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE \
                 SET key_id = excluded.key_id, key_json = excluded.key_json, \
                 used = CASE WHEN fallback_keys.key_id = excluded.key_id THEN fallback_keys.used ELSE 0 END",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(&key.key_json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many one-time keys the device holds, per algorithm.
    pub async fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) AS n FROM one_time_keys WHERE user_id = $1 AND device_id = $2 \
             GROUP BY algorithm ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("algorithm")?, r.try_get("n")?))).collect()
    }

    /// The algorithms of the device's fallback keys not handed out yet.
    pub async fn unused_fallback_algorithms(&self, user_id: &str, device_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 \
             ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// Hands out one key of each asked (device, algorithm) of a user's existing devices: a
    /// one-time key (deleted as it is taken), or else the fallback key (marked used, handed out
    /// again until replaced) — all in one transaction (a client claims a key of every device of
    /// the user it writes to); the answers in the order asked.
    pub async fn claim_keys(
        &self,
        user_id: &str,
        claims: &[(String, String)],
    ) -> Result<Vec<Option<OneTimeKey>>> {
        // One claim per user at a time: two concurrent claims must not read the same key.
        let mut tx = self.locked_tx(&format!("otk:{user_id}")).await?;
        let mut out = Vec::with_capacity(claims.len());
        for (device_id, algorithm) in claims {
            out.push(claim_in(&mut tx, user_id, device_id, algorithm).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Queues a to-device message at `batch.pos` for each recipient (existing devices only),
    /// once per `(sender, sender_device, txn_id)`: whether it was queued (false: a replay).
    pub async fn queue_to_device(
        &self,
        batch: &ToDeviceBatch<'_>,
        recipients: &[ToDeviceMessage],
        remote: &[(String, String)],
    ) -> Result<bool> {
        let ToDeviceBatch { sender, sender_device, txn_scope, txn_id, event_type, pos, now_ms } = *batch;
        let mut tx = self.writer().begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO txn_ids (user_id, device_id, scope, txn_id, event_id, created_ts) \
             VALUES ($1, $2, $3, $4, '', $5) ON CONFLICT DO NOTHING",
        )
        .bind(sender)
        .bind(sender_device)
        .bind(txn_scope)
        .bind(txn_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !fresh {
            return Ok(false);
        }
        // Another server's message ids are kept a week (its retries stop long before); its
        // user's older ones go as it sends new ones, so they do not pile up.
        if sender_device.starts_with(crate::FEDERATION_DEVICE_PREFIX) {
            sqlx::query(
                "DELETE FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND created_ts < $4",
            )
            .bind(sender)
            .bind(sender_device)
            .bind(txn_scope)
            .bind(now_ms - FEDERATION_TXN_ID_LIFETIME_MS)
            .execute(&mut *tx)
            .await?;
        }
        for m in recipients {
            sqlx::query(
                "INSERT INTO to_device_messages (user_id, device_id, pos, sender, event_type, content) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS \
                 (SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2) ON CONFLICT DO NOTHING",
            )
            .bind(&m.user_id)
            .bind(&m.device_id)
            .bind(pos)
            .bind(sender)
            .bind(event_type)
            .bind(&m.content)
            .execute(&mut *tx)
            .await?;
        }
        for (seq, (destination, edu)) in remote.iter().enumerate() {
            sqlx::query(
                "INSERT INTO federation_to_device (destination, stream_pos, seq, edu) VALUES ($1, $2, $3, $4)",
            )
            .bind(destination)
            .bind(pos)
            .bind(seq as i64)
            .bind(edu)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` messages for a device at positions in `(after, upto]`, oldest first.
    pub async fn to_device_for(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceRow>> {
        let rows = sqlx::query(
            "SELECT pos, sender, event_type, content FROM to_device_messages \
             WHERE user_id = $1 AND device_id = $2 AND pos > $3 AND pos <= $4 ORDER BY pos LIMIT $5",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ToDeviceRow {
                    pos: r.try_get("pos")?,
                    sender: r.try_get("sender")?,
                    event_type: r.try_get("event_type")?,
                    content: r.try_get("content")?,
                })
            })
            .collect()
    }

    /// Whether a device has messages at or below `upto` (delivered, waiting to be acknowledged).
    pub async fn has_to_device_upto(&self, user_id: &str, device_id: &str, upto: i64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos <= $3 LIMIT 1",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .fetch_optional(self.reader())
        .await?;
        Ok(found.is_some())
    }

    /// Deletes a device's messages at or below `upto` (its sync acknowledged them).
    pub async fn ack_to_device(&self, user_id: &str, device_id: &str, upto: i64) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND pos <= $3")
                .bind(user_id)
                .bind(device_id)
                .bind(upto)
                .execute(self.writer())
                .await?;
        Ok(done.rows_affected())
    }
}

/// How long an inbound federation to-device message id is remembered (replays refused).
const FEDERATION_TXN_ID_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// The users sharing a joined room with `$1` (and `$1`), as SQL.
const ROOM_MATES: &str = "SELECT y.user_id FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
                          WHERE x.user_id = $1 AND x.membership = 'join' AND y.membership = 'join'";

impl Db {
    /// The position of a user's newest device change (the `stream_id` other servers are told
    /// with their devices, the end of the prev_id chain); 0 if none changed.
    pub async fn device_list_stream_id(&self, user_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(pos), 0) FROM device_list_changes WHERE user_id = $1 AND device_id IS NOT NULL",
        )
        .bind(user_id)
        .fetch_one(self.reader())
        .await?)
    }

    /// Records a change of `user_id`'s keys that only its own devices hear of (a new
    /// user-signing key, a signature of another user's key): never listed to room mates nor
    /// sent to other servers.
    pub async fn record_own_device_list_change(&self, user_id: &str, pos: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_list_changes (user_id, pos, own_only) VALUES ($1, $2, 1) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(pos)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Records that `user_id`'s device list changed: (device, position) pairs, `None` for a
    /// change not about one device (cross-signing keys, another server's user), in one
    /// transaction.
    pub async fn record_device_list_changes(
        &self,
        user_id: &str,
        changes: &[(Option<&str>, i64)],
    ) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for (device_id, pos) in changes {
            sqlx::query(
                "INSERT INTO device_list_changes (user_id, pos, device_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(*pos)
            .bind(*device_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Users whose device lists changed in `(after, upto]` and who share a joined room with
    /// `user_id` now (or are the user).
    pub async fn device_lists_changed_for(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT c.user_id FROM device_list_changes c WHERE c.pos > $2 AND c.pos <= $3 \
             AND (c.user_id = $1 OR (c.own_only = 0 AND c.user_id IN ({ROOM_MATES}))) ORDER BY c.user_id"
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after)
            .bind(upto)
            .fetch_all(self.reader())
            .await?)
    }

    /// What `user_id`'s clients learn about device lists over `(after, upto]`: `changed` — room
    /// mates (and itself) whose devices changed, and new room mates; `left` — users who no
    /// longer share any room with it.
    pub async fn device_list_delta(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let mut changed = self.device_lists_changed_for(user_id, after, upto).await?;
        for mate in self.new_room_mates(user_id, after, upto).await? {
            if !changed.contains(&mate) {
                changed.push(mate);
            }
        }
        Ok((changed, self.lost_room_mates(user_id, after, upto).await?))
    }

    /// Users who became room mates of `user_id` in `(after, upto]`: they joined one of its
    /// rooms, or it joined one of theirs (their devices are news to it); and, as Synapse
    /// counts them, users invited to (or knocking on) one of its rooms then, whose devices it
    /// will encrypt for.
    pub async fn new_room_mates(&self, user_id: &str, after: i64, upto: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT y.user_id FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
             WHERE x.user_id = $1 AND x.membership = 'join' AND y.user_id <> $1 \
             AND ((y.membership = 'join' AND ((y.joined_pos > $2 AND y.joined_pos <= $3) \
                   OR (x.joined_pos > $2 AND x.joined_pos <= $3))) \
               OR (y.membership IN ('invite', 'knock') AND y.stream_pos > $2 AND y.stream_pos <= $3)) \
             ORDER BY y.user_id",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(self.reader())
        .await?)
    }

    /// Users who shared a room with `user_id` until a leave in `(after, upto]` (theirs or its)
    /// and share none now: their devices no longer concern it. Only leaves it could see and
    /// members who were there when it left count: a room it left tells it nothing later.
    pub async fn lost_room_mates(&self, user_id: &str, after: i64, upto: i64) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT y.user_id FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
             WHERE x.user_id = $1 AND y.user_id <> $1 \
             AND ((y.membership IN ('leave', 'ban') AND y.stream_pos > $2 AND y.stream_pos <= $3 \
                   AND x.membership = 'join' AND x.joined_pos < y.stream_pos) \
               OR (x.membership IN ('leave', 'ban') AND x.stream_pos > $2 AND x.stream_pos <= $3 \
                   AND y.membership = 'join' AND y.joined_pos > 0 AND y.joined_pos < x.stream_pos)) \
             AND y.user_id NOT IN ({ROOM_MATES}) ORDER BY y.user_id"
        );
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after)
            .bind(upto)
            .fetch_all(self.reader())
            .await?)
    }
}

impl Db {
    /// A user's cross-signing keys by type (`master`, `self_signing`, `user_signing`).
    pub async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1 ORDER BY key_type",
        )
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("key_type")?, r.try_get("key_json")?))).collect()
    }

    /// Stores cross-signing keys (type, JSON), replacing those of the same types, in one
    /// transaction.
    pub async fn put_cross_signing_keys(&self, user_id: &str, keys: &[(String, String)]) -> Result<()> {
        let mut tx = self.locked_tx(&format!("keys:{user_id}")).await?;
        for (key_type, key_json) in keys {
            sqlx::query(
                "INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(key_type)
            .bind(key_json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Changes the stored JSON of one of `user_id`'s keys under a lock on the user's keys: a
    /// device's keys (by device id) or else a cross-signing key; `change` gets the kind
    /// (`device` or the key's usage) and the JSON and returns the new JSON, or `None` to leave
    /// that key alone. Whether a key was changed.
    pub async fn change_key_json(
        &self,
        user_id: &str,
        device_id: &str,
        change: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<bool> {
        let mut tx = self.locked_tx(&format!("keys:{user_id}")).await?;
        let device: Option<String> =
            sqlx::query_scalar("SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(json) = device {
            let Some(new) = change("device", &json) else { return Ok(false) };
            sqlx::query("UPDATE device_keys SET key_json = $3 WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .bind(new)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(true);
        }
        let rows = sqlx::query("SELECT key_type, key_json FROM cross_signing_keys WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            let (usage, json): (String, String) = (row.try_get("key_type")?, row.try_get("key_json")?);
            if let Some(new) = change(&usage, &json) {
                sqlx::query(
                    "UPDATE cross_signing_keys SET key_json = $3 WHERE user_id = $1 AND key_type = $2",
                )
                .bind(user_id)
                .bind(&usage)
                .bind(new)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}
