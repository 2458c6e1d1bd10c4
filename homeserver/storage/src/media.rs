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

/// A generated thumbnail (see migration 0025).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRow {
    pub origin: String,
    pub media_id: String,
    pub width: i64,
    pub height: i64,
    pub method: String,
    pub sha256: String,
    pub content_type: String,
    pub size: i64,
}

impl Db {
    pub async fn thumbnail(
        &self,
        origin: &str,
        media_id: &str,
        width: i64,
        height: i64,
        method: &str,
    ) -> Result<Option<ThumbnailRow>> {
        let row = sqlx::query(
            "SELECT sha256, content_type, size FROM media_thumbnails \
             WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5",
        )
        .bind(origin)
        .bind(media_id)
        .bind(width)
        .bind(height)
        .bind(method)
        .fetch_optional(self.reader())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(ThumbnailRow {
            origin: origin.to_owned(),
            media_id: media_id.to_owned(),
            width,
            height,
            method: method.to_owned(),
            sha256: r.try_get("sha256")?,
            content_type: r.try_get("content_type")?,
            size: r.try_get("size")?,
        }))
    }

    /// Records a thumbnail (a concurrent identical one already recorded is kept) if its media
    /// still exists; whether it was recorded.
    pub async fn insert_thumbnail(&self, t: &ThumbnailRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method, sha256, content_type, size) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS \
             (SELECT 1 FROM media WHERE origin = $1 AND media_id = $2 AND sha256 IS NOT NULL) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&t.origin)
        .bind(&t.media_id)
        .bind(t.width)
        .bind(t.height)
        .bind(&t.method)
        .bind(&t.sha256)
        .bind(&t.content_type)
        .bind(t.size)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks media quarantined (or lifts it); whether the media exists.
    pub async fn set_media_quarantined(
        &self,
        origin: &str,
        media_id: &str,
        quarantined: bool,
    ) -> Result<bool> {
        let done = sqlx::query("UPDATE media SET quarantined = $3 WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .bind(quarantined as i64)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes media and its thumbnails in one transaction; the content hashes they used (for
    /// the caller to remove the files no other row uses), `None` if there was no such media.
    pub async fn delete_media(&self, origin: &str, media_id: &str) -> Result<Option<Vec<String>>> {
        let mut tx = self.writer().begin().await?;
        let mut hashes: Vec<String> =
            sqlx::query_scalar("SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
                .bind(origin)
                .bind(media_id)
                .fetch_all(&mut *tx)
                .await?;
        let own: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM media WHERE origin = $1 AND media_id = $2 RETURNING sha256")
                .bind(origin)
                .bind(media_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(own) = own else { return Ok(None) };
        sqlx::query("DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2")
            .bind(origin)
            .bind(media_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        hashes.extend(own);
        // Markers ("no thumbnail", "the original") have no content.
        hashes.retain(|h| !h.is_empty());
        Ok(Some(hashes))
    }

    /// Whether any media or thumbnail row still uses content of this hash.
    pub async fn content_in_use(&self, sha256: &str) -> Result<bool> {
        let used: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + \
             (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)",
        )
        .bind(sha256)
        .fetch_one(self.writer())
        .await?;
        Ok(used > 0)
    }

    /// Bytes of other servers' media cached (origin other than `local`).
    pub async fn remote_media_bytes(&self, local: &str) -> Result<i64> {
        let total: Option<i64> =
            sqlx::query_scalar("SELECT CAST(SUM(size) AS BIGINT) FROM media WHERE origin <> $1")
                .bind(local)
                .fetch_one(self.reader())
                .await?;
        Ok(total.unwrap_or(0))
    }

    /// Up to `limit` cached remote media ids (origin other than `local`) fetched before
    /// `before`, oldest first; quarantined ones are kept (their row is the quarantine).
    pub async fn remote_media_before(
        &self,
        local: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT origin, media_id FROM media WHERE origin <> $1 AND created_ts < $2 AND quarantined = 0 \
             ORDER BY created_ts LIMIT $3",
        )
        .bind(local)
        .bind(before)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("origin")?, r.try_get("media_id")?))).collect()
    }
}
