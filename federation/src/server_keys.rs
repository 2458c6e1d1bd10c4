//! `GET /_matrix/key/v2/server`: this server's verify key, self-signed, with a validity period.

use std::time::Duration;

use axum::Router;
use homeserver_core::{Error, ErrorKind, keys::ServerKey, time::now_millis};
use homeserver_http::{ApiError, AuthState, JsonBody, RouterExt, Ruma, Session};
use ruma::{CanonicalJsonObject, api::federation::discovery::get_server_keys};
use serde_json::json;

/// State of the federation routes.
#[derive(Clone)]
pub struct FederationState {
    pub key: ServerKey,
    /// How long other servers may cache the published key.
    pub key_validity: Duration,
}

impl AuthState for FederationState {
    async fn authenticate(&self, _token: &str) -> Result<Session, Error> {
        Err(Error::new(ErrorKind::Forbidden, "federation endpoints take no access tokens"))
    }
}

/// The federation router (already given its state; the caller adds the fallbacks).
pub fn routes(state: FederationState) -> Router {
    Router::new().ruma_route(server_keys).with_state(state)
}

/// Builds the signed key document.
pub fn key_document(key: &ServerKey, validity: Duration) -> Result<serde_json::Value, Error> {
    let valid_until = now_millis() + validity.as_millis() as u64;
    let doc = json!({
        "server_name": key.server_name(),
        "valid_until_ts": valid_until,
        "verify_keys": { key.key_id(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
    });
    let mut object: CanonicalJsonObject =
        serde_json::from_value(doc).map_err(|e| Error::internal(e.to_string()))?;
    ruma::signatures::sign_json(key.server_name().as_str(), key.pair(), &mut object)
        .map_err(|e| Error::internal(e.to_string()))?;
    serde_json::to_value(object).map_err(|e| Error::internal(e.to_string()))
}

/// `GET /_matrix/key/v2/server`
async fn server_keys(
    state: FederationState,
    _req: Ruma<get_server_keys::v2::Request>,
) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(key_document(&state.key, state.key_validity)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::{ServerName, serde::Base64};

    use super::*;

    #[test]
    fn key_document_is_self_signed_and_valid_in_the_future() {
        let name: &ServerName = "example.org".try_into().unwrap();
        let key = ServerKey::from_pkcs8(name, &ServerKey::generate_pkcs8(), "a_x").unwrap();
        let doc = key_document(&key, Duration::from_secs(3600)).unwrap();
        assert!(doc["valid_until_ts"].as_u64().unwrap() > now_millis());
        assert_eq!(doc["verify_keys"]["ed25519:a_x"]["key"], key.public_key_base64());
        let object: CanonicalJsonObject = serde_json::from_value(doc).unwrap();
        let mut keys = BTreeMap::new();
        keys.insert("ed25519:a_x".to_owned(), Base64::parse(key.public_key_base64()).unwrap());
        let mut map = BTreeMap::new();
        map.insert("example.org".to_owned(), keys);
        ruma::signatures::verify_json(&map, &object).expect("signature verifies");
    }
}
