//! Read receipts (`m.read`, `m.read.private`), per room, user, type and thread.

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, placeholders};

#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    /// `""` for an unthreaded receipt, `"main"` or a thread root id otherwise.
    pub thread_id: String,
    pub event_id: String,
    pub event_pos: i64,
    pub ts: i64,
    pub stream_pos: i64,
}

/// How far a user's receipts (theirs in one room) mark an event of `thread` (`None`: the main
/// timeline) as read: an unthreaded read receipt, or the receipt of the event's own thread
/// (`main` for the main timeline).
pub fn read_up_to(receipts: &[ReceiptRow], thread: Option<&str>) -> i64 {
    let own_thread = thread.unwrap_or("main");
    receipts
        .iter()
        .filter(|r| r.receipt_type.starts_with("m.read"))
        .filter(|r| r.thread_id.is_empty() || r.thread_id == own_thread)
        .map(|r| r.event_pos)
        .max()
        .unwrap_or(0)
}

fn receipt_from_row(r: &sqlx::any::AnyRow) -> Result<ReceiptRow> {
    Ok(ReceiptRow {
        room_id: r.try_get("room_id")?,
        user_id: r.try_get("user_id")?,
        receipt_type: r.try_get("receipt_type")?,
        thread_id: r.try_get("thread_id")?,
        event_id: r.try_get("event_id")?,
        event_pos: r.try_get("event_pos")?,
        ts: r.try_get("ts")?,
        stream_pos: r.try_get("stream_pos")?,
    })
}

const COLUMNS: &str = "room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos";

impl Db {
    /// Stores a receipt unless the user already has one of this type and thread at a later event
    /// (receipts only move forward). Returns whether it was stored.
    pub async fn set_receipt(&self, r: &ReceiptRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET event_id = excluded.event_id, \
               event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos \
             WHERE receipts.event_pos < excluded.event_pos",
        )
        .bind(&r.room_id)
        .bind(&r.user_id)
        .bind(&r.receipt_type)
        .bind(&r.thread_id)
        .bind(&r.event_id)
        .bind(r.event_pos)
        .bind(r.ts)
        .bind(r.stream_pos)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Receipts in `rooms` that changed in `(after, up_to]` (all current receipts when `after` is 0).
    pub async fn receipts_between(
        &self,
        rooms: &[String],
        after: i64,
        up_to: i64,
    ) -> Result<Vec<ReceiptRow>> {
        let mut out = Vec::new();
        for chunk in rooms.chunks(500) {
            let sql = format!(
                "SELECT {COLUMNS} FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2 AND room_id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(after).bind(up_to);
            for room in chunk {
                q = q.bind(room);
            }
            for row in q.fetch_all(self.reader()).await? {
                out.push(receipt_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// A user's receipts in a room.
    pub async fn user_receipts(&self, room_id: &str, user_id: &str) -> Result<Vec<ReceiptRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM receipts WHERE room_id = $1 AND user_id = $2"
        )))
        .bind(room_id)
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    /// Public receipts of this server's users (`user_id` ending in `:{ours}`) with positions in
    /// `(after, up_to]`, oldest first: what outbound federation routes.
    pub async fn receipts_to_route(
        &self,
        ours: &str,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<ReceiptRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2 \
             AND receipt_type = 'm.read' AND user_id LIKE $3 ORDER BY stream_pos LIMIT $4"
        )))
        .bind(after)
        .bind(up_to)
        .bind(format!("%:{ours}"))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(receipt_from_row).collect()
    }

    /// The receipts at these positions (a receipt moved on since is no longer at its old one).
    pub async fn receipts_at(&self, positions: &[i64]) -> Result<Vec<ReceiptRow>> {
        crate::rows_at_positions(self, "receipts", COLUMNS, positions, receipt_from_row).await
    }
}
