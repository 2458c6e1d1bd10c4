//! Pushers (`GET /pushers`, `POST /pushers/set`): where a user's notifications are pushed. Only
//! `http` pushers are kept (this server sends no email); their `data` is stored as the client
//! sent it, `url` checked to be an http(s) URL of the push gateway API's notify path, as
//! Synapse checks it. A new pusher is owed only what is notified after it was set; the push
//! sender (`homeserver-push`) delivers from there, told of the change through
//! `homeserver-live::pushers`. An update restarts the pusher from now, as Synapse does; a
//! pusher goes with the device that first set it.

use axum::Router;
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::pushers::{PusherKey, PusherRow, SetPusher};
use ruma::api::client::push::{get_pushers, set_pusher};
use serde_json::{Map, Value, json};

use crate::App;

/// The push gateway API's path, the only one a pusher's URL may have.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Longest `app_id` (the spec's limit).
const MAX_APP_ID: usize = 64;
/// Longest `pushkey` in bytes (the spec's limit).
const MAX_PUSHKEY: usize = 512;
/// Longest display name, language or profile tag.
const MAX_LABEL: usize = 256;
/// Largest `data` object, as JSON.
const MAX_DATA_BYTES: usize = 4096;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(get).ruma_route(set)
}

/// `GET /_matrix/client/v3/pushers`
async fn get(app: App, req: Ruma<get_pushers::v3::Request>) -> Result<JsonBody, ApiError> {
    let rows = app.db.pushers(req.auth.user_id.as_str()).await.map_err(Error::from)?;
    let pushers: Vec<Value> = rows.iter().map(pusher_json).collect();
    Ok(JsonBody(json!({ "pushers": pushers })))
}

fn pusher_json(p: &PusherRow) -> Value {
    let mut out = json!({
        "app_id": p.app_id,
        "pushkey": p.pushkey,
        "kind": p.kind,
        "app_display_name": p.app_display_name,
        "device_display_name": p.device_display_name,
        "lang": p.lang,
        "data": serde_json::from_str::<Value>(&p.data).unwrap_or_else(|_| json!({})),
    });
    if let Some(tag) = &p.profile_tag {
        out["profile_tag"] = json!(tag);
    }
    out
}

/// `POST /_matrix/client/v3/pushers/set`: adds, replaces or (with `kind: null`) deletes a pusher.
async fn set(app: App, req: Ruma<set_pusher::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    // Ruma has checked the shape; the body is read again to keep `data` exactly as sent.
    let body: Map<String, Value> = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let key =
        PusherKey { user_id: session.user_id.to_string(), app_id: text("app_id"), pushkey: text("pushkey") };
    check_ids(&key)?;
    let kind = match body.get("kind") {
        None | Some(Value::Null) => {
            app.db.delete_pusher(&key).await.map_err(Error::from)?;
            return Ok(JsonBody(json!({})));
        }
        Some(kind) => kind.as_str().unwrap_or_default(),
    };
    if kind != "http" {
        return Err(Error::invalid_param(format!(
            "pushers of kind {kind:?} are not supported; use \"http\""
        ))
        .into());
    }
    let data = body.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
    check_url(data.get("url"))?;
    let data = Value::Object(data).to_string();
    if data.len() > MAX_DATA_BYTES {
        return Err(Error::invalid_param(format!("data is larger than {MAX_DATA_BYTES} bytes")).into());
    }
    let label = |field: &str| -> Result<String, Error> {
        let value = text(field);
        match value.len() > MAX_LABEL {
            true => Err(Error::invalid_param(format!("{field} is longer than {MAX_LABEL} bytes"))),
            false => Ok(value),
        }
    };
    let profile_tag = body.get("profile_tag").and_then(Value::as_str).map(str::to_owned);
    if profile_tag.as_ref().is_some_and(|t| t.len() > MAX_LABEL) {
        return Err(Error::invalid_param(format!("profile_tag is longer than {MAX_LABEL} bytes")).into());
    }
    let row = PusherRow {
        user_id: key.user_id.clone(),
        app_id: key.app_id.clone(),
        pushkey: key.pushkey.clone(),
        kind: kind.to_owned(),
        app_display_name: label("app_display_name")?,
        device_display_name: label("device_display_name")?,
        profile_tag,
        lang: label("lang")?,
        data,
        device_id: Some(session.device_id.to_string()),
        created_ts: now_millis() as i64,
        // Owed only what comes after it was set.
        last_pos: app.stream.current() as i64,
        failing_since: None,
    };
    let append = body.get("append").and_then(Value::as_bool).unwrap_or(false);
    match app.db.set_pusher(&row, append).await.map_err(Error::from)? {
        SetPusher::Set => {
            app.live.pusher_changes.changed(key);
            Ok(JsonBody(json!({})))
        }
        SetPusher::TooMany => Err(Error::invalid_param(format!(
            "a user may have at most {} pushers",
            homeserver_storage::pushers::MAX_PUSHERS_PER_USER
        ))
        .into()),
    }
}

fn check_ids(key: &PusherKey) -> Result<(), Error> {
    if key.app_id.is_empty() || key.app_id.chars().count() > MAX_APP_ID {
        return Err(Error::invalid_param(format!("app_id must be 1 to {MAX_APP_ID} characters")));
    }
    if key.pushkey.is_empty() || key.pushkey.len() > MAX_PUSHKEY {
        return Err(Error::invalid_param(format!("pushkey must be 1 to {MAX_PUSHKEY} bytes")));
    }
    Ok(())
}

/// An http pusher's `data.url`: an http(s) URL with the notify path.
fn check_url(url: Option<&Value>) -> Result<(), Error> {
    let Some(url) = url else { return Err(Error::missing_param("an http pusher needs data.url")) };
    let parsed = url.as_str().and_then(|u| url::Url::parse(u).ok());
    let Some(parsed) = parsed.filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) else {
        return Err(Error::invalid_param("data.url must be an http(s) URL"));
    };
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!("data.url must have the path {NOTIFY_PATH}")));
    }
    Ok(())
}
