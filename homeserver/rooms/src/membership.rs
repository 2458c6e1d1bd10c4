//! Membership changes requested by local users — join (vouched for in restricted rooms), knock,
//! leave, invite, kick, ban, unban — and the propagation of profile changes into member events.
//!
//! Every local `m.room.member` event is made by [`Rooms::change_membership`], whichever endpoint
//! asked for it (`/join`, `/invite`, …, the state endpoint, `createRoom`'s invites and
//! `initial_state`, profile updates). It applies the local rules in one place:
//! - the room exists and, for joins, invites and knocks, is not blocked by an admin;
//! - the content is the client's minus what only the server may set
//!   (`join_authorised_via_users_server`, `third_party_signed`), with bounded profile fields,
//!   and the target's profile filled in for joins, invites and knocks that carry none;
//! - the transition makes sense for the target's current membership (no kicking someone who is
//!   not there, no unbanning someone who is not banned, ...), repeated requests are idempotent;
//! - a restricted join is vouched for only if the user is in one of the rooms the join rule
//!   allows;
//! - an invited local user exists, or belongs to an application service's namespace.
//!
//! The templates it builds are marked as vetted; the pipeline refuses local member events that
//! are not, so a new endpoint cannot skip these rules. The room version's auth rules still run
//! in the pipeline and are the final word.

use std::sync::Arc;

use homeserver_core::{Error, ErrorKind};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::room::member::MembershipState as M,
};
use serde_json::{Map, Value, json};

use crate::{Rooms, builder::EventTemplate, create::Profile, input::Submission};

/// Longest display name a member event may carry, in characters (as Synapse and `/profile`).
pub const MAX_DISPLAYNAME_LEN: usize = 256;
/// Longest avatar URL a member event may carry (as Synapse).
pub const MAX_AVATAR_URL_LEN: usize = 1000;

/// What a local user asks to do to a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipAction {
    Join,
    Knock,
    /// Leave a room, reject an invite or withdraw a knock (sender and target are the same).
    Leave,
    Invite,
    Kick,
    Ban,
    Unban,
}

impl MembershipAction {
    /// The `membership` value the event carries.
    fn membership(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Knock => "knock",
            Self::Leave | Self::Kick | Self::Unban => "leave",
            Self::Invite => "invite",
            Self::Ban => "ban",
        }
    }

    /// The action a raw `m.room.member` state event stands for, as the state endpoint receives
    /// it: `membership` from the content, sender and target from the request.
    pub fn from_state_event(
        membership: Option<&str>,
        sender: &UserId,
        target: &UserId,
        target_is_banned: bool,
    ) -> Result<Self, Error> {
        let own = sender == target;
        match membership {
            Some("join") if own => Ok(Self::Join),
            Some("knock") if own => Ok(Self::Knock),
            Some("leave") if own => Ok(Self::Leave),
            Some("leave") if target_is_banned => Ok(Self::Unban),
            Some("leave") => Ok(Self::Kick),
            Some("invite") => Ok(Self::Invite),
            Some("ban") => Ok(Self::Ban),
            Some("join" | "knock") => {
                Err(Error::forbidden("You cannot change another user's membership to that"))
            }
            Some(_) | None => Err(Error::bad_json("invalid or missing membership")),
        }
    }
}

/// A membership change: who does what to whom, with the content the client supplied (such as
/// `reason`, a per-room display name, `is_direct`).
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub sender: OwnedUserId,
    pub target: OwnedUserId,
    pub action: MembershipAction,
    pub content: Map<String, Value>,
}

impl MembershipChange {
    pub fn new(action: MembershipAction, sender: &UserId, target: &UserId) -> Self {
        Self { sender: sender.to_owned(), target: target.to_owned(), action, content: Map::new() }
    }

    pub fn with_reason(mut self, reason: Option<&str>) -> Self {
        if let Some(reason) = reason {
            self.content.insert("reason".into(), json!(reason));
        }
        self
    }

