//! `GET /_matrix/federation/v1/version`: what software this server runs.

use axum::Router;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::api::federation::discovery::get_server_version;
use serde_json::json;

use crate::FederationState;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(version)
}

async fn version(_: FederationState, _: Ruma<get_server_version::v1::Request>) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(json!({ "server": { "name": "Lattice", "version": env!("CARGO_PKG_VERSION") } })))
}
