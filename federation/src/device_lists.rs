//! Device lists across servers.
//!
//! Outbound: each change of one of this server's users' devices is an `m.device_list_update`
//! naming the device, its current keys (or `deleted`), its `stream_id` (the change's stream
//! position) and `prev_id` (the user's previous device change), so a receiver that saw the
//! previous one applies it in place and one that did not refetches the list; a change of their
//! cross-signing keys is an `m.signing_key_update` carrying them.
//!
//! Inbound: other servers' users' device lists are cached here while they share a room with a
//! user of this server (`homeserver_storage::remote_devices`). An update that follows the
//! cached chain is applied; a gap, or a user not cached, drops the cache and fetches the list
//! whole (`/user/devices`) in the background, one fetch per user at a time and
//! [`MAX_RESYNCS`] at once. Either way the users sharing a room hear of the change. A client's
//! `/keys/query` reads a usable cache, fetches the lists of users it shares rooms with but has
//! not cached, and asks `/user/keys/query` for the rest (or when a fetch fails).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use homeserver_core::{Error, ErrorKind};
use homeserver_live::keys::{self, visible_signatures};
use homeserver_storage::{
    destinations::DeviceListChange,
    remote_devices::{RemoteDevice, RemoteDeviceList, RemoteDeviceUpdate},
};
use ruma::{
    OwnedDeviceId, OwnedUserId, ServerName, UserId,
    api::federation::{
        device::get_devices,
        transactions::edu::{DeviceListUpdateContent, SigningKeyUpdateContent},
    },
    serde::Raw,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::FederationState;

/// Most list fetches running at once (inbound updates that broke their chain).
const MAX_RESYNCS: usize = 4;
/// Most users waiting for a fetch; past it the cache is only dropped (a query fetches it).
const MAX_WAITING: usize = 1_000;
/// Most list fetches one `/keys/query` makes at once.
const QUERY_FETCHES: usize = 8;
/// Most devices kept of one remote user, and the largest device keys kept (bytes).
const MAX_DEVICES: usize = 1_000;
const MAX_KEYS_BYTES: usize = 16 * 1024;

/// Stripes of the per-user fetch lock.
const FETCH_STRIPES: usize = 64;

/// The list fetches: who waits for a background fetch, its permits, and a lock per user
/// (striped) so a query and a background fetch of one user make one request, not two.
pub struct Resyncs {
    waiting: Mutex<HashSet<OwnedUserId>>,
    permits: Arc<Semaphore>,
    fetching: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Resyncs {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
            permits: Arc::new(Semaphore::new(MAX_RESYNCS)),
            fetching: (0..FETCH_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl Resyncs {
    fn stripe(&self, user: &UserId) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user.as_str());
        &self.fetching[hash as usize % FETCH_STRIPES]
    }
}

/// The EDUs telling other servers of these changes (in order, one each).
pub(crate) async fn outbound_edus(
    state: &FederationState,
    changes: &[DeviceListChange],
) -> Result<Vec<Value>, Error> {
    let mut devices_of: HashMap<&str, (HashSet<String>, serde_json::Map<String, Value>)> = HashMap::new();
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let user = change.user_id.as_str();
        let Some(device_id) = &change.device_id else {
            out.push(signing_key_edu(state, user).await?);
            continue;
        };
        if !devices_of.contains_key(user) {
            let existing = state.db.devices(user).await?.into_iter().map(|d| d.device_id).collect();
            let keys = keys::device_keys(&state.db, user, &HashSet::new(), false).await?;
            devices_of.insert(user, (existing, keys));
        }
        let (existing, keys) = &devices_of[user];
        let mut content = json!({
            "user_id": user,
            "device_id": device_id,
            "stream_id": change.pos,
            "prev_id": change.prev.into_iter().collect::<Vec<_>>(),
            "deleted": !existing.contains(device_id),
        });
        if let Some(device_keys) = keys.get(device_id) {
            content["keys"] = device_keys.clone();
        }
        out.push(json!({ "edu_type": "m.device_list_update", "content": content }));
    }
    Ok(out)
}

async fn signing_key_edu(state: &FederationState, user: &str) -> Result<Value, Error> {
    let mut content = json!({ "user_id": user });
    for (usage, key_json) in state.db.cross_signing_keys(user).await? {
        let field = match usage.as_str() {
            "master" => "master_key",
            "self_signing" => "self_signing_key",
            _ => continue,
        };
        let mut key: Value = serde_json::from_str(&key_json).unwrap_or_else(|_| json!({}));
        visible_signatures(&mut key, user, None);
        content[field] = key;
    }
    Ok(json!({ "edu_type": "m.signing_key_update", "content": content }))
}

/// Whether `user` (of another server) shares a joined room with a user of this server.
async fn shares_a_room(state: &FederationState, user: &UserId) -> Result<bool, Error> {
    let ours = [user.to_string()];
    Ok(!state.db.sharing_a_room(&ours, state.key.server_name().as_str()).await?.is_empty())
}

/// Applies a transaction's device-list and cross-signing updates from `origin` (its users'
/// only, and only of users sharing a room with a user of this server).
pub(crate) async fn receive(
    state: &FederationState,
    origin: &ServerName,
    updates: Vec<DeviceListUpdateContent>,
    signing: Vec<SigningKeyUpdateContent>,
) -> Result<(), Error> {
    let mut by_user: BTreeMap<OwnedUserId, Vec<DeviceListUpdateContent>> = BTreeMap::new();
    for update in updates.into_iter().filter(|u| u.user_id.server_name() == origin) {
        by_user.entry(update.user_id.clone()).or_default().push(update);
    }
    let mut told: HashSet<OwnedUserId> = HashSet::new();
    for (user, mut updates) in by_user {
        if !shares_a_room(state, &user).await? {
            continue;
        }
        updates.sort_by_key(|u| u.stream_id);
        apply_updates(state, &user, &updates).await?;
        told.insert(user);
    }
    for update in signing.into_iter().filter(|u| u.user_id.server_name() == origin) {
        if told.contains(&update.user_id) || !shares_a_room(state, &update.user_id).await? {
            continue;
        }
        let key = |k: &Option<Raw<_>>| k.as_ref().map(|k: &Raw<_>| k.json().get().to_owned());
        let (master, self_signing) = (key(&update.master_key), key(&update.self_signing_key));
        state
            .db
            .set_remote_cross_signing_keys(
                update.user_id.as_str(),
                master.as_deref(),
                self_signing.as_deref(),
            )
            .await?;
        state.live.device_lists.changed(&update.user_id).await?;
        told.insert(update.user_id);
    }
    Ok(())
}

/// One user's updates, oldest first: applied while they follow the cached chain (each
/// `prev_id` the list's current end); otherwise the cache goes and the list is fetched again.
async fn apply_updates(
    state: &FederationState,
    user: &UserId,
    updates: &[DeviceListUpdateContent],
) -> Result<(), Error> {
    let mut end = state.db.remote_device_list_stream_id(user.as_str()).await?;
    let mut gap = end.is_none();
    for update in updates {
        let Some(current) = end else { break };
        let stream_id = i64::try_from(u64::from(update.stream_id)).unwrap_or(i64::MAX);
        if stream_id <= current {
            // Seen already (a retried transaction, or older than the last fetch).
            continue;
        }
        if update.prev_id.is_empty() || update.prev_id.iter().any(|p| u64::from(*p) as i64 != current) {
            gap = true;
            break;
        }
        let change = RemoteDeviceUpdate {
            device_id: update.device_id.to_string(),
            stream_id,
            deleted: update.deleted.unwrap_or(false),
            display_name: update.device_display_name.clone(),
            keys: update
                .keys
                .as_ref()
                .and_then(|k| kept_keys(user, update.device_id.as_str(), k.json().get())),
        };
        let pos = state.live.device_lists.position() as i64;
        if !state.db.apply_remote_device_update(user.as_str(), current, &change, pos).await? {
            gap = true;
            break;
        }
        end = Some(stream_id);
    }
    if gap {
        // Dropped first, so a query meanwhile fetches the list itself rather than read a stale one.
        state.db.forget_remote_device_list(user.as_str()).await?;
        state.live.device_lists.changed(user).await?;
        spawn_resync(state, user);
    } else {
        state.live.device_lists.changed(user).await?;
    }
    Ok(())
}

/// Device keys as kept: a JSON object of bounded size that, if it names a user and device,
/// names this one.
fn kept_keys(user: &UserId, device_id: &str, json: &str) -> Option<String> {
    if json.len() > MAX_KEYS_BYTES {
        return None;
    }
    let value: Value = serde_json::from_str(json).ok()?;
    let names = |field: &str, expected: &str| value.get(field).is_none_or(|v| v == expected);
    (value.is_object() && names("user_id", user.as_str()) && names("device_id", device_id))
        .then(|| json.to_owned())
}

/// Fetches a user's list in the background (one fetch per user at a time); the users sharing
/// a room hear of it when it is in.
fn spawn_resync(state: &FederationState, user: &UserId) {
    {
        let mut waiting = state.device_resyncs.waiting.lock().expect("resyncs poisoned");
        if waiting.len() >= MAX_WAITING || !waiting.insert(user.to_owned()) {
            return;
        }
    }
    let (state, user) = (state.clone(), user.to_owned());
    tokio::spawn(async move {
        let permits = Arc::clone(&state.device_resyncs.permits);
        let _permit = permits.acquire_owned().await;
        if let Err(err) = fetch_list(&state, &user).await {
            tracing::info!(%user, error = %err.message, "could not refetch a device list");
        }
        state.device_resyncs.waiting.lock().expect("resyncs poisoned").remove(&user);
    });
}

/// Fetches a user's whole device list unless it became usable meanwhile (another fetch of
/// it finished); the users sharing a room hear of a fetched list (their clients re-query).
async fn fetch_list(state: &FederationState, user: &UserId) -> Result<(), Error> {
    let _one_fetch = state.device_resyncs.stripe(user).lock().await;
    let ours = state.key.server_name().as_str();
    if !state.db.usable_remote_device_lists(&[user.to_string()], ours).await?.is_empty() {
        return Ok(());
    }
    resync(state, user).await?;
    state.live.device_lists.changed(user).await.map(|_| ())
}

/// Fetches a user's whole device list from their server and caches it.
async fn resync(state: &FederationState, user: &UserId) -> Result<(), Error> {
    crate::e2ee::ensure_not_backing_off(state, user.server_name()).await?;
    // Complete from before the request: a change after it is sent here as an update.
    let synced_pos = state.live.device_lists.position() as i64;
    let answer = state
        .client
        .send(user.server_name(), get_devices::v1::Request::new(user.to_owned()))
        .await
        .map_err(|e| Error::new(ErrorKind::Unknown, format!("could not reach the server: {e}")))?;
    if answer.user_id != user {
        return Err(Error::new(ErrorKind::Unknown, "the server answered for another user"));
    }
    let key = |k: &Option<Raw<_>>| {
        k.as_ref().map(|k: &Raw<_>| k.json().get().to_owned()).filter(|k| k.len() <= MAX_KEYS_BYTES)
    };
    let list = RemoteDeviceList {
        stream_id: i64::try_from(u64::from(answer.stream_id)).unwrap_or(i64::MAX),
        master_key: key(&answer.master_key),
        self_signing_key: key(&answer.self_signing_key),
        devices: answer
            .devices
            .iter()
            .take(MAX_DEVICES)
            .map(|d| RemoteDevice {
                device_id: d.device_id.to_string(),
                display_name: d.device_display_name.clone(),
                keys: kept_keys(user, d.device_id.as_str(), d.keys.json().get()),
            })
            .collect(),
    };
    state.db.replace_remote_device_list(user.as_str(), &list, synced_pos).await?;
    Ok(())
}

/// Keys of `server`'s users for a client's `/keys/query`: cached lists where usable, fetched
/// lists of users sharing a room with this server's users, `/user/keys/query` for the rest.
pub(crate) async fn query(
    state: &FederationState,
    server: &ServerName,
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
) -> Result<Value, Error> {
    let ours = state.key.server_name().as_str();
    let users: Vec<String> =
        device_keys.keys().filter(|u| u.server_name() == server).map(|u| u.to_string()).collect();
    let mut cached = state.db.usable_remote_device_lists(&users, ours).await?;
    let uncached: Vec<String> = users.iter().filter(|u| !cached.contains_key(*u)).cloned().collect();
    let tracked = state.db.sharing_a_room(&uncached, ours).await?;
    if !tracked.is_empty() {
        let fetched: Vec<String> = futures::stream::iter(tracked)
            .map(|user| async move {
                let id = UserId::parse(user.as_str()).ok()?;
                fetch_list(state, &id).await.ok().map(|()| user)
            })
            .buffer_unordered(QUERY_FETCHES)
            .filter_map(|fetched| async move { fetched })
            .collect()
            .await;
        cached.extend(state.db.usable_remote_device_lists(&fetched, ours).await?);
    }
    let wanted: HashMap<String, HashSet<String>> = device_keys
        .iter()
        .map(|(u, devices)| (u.to_string(), devices.iter().map(|d| d.to_string()).collect()))
        .collect();
    let rest: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>> =
        device_keys.into_iter().filter(|(u, _)| !cached.contains_key(u.as_str())).collect();
    let mut out = match rest.is_empty() {
        true => json!({ "device_keys": {}, "master_keys": {}, "self_signing_keys": {} }),
        false => crate::e2ee::fetch_keys(state, server, rest).await?,
    };
    let parse = |k: &Option<String>| k.as_deref().and_then(|k| serde_json::from_str::<Value>(k).ok());
    for (user, list) in cached {
        let wanted = wanted.get(&user).cloned().unwrap_or_default();
        out["device_keys"][&user] = cached_devices(&list, &wanted);
        if let Some(key) = parse(&list.master_key) {
            out["master_keys"][&user] = key;
        }
        if let Some(key) = parse(&list.self_signing_key) {
            out["self_signing_keys"][&user] = key;
        }
    }
    Ok(out)
}

/// A cached list as `/keys/query` shows it: device → keys (with the device's name), for the
/// `wanted` devices (all if none named) that have keys.
fn cached_devices(list: &RemoteDeviceList, wanted: &HashSet<String>) -> Value {
    let mut devices = serde_json::Map::new();
    for device in &list.devices {
        if !wanted.is_empty() && !wanted.contains(&device.device_id) {
            continue;
        }
        let Some(mut keys) = device.keys.as_deref().and_then(|k| serde_json::from_str::<Value>(k).ok())
        else {
            continue;
        };
        if let (Some(name), Some(keys)) = (&device.display_name, keys.as_object_mut()) {
            keys.insert("unsigned".into(), json!({ "device_display_name": name }));
        }
        devices.insert(device.device_id.clone(), keys);
    }
    Value::Object(devices)
}
