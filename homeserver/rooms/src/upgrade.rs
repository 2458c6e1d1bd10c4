//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a new room of a newer version that carries
//! over the old one's settings, and a tombstone that points members of the old room to it.
//!
//! In order, as Synapse does it: the new room is created with `predecessor` in its create event,
//! the old room's name, topic, avatar, join rules, history visibility, guest access (Synapse's
//! `can_join` where the old room set none), encryption,
//! server ACL, pinned events, space links and bans copied, and the upgrader temporarily raised so
//! they may send all of it; then the old power levels are restored in the new room, the old room
//! gets its `m.room.tombstone` and has chat restricted, and local aliases, the canonical alias and
//! the directory listing move to the new room. Before version 12 (random room ids) the tombstone
//! comes first instead, naming the chosen id, so `predecessor.event_id` can name it; it is
//! withdrawn with an empty tombstone if the new room then fails to be created.

use homeserver_core::{Error, ErrorKind, streams::StreamPos};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    Rooms,
    create::{CreateRoom, Preset},
    versions,
};

/// State copied to the new room: `(type, all state keys?)`.
const COPIED_STATE: &[(&str, bool)] = &[
    ("m.room.join_rules", false),
    ("m.room.name", false),
    ("m.room.topic", false),
    ("m.room.history_visibility", false),
    ("m.room.guest_access", false),
    ("m.room.avatar", false),
    ("m.room.encryption", false),
    ("m.room.server_acl", false),
    ("m.room.pinned_events", false),
    ("m.space.child", true),
    ("m.space.parent", true),
];

