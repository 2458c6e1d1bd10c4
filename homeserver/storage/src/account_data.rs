//! Account data (global and per room) and stored sync filters.

use sqlx::Row;

use crate::{Db, Result};

/// One account-data entry; `room_id` is empty for global data.
#[derive(Debug, Clone)]
pub struct AccountDataRow {
    pub room_id: String,
    pub data_type: String,
    pub content: String,
    pub stream_pos: i64,
}

impl Db {
    /// Reads and rewrites one account-data document atomically. `change` gets the stored
    /// content (`None` if there is none) and returns the new content, `Ok(None)` to leave the
    /// document as it is, or its own error (nothing is written). Concurrent updates of the same
    /// document run one after another ([`Db::locked_tx`]), so no acknowledged change is lost.
    /// `pos` is the stream position allocated by the caller; the row keeps the higher of its
    /// position and `pos`, since updates may commit in another order than they were allocated.
    pub async fn update_account_data<E>(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
        pos: i64,
        change: impl FnOnce(Option<&str>) -> std::result::Result<Option<String>, E>,
    ) -> Result<std::result::Result<Option<String>, E>> {
        let key = format!("account_data\n{user_id}\n{room_id}\n{data_type}");
        let mut tx = self.locked_tx(&key).await?;
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(&mut *tx)
        .await?;
        let content = match change(stored.as_deref()) {
            Ok(Some(content)) => content,
            Ok(None) => return Ok(Ok(None)),
            Err(err) => return Ok(Err(err)),
        };
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, \
               stream_pos = CASE WHEN account_data.stream_pos > excluded.stream_pos \
                 THEN account_data.stream_pos ELSE excluded.stream_pos END",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(&content)
        .bind(pos)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(Some(content)))
    }

    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        data_type: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(self.reader())
        .await?)
    }

    /// One type of global account data for many users at once: `(user_id, content)`.
    pub async fn global_account_data_of(
        &self,
        users: &[String],
        data_type: &str,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in users.chunks(500) {
            let sql = format!(
                "SELECT user_id, content FROM account_data WHERE room_id = '' AND data_type = $1 AND user_id IN ({})",
                crate::placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(data_type);
            for user in chunk {
                q = q.bind(user);
            }
            for row in q.fetch_all(self.reader()).await? {
                out.push((row.try_get("user_id")?, row.try_get("content")?));
            }
        }
        Ok(out)
    }

    /// Account data of a user changed in `(after, up_to]` (all of it when `after` is 0).
    pub async fn account_data_since(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<AccountDataRow>> {
        let rows = sqlx::query(
            "SELECT room_id, data_type, content, stream_pos FROM account_data \
             WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id)
        .bind(after)
        .bind(up_to)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountDataRow {
                    room_id: r.try_get("room_id")?,
                    data_type: r.try_get("data_type")?,
                    content: r.try_get("content")?,
                    stream_pos: r.try_get("stream_pos")?,
                })
            })
            .collect()
    }

    /// Stores a filter and returns its id (per user, counting up from 0). Concurrent uploads of
    /// one user take their ids one after another ([`Db::locked_tx`]).
    pub async fn create_filter(&self, user_id: &str, json: &str) -> Result<i64> {
        let mut tx = self.locked_tx(&format!("filters\n{user_id}")).await?;
        let next: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(next)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(self.reader())
            .await?)
    }
}
