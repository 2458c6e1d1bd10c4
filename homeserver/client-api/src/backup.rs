//! Server-side key backup (spec: "Server-side key backups"): `/room_keys/version[/{version}]`
//! (create, read — the current one or a given one, with `count` and `etag` —, update the
//! `auth_data`, delete) and `/room_keys/keys[/{roomId}[/{sessionId}]]?version=` (store, read,
//! delete). Keys are stored only in the current version (`M_WRONG_ROOM_KEYS_VERSION`
//! otherwise, naming it), and a session's key is replaced only by a better one. The server
//! never reads what it keeps: `session_data` is the client's encrypted blob.

use std::collections::BTreeMap;

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::key_backup::{BackedUpKey, BackupVersion};
use ruma::{
    api::client::backup::{
        KeyBackupData, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
    },
    serde::Raw,
};
use serde_json::{Map, Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(create_version)
        .ruma_route(latest_version)
        .ruma_route(get_version)
        .ruma_route(update_version)
        .ruma_route(delete_version)
        .ruma_route(put_keys)
        .ruma_route(put_room_keys)
        .ruma_route(put_session_key)
        .ruma_route(get_keys)
        .ruma_route(get_room_keys)
        .ruma_route(get_session_key)
        .ruma_route(delete_keys)
        .ruma_route(delete_room_keys)
        .ruma_route(delete_session_key)
}

/// Keys one request may store.
const MAX_KEYS_PER_REQUEST: usize = 10_000;

/// `{algorithm, auth_data}` of a backup-algorithm body: both present. `auth_data` is the
/// algorithm's own (an object for the spec's algorithm) and kept as sent, whatever its JSON
/// type, as Synapse keeps it (older clients and SyTest send a string).
fn algorithm(raw: &Raw<ruma::api::client::backup::BackupAlgorithm>) -> Result<(String, String), Error> {
    let body: Value = serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let algorithm = body["algorithm"].as_str().ok_or_else(|| Error::bad_json("algorithm is required"))?;
    match body.get("auth_data") {
        None | Some(Value::Null) => Err(Error::bad_json("auth_data is required")),
        Some(auth_data) => Ok((algorithm.to_owned(), auth_data.to_string())),
    }
}

fn version_json(v: &BackupVersion) -> Value {
    json!({
        "algorithm": v.algorithm,
        "auth_data": serde_json::from_str::<Value>(&v.auth_data).unwrap_or_else(|_| json!({})),
        "count": v.count,
        "etag": v.etag.to_string(),
        "version": v.version.to_string(),
    })
}

/// A version number as clients send it (ours are decimal integers).
fn number(version: &str) -> Option<i64> {
    version.parse().ok().filter(|v| *v > 0)
}

/// An existing version, or `M_NOT_FOUND`.
async fn existing(app: &App, user: &str, version: &str) -> Result<BackupVersion, Error> {
    let found = match number(version) {
        Some(v) => app.db.backup_version(user, Some(v)).await?,
        None => None,
    };
    found.ok_or_else(|| Error::not_found("Unknown backup version"))
}

/// The current version if `version` names it, else `M_WRONG_ROOM_KEYS_VERSION`.
async fn current(app: &App, user: &str, version: &str) -> Result<i64, Error> {
    let current = app.db.backup_version(user, None).await?;
    match current {
        Some(c) if number(version) == Some(c.version) => Ok(c.version),
        Some(c) => Err(Error::new(
            ErrorKind::WrongRoomKeysVersion { current_version: Some(c.version.to_string()) },
            "That is not the current backup version",
        )),
        None => Err(Error::not_found("No backup version exists")),
    }
}

/// `{count, etag}` of a version after a change.
async fn summary(app: &App, user: &str, version: i64) -> Result<JsonBody, ApiError> {
    let v = app
        .db
        .backup_version(user, Some(version))
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Unknown backup version"))?;
    Ok(JsonBody(json!({ "count": v.count, "etag": v.etag.to_string() })))
}

