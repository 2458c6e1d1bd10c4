//! `createRoom`: turning a creation request into the room's first events.
//!
//! The events and their order follow the spec: `m.room.create`, the creator's join, power levels,
//! the canonical alias, the preset's join rules / history visibility / guest access, the caller's
//! `initial_state`, name and topic, then invites. All of them — and the alias — are persisted in
//! one transaction by the room pipeline, so a room is either fully created or not at all.

use homeserver_core::{Error, ErrorKind, ids::random_string, time::now_millis};
use homeserver_storage::persist::NewRoom;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId,
    room_version_rules::RoomVersionRules,
};
use serde_json::{Map, Value, json};

use crate::{
    Rooms,
    builder::{EventTemplate, Placement, build_pdu},
    input::Submission,
    membership::{MemberPlan, MembershipAction, MembershipChange},
    pdu::Pdu,
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
    /// `initial_state` lacks them.
    pub apply_preset_state: bool,
    /// The room id to take, for versions whose ids are random (an upgrade names the new room in
    /// the old room's tombstone before creating it); taken already: `M_ROOM_IN_USE`.
    pub room_id: Option<OwnedRoomId>,
}

/// What the creator's and invitees' member events show about them.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

impl Rooms {
    /// Refuses an alias in another owner's exclusive namespace (an application service's or a
    /// bridge's): every way of creating an alias asks this.
    pub async fn check_alias_claim(&self, alias: &RoomAliasId, creator: &UserId) -> Result<(), Error> {
        let claims = &self.config().claims;
        if !claims.alias_reserved(alias.as_str()) {
            return Ok(());
        }
        let owner_plugin = self.db().plugin_owner(creator.as_str()).await.map_err(Error::from)?;
        match claims.alias_reserved_against(alias.as_str(), creator.as_str(), owner_plugin.as_deref()) {
            Some(owner) => Err(Error::new(ErrorKind::Exclusive, format!("{alias} is reserved by {owner}"))),
            None => Ok(()),
        }
    }

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
                self.check_alias_claim(&alias, &req.creator).await?;
                if self.db().alias(alias.as_str()).await.map_err(Error::from)?.is_some() {
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
        let (mut room_id, mut create_pdu) =
            self.build_create(&rules, &create_template, now, req.room_id.as_deref())?;
        let additional_creators: Vec<String> = create_pdu
            .content_value()
            .get("additional_creators")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();

        let creating = Some(&creator_profile);
        let join = MembershipChange::new(MembershipAction::Join, &req.creator, &req.creator);
        let mut templates = vec![self.vetted(&room_id, join, creating).await?];

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
            if ty == "m.room.member" {
                // Membership goes through the membership rules, from any endpoint.
                let target = UserId::parse(key.as_str())
                    .map_err(|_| Error::bad_json("the state key of a member event must be a user id"))?;
                let membership = content.get("membership").and_then(Value::as_str);
                let action = MembershipAction::from_state_event(membership, &req.creator, &target, false)?;
                let extra = content.as_object().cloned().unwrap_or_default();
                let change = MembershipChange::new(action, &req.creator, &target).with_content(extra);
                templates.push(self.vetted(&room_id, change, creating).await?);
                continue;
            }
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
        let invite = |invitee: &UserId| {
            let mut change = MembershipChange::new(MembershipAction::Invite, &req.creator, invitee);
            if req.is_direct {
                change.content.insert("is_direct".into(), json!(true));
            }
            change
        };
        // Other servers' users are invited once the room exists: their server countersigns the
        // invite first (`Rooms::invite_remote`).
        let (local_invites, remote_invites): (Vec<&OwnedUserId>, Vec<&OwnedUserId>) =
            req.invite.iter().partition(|u| u.server_name() == self.server_name());
        for invitee in local_invites {
            templates.push(self.vetted(&room_id, invite(invitee), creating).await?);
        }

        let room = NewRoom {
            room_version: version.to_string(),
            creator: req.creator.to_string(),
            created_ts: now as i64,
            published: req.public,
        };
        let aliases: Vec<(String, String)> =
            alias.iter().map(|a| (a.to_string(), req.creator.to_string())).collect();
        // A v12 room id is the hash of the create event, so two identical requests in the same
        // millisecond would name the same room. The one that loses gets a create event with a
        // later timestamp (as Synapse does), so both rooms are created.
        let mut attempt = 0;
        loop {
            let submission = Submission::Create {
                create: Box::new(create_pdu.clone()),
                version: version.clone(),
                templates: templates.clone(),
                room: room.clone(),
                aliases: aliases.clone(),
            };
            match self.submit(&room_id, submission).await {
                Ok(_) => {
                    for invitee in &remote_invites {
                        if let Err(err) = self.change_membership(&room_id, invite(invitee)).await {
                            tracing::warn!(%room_id, %invitee, error = %err.message, "could not invite a remote user");
                        }
                    }
                    return Ok(room_id);
                }
                // The room id is taken (by a room committed or in flight); unless the
                // conflict was the alias, the same request with a later create event gets
                // another id.
                Err(err)
                    if err.kind == ErrorKind::RoomInUse
                        && attempt < MAX_CREATE_ATTEMPTS
                        && req.room_id.is_none()
                        && !self.any_alias_taken(&aliases).await? =>
                {
                    attempt += 1;
                    let bumped = now + attempt * (1 + rand::random::<u64>() % 10);
                    (room_id, create_pdu) = self.build_create(&rules, &create_template, bumped, None)?;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn any_alias_taken(&self, aliases: &[(String, String)]) -> Result<bool, Error> {
        for (alias, _) in aliases {
            if self.db().alias(alias).await.map_err(Error::from)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A member event of a room being created, through the membership rules.
    async fn vetted(
        &self,
        room_id: &RoomId,
        change: MembershipChange,
        creating: Option<&Profile>,
    ) -> Result<EventTemplate, Error> {
        match self.member_template(room_id, change, creating).await? {
            MemberPlan::Send(template) => Ok(template),
            MemberPlan::Unchanged(_) => Err(Error::internal("a new room has no members yet")),
        }
    }

    /// A fresh random room id of this server (versions before 12).
    pub fn random_room_id(&self) -> Result<OwnedRoomId, Error> {
        RoomId::parse(format!("!{}:{}", random_string(18), self.server_name()))
            .map_err(|e| Error::internal(e.to_string()))
    }

    /// The create event and the room id it names: `chosen` or a fresh random id for versions
    /// before 12, the id derived from the event's reference hash from version 12.
    fn build_create(
        &self,
        rules: &RoomVersionRules,
        template: &EventTemplate,
        origin_server_ts: u64,
        chosen: Option<&RoomId>,
    ) -> Result<(OwnedRoomId, Pdu), Error> {
        let room_id = match rules.room_id_format {
            ruma::room_version_rules::RoomIdFormatVersion::V1 => match chosen {
                Some(id) => Some(id.to_owned()),
                None => Some(self.random_room_id()?),
            },
            _ => None,
        };
        let pdu = build_pdu(
            self.key(),
            rules,
            template,
            &Placement {
                room_id: room_id.as_deref(),
                prev_events: &[],
                auth_events: &[],
                depth: 1,
                origin_server_ts,
                references: &Default::default(),
            },
        )?;
        Ok((pdu.room_id.clone(), pdu))
    }
}

/// How many times a room creation retries with a new create event after its room id collided.
const MAX_CREATE_ATTEMPTS: u64 = 5;
