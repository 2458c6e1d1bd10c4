//! Membership changes requested by local users: join (vouched for in restricted rooms), knock,
//! leave, invite, kick, ban, unban, and the
//! propagation of profile changes into member events.
//!
//! The room version's auth rules are the final word on every change (they run in the pipeline).
//! The checks here only give clearer errors for cases the rules would allow but the client API
//! forbids (kicking someone who is not in the room, unbanning someone who is not banned) and make
//! repeated requests idempotent.

use homeserver_core::{Error, ErrorKind};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    Rooms,
    builder::EventTemplate,
    cache::storage_error,
    create::{Profile, member_content},
    input::Submission,
};

fn with_reason(mut content: Value, reason: Option<&str>) -> Value {
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    content
}

impl Rooms {
    /// A local user's profile as member events show it.
    pub async fn profile_of(&self, user: &UserId) -> Result<Profile, Error> {
        let record = self.db().user(user.as_str()).await.map_err(storage_error)?;
        Ok(record
            .map(|u| Profile { displayname: u.displayname, avatar_url: u.avatar_url })
            .unwrap_or_default())
    }

    async fn send_member(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Value,
    ) -> Result<OwnedEventId, Error> {
        let template = EventTemplate::state("m.room.member", target.as_str(), sender, content);
        let pdus = self.submit(room_id, Submission::Events { templates: vec![template], txn: None }).await?;
        pdus.last().map(|p| p.event_id.clone()).ok_or_else(|| Error::internal("no event produced"))
    }

    fn require_room_exists(exists: bool) -> Result<(), Error> {
        if exists { Ok(()) } else { Err(Error::not_found("room not found")) }
    }

    /// Refuses new members for rooms an administrator blocked.
    async fn require_not_blocked(&self, room_id: &RoomId) -> Result<(), Error> {
        if self.db().is_room_blocked(room_id.as_str()).await.map_err(storage_error)? {
            return Err(Error::forbidden("This room has been blocked on this server"));
        }
        Ok(())
    }

    /// Joins a local room. `extra` holds additional member-event content from the request (such
    /// as `reason`); joining again with unchanged content is a no-op.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        extra: serde_json::Map<String, Value>,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        self.require_not_blocked(room_id).await?;
        let profile = self.profile_of(user).await?;
        let mut content = member_content("join", &profile);
        if let Value::Object(map) = &mut content {
            for (key, value) in extra {
                if key != "membership" && key != "third_party_signed" {
                    map.insert(key, value);
                }
            }
        }
        if let Some(current) = self.current_state_event(room_id, "m.room.member", user.as_str()).await?
            && current.content_value() == content
        {
            return Ok(current.event_id.clone());
        }
        if let Some(authoriser) = self.restricted_join_authoriser(room_id, user).await? {
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        self.send_member(room_id, user, user, content).await
    }

