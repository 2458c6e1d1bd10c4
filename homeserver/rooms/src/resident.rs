//! What this server offers, as a resident of a room, to a server whose user joins, leaves or
//! knocks over federation: the member event template (`make_join`, `make_leave`, `make_knock`)
//! and, once a signed join is accepted through the remote path, the room's state before it and
//! that state's auth chain (`send_join`); and the one place local events are built without
//! being placed (an invite of a remote user, signed by the invitee's server before it enters
//! the room).
//!
//! The template is placed on the room's current forward extremities (the deepest ten, as local
//! events are), with the auth events the room version selects from the current state, and must
//! pass the auth rules against that state — a banned user, or one not invited to an invite-only
//! room, gets a refusal instead of a template it could never use. The template may be stale by
//! the time the join comes back; the join then forks the room and merges like any remote event.

use std::sync::Arc;

use homeserver_core::{Error, time::now_millis};
use ruma::{OwnedEventId, RoomId, UserId, events::StateEventType, room_version_rules::RoomVersionRules};
use serde_json::{Value, json, value::to_raw_value};

use crate::{
    Rooms,
    auth::{self, AuthEvents},
    builder::{self, EventTemplate, Placement},
    event_format,
    input::{MAX_DEPTH, MAX_PREV_EVENTS},
    pdu::Pdu,
    rejection::Rejection,
    versions,
};

/// The state and auth chain a joining server receives.
pub struct JoinedState {
    /// The state before the join, as PDU text.
    pub state: Vec<String>,
    /// The auth chain of that state and of the join, as PDU text.
    pub auth_chain: Vec<String>,
}

