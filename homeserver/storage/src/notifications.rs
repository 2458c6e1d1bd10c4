//! Push actions as unread counts and the `/notifications` list. A user's push actions are their
//! own rows (`event_push_actions`) plus the broadcast rows of their rooms (`event_push_broadcast`,
//! one per event for everyone the common outcome fits), their own row winning.

use sqlx::Row;

use crate::{Db, Result};

/// One notification of a user.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub room_id: String,
    pub event_id: String,
    pub stream_pos: i64,
    pub highlight: bool,
    pub thread_id: Option<String>,
    pub actions: String,
}

/// One unread notification of a user in a room.
#[derive(Debug, Clone)]
pub struct UnreadRow {
    pub thread_id: Option<String>,
    pub highlight: bool,
    pub stream_pos: i64,
    pub sender: String,
    /// Not a notification: a redaction in the range.
    pub redaction: bool,
}

impl Db {
    /// Notifications of a user in a room in `(after, up_to]`: the user's own rows, plus the
    /// room's broadcast rows they have no row of their own for; and a row with `redaction` set
    /// for each redaction in the room in that range (it may have taken push actions away).
    pub async fn unread_push_actions(
        &self,
        user_id: &str,
        room_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<UnreadRow>> {
        let rows = sqlx::query(
            "SELECT a.thread_id, a.highlight, a.stream_pos, e.sender, 0 AS redaction \
             FROM event_push_actions a JOIN events e ON e.stream_pos = a.stream_pos \
             WHERE a.user_id = $1 AND a.room_id = $2 AND a.stream_pos > $3 AND a.stream_pos <= $4 \
             AND a.notify = 1 \
             UNION ALL \
             SELECT b.thread_id, b.highlight, b.stream_pos, b.sender, 0 FROM event_push_broadcast b \
             WHERE b.room_id = $2 AND b.stream_pos > $3 AND b.stream_pos <= $4 AND b.sender <> $1 \
             AND NOT EXISTS (SELECT 1 FROM event_push_actions x WHERE x.user_id = $1 AND x.stream_pos = b.stream_pos) \
             UNION ALL \
             SELECT CAST(NULL AS TEXT), 0, stream_pos, sender, 1 FROM events \
             WHERE room_id = $2 AND stream_pos > $3 AND stream_pos <= $4 AND redacts IS NOT NULL",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(after)
        .bind(up_to)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnreadRow {
                    thread_id: r.try_get("thread_id")?,
                    highlight: r.try_get::<i64, _>("highlight")? != 0,
                    stream_pos: r.try_get("stream_pos")?,
                    sender: r.try_get("sender")?,
                    redaction: r.try_get::<i64, _>("redaction")? != 0,
                })
            })
            .collect()
    }

    /// A user's notifications, newest first, below position `before`: their own rows, and the
    /// broadcast rows of rooms they are in (from when they joined).
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>> {
        let rows = sqlx::query(
            "SELECT room_id, event_id, stream_pos, highlight, thread_id, actions FROM event_push_actions \
             WHERE user_id = $1 AND stream_pos < $2 AND notify = 1 AND ($3 = 0 OR highlight = 1) \
             UNION ALL \
             SELECT b.room_id, b.event_id, b.stream_pos, b.highlight, b.thread_id, b.actions \
             FROM event_push_broadcast b JOIN memberships m ON m.room_id = b.room_id \
             WHERE m.user_id = $1 AND m.membership = 'join' AND b.stream_pos > m.joined_pos \
             AND b.stream_pos < $2 AND b.sender <> $1 AND ($3 = 0 OR b.highlight = 1) \
             AND NOT EXISTS (SELECT 1 FROM event_push_actions x WHERE x.user_id = $1 AND x.stream_pos = b.stream_pos) \
             ORDER BY stream_pos DESC LIMIT $4",
        )
        .bind(user_id)
        .bind(before)
        .bind(only_highlight as i64)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(notification_of).collect()
    }

    /// A user's notifications in `(after, up_to]`, oldest first, at most `limit`: what a
    /// pusher is owed. The same rows as [`Db::notifications`] lists.
    pub async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>> {
        let rows = sqlx::query(
            "SELECT room_id, event_id, stream_pos, highlight, thread_id, actions FROM event_push_actions \
             WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND notify = 1 \
             UNION ALL \
             SELECT b.room_id, b.event_id, b.stream_pos, b.highlight, b.thread_id, b.actions \
             FROM event_push_broadcast b JOIN memberships m ON m.room_id = b.room_id \
             WHERE m.user_id = $1 AND m.membership = 'join' AND b.stream_pos > m.joined_pos \
             AND b.stream_pos > $2 AND b.stream_pos <= $3 AND b.sender <> $1 \
             AND NOT EXISTS (SELECT 1 FROM event_push_actions x WHERE x.user_id = $1 AND x.stream_pos = b.stream_pos) \
             ORDER BY stream_pos LIMIT $4",
        )
        .bind(user_id)
        .bind(after)
        .bind(up_to)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(notification_of).collect()
    }

    /// The rooms a user is joined to that may hold unread notifications (one after both the
    /// start of their stay and their newest unthreaded read receipt), with the start of the
    /// stay: the candidates for a push's badge, whose exact counts the unread cache gives.
    pub async fn rooms_with_unread_candidates(&self, user_id: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.room_id, t.joined_pos FROM (SELECT m.room_id, m.joined_pos, \
               COALESCE((SELECT MAX(r.event_pos) FROM receipts r WHERE r.room_id = m.room_id \
                 AND r.user_id = $1 AND r.thread_id = '' \
                 AND r.receipt_type IN ('m.read', 'm.read.private')), 0) AS read_pos \
               FROM memberships m WHERE m.user_id = $1 AND m.membership = 'join') t \
             WHERE EXISTS (SELECT 1 FROM event_push_actions a WHERE a.user_id = $1 \
               AND a.room_id = t.room_id AND a.notify = 1 AND a.stream_pos > t.joined_pos \
               AND a.stream_pos > t.read_pos) \
             OR EXISTS (SELECT 1 FROM event_push_broadcast b WHERE b.room_id = t.room_id \
               AND b.sender <> $1 AND b.stream_pos > t.joined_pos AND b.stream_pos > t.read_pos)",
        )
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("room_id")?, r.try_get("joined_pos")?))).collect()
    }
}

fn notification_of(r: &sqlx::any::AnyRow) -> Result<NotificationRow> {
    Ok(NotificationRow {
        room_id: r.try_get("room_id")?,
        event_id: r.try_get("event_id")?,
        stream_pos: r.try_get("stream_pos")?,
        highlight: r.try_get::<i64, _>("highlight")? != 0,
        thread_id: r.try_get("thread_id")?,
        actions: r.try_get("actions")?,
    })
}
