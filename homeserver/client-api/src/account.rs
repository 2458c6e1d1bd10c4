//! Accounts: registration, login, logout, whoami, password change, deactivation.

use axum::Router;
use homeserver_core::{
    Error, ErrorKind,
    ids::{hash_token, random_string},
    time::now_millis,
};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_storage::{
    StorageError,
    accounts::{Logout, NewLogin, NewUser},
};
use ruma::{
    OwnedUserId, UserId,
    api::client::{
        account::{
            change_password, check_registration_token_validity, deactivate, get_username_availability,
            register, whoami,
        },
        session::{get_login_types, login, logout, logout_all},
    },
};
use serde_json::{Value, json};

use crate::{
    App,
    ratelimit::{Action, address_key},
    uia::{self, DUMMY, PASSWORD, REGISTRATION_TOKEN},
};

/// Passwords longer than this are refused (hashing cost is linear in length).
const MAX_PASSWORD_BYTES: usize = 512;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(register)
        .ruma_route(username_available)
        .ruma_route(registration_token_validity)
        .ruma_route(login_types)
        .ruma_route(login)
        .ruma_route(logout)
        .ruma_route(logout_all)
        .ruma_route(whoami)
        .ruma_route(change_password)
        .ruma_route(deactivate)
}

/// Validates a requested localpart (lower-cased first, as Synapse does).
pub fn validate_localpart(app: &App, localpart: &str) -> Result<OwnedUserId, Error> {
    let invalid = |msg: &str| Error::new(ErrorKind::InvalidUsername, msg);
    if localpart.is_empty() {
        return Err(invalid("User ID cannot be empty"));
    }
    if localpart.starts_with('_') {
        return Err(invalid("User ID may not begin with _"));
    }
    if !localpart.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')) {
        return Err(invalid("User ID can only contain characters a-z, 0-9, or '=_-./+'"));
    }
    let full = format!("@{localpart}:{}", app.server_name());
    if full.len() > 255 {
        return Err(invalid("User ID is too long"));
    }
    UserId::parse(full).map_err(|_| invalid("Invalid user ID"))
}

fn new_device_id() -> String {
    random_string(10).to_uppercase()
}

