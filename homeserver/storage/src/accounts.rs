//! Accounts: users, profiles, devices, access tokens and user-interactive-auth sessions.

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, StorageError, conflict_or, placeholders};

/// A local account.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub created_ts: i64,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// A guest account (see the guest access module).
    pub is_guest: bool,
}

/// A device (a login session) of a user.
#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
    pub last_seen_user_agent: Option<String>,
}

/// Who an access token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
    pub is_admin: bool,
    pub deactivated: bool,
    /// A guest account (limited to the endpoints the spec allows guests).
    pub is_guest: bool,
}

/// A stored UIA session.
#[derive(Debug, Clone)]
pub struct UiaSession {
    pub user_id: Option<String>,
    pub completed: Vec<String>,
    pub request_fingerprint: String,
    pub created_ts: i64,
    /// The body of the request that started the session (JSON), if remembered.
    pub client_dict: Option<String>,
    /// What the operation produced once it succeeded (for registration: the user id), so a retry
    /// is idempotent. Never a secret.
    pub result: Option<String>,
}

/// What a new login creates: a device (if new) and an access token for it, atomically.
pub struct NewLogin<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub display_name: Option<&'a str>,
    pub token_hash: &'a str,
    pub now: i64,
    /// The client's address, recorded as the device's `last_seen_ip`.
    pub ip: Option<&'a str>,
    /// The client's `User-Agent`, recorded with it.
    pub user_agent: Option<&'a str>,
}

/// A new account.
pub struct NewUser<'a> {
    pub user_id: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub displayname: Option<&'a str>,
    pub avatar_url: Option<&'a str>,
    pub now: i64,
}

/// What a password change logs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logout<'a> {
    Nothing,
    /// Every device but the one given (the one changing the password keeps its session).
    AllDevicesExcept(Option<&'a str>),
}

/// An administrator's changes to an account (`None`: unchanged).
#[derive(Debug, Default)]
pub struct UserPatch<'a> {
    pub password_hash: Option<&'a str>,
    pub logout_devices: bool,
    pub is_admin: Option<bool>,
    pub displayname: Option<&'a str>,
    pub avatar_url: Option<&'a str>,
    /// Clear the deactivated flag (a password must come with it).
    pub reactivate: bool,
}

/// Records `user_id` as the result of a registration's UIA session; `Conflict` if another
/// request completed the session first.
async fn claim_uia_session(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    session: &str,
    user_id: &str,
) -> Result<()> {
    let claimed = sqlx::query("UPDATE uia_sessions SET result = $2 WHERE session_id = $1 AND result IS NULL")
        .bind(session)
        .bind(user_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if claimed != 1 {
        return Err(StorageError::Conflict);
    }
    Ok(())
}

/// Inserts (or refreshes) a device and a new token for it; returns how many tokens of that
/// device it replaced.
async fn insert_login(tx: &mut sqlx::Transaction<'static, sqlx::Any>, login: &NewLogin<'_>) -> Result<u64> {
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, \
           last_seen_user_agent) VALUES ($1, $2, $3, $4, $4, $5, $6) \
         ON CONFLICT (user_id, device_id) DO UPDATE SET \
           display_name = COALESCE(excluded.display_name, devices.display_name), \
           last_seen_ts = excluded.last_seen_ts, \
           last_seen_ip = COALESCE(excluded.last_seen_ip, devices.last_seen_ip), \
           last_seen_user_agent = COALESCE(excluded.last_seen_user_agent, devices.last_seen_user_agent)",
    )
    .bind(login.user_id)
    .bind(login.device_id)
    .bind(login.display_name)
    .bind(login.now)
    .bind(login.ip)
    .bind(login.user_agent)
    .execute(&mut **tx)
    .await?;
    // Logging in again on an existing device replaces that device's token.
    let replaced = sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(login.user_id)
        .bind(login.device_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)",
    )
    .bind(login.token_hash)
    .bind(login.user_id)
    .bind(login.device_id)
    .bind(login.now)
    .execute(&mut **tx)
    .await?;
    Ok(replaced)
}

