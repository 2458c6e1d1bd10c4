//! Media administration with Synapse's admin API shapes: `POST
//! /_synapse/admin/v1/media/quarantine/{server}/{id}` and `…/unquarantine/…` (quarantined media is
//! served to nobody, over neither the client nor the federation API), `DELETE
//! /_synapse/admin/v1/media/{server}/{id}` (the row, its thumbnails and files no other media
//! uses) and `POST /_synapse/admin/v1/purge_media_cache?before_ts=` (cached remote media).

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::{delete, post},
};
use homeserver_core::Error;
use homeserver_http::{ApiError, Authenticated};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{query, require_admin};
use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_synapse/admin/v1/media/quarantine/{server}/{id}", post(quarantine))
        .route("/_synapse/admin/v1/media/unquarantine/{server}/{id}", post(unquarantine))
        .route("/_synapse/admin/v1/media/{server}/{id}", delete(delete_media))
        .route("/_synapse/admin/v1/purge_media_cache", post(purge_cache))
}

async fn set_quarantine(
    app: &App,
    auth: Authenticated,
    server: &str,
    id: &str,
    on: bool,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    if !app.media.quarantine(server, id, on).await.map_err(Error::from)? {
        return Err(Error::not_found("Unknown media").into());
    }
    Ok(Json(json!({})))
}

async fn quarantine(
    State(app): State<App>,
    auth: Authenticated,
    Path((server, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_quarantine(&app, auth, &server, &id, true).await
}

async fn unquarantine(
    State(app): State<App>,
    auth: Authenticated,
    Path((server, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_quarantine(&app, auth, &server, &id, false).await
}

async fn delete_media(
    State(app): State<App>,
    auth: Authenticated,
    Path((server, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    if !app.media.delete(&server, &id).await.map_err(Error::from)? {
        return Err(Error::not_found("Unknown media").into());
    }
    Ok(Json(json!({ "deleted_media": [id], "total": 1 })))
}

#[derive(Deserialize, Default)]
struct PurgeQuery {
    before_ts: Option<i64>,
}

async fn purge_cache(
    State(app): State<App>,
    auth: Authenticated,
    params: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let before = query(params)?.before_ts.ok_or_else(|| Error::missing_param("before_ts is required"))?;
    let deleted = app.media.purge_remote(before).await.map_err(Error::from)?;
    Ok(Json(json!({ "deleted": deleted })))
}
