//! End-to-end encryption's key endpoints (spec: "End-to-End Encryption", "Key management
//! API") and send-to-device messaging:
//! - `POST /keys/upload`: the device's identity keys (signed by it, for itself only), one-time
//!   keys and fallback keys; answers the one-time key counts.
//! - `POST /keys/query`: the device and cross-signing keys of this server's users
//!   (`homeserver_live::keys`, which other servers' queries read too), and other servers'
//!   users' keys asked of their servers (`/user/keys/query`, all at once, within the
//!   request's timeout; a server that cannot answer is listed in `failures`).
//! - `POST /keys/claim`: one one-time key (or the fallback key) per asked device, here or
//!   through `/user/keys/claim`.
//! - `GET /keys/changes`: whose devices changed between two sync tokens (as sync's
//!   `device_lists`), and whose devices no longer concern the caller.
//! - `PUT /sendToDevice/{type}/{txnId}`: queued through `homeserver_live::to_device`.
//!
//! Keys are stored as uploaded: signed objects the server never alters.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use axum::Router;
use futures::StreamExt;
use homeserver_core::{Error, ErrorKind, token::StreamToken};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_live::{
    keys,
    to_device::{Outgoing, Recipient},
};
use homeserver_storage::e2ee::OneTimeKey;
use ruma::{
    OwnedDeviceId, OwnedOneTimeKeyId, OwnedServerName, OwnedUserId, UserId,
    api::client::{
        keys::{claim_keys, get_key_changes, get_keys, upload_keys},
        to_device::send_event_to_device,
    },
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::{Map, Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(upload)
        .ruma_route(query)
        .ruma_route(claim)
        .ruma_route(changes)
        .ruma_route(send_to_device)
}

/// `GET /_matrix/client/v3/keys/changes?from=&to=`: users whose devices changed between two
/// sync tokens, among those sharing a room with the caller, and those who stopped sharing one.
async fn changes(app: App, req: Ruma<get_key_changes::v3::Request>) -> Result<JsonBody, ApiError> {
    let position = |token: &str| -> Result<i64, Error> {
        token
            .parse::<StreamToken>()
            .map(|t| t.pos as i64)
            .map_err(|_| Error::invalid_param(format!("{token} is not a sync token")))
    };
    let (from, to) = (position(&req.body.from)?, position(&req.body.to)?);
    let (changed, left) =
        app.db.device_list_delta(req.auth.user_id.as_str(), from, to).await.map_err(Error::from)?;
    Ok(JsonBody(json!({ "changed": changed, "left": left })))
}

/// Users one `/keys/query` or `/keys/claim` may ask about.
const MAX_USERS: usize = 1_000;
/// Other servers one `/keys/query` or `/keys/claim` asks at once (the rest wait their turn,
/// within the same deadline).
const SERVERS_AT_ONCE: usize = 32;

/// When a query's answers from other servers are due: the client's `timeout` (10 s by
/// default, at most 30 s) from now.
fn deadline(timeout: Option<Duration>) -> tokio::time::Instant {
    let timeout = timeout.map_or(Duration::from_secs(10), |t| t.min(Duration::from_secs(30)));
    tokio::time::Instant::now() + timeout
}
/// One-time keys one upload may carry.
const MAX_KEYS_PER_UPLOAD: usize = 1_000;

/// Splits `algorithm:key_id` keys into rows.
fn key_rows<T>(keys: &BTreeMap<OwnedOneTimeKeyId, Raw<T>>) -> Result<Vec<OneTimeKey>, Error> {
    if keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("at most {MAX_KEYS_PER_UPLOAD} keys per upload"),
        ));
    }
    Ok(keys
        .iter()
        .map(|(id, key)| OneTimeKey {
            algorithm: id.algorithm().to_string(),
            key_id: id.key_name().to_string(),
            key_json: key.json().get().to_owned(),
        })
        .collect())
}

