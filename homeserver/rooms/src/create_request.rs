//! The client-server `createRoom` body, parsed into a [`CreateRoom`]: shared by the client API
//! and plugins, so a room is created from the same request the same way whoever asks.

use homeserver_core::{Error, ErrorKind};
use ruma::{OwnedUserId, RoomVersionId};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::create::{CreateRoom, Preset};

#[derive(Deserialize, Default)]
struct CreateBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<OwnedUserId>,
    room_version: Option<String>,
    creation_content: Option<Map<String, Value>>,
    #[serde(default)]
    initial_state: Vec<InitialState>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Value,
}

impl CreateRoom {
    /// Parses a `createRoom` body (an empty body is `{}`) for `creator`.
    pub fn from_client_body(creator: OwnedUserId, raw: &[u8]) -> Result<CreateRoom, Error> {
        let body: CreateBody = match raw.is_empty() {
            true => CreateBody::default(),
            false => serde_json::from_slice(raw)
                .map_err(|e| Error::bad_json(format!("invalid request body: {e}")))?,
        };
        let version = match body.room_version.as_deref() {
            Some(v) => Some(RoomVersionId::try_from(v).map_err(|_| {
                Error::new(ErrorKind::UnsupportedRoomVersion, format!("unsupported room version {v}"))
            })?),
            None => None,
        };
        let preset = match body.preset.as_deref() {
            None => None,
            Some("private_chat") => Some(Preset::PrivateChat),
            Some("public_chat") => Some(Preset::PublicChat),
            Some("trusted_private_chat") => Some(Preset::TrustedPrivateChat),
            Some(other) => return Err(Error::invalid_param(format!("unknown preset {other}"))),
        };
        let public = match body.visibility.as_deref() {
            None | Some("private") => false,
            Some("public") => true,
            Some(other) => return Err(Error::invalid_param(format!("unknown visibility {other}"))),
        };
        if body.initial_state.iter().any(|state| !state.content.is_object()) {
            return Err(Error::bad_json("initial_state content must be an object"));
        }
        Ok(CreateRoom {
            creator,
            version,
            preset,
            public,
            alias_localpart: body.room_alias_name,
            name: body.name,
            topic: body.topic,
            invite: body.invite,
            is_direct: body.is_direct,
            initial_state: body.initial_state.into_iter().map(|s| (s.kind, s.state_key, s.content)).collect(),
            creation_content: body.creation_content,
            power_level_content_override: body.power_level_content_override,
            apply_preset_state: true,
            room_id: None,
        })
    }
}
