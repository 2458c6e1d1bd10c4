//! Verify keys of other servers (federation): what each key is, how long it may be used, and the
//! signed response it came in.

use sqlx::Row;

use crate::{Db, Result};

/// One stored verify key of another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyRow {
    pub server_name: String,
    /// `ed25519:abc`.
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    /// Until when (ms) the key may sign: events and requests stamped later need a newer key.
    pub valid_until_ts: i64,
    /// When the server stopped using the key (`old_verify_keys`), if it did.
    pub expired_ts: Option<i64>,
    pub fetched_ts: i64,
    /// The signed key response the key was listed in.
    pub response_json: String,
}

fn key_row(r: &sqlx::any::AnyRow) -> Result<ServerKeyRow> {
    Ok(ServerKeyRow {
        server_name: r.try_get("server_name")?,
        key_id: r.try_get("key_id")?,
        public_key: r.try_get("public_key")?,
        valid_until_ts: r.try_get("valid_until_ts")?,
        expired_ts: r.try_get("expired_ts")?,
        fetched_ts: r.try_get("fetched_ts")?,
        response_json: r.try_get("response_json")?,
    })
}

const KEY_COLUMNS: &str =
    "server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response_json";

impl Db {
    /// Stores keys, each replacing the stored key of the same id only if it is valid for longer
    /// (a notary's older copy never shortens what the server itself said) — except that an
    /// expiry always applies, the earliest one winning.
    pub async fn store_server_keys(&self, keys: &[ServerKeyRow]) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, \
                 fetched_ts, response_json) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key, \
                   valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts, \
                   fetched_ts = excluded.fetched_ts, response_json = excluded.response_json \
                 WHERE excluded.valid_until_ts >= server_keys.valid_until_ts",
            )
            .bind(key.server_name.as_str())
            .bind(key.key_id.as_str())
            .bind(key.public_key.as_str())
            .bind(key.valid_until_ts)
            .bind(key.expired_ts)
            .bind(key.fetched_ts)
            .bind(key.response_json.as_str())
            .execute(&mut *tx)
            .await?;
            // An expiry always applies, even from a response valid for less time than the
            // stored one: a key its server retired must stop working.
            if let Some(expired) = key.expired_ts {
                sqlx::query(
                    "UPDATE server_keys SET expired_ts = $3 WHERE server_name = $1 AND key_id = $2 \
                     AND (expired_ts IS NULL OR expired_ts > $3)",
                )
                .bind(key.server_name.as_str())
                .bind(key.key_id.as_str())
                .bind(expired)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every stored key of a server.
    pub async fn server_keys(&self, server_name: &str) -> Result<Vec<ServerKeyRow>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM server_keys WHERE server_name = $1 ORDER BY key_id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(server_name).fetch_all(self.reader()).await?;
        rows.iter().map(key_row).collect()
    }
}