fn backed_up(room_id: &str, session_id: &str, raw: &Raw<KeyBackupData>) -> Result<BackedUpKey, Error> {
    let data: Value = serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let index = |name: &str| {
        data[name]
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::bad_json(format!("{name} must be a non-negative integer")))
    };
    // `session_data` is the algorithm's (an object for the spec's); kept as sent, whatever
    // its JSON type, as Synapse keeps it.
    if data["session_data"].is_null() || !data["is_verified"].is_boolean() {
        return Err(Error::bad_json("session_data and is_verified are required"));
    }
    Ok(BackedUpKey {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: index("first_message_index")?,
        forwarded_count: index("forwarded_count")?,
        is_verified: data["is_verified"].as_bool().unwrap_or(false),
        session_data: data["session_data"].to_string(),
    })
}

fn key_json(k: &BackedUpKey) -> Value {
    json!({
        "first_message_index": k.first_message_index,
        "forwarded_count": k.forwarded_count,
        "is_verified": k.is_verified,
        "session_data": serde_json::from_str::<Value>(&k.session_data).unwrap_or_else(|_| json!({})),
    })
}

/// Keys grouped as `{roomId: {sessions: {sessionId: key}}}`.
fn rooms_json(keys: &[BackedUpKey]) -> Value {
    let mut rooms: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for k in keys {
        rooms.entry(&k.room_id).or_default().insert(k.session_id.clone(), key_json(k));
    }
    Value::Object(
        rooms
            .into_iter()
            .map(|(room, sessions)| (room.to_owned(), json!({ "sessions": sessions })))
            .collect(),
    )
}

async fn store(app: &App, user: &str, version: &str, keys: Vec<BackedUpKey>) -> Result<JsonBody, ApiError> {
    if keys.len() > MAX_KEYS_PER_REQUEST {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!("at most {MAX_KEYS_PER_REQUEST} keys per request"),
        )
        .into());
    }
    let version = current(app, user, version).await?;
    app.db.put_backup_keys(user, version, &keys).await.map_err(Error::from)?;
    summary(app, user, version).await
}

/// `POST /_matrix/client/v3/room_keys/version`
async fn create_version(
    app: App,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let (algorithm, auth_data) = algorithm(&req.body.algorithm)?;
    let version = app
        .db
        .create_backup_version(req.auth.user_id.as_str(), &algorithm, &auth_data)
        .await
        .map_err(Error::from)?;
    Ok(JsonBody(json!({ "version": version.to_string() })))
}

/// `GET /_matrix/client/v3/room_keys/version`
async fn latest_version(
    app: App,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let v = app.db.backup_version(req.auth.user_id.as_str(), None).await.map_err(Error::from)?;
    Ok(JsonBody(version_json(&v.ok_or_else(|| Error::not_found("No backup version exists"))?)))
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
async fn get_version(app: App, req: Ruma<get_backup_info::v3::Request>) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(version_json(&existing(&app, req.auth.user_id.as_str(), &req.body.version).await?)))
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`: new `auth_data`, same algorithm.
async fn update_version(
    app: App,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let user = req.auth.user_id.as_str();
    let old = existing(&app, user, &req.body.version).await?;
    let (algorithm, auth_data) = algorithm(&req.body.algorithm)?;
    let body: Value = serde_json::from_str(req.body.algorithm.json().get()).unwrap_or_default();
    if body.get("version").is_some_and(|v| v.as_str() != Some(req.body.version.as_str())) {
        return Err(Error::invalid_param("the body's version differs from the path's").into());
    }
    if algorithm != old.algorithm {
        return Err(Error::invalid_param("a backup version's algorithm cannot change").into());
    }
    app.db.update_backup_version(user, old.version, &auth_data).await.map_err(Error::from)?;
    Ok(JsonBody(json!({})))
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
async fn delete_version(
    app: App,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let user = req.auth.user_id.as_str();
    let v = existing(&app, user, &req.body.version).await?;
    app.db.delete_backup_version(user, v.version).await.map_err(Error::from)?;
    Ok(JsonBody(json!({})))
}

/// `PUT /_matrix/client/v3/room_keys/keys?version=`
async fn put_keys(app: App, req: Ruma<add_backup_keys::v3::Request>) -> Result<JsonBody, ApiError> {
    let mut keys = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session, raw) in &backup.sessions {
            keys.push(backed_up(room.as_str(), session, raw)?);
        }
    }
    store(&app, req.auth.user_id.as_str(), &req.body.version, keys).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}?version=`