    /// For a `restricted` (or `knock_restricted`) room the user is neither invited to nor in:
    /// a local member who may invite, to vouch for the join, if the user is in one of the rooms
    /// the join rule allows. `None` when no vouching is needed or possible; the auth rules then
    /// decide (and refuse a join nobody vouched for).
    async fn restricted_join_authoriser(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>, Error> {
        if matches!(self.membership(room_id, user).await?.as_deref(), Some("join" | "invite")) {
            return Ok(None);
        }
        let Some(rules) = self.current_state_event(room_id, "m.room.join_rules", "").await? else {
            return Ok(None);
        };
        let content = rules.content_value();
        if !matches!(
            content.get("join_rule").and_then(Value::as_str),
            Some("restricted" | "knock_restricted")
        ) {
            return Ok(None);
        }
        let allowed_rooms: Vec<&str> = content
            .get("allow")
            .and_then(Value::as_array)
            .map(|allow| {
                allow
                    .iter()
                    .filter(|a| a.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                    .filter_map(|a| a.get("room_id").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let mut qualifies = false;
        for allowed in allowed_rooms {
            if let Ok(allowed) = RoomId::parse(allowed)
                && self.is_joined(&allowed, user).await?
            {
                qualifies = true;
                break;
            }
        }
        if !qualifies {
            return Err(Error::forbidden("You are not in any of the rooms this room's join rule allows"));
        }
        let power = self.power_levels(room_id).await?;
        let members = self.joined_members(room_id).await?;
        let authoriser = members
            .into_iter()
            .filter(|m| m.server_name() == self.server_name() && power.user_level(m) >= power.invite())
            .max_by_key(|m| power.user_level(m));
        match authoriser {
            Some(user) => Ok(Some(user)),
            None => Err(Error::forbidden("No member of this server may authorise joining the room")),
        }
    }

    /// Asks to join a room whose join rule is `knock` (or `knock_restricted`).
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        self.require_not_blocked(room_id).await?;
        match self.membership(room_id, user).await?.as_deref() {
            Some("join") => return Err(Error::forbidden("You are already in the room")),
            Some("invite") => return Err(Error::forbidden("You are already invited to the room")),
            Some("ban") => return Err(Error::forbidden("You are banned from the room")),
            Some("knock") => {
                if let Some(current) =
                    self.current_state_event(room_id, "m.room.member", user.as_str()).await?
                {
                    return Ok(current.event_id.clone());
                }
            }
            _ => {}
        }
        let content = member_content("knock", &self.profile_of(user).await?);
        self.send_member(room_id, user, user, with_reason(content, reason)).await
    }

    /// Leaves (or rejects an invite to) a room.
    pub async fn leave(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        match self.membership(room_id, user).await?.as_deref() {
            Some("join" | "invite" | "knock") => {}
            Some("leave") => {
                if let Some(current) =
                    self.current_state_event(room_id, "m.room.member", user.as_str()).await?
                {
                    return Ok(current.event_id.clone());
                }
            }
            _ => return Err(Error::forbidden("you are not a member of this room")),
        }
        self.send_member(room_id, user, user, with_reason(json!({"membership": "leave"}), reason)).await
    }

    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        self.require_not_blocked(room_id).await?;
        match self.membership(room_id, target).await?.as_deref() {
            Some("join") => return Err(Error::forbidden(format!("{target} is already in the room"))),
            Some("ban") => return Err(Error::forbidden(format!("{target} is banned from the room"))),
            Some("invite") => {
                if let Some(current) =
                    self.current_state_event(room_id, "m.room.member", target.as_str()).await?
                {
                    return Ok(current.event_id.clone());
                }
            }
            _ => {}
        }
        let mut content = member_content("invite", &self.profile_of(target).await?);
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.send_member(room_id, sender, target, with_reason(content, reason)).await
    }

    pub async fn kick(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        match self.membership(room_id, target).await?.as_deref() {
            Some("join" | "invite" | "knock") => {}
            _ => return Err(Error::forbidden(format!("{target} is not in the room"))),
        }
        self.send_member(room_id, sender, target, with_reason(json!({"membership": "leave"}), reason)).await
    }

    pub async fn ban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        self.send_member(room_id, sender, target, with_reason(json!({"membership": "ban"}), reason)).await
    }

    pub async fn unban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        Self::require_room_exists(self.room_version(room_id).await?.is_some())?;
        if self.membership(room_id, target).await?.as_deref() != Some("ban") {
            return Err(Error::forbidden(format!("{target} is not banned")));
        }
        self.send_member(room_id, sender, target, with_reason(json!({"membership": "leave"}), reason)).await
    }

    /// Sends a fresh join event with the user's new profile into every room they are joined to.
    /// Rooms where the update is refused (e.g. by power levels) keep the old profile.
    pub async fn propagate_profile(&self, user: &UserId) -> Result<(), Error> {
        let profile = self.profile_of(user).await?;
        let rooms = self.db().memberships_of_user(user.as_str()).await.map_err(storage_error)?;
        for row in rooms.into_iter().filter(|r| r.membership == "join") {
            let Ok(room_id) = RoomId::parse(&row.room_id) else { continue };
            let room_id: OwnedRoomId = room_id;
            let content = member_content("join", &profile);
            if let Err(err) = self.send_member(&room_id, user, user, content).await
                && err.kind != ErrorKind::Forbidden
            {
                return Err(err);
            }
        }
        Ok(())
    }
}
