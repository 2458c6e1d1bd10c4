//! `lattice user …` and `lattice federation …`: account administration and the outbound
//! federation queues, on the configured database, without the HTTP API.

use homeserver_client_api::{account::validate_localpart, passwords::hash_password};
use homeserver_core::{ids::random_string, time::now_millis};
use homeserver_storage::StorageError;
use ruma::{OwnedUserId, UserId};

use crate::Server;

/// Errors of admin commands (printed as one line by the binary).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Domain(#[from] homeserver_core::Error),
}

/// Accepts `alice` or `@alice:server`.
fn user_id(server: &Server, name: &str) -> Result<OwnedUserId, AdminError> {
    if name.starts_with('@') {
        let id =
            UserId::parse(name).map_err(|e| AdminError::Invalid(format!("invalid user id {name}: {e}")))?;
        if id.server_name() != server.app.server_name() {
            return Err(AdminError::Invalid(format!("{name} is not a user of this server")));
        }
        return Ok(id);
    }
    validate_localpart(&server.app, &name.to_lowercase()).map_err(|e| AdminError::Invalid(e.message))
}

/// Creates a user; returns its id and the password (generated if none was given).
pub async fn create_user(
    server: &Server,
    name: &str,
    password: Option<String>,
    admin: bool,
) -> Result<(OwnedUserId, String), AdminError> {
    let id = user_id(server, name)?;
    let password = password.unwrap_or_else(|| random_string(20));
    let hash = hash_password(password.clone()).await?;
    match server
        .db
        .create_user(id.as_str(), Some(&hash), admin, Some(id.localpart()), now_millis() as i64)
        .await
    {
        Ok(()) => Ok((id, password)),
        Err(StorageError::Conflict) => Err(AdminError::Exists(id.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Sets a new password (generated if none was given) and logs out every device.
pub async fn reset_password(
    server: &Server,
    name: &str,
    password: Option<String>,
) -> Result<(OwnedUserId, String), AdminError> {
    let id = user_id(server, name)?;
    let password = password.unwrap_or_else(|| random_string(20));
    let hash = hash_password(password.clone()).await?;
    let logout = homeserver_storage::accounts::Logout::AllDevicesExcept(None);
    if !server.db.set_password(id.as_str(), &hash, logout).await? {
        return Err(AdminError::NoSuchUser(id.to_string()));
    }
    Ok((id, password))
}

/// Deactivates a user: removes password, devices and tokens at once. Leaving their rooms means
/// writing room events, which only the serving process may do (it owns the stream positions), so
/// the server does that when it next starts ([`leave_rooms_of_deactivated_users`]).
pub async fn deactivate(server: &Server, name: &str) -> Result<OwnedUserId, AdminError> {
    let id = user_id(server, name)?;
    if !server.db.deactivate_user(id.as_str()).await? {
        return Err(AdminError::NoSuchUser(id.to_string()));
    }
    Ok(id)
}

/// Makes deactivated users (e.g. deactivated from the command line) leave the rooms they are
/// still in. Runs at start-up, before serving.
pub async fn leave_rooms_of_deactivated_users(server: &Server) -> Result<usize, AdminError> {
    let pending = server.db.deactivated_members().await?;
    for (room_id, user_id) in &pending {
        let (Ok(room_id), Ok(user_id)) = (ruma::RoomId::parse(room_id), UserId::parse(user_id)) else {
            continue;
        };
        if let Err(err) = server.app.rooms.leave(&room_id, &user_id, None).await {
            tracing::warn!(%room_id, %user_id, error = %err, "deactivated user could not leave room");
        }
    }
    Ok(pending.len())
}

/// The outbound federation destinations, one line each.
pub async fn destinations_table(server: &Server) -> Result<String, AdminError> {
    let rows = server.db.destinations().await?;
    if rows.is_empty() {
        return Ok("no federation destinations".to_owned());
    }
    let now = now_millis() as i64;
    let mut out = format!(
        "{:<40} {:>8} {:>8} {:>14} {:>14}",
        "destination", "queued", "failures", "retry in (s)", "last ok (s ago)"
    );
    for row in rows {
        let retry =
            if row.retry_at > now { ((row.retry_at - now) / 1000).to_string() } else { "now".to_owned() };
        let last = row
            .last_success_ts
            .map_or_else(|| "never".to_owned(), |ts| ((now - ts).max(0) / 1000).to_string());
        out.push_str(&format!(
            "\n{:<40} {:>8} {:>8} {:>14} {:>14}",
            row.destination, row.queued, row.failures, retry, last
        ));
    }
    Ok(out)
}

/// Clears a destination's backoff.
pub async fn reset_destination(server: &Server, destination: &str) -> Result<String, AdminError> {
    if server.db.reset_backoff(destination).await? {
        Ok(format!("{destination} will be retried at once"))
    } else {
        Err(AdminError::Invalid(format!("{destination} is not a federation destination")))
    }
}
