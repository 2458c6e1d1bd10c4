//! Content reports (events, rooms, users) for server administrators.

use sqlx::Row;

use crate::{Db, Result};

#[derive(Debug, Clone)]
pub struct Report {
    pub id: i64,
    pub kind: String,
    pub reporter: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub target_user: Option<String>,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub created_ts: i64,
}

/// A report being filed.
pub struct NewReport<'a> {
    pub kind: &'a str,
    pub reporter: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub target_user: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub score: Option<i64>,
    pub now: i64,
}

impl Db {
    pub async fn add_report(&self, r: NewReport<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO reports (kind, reporter, room_id, event_id, target_user, reason, score, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(r.kind)
        .bind(r.reporter)
        .bind(r.room_id)
        .bind(r.event_id)
        .bind(r.target_user)
        .bind(r.reason)
        .bind(r.score)
        .bind(r.now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Reports of one kind (`event`, `room`, `user`), newest first, and how many there are.
    pub async fn reports(&self, kind: &str, limit: i64, offset: i64) -> Result<(Vec<Report>, i64)> {
        let rows = sqlx::query(
            "SELECT report_id, kind, reporter, room_id, event_id, target_user, reason, score, created_ts \
             FROM reports WHERE kind = $1 ORDER BY report_id DESC LIMIT $2 OFFSET $3",
        )
        .bind(kind)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.reader())
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reports WHERE kind = $1")
            .bind(kind)
            .fetch_one(self.reader())
            .await?;
        let reports = rows
            .iter()
            .map(|r| {
                Ok(Report {
                    id: r.try_get("report_id")?,
                    kind: r.try_get("kind")?,
                    reporter: r.try_get("reporter")?,
                    room_id: r.try_get("room_id")?,
                    event_id: r.try_get("event_id")?,
                    target_user: r.try_get("target_user")?,
                    reason: r.try_get("reason")?,
                    score: r.try_get("score")?,
                    created_ts: r.try_get("created_ts")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((reports, total))
    }
}