/// Deletes the tokens and devices of a user but `keep`'s.
async fn delete_devices_except(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    keep: Option<&str>,
) -> Result<()> {
    let keep = keep.unwrap_or("");
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2")
        .bind(user_id)
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    crate::e2ee::forget_devices(tx, user_id, Some(keep)).await
}

pub(crate) fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        user_id: row.try_get("user_id")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        deactivated: row.try_get::<i64, _>("deactivated")? != 0,
        created_ts: row.try_get("created_ts")?,
        displayname: row.try_get("displayname")?,
        avatar_url: row.try_get("avatar_url")?,
        is_guest: row.try_get::<i64, _>("is_guest")? != 0,
    })
}

impl Db {
    /// Creates a user; [`StorageError::Conflict`] if the id is taken.
    pub async fn create_user(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        is_admin: bool,
        displayname: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let user = NewUser { user_id, password_hash, is_admin, displayname, avatar_url: None, now };
        self.register_user(user, None, None).await
    }

    /// Creates an account in one transaction with what registration does alongside: recording
    /// it as the result of the registration's UIA session (so retries of that session answer with
    /// this account) and the first login. [`StorageError::Conflict`] if the id is taken or
    /// another request already completed the session; nothing is written then.
    pub async fn register_user(
        &self,
        user: NewUser<'_>,
        uia_session: Option<&str>,
        login: Option<NewLogin<'_>>,
    ) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, created_ts, displayname, avatar_url) \
             VALUES ($1, $2, $3, 0, $4, $5, $6)",
        )
        .bind(user.user_id)
        .bind(user.password_hash)
        .bind(user.is_admin as i64)
        .bind(user.now)
        .bind(user.displayname)
        .bind(user.avatar_url)
        .execute(&mut *tx)
        .await
        .map_err(conflict_or)?;
        if let Some(session) = uia_session {
            claim_uia_session(&mut tx, session, user.user_id).await?;
        }
        if let Some(login) = &login {
            insert_login(&mut tx, login).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates a guest account (no password) with its first login, together.
    pub async fn register_guest(&self, user_id: &str, now: i64, login: NewLogin<'_>) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, deactivated, created_ts, is_guest) \
             VALUES ($1, NULL, 0, 0, $2, 1)",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(conflict_or)?;
        insert_login(&mut tx, &login).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Turns a guest account into a full one with a password, claiming the registration's UIA
    /// session and logging in, all together. False if the user is not (or no longer) a guest.
    pub async fn upgrade_guest(
        &self,
        user_id: &str,
        password_hash: &str,
        uia_session: Option<&str>,
        login: Option<NewLogin<'_>>,
    ) -> Result<bool> {
        let mut tx = self.writer().begin().await?;
        let upgraded = sqlx::query(
            "UPDATE users SET is_guest = 0, password_hash = $2 WHERE user_id = $1 AND is_guest = 1",
        )
        .bind(user_id)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if upgraded != 1 {
            return Ok(false);
        }
        if let Some(session) = uia_session {
            claim_uia_session(&mut tx, session, user_id).await?;
        }
        if let Some(login) = &login {
            insert_login(&mut tx, login).await?;
        }
        tx.commit().await?;
        // Cached owners of the guest's tokens still say "guest".
        self.tokens.invalidate();
        Ok(true)
    }

    /// Whether a local user is a guest.
    pub async fn is_guest(&self, user_id: &str) -> Result<bool> {
        let flag: Option<i64> = sqlx::query_scalar("SELECT is_guest FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.reader())
            .await?;
        Ok(flag == Some(1))
    }

    /// Rooms this server's guests are joined to or invited into.
    pub async fn rooms_with_guests(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT m.room_id FROM memberships m JOIN users u ON u.user_id = m.user_id \
             WHERE m.membership IN ('join', 'invite') AND u.is_guest = 1 ORDER BY m.room_id",
        )
        .fetch_all(self.reader())
        .await?)
    }

    /// This server's guests joined to or invited into a room.
    pub async fn guests_in_room(&self, room_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT m.user_id FROM memberships m JOIN users u ON u.user_id = m.user_id \
             WHERE m.room_id = $1 AND m.membership IN ('join', 'invite') AND u.is_guest = 1 ORDER BY m.user_id",
        )
        .bind(room_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// Sets a password and, in the same transaction, logs out what `logout` says: a password
    /// changed because it leaked must never leave other sessions alive. False if no such user.
    pub async fn set_password(&self, user_id: &str, hash: &str, logout: Logout<'_>) -> Result<bool> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        if let Logout::AllDevicesExcept(keep) = logout {
            delete_devices_except(&mut tx, user_id, keep).await?;
        }
        tx.commit().await?;
        if logout != Logout::Nothing {
            self.tokens.invalidate();
        }
        Ok(done.rows_affected() > 0)
    }

    /// Applies an administrator's changes to an account in one transaction: each field that is
    /// `Some` is set, devices are logged out if asked. False if no such user.
    pub async fn update_user(&self, user_id: &str, patch: &UserPatch<'_>) -> Result<bool> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query(
            "UPDATE users SET \
               password_hash = CASE WHEN $2 = 1 THEN $3 ELSE password_hash END, \
               is_admin = CASE WHEN $4 = 1 THEN $5 ELSE is_admin END, \
               displayname = CASE WHEN $6 = 1 THEN $7 ELSE displayname END, \
               avatar_url = CASE WHEN $8 = 1 THEN $9 ELSE avatar_url END, \
               deactivated = CASE WHEN $10 = 1 THEN 0 ELSE deactivated END \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(patch.password_hash.is_some() as i64)
        .bind(patch.password_hash)
        .bind(patch.is_admin.is_some() as i64)
        .bind(patch.is_admin.unwrap_or(false) as i64)
        .bind(patch.displayname.is_some() as i64)
        .bind(patch.displayname)
        .bind(patch.avatar_url.is_some() as i64)
        .bind(patch.avatar_url)
        .bind(patch.reactivate as i64)
        .execute(&mut *tx)
        .await?;
        if patch.logout_devices {
            delete_devices_except(&mut tx, user_id, None).await?;
        }
        tx.commit().await?;
        self.tokens.invalidate();
        Ok(done.rows_affected() > 0)
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, is_admin, deactivated, created_ts, displayname, avatar_url, is_guest \
             FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(self.reader()).await?)
    }

    pub async fn set_admin(&self, user_id: &str, is_admin: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE users SET is_admin = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(is_admin as i64)
            .execute(self.writer())
            .await?;
        self.tokens.invalidate();
        Ok(done.rows_affected() > 0)
    }

    /// Marks the account deactivated, removes its password, devices and tokens (one transaction).
    pub async fn deactivate_user(&self, user_id: &str) -> Result<bool> {
        let mut tx = self.writer().begin().await?;
        let done = sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        crate::e2ee::forget_devices(&mut tx, user_id, None).await?;
        tx.commit().await?;
        self.tokens.invalidate();
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET displayname = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    pub async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE users SET avatar_url = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(url)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Creates (or refreshes) a device and an access token for it in one transaction.
    pub async fn create_login(&self, login: NewLogin<'_>) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let replaced = insert_login(&mut tx, &login).await?;
        tx.commit().await?;
        // Only a replaced token can be cached; a first login on a device leaves the cache alone.
        if replaced > 0 {
            self.tokens.invalidate();
        }
        Ok(())
    }

    /// Who a token belongs to; answered from [`crate::token_cache`] when looked up recently.
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        if let Some(owner) = self.tokens.get(token_hash) {
            return Ok(Some(owner));
        }
        let generation = self.tokens.generation();
        let owner = self.token_owner_uncached(token_hash).await?;
        if let Some(owner) = &owner {
            self.tokens.put(generation, token_hash, owner.clone());
        }
        Ok(owner)
    }

    async fn token_owner_uncached(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        let row = sqlx::query(
            "SELECT t.user_id, t.device_id, u.is_admin, u.deactivated, u.is_guest \
             FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.reader())
        .await?;
        row.map(|row| {
            Ok(TokenOwner {
                user_id: row.try_get("user_id")?,
                device_id: row.try_get("device_id")?,
                is_admin: row.try_get::<i64, _>("is_admin")? != 0,
                deactivated: row.try_get::<i64, _>("deactivated")? != 0,
                is_guest: row.try_get::<i64, _>("is_guest")? != 0,
            })
        })
        .transpose()
    }

    /// Logs out one device: deletes the device and its tokens.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<bool> {
        self.delete_devices(user_id, &[device_id.to_owned()]).await.map(|n| n > 0)
    }

    /// Deletes several devices and their tokens; returns how many devices existed.
    pub async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> Result<u64> {
        if device_ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer().begin().await?;
        let mut deleted = 0;
        for chunk in device_ids.chunks(500) {
            let list = placeholders(2, chunk.len());
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id IN ({list})"
            )))
            .bind(user_id);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM devices WHERE user_id = $1 AND device_id IN ({list})"
            )))
            .bind(user_id);
            for id in chunk {
                q = q.bind(id);
            }
            deleted += q.execute(&mut *tx).await?.rows_affected();
        }
        crate::e2ee::forget_listed_devices(&mut tx, user_id, device_ids).await?;
        tx.commit().await?;
        self.tokens.invalidate();
        Ok(deleted)
    }

    /// Logs out every device of a user except `keep` (if given).
    pub async fn delete_all_devices(&self, user_id: &str, keep: Option<&str>) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        delete_devices_except(&mut tx, user_id, keep).await?;
        tx.commit().await?;
        self.tokens.invalidate();
        Ok(())
    }

    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices \
             WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    pub async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query("UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn create_uia_session(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        fingerprint: &str,
        client_dict: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO uia_sessions (session_id, user_id, completed, request_fingerprint, created_ts, client_dict) \
             VALUES ($1, $2, '[]', $3, $4, $5)",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(fingerprint)
        .bind(now)
        .bind(client_dict)
        .execute(self.writer())
        .await
        .map_err(conflict_or)?;
        Ok(())
    }

    pub async fn uia_session(&self, session_id: &str) -> Result<Option<UiaSession>> {
        let row = sqlx::query(
            "SELECT user_id, completed, request_fingerprint, created_ts, client_dict, result FROM uia_sessions \
             WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(self.writer())
        .await?;
        row.map(|row| {
            let completed: String = row.try_get("completed")?;
            Ok(UiaSession {
                user_id: row.try_get("user_id")?,
                completed: serde_json::from_str(&completed)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                request_fingerprint: row.try_get("request_fingerprint")?,
                created_ts: row.try_get("created_ts")?,
                client_dict: row.try_get("client_dict")?,
                result: row.try_get("result")?,
            })
        })
        .transpose()
    }

    pub async fn set_uia_completed(&self, session_id: &str, completed: &[String]) -> Result<()> {
        let json = serde_json::to_string(completed).expect("strings serialize");
        sqlx::query("UPDATE uia_sessions SET completed = $2 WHERE session_id = $1")
            .bind(session_id)
            .bind(json)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Ids of all stored UIA sessions (for maintenance and tests).
    pub async fn uia_session_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT session_id FROM uia_sessions").fetch_all(self.reader()).await?)
    }

    pub async fn set_uia_result(&self, session_id: &str, result: &str) -> Result<()> {
        sqlx::query("UPDATE uia_sessions SET result = $2 WHERE session_id = $1")
            .bind(session_id)
            .bind(result)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Deletes a UIA session; false if it was already gone (another request consumed it).
    pub async fn delete_uia_session(&self, session_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops UIA sessions older than `before` (housekeeping).
    pub async fn expire_uia_sessions(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM uia_sessions WHERE created_ts < $1")
            .bind(before)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected())
    }
}

fn device_from_row(row: &sqlx::any::AnyRow) -> Result<Device> {
    Ok(Device {
        device_id: row.try_get("device_id")?,
        display_name: row.try_get("display_name")?,
        last_seen_ts: row.try_get("last_seen_ts")?,
        last_seen_ip: row.try_get("last_seen_ip")?,
        last_seen_user_agent: row.try_get("last_seen_user_agent")?,
    })
}
