//! The plugin admin API, for server admins (`M_FORBIDDEN` for anyone else):
//! - `GET /_lattice/admin/v1/plugins`: every plugin's status (state, version, content hash,
//!   last error, cursor, deliveries, crashes, dead letters, counters);
//! - `GET …/plugins/{id}`: one plugin's;
//! - `POST …/plugins/{id}/enable`, `…/disable` (kept across restarts; enabling also closes a
//!   tripped crash breaker), `…/reload` (the running version stays if the new one fails to
//!   start: 400 `M_BAD_STATE` with the reason);
//! - `GET …/plugins/{id}/logs`: its recent log lines;
//! - `GET …/plugins/{id}/dead_letters` and `POST …/dead_letters/replay` (`{"stream_pos": N}` for
//!   one, `{}` for all): the events it failed to take, and delivering them again.
//!
//! It lives in the composition root because it is the one place that holds both the client
//! API's authentication and the plugin host.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    routing::{get, post},
};
use homeserver_client_api::{App, admin::require_admin};
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, Authenticated};
use plugins::{PluginError, PluginHost};
use serde::Deserialize;
use serde_json::{Value, json};

/// Adds the plugin admin routes; without plugins, the list is empty and every plugin unknown.
pub fn routes(router: Router<App>, host: Option<PluginHost>) -> Router<App> {
    let host = HostHandle(host);
    let h = host.clone();
    let router = router.route(
        "/_lattice/admin/v1/plugins",
        get(move |app: State<App>, auth: Authenticated| list(app, auth, h.clone())),
    );
    let h = host.clone();
    let router = router.route(
        "/_lattice/admin/v1/plugins/{id}",
        get(move |auth: Authenticated, id: Path<String>| status(auth, id, h.clone())),
    );
    let router = action_route(router, "enable", &host);
    let router = action_route(router, "disable", &host);
    let router = action_route(router, "reload", &host);
    let h = host.clone();
    let router = router.route(
        "/_lattice/admin/v1/plugins/{id}/logs",
        get(move |auth: Authenticated, id: Path<String>| logs(auth, id, h.clone())),
    );
    let h = host.clone();
    let router = router.route(
        "/_lattice/admin/v1/plugins/{id}/dead_letters",
        get(move |auth: Authenticated, id: Path<String>| dead_letters(auth, id, h.clone())),
    );
    let h = host;
    router.route(
        "/_lattice/admin/v1/plugins/{id}/dead_letters/replay",
        post(move |auth: Authenticated, id: Path<String>, body: Bytes| replay(auth, id, body, h.clone())),
    )
}

#[derive(Clone)]
struct HostHandle(Option<PluginHost>);

impl HostHandle {
    fn get(&self, id: &str) -> Result<&PluginHost, Error> {
        self.0.as_ref().ok_or_else(|| Error::not_found(format!("no plugin {id}")))
    }
}

fn action_route(router: Router<App>, action: &'static str, host: &HostHandle) -> Router<App> {
    let h = host.clone();
    router.route(
        &format!("/_lattice/admin/v1/plugins/{{id}}/{action}"),
        post(move |auth: Authenticated, id: Path<String>| act(auth, id, action, h.clone())),
    )
}

/// The one mapping from plugin errors to Matrix errors.
fn api_error(err: PluginError) -> ApiError {
    ApiError(match err {
        PluginError::Unknown(id) => Error::not_found(format!("no plugin {id}")),
        PluginError::Storage(err) => Error::from(err),
        other => Error::new(ErrorKind::BadState, other.to_string()),
    })
}

async fn list(_: State<App>, auth: Authenticated, host: HostHandle) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let plugins = match &host.0 {
        Some(host) => host.list().await.map_err(api_error)?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "plugins": plugins })))
}

async fn status(
    auth: Authenticated,
    Path(id): Path<String>,
    host: HostHandle,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let status = host.get(&id)?.status(&id).await.map_err(api_error)?;
    Ok(Json(json!(status)))
}

async fn act(
    auth: Authenticated,
    Path(id): Path<String>,
    action: &'static str,
    host: HostHandle,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let plugins = host.get(&id)?;
    match action {
        "enable" => plugins.set_enabled(&id, true).await,
        "disable" => plugins.set_enabled(&id, false).await,
        _ => plugins.reload(&id).await,
    }
    .map_err(api_error)?;
    Ok(Json(json!(plugins.status(&id).await.map_err(api_error)?)))
}

async fn logs(
    auth: Authenticated,
    Path(id): Path<String>,
    host: HostHandle,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let lines = host.get(&id)?.logs(&id).map_err(api_error)?;
    Ok(Json(json!({ "lines": lines })))
}

async fn dead_letters(
    auth: Authenticated,
    Path(id): Path<String>,
    host: HostHandle,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let letters = host.get(&id)?.dead_letters(&id).await.map_err(api_error)?;
    let letters: Vec<Value> = letters
        .iter()
        .map(|l| {
            json!({
                "stream_pos": l.stream_pos.get(),
                "event_id": l.event_id,
                "room_id": l.room_id,
                "attempts": l.attempts,
                "error": l.error,
                "failed_ts": l.failed_ts,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": letters })))
}

#[derive(Deserialize, Default)]
struct ReplayBody {
    stream_pos: Option<i64>,
}

async fn replay(
    auth: Authenticated,
    Path(id): Path<String>,
    body: Bytes,
    host: HostHandle,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let body: ReplayBody = match body.is_empty() {
        true => ReplayBody::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| Error::bad_json(format!("invalid request body: {e}")))?,
    };
    let replayed = host.get(&id)?.replay(&id, body.stream_pos).await.map_err(api_error)?;
    Ok(Json(json!({ "replayed": replayed })))
}
