//! Other servers' users' device lists, cached here (`homeserver_storage::remote_devices`) and
//! read by a client's `/keys/query`.
//!
//! A list is fetched whole (`/user/devices/{userId}`) when an update broke its chain
//! (`device_lists`, in the background) or a query finds a user sharing a room with this server
//! not cached. One fetch per user at a time (a striped lock the background and the query take
//! alike, so they make one request, not two), [`MAX_RESYNCS`] background fetches at once, each
//! within [`FETCH_TIMEOUT`]. A fetched list older than the newest update its server announced
//! meanwhile is not trusted (it would lack that change); the background fetch tries again.
//! Lists of more than [`MAX_DEVICES`] devices are not cached.
//!
//! A query reads usable cached lists, fetches at most [`QUERY_FETCHES`] uncached ones (the rest
//! are fetched in the background), and asks `/user/keys/query` for everyone else.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use homeserver_core::{Error, ErrorKind};
use homeserver_storage::remote_devices::{RemoteDevice, RemoteDeviceList};
use ruma::{
    OwnedDeviceId, OwnedUserId, ServerName, UserId, api::federation::device::get_devices, serde::Raw,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::FederationState;

/// Most background fetches running at once.
const MAX_RESYNCS: usize = 4;
/// Most users waiting for a background fetch (or announced ahead of their cache); past it the
/// cache is only dropped and a query fetches it.
const MAX_WAITING: usize = 1_000;
/// Most lists one `/keys/query` fetches itself, and how many at once.
const QUERY_FETCHES: usize = 16;
const QUERY_FETCHES_AT_ONCE: usize = 8;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a background fetch tries again when the list it got is behind an update.
const FETCH_TRIES: u32 = 3;
/// Most devices cached of one remote user, the largest device keys kept (bytes) and the
/// longest device name kept.
const MAX_DEVICES: usize = 1_000;
const MAX_KEYS_BYTES: usize = 16 * 1024;
const MAX_NAME_CHARS: usize = 256;
/// Stripes of the per-user fetch lock.
const FETCH_STRIPES: usize = 64;

/// The list fetches: who waits for a background fetch, the newest change each user's server
/// announced that a fetch must bring, the permits, and the per-user lock.
pub struct Resyncs {
    waiting: Mutex<HashSet<OwnedUserId>>,
    announced: Mutex<HashMap<OwnedUserId, i64>>,
    permits: Arc<Semaphore>,
    fetching: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Resyncs {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
            announced: Mutex::default(),
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

    /// Notes that `user`'s server announced a change numbered `stream_id` that is not cached.
    pub(crate) fn announced(&self, user: &UserId, stream_id: i64) {
        let mut announced = self.announced.lock().expect("resyncs poisoned");
        if let Some(newest) = announced.get_mut(user) {
            *newest = (*newest).max(stream_id);
        } else if announced.len() < MAX_WAITING {
            announced.insert(user.to_owned(), stream_id);
        }
    }

    fn announced_of(&self, user: &UserId) -> Option<i64> {
        self.announced.lock().expect("resyncs poisoned").get(user).copied()
    }

    /// A list numbered `stream_id` is cached: announcements it covers are settled.
    fn settled(&self, user: &UserId, stream_id: i64) {
        let mut announced = self.announced.lock().expect("resyncs poisoned");
        if announced.get(user).is_some_and(|newest| *newest <= stream_id) {
            announced.remove(user);
        }
    }
}

/// A device name as kept: at most [`MAX_NAME_CHARS`] characters.
pub(crate) fn bounded_name(name: String) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((cut, _)) => name[..cut].to_owned(),
        None => name,
    }
}

/// Device keys as kept: a JSON object of bounded size that, if it names a user and device,
/// names this one.
pub(crate) fn kept_keys(user: &UserId, device_id: &str, json: &str) -> Option<String> {
    if json.len() > MAX_KEYS_BYTES {
        return None;
    }
    let value: Value = serde_json::from_str(json).ok()?;
    let names = |field: &str, expected: &str| value.get(field).is_none_or(|v| v == expected);
    (value.is_object() && names("user_id", user.as_str()) && names("device_id", device_id))
        .then(|| json.to_owned())
}

