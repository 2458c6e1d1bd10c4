//! Outbound federation state: what each destination server is owed (`federation_outbox`), its
//! backoff (`federation_destinations`) and how far the event stream has been routed.

use homeserver_core::streams::StreamPos;
use sqlx::{AssertSqlSafe, Row};

use crate::{
    Db, Result,
    events::{EVENT_COLUMNS, EventRow, IN_TIMELINE, event_from_row},
};

/// One destination's delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRow {
    pub destination: String,
    pub failures: i64,
    /// When the next attempt may be made (ms since the epoch; 0: now).
    pub retry_at: i64,
    pub last_success_ts: Option<i64>,
    /// When the current run of failures began (None: not failing).
    pub failure_ts: Option<i64>,
    /// Events waiting to be delivered.
    pub queued: i64,
}

fn destination_row(r: &sqlx::any::AnyRow) -> Result<DestinationRow> {
    Ok(DestinationRow {
        destination: r.try_get("destination")?,
        failures: r.try_get("failures")?,
        retry_at: r.try_get("retry_at")?,
        last_success_ts: r.try_get("last_success_ts")?,
        failure_ts: r.try_get("failure_ts")?,
        queued: r.try_get("queued")?,
    })
}

const DESTINATION_COLUMNS: &str = "d.destination, d.failures, d.retry_at, d.last_success_ts, d.failure_ts, \
     (SELECT COUNT(*) FROM federation_outbox o WHERE o.destination = d.destination) AS queued";

/// A device-list change of one of this server's users, as routed to other servers.
#[derive(Debug, Clone)]
pub struct DeviceListChange {
    pub user_id: String,
    /// The device it was about; `None`: the user's cross-signing keys.
    pub device_id: Option<String>,
    pub pos: i64,
    /// The user's previous device change, if any.
    pub prev: Option<i64>,
}

impl Db {
    /// How far the event stream has been routed to destinations (None: never).
    pub async fn routed_position(&self) -> Result<Option<StreamPos>> {
        let pos: Option<i64> = sqlx::query_scalar("SELECT stream_pos FROM federation_routed WHERE id = 1")
            .fetch_optional(self.reader())
            .await?;
        Ok(pos.map(StreamPos::new))
    }

