//! User administration: `GET /_synapse/admin/v2/users` (paged, filtered, ordered),
//! `GET/PUT /_synapse/admin/v2/users/{userId}` (query; create or modify),
//! `POST /_synapse/admin/v1/deactivate/{userId}`, `POST /_synapse/admin/v1/reset_password/{userId}`,
//! `GET /_synapse/admin/v1/users/{userId}/joined_rooms`, and whois (`/_synapse/admin/v1/whois`
//! and the client-server `/_matrix/client/v3/admin/whois`, where users may also ask about
//! themselves).

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    routing::{get, post},
};
use homeserver_core::{Error, ErrorKind, time::now_millis};
use homeserver_http::{ApiError, Authenticated};
use homeserver_storage::{
    StorageError,
    accounts::{Logout, NewUser, User, UserPatch},
    admin::UserQuery,
};
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Page, body, query, require_admin};
use crate::{
    App,
    account::{deactivate_account, validate_localpart},
};

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_synapse/admin/v2/users", get(list))
        .route("/_synapse/admin/v2/users/{user_id}", get(query_user).put(put_user))
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route("/_synapse/admin/v1/reset_password/{user_id}", post(reset_password))
        .route("/_synapse/admin/v1/users/{user_id}/joined_rooms", get(joined_rooms))
        .route("/_synapse/admin/v1/whois/{user_id}", get(whois))
        .route("/_matrix/client/v3/admin/whois/{user_id}", get(whois))
        .route("/_matrix/client/r0/admin/whois/{user_id}", get(whois))
}

/// A user as Synapse's admin API shows one.
fn user_json(u: &User) -> Value {
    json!({
        "name": u.user_id,
        "displayname": u.displayname,
        "avatar_url": u.avatar_url,
        "admin": u.is_admin,
        "deactivated": u.deactivated,
        "is_guest": u.is_guest,
        "user_type": null,
        "shadow_banned": false,
        "locked": false,
        "erased": false,
        "creation_ts": u.created_ts,
        "appservice_id": null,
        "threepids": [],
        "external_ids": [],
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
    })
}

fn parse_user(app: &App, raw: &str) -> Result<OwnedUserId, Error> {
    let user = UserId::parse(raw).map_err(|_| Error::invalid_param(format!("{raw} is not a user id")))?;
    if !app.is_local(&user) {
        return Err(Error::invalid_param("Can only look up local users"));
    }
    Ok(user)
}

async fn existing_user(app: &App, user: &UserId) -> Result<User, Error> {
    app.db.user(user.as_str()).await.map_err(Error::from)?.ok_or_else(|| Error::not_found("User not found"))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<String>,
    name: Option<String>,
    user_id: Option<String>,
    deactivated: Option<bool>,
    admins: Option<bool>,
    order_by: Option<String>,
    /// Lattice has no guests; `guests=false` changes nothing.
    #[serde(default)]
    #[allow(dead_code)]
    guests: Option<bool>,
}

/// `GET /_synapse/admin/v2/users`
async fn list(
    State(app): State<App>,
    auth: Authenticated,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let q = query(q)?;
    let page = Page { from: q.from, limit: q.limit, dir: q.dir.clone() };
    let offset = page.offset()?;
    let limit = page.limit(100)?;
    let order_by = q.order_by.clone().unwrap_or_else(|| "name".to_owned());
    if !["name", "displayname", "creation_ts", "admin", "deactivated"].contains(&order_by.as_str()) {
        return Err(Error::invalid_param(format!("unsupported order_by {order_by}")).into());
    }
    let user_query = UserQuery {
        offset,
        limit,
        name: q.name.clone().or(q.user_id.clone()),
        include_deactivated: q.deactivated.unwrap_or(false),
        admins: q.admins,
        order_by,
        descending: page.descending()?,
    };
    let (users, total) = app.db.list_users(&user_query).await.map_err(Error::from)?;
    let mut out = json!({ "users": users.iter().map(user_json).collect::<Vec<_>>(), "total": total });
    if offset + (users.len() as i64) < total {
        out["next_token"] = json!((offset + users.len() as i64).to_string());
    }
    Ok(Json(out))
}

/// `GET /_synapse/admin/v2/users/{userId}`
async fn query_user(
    State(app): State<App>,
    auth: Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let user = parse_user(&app, &user_id)?;
    Ok(Json(user_json(&existing_user(&app, &user).await?)))
}

#[derive(Deserialize, Default)]
struct PutUser {
    password: Option<String>,
    logout_devices: Option<bool>,
    displayname: Option<String>,
    avatar_url: Option<String>,
    admin: Option<bool>,
    deactivated: Option<bool>,
}

