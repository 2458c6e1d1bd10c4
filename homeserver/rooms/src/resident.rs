//! What this server offers, as a resident of a room, to a server whose user joins it over
//! federation: the join event template (`make_join`) and, once the signed join is accepted
//! through the remote path, the room's state before it and that state's auth chain
//! (`send_join`).
//!
//! The template is placed on the room's current forward extremities (the deepest ten, as local
//! events are), with the auth events the room version selects from the current state, and must
//! pass the auth rules against that state — a banned user, or one not invited to an invite-only
//! room, gets a refusal instead of a template it could never use. The template may be stale by
//! the time the join comes back; the join then forks the room and merges like any remote event.

use std::sync::Arc;

use homeserver_core::{Error, time::now_millis};
use ruma::{OwnedEventId, RoomId, UserId, events::StateEventType};
use serde_json::{Value, json, value::to_raw_value};

use crate::{
    Rooms,
    auth::{self, AuthEvents},
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
    /// The unsigned join event `user` (of another server) may sign to join `room_id`.
    pub async fn join_template(&self, room_id: &RoomId, user: &UserId) -> Result<Value, Error> {
        let version = self.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
        let content = json!({ "membership": "join" });
        let raw_content = to_raw_value(&content).map_err(Error::internal_from)?;
        let keys = auth::auth_state_keys(
            "m.room.member",
            user,
            Some(user.as_str()),
            &raw_content,
            &rules.authorization,
        )?;
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
        let (prev_events, depth) = self.placement(room_id).await?;
        let template = json!({
            "type": "m.room.member",
            "state_key": user,
            "sender": user,
            "content": content,
            "room_id": room_id,
            "origin_server_ts": now_millis(),
            "prev_events": prev_events,
            "auth_events": auth_ids,
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
                Error::forbidden(format!("You cannot join this room: {reason}"))
            }
            other => Error::from(other),
        })?;
        Ok(template)
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
        let mut chain: Vec<String> = self.db().auth_chain(&roots).await?.into_iter().collect();
        chain.sort();
        let text =
            |rows: Vec<homeserver_storage::events::EventRow>| rows.into_iter().map(|r| r.json).collect();
        Ok(JoinedState {
            state: text(self.db().events(&state_ids).await?),
            auth_chain: text(self.db().events(&chain).await?),
        })
    }
}
