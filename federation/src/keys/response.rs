//! Checking a key response (`GET /_matrix/key/v2/server` from the server, or a notary's copy)
//! and turning it into rows: it must be about the server asked for and carry a valid signature
//! of that server by one of the keys it lists — and, from a notary, one of the notary too. Other
//! signatures (a copy relayed through several notaries) are ignored, not required.

use homeserver_core::time::now_millis;
use homeserver_storage::server_keys::ServerKeyRow;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::ServerSigningKeys,
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet},
};

/// How far ahead a fetched key may be trusted, whatever its server says (the spec's week).
pub const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

/// Checks a key response for `server` and returns its keys as rows.
pub fn accept_response(
    server: &ServerName,
    raw: &Raw<ServerSigningKeys>,
    notary: Option<(&ServerName, &PublicKeySet)>,
) -> Result<Vec<ServerKeyRow>, String> {
    let keys: ServerSigningKeys = raw.deserialize().map_err(|e| format!("malformed key response: {e}"))?;
    if keys.server_name != server {
        return Err(format!("the response is about {}, not {server}", keys.server_name));
    }
    let object: CanonicalJsonObject =
        serde_json::from_str(raw.json().get()).map_err(|e| format!("malformed key response: {e}"))?;
    let own: PublicKeySet = keys.verify_keys.iter().map(|(id, k)| (id.to_string(), k.key.clone())).collect();
    if own.is_empty() {
        return Err("the response lists no verify key".into());
    }
    require_signature(&object, server, &own)?;
    if let Some((notary, notary_keys)) = notary {
        require_signature(&object, notary, notary_keys)?;
    }
    let now = now_millis() as i64;
    let valid_until = (u64::from(keys.valid_until_ts.get()) as i64).min(now + MAX_KEY_VALIDITY_MS);
    let response_json = raw.json().get().to_owned();
    let row = |key_id: &OwnedServerSigningKeyId, key: &Base64, expired: Option<i64>| ServerKeyRow {
        server_name: server.to_string(),
        key_id: key_id.to_string(),
        public_key: key.encode(),
        valid_until_ts: valid_until,
        expired_ts: expired,
        fetched_ts: now,
        response_json: response_json.clone(),
    };
    let mut rows: Vec<ServerKeyRow> = keys.verify_keys.iter().map(|(id, k)| row(id, &k.key, None)).collect();
    for (id, old) in &keys.old_verify_keys {
        // An old key never signs anything dated after we learnt it was old.
        let expired = (u64::from(old.expired_ts.get()) as i64).min(now);
        rows.push(row(id, &old.key, Some(expired)));
    }
    Ok(rows)
}

