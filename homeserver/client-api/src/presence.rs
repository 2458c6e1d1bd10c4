//! `GET/PUT /presence/{userId}/status`: the handlers in front of `homeserver_live::presence`.
//!
//! A user sets their own state and status message; anyone sharing a room with them may read it.

use axum::Router;
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_live::presence::{State, presence_event};
use ruma::api::client::presence::{get_presence, set_presence};
use serde_json::{Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(put_status).ruma_route(get_status)
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
async fn put_status(app: App, req: Ruma<set_presence::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only set your own presence").into());
    }
    let body: Value = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let name = body.get("presence").and_then(Value::as_str).unwrap_or("online");
    let state =
        State::parse(name).ok_or_else(|| Error::invalid_param(format!("unknown presence state {name}")))?;
    let status_msg = body.get("status_msg").and_then(Value::as_str).map(str::to_owned);
    app.live.presence.set(&req.auth.user_id, state, status_msg).await?;
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
async fn get_status(app: App, req: Ruma<get_presence::v3::Request>) -> Result<JsonBody, ApiError> {
    let target = &req.body.user_id;
    // Other servers' users are known here only through the rooms shared with them (below).
    if target.server_name() == app.server_name()
        && app.db.user(target.as_str()).await.map_err(Error::from)?.is_none()
    {
        return Err(Error::not_found("Unknown user").into());
    }
    if *target != req.auth.user_id
        && !app.db.share_a_room(req.auth.user_id.as_str(), target.as_str()).await.map_err(Error::from)?
    {
        return Err(Error::forbidden("You do not share a room with this user").into());
    }
    let now = now_millis() as i64;
    Ok(JsonBody(match app.live.presence.stored(target).await? {
        Some(p) => presence_event(&p, now)["content"].clone(),
        None => json!({ "presence": "offline" }),
    }))
}
