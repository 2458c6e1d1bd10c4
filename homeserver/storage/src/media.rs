//! The media repository's metadata: one row per media id (see migration 0024). The content is
//! a file named by `sha256` (homeserver-media); a pending asynchronous upload has none yet.

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, StorageError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub origin: String,
    pub media_id: String,
    /// `None` while an asynchronous upload waits for its content.
    pub sha256: Option<String>,
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i64,
    pub uploader: String,
    pub created_ts: i64,
    /// Until when a pending upload may be filled.
    pub expires_ts: Option<i64>,
    pub legacy_visible: bool,
    pub quarantined: bool,
}

const COLUMNS: &str = "origin, media_id, sha256, content_type, filename, size, uploader, created_ts, \
                       expires_ts, legacy_visible, quarantined";

fn media_from_row(r: &sqlx::any::AnyRow) -> Result<MediaRow> {
    Ok(MediaRow {
        origin: r.try_get("origin")?,
        media_id: r.try_get("media_id")?,
        sha256: r.try_get("sha256")?,
        content_type: r.try_get("content_type")?,
        filename: r.try_get("filename")?,
        size: r.try_get("size")?,
        uploader: r.try_get("uploader")?,
        created_ts: r.try_get("created_ts")?,
        expires_ts: r.try_get("expires_ts")?,
        legacy_visible: r.try_get::<i64, _>("legacy_visible")? != 0,
        quarantined: r.try_get::<i64, _>("quarantined")? != 0,
    })
}

impl Db {
    /// Records media (uploaded, or pending when `sha256` is `None`); `Conflict` if the id is taken.
    pub async fn insert_media(&self, m: &MediaRow) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO media (origin, media_id, sha256, content_type, filename, size, uploader, created_ts, \
             expires_ts, legacy_visible, quarantined) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (origin, media_id) DO NOTHING",
        )
        .bind(&m.origin)
        .bind(&m.media_id)
        .bind(&m.sha256)
        .bind(&m.content_type)
        .bind(&m.filename)
        .bind(m.size)
        .bind(&m.uploader)
        .bind(m.created_ts)
        .bind(m.expires_ts)
        .bind(m.legacy_visible as i64)
        .bind(m.quarantined as i64)
        .execute(self.writer())
        .await?;
        match done.rows_affected() {
            0 => Err(StorageError::Conflict),
            _ => Ok(()),
        }
    }

    pub async fn media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRow>> {
        let sql = format!("SELECT {COLUMNS} FROM media WHERE origin = $1 AND media_id = $2");
        let row =
            sqlx::query(AssertSqlSafe(sql)).bind(origin).bind(media_id).fetch_optional(self.reader()).await?;
        row.as_ref().map(media_from_row).transpose()
    }

    /// Gives a pending upload its content (`filled`: the row with its content's hash, type,
    /// name and size), if it is still pending and unexpired at `now`; whether it did.
    pub async fn fill_media(&self, filled: &MediaRow, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE media SET sha256 = $3, content_type = $4, filename = $5, size = $6, expires_ts = NULL \
             WHERE origin = $1 AND media_id = $2 AND sha256 IS NULL AND expires_ts > $7",
        )
        .bind(&filled.origin)
        .bind(&filled.media_id)
        .bind(&filled.sha256)
        .bind(&filled.content_type)
        .bind(&filled.filename)
        .bind(filled.size)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Bytes of media a user uploaded (what their quota counts).
    pub async fn media_bytes_of(&self, uploader: &str) -> Result<i64> {
        let total: Option<i64> =
            sqlx::query_scalar("SELECT CAST(SUM(size) AS BIGINT) FROM media WHERE uploader = $1")
                .bind(uploader)
                .fetch_one(self.reader())
                .await?;
        Ok(total.unwrap_or(0))
    }

    /// A user's pending uploads that have not expired at `now`.
    pub async fn pending_media_of(&self, uploader: &str, now: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts > $2",
        )
        .bind(uploader)
        .bind(now)
        .fetch_one(self.reader())
        .await?)
    }
}