async fn put_room_keys(
    app: App,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let room = req.body.room_id.as_str();
    let keys =
        req.body.sessions.iter().map(|(s, raw)| backed_up(room, s, raw)).collect::<Result<Vec<_>, _>>()?;
    store(&app, req.auth.user_id.as_str(), &req.body.version, keys).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
async fn put_session_key(
    app: App,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let key = backed_up(req.body.room_id.as_str(), &req.body.session_id, &req.body.session_data)?;
    store(&app, req.auth.user_id.as_str(), &req.body.version, vec![key]).await
}

/// The keys of an existing version: all, a room's, or a session's.
async fn read(
    app: &App,
    user: &str,
    version: &str,
    room: Option<&str>,
    session: Option<&str>,
) -> Result<Vec<BackedUpKey>, Error> {
    let v = existing(app, user, version).await?;
    Ok(app.db.backup_keys(user, v.version, room, session).await?)
}

/// `GET /_matrix/client/v3/room_keys/keys?version=`
async fn get_keys(app: App, req: Ruma<get_backup_keys::v3::Request>) -> Result<JsonBody, ApiError> {
    let keys = read(&app, req.auth.user_id.as_str(), &req.body.version, None, None).await?;
    Ok(JsonBody(json!({ "rooms": rooms_json(&keys) })))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}?version=` (a room without keys: no sessions)
async fn get_room_keys(
    app: App,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let room = req.body.room_id.as_str();
    let keys = read(&app, req.auth.user_id.as_str(), &req.body.version, Some(room), None).await?;
    let sessions: Map<String, Value> = keys.iter().map(|k| (k.session_id.clone(), key_json(k))).collect();
    Ok(JsonBody(json!({ "sessions": sessions })))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
async fn get_session_key(
    app: App,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let (room, session) = (req.body.room_id.as_str(), req.body.session_id.as_str());
    let keys = read(&app, req.auth.user_id.as_str(), &req.body.version, Some(room), Some(session)).await?;
    let key = keys.first().ok_or_else(|| Error::not_found("No backed-up key for this session"))?;
    Ok(JsonBody(key_json(key)))
}

/// Deletes keys of an existing version; its `{count, etag}` after.
async fn remove(
    app: &App,
    user: &str,
    version: &str,
    room: Option<&str>,
    session: Option<&str>,
) -> Result<JsonBody, ApiError> {
    let v = existing(app, user, version).await?;
    app.db.delete_backup_keys(user, v.version, room, session).await.map_err(Error::from)?;
    summary(app, user, v.version).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys?version=`
async fn delete_keys(app: App, req: Ruma<delete_backup_keys::v3::Request>) -> Result<JsonBody, ApiError> {
    remove(&app, req.auth.user_id.as_str(), &req.body.version, None, None).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}?version=`
async fn delete_room_keys(
    app: App,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<JsonBody, ApiError> {
    remove(&app, req.auth.user_id.as_str(), &req.body.version, Some(req.body.room_id.as_str()), None).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}?version=`
async fn delete_session_key(
    app: App,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let (room, session) = (req.body.room_id.as_str(), req.body.session_id.as_str());
    remove(&app, req.auth.user_id.as_str(), &req.body.version, Some(room), Some(session)).await
}
