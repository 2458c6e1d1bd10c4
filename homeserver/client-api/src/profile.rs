//! Profiles: display names and avatars, propagated into the user's member events.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::accounts::User;
use ruma::{
    UserId,
    api::client::profile::{get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name},
};
use serde_json::{Map, Value, json};

use crate::{App, ratelimit::Action};

/// Longest display name accepted (as Synapse).
const MAX_DISPLAYNAME_CHARS: usize = 256;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(profile)
        .ruma_route(displayname)
        .ruma_route(avatar_url)
        .ruma_route(set_displayname)
        .ruma_route(set_avatar)
}

async fn local_user(app: &App, user_id: &UserId) -> Result<User, Error> {
    app.db
        .user(user_id.as_str())
        .await
        .map_err(Error::from)?
        .filter(|u| !u.deactivated || u.displayname.is_some())
        .ok_or_else(|| Error::not_found("Profile not found"))
}

/// A user's display name and avatar: a local user's from the database, a remote user's from
/// their server.
async fn profile_of(app: &App, user_id: &UserId) -> Result<Map<String, Value>, Error> {
    if user_id.server_name() != app.server_name() {
        return app.rooms.remote_profile(user_id.to_owned()).await;
    }
    let user = local_user(app, user_id).await?;
    let mut body = Map::new();
    if let Some(name) = user.displayname {
        body.insert("displayname".into(), json!(name));
    }
    if let Some(url) = user.avatar_url {
        body.insert("avatar_url".into(), json!(url));
    }
    Ok(body)
}

/// `GET /_matrix/client/v3/profile/{userId}`
async fn profile(app: App, req: Ruma<get_profile::v3::Request>) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(Value::Object(profile_of(&app, &req.body.user_id).await?)))
}

/// One field of a profile: `{}` when the user has not set it.
async fn profile_field(app: &App, user_id: &UserId, field: &str) -> Result<JsonBody, ApiError> {
    let mut profile = profile_of(app, user_id).await?;
    Ok(JsonBody(match profile.remove(field) {
        Some(value) => json!({ field: value }),
        None => json!({}),
    }))
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
async fn displayname(app: App, req: Ruma<get_display_name::v3::Request>) -> Result<JsonBody, ApiError> {
    profile_field(&app, &req.body.user_id, "displayname").await
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
async fn avatar_url(app: App, req: Ruma<get_avatar_url::v3::Request>) -> Result<JsonBody, ApiError> {
    profile_field(&app, &req.body.user_id, "avatar_url").await
}

fn only_self(session: &homeserver_http::Session, target: &UserId) -> Result<(), Error> {
    if session.user_id != target {
        return Err(Error::forbidden("You cannot change another user's profile"));
    }
    Ok(())
}

/// `PUT /_matrix/client/v3/profile/{userId}/displayname`
async fn set_displayname(app: App, req: Ruma<set_display_name::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    app.limit(Action::ProfileChange, req.auth.user_id.as_str())?;
    let name = req.body.displayname.as_deref().filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > MAX_DISPLAYNAME_CHARS) {
        return Err(Error::invalid_param("Display name is too long").into());
    }
    app.db.set_displayname(req.auth.user_id.as_str(), name).await.map_err(Error::from)?;
    app.rooms.propagate_profile(&req.auth.user_id).await?;
    Ok(JsonBody(json!({})))
}

/// `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
async fn set_avatar(app: App, req: Ruma<set_avatar_url::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    app.limit(Action::ProfileChange, req.auth.user_id.as_str())?;
    let url = req.body.avatar_url.as_ref().map(|u| u.to_string()).filter(|u| !u.is_empty());
    app.db.set_avatar_url(req.auth.user_id.as_str(), url.as_deref()).await.map_err(Error::from)?;
    app.rooms.propagate_profile(&req.auth.user_id).await?;
    Ok(JsonBody(json!({})))
}