    pub fn with_content(mut self, content: Map<String, Value>) -> Self {
        self.content.extend(content);
        self
    }
}

/// What a membership change comes to.
pub(crate) enum MemberPlan {
    /// A vetted member event to send.
    Send(EventTemplate),
    /// The target already has exactly this membership: the current event answers the request.
    Unchanged(OwnedEventId),
}

/// Whether an application service's user namespace covers a user id (the composition root
/// wires it to the loaded registrations; the room model does not know appservices).
#[derive(Clone)]
pub struct AppserviceUsers(pub Arc<dyn Fn(&UserId) -> bool + Send + Sync>);

impl std::fmt::Debug for AppserviceUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppserviceUsers(..)")
    }
}

impl Rooms {
    /// A local user's profile as member events show it.
    pub async fn profile_of(&self, user: &UserId) -> Result<Profile, Error> {
        let record = self.db().user(user.as_str()).await.map_err(Error::from)?;
        Ok(record
            .map(|u| Profile { displayname: u.displayname, avatar_url: u.avatar_url })
            .unwrap_or_default())
    }

    /// Applies a membership change after every local rule (see the module docs).
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        change: MembershipChange,
    ) -> Result<OwnedEventId, Error> {
        // Leaving a room this server holds no state of (rejecting another server's invite,
        // withdrawing a knock) goes through a server that holds it. An invite by a user of this
        // server that is part of the room's DAG here (its sender has left since) is rejected
        // locally, as Synapse does.
        if change.action == MembershipAction::Leave
            && change.sender == change.target
            && self.out_of_band(room_id, &change.target).await?.is_some_and(|oob| {
                let local_sender = UserId::parse(&oob.event.sender)
                    .is_ok_and(|sender| sender.server_name() == self.server_name());
                matches!(oob.membership, M::Invite | M::Knock)
                    && (oob.event.is_out_of_band() || !local_sender)
            })
        {
            return self.leave_out_of_band(room_id, &change.target).await;
        }
        let remote_invite =
            change.action == MembershipAction::Invite && change.target.server_name() != self.server_name();
        match self.member_template(room_id, change, None).await? {
            MemberPlan::Send(template) if remote_invite => self.invite_remote(room_id, template).await,
            MemberPlan::Send(template) => self.submit_member(room_id, template).await,
            MemberPlan::Unchanged(event_id) => Ok(event_id),
        }
    }

    /// The vetted template for a change, or the current member event when the target already
    /// has exactly the requested membership (a repeated request). `creating` carries the
    /// creator's profile while a room is being created (it is not in the database yet).
    pub(crate) async fn member_template(
        &self,
        room_id: &RoomId,
        change: MembershipChange,
        creating: Option<&Profile>,
    ) -> Result<MemberPlan, Error> {
        let MembershipChange { sender, target, action, content } = change;
        let creating_room = creating.is_some();
        if !creating_room && self.room_version(room_id).await?.is_none() {
            return Err(Error::not_found("room not found"));
        }
        if matches!(action, MembershipAction::Join | MembershipAction::Invite | MembershipAction::Knock)
            && !creating_room
            && self.db().is_room_blocked(room_id.as_str()).await.map_err(Error::from)?
        {
            return Err(Error::forbidden("This room has been blocked on this server"));
        }
        let mut content = client_content(content)?;
        content.insert("membership".into(), json!(action.membership()));
        if matches!(action, MembershipAction::Join | MembershipAction::Invite | MembershipAction::Knock)
            && target.server_name() == self.server_name()
        {
            let profile = match creating {
                Some(profile) if target == sender => profile.clone(),
                _ => self.profile_of(&target).await?,
            };
            fill_profile(&mut content, &profile);
        }
        if action == MembershipAction::Invite {
            self.require_invitable(&target).await?;
        }
        if action == MembershipAction::Join && !creating_room {
            self.vet_guest_join(room_id, &target, &mut content).await?;
        }
        let current = if creating_room { None } else { self.membership(room_id, &target).await? };
        let repeated = match (action, current.as_ref()) {
            (MembershipAction::Join, _) => false, // decided below, against the content
            (MembershipAction::Knock, Some(M::Join)) => {
                return Err(Error::forbidden("You are already in the room"));
            }
            (MembershipAction::Knock, Some(M::Invite)) => {
                return Err(Error::forbidden("You are already invited to the room"));
            }
            (MembershipAction::Knock | MembershipAction::Invite, Some(M::Ban)) => {
                return Err(Error::forbidden(format!("{target} is banned from the room")));
            }
            (MembershipAction::Knock, Some(M::Knock)) => true,
            (MembershipAction::Leave, Some(M::Join | M::Invite | M::Knock)) => false,
            (MembershipAction::Leave, Some(M::Leave)) => true,
            (MembershipAction::Leave, _) => {
                return Err(Error::forbidden("you are not a member of this room"));
            }
            (MembershipAction::Invite, Some(M::Join)) => {
                return Err(Error::forbidden(format!("{target} is already in the room")));
            }
            (MembershipAction::Invite, Some(M::Invite)) => true,
            (MembershipAction::Kick, Some(M::Join | M::Invite | M::Knock)) => false,
            (MembershipAction::Kick, _) => {
                return Err(Error::forbidden(format!("{target} is not in the room")));
            }
            (MembershipAction::Unban, Some(M::Ban)) => false,
            (MembershipAction::Unban, _) => return Err(Error::forbidden(format!("{target} is not banned"))),
            _ => false,
        };
        let current_event = match creating_room {
            true => None,
            false => self.current_state_event(room_id, "m.room.member", target.as_str()).await?,
        };
        if let Some(current) = &current_event
            && repeated
        {
            return Ok(MemberPlan::Unchanged(current.event_id.clone()));
        }
        let mut template =
            EventTemplate::state("m.room.member", target.as_str(), &sender, Value::Object(content));
        if action == MembershipAction::Join && !creating_room {
            if let Some(current) = &current_event
                && current.content_value() == template.content
            {
                return Ok(MemberPlan::Unchanged(current.event_id.clone()));
            }
            if let Some(authoriser) = self.restricted_join_authoriser(room_id, &target).await? {
                template.content["join_authorised_via_users_server"] = json!(authoriser);
            }
        }
        template.membership_vetted = true;
        Ok(MemberPlan::Send(template))
    }

    async fn submit_member(&self, room_id: &RoomId, template: EventTemplate) -> Result<OwnedEventId, Error> {
        let pdus = self.submit(room_id, Submission::Events { templates: vec![template], txn: None }).await?;
        pdus.last().map(|p| p.event_id.clone()).ok_or_else(|| Error::internal("no event produced"))
    }

    /// An invited user of this server must exist, unless an application service's namespace
    /// covers them (the appservice provisions its users when they are first used).
    async fn require_invitable(&self, target: &UserId) -> Result<(), Error> {
        if target.server_name() != self.server_name() {
            return Ok(());
        }
        if self.db().user(target.as_str()).await.map_err(Error::from)?.is_some()
            || self.config().appservice_users.as_ref().is_some_and(|covers| (covers.0)(target))
        {
            return Ok(());
        }
        Err(Error::not_found(format!("{target} does not exist")))
    }

    /// For a `restricted` (or `knock_restricted`) room the user is neither invited to nor in:
    /// a local member who may invite, to vouch for the join, if the user is in one of the rooms
    /// the join rule allows. `None` when no vouching is needed; an error when the user may not
    /// join this way.
    pub(crate) async fn restricted_join_authoriser(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>, Error> {
        if matches!(self.membership(room_id, user).await?, Some(M::Join | M::Invite)) {
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

    /// Joins a local room. `extra` holds additional member-event content from the request (such
    /// as `reason`); joining again with unchanged content is a no-op.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        extra: Map<String, Value>,
    ) -> Result<OwnedEventId, Error> {
        self.change_membership(
            room_id,
            MembershipChange::new(MembershipAction::Join, user, user).with_content(extra),
        )
        .await
    }

    /// Asks to join a room whose join rule is `knock` (or `knock_restricted`).
    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        self.change_membership(
            room_id,
            MembershipChange::new(MembershipAction::Knock, user, user).with_reason(reason),
        )
        .await
    }

    /// Leaves (or rejects an invite to, or withdraws a knock on) a room.
    pub async fn leave(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        self.change_membership(
            room_id,
            MembershipChange::new(MembershipAction::Leave, user, user).with_reason(reason),
        )
        .await
    }

    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<OwnedEventId, Error> {
        let mut change = MembershipChange::new(MembershipAction::Invite, sender, target).with_reason(reason);
        if is_direct {
            change.content.insert("is_direct".into(), json!(true));
        }
        self.change_membership(room_id, change).await
    }

    pub async fn kick(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        self.change_membership(
            room_id,
            MembershipChange::new(MembershipAction::Kick, sender, target).with_reason(reason),
        )
        .await
    }

    pub async fn ban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        self.change_membership(
            room_id,
            MembershipChange::new(MembershipAction::Ban, sender, target).with_reason(reason),
        )
        .await
    }

    pub async fn unban(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, Error> {
        self.change_membership(
            room_id,
            MembershipChange::new(MembershipAction::Unban, sender, target).with_reason(reason),
        )
        .await
    }

    /// Sends a fresh join event with the user's new profile into every room they are joined to.
    /// Each event is accepted only while the user is still joined (a room they left meanwhile
    /// is not re-joined); rooms where the update is refused (e.g. by power levels) keep the old
    /// profile.
    pub async fn propagate_profile(&self, user: &UserId) -> Result<(), Error> {
        let rooms = self.db().memberships_of_user(user.as_str()).await.map_err(Error::from)?;
        for row in rooms.into_iter().filter(|r| r.membership == M::Join) {
            let room_id: OwnedRoomId = row.room_id;
            let change = MembershipChange::new(MembershipAction::Join, user, user);
            let template = match self.member_template(&room_id, change, None).await {
                Ok(MemberPlan::Send(mut template)) => {
                    template.expect_membership = Some("join");
                    template
                }
                Ok(MemberPlan::Unchanged(_)) => continue,
                Err(err) if err.kind == ErrorKind::Forbidden => continue,
                Err(err) => return Err(err),
            };
            if let Err(err) = self.submit_member(&room_id, template).await
                && err.kind != ErrorKind::Forbidden
            {
                return Err(err);
            }
        }
        Ok(())
    }
}

