//! Cross-signing (spec: "Cross-signing"): `POST /keys/device_signing/upload` publishes a user's
//! master, self-signing and user-signing keys — without user-interactive auth the first time or
//! when nothing changes (spec v1.11), with it to replace them — and `POST
//! /keys/signatures/upload` adds the uploader's signatures to its own devices' and
//! cross-signing keys (and to other local users' master keys, with its user-signing key).
//! `/keys/query` (in `keys`) hands out the keys with the signatures merged in. Each change
//! counts as a device-list change, so room mates re-query.

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::api::client::keys::{upload_signatures, upload_signing_keys};
use serde_json::{Map, Value, json};

use crate::{App, uia};

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(upload_signing_keys).ruma_route(upload_signatures)
}

/// A cross-signing key as JSON, checked to be the uploader's and of the type it is sent as.
fn checked_key(raw: &str, user: &str, usage: &str) -> Result<Value, Error> {
    let key: Value = serde_json::from_str(raw).map_err(|e| Error::bad_json(e.to_string()))?;
    if key["user_id"] != user {
        return Err(Error::invalid_param(format!("the {usage} key must be the uploader's own")));
    }
    if !key["usage"].as_array().is_some_and(|u| u.iter().any(|x| x == usage)) {
        return Err(Error::invalid_param(format!("the {usage} key must list {usage} in its usage")));
    }
    if key["keys"].as_object().is_none_or(|k| k.len() != 1) {
        return Err(Error::invalid_param(format!("the {usage} key must hold exactly one public key")));
    }
    Ok(key)
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
async fn upload_signing_keys(
    app: App,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let user = &req.auth.user_id;
    let mut keys = Vec::new();
    for (usage, raw) in [
        ("master", &req.body.master_key),
        ("self_signing", &req.body.self_signing_key),
        ("user_signing", &req.body.user_signing_key),
    ] {
        if let Some(raw) = raw {
            keys.push((usage.to_owned(), checked_key(raw.json().get(), user.as_str(), usage)?));
        }
    }
    let existing = app.db.cross_signing_keys(user.as_str()).await.map_err(Error::from)?;
    let stored = |usage: &str| {
        existing.iter().find(|(t, _)| t == usage).and_then(|(_, j)| serde_json::from_str::<Value>(j).ok())
    };
    let has_master = stored("master").is_some();
    // The same keys again (signatures added since do not make them different keys).
    let unsigned = |key: &Value| {
        let mut key = key.clone();
        key.as_object_mut().map(|k| k.remove("signatures"));
        key
    };
    let nothing_new =
        keys.iter().all(|(usage, key)| stored(usage).as_ref().map(unsigned) == Some(unsigned(key)));
    if has_master && !nothing_new {
        // Replacing keys: the account's password first.
        uia::authenticate(&app, uia::Step::of(&req), &[&[uia::PASSWORD]], Some(user), false).await?;
    }
    if nothing_new {
        return Ok(JsonBody(json!({})));
    }
    if !has_master && !keys.iter().any(|(usage, _)| usage == "master") {
        return Err(Error::missing_param("a master key must be uploaded first").into());
    }
    let rows: Vec<(String, String)> = keys.into_iter().map(|(usage, key)| (usage, key.to_string())).collect();
    app.db.put_cross_signing_keys(user.as_str(), &rows).await.map_err(Error::from)?;
    // A user-signing key alone is the user's own business (others never see it).
    if rows.iter().all(|(usage, _)| usage == "user_signing") {
        app.live.device_lists.changed_for_self(user).await?;
    } else {
        app.live.device_lists.changed(user).await?;
    }
    Ok(JsonBody(json!({})))
}

/// Adds `signer`'s signatures of `signed` to `stored` (both key objects); whether any was new.
fn merge_signatures(stored: &mut Value, signed: &Value, signer: &str) -> bool {
    let Some(new) = signed["signatures"][signer].as_object() else { return false };
    let signatures = stored
        .as_object_mut()
        .map(|o| o.entry("signatures").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut);
    let Some(signatures) = signatures else { return false };
    let mine = signatures.entry(signer.to_owned()).or_insert_with(|| json!({}));
    let Some(mine) = mine.as_object_mut() else { return false };
    let mut added = false;
    for (key_id, signature) in new {
        if !mine.contains_key(key_id) && mine.len() >= MAX_SIGNATURES_PER_SIGNER {
            continue;
        }
        if mine.get(key_id) != Some(signature) {
            mine.insert(key_id.clone(), signature.clone());
            added = true;
        }
    }
    added
}

/// Signatures one request may carry (keys signed).
const MAX_SIGNED_KEYS: usize = 1_000;
/// Signatures one signer may keep on one key.
const MAX_SIGNATURES_PER_SIGNER: usize = 8;

/// `POST /_matrix/client/v3/keys/signatures/upload`: the signer's own devices and keys, or
/// another local user's master key; each merge happens under a lock on the target's keys, so
/// concurrent uploads and a key rotation never undo one another.
async fn upload_signatures(
    app: App,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let signer = req.auth.user_id.as_str();
    if req.body.signed_keys.values().map(|k| k.iter().count()).sum::<usize>() > MAX_SIGNED_KEYS {
        return Err(
            Error::new(ErrorKind::TooLarge, format!("at most {MAX_SIGNED_KEYS} keys per request")).into()
        );
    }
    let mut failures = Map::new();
    let own_devices = crate::devices::ids_of(&app, &req.auth.user_id, None).await?;
    let (mut signed_devices, mut signed_own_keys, mut signed_other_keys) = (Vec::new(), false, false);
    for (target, signed_keys) in &req.body.signed_keys {
        let mut target_failures = Map::new();
        let own = target.as_str() == signer;
        for (key_id, raw) in signed_keys.iter() {
            let fail = |why: &str| json!({ "errcode": "M_INVALID_SIGNATURE", "error": why });
            let Ok(signed) = serde_json::from_str::<Value>(raw.get()) else {
                target_failures.insert(key_id.to_owned(), fail("not a JSON object"));
                continue;
            };
            if target.server_name() != app.server_name() {
                target_failures
                    .insert(key_id.to_owned(), fail("other servers' keys are not signed here yet"));
                continue;
            }
            let merge = |kind: &str, json: &str| -> Option<String> {
                // Own devices and keys, or another user's master key, named by its public key.
                let is_target = match kind {
                    "device" => own,
                    usage => {
                        (own || usage == "master")
                            && serde_json::from_str::<Value>(json)
                                .ok()
                                .and_then(|k| {
                                    k["keys"].as_object().map(|ks| ks.values().any(|v| v == key_id))
                                })
                                .unwrap_or(false)
                    }
                };
                let mut stored: Value = serde_json::from_str(json).ok().filter(|_| is_target)?;
                merge_signatures(&mut stored, &signed, signer).then(|| stored.to_string())
            };
            let device_id = if own { key_id } else { "" };
            match app.db.change_key_json(target.as_str(), device_id, merge).await.map_err(Error::from)? {
                true if own && own_devices.iter().any(|d| d == key_id) => {
                    signed_devices.push(key_id.to_owned())
                }
                true if own => signed_own_keys = true,
                true => signed_other_keys = true,
                false => {
                    target_failures.insert(key_id.to_owned(), fail("no such key, or nothing new"));
                }
            }
        }
        if !target_failures.is_empty() {
            failures.insert(target.to_string(), Value::Object(target_failures));
        }
    }
    // Its own signed devices change as devices (other servers are told of each), its own
    // signed keys as its cross-signing keys; a signature of another user's key concerns only
    // the signer's own devices.
    if !signed_devices.is_empty() {
        app.live.device_lists.devices_changed(&req.auth.user_id, &signed_devices).await?;
    }
    if signed_own_keys {
        app.live.device_lists.changed(&req.auth.user_id).await?;
    } else if signed_other_keys {
        app.live.device_lists.changed_for_self(&req.auth.user_id).await?;
    }
    Ok(JsonBody(json!({ "failures": failures })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_merge_per_signer_and_report_news() {
        let mut stored = json!({ "keys": {}, "signatures": { "@a:x": { "ed25519:DEV": "self" } } });
        let signed = json!({ "signatures": { "@a:x": { "ed25519:SSK": "cross" }, "@evil:x": { "ed25519:E": "forged" } } });
        assert!(merge_signatures(&mut stored, &signed, "@a:x"));
        assert_eq!(stored["signatures"]["@a:x"], json!({ "ed25519:DEV": "self", "ed25519:SSK": "cross" }));
        assert!(stored["signatures"].get("@evil:x").is_none(), "only the uploader's own signatures");
        assert!(!merge_signatures(&mut stored, &signed, "@a:x"), "nothing new the second time");
    }
}
