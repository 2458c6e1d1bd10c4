//! `createRoom`: turning a creation request into the room's first events.
//!
//! The events and their order follow the spec: `m.room.create`, the creator's join, power levels,
//! the canonical alias, the preset's join rules / history visibility / guest access, the caller's
//! `initial_state`, name and topic, then invites. All of them — and the alias — are persisted in
//! one transaction by the room pipeline, so a room is either fully created or not at all.

use homeserver_core::{Error, ErrorKind, ids::random_string, time::now_millis};
use homeserver_storage::persist::NewRoom;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId};
use serde_json::{Map, Value, json};

use crate::{
    Rooms,
    builder::{EventTemplate, Placement, build_pdu},
    input::Submission,
    versions,
};

/// The spec's room presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    PublicChat,
    TrustedPrivateChat,
}

/// A room creation request, already parsed from the client's JSON.
#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub creator: OwnedUserId,
    pub version: Option<RoomVersionId>,
    pub preset: Option<Preset>,
    /// `visibility: public` (listed in the directory).
    pub public: bool,
    pub alias_localpart: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// `(type, state_key, content)` from `initial_state`.
    pub initial_state: Vec<(String, String, Value)>,
    pub creation_content: Option<Map<String, Value>>,
    pub power_level_content_override: Option<Map<String, Value>>,
    /// Whether the preset's join rules, history visibility and guest access are sent when
    /// `initial_state` lacks them (false for upgrades, which copy exactly what the old room had).
    pub apply_preset_state: bool,
}

/// What the creator's and invitees' member events show about them.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Member event content for a membership, with the user's profile.
pub fn member_content(membership: &str, profile: &Profile) -> Value {
    let mut content = Map::new();
    content.insert("membership".into(), json!(membership));
    if let Some(name) = &profile.displayname {
        content.insert("displayname".into(), json!(name));
    }
    if let Some(url) = &profile.avatar_url {
        content.insert("avatar_url".into(), json!(url));
    }
    Value::Object(content)
}

impl Rooms {
    /// Creates a room and returns its id.
    pub async fn create_room(&self, req: CreateRoom, creator_profile: Profile) -> Result<OwnedRoomId, Error> {
        let version = req.version.clone().unwrap_or_else(|| self.config().default_room_version.clone());
        let rules = versions::rules(&version).ok_or_else(|| {
            Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version} is not supported"))
        })?;
        let server = self.server_name().to_owned();
        let alias: Option<OwnedRoomAliasId> = match &req.alias_localpart {
            Some(local) => {
                if local.is_empty() || local.contains(':') || local.chars().any(char::is_whitespace) {
                    return Err(Error::new(ErrorKind::InvalidParam, "invalid room_alias_name"));
                }
                let alias = RoomAliasId::parse(format!("#{local}:{server}"))
                    .map_err(|_| Error::new(ErrorKind::InvalidParam, "invalid room_alias_name"))?;
                if self.db().alias(alias.as_str()).await.map_err(crate::cache::storage_error)?.is_some() {
                    return Err(Error::new(ErrorKind::RoomInUse, "room alias already taken"));
                }
                Some(alias)
            }
            None => None,
        };
        let preset = req.preset.unwrap_or(if req.public { Preset::PublicChat } else { Preset::PrivateChat });
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;

