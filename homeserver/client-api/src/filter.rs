//! Stored sync filters: `POST/GET /user/{userId}/filter`. The filter model itself is
//! `homeserver_sync::filter`.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_sync::filter::parse_filter;
use ruma::api::client::filter::{create_filter, get_filter};
use serde_json::{Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(upload_filter).ruma_route(download_filter)
}

/// `POST /_matrix/client/v3/user/{userId}/filter`
async fn upload_filter(app: App, req: Ruma<create_filter::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only create filters for yourself").into());
    }
    let raw = std::str::from_utf8(&req.raw_body).map_err(|_| Error::bad_json("filter is not UTF-8"))?;
    parse_filter(raw)?;
    let id = app.db.create_filter(req.auth.user_id.as_str(), raw).await.map_err(Error::from)?;
    Ok(JsonBody(json!({ "filter_id": id.to_string() })))
}

/// `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
async fn download_filter(app: App, req: Ruma<get_filter::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only read your own filters").into());
    }
    let id: i64 = req.body.filter_id.parse().map_err(|_| Error::not_found("Filter not found"))?;
    let stored = app
        .db
        .filter(req.auth.user_id.as_str(), id)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Filter not found"))?;
    let value: Value = serde_json::from_str(&stored).map_err(|e| Error::internal(e.to_string()))?;
    Ok(JsonBody(value))
}