/// `object` must carry a signature of `signer` by one of `keys`, and every such signature must
/// verify.
fn require_signature(
    object: &CanonicalJsonObject,
    signer: &ServerName,
    keys: &PublicKeySet,
) -> Result<(), String> {
    let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else {
        return Err("the key response is not signed".into());
    };
    let Some(CanonicalJsonValue::Object(by_signer)) = signatures.get(signer.as_str()) else {
        return Err(format!("the key response is not signed by {signer}"));
    };
    let known: CanonicalJsonObject = by_signer
        .iter()
        .filter(|(id, _)| keys.contains_key(*id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if known.is_empty() {
        return Err(format!("the key response is not signed by a key of {signer}"));
    }
    let mut only_signer = object.clone();
    only_signer.insert(
        "signatures".into(),
        CanonicalJsonValue::Object(CanonicalJsonObject::from([(
            signer.to_string(),
            CanonicalJsonValue::Object(known),
        )])),
    );
    let map = PublicKeyMap::from([(signer.to_string(), keys.clone())]);
    ruma::signatures::verify_json(&map, &only_signer).map_err(|e| format!("bad signature of {signer}: {e}"))
}

#[cfg(test)]
mod tests {
    use homeserver_core::keys::ServerKey;
    use serde_json::{Value, json};

    use super::*;

    fn key(name: &str) -> ServerKey {
        ServerKey::from_pkcs8(<&ServerName>::try_from(name).unwrap(), &ServerKey::generate_pkcs8(), "k")
            .unwrap()
    }

    fn document(of: &ServerKey, valid_for_ms: i64, extra: Value) -> CanonicalJsonObject {
        let mut doc = json!({
            "server_name": of.server_name(),
            "valid_until_ts": now_millis() as i64 + valid_for_ms,
            "verify_keys": { of.key_id(): { "key": of.public_key_base64() } },
        });
        doc.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(doc).unwrap()
    }

    fn signed(by: &ServerKey, mut object: CanonicalJsonObject) -> CanonicalJsonObject {
        ruma::signatures::sign_json(by.server_name().as_str(), by.pair(), &mut object).unwrap();
        object
    }

    fn raw(object: &CanonicalJsonObject) -> Raw<ServerSigningKeys> {
        Raw::from_json(serde_json::value::to_raw_value(object).unwrap())
    }

    fn keys_of(k: &ServerKey) -> PublicKeySet {
        PublicKeySet::from([(k.key_id(), Base64::parse(k.public_key_base64()).unwrap())])
    }

    #[test]
    fn a_self_signed_response_is_accepted_and_capped_at_a_week() {
        let b = key("b.example");
        let rows = accept_response(
            b.server_name(),
            &raw(&signed(&b, document(&b, 30 * 86_400_000, json!({})))),
            None,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].valid_until_ts <= now_millis() as i64 + MAX_KEY_VALIDITY_MS);
        assert!(rows[0].valid_until_ts > now_millis() as i64 + MAX_KEY_VALIDITY_MS - 60_000);
    }

    #[test]
    fn unsigned_misnamed_or_wrongly_signed_responses_are_refused() {
        let (b, c) = (key("b.example"), key("c.example"));
        let unsigned = document(&b, 3_600_000, json!({}));
        assert!(accept_response(b.server_name(), &raw(&unsigned), None).is_err(), "no signature");
        let empty = document(&b, 3_600_000, json!({ "signatures": {} }));
        assert!(accept_response(b.server_name(), &raw(&empty), None).is_err(), "empty signatures");
        let by_other = signed(&c, document(&b, 3_600_000, json!({})));
        assert!(accept_response(b.server_name(), &raw(&by_other), None).is_err(), "signed by someone else");
        let about_c = signed(&c, document(&c, 3_600_000, json!({})));
        assert!(accept_response(b.server_name(), &raw(&about_c), None).is_err(), "about another server");
        let mut tampered = signed(&b, document(&b, 3_600_000, json!({})));
        tampered.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(9_999_999_999_999_i64.try_into().unwrap()),
        );
        assert!(accept_response(b.server_name(), &raw(&tampered), None).is_err(), "changed after signing");
    }

    #[test]
    fn a_notary_copy_needs_the_notary_signature_too_and_old_keys_expire_by_now() {
        let (b, n, other) = (key("b.example"), key("notary.example"), key("other.example"));
        let old = json!({ "old_verify_keys": { "ed25519:old": { "key": b.public_key_base64(), "expired_ts": now_millis() + 10_000_000 } } });
        let from_b = signed(&b, document(&b, 3_600_000, old));
        let notary = (n.server_name(), &keys_of(&n));
        assert!(
            accept_response(b.server_name(), &raw(&from_b), Some(notary)).is_err(),
            "no notary signature"
        );
        let relayed = signed(&other, signed(&n, from_b.clone()));
        let rows = accept_response(b.server_name(), &raw(&relayed), Some(notary))
            .expect("a third signature is ignored");
        let old_row = rows.iter().find(|r| r.key_id == "ed25519:old").unwrap();
        assert!(old_row.expired_ts.unwrap() <= now_millis() as i64, "capped at the time we learnt of it");
    }
}
