//! Where the event formats of room versions differ in how events name each other.
//!
//! Versions 1 and 2 give every event an `event_id` of the form `$opaque:server`, chosen by the
//! server that created it and signed with the event, and reference earlier events as
//! `[event_id, {"sha256": reference hash}]` pairs. From version 3 an event's id is its reference
//! hash (never sent with it) and references are bare ids. Everything that names an event
//! (building, receiving, serving) goes through this module, so no other code branches on it.

use std::collections::HashMap;

use homeserver_core::ids::random_string;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, ServerName,
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
};

/// Reference hashes of events by id, for versions that list them beside the ids.
pub type ReferenceHashes = HashMap<OwnedEventId, String>;

/// Whether events of these rules carry their own id (versions 1 and 2).
pub fn ids_are_named(rules: &RoomVersionRules) -> bool {
    rules.event_id_format == EventIdFormatVersion::V1
}

/// Whether references to earlier events carry their reference hashes (versions 1 and 2).
pub fn references_carry_hashes(rules: &RoomVersionRules) -> bool {
    rules.events_reference_format == EventsReferenceFormatVersion::V1
}

/// The id of an event of a room of these rules: its `event_id` field for versions 1 and 2, else
/// `$` and its reference hash (any `event_id` a server added is not part of the hash).
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId, String> {
    if ids_are_named(rules) {
        return match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => {
                let id = EventId::parse(id).map_err(|e| format!("invalid event_id: {e}"))?;
                if id.server_name().is_none() {
                    return Err("the event_id names no server".into());
                }
                Ok(id)
            }
            _ => Err("the event has no event_id".into()),
        };
    }
    let hash = if object.contains_key("event_id") || object.contains_key("unsigned") {
        let mut stripped = object.clone();
        stripped.remove("event_id");
        stripped.remove("unsigned");
        ruma::signatures::reference_hash(&stripped, rules)
    } else {
        ruma::signatures::reference_hash(object, rules)
    }
    .map_err(|e| format!("no reference hash: {e}"))?;
    EventId::parse(format!("${hash}")).map_err(|e| e.to_string())
}

/// Whether every entry of `prev_events` and `auth_events` has the version's shape: an
/// `[id, {hashes}]` pair in versions 1 and 2, a bare id later. Servers that check it (Synapse
/// does) drop the others, so accepting them here would split the room's DAG between servers.
pub fn check_reference_shapes(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<(), String> {
    let pairs = references_carry_hashes(rules);
    for field in ["prev_events", "auth_events"] {
        let Some(CanonicalJsonValue::Array(entries)) = object.get(field) else { continue };
        let well_formed = entries.iter().all(|entry| match entry {
            CanonicalJsonValue::String(_) => !pairs,
            CanonicalJsonValue::Array(pair) => {
                pairs
                    && matches!(
                        pair.as_slice(),
                        [CanonicalJsonValue::String(_), CanonicalJsonValue::Object(_)]
                    )
            }
            _ => false,
        });
        if !well_formed {
            let shape = if pairs { "[event id, hashes] pairs" } else { "event ids" };
            return Err(format!("`{field}` must list {shape} in this room version"));
        }
    }
    Ok(())
}

/// A fresh id for an event this server creates in a version 1 or 2 room.
pub fn new_named_id(server: &ServerName) -> OwnedEventId {
    EventId::parse(format!("${}:{server}", random_string(18))).expect("random ids are valid event ids")
}

/// The reference hash of stored event text (for the pairs versions 1 and 2 list).
pub fn reference_hash(json: &str, rules: &RoomVersionRules) -> Option<String> {
    let mut object: CanonicalJsonObject = serde_json::from_str(json).ok()?;
    object.remove("unsigned");
    ruma::signatures::reference_hash(&object, rules).ok()
}

/// The reference hashes of `events` when the rules list them beside ids; empty otherwise.
pub fn hashes_of<'a>(
    events: impl IntoIterator<Item = &'a std::sync::Arc<crate::pdu::Pdu>>,
    rules: &RoomVersionRules,
) -> ReferenceHashes {
    if !references_carry_hashes(rules) {
        return ReferenceHashes::new();
    }
    events
        .into_iter()
        .filter_map(|pdu| Some((pdu.event_id.clone(), reference_hash(&pdu.json, rules)?)))
        .collect()
}

/// The ids an event's `prev_events` or `auth_events` (`field`) names, in either format.
pub fn referenced_ids<'a>(event: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    let entries = event.get(field).and_then(serde_json::Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter_map(|entry| match entry {
            serde_json::Value::String(id) => Some(id.as_str()),
            serde_json::Value::Array(pair) => pair.first()?.as_str(),
            _ => None,
        })
        .collect()
}

