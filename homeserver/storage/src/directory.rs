//! The user directory: searching users by id or display name among those a searcher may find.

use sqlx::Row;

use crate::{Db, Result};

/// A user as the directory shows them.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Whether they share a joined room with the searcher.
    pub shares_room: bool,
}

impl Db {
    /// Active users matching `term` (case-insensitive substring of the id or display name):
    /// those sharing a joined room with `searcher`, those in public rooms, and — with `all_users` —
    /// everyone. Users sharing a room come first. Returns up to `limit + 1` rows so the caller
    /// can tell whether the list was cut.
    pub async fn search_user_directory(
        &self,
        searcher: &str,
        term: &str,
        all_users: bool,
        limit: i64,
    ) -> Result<Vec<DirectoryUser>> {
        let pattern = format!(
            "%{}%",
            term.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        let rows = sqlx::query(
            "SELECT u.user_id, u.displayname, u.avatar_url, \
               CASE WHEN EXISTS (SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
                    WHERE x.user_id = $1 AND y.user_id = u.user_id AND x.membership = 'join' AND y.membership = 'join') \
               THEN 1 ELSE 0 END AS shares_room \
             FROM users u WHERE u.deactivated = 0 \
             AND (LOWER(u.user_id) LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(u.displayname, '')) LIKE $2 ESCAPE '\\') \
             AND ($3 = 1 \
               OR EXISTS (SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
                    WHERE x.user_id = $1 AND y.user_id = u.user_id AND x.membership = 'join' AND y.membership = 'join') \
               OR EXISTS (SELECT 1 FROM memberships m JOIN rooms r ON r.room_id = m.room_id \
                    WHERE m.user_id = u.user_id AND m.membership = 'join' AND r.join_rule = 'public')) \
             ORDER BY shares_room DESC, u.user_id LIMIT $4",
        )
        .bind(searcher)
        .bind(&pattern)
        .bind(all_users as i64)
        .bind(limit + 1)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DirectoryUser {
                    user_id: r.try_get("user_id")?,
                    displayname: r.try_get("displayname")?,
                    avatar_url: r.try_get("avatar_url")?,
                    shares_room: r.try_get::<i64, _>("shares_room")? != 0,
                })
            })
            .collect()
    }
}
