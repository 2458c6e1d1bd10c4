//! Room aliases (`#name:server` → room id).

use sqlx::Row;

use crate::{Db, Result, conflict_or};

/// A stored alias.
#[derive(Debug, Clone)]
pub struct AliasRecord {
    pub alias: String,
    pub room_id: String,
    pub creator: String,
}

impl Db {
    /// Creates an alias; `StorageError::Conflict` if it exists.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .bind(now)
            .execute(self.writer())
            .await
            .map_err(conflict_or)?;
        Ok(())
    }

    pub async fn alias(&self, alias: &str) -> Result<Option<AliasRecord>> {
        let row = sqlx::query("SELECT alias, room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(self.reader())
            .await?;
        row.map(|r| {
            Ok(AliasRecord {
                alias: r.try_get("alias")?,
                room_id: r.try_get("room_id")?,
                creator: r.try_get("creator")?,
            })
        })
        .transpose()
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Points every alias of `from` at `to` (a room upgrade); returns the aliases moved.
    pub async fn move_aliases(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let moved = self.room_aliases(from).await?;
        sqlx::query("UPDATE room_aliases SET room_id = $2 WHERE room_id = $1")
            .bind(from)
            .bind(to)
            .execute(self.writer())
            .await?;
        Ok(moved)
    }

    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(self.reader())
            .await?)
    }
}