/// A login about to be stored: a device id and a fresh access token (kept only hashed).
pub struct PreparedLogin {
    pub device_id: String,
    pub token: String,
    token_hash: String,
    display_name: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl PreparedLogin {
    /// A login for `device_id` (a new device if `None`).
    pub fn new(device_id: Option<String>, display_name: Option<&str>) -> Self {
        let token = format!("lat_{}", random_string(40));
        PreparedLogin {
            device_id: device_id.unwrap_or_else(new_device_id),
            token_hash: hash_token(&token),
            token,
            display_name: display_name.map(str::to_owned),
            ip: None,
            user_agent: None,
        }
    }

    /// Records where the login came from: the client's address and user agent.
    pub fn from_client<T>(mut self, req: &homeserver_http::Ruma<T>) -> Self
    where
        T: ruma::api::IncomingRequest,
        T::Authentication: homeserver_http::extract::AuthKind,
    {
        self.ip = req.client_ip.map(|ip| ip.to_string());
        self.user_agent = req.user_agent.clone();
        self
    }

    /// The rows to store for `user_id`.
    pub fn rows<'a>(&'a self, user_id: &'a UserId) -> NewLogin<'a> {
        NewLogin {
            user_id: user_id.as_str(),
            device_id: &self.device_id,
            display_name: self.display_name.as_deref(),
            token_hash: &self.token_hash,
            now: now_millis() as i64,
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
        }
    }
}

/// Creates a device and access token for a user; returns `(device_id, access_token)`.
pub async fn issue_login(
    app: &App,
    user_id: &UserId,
    login: PreparedLogin,
) -> Result<(String, String), Error> {
    app.db.create_login(login.rows(user_id)).await.map_err(Error::from)?;
    // A new device (or a new session of one) is news to the users sharing a room.
    app.live.device_lists.devices_changed(user_id, std::slice::from_ref(&login.device_id)).await?;
    Ok((login.device_id, login.token))
}

/// The registration parameters, from the request merged with what its UIA session remembers
/// of the first request (clients may send them only once).
#[derive(serde::Deserialize, Default)]
struct RegisterParams {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    /// Upgrades the guest this token belongs to (who must be the user registered).
    guest_access_token: Option<String>,
}

/// `POST /_matrix/client/v3/register`
async fn register(app: App, req: Ruma<register::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.kind == register::RegistrationKind::Guest {
        return crate::guests::register_guest(&app, &req).await;
    }
    if !app.config.registration_enabled {
        return Err(Error::forbidden("Registration has been disabled").into());
    }
    let mut body: serde_json::Map<String, Value> = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let session_id =
        body.get("auth").and_then(|a| a.get("session")).and_then(Value::as_str).map(str::to_owned);
    let session = match &session_id {
        Some(id) => app
            .db
            .uia_session(id)
            .await
            .map_err(Error::from)?
            .filter(|s| s.request_fingerprint == req.fingerprint),
        None => None,
    };
    if let Some(Value::Object(remembered)) = session
        .as_ref()
        .and_then(|s| s.client_dict.as_deref())
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    {
        for (key, value) in remembered {
            body.entry(key).or_insert(value);
        }
    }
    let params: RegisterParams = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| Error::bad_json(format!("invalid registration parameters: {e}")))?;
    // A retry of a registration that already succeeded answers for the same account. The session
    // remembers only the user id (never a token); the retry gets a fresh login.
    if let Some(registered) = session.and_then(|s| s.result).and_then(|r| UserId::parse(r).ok()) {
        return Ok(JsonBody(
            registration_response(&app, &registered, &params, login_of(&params).from_client(&req)).await?,
        ));
    }
    app.limit(Action::Register, &address_key(req.client_ip))?;
    let localpart = match &params.username {
        Some(name) => name.to_lowercase(),
        None => random_string(12).to_lowercase(),
    };
    let user_id = validate_localpart(&app, &localpart)?;
    let upgrading = match &params.guest_access_token {
        Some(token) => Some(crate::guests::guest_to_upgrade(&app, token, &user_id).await?),
        None => None,
    };
    if upgrading.is_none() {
        crate::guests::refuse_reserved(&localpart)?;
        if app.db.user(user_id.as_str()).await.map_err(Error::from)?.is_some() {
            return Err(Error::new(ErrorKind::UserInUse, "User ID already taken").into());
        }
    }
    refuse_claimed(&app, &user_id)?;
    let flows: &[&[&str]] =
        if app.config.registration_tokens.is_empty() { &[&[DUMMY]] } else { &[&[REGISTRATION_TOKEN]] };
    let merged = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let completed =
        uia::authenticate(&app, uia::Step { body: &merged, ..uia::Step::of(&req) }, flows, None, true)
            .await?;
    let password = params.password.clone().ok_or_else(|| Error::missing_param("Missing password"))?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::new(ErrorKind::WeakPassword, "Password is too long").into());
    }

    let hash = app.passwords.hash(password).await?;
    // The account, the session's result and the first login commit together: a failure leaves
    // nothing behind, and a retry of the session finds either nothing or all of it.
    let login = (!params.inhibit_login).then(|| login_of(&params).from_client(&req));
    if upgrading.is_some() {
        let rows = login.as_ref().map(|l| l.rows(&user_id));
        if !app
            .db
            .upgrade_guest(user_id.as_str(), &hash, Some(&completed.session), rows)
            .await
            .map_err(Error::from)?
        {
            return Err(Error::forbidden("This account is no longer a guest").into());
        }
        tracing::info!(user_id = %user_id, "upgraded guest to a full account");
        return Ok(JsonBody(registered(&app, &user_id, login)));
    }
    let user = NewUser {
        user_id: user_id.as_str(),
        password_hash: Some(&hash),
        is_admin: false,
        displayname: Some(&localpart),
        avatar_url: None,
        now: now_millis() as i64,
    };
    match app.db.register_user(user, Some(&completed.session), login.as_ref().map(|l| l.rows(&user_id))).await
    {
        Ok(()) => {}
        Err(StorageError::Conflict) => {
            // Another request completed this session first: answer for its account.
            let earlier =
                app.db.uia_session(&completed.session).await.map_err(Error::from)?.and_then(|s| s.result);
            if let Some(registered) = earlier.and_then(|r| UserId::parse(r).ok()) {
                return Ok(JsonBody(
                    registration_response(&app, &registered, &params, login_of(&params).from_client(&req))
                        .await?,
                ));
            }
            return Err(Error::new(ErrorKind::UserInUse, "User ID already taken").into());
        }
        Err(e) => return Err(Error::from(e).into()),
    }
    tracing::info!(user_id = %user_id, "registered new user");
    Ok(JsonBody(registered(&app, &user_id, login)))
}