/// `POST /_matrix/client/v3/keys/upload`
async fn upload(app: App, req: Ruma<upload_keys::v3::Request>) -> Result<JsonBody, ApiError> {
    let (user, device) = (req.auth.user_id.as_str(), req.auth.device_id.as_str());
    // Everything checked before anything is stored.
    let one_time = key_rows(&req.body.one_time_keys)?;
    let fallback = key_rows(&req.body.fallback_keys)?;
    if let Some(keys) = &req.body.device_keys {
        let value: Value =
            serde_json::from_str(keys.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
        // The spec's required fields, as Synapse checks them.
        if !value["algorithms"].is_array() || !value["keys"].is_object() || !value["signatures"].is_object() {
            return Err(Error::bad_json("device_keys needs algorithms, keys and signatures").into());
        }
        // A device publishes keys for itself only.
        if value["user_id"] != user || value["device_id"] != device {
            return Err(Error::invalid_param(
                "device_keys must be this device's own (user_id and device_id)",
            )
            .into());
        }
        if app.db.put_device_keys(user, device, keys.json().get()).await.map_err(Error::from)? {
            app.live.device_lists.devices_changed(&req.auth.user_id, &[device.to_owned()]).await?;
        }
    }
    if !one_time.is_empty() {
        app.db.add_one_time_keys(user, device, &one_time).await.map_err(Error::from)?;
    }
    if !fallback.is_empty() {
        app.db.put_fallback_keys(user, device, &fallback).await.map_err(Error::from)?;
    }
    let mut counts = Map::new();
    counts.insert("signed_curve25519".into(), json!(0));
    for (algorithm, n) in app.db.one_time_key_counts(user, device).await.map_err(Error::from)? {
        counts.insert(algorithm, json!(n));
    }
    Ok(JsonBody(json!({ "one_time_key_counts": counts })))
}

/// `POST /_matrix/client/v3/keys/query`
async fn query(app: App, req: Ruma<get_keys::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.device_keys.len() > MAX_USERS {
        return Err(Error::new(ErrorKind::TooLarge, format!("at most {MAX_USERS} users per query")).into());
    }
    let viewer = req.auth.user_id.as_str();
    let mut answer = keys::KeysAnswer::default();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> = BTreeMap::new();
    for (user, wanted) in &req.body.device_keys {
        if user.server_name() != app.server_name() {
            remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), wanted.clone());
            continue;
        }
        let wanted: HashSet<&str> = wanted.iter().map(|d| d.as_str()).collect();
        keys::add_user_keys(&app.db, &mut answer, user.as_str(), &wanted, Some(viewer)).await?;
    }
    // Other servers are asked at once (up to `SERVERS_AT_ONCE`), all within the client's
    // timeout (10 s by default).
    let deadline = deadline(req.body.timeout);
    let asked = remote.into_iter().map(|(server, users)| {
        let rooms = app.rooms.clone();
        async move {
            let answer = tokio::time::timeout_at(deadline, rooms.remote_keys(server.clone(), users)).await;
            (server, answer)
        }
    });
    let answers: Vec<_> = futures::stream::iter(asked).buffer_unordered(SERVERS_AT_ONCE).collect().await;
    let mut failures = Map::new();
    for (server, result) in answers {
        let parts = match result {
            Ok(Ok(parts)) => parts,
            Ok(Err(err)) => {
                failures.insert(server.to_string(), json!({ "status": 503, "message": err.message }));
                continue;
            }
            Err(_) => {
                failures.insert(server.to_string(), json!({ "status": 503, "message": "timed out" }));
                continue;
            }
        };
        for (field, into) in [
            ("device_keys", &mut answer.device_keys),
            ("master_keys", &mut answer.master_keys),
            ("self_signing_keys", &mut answer.self_signing_keys),
        ] {
            if let Some(entries) = parts.get(field).and_then(Value::as_object) {
                into.extend(entries.clone());
            }
        }
    }
    Ok(JsonBody(json!({
        "device_keys": answer.device_keys,
        "failures": failures,
        "master_keys": answer.master_keys,
        "self_signing_keys": answer.self_signing_keys,
        "user_signing_keys": answer.user_signing_keys,
    })))
}

/// `POST /_matrix/client/v3/keys/claim`
async fn claim(app: App, req: Ruma<claim_keys::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.one_time_keys.values().map(|d| d.len()).sum::<usize>() > MAX_USERS {
        return Err(Error::new(ErrorKind::TooLarge, format!("at most {MAX_USERS} devices per claim")).into());
    }
    let mut claimed = Map::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, _>> = BTreeMap::new();
    for (user, devices) in &req.body.one_time_keys {
        if user.server_name() != app.server_name() {
            remote.entry(user.server_name().to_owned()).or_default().insert(user.clone(), devices.clone());
            continue;
        }
        let wanted: Vec<(String, String)> =
            devices.iter().map(|(device, algorithm)| (device.to_string(), algorithm.to_string())).collect();
        let by_device = keys::claim_user_keys(&app.db, user.as_str(), &wanted).await?;
        if !by_device.is_empty() {
            claimed.insert(user.to_string(), Value::Object(by_device));
        }
    }
    let deadline = deadline(req.body.timeout);
    let asked = remote.into_iter().map(|(server, claims)| {
        let rooms = app.rooms.clone();
        async move {
            let answer =
                tokio::time::timeout_at(deadline, rooms.remote_claim_keys(server.clone(), claims)).await;
            (server, answer)
        }
    });
    let answers: Vec<_> = futures::stream::iter(asked).buffer_unordered(SERVERS_AT_ONCE).collect().await;
    let mut failures = Map::new();
    for (server, result) in answers {
        match result {
            Ok(Ok(Value::Object(users))) => claimed.extend(users),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                failures.insert(server.to_string(), json!({ "status": 503, "message": err.message }));
            }
            Err(_) => {
                failures.insert(server.to_string(), json!({ "status": 503, "message": "timed out" }));
            }
        }
    }
    Ok(JsonBody(json!({ "one_time_keys": claimed, "failures": failures })))
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
async fn send_to_device(
    app: App,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let mut messages = Vec::new();
    for (user, devices) in &req.body.messages {
        for (device, content) in devices {
            let devices = match device {
                DeviceIdOrAllDevices::DeviceId(id) => Recipient::Device(id.to_string()),
                DeviceIdOrAllDevices::AllDevices => Recipient::AllDevices,
            };
            messages.push(Outgoing { user: user.clone(), devices, content: content.json().get().to_owned() });
        }
    }
    let sender: &UserId = &req.auth.user_id;
    app.live
        .to_device
        .send(
            sender,
            req.auth.device_id.as_str(),
            &req.body.event_type.to_string(),
            req.body.txn_id.as_str(),
            messages,
        )
        .await?;
    Ok(JsonBody(json!({})))
}