/// The `prev_events` or `auth_events` list of a new event in the room version's format. A
/// version 1 or 2 reference whose hash is unknown is an error: the caller supplies them all.
pub fn reference_list(
    ids: &[OwnedEventId],
    hashes: &ReferenceHashes,
    rules: &RoomVersionRules,
) -> Result<CanonicalJsonValue, String> {
    let list = ids
        .iter()
        .map(|id| {
            let id_value = CanonicalJsonValue::String(id.to_string());
            if !references_carry_hashes(rules) {
                return Ok(id_value);
            }
            let hash = hashes.get(id).ok_or_else(|| format!("no reference hash for {id}"))?;
            let hashes =
                CanonicalJsonObject::from([("sha256".to_owned(), CanonicalJsonValue::String(hash.clone()))]);
            Ok(CanonicalJsonValue::Array(vec![id_value, CanonicalJsonValue::Object(hashes)]))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CanonicalJsonValue::Array(list))
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, server_name};

    use super::*;

    fn object(value: serde_json::Value) -> CanonicalJsonObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn version_one_ids_are_the_field_and_must_name_a_server() {
        let rules = RoomVersionId::V1.rules().unwrap();
        let named = object(serde_json::json!({ "event_id": "$abc:example.org", "type": "m.room.message" }));
        assert_eq!(event_id_of(&named, &rules).unwrap().as_str(), "$abc:example.org");
        assert!(event_id_of(&object(serde_json::json!({ "event_id": "$abc" })), &rules).is_err());
        assert!(event_id_of(&object(serde_json::json!({ "type": "m.room.message" })), &rules).is_err());
    }

    #[test]
    fn later_ids_are_hashes_that_ignore_an_added_event_id() {
        let rules = RoomVersionId::V10.rules().unwrap();
        let base = serde_json::json!({
            "type": "m.room.message", "room_id": "!r:a", "sender": "@u:a", "content": {},
            "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [],
            "hashes": { "sha256": "x" }, "signatures": {},
        });
        let mut with_id = base.clone();
        with_id["event_id"] = serde_json::json!("$something");
        with_id["unsigned"] = serde_json::json!({ "age": 1 });
        let id = event_id_of(&object(base), &rules).unwrap();
        assert_eq!(event_id_of(&object(with_id), &rules).unwrap(), id);
        assert!(id.server_name().is_none());
    }

    #[test]
    fn references_are_pairs_only_in_early_versions() {
        let id = EventId::parse("$a:example.org").unwrap();
        let hashes = ReferenceHashes::from([(id.clone(), "h".to_owned())]);
        let v1 = reference_list(std::slice::from_ref(&id), &hashes, &RoomVersionId::V1.rules().unwrap());
        assert_eq!(
            serde_json::to_value(v1.unwrap()).unwrap(),
            serde_json::json!([["$a:example.org", { "sha256": "h" }]])
        );
        let v3 = reference_list(
            std::slice::from_ref(&id),
            &ReferenceHashes::new(),
            &RoomVersionId::V3.rules().unwrap(),
        );
        assert_eq!(serde_json::to_value(v3.unwrap()).unwrap(), serde_json::json!(["$a:example.org"]));
        let missing = reference_list(&[id], &ReferenceHashes::new(), &RoomVersionId::V2.rules().unwrap());
        assert!(missing.is_err());
        assert!(new_named_id(server_name!("example.org")).as_str().ends_with(":example.org"));
        let event = serde_json::json!({ "prev_events": [["$a:x", {}], "$b"], "auth_events": 3 });
        assert_eq!(referenced_ids(&event, "prev_events"), ["$a:x", "$b"]);
        assert!(referenced_ids(&event, "auth_events").is_empty());
        let v1 = RoomVersionId::V1.rules().unwrap();
        let v3 = RoomVersionId::V3.rules().unwrap();
        let pairs = object(serde_json::json!({ "prev_events": [["$a:x", {}]], "auth_events": [] }));
        let bare = object(serde_json::json!({ "prev_events": ["$a"], "auth_events": ["$b"] }));
        let junk = object(serde_json::json!({ "prev_events": [["$a:x"]], "auth_events": [] }));
        assert!(check_reference_shapes(&pairs, &v1).is_ok() && check_reference_shapes(&bare, &v3).is_ok());
        assert!(check_reference_shapes(&pairs, &v3).is_err() && check_reference_shapes(&bare, &v1).is_err());
        assert!(check_reference_shapes(&junk, &v1).is_err());
    }
}