impl Rooms {
    /// Upgrades `old` to `new_version` on behalf of `user`; returns the new room's id.
    pub async fn upgrade_room(
        &self,
        old: &RoomId,
        user: &UserId,
        new_version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId, Error> {
        let new_rules = versions::rules(&new_version).ok_or_else(|| {
            Error::new(
                ErrorKind::UnsupportedRoomVersion,
                format!("room version {new_version} is not supported"),
            )
        })?;
        if self.room_version(old).await?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        if !self.is_joined(old, user).await? {
            return Err(Error::forbidden("You are not in this room"));
        }
        let power = self.power_levels(old).await?;
        if power.user_level(user) < power.event_level("m.room.tombstone", true) {
            return Err(Error::forbidden("You may not upgrade this room"));
        }
        let privileged_creators = new_rules.authorization.explicitly_privilege_room_creators;

        // The old room's state to carry over.
        let state = self.current_state_ids(old).await?;
        let wanted: Vec<(String, String, String)> = state
            .into_iter()
            .filter(|(ty, key, _)| {
                COPIED_STATE.iter().any(|(t, any_key)| t == ty && (*any_key || key.is_empty()))
                    || ty == "m.room.member"
            })
            .collect();
        let mut initial_state = Vec::new();
        let mut old_power: Option<Value> = None;
        let mut create_content = Map::new();
        let mut join_rule = None;
        for pdu in self.state_events(&wanted).await? {
            let ty = pdu.kind.to_string();
            let key = pdu.state_key.clone().unwrap_or_default();
            let mut content = pdu.content_value();
            match ty.as_str() {
                "m.room.member" => {
                    // Bans carry over; other memberships do not.
                    if content.get("membership").and_then(Value::as_str) != Some("ban") {
                        continue;
                    }
                    let mut ban = json!({ "membership": "ban" });
                    if let Some(reason) = content.get("reason") {
                        ban["reason"] = reason.clone();
                    }
                    content = ban;
                }
                "m.room.join_rules" => {
                    join_rule = Some(content.clone());
                }
                _ => {}
            }
            initial_state.push((ty, key, content));
        }
        if let Some(pl) = self.current_state_event(old, "m.room.power_levels", "").await? {
            old_power = Some(pl.content_value());
        }
        if let Some(create) = self.current_state_event(old, "m.room.create", "").await? {
            let old_create = create.content_value();
            for key in ["type", "m.federate"] {
                if let Some(value) = old_create.get(key) {
                    create_content.insert(key.to_owned(), value.clone());
                }
            }
        }
        // Where room ids are random (before version 12), the new room's id is chosen first and
        // the old room's tombstone names it before the new room exists, so the new room's
        // `predecessor.event_id` is the tombstone — the old room's last event —, as Synapse
        // does. From version 12 the id comes from the create event: the tombstone follows it.
        let random_ids = new_rules.room_id_format == ruma::room_version_rules::RoomIdFormatVersion::V1;
        let chosen_id = if random_ids { Some(self.random_room_id()?) } else { None };
        let mut predecessor = json!({ "room_id": old });
        if let Some(new_room) = &chosen_id {
            let tombstone = self.send_tombstone(old, user, new_room).await?;
            predecessor["event_id"] = json!(tombstone);
        } else if !privileged_creators
            && let Some(last) = self
                .db()
                .latest_room_event(old.as_str(), StreamPos::new(i64::MAX))
                .await
                .map_err(Error::from)?
        {
            predecessor["event_id"] = json!(last.event_id);
        }
        create_content.insert("predecessor".into(), predecessor);
        if privileged_creators && !additional_creators.is_empty() {
            create_content.insert("additional_creators".into(), json!(additional_creators));
        }

        // Power levels: the old ones, minus creators where the new version privileges them; the
        // upgrader outranks everything until the copied state is in.
        let mut final_power = old_power.clone().unwrap_or_else(|| json!({}));
        if let Some(users) = final_power.get_mut("users").and_then(Value::as_object_mut) {
            if privileged_creators {
                users.remove(user.as_str());
                for extra in &additional_creators {
                    users.remove(extra.as_str());
                }
            } else if power.is_creator(user) {
                users.insert(user.to_string(), json!(100));
            }
        } else if !privileged_creators {
            final_power["users"] = json!({ user.as_str(): 100 });
        }
        let mut creation_power = final_power.clone();
        if !privileged_creators {
            creation_power["users"][user.as_str()] = json!(power.highest_named_level());
        }

        let public = self.db().room(old.as_str()).await.map_err(Error::from)?.is_some_and(|r| r.published);
        let request = CreateRoom {
            creator: user.to_owned(),
            version: Some(new_version),
            // As Synapse: the private preset, overridden by the copied state. The old room's
            // join rules and history visibility always win; guest access, when the old room
            // set none, is the preset's (`can_join`) — what Synapse's clients find after an
            // upgrade.
            preset: Some(Preset::PrivateChat),
            public,
            alias_localpart: None,
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            initial_state,
            creation_content: Some(create_content),
            power_level_content_override: creation_power.as_object().cloned(),
            apply_preset_state: true,
            room_id: chosen_id.clone(),
        };
        let profile = self.profile_of(user).await?;
        let new_room = match self.create_room(request, profile).await {
            Ok(new_room) => new_room,
            Err(err) => {
                // The tombstone named a room that never came to be: withdrawn (an empty
                // tombstone replaces nothing), so the old room stays usable.
                if chosen_id.is_some() {
                    let withdrawn = self.send_state(old, user, "m.room.tombstone", "", json!({})).await;
                    if let Err(undo) = withdrawn {
                        tracing::warn!(room_id = %old, error = %undo.message, "could not withdraw a tombstone");
                    }
                }
                return Err(err);
            }
        };
        // A restricted room that admitted members of itself now admits the new room's.
        if let Some(rules) = join_rule.and_then(|c| retarget_allow(c, old, &new_room)) {
            self.send_state(&new_room, user, "m.room.join_rules", "", rules).await?;
        }
        if creation_power != final_power {
            self.send_state(&new_room, user, "m.room.power_levels", "", final_power).await?;
        }

        // Point the old room at the new one (unless done already) and quieten it.
        if chosen_id.is_none() {
            self.send_tombstone(old, user, &new_room).await?;
        }
        if let Some(mut restricted) = old_power {
            let users_default = restricted.get("users_default").and_then(Value::as_i64).unwrap_or(0);
            let level = (users_default + 1).max(50);
            let mut changed = false;
            for key in ["events_default", "invite"] {
                if restricted.get(key).and_then(Value::as_i64).unwrap_or(0) < level {
                    restricted[key] = json!(level);
                    changed = true;
                }
            }
            if changed {
                ignore_forbidden(self.send_state(old, user, "m.room.power_levels", "", restricted).await)?;
            }
        }
        // The canonical alias moves once the aliases it names point at the new room (an alias
        // event is only valid for aliases of its own room).
        let moved = self.db().move_aliases(old.as_str(), new_room.as_str()).await.map_err(Error::from)?;
        if let Some(alias) = self.current_state_event(old, "m.room.canonical_alias", "").await?
            && alias.content_value().as_object().is_some_and(|c| !c.is_empty())
        {
            ignore_bad_alias(
                self.send_state(&new_room, user, "m.room.canonical_alias", "", alias.content_value()).await,
            )?;
            if !moved.is_empty() {
                ignore_forbidden(self.send_state(old, user, "m.room.canonical_alias", "", json!({})).await)?;
            }
        }
        if public {
            self.db().set_room_published(old.as_str(), false).await.map_err(Error::from)?;
        }
        Ok(new_room)
    }
}

impl Rooms {
    /// The old room's `m.room.tombstone` naming its replacement; its event id.
    async fn send_tombstone(&self, old: &RoomId, user: &UserId, new_room: &RoomId) -> Result<String, Error> {
        let content = json!({ "body": "This room has been replaced", "replacement_room": new_room });
        Ok(self.send_state(old, user, "m.room.tombstone", "", content).await?.to_string())
    }
}

/// Join rules whose `allow` list names `old`, rewritten to name `new` instead; `None` if the
/// list does not name it.
fn retarget_allow(mut content: Value, old: &RoomId, new: &RoomId) -> Option<Value> {
    let allow = content.get_mut("allow")?.as_array_mut()?;
    let mut changed = false;
    for entry in allow.iter_mut() {
        if entry.get("room_id").and_then(Value::as_str) == Some(old.as_str()) {
            entry["room_id"] = json!(new);
            changed = true;
        }
    }
    changed.then_some(content)
}

/// An alias of the old room that did not move (another server's, or one that no longer
/// exists) keeps the canonical alias out of the new room; the upgrade still succeeds.
fn ignore_bad_alias(result: Result<ruma::OwnedEventId, Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(err)
            if matches!(err.kind, ErrorKind::BadAlias | ErrorKind::InvalidParam | ErrorKind::Forbidden) =>
        {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// Best-effort follow-ups: a refusal by the old room's power levels is not an error.
fn ignore_forbidden(result: Result<ruma::OwnedEventId, Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.kind == ErrorKind::Forbidden => Ok(()),
        Err(err) => Err(err),
    }
}
