//! Device lists across servers, as updates.
//!
//! Outbound: each change of one of this server's users' devices is an `m.device_list_update`
//! naming the device, its current keys (or `deleted`), its `stream_id` (the change's stream
//! position) and `prev_id` (the user's previous device change), so a receiver that saw the
//! previous one applies it in place and one that did not refetches the list; a change of their
//! cross-signing keys is an `m.signing_key_update` carrying them.
//!
//! Inbound: updates of other servers' users who share a room with a user of this server keep
//! the cache of their lists (`remote_lists`) current. An update that follows a usable cached
//! list's chain is applied; a gap, or a user not cached (or whose cache is no longer usable),
//! drops the cache and has `remote_lists` fetch the list whole in the background. Either way
//! the users sharing a room hear of the change.

use std::collections::{BTreeMap, HashMap, HashSet};

use homeserver_core::Error;
use homeserver_live::keys::{self, visible_signatures};
use homeserver_storage::{destinations::DeviceListChange, remote_devices::RemoteDeviceUpdate};
use ruma::{
    OwnedUserId, ServerName, UserId,
    api::federation::transactions::edu::{DeviceListUpdateContent, SigningKeyUpdateContent},
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{FederationState, remote_lists};

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
        let user = &update.user_id;
        if !told.contains(user) && !shares_a_room(state, user).await? {
            continue;
        }
        let key = |k: &Option<Raw<_>>| k.as_ref().map(|k: &Raw<_>| k.json().get().to_owned());
        let (master, self_signing) = (key(&update.master_key), key(&update.self_signing_key));
        state
            .db
            .set_remote_cross_signing_keys(user.as_str(), master.as_deref(), self_signing.as_deref())
            .await?;
        // Room mates hear of it once per transaction, with or without a device update.
        if told.insert(user.clone()) {
            state.live.device_lists.changed(user).await?;
        }
    }
    Ok(())
}

fn stream_id(update: &DeviceListUpdateContent) -> i64 {
    i64::try_from(u64::from(update.stream_id)).unwrap_or(i64::MAX)
}

/// One user's updates, oldest first: applied while they follow a usable cached list's chain
/// (each `prev_id` the list's current end); otherwise the cache goes and the list is fetched
/// again.
async fn apply_updates(
    state: &FederationState,
    user: &UserId,
    updates: &[DeviceListUpdateContent],
) -> Result<(), Error> {
    let ours = state.key.server_name().as_str();
    // Only a usable cache can be continued: after a break in sharing, updates may have gone
    // unsent, whatever the next one's prev_id says.
    let mut end = state
        .db
        .usable_remote_device_lists(&[user.to_string()], ours)
        .await?
        .remove(user.as_str())
        .map(|list| list.stream_id);
    let mut gap = end.is_none();
    for update in updates {
        let Some(current) = end else { break };
        if stream_id(update) <= current {
            // Seen already (a retried transaction, or older than the last fetch).
            continue;
        }
        if update.prev_id.is_empty() || update.prev_id.iter().any(|p| u64::from(*p) as i64 != current) {
            gap = true;
            break;
        }
        let change = RemoteDeviceUpdate {
            device_id: update.device_id.to_string(),
            stream_id: stream_id(update),
            deleted: update.deleted.unwrap_or(false),
            display_name: update.device_display_name.clone().map(remote_lists::bounded_name),
            keys: update
                .keys
                .as_ref()
                .and_then(|k| remote_lists::kept_keys(user, update.device_id.as_str(), k.json().get())),
        };
        if !state.db.apply_remote_device_update(user.as_str(), current, &change).await? {
            gap = true;
            break;
        }
        end = Some(change.stream_id);
    }
    if gap {
        // The fetch must bring at least the newest change announced, or it is not trusted.
        let newest = updates.iter().map(stream_id).max().unwrap_or(0);
        state.device_resyncs.announced(user, newest);
        // Dropped first, so a query meanwhile fetches the list itself rather than read a stale one.
        state.db.forget_remote_device_list(user.as_str()).await?;
        state.live.device_lists.changed(user).await?;
        remote_lists::spawn_fetch(state, user);
    } else {
        state.live.device_lists.changed(user).await?;
    }
    Ok(())
}
