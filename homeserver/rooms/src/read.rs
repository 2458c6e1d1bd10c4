//! Reading room state and facts (no writes here).

use std::{collections::HashMap, sync::Arc};

use homeserver_core::Error;
use ruma::{
    EventId, OwnedEventId, OwnedUserId, RoomId, RoomVersionId, UserId, events::room::member::MembershipState,
};

use crate::{Rooms, pdu::Pdu, power::PowerLevels, versions};

/// `(type, state_key) -> event_id` entries of a room state.
pub type StateEntries = Vec<(String, String, String)>;

impl Rooms {
    /// The version of a known room (`None` if the room does not exist here).
    pub async fn room_version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>, Error> {
        if let Some(v) = self.shared.versions.lock().expect("versions poisoned").get(room_id) {
            return Ok(Some(v.clone()));
        }
        let Some(room) = self.db().room(room_id.as_str()).await.map_err(Error::from)? else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|e| Error::internal(e.to_string()))?;
        self.shared.versions.lock().expect("versions poisoned").insert(room_id.to_owned(), version.clone());
        Ok(Some(version))
    }

    /// The rules of a known room's version, or M_NOT_FOUND.
    pub async fn room_rules(
        &self,
        room_id: &RoomId,
    ) -> Result<ruma::room_version_rules::RoomVersionRules, Error> {
        let version = self.room_version(room_id).await?.ok_or_else(|| Error::not_found("room not found"))?;
        versions::rules(&version)
            .ok_or_else(|| Error::internal(format!("unsupported room version {version}")))
    }

    /// The current state event for a key, if any.
    pub async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>, Error> {
        let id = self
            .db()
            .current_state_event_id(room_id.as_str(), event_type, state_key)
            .await
            .map_err(Error::from)?;
        match id {
            Some(id) => {
                let id = EventId::parse(id).map_err(|e| Error::internal(e.to_string()))?;
                self.cache().get(&id).await
            }
            None => Ok(None),
        }
    }

    /// The stripped state an invitee or knocker may see before joining (name, topic, join
    /// rules and such; the spec's list plus the topic).
    pub async fn stripped_state(&self, room_id: &RoomId) -> Result<Vec<serde_json::Value>, Error> {
        Ok(self.stripped_state_pdus(room_id).await?.iter().map(|pdu| stripped(pdu)).collect())
    }

    /// The events of [`Rooms::stripped_state`] as PDUs (what another server's invitee receives
    /// since Matrix 1.16, the create event always among them).
    pub async fn stripped_state_pdus(&self, room_id: &RoomId) -> Result<Vec<Arc<Pdu>>, Error> {
        let mut events = Vec::new();
        for ty in STRIPPED_STATE_TYPES {
            if let Some(pdu) = self.current_state_event(room_id, ty, "").await? {
                events.push(pdu);
            }
        }
        Ok(events)
    }

    /// One entry of the state at a group. State groups never change, so answers are cached.
    pub async fn state_entry(
        &self,
        group: i64,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<String>, Error> {
        let key = (group, event_type.to_owned(), state_key.to_owned());
        if let Some(hit) = self.shared.state_entries.lock().expect("state cache poisoned").get(&key) {
            return Ok(hit.clone());
        }
        let found = self.db().state_group_entry(group, event_type, state_key).await.map_err(Error::from)?;
        self.shared.state_entries.lock().expect("state cache poisoned").put(key, found.clone());
        Ok(found)
    }

    /// The whole current state of a room as event ids.
    pub async fn current_state_ids(&self, room_id: &RoomId) -> Result<StateEntries, Error> {
        self.db().current_state(room_id.as_str()).await.map_err(Error::from)
    }

    /// The room state as of a state group.
    pub async fn state_at_group(&self, group: i64) -> Result<StateEntries, Error> {
        if group == 0 {
            return Ok(Vec::new());
        }
        self.db().state_group(group).await.map_err(Error::from)
    }

    /// The entries that differ between two states, with their value in `to` (`None`: the key
    /// is gone). Walks `to`'s delta chain back to `from` when `from` is on it (the room moved
    /// forward: only the keys changed on the way are compared); otherwise compares the whole
    /// states.
    pub async fn state_diff(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String, Option<String>)>, Error> {
        if from == to {
            return Ok(Vec::new());
        }
        let mut touched = std::collections::BTreeSet::new();
        let mut group = to;
        for _ in 0..crate::state_groups::MAX_STATE_CHAIN {
            if group == from || group == 0 {
                break;
            }
            let Some((prev, entries)) = self.db().state_group_delta(group).await.map_err(Error::from)? else {
                break;
            };
            touched.extend(entries.into_iter().map(|(t, k, _)| (t, k)));
            match prev {
                Some(prev) => group = prev,
                None => break,
            }
        }
        let mut out = Vec::new();
        if group == from {
            for (ty, key) in touched {
                let before = self.state_entry(from, &ty, &key).await?;
                let after = self.state_entry(to, &ty, &key).await?;
                if before != after {
                    out.push((ty, key, after));
                }
            }
            return Ok(out);
        }
        let before: HashMap<(String, String), String> =
            self.state_at_group(from).await?.into_iter().map(|(t, k, id)| ((t, k), id)).collect();
        let mut after: HashMap<(String, String), String> =
            self.state_at_group(to).await?.into_iter().map(|(t, k, id)| ((t, k), id)).collect();
        for (key, id) in &before {
            match after.remove(key) {
                Some(new) if new == *id => {}
                new => out.push((key.0.clone(), key.1.clone(), new)),
            }
        }
        out.extend(after.into_iter().map(|((t, k), id)| (t, k, Some(id))));
        Ok(out)
    }

    /// Loads the events of a list of state entries (in the entries' order, unknown ids skipped).
    pub async fn state_events(&self, entries: &StateEntries) -> Result<Vec<Arc<Pdu>>, Error> {
        let ids: Vec<OwnedEventId> =
            entries.iter().filter_map(|(_, _, id)| EventId::parse(id).ok()).collect();
        let map = self.cache().get_many(&ids).await?;
        Ok(ids.iter().filter_map(|id| map.get(id).cloned()).collect())
    }

    /// A user's current membership (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<MembershipState>, Error> {
        Ok(self
            .db()
            .membership(room_id.as_str(), user.as_str())
            .await
            .map_err(Error::from)?
            .map(|m| m.membership))
    }

    pub async fn is_joined(&self, room_id: &RoomId, user: &UserId) -> Result<bool, Error> {
        Ok(self.membership(room_id, user).await? == Some(MembershipState::Join))
    }

    /// The room's current power levels, including v12 creators.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<PowerLevels, Error> {
        let rules = self.room_rules(room_id).await?;
        let create = self
            .current_state_event(room_id, "m.room.create", "")
            .await?
            .ok_or_else(|| Error::not_found("room has no create event"))?;
        let power = self.current_state_event(room_id, "m.room.power_levels", "").await?;
        Ok(PowerLevels::from_events(&rules.authorization, Some(&create), power.as_deref()))
    }

    /// Joined members of a room.
    pub async fn joined_members(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>, Error> {
        Ok(self
            .db()
            .room_members(room_id.as_str(), "join")
            .await
            .map_err(Error::from)?
            .into_iter()
            .filter_map(|u| UserId::parse(u).ok())
            .collect())
    }
}

/// Event types shown to invitees and knockers before they join.
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.topic",
    // Lets another server's guest know whether it may accept the invite.
    "m.room.guest_access",
];

/// A state event as stripped state: type, state key, content and sender only.
pub fn stripped(pdu: &Pdu) -> serde_json::Value {
    serde_json::json!({
        "type": pdu.kind.to_string(),
        "state_key": pdu.state_key,
        "content": pdu.content_value(),
        "sender": pdu.sender,
    })
}
