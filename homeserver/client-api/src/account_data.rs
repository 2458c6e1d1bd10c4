//! Account data: per-user (and per-room) JSON blobs clients keep on the server (`m.direct`, tags,
//! settings). The handlers check who writes what; `homeserver_live::account_data` writes it at a
//! stream position so `/sync` delivers it.

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use ruma::{
    UserId,
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
    },
};
use serde_json::Value;

use crate::App;

/// Account data types the server manages itself and clients may not set here.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

fn server_managed(data_type: &str) -> Error {
    Error::new(ErrorKind::ServerManaged, format!("Cannot set {data_type} through this API"))
}

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(set_global).ruma_route(get_global).ruma_route(set_room).ruma_route(get_room)
}

fn only_self(session: &Session, user: &UserId) -> Result<(), Error> {
    if session.user_id != user {
        return Err(Error::forbidden("You cannot access another user's account data"));
    }
    Ok(())
}

fn object_body(raw: &[u8]) -> Result<String, Error> {
    let value: Value = serde_json::from_slice(raw).map_err(|_| Error::bad_json("content is not JSON"))?;
    if !value.is_object() {
        return Err(Error::bad_json("account data content must be a JSON object"));
    }
    Ok(value.to_string())
}

/// `m.ignored_user_list` must map user ids to objects and may not contain the user themselves.
fn check_ignore_list(user: &UserId, content: &str) -> Result<(), Error> {
    let value: Value = serde_json::from_str(content).map_err(|_| Error::bad_json("invalid JSON"))?;
    let Some(ignored) = value.get("ignored_users").and_then(Value::as_object) else {
        return Err(Error::bad_json("m.ignored_user_list needs an ignored_users object"));
    };
    for id in ignored.keys() {
        if UserId::parse(id).is_err() {
            return Err(Error::bad_json(format!("{id} is not a user id")));
        }
        if id == user.as_str() {
            return Err(Error::invalid_param("You cannot ignore yourself"));
        }
    }
    Ok(())
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn set_global(app: App, req: Ruma<set_global_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    if SERVER_MANAGED.contains(&data_type.as_str()) {
        return Err(server_managed(&data_type).into());
    }
    let content = object_body(&req.raw_body)?;
    if data_type == "m.ignored_user_list" {
        check_ignore_list(&req.auth.user_id, &content)?;
    }
    app.live.account_data.put(&req.auth.user_id, "", &data_type, &content).await?;
    Ok(JsonBody(serde_json::json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn get_global(app: App, req: Ruma<get_global_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let content = app
        .db
        .account_data(req.auth.user_id.as_str(), "", &req.body.event_type.to_string())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(JsonBody(serde_json::from_str(&content).map_err(|e| Error::internal(e.to_string()))?))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn set_room(app: App, req: Ruma<set_room_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    if SERVER_MANAGED.contains(&data_type.as_str()) {
        return Err(server_managed(&data_type).into());
    }
    let content = object_body(&req.raw_body)?;
    app.live.account_data.put(&req.auth.user_id, req.body.room_id.as_str(), &data_type, &content).await?;
    Ok(JsonBody(serde_json::json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn get_room(app: App, req: Ruma<get_room_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let content = app
        .db
        .account_data(req.auth.user_id.as_str(), req.body.room_id.as_str(), &req.body.event_type.to_string())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(JsonBody(serde_json::from_str(&content).map_err(|e| Error::internal(e.to_string()))?))
}