    /// Routes a stretch of the stream in one transaction: the owed `(destination, position)`
    /// pairs are queued and the routed position moves to `up_to`.
    pub async fn route(&self, owed: &[(String, StreamPos)], up_to: StreamPos) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for (destination, pos) in owed {
            sqlx::query(
                "INSERT INTO federation_destinations (destination) VALUES ($1) ON CONFLICT (destination) DO NOTHING",
            )
            .bind(destination.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO federation_outbox (destination, stream_pos) VALUES ($1, $2) \
                 ON CONFLICT (destination, stream_pos) DO NOTHING",
            )
            .bind(destination.as_str())
            .bind(pos.get())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO federation_routed (id, stream_pos) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET stream_pos = excluded.stream_pos",
        )
        .bind(up_to.get())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The events to route in `(after, up_to]`: those sent by users of `ours` and every
    /// membership change (which moves servers in and out of rooms), oldest first.
    pub async fn events_to_route(
        &self,
        ours: &str,
        after: StreamPos,
        up_to: StreamPos,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_pos > $1 AND stream_pos <= $2 AND {IN_TIMELINE} \
             AND (sender LIKE $3 OR event_type = 'm.room.member') ORDER BY stream_pos LIMIT $4"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after.get())
            .bind(up_to.get())
            .bind(format!("%:{ours}"))
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The (destination, position) pairs of to-device messages for other servers in
    /// `(after, up_to]`, at most `limit` positions' worth (a position's pairs are never split
    /// between two calls), and how far that covers.
    pub async fn to_device_to_route(
        &self,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<(Vec<(String, i64)>, i64)> {
        let positions: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT stream_pos FROM federation_to_device \
             WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3",
        )
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        let Some(&last) = positions.last() else { return Ok((Vec::new(), up_to)) };
        let rows = sqlx::query(
            "SELECT DISTINCT destination, stream_pos FROM federation_to_device \
             WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos",
        )
        .bind(after)
        .bind(last)
        .fetch_all(self.reader())
        .await?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get("destination")?, r.try_get("stream_pos")?)))
            .collect::<Result<Vec<(String, i64)>>>()?;
        // Fewer positions than the limit: everything up to `up_to` was read.
        Ok((pairs, if (positions.len() as i64) < limit { up_to } else { last }))
    }

    /// The `m.direct_to_device` EDUs for `destination` at these positions: (position, EDU),
    /// in order.
    pub async fn to_device_edus_at(
        &self,
        destination: &str,
        positions: &[i64],
    ) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        for chunk in positions.chunks(100) {
            let list = crate::placeholders(2, chunk.len());
            let sql = format!(
                "SELECT stream_pos, edu FROM federation_to_device WHERE destination = $1 \
                 AND stream_pos IN ({list}) ORDER BY stream_pos, seq"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(destination);
            for pos in chunk {
                q = q.bind(*pos);
            }
            for r in q.fetch_all(self.reader()).await? {
                out.push((r.try_get("stream_pos")?, r.try_get("edu")?));
            }
        }
        Ok(out)
    }

    /// Device-list changes of users of `ours` in `(after, up_to]`: (user, position).
    pub async fn device_list_changes_to_route(
        &self,
        ours: &str,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT user_id, pos FROM device_list_changes WHERE pos > $1 AND pos <= $2 AND user_id LIKE $3 \
             AND own_only = 0 \
             ORDER BY pos LIMIT $4",
        )
        .bind(after)
        .bind(up_to)
        .bind(format!("%:{ours}"))
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("user_id")?, r.try_get("pos")?))).collect()
    }

    /// The device-list changes at these positions, in order, each with the position of the
    /// user's previous device change (its `prev_id`).
    pub async fn device_list_changes_at(&self, positions: &[i64]) -> Result<Vec<DeviceListChange>> {
        let mut out = Vec::new();
        for chunk in positions.chunks(100) {
            let list = crate::placeholders(1, chunk.len());
            let sql = format!(
                "SELECT c.user_id, c.device_id, c.pos, (SELECT MAX(p.pos) FROM device_list_changes p \
                 WHERE p.user_id = c.user_id AND p.pos < c.pos AND p.device_id IS NOT NULL) AS prev \
                 FROM device_list_changes c WHERE c.pos IN ({list}) ORDER BY c.pos"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for pos in chunk {
                q = q.bind(*pos);
            }
            for r in q.fetch_all(self.reader()).await? {
                out.push(DeviceListChange {
                    user_id: r.try_get("user_id")?,
                    device_id: r.try_get("device_id")?,
                    pos: r.try_get("pos")?,
                    prev: r.try_get("prev")?,
                });
            }
        }
        Ok(out)
    }

    /// A destination's state (None: unknown).
    pub async fn destination(&self, destination: &str) -> Result<Option<DestinationRow>> {
        let sql =
            format!("SELECT {DESTINATION_COLUMNS} FROM federation_destinations d WHERE d.destination = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(destination).fetch_optional(self.reader()).await?;
        row.as_ref().map(destination_row).transpose()
    }

    /// Every known destination.
    pub async fn destinations(&self) -> Result<Vec<DestinationRow>> {
        let sql =
            format!("SELECT {DESTINATION_COLUMNS} FROM federation_destinations d ORDER BY d.destination");
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
        rows.iter().map(destination_row).collect()
    }

    /// The oldest positions a destination is owed.
    pub async fn outbox(&self, destination: &str, limit: i64) -> Result<Vec<StreamPos>> {
        let positions: Vec<i64> = sqlx::query_scalar(
            "SELECT stream_pos FROM federation_outbox WHERE destination = $1 ORDER BY stream_pos LIMIT $2",
        )
        .bind(destination)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        Ok(positions.into_iter().map(StreamPos::new).collect())
    }

    /// Records a delivered transaction: what it carried (up to `up_to`) leaves the outbox and
    /// the backoff is reset.
    pub async fn delivered(&self, destination: &str, up_to: StreamPos, now: i64) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        for table in ["federation_outbox", "federation_to_device"] {
            let sql = format!("DELETE FROM {table} WHERE destination = $1 AND stream_pos <= $2");
            sqlx::query(AssertSqlSafe(sql)).bind(destination).bind(up_to.get()).execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE federation_destinations SET failures = 0, retry_at = 0, last_success_ts = $2, failure_ts = NULL \
             WHERE destination = $1",
        )
        .bind(destination)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Catch-up after an outage: keeps the newest `keep` positions a destination is owed, the
    /// newest event of each room among the rest, and every position still holding someone's
    /// current receipt or presence, a to-device message (never dropped: nothing else would
    /// bring them), and each user's newest device change and newest cross-signing change (the
    /// older ones' gap in the `prev_id` chain makes the destination fetch the whole list);
    /// drops the others (the destination fetches the events between with `get_missing_events`
    /// and backfill). Returns how many were dropped.
    pub async fn compact_outbox(&self, destination: &str, keep: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM federation_outbox WHERE destination = $1 \
             AND stream_pos < (SELECT stream_pos FROM federation_outbox WHERE destination = $1 \
                               ORDER BY stream_pos DESC LIMIT 1 OFFSET $2) \
             AND stream_pos NOT IN (SELECT MAX(e.stream_pos) FROM federation_outbox o \
                                    JOIN events e ON e.stream_pos = o.stream_pos \
                                    WHERE o.destination = $1 GROUP BY e.room_id) \
             AND stream_pos NOT IN (SELECT stream_pos FROM receipts) \
             AND stream_pos NOT IN (SELECT stream_pos FROM presence) \
             AND stream_pos NOT IN (SELECT stream_pos FROM federation_to_device WHERE destination = $1) \
             AND stream_pos NOT IN (SELECT MAX(c.pos) FROM federation_outbox o \
                                    JOIN device_list_changes c ON c.pos = o.stream_pos \
                                    WHERE o.destination = $1 GROUP BY c.user_id, c.device_id IS NULL)",
        )
        .bind(destination)
        .bind(keep)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// Lets a destination be tried at once (its failure count stays until a delivery succeeds,
    /// so a retry that fails backs off from where it was); false if it is not known.
    pub async fn reset_backoff(&self, destination: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE federation_destinations SET retry_at = 0 WHERE destination = $1")
            .bind(destination)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a failed attempt and when to try again.
    pub async fn delivery_failed(
        &self,
        destination: &str,
        failures: i64,
        retry_at: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE federation_destinations SET failures = $2, retry_at = $3, failure_ts = COALESCE(failure_ts, $4) \
             WHERE destination = $1",
        )
            .bind(destination)
            .bind(failures)
            .bind(retry_at)
            .bind(now)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// The users joined to a room, for routing.
    pub async fn joined_users(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'")
            .bind(room_id)
            .fetch_all(self.reader())
            .await?)
    }

    /// Marks an event to forward to the room's other servers once it is placed.
    pub async fn mark_forward(&self, event_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_forward (event_id) VALUES ($1) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Whether an event is marked for forwarding.
    pub async fn is_forwarded(&self, event_id: &str) -> Result<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT event_id FROM federation_forward WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(self.reader())
                .await?;
        Ok(found.is_some())
    }

    /// Removes forwarding marks (their events are routed).
    pub async fn forget_forwarded(&self, event_ids: &[String]) -> Result<()> {
        for event_id in event_ids {
            sqlx::query("DELETE FROM federation_forward WHERE event_id = $1")
                .bind(event_id)
                .execute(self.writer())
                .await?;
        }
        Ok(())
    }
}
