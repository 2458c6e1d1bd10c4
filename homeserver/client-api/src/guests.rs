//! Guest accounts (the spec's guest access module): `POST /register?kind=guest` creates one; a
//! registration naming the guest's own localpart and carrying its `guest_access_token` upgrades
//! it to a full account with the same id. Which endpoints a guest may call is decided where
//! tokens are resolved (the HTTP layer's guest list); which rooms it may join, by the room
//! model's join path.

use homeserver_core::{Error, ErrorKind, ids::random_digits, time::now_millis};
use homeserver_http::{ApiError, JsonBody, Ruma};
use homeserver_storage::StorageError;
use ruma::{OwnedUserId, UserId, api::client::account::register};

use crate::{
    App,
    account::PreparedLogin,
    ratelimit::{Action, address_key},
};

/// Digits in a guest's localpart; numeric localparts are kept for guests.
const GUEST_ID_DIGITS: usize = 12;

#[derive(serde::Deserialize, Default)]
struct GuestParams {
    initial_device_display_name: Option<String>,
}

/// `POST /register?kind=guest`: a guest account and its first login.
pub(crate) async fn register_guest(
    app: &App,
    req: &Ruma<register::v3::Request>,
) -> Result<JsonBody, ApiError> {
    if !app.config.guest_access {
        return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest access is disabled").into());
    }
    app.limit(Action::Register, &address_key(req.client_ip))?;
    let params: GuestParams = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    // Twelve random digits collide rarely; a collision is retried with others.
    for _ in 0..8 {
        let user_id = UserId::parse(format!("@{}:{}", random_digits(GUEST_ID_DIGITS), app.server_name()))
            .map_err(|e| Error::internal(e.to_string()))?;
        let login = PreparedLogin::new(None, params.initial_device_display_name.as_deref()).from_client(req);
        match app.db.register_guest(user_id.as_str(), now_millis() as i64, login.rows(&user_id)).await {
            Ok(()) => {
                tracing::info!(user_id = %user_id, "registered guest");
                return Ok(JsonBody(crate::account::registered(app, &user_id, Some(login))));
            }
            Err(StorageError::Conflict) => continue,
            Err(e) => return Err(Error::from(e).into()),
        }
    }
    Err(Error::internal("no free guest id").into())
}

/// The guest a registration upgrades: the owner of `guest_access_token`, who must be a guest
/// and the very user being registered (a guest cannot take over another account).
pub(crate) async fn guest_to_upgrade(app: &App, token: &str, user_id: &UserId) -> Result<OwnedUserId, Error> {
    use homeserver_http::AuthState as _;
    let session = app.authenticate(token).await?;
    if !session.is_guest || session.user_id != user_id {
        return Err(Error::forbidden("This guest_access_token does not belong to that guest"));
    }
    Ok(session.user_id)
}

/// Refuses a localpart reserved for guests (all digits, as Synapse reserves them) to anyone
/// registering or checking availability.
pub(crate) fn refuse_reserved(localpart: &str) -> Result<(), Error> {
    if !localpart.is_empty() && localpart.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(ErrorKind::InvalidUsername, "Numeric user IDs are reserved for guest users"));
    }
    Ok(())
}