/// The answer to a registration that stored `login` (if any) for `user_id`.
pub(crate) fn registered(app: &App, user_id: &UserId, login: Option<PreparedLogin>) -> Value {
    match login {
        Some(login) => json!({
            "user_id": user_id,
            "access_token": login.token,
            "device_id": login.device_id,
            "home_server": app.server_name(),
        }),
        None => json!({ "user_id": user_id, "home_server": app.server_name() }),
    }
}

/// The registration response: the user id, and a new login unless `inhibit_login`.
async fn registration_response(
    app: &App,
    user_id: &UserId,
    params: &RegisterParams,
    login: PreparedLogin,
) -> Result<Value, Error> {
    if params.inhibit_login {
        return Ok(json!({ "user_id": user_id, "home_server": app.server_name() }));
    }
    let (device_id, token) = issue_login(app, user_id, login).await?;
    Ok(json!({
        "user_id": user_id,
        "access_token": token,
        "device_id": device_id,
        "home_server": app.server_name(),
    }))
}

/// The login a registration asks for.
fn login_of(params: &RegisterParams) -> PreparedLogin {
    PreparedLogin::new(params.device_id.clone(), params.initial_device_display_name.as_deref())
}

/// Refuses a user id in an application service's or a plugin's exclusive namespace: every way
/// of registering an account asks this (`M_EXCLUSIVE`).
pub(crate) fn refuse_claimed(app: &App, user_id: &ruma::UserId) -> Result<(), Error> {
    match app.rooms.config().claims.user_reserved_by(user_id.as_str()) {
        Some(owner) => Err(Error::new(ErrorKind::Exclusive, format!("This user ID is reserved by {owner}"))),
        None => Ok(()),
    }
}

/// `GET /_matrix/client/v3/register/available`
async fn username_available(
    app: App,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let localpart = req.body.username.to_lowercase();
    let user_id = validate_localpart(&app, &localpart)?;
    crate::guests::refuse_reserved(&localpart)?;
    if app.db.user(user_id.as_str()).await.map_err(Error::from)?.is_some() {
        return Err(Error::new(ErrorKind::UserInUse, "User ID already taken").into());
    }
    refuse_claimed(&app, &user_id)?;
    Ok(JsonBody(json!({ "available": true })))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
async fn registration_token_validity(
    app: App,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<JsonBody, ApiError> {
    app.limit(Action::Anonymous, &address_key(req.client_ip))?;
    let valid = app.config.registration_tokens.contains(&req.body.token);
    Ok(JsonBody(json!({ "valid": valid })))
}

/// `GET /_matrix/client/v3/login`
async fn login_types(_app: App, _req: Ruma<get_login_types::v3::Request>) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(json!({ "flows": [{ "type": PASSWORD }] })))
}

/// The user a login request names, from `identifier` or the legacy `user` field.
fn login_user(app: &App, body: &Value) -> Result<OwnedUserId, Error> {
    let name = match body.get("identifier") {
        Some(identifier) => {
            if identifier.get("type").and_then(Value::as_str) != Some("m.id.user") {
                return Err(Error::new(ErrorKind::Unknown, "Only m.id.user identifiers are supported"));
            }
            identifier.get("user").and_then(Value::as_str)
        }
        None => body.get("user").and_then(Value::as_str),
    }
    .ok_or_else(|| Error::missing_param("Missing user identifier"))?;
    let full = if name.starts_with('@') {
        name.to_owned()
    } else {
        format!("@{}:{}", name.to_lowercase(), app.server_name())
    };
    UserId::parse(full).map_err(|_| Error::forbidden("Invalid username or password"))
}

/// `POST /_matrix/client/v3/login`
async fn login(app: App, req: Ruma<login::v3::Request>) -> Result<JsonBody, ApiError> {
    app.limit(Action::Login, &address_key(req.client_ip))?;
    let body: Value = serde_json::from_slice(&req.raw_body).unwrap_or(Value::Null);
    if body.get("type").and_then(Value::as_str) != Some(PASSWORD) {
        return Err(Error::new(ErrorKind::Unknown, "Unknown login type").into());
    }
    let user_id = login_user(&app, &body)?;
    let password = body
        .get("password")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::missing_param("Missing password"))?
        .to_owned();
    let denied = || Error::forbidden("Invalid username or password");
    let record = app.db.user(user_id.as_str()).await.map_err(Error::from)?.ok_or_else(denied)?;
    if record.deactivated {
        return Err(Error::new(ErrorKind::UserDeactivated, "This account has been deactivated").into());
    }
    let hash = record.password_hash.ok_or_else(denied)?;
    if !app.passwords.check(&app.limiter, &user_id, req.client_ip, password, hash).await? {
        return Err(denied().into());
    }
    let login = PreparedLogin::new(
        req.body.device_id.as_ref().map(|d| d.to_string()),
        req.body.initial_device_display_name.as_deref(),
    )
    .from_client(&req);
    let (device_id, token) = issue_login(&app, &user_id, login).await?;
    Ok(JsonBody(json!({
        "user_id": user_id,
        "access_token": token,
        "device_id": device_id,
        "home_server": app.server_name(),
    })))
}