        // m.room.create
        let mut create_content = req.creation_content.clone().unwrap_or_default();
        create_content.insert("room_version".into(), json!(version.as_str()));
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), json!(req.creator));
        } else {
            create_content.remove("creator");
        }
        if privileged_creators && preset == Preset::TrustedPrivateChat && !req.invite.is_empty() {
            let mut extra: Vec<Value> = create_content
                .get("additional_creators")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            for user in &req.invite {
                if *user != req.creator && !extra.contains(&json!(user)) {
                    extra.push(json!(user));
                }
            }
            create_content.insert("additional_creators".into(), Value::Array(extra));
        }
        let create_template =
            EventTemplate::state("m.room.create", "", &req.creator, Value::Object(create_content));
        let now = now_millis();
        let (room_id, create_pdu) =
            if rules.room_id_format == ruma::room_version_rules::RoomIdFormatVersion::V1 {
                let room_id = RoomId::parse(format!("!{}:{}", random_string(18), server))
                    .map_err(|e| Error::internal(e.to_string()))?;
                let pdu = build_pdu(
                    self.key(),
                    &rules,
                    &create_template,
                    &Placement {
                        room_id: Some(&room_id),
                        prev_events: &[],
                        auth_events: &[],
                        depth: 1,
                        origin_server_ts: now,
                    },
                )?;
                (room_id, pdu)
            } else {
                let pdu = build_pdu(
                    self.key(),
                    &rules,
                    &create_template,
                    &Placement {
                        room_id: None,
                        prev_events: &[],
                        auth_events: &[],
                        depth: 1,
                        origin_server_ts: now,
                    },
                )?;
                (pdu.room_id.clone(), pdu)
            };
        let additional_creators: Vec<String> = create_pdu
            .content_value()
            .get("additional_creators")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();

        let mut templates = vec![EventTemplate::state(
            "m.room.member",
            req.creator.as_str(),
            &req.creator,
            member_content("join", &creator_profile),
        )];

        // Power levels: defaults, trusted invitees, then the override.
        let mut users = Map::new();
        if !privileged_creators {
            users.insert(req.creator.to_string(), json!(100));
        }
        if preset == Preset::TrustedPrivateChat {
            for user in &req.invite {
                if !(privileged_creators && additional_creators.contains(&user.to_string())) {
                    users.insert(user.to_string(), json!(100));
                }
            }
        }
        let mut power_levels = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": if privileged_creators { 150 } else { 100 },
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 50,
            "historical": 100,
            "notifications": { "room": 50 },
        });
        if let (Some(over), Value::Object(pl)) = (&req.power_level_content_override, &mut power_levels) {
            for (k, v) in over {
                pl.insert(k.clone(), v.clone());
            }
        }
        let initial_has = |ty: &str| req.initial_state.iter().any(|(t, k, _)| t == ty && k.is_empty());
        if !initial_has("m.room.power_levels") {
            templates.push(EventTemplate::state("m.room.power_levels", "", &req.creator, power_levels));
        }
        if let Some(alias) = &alias {
            templates.push(EventTemplate::state(
                "m.room.canonical_alias",
                "",
                &req.creator,
                json!({ "alias": alias }),
            ));
        }
        // As Synapse: private presets let guests join; public_chat sets no guest access at all.
        let (join_rule, guest_access) = match preset {
            Preset::PublicChat => ("public", None),
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", Some("can_join")),
        };
        if req.apply_preset_state && !initial_has("m.room.join_rules") {
            templates.push(EventTemplate::state(
                "m.room.join_rules",
                "",
                &req.creator,
                json!({ "join_rule": join_rule }),
            ));
        }
        if req.apply_preset_state && !initial_has("m.room.history_visibility") {
            templates.push(EventTemplate::state(
                "m.room.history_visibility",
                "",
                &req.creator,
                json!({ "history_visibility": "shared" }),
            ));
        }
        if let Some(guest_access) = guest_access
            && req.apply_preset_state
            && !initial_has("m.room.guest_access")
        {
            templates.push(EventTemplate::state(
                "m.room.guest_access",
                "",
                &req.creator,
                json!({ "guest_access": guest_access }),
            ));
        }
        for (ty, key, content) in &req.initial_state {
            templates.push(EventTemplate::state(ty.clone(), key.clone(), &req.creator, content.clone()));
        }
        if let Some(name) = &req.name {
            templates.push(EventTemplate::state("m.room.name", "", &req.creator, json!({ "name": name })));
        }
        if let Some(topic) = &req.topic {
            templates.push(EventTemplate::state(
                "m.room.topic",
                "",
                &req.creator,
                json!({ "topic": topic, "m.topic": [{ "mimetype": "text/plain", "body": topic }] }),
            ));
        }
        for invitee in &req.invite {
            let mut content = member_content("invite", &self.profile_of(invitee).await?);
            if req.is_direct {
                content["is_direct"] = json!(true);
            }
            templates.push(EventTemplate::state("m.room.member", invitee.as_str(), &req.creator, content));
        }

        let room = NewRoom {
            room_version: version.to_string(),
            creator: req.creator.to_string(),
            created_ts: now as i64,
            published: req.public,
        };
        let aliases = alias.iter().map(|a| (a.to_string(), req.creator.to_string())).collect();
        self.submit(
            &room_id,
            Submission::Create { create: Box::new(create_pdu), version, templates, room, aliases },
        )
        .await?;
        Ok(room_id)
    }
}