/// The client's content with the keys only the server may set removed, and the profile fields
/// bounded.
fn client_content(mut content: Map<String, Value>) -> Result<Map<String, Value>, Error> {
    // The authorising user is chosen by the server (and signed by it); a client copying it from
    // an earlier event must not be able to name one.
    content.remove("join_authorised_via_users_server");
    content.remove("third_party_signed");
    content.remove("membership");
    if content
        .get("displayname")
        .and_then(Value::as_str)
        .is_some_and(|n| n.chars().count() > MAX_DISPLAYNAME_LEN)
    {
        return Err(Error::bad_json(format!("Displayname is too long (max {MAX_DISPLAYNAME_LEN})")));
    }
    if content.get("avatar_url").and_then(Value::as_str).is_some_and(|u| u.len() > MAX_AVATAR_URL_LEN) {
        return Err(Error::bad_json(format!("Avatar URL is too long (max {MAX_AVATAR_URL_LEN})")));
    }
    Ok(content)
}

/// Adds the target's global profile where the content names none (per-room profiles win).
fn fill_profile(content: &mut Map<String, Value>, profile: &Profile) {
    for (key, value) in [("displayname", &profile.displayname), ("avatar_url", &profile.avatar_url)] {
        if let Some(value) = value
            && !content.contains_key(key)
        {
            content.insert(key.into(), json!(value));
        }
    }
}
