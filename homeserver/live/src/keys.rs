//! This server's users' end-to-end encryption keys as others read and claim them: one place for
//! a local client's `/keys/query` and `/keys/claim` and for other servers' `/user/keys/query`,
//! `/user/keys/claim` and `/user/devices`, so both see the same keys under the same rules.

use std::collections::HashSet;

use homeserver_core::Error;
use homeserver_storage::Db;
use serde_json::{Map, Value, json};

/// This server's users' keys as one asker sees them.
#[derive(Debug, Default)]
pub struct KeysAnswer {
    /// user → device → signed device keys (with `unsigned.device_display_name`).
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    /// Only the asker's own (never over federation).
    pub user_signing_keys: Map<String, Value>,
}

/// A cross-signing key as `viewer` may see it: signatures by users other than its owner and
/// the viewer are another user's private trust decisions (spec: only the signer sees them).
/// Other servers (`viewer` `None`) see the owner's signatures only.
pub fn visible_signatures(key: &mut Value, owner: &str, viewer: Option<&str>) {
    if let Some(signatures) = key.get_mut("signatures").and_then(Value::as_object_mut) {
        signatures.retain(|signer, _| signer == owner || Some(signer.as_str()) == viewer);
    }
}

/// The devices' keys of one local user (`wanted` empty: all of them), keyed by device id, with
/// their display names when `with_names`.
pub async fn device_keys(
    db: &Db,
    user: &str,
    wanted: &HashSet<&str>,
    with_names: bool,
) -> Result<Map<String, Value>, Error> {
    let mut devices = Map::new();
    for (device_id, key_json, display_name) in db.device_keys_of(user).await? {
        if !wanted.is_empty() && !wanted.contains(device_id.as_str()) {
            continue;
        }
        let mut keys: Value = serde_json::from_str(&key_json).unwrap_or_else(|_| json!({}));
        // Device names often name a person or a machine: other servers do not see them (as
        // Synapse's `allow_device_name_lookup_over_federation` is off by default). Local
        // askers always get `unsigned`, with the name if the device has one.
        if with_names && let Some(keys) = keys.as_object_mut() {
            let unsigned = match display_name {
                Some(name) => json!({ "device_display_name": name }),
                None => json!({}),
            };
            keys.insert("unsigned".into(), unsigned);
        }
        devices.insert(device_id, keys);
    }
    Ok(devices)
}

/// Adds one local user's device and cross-signing keys to `answer`, as `viewer` (a local user,
/// or `None` for another server) may see them.
pub async fn add_user_keys(
    db: &Db,
    answer: &mut KeysAnswer,
    user: &str,
    wanted: &HashSet<&str>,
    viewer: Option<&str>,
) -> Result<(), Error> {
    let devices = device_keys(db, user, wanted, viewer.is_some()).await?;
    answer.device_keys.insert(user.to_owned(), Value::Object(devices));
    for (usage, key_json) in db.cross_signing_keys(user).await? {
        let mut key: Value = serde_json::from_str(&key_json).unwrap_or_else(|_| json!({}));
        visible_signatures(&mut key, user, viewer);
        match usage.as_str() {
            "master" => answer.master_keys.insert(user.to_owned(), key),
            "self_signing" => answer.self_signing_keys.insert(user.to_owned(), key),
            // Only its owner sees a user-signing key.
            "user_signing" if viewer == Some(user) => answer.user_signing_keys.insert(user.to_owned(), key),
            _ => None,
        };
    }
    Ok(())
}

/// Claims one key of `algorithm` from each listed device of a local user (a one-time key, else
/// the fallback key); device → `{ "algorithm:key_id": key }` for the devices that had one.
pub async fn claim_user_keys(
    db: &Db,
    user: &str,
    devices: &[(String, String)],
) -> Result<Map<String, Value>, Error> {
    let mut by_device = Map::new();
    for ((device, _), key) in devices.iter().zip(db.claim_keys(user, devices).await?) {
        if let Some(key) = key {
            let value: Value = serde_json::from_str(&key.key_json).unwrap_or_else(|_| json!({}));
            by_device.insert(device.clone(), json!({ format!("{}:{}", key.algorithm, key.key_id): value }));
        }
    }
    Ok(by_device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_signers_are_hidden_from_all_but_themselves() {
        let key =
            json!({ "signatures": { "@o:x": { "a": "1" }, "@v:y": { "b": "2" }, "@z:y": { "c": "3" } } });
        let mut seen = key.clone();
        visible_signatures(&mut seen, "@o:x", Some("@v:y"));
        assert_eq!(seen["signatures"], json!({ "@o:x": { "a": "1" }, "@v:y": { "b": "2" } }));
        let mut remote = key;
        visible_signatures(&mut remote, "@o:x", None);
        assert_eq!(remote["signatures"], json!({ "@o:x": { "a": "1" } }));
    }
}
