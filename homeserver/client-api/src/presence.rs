//! Presence: `GET/PUT /presence/{userId}/status`.
//!
//! A user sets their own state and status message; anyone sharing a room with them may read it.
//! Every change takes a stream position so it can be delivered by `/sync`.

use axum::Router;
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::api::client::presence::{get_presence, set_presence};
use serde_json::{Value, json};

use crate::{App, storage};

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(put_status).ruma_route(get_status)
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
async fn put_status(app: App, req: Ruma<set_presence::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only set your own presence").into());
    }
    let body: Value = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let state = body.get("presence").and_then(Value::as_str).unwrap_or("online");
    if !matches!(state, "online" | "unavailable" | "offline") {
        return Err(Error::invalid_param(format!("unknown presence state {state}")).into());
    }
    let status_msg = body.get("status_msg").and_then(Value::as_str);
    let reservation = app.stream.reserve(1);
    app.db
        .set_presence(
            req.auth.user_id.as_str(),
            state,
            status_msg,
            now_millis() as i64,
            reservation.first() as i64,
        )
        .await
        .map_err(storage)?;
    reservation.complete(vec![req.auth.user_id.clone()]);
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
async fn get_status(app: App, req: Ruma<get_presence::v3::Request>) -> Result<JsonBody, ApiError> {
    let target = &req.body.user_id;
    if app.db.user(target.as_str()).await.map_err(storage)?.is_none() {
        return Err(Error::not_found("Unknown user").into());
    }
    if *target != req.auth.user_id
        && !app.db.share_a_room(req.auth.user_id.as_str(), target.as_str()).await.map_err(storage)?
    {
        return Err(Error::forbidden("You do not share a room with this user").into());
    }
    let now = now_millis() as i64;
    Ok(JsonBody(match app.db.presence(target.as_str()).await.map_err(storage)? {
        Some(p) => {
            let mut body = json!({
                "presence": p.state,
                "last_active_ago": (now - p.last_active_ts).max(0),
                "currently_active": p.state == "online",
            });
            if let Some(msg) = p.status_msg {
                body["status_msg"] = json!(msg);
            }
            body
        }
        None => json!({ "presence": "offline" }),
    }))
}
