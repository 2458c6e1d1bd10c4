//! End-to-end encryption across servers: other servers reading this one's users' keys
//! (`GET /user/devices/{userId}`, `POST /user/keys/query`, `POST /user/keys/claim`, through
//! the same `homeserver_live::keys` a local client's `/keys/query` and `/keys/claim` use), and
//! this server asking other servers for theirs on its clients' behalf. Answers from another
//! server are taken only for that server's users. Device-list and to-device EDUs are in `edus`.

use std::collections::{BTreeMap, HashSet};

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_live::keys::{self, KeysAnswer};
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, ServerName, UserId,
    api::federation::{
        device::get_devices,
        keys::{claim_keys, get_keys},
    },
};
use serde_json::{Map, Value, json};

use crate::FederationState;

/// Most users one query, and devices one claim, may name (as a client's own are bounded).
const MAX_ASKED: usize = 1000;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(devices).ruma_route(query).ruma_route(claim)
}

fn ours(state: &FederationState, user: &UserId) -> bool {
    user.server_name() == state.key.server_name()
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`
async fn devices(state: FederationState, req: Ruma<get_devices::v1::Request>) -> Result<JsonBody, ApiError> {
    let user = &req.body.user_id;
    if !ours(&state, user) {
        return Err(Error::invalid_param("the user does not belong to this server").into());
    }
    // The stream id first: a change committed after it is sent as an update the receiver
    // applies on top; read after the devices, it could claim a change the list lacks.
    let stream_id = state.db.device_list_stream_id(user.as_str()).await.map_err(Error::from)?;
    let mut answer = KeysAnswer::default();
    keys::add_user_keys(&state.db, &mut answer, user.as_str(), &HashSet::new(), None).await?;
    let devices: Vec<Value> = answer
        .device_keys
        .get(user.as_str())
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        // No `device_display_name`: device names stay on this server.
        .map(|(device_id, keys)| json!({ "device_id": device_id, "keys": keys }))
        .collect();
    let mut body = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
    if let Some(key) = answer.master_keys.remove(user.as_str()) {
        body["master_key"] = key;
    }
    if let Some(key) = answer.self_signing_keys.remove(user.as_str()) {
        body["self_signing_key"] = key;
    }
    Ok(JsonBody(body))
}

/// `POST /_matrix/federation/v1/user/keys/query`
async fn query(state: FederationState, req: Ruma<get_keys::v1::Request>) -> Result<JsonBody, ApiError> {
    if req.body.device_keys.len() > MAX_ASKED {
        return Err(Error::new(ErrorKind::TooLarge, format!("at most {MAX_ASKED} users per query")).into());
    }
    let mut answer = KeysAnswer::default();
    for (user, wanted) in req.body.device_keys.iter().filter(|(user, _)| ours(&state, user)) {
        let wanted: HashSet<&str> = wanted.iter().map(|d| d.as_str()).collect();
        keys::add_user_keys(&state.db, &mut answer, user.as_str(), &wanted, None).await?;
    }
    Ok(JsonBody(json!({
        "device_keys": answer.device_keys,
        "master_keys": answer.master_keys,
        "self_signing_keys": answer.self_signing_keys,
    })))
}

/// `POST /_matrix/federation/v1/user/keys/claim`
async fn claim(state: FederationState, req: Ruma<claim_keys::v1::Request>) -> Result<JsonBody, ApiError> {
    if req.body.one_time_keys.values().map(BTreeMap::len).sum::<usize>() > MAX_ASKED {
        return Err(Error::new(ErrorKind::TooLarge, format!("at most {MAX_ASKED} devices per claim")).into());
    }
    let mut claimed = Map::new();
    for (user, devices) in req.body.one_time_keys.iter().filter(|(user, _)| ours(&state, user)) {
        let wanted: Vec<(String, String)> =
            devices.iter().map(|(device, algorithm)| (device.to_string(), algorithm.to_string())).collect();
        let by_device = keys::claim_user_keys(&state.db, user.as_str(), &wanted).await?;
        if !by_device.is_empty() {
            claimed.insert(user.to_string(), Value::Object(by_device));
        }
    }
    Ok(JsonBody(json!({ "one_time_keys": claimed })))
}

fn unreachable(err: crate::FederationError) -> Error {
    Error::new(ErrorKind::Unknown, format!("could not reach the server: {err}"))
}

/// Refuses at once to ask a server this one is backing off from (its transactions keep
/// failing), as Synapse does: a dead server would otherwise cost every key query its timeout.
/// It is asked again once its backoff ends or it is heard from.
pub(crate) async fn ensure_not_backing_off(
    state: &FederationState,
    server: &ServerName,
) -> Result<(), Error> {
    let now = homeserver_core::time::now_millis() as i64;
    match state.db.destination(server.as_str()).await? {
        Some(row) if row.retry_at > now => {
            Err(Error::new(ErrorKind::Unknown, "the server is unreachable (backing off)"))
        }
        _ => Ok(()),
    }
}

/// Another server's users' keys (`/user/keys/query` to `server`), as a `/keys/query` answer's
/// parts: only entries for that server's users are kept.
pub(crate) async fn fetch_keys(
    state: &FederationState,
    server: &ServerName,
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> Result<Value, Error> {
    ensure_not_backing_off(state, server).await?;
    let answer =
        state.client.send(server, get_keys::v1::Request::new(device_keys)).await.map_err(unreachable)?;
    let theirs = |user: &UserId| user.server_name() == server;
    let mut out = json!({ "device_keys": {}, "master_keys": {}, "self_signing_keys": {} });
    for (user, devices) in answer.device_keys.iter().filter(|(u, _)| theirs(u)) {
        out["device_keys"][user.as_str()] = serde_json::to_value(devices).unwrap_or_default();
    }
    for (user, key) in answer.master_keys.iter().filter(|(u, _)| theirs(u)) {
        out["master_keys"][user.as_str()] = serde_json::to_value(key).unwrap_or_default();
    }
    for (user, key) in answer.self_signing_keys.iter().filter(|(u, _)| theirs(u)) {
        out["self_signing_keys"][user.as_str()] = serde_json::to_value(key).unwrap_or_default();
    }
    Ok(out)
}

/// Claims one-time keys of another server's users (`/user/keys/claim` to `server`): user →
/// device → key, for that server's users only.
pub(crate) async fn claim_remote_keys(
    state: &FederationState,
    server: &ServerName,
    claims: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Result<Value, Error> {
    ensure_not_backing_off(state, server).await?;
    let answer =
        state.client.send(server, claim_keys::v1::Request::new(claims)).await.map_err(unreachable)?;
    let mut out = Map::new();
    for (user, devices) in answer.one_time_keys.iter().filter(|(u, _)| u.server_name() == server) {
        out.insert(user.to_string(), serde_json::to_value(devices).unwrap_or_default());
    }
    Ok(Value::Object(out))
}
