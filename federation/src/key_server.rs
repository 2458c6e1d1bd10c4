//! The key server: `GET /_matrix/key/v2/server` (this server's verify key, self-signed, with a
//! validity period) and the notary endpoints `GET /_matrix/key/v2/query/{serverName}` and `POST
//! /_matrix/key/v2/query`, which relay other servers' key responses with this server's signature
//! added. A notary answers from what it stored; when nothing stored is valid until the time asked
//! for it fetches afresh, and when that fails too it returns the (expired) keys it has — the
//! caller decides what an expired key is still good for.

use std::time::Duration;

use axum::{Router, routing::get};
use homeserver_core::{Error, keys::ServerKey, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::{
    CanonicalJsonObject, ServerName,
    api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys},
};
use serde_json::{Value, json};

use crate::FederationState;

/// Servers one notary request may ask about.
const MAX_SERVERS_PER_QUERY: usize = 100;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router
        .ruma_route(server_keys)
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys_by_id))
        .ruma_route(query_one)
        .route("/_matrix/key/v2/query/{server_name}/{key_id}", get(query_one_by_id))
        .ruma_route(query_batch)
}

/// Builds this server's signed key document.
pub fn key_document(key: &ServerKey, validity: Duration) -> Result<Value, Error> {
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

/// `GET /_matrix/key/v2/server/{keyId}` (deprecated): the same document, whatever key is named.
async fn server_keys_by_id(
    axum::extract::State(state): axum::extract::State<FederationState>,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(key_document(&state.key, state.key_validity)?))
}

/// `GET /_matrix/key/v2/query/{serverName}`
async fn query_one(
    state: FederationState,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<JsonBody, ApiError> {
    let minimum = u64::from(req.body.minimum_valid_until_ts.get()) as i64;
    let keys = notarised(&state, &req.body.server_name, &[], minimum).await?;
    Ok(JsonBody(json!({ "server_keys": keys })))
}

/// `GET /_matrix/key/v2/query/{serverName}/{keyId}` (deprecated, still used by older servers
/// and SyTest): the same answer as without the key id, for keys valid now.
async fn query_one_by_id(
    axum::extract::State(state): axum::extract::State<FederationState>,
    axum::extract::Path((server_name, _key_id)): axum::extract::Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let server = ServerName::parse(&server_name).map_err(|_| Error::invalid_param("not a server name"))?;
    let keys = notarised(&state, &server, &[], now_millis() as i64).await?;
    Ok(axum::Json(json!({ "server_keys": keys })))
}

/// `POST /_matrix/key/v2/query`
async fn query_batch(
    state: FederationState,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<JsonBody, ApiError> {
    if req.body.server_keys.len() > MAX_SERVERS_PER_QUERY {
        return Err(Error::invalid_param(format!("at most {MAX_SERVERS_PER_QUERY} servers per query")).into());
    }
    let mut out = Vec::new();
    for (server, criteria) in &req.body.server_keys {
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.get()) as i64)
            .max()
            // Without criteria, keys valid now (the spec's default).
            .unwrap_or(now_millis() as i64);
        let key_ids: Vec<String> = criteria.keys().map(ToString::to_string).collect();
        out.extend(notarised(&state, server, &key_ids, minimum).await?);
    }
    Ok(JsonBody(json!({ "server_keys": out })))
}

/// The key responses of `server` this notary vouches for (those holding one of `key_ids`, or
/// any when none are named), signed by it.
async fn notarised(
    state: &FederationState,
    server: &ServerName,
    key_ids: &[String],
    minimum: i64,
) -> Result<Vec<Value>, Error> {
    if server == state.key.server_name() {
        return Ok(vec![key_document(&state.key, state.key_validity)?]);
    }
    // No caller can ask for more than any key is trusted for.
    let minimum = minimum.min(now_millis() as i64 + crate::keys::MAX_KEY_VALIDITY_MS);
    // The server is asked afresh when a key wanted (any, when none are named) is not stored
    // valid for as long as the caller says it must be (now, unless it says otherwise).
    let validity = state.keys.stored_validity(server).await?;
    let lasts = |id: Option<&String>| {
        validity.iter().any(|(key, until)| id.is_none_or(|id| id == key) && *until >= minimum)
    };
    let lacking = if key_ids.is_empty() { !lasts(None) } else { key_ids.iter().any(|id| !lasts(Some(id))) };
    if lacking {
        // Why nothing new is known (a budget spent, a server unreachable) changes no answer.
        let _ = state.keys.refresh(server).await;
    }
    let stored = state.keys.stored_responses(server, key_ids).await?;
    let fresh: Vec<&String> =
        stored.iter().filter(|(valid_until, _)| *valid_until >= minimum).map(|(_, json)| json).collect();
    // Expired keys when that is all there is.
    let chosen: Vec<&String> =
        if fresh.is_empty() { stored.iter().map(|(_, json)| json).take(1).collect() } else { fresh };
    chosen.into_iter().map(|json| countersign(&state.key, json)).collect()
}

/// A stored key response with this server's signature added to its own.
fn countersign(key: &ServerKey, json: &str) -> Result<Value, Error> {
    let mut object: CanonicalJsonObject = serde_json::from_str(json).map_err(Error::internal_from)?;
    ruma::signatures::sign_json(key.server_name().as_str(), key.pair(), &mut object)
        .map_err(|e| Error::internal(e.to_string()))?;
    serde_json::to_value(object).map_err(Error::internal_from)
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
