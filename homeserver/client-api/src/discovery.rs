//! Discovery: which spec versions we speak, where the homeserver is, what it can do.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_rooms::versions::SUPPORTED_VERSIONS;
use ruma::api::client::discovery::{discover_homeserver, get_capabilities, get_supported_versions};
use serde_json::{Map, Value, json};

use crate::App;

/// The spec versions whose client-server API Lattice implements.
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
    "v1.10",
];

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(versions).ruma_route(well_known_client).ruma_route(capabilities)
}

/// `GET /_matrix/client/versions`
async fn versions(_app: App, _req: Ruma<get_supported_versions::Request>) -> Result<JsonBody, ApiError> {
    // Authenticated media (v1.11) is served: clients that see this use its endpoints.
    Ok(JsonBody(
        json!({ "versions": SPEC_VERSIONS, "unstable_features": { "org.matrix.msc3916.stable": true } }),
    ))
}

/// `GET /.well-known/matrix/client`
async fn well_known_client(app: App, _req: Ruma<discover_homeserver::Request>) -> Result<JsonBody, ApiError> {
    match &app.config.well_known_base_url {
        Some(base_url) => Ok(JsonBody(json!({ "m.homeserver": { "base_url": base_url } }))),
        None => Err(Error::not_found("no .well-known/matrix/client is configured").into()),
    }
}

/// `GET /_matrix/client/v3/capabilities`
async fn capabilities(app: App, _req: Ruma<get_capabilities::v3::Request>) -> Result<JsonBody, ApiError> {
    let available: Map<String, Value> =
        SUPPORTED_VERSIONS.iter().map(|v| (v.to_string(), json!("stable"))).collect();
    Ok(JsonBody(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": {
                "default": app.rooms.config().default_room_version.as_str(),
                "available": available,
            },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": false },
        }
    })))
}