impl Rooms {
    /// The unsigned member event (`join`, `leave` or `knock`) a user of another server may sign
    /// to change their own membership of `room_id` (`make_join`, `make_leave`, `make_knock`).
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
    ) -> Result<Value, Error> {
        let version = self.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
        let mut content = json!({ "membership": membership });
        if membership == "join"
            && rules.authorization.restricted_join_rule
            && let Some(authoriser) = self.restricted_join_authoriser(room_id, user).await?
        {
            // A restricted room: a member of this server who may invite vouches for the join
            // (this server countersigns it in `send_join`).
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        let (auth_ids, events) = self
            .auth_at_current(room_id, &rules, "m.room.member", user, Some(user.as_str()), &content)
            .await?;
        let (prev_events, depth) = self.placement(room_id).await?;
        let references = self.reference_hashes(&rules, &prev_events, &auth_ids).await?;
        let list = |ids: &[OwnedEventId]| {
            event_format::reference_list(ids, &references, &rules).map_err(Error::internal)
        };
        let template = json!({
            "type": "m.room.member",
            "state_key": user,
            "sender": user,
            "content": content,
            "room_id": room_id,
            "origin_server_ts": now_millis(),
            "prev_events": list(&prev_events)?,
            "auth_events": list(&auth_ids)?,
            "depth": depth,
        });
        // The auth rules see the template as the event it would become.
        let probe = Pdu::parse(
            "$template".try_into().expect("valid"),
            Some(room_id),
            Arc::from(template.to_string()),
        )
        .map_err(Error::internal_from)?;
        auth::check(&rules.authorization, &probe, &events).map_err(|r| match r {
            Rejection::Unauthorized(reason) => {
                Error::forbidden(format!("The room's rules do not allow this {membership}: {reason}"))
            }
            other => Error::from(other),
        })?;
        Ok(template)
    }

    /// The reference hashes of an event's prev and auth events, for versions that list them.
    async fn reference_hashes(
        &self,
        rules: &RoomVersionRules,
        prev_events: &[OwnedEventId],
        auth_events: &[OwnedEventId],
    ) -> Result<event_format::ReferenceHashes, Error> {
        if !event_format::references_carry_hashes(rules) {
            return Ok(Default::default());
        }
        let ids: Vec<OwnedEventId> = prev_events.iter().chain(auth_events).cloned().collect();
        Ok(event_format::hashes_of(self.cache().get_many(&ids).await?.values(), rules))
    }

    /// Whether `user` (of another server) meets a restricted room's join rule as this server
    /// sees it — joined to one of the rooms it allows — so a member here may vouch for their
    /// join. Checked before this server countersigns a join naming one of its users.
    pub async fn may_vouch_for_join(&self, room_id: &RoomId, user: &UserId) -> Result<bool, Error> {
        match self.restricted_join_authoriser(room_id, user).await {
            Ok(authoriser) => Ok(authoriser.is_some()),
            Err(err) if err.kind == homeserver_core::ErrorKind::Forbidden => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Builds and signs an event of this server at the room's current position, with the auth
    /// events the current state selects, and checks it against that state — without placing
    /// it: an invite of another server's user goes to that server for its signature first,
    /// then enters the room through the remote path like any event.
    pub(crate) async fn build_at_current(
        &self,
        room_id: &RoomId,
        template: &EventTemplate,
    ) -> Result<Pdu, Error> {
        let version = self.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
        let (auth_ids, events) = self
            .auth_at_current(
                room_id,
                &rules,
                &template.kind,
                &template.sender,
                template.state_key.as_deref(),
                &template.content,
            )
            .await?;
        let (prev_events, depth) = self.placement(room_id).await?;
        let references = self.reference_hashes(&rules, &prev_events, &auth_ids).await?;
        let placement = Placement {
            room_id: Some(room_id),
            prev_events: &prev_events,
            auth_events: &auth_ids,
            depth,
            origin_server_ts: now_millis(),
            references: &references,
        };
        let pdu = builder::build_pdu(self.key(), &rules, template, &placement)?;
        auth::check(&rules.authorization, &pdu, &events).map_err(Error::from)?;
        Ok(pdu)
    }

    /// The auth events an event would get from the room's current state: their ids as listed
    /// (v12 does not list the create event) and the events themselves, for the auth rules.
    async fn auth_at_current(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        kind: &str,
        sender: &UserId,
        state_key: Option<&str>,
        content: &Value,
    ) -> Result<(Vec<OwnedEventId>, AuthEvents), Error> {
        let raw_content = to_raw_value(content).map_err(Error::internal_from)?;
        let keys = auth::auth_state_keys(kind, sender, state_key, &raw_content, &rules.authorization)?;
        let mut events = AuthEvents::default();
        let mut auth_ids: Vec<OwnedEventId> = Vec::new();
        for key in keys.into_iter().chain([(StateEventType::RoomCreate, String::new())]) {
            if let Some(pdu) = self.current_state_event(room_id, &key.0.to_string(), &key.1).await? {
                let listed = !(rules.authorization.room_create_event_id_as_room_id
                    && pdu.kind == ruma::events::TimelineEventType::RoomCreate);
                if listed && !auth_ids.contains(&pdu.event_id) {
                    auth_ids.push(pdu.event_id.clone());
                }
                events.by_id.insert(pdu.event_id.clone(), pdu.clone());
                events.by_key.insert(key, pdu);
            }
        }
        Ok((auth_ids, events))
    }

    /// The prev events and depth a new event of the room would get: the deepest forward
    /// extremities.
    async fn placement(&self, room_id: &RoomId) -> Result<(Vec<OwnedEventId>, u64), Error> {
        let mut extremities: Vec<(u64, OwnedEventId)> = Vec::new();
        for id in self.db().room_extremities(room_id.as_str()).await? {
            let Ok(id) = OwnedEventId::try_from(id) else { continue };
            if let Some(pdu) = self.cache().get(&id).await? {
                extremities.push((pdu.depth, id));
            }
        }
        extremities.sort_by(|a, b| b.cmp(a));
        extremities.truncate(MAX_PREV_EVENTS);
        let depth = extremities.first().map_or(1, |(d, _)| d.saturating_add(1)).min(MAX_DEPTH);
        Ok((extremities.into_iter().map(|(_, id)| id).collect(), depth))
    }

    /// The state before an accepted join and the auth chain of that state and the join.
    pub async fn joined_state(&self, join: &ruma::EventId) -> Result<JoinedState, Error> {
        let row = self.db().event(join.as_str()).await?.ok_or_else(|| Error::not_found("Unknown event"))?;
        let entries = self.state_at_group(row.state_before).await?;
        let state_ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
        let mut roots = state_ids.clone();
        roots.push(row.event_id.clone());
        let chain: Vec<String> = self.db().auth_chain(&roots).await?.into_iter().collect();
        // Oldest first (an event's auth events come before it): a joiner that reads the lists in
        // order and lets later state replace earlier, as SyTest's does, ends with the current state.
        let text = |mut rows: Vec<homeserver_storage::events::EventRow>| {
            rows.sort_by_key(|r| (r.depth, r.stream_pos));
            rows.into_iter().map(|r| r.json).collect()
        };
        Ok(JoinedState {
            state: text(self.db().events(&state_ids).await?),
            auth_chain: text(self.db().events(&chain).await?),
        })
    }
}
