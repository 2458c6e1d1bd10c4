//! The user directory: searching users by id or display name among those a searcher may find.

use sqlx::{AssertSqlSafe, Row};

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

/// Rooms whose members anyone may find: public to join, or with world-readable history.
const LISTED_ROOM: &str = "(r.join_rule = 'public' OR r.history_visibility = 'world_readable')";

impl Db {
    /// Users matching `term` (case-insensitive substring of the id or display name) among
    /// those `searcher` may find: others sharing a joined room with them (the searcher finds
    /// themself only as anyone else would, as in Synapse) and those in listed
    /// rooms (public, or world-readable), or — with `all_users` — every active user of this
    /// server and every user of another server it shares a room with. This server's users are
    /// shown with their profile, other servers' with the one their membership event carries, and
    /// only from rooms a user of this server is still joined to (a room the server left is no
    /// longer followed). Users sharing a room come first, then by id. Returns up to `limit + 1`
    /// rows so the caller can tell whether the list was cut.
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
        // Both queries take the same parameters: $1 searcher, $2 pattern, $3 all users, $4 limit.
        let bind = |q: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>| {
            q.bind(searcher.to_owned()).bind(pattern.clone()).bind(all_users as i64).bind(limit + 1)
        };
        let local = sqlx::query(AssertSqlSafe(format!(
            "SELECT u.user_id, u.displayname, u.avatar_url, \
               CASE WHEN EXISTS (SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
                    WHERE x.user_id = $1 AND y.user_id = u.user_id AND u.user_id <> $1 \
                    AND x.membership = 'join' AND y.membership = 'join') \
               THEN 1 ELSE 0 END AS shares_room \
             FROM users u WHERE u.deactivated = 0 \
             AND (LOWER(u.user_id) LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(u.displayname, '')) LIKE $2 ESCAPE '\\') \
             AND ($3 = 1 \
               OR EXISTS (SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id \
                    WHERE x.user_id = $1 AND y.user_id = u.user_id AND u.user_id <> $1 \
                    AND x.membership = 'join' AND y.membership = 'join') \
               OR EXISTS (SELECT 1 FROM memberships m JOIN rooms r ON r.room_id = m.room_id \
                    WHERE m.user_id = u.user_id AND m.membership = 'join' AND {LISTED_ROOM})) \
             ORDER BY shares_room DESC, u.user_id LIMIT $4"
        )));
        let local = bind(local).fetch_all(self.reader()).await?;
        // Another server's user: joined to a room a user of this server is joined to (so the
        // membership is current), found in it by the searcher.
        let remote = sqlx::query(AssertSqlSafe(format!(
            "SELECT user_id, MAX(displayname) AS displayname, MAX(avatar_url) AS avatar_url, \
               MAX(shared) AS shares_room FROM (\
             SELECT m.user_id, m.displayname, m.avatar_url, \
               CASE WHEN EXISTS (SELECT 1 FROM memberships x WHERE x.room_id = m.room_id \
                    AND x.user_id = $1 AND x.membership = 'join') THEN 1 ELSE 0 END AS shared \
             FROM memberships m JOIN rooms r ON r.room_id = m.room_id \
             WHERE m.membership = 'join' AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = m.user_id) \
             AND (LOWER(m.user_id) LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(m.displayname, '')) LIKE $2 ESCAPE '\\') \
             AND EXISTS (SELECT 1 FROM memberships l JOIN users lu ON lu.user_id = l.user_id \
                    WHERE l.room_id = m.room_id AND l.membership = 'join') \
             AND ($3 = 1 OR {LISTED_ROOM} OR EXISTS (SELECT 1 FROM memberships x WHERE x.room_id = m.room_id \
                    AND x.user_id = $1 AND x.membership = 'join'))) found \
             GROUP BY user_id ORDER BY MAX(shared) DESC, user_id LIMIT $4"
        )));
        let remote = bind(remote).fetch_all(self.reader()).await?;
        let mut found = local
            .iter()
            .chain(remote.iter())
            .map(|r| {
                Ok(DirectoryUser {
                    user_id: r.try_get("user_id")?,
                    displayname: r.try_get("displayname")?,
                    avatar_url: r.try_get("avatar_url")?,
                    shares_room: r.try_get::<i64, _>("shares_room")? != 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        found.sort_by(|a, b| b.shares_room.cmp(&a.shares_room).then_with(|| a.user_id.cmp(&b.user_id)));
        found.truncate(limit as usize + 1);
        Ok(found)
    }
}
