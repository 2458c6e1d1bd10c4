//! Push actions as unread counts and the `/notifications` list.

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

impl Db {
    /// Notifications of a user in a room after position `after`: `(thread_id, highlight, pos)`.
    pub async fn unread_push_actions(
        &self,
        user_id: &str,
        room_id: &str,
        after: i64,
    ) -> Result<Vec<(Option<String>, bool, i64)>> {
        let rows = sqlx::query(
            "SELECT thread_id, highlight, stream_pos FROM event_push_actions \
             WHERE user_id = $1 AND room_id = $2 AND stream_pos > $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(after)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("thread_id")?,
                    r.try_get::<i64, _>("highlight")? != 0,
                    r.try_get("stream_pos")?,
                ))
            })
            .collect()
    }

    /// A user's notifications, newest first, below position `before`.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>> {
        let rows = sqlx::query(
            "SELECT room_id, event_id, stream_pos, highlight, thread_id, actions FROM event_push_actions \
             WHERE user_id = $1 AND stream_pos < $2 AND ($3 = 0 OR highlight = 1) \
             ORDER BY stream_pos DESC LIMIT $4",
        )
        .bind(user_id)
        .bind(before)
        .bind(only_highlight as i64)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NotificationRow {
                    room_id: r.try_get("room_id")?,
                    event_id: r.try_get("event_id")?,
                    stream_pos: r.try_get("stream_pos")?,
                    highlight: r.try_get::<i64, _>("highlight")? != 0,
                    thread_id: r.try_get("thread_id")?,
                    actions: r.try_get("actions")?,
                })
            })
            .collect()
    }
}