/// Fetches a user's list in the background (one waiting fetch per user); the users sharing a
/// room hear of it when it is in.
pub(crate) fn spawn_fetch(state: &FederationState, user: &UserId) {
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
        for attempt in 1..=FETCH_TRIES {
            match fetch_list(&state, &user).await {
                Ok(()) => break,
                Err(err) if attempt == FETCH_TRIES => {
                    tracing::info!(%user, error = %err.message, "could not refetch a device list")
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await,
            }
        }
        state.device_resyncs.waiting.lock().expect("resyncs poisoned").remove(&user);
    });
}

/// Fetches a user's whole device list unless a usable one covering every announced change is
/// cached (another fetch finished meanwhile); the users sharing a room hear of a fetched list
/// (their clients re-query).
async fn fetch_list(state: &FederationState, user: &UserId) -> Result<(), Error> {
    let resyncs = &state.device_resyncs;
    let _one_fetch = resyncs.stripe(user).lock().await;
    let ours = state.key.server_name().as_str();
    let announced = resyncs.announced_of(user);
    let usable = state.db.usable_remote_device_lists(&[user.to_string()], ours).await?;
    if let Some(list) = usable.get(user.as_str())
        && announced.is_none_or(|newest| list.stream_id >= newest)
    {
        return Ok(());
    }
    let stream_id = tokio::time::timeout(FETCH_TIMEOUT, fetch(state, user, announced))
        .await
        .map_err(|_| Error::new(ErrorKind::Unknown, "the server did not answer in time"))??;
    resyncs.settled(user, stream_id);
    state.live.device_lists.changed(user).await.map(|_| ())
}

/// Fetches a user's whole device list from their server and caches it; its stream id.
async fn fetch(state: &FederationState, user: &UserId, announced: Option<i64>) -> Result<i64, Error> {
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
    if answer.devices.len() > MAX_DEVICES {
        return Err(Error::new(ErrorKind::Unknown, "too many devices to cache"));
    }
    let stream_id = i64::try_from(u64::from(answer.stream_id)).unwrap_or(i64::MAX);
    if announced.is_some_and(|newest| stream_id < newest) {
        return Err(Error::new(ErrorKind::Unknown, "the list is behind a change its server announced"));
    }
    let key = |k: &Option<Raw<_>>| {
        k.as_ref().map(|k: &Raw<_>| k.json().get().to_owned()).filter(|k| k.len() <= MAX_KEYS_BYTES)
    };
    let list = RemoteDeviceList {
        stream_id,
        master_key: key(&answer.master_key),
        self_signing_key: key(&answer.self_signing_key),
        devices: answer
            .devices
            .iter()
            .map(|d| RemoteDevice {
                device_id: d.device_id.to_string(),
                display_name: d.device_display_name.clone().map(bounded_name),
                keys: kept_keys(user, d.device_id.as_str(), d.keys.json().get()),
            })
            .collect(),
    };
    state.db.replace_remote_device_list(user.as_str(), &list, synced_pos).await?;
    Ok(stream_id)
}

/// Keys of `server`'s users for a client's `/keys/query`: cached lists where usable, fetched
/// lists of (a bounded number of) users sharing a room with this server's users,
/// `/user/keys/query` for the rest.
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
    let mut tracked = state.db.sharing_a_room(&uncached, ours).await?;
    // Past the first few, lists are fetched in the background; this answer asks for their keys.
    for later in tracked.split_off(tracked.len().min(QUERY_FETCHES)) {
        if let Ok(user) = UserId::parse(later.as_str()) {
            spawn_fetch(state, &user);
        }
    }
    if !tracked.is_empty() {
        let fetched: Vec<String> = futures::stream::iter(tracked)
            .map(|user| async move {
                let id = UserId::parse(user.as_str()).ok()?;
                fetch_list(state, &id).await.ok().map(|()| user)
            })
            .buffer_unordered(QUERY_FETCHES_AT_ONCE)
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
    let empty = || json!({ "device_keys": {}, "master_keys": {}, "self_signing_keys": {} });
    let mut out = match rest.is_empty() {
        true => empty(),
        false => match crate::e2ee::fetch_keys(state, server, rest).await {
            Ok(answer) => answer,
            // The server is unreachable: what is cached is still the truth.
            Err(_) if !cached.is_empty() => empty(),
            Err(err) => return Err(err),
        },
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
