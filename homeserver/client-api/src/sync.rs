//! `GET /sync`: parses the request and hands it to `homeserver_sync`, which computes the response.

use std::time::Duration;

use axum::Router;
use homeserver_core::{Error, token::StreamToken};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_sync::{
    SyncRequest,
    filter::{FilterDefinition, parse_filter, resolve_filter},
};
use ruma::api::client::{filter::FilterDefinition as RumaFilter, sync::sync_events};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(sync)
}

/// `GET /_matrix/client/v3/sync`
async fn sync(app: App, req: Ruma<sync_events::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let since = match req.body.since.as_deref() {
        Some(token) => {
            Some(token.parse::<StreamToken>().map_err(|_| Error::invalid_param("invalid since token"))?)
        }
        None => None,
    };
    let filter = match &req.body.filter {
        None => FilterDefinition::default(),
        Some(sync_events::v3::Filter::FilterId(id)) => {
            resolve_filter(&app.db, session.user_id.as_str(), id).await?
        }
        Some(sync_events::v3::Filter::FilterDefinition(def)) => inline_filter(def)?,
        Some(_) => FilterDefinition::default(),
    };
    let request = SyncRequest {
        since,
        filter,
        timeout: req
            .body
            .timeout
            .unwrap_or_default()
            .min(Duration::from_millis(app.config.max_sync_timeout_ms)),
        full_state: req.body.full_state,
        set_presence: req.body.set_presence.as_str().to_owned(),
    };
    Ok(JsonBody(app.syncer.sync(&session.user_id, &session.device_id, &request).await?))
}

fn inline_filter(def: &RumaFilter) -> Result<FilterDefinition, Error> {
    let json = serde_json::to_string(def).map_err(|e| Error::bad_json(e.to_string()))?;
    parse_filter(&json)
}
