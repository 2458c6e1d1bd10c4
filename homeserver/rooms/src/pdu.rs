//! [`Pdu`]: a persistent data unit — the stored event text plus a parsed view of the fields the
//! room model needs. It implements ruma's `state_res::Event` so auth rules and state resolution
//! run directly on it.
//!
//! The text is kept exactly as signed. Anything that hashes, signs, redacts or re-serves the event
//! works from that text, never from the parsed fields, so unknown fields survive untouched.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    UserId, events::TimelineEventType,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A parsed PDU sharing its original JSON text.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to (for v12 create events, derived from the event id).
    pub room_id: OwnedRoomId,
    /// Whether the PDU itself carries `room_id` (v12 create events do not).
    room_id_in_pdu: bool,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    pub rejected: bool,
    /// The PDU exactly as signed (canonical JSON for events we created).
    pub json: Arc<str>,
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default, deserialize_with = "references")]
    prev_events: Vec<OwnedEventId>,
    #[serde(default, deserialize_with = "references")]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

/// An entry of `prev_events` or `auth_events`: a bare id, or (room versions 1 and 2) an
/// `[id, hashes]` pair whose hashes nothing relies on.
#[derive(Deserialize)]
#[serde(untagged)]
enum Reference {
    Id(OwnedEventId),
    Pair(OwnedEventId, serde::de::IgnoredAny),
}

fn references<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<OwnedEventId>, D::Error> {
    let list: Vec<Reference> = Deserialize::deserialize(deserializer)?;
    Ok(list
        .into_iter()
        .map(|r| match r {
            Reference::Id(id) | Reference::Pair(id, _) => id,
        })
        .collect())
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

/// Why stored or received event JSON could not be parsed as a PDU.
#[derive(Debug, thiserror::Error)]
#[error("malformed PDU: {0}")]
pub struct PduError(pub String);

impl Pdu {
    /// Parses PDU text. `event_id` is computed by the caller (reference hash) or read from storage;
    /// `room_id` is used when the PDU has none (v12 create events).
    pub fn parse(event_id: OwnedEventId, room_id: Option<&RoomId>, json: Arc<str>) -> Result<Pdu, PduError> {
        let fields: Fields = serde_json::from_str(&json).map_err(|e| PduError(e.to_string()))?;
        let room_id_in_pdu = fields.room_id.is_some();
        let room_id = match (fields.room_id, room_id) {
            (Some(id), _) => id,
            (None, Some(id)) => id.to_owned(),
            (None, None) => return Err(PduError("missing room_id".into())),
        };
        let redacts = match fields.redacts {
            Some(id) => Some(id),
            None if fields.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(fields.content.get()).ok().and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Pdu {
            event_id,
            room_id,
            room_id_in_pdu,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts,
            depth: fields.depth.into(),
            rejected: false,
            json,
        })
    }

    /// The PDU as a canonical JSON object (for redaction, hashing and signature checks).
    pub fn canonical_object(&self) -> Result<CanonicalJsonObject, PduError> {
        serde_json::from_str(&self.json).map_err(|e| PduError(e.to_string()))
    }

    /// The content parsed as a JSON value.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    /// A string field of the content, if present.
    pub fn content_str(&self, field: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Any {
            #[serde(flatten)]
            map: serde_json::Map<String, serde_json::Value>,
        }
        let any: Any = serde_json::from_str(self.content.get()).ok()?;
        any.map.get(field)?.as_str().map(str::to_owned)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_in_pdu.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_ids_or_version_one_pairs() {
        let json = serde_json::json!({
            "room_id": "!r:a", "sender": "@u:a", "type": "m.room.message", "content": {},
            "origin_server_ts": 1, "depth": 2,
            "prev_events": [["$p:a", { "sha256": "h" }]],
            "auth_events": ["$c:a", ["$m:a", {}]],
        });
        let pdu = Pdu::parse("$e:a".try_into().unwrap(), None, Arc::from(json.to_string())).unwrap();
        assert_eq!(pdu.prev_events, vec![OwnedEventId::try_from("$p:a").unwrap()]);
        let auth: Vec<&str> = pdu.auth_events.iter().map(|id| id.as_str()).collect();
        assert_eq!(auth, ["$c:a", "$m:a"]);
        let bad = json.to_string().replace("[\"$p:a\"", "[42");
        assert!(Pdu::parse("$e:a".try_into().unwrap(), None, Arc::from(bad)).is_err());
    }
}
