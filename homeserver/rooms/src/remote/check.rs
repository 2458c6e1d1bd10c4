//! The checks a PDU from another server passes before it touches a room, in the spec's order
//! (server-server API, "checks performed on receipt of a PDU", steps 1 to 3): it is a valid
//! event of the room's version (format and size limits), its signatures verify, and its content
//! hash matches — an event whose hash does not match is redacted before it is processed further.
//! Failing the first two drops the event: it is not stored at all.
//!
//! Signature verification is pluggable through [`ServerKeys`]: the room model never fetches keys
//! (it never waits on the network); whoever submits remote events makes sure the keys of the
//! servers that signed them are known first. [`KeyRing`] is the in-memory implementation.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{PublicKeyMap, PublicKeySet, Verified},
};

use crate::{builder::MAX_PDU_BYTES, event_format, pdu::Pdu};

/// Where verify keys of other servers come from. The lookup is synchronous: whoever hands
/// events to the room model makes sure the keys they need are known first (the actor never waits
/// on the network).
pub trait ServerKeys: Send + Sync {
    /// The verify keys of `server` (key id `ed25519:abc` to public key) usable for a signature
    /// made at `signed_at` (ms since the epoch, the event's `origin_server_ts`).
    fn keys(&self, server: &str, signed_at: i64) -> Option<PublicKeySet>;
}

/// Two key sources: the first's answer, else the second's.
pub struct LayeredKeys(pub Arc<dyn ServerKeys>, pub Arc<dyn ServerKeys>);

impl ServerKeys for LayeredKeys {
    fn keys(&self, server: &str, signed_at: i64) -> Option<PublicKeySet> {
        self.0.keys(server, signed_at).or_else(|| self.1.keys(server, signed_at))
    }
}

/// Verify keys held in memory, filled by whoever learns them (key fetching, tests).
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, PublicKeySet>>,
}

impl KeyRing {
    /// Adds (or replaces) one key of a server.
    pub fn add(&self, server: &str, key_id: &str, public_key: Base64) {
        self.keys
            .write()
            .expect("key ring poisoned")
            .entry(server.to_owned())
            .or_default()
            .insert(key_id.to_owned(), public_key);
    }
}

impl ServerKeys for KeyRing {
    fn keys(&self, server: &str, _signed_at: i64) -> Option<PublicKeySet> {
        self.keys.read().expect("key ring poisoned").get(server).cloned()
    }
}

/// A remote PDU that passed the format, signature and hash checks.
pub(crate) struct Checked {
    pub pdu: Arc<Pdu>,
    /// The content hash did not match, so the event was redacted before anything else.
    pub redacted: bool,
}

/// Runs checks 1–3 on a received PDU for `room_id`. `Err` is why the event is dropped.
pub(crate) fn check_pdu(
    json: &str,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    keys: &dyn ServerKeys,
) -> Result<Checked, String> {
    if json.len() > MAX_PDU_BYTES * 2 {
        return Err("PDU too large".into());
    }
    let mut object: CanonicalJsonObject =
        serde_json::from_str(json).map_err(|e| format!("not canonical JSON: {e}"))?;
    // What the origin added for its own clients is not part of the signed event, nor is an
    // `event_id` outside versions 1 and 2 (where it is the signed id).
    object.remove("unsigned");
    if !event_format::ids_are_named(rules) {
        object.remove("event_id");
    }
    ruma::state_res::check_pdu_format(&object, &rules.event_format)?;
    event_format::check_reference_shapes(&object, rules)?;
    let public_keys = known_keys(&object, keys);
    let verified = ruma::signatures::verify_event(&public_keys, &object, rules)
        .map_err(|e| format!("signatures do not verify: {e}"))?;
    let redacted = verified == Verified::Signatures;
    if redacted {
        object = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| format!("cannot redact: {e}"))?;
    }
    let event_id: OwnedEventId = event_format::event_id_of(&object, rules)?;
    let derived_room = is_v12_create(&object, rules)
        .then(|| RoomId::new_v2(event_id.localpart()))
        .transpose()
        .map_err(|e| e.to_string())?;
    let pdu_room = match (&derived_room, object.get("room_id")) {
        (Some(derived), _) => derived.to_string(),
        (None, Some(CanonicalJsonValue::String(id))) => id.clone(),
        _ => return Err("missing room_id".into()),
    };
    if pdu_room != room_id.as_str() {
        return Err(format!("event of room {pdu_room}, not {room_id}"));
    }
    let text = CanonicalJsonValue::Object(object).to_string();
    let pdu = Pdu::parse(event_id, Some(room_id), Arc::from(text)).map_err(|e| e.to_string())?;
    Ok(Checked { pdu: Arc::new(pdu), redacted })
}

/// A create event of a version whose room id is its own reference hash.
fn is_v12_create(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> bool {
    rules.authorization.room_create_event_id_as_room_id
        && matches!(object.get("type"), Some(CanonicalJsonValue::String(t)) if t == "m.room.create")
}

/// The known keys of every server that signed the event (the verifier decides which it needs).
fn known_keys(object: &CanonicalJsonObject, keys: &dyn ServerKeys) -> PublicKeyMap {
    let mut map = BTreeMap::new();
    let signed_at = match object.get("origin_server_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => 0,
    };
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") {
        for server in signatures.keys() {
            if let Some(set) = keys.keys(server, signed_at) {
                map.insert(server.clone(), set);
            }
        }
    }
    map
}
