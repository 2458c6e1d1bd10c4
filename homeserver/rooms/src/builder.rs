//! Creating a local event: from a client's template to a signed PDU.
//!
//! Given where the event goes in the DAG (prev events, depth) and which state authorises it (auth
//! events), this assembles the PDU in the room version's format, adds the content hash, signs it
//! with the server key and derives the event id from the reference hash. For a v12 `m.room.create`
//! event there is no room id yet: it is derived from the event id afterwards.

use std::sync::Arc;

use homeserver_core::{Error, ErrorKind, keys::ServerKey};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    room_version_rules::RoomVersionRules,
};

use crate::{
    event_format::{self, ReferenceHashes},
    pdu::Pdu,
};

/// The largest PDU, in canonical JSON bytes, the spec allows.
pub const MAX_PDU_BYTES: usize = 65_536;

/// What a client (or the server on its behalf) wants to send.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: serde_json::Value,
    pub sender: OwnedUserId,
    /// For `m.room.redaction`: the event being redacted.
    pub redacts: Option<OwnedEventId>,
    /// Set only by [`crate::membership`] once a member event passed every local membership
    /// rule; the pipeline refuses local `m.room.member` events without it, so no endpoint can
    /// change a membership around those rules.
    pub(crate) membership_vetted: bool,
    /// For member events: the membership the target must still have when the event is
    /// accepted (profile updates must not re-join someone who left meanwhile).
    pub(crate) expect_membership: Option<&'static str>,
    /// The event's `origin_server_ts` when it is not now: bridged history, which only bridges'
    /// puppets may send (the plugin host checks that).
    pub origin_server_ts: Option<u64>,
}

impl EventTemplate {
    pub fn new(kind: impl Into<String>, sender: &ruma::UserId, content: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: None,
            content,
            sender: sender.to_owned(),
            redacts: None,
            membership_vetted: false,
            expect_membership: None,
            origin_server_ts: None,
        }
    }

    pub fn state(
        kind: impl Into<String>,
        state_key: impl Into<String>,
        sender: &ruma::UserId,
        content: serde_json::Value,
    ) -> Self {
        Self { state_key: Some(state_key.into()), ..Self::new(kind, sender, content) }
    }
}

/// The DAG position and authorisation of the event being built.
pub struct Placement<'a> {
    /// `None` only for a v12 create event.
    pub room_id: Option<&'a RoomId>,
    pub prev_events: &'a [OwnedEventId],
    pub auth_events: &'a [OwnedEventId],
    pub depth: u64,
    pub origin_server_ts: u64,
    /// Reference hashes of the prev and auth events, for room versions 1 and 2 (which list
    /// them); empty for later versions.
    pub references: &'a ReferenceHashes,
}

fn to_canonical(value: serde_json::Value, what: &str) -> Result<CanonicalJsonValue, Error> {
    CanonicalJsonValue::try_from(value)
        .map_err(|e| Error::bad_json(format!("{what} is not valid canonical JSON: {e}")))
}

fn id_list(
    ids: &[OwnedEventId],
    placement: &Placement<'_>,
    rules: &RoomVersionRules,
) -> Result<CanonicalJsonValue, Error> {
    event_format::reference_list(ids, placement.references, rules).map_err(Error::internal)
}

/// Builds, hashes and signs a PDU. Returns the parsed PDU (its text is the canonical JSON).
pub fn build_pdu(
    key: &ServerKey,
    rules: &RoomVersionRules,
    template: &EventTemplate,
    placement: &Placement<'_>,
) -> Result<Pdu, Error> {
    let CanonicalJsonValue::Object(mut content) = to_canonical(template.content.clone(), "content")? else {
        return Err(Error::bad_json("event content must be a JSON object"));
    };
    let mut obj = CanonicalJsonObject::new();
    if let Some(redacts) = &template.redacts {
        if rules.redaction.keep_room_redaction_redacts {
            content.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        } else {
            obj.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
    }
    obj.insert("auth_events".into(), id_list(placement.auth_events, placement, rules)?);
    obj.insert("content".into(), CanonicalJsonValue::Object(content));
    obj.insert("depth".into(), CanonicalJsonValue::Integer(clamp_int(placement.depth)));
    obj.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(clamp_int(placement.origin_server_ts)));
    obj.insert("prev_events".into(), id_list(placement.prev_events, placement, rules)?);
    if let Some(room_id) = placement.room_id {
        obj.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    }
    obj.insert("sender".into(), CanonicalJsonValue::String(template.sender.to_string()));
    if let Some(state_key) = &template.state_key {
        obj.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    obj.insert("type".into(), CanonicalJsonValue::String(template.kind.clone()));

    if event_format::ids_are_named(rules) {
        let id = event_format::new_named_id(key.server_name());
        obj.insert("event_id".into(), CanonicalJsonValue::String(id.to_string()));
    }
    ruma::signatures::hash_and_sign_event(key.server_name().as_str(), key.pair(), &mut obj, &rules.redaction)
        .map_err(signing_error)?;
    let event_id = event_format::event_id_of(&obj, rules)
        .map_err(|e| Error::internal(format!("no event id for a new event: {e}")))?;
    let json = CanonicalJsonValue::Object(obj).to_string();
    if json.len() > MAX_PDU_BYTES {
        return Err(Error::too_large(format!(
            "event is {} bytes, more than the {MAX_PDU_BYTES} a PDU may have",
            json.len()
        )));
    }
    let derived_room_id: Option<OwnedRoomId> = match placement.room_id {
        Some(_) => None,
        None => Some(
            RoomId::new_v2(event_id.localpart())
                .map_err(|e| Error::internal(format!("cannot derive room id: {e}")))?,
        ),
    };
    Pdu::parse(event_id, derived_room_id.as_deref(), Arc::from(json))
        .map_err(|e| Error::internal(e.to_string()))
}

fn clamp_int(v: u64) -> ruma::Int {
    ruma::Int::try_from(v).unwrap_or(ruma::Int::MAX)
}

fn signing_error(e: ruma::signatures::JsonError) -> Error {
    match e {
        ruma::signatures::JsonError::PduTooLarge => {
            Error::new(ErrorKind::TooLarge, "event is larger than 65536 bytes")
        }
        other => Error::bad_json(format!("cannot sign event: {other}")),
    }
}