/// `POST /_matrix/client/v3/logout`
async fn logout(app: App, req: Ruma<logout::v3::Request>) -> Result<JsonBody, ApiError> {
    let Session { user_id, device_id, .. } = &req.auth;
    app.db.delete_device(user_id.as_str(), device_id.as_str()).await.map_err(Error::from)?;
    app.live.device_lists.devices_changed(user_id, &[device_id.to_string()]).await?;
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/logout/all`
async fn logout_all(app: App, req: Ruma<logout_all::v3::Request>) -> Result<JsonBody, ApiError> {
    let logged_out = crate::devices::ids_of(&app, &req.auth.user_id, None).await?;
    app.db.delete_all_devices(req.auth.user_id.as_str(), None).await.map_err(Error::from)?;
    app.live.device_lists.devices_changed(&req.auth.user_id, &logged_out).await?;
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/account/whoami`
async fn whoami(_app: App, req: Ruma<whoami::v3::Request>) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(json!({
        "user_id": req.auth.user_id,
        "device_id": req.auth.device_id,
        "is_guest": false,
    })))
}

/// Endpoints that ruma marks optionally authenticated (for 3PID flows Lattice does not offer)
/// still need a logged-in user here.
fn require_session(session: &Option<Session>) -> Result<&Session, Error> {
    session.as_ref().ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))
}

/// `POST /_matrix/client/v3/account/password`
async fn change_password(app: App, req: Ruma<change_password::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = require_session(&req.auth)?;
    uia::authenticate(&app, uia::Step::of(&req), &[&[PASSWORD]], Some(&session.user_id), false).await?;
    if req.body.new_password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::new(ErrorKind::WeakPassword, "Password is too long").into());
    }
    let hash = app.passwords.hash(req.body.new_password.clone()).await?;
    let logout = match req.body.logout_devices {
        true => Logout::AllDevicesExcept(Some(session.device_id.as_str())),
        false => Logout::Nothing,
    };
    let logged_out = crate::devices::ids_of(&app, &session.user_id, Some(session.device_id.as_str())).await?;
    app.db.set_password(session.user_id.as_str(), &hash, logout).await.map_err(Error::from)?;
    if req.body.logout_devices {
        app.live.device_lists.devices_changed(&session.user_id, &logged_out).await?;
    }
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/account/deactivate`
async fn deactivate(app: App, req: Ruma<deactivate::v3::Request>) -> Result<JsonBody, ApiError> {
    let user_id = require_session(&req.auth)?.user_id.clone();
    uia::authenticate(&app, uia::Step::of(&req), &[&[PASSWORD]], Some(&user_id), false).await?;
    deactivate_account(&app, &user_id).await?;
    Ok(JsonBody(json!({ "id_server_unbind_result": "no-support" })))
}

/// Disables the account, then leaves every room. The account is locked (no password, no
/// tokens) in one transaction first, so a failure while leaving never leaves it usable; rooms
/// it is still in are left at the next start-up if the server stops half-way.
pub async fn deactivate_account(app: &App, user_id: &UserId) -> Result<(), Error> {
    let devices = crate::devices::ids_of(app, user_id, None).await?;
    app.db.deactivate_user(user_id.as_str()).await.map_err(Error::from)?;
    app.live.device_lists.devices_changed(user_id, &devices).await?;
    for row in app.db.memberships_of_user(user_id.as_str()).await.map_err(Error::from)? {
        if matches!(row.membership.as_str(), "join" | "invite" | "knock")
            && let Ok(room_id) = ruma::RoomId::parse(&row.room_id)
            && let Err(err) = app.rooms.leave(&room_id, user_id, None).await
        {
            tracing::warn!(%room_id, error = %err, "could not leave room while deactivating");
        }
    }
    Ok(())
}