/// `PUT /_synapse/admin/v2/users/{userId}`: creates the account (201) or changes it (200).
async fn put_user(
    State(app): State<App>,
    auth: Authenticated,
    Path(user_id): Path<String>,
    raw: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let admin = require_admin(auth)?;
    let user = parse_user(&app, &user_id)?;
    let req: PutUser = body(&raw)?;
    let existing = app.db.user(user.as_str()).await.map_err(Error::from)?;
    // Everything that can refuse the request is checked, and the password hashed, before
    // anything is written; the account's own fields then change in one transaction.
    let hash = match req.password.clone() {
        Some(password) => Some(app.passwords.hash(password).await?),
        None => None,
    };
    let status = match existing {
        None => {
            validate_localpart(&app, user.localpart())?;
            let displayname = req.displayname.clone().unwrap_or_else(|| user.localpart().to_owned());
            let new_user = NewUser {
                user_id: user.as_str(),
                password_hash: hash.as_deref(),
                is_admin: req.admin.unwrap_or(false),
                displayname: Some(&displayname),
                avatar_url: req.avatar_url.as_deref(),
                now: now_millis() as i64,
            };
            match app.db.register_user(new_user, None, None).await {
                Ok(()) => {}
                Err(StorageError::Conflict) => {
                    return Err(Error::new(ErrorKind::UserInUse, "User ID already taken").into());
                }
                Err(e) => return Err(Error::from(e).into()),
            }
            StatusCode::CREATED
        }
        Some(current) => {
            let deactivate = req.deactivated == Some(true) && !current.deactivated;
            let reactivate = req.deactivated == Some(false) && current.deactivated;
            if reactivate && hash.is_none() {
                return Err(Error::invalid_param("Must provide a password to re-activate an account").into());
            }
            if req.admin == Some(false) && user == admin.user_id {
                return Err(Error::invalid_param("You may not demote yourself").into());
            }
            let patch = UserPatch {
                password_hash: hash.as_deref().filter(|_| !deactivate),
                logout_devices: hash.is_some() && req.logout_devices.unwrap_or(true),
                is_admin: req.admin,
                displayname: req.displayname.as_deref(),
                avatar_url: req.avatar_url.as_deref(),
                reactivate,
            };
            let logged_out = crate::devices::ids_of(&app, &user, None).await?;
            app.db.update_user(user.as_str(), &patch).await.map_err(Error::from)?;
            if patch.logout_devices {
                app.live.device_lists.devices_changed(&user, &logged_out).await?;
            }
            if deactivate {
                deactivate_account(&app, &user).await?;
            } else if req.displayname.is_some() || req.avatar_url.is_some() {
                // The account is updated; member events follow, best-effort per room.
                if let Err(err) = app.rooms.propagate_profile(&user).await {
                    tracing::warn!(%user, error = %err, "could not update every room with the new profile");
                }
            }
            StatusCode::OK
        }
    };
    Ok((status, Json(user_json(&existing_user(&app, &user).await?))))
}

/// `POST /_synapse/admin/v1/deactivate/{userId}`
async fn deactivate(
    State(app): State<App>,
    auth: Authenticated,
    Path(user_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let _: Map<String, Value> = body(&raw)?;
    let user = parse_user(&app, &user_id)?;
    existing_user(&app, &user).await?;
    deactivate_account(&app, &user).await?;
    Ok(Json(json!({ "id_server_unbind_result": "success" })))
}

#[derive(Deserialize, Default)]
struct ResetPassword {
    new_password: Option<String>,
    logout_devices: Option<bool>,
}

/// `POST /_synapse/admin/v1/reset_password/{userId}`
async fn reset_password(
    State(app): State<App>,
    auth: Authenticated,
    Path(user_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let req: ResetPassword = body(&raw)?;
    let user = parse_user(&app, &user_id)?;
    let current = existing_user(&app, &user).await?;
    if current.deactivated {
        return Err(Error::forbidden("The account is deactivated").into());
    }
    let password = req.new_password.ok_or_else(|| Error::missing_param("Missing new_password"))?;
    let hash = app.passwords.hash(password).await?;
    let logout =
        if req.logout_devices.unwrap_or(true) { Logout::AllDevicesExcept(None) } else { Logout::Nothing };
    let logged_out = crate::devices::ids_of(&app, &user, None).await?;
    app.db.set_password(user.as_str(), &hash, logout).await.map_err(Error::from)?;
    if req.logout_devices.unwrap_or(true) {
        app.live.device_lists.devices_changed(&user, &logged_out).await?;
    }
    Ok(Json(json!({})))
}

/// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`
async fn joined_rooms(
    State(app): State<App>,
    auth: Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let user = parse_user(&app, &user_id)?;
    let rooms: Vec<String> = app
        .db
        .memberships_of_user(user.as_str())
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|m| m.membership == ruma::events::room::member::MembershipState::Join)
        .map(|m| m.room_id.to_string())
        .collect();
    Ok(Json(json!({ "total": rooms.len(), "joined_rooms": rooms })))
}

/// `GET /_matrix/client/v3/admin/whois/{userId}`: a user's devices and where they were last
/// seen. Admins may ask about anyone, users about themselves.
async fn whois(
    State(app): State<App>,
    Authenticated(session): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user =
        UserId::parse(&user_id).map_err(|_| Error::invalid_param(format!("{user_id} is not a user id")))?;
    if !session.is_admin && session.user_id != user {
        return Err(Error::forbidden("You are not a server admin").into());
    }
    let mut devices = Map::new();
    for device in app.db.devices(user.as_str()).await.map_err(Error::from)? {
        let connection =
            crate::without_nulls(json!({ "ip": device.last_seen_ip, "last_seen": device.last_seen_ts,
                "user_agent": device.last_seen_user_agent }));
        devices.insert(device.device_id, json!({ "sessions": [{ "connections": [connection] }] }));
    }
    Ok(Json(json!({ "user_id": user, "devices": devices })))
}
