//! The public room directory: how a room is listed (`directory_entry`, also used by the space
//! hierarchy) and pages of the published rooms, for the client API and for other servers
//! (`/publicRooms` over federation).

use homeserver_core::Error;
use ruma::RoomId;
use serde_json::{Map, Value, json};

use crate::Rooms;

/// The most rooms one page of the public room directory holds (also the page size when the
/// client names none).
const MAX_PUBLIC_ROOMS_PAGE: usize = 100;

impl Rooms {
    /// Whether the room may be shared with other servers (its create event does not say
    /// `m.federate: false`).
    pub async fn federates(&self, room_id: &RoomId) -> Result<bool, Error> {
        let create = self.current_state_event(room_id, "m.room.create", "").await?;
        Ok(create.is_none_or(|c| c.content_value().get("m.federate") != Some(&json!(false))))
    }

    /// One room as the directory lists it.
    pub async fn directory_entry(&self, room_id: &RoomId) -> Result<Value, Error> {
        let content = |ev: Option<std::sync::Arc<crate::pdu::Pdu>>| ev.map(|p| p.content_value());
        let name = content(self.current_state_event(room_id, "m.room.name", "").await?);
        let topic = content(self.current_state_event(room_id, "m.room.topic", "").await?);
        let alias = content(self.current_state_event(room_id, "m.room.canonical_alias", "").await?);
        let avatar = content(self.current_state_event(room_id, "m.room.avatar", "").await?);
        let join_rules = content(self.current_state_event(room_id, "m.room.join_rules", "").await?);
        let history = content(self.current_state_event(room_id, "m.room.history_visibility", "").await?);
        let guest = content(self.current_state_event(room_id, "m.room.guest_access", "").await?);
        let create = content(self.current_state_event(room_id, "m.room.create", "").await?);
        let members = self.db().joined_member_count(room_id.as_str()).await?;
        let field = |v: &Option<Value>, k: &str| v.as_ref().and_then(|c| c.get(k)).cloned();
        let mut entry = Map::new();
        entry.insert("room_id".into(), json!(room_id));
        entry.insert("num_joined_members".into(), json!(members));
        entry.insert(
            "world_readable".into(),
            json!(field(&history, "history_visibility") == Some(json!("world_readable"))),
        );
        entry
            .insert("guest_can_join".into(), json!(field(&guest, "guest_access") == Some(json!("can_join"))));
        entry.insert("join_rule".into(), field(&join_rules, "join_rule").unwrap_or_else(|| json!("invite")));
        for (key, value) in [
            ("name", field(&name, "name")),
            ("topic", field(&topic, "topic")),
            ("canonical_alias", field(&alias, "alias")),
            ("avatar_url", field(&avatar, "url")),
            ("room_type", field(&create, "type")),
        ] {
            if let Some(v) = value.filter(|v| !v.is_null()) {
                entry.insert(key.into(), v);
            }
        }
        Ok(Value::Object(entry))
    }

    /// Lists published rooms, most members first, filtered by a search term, paginated by offset.
    pub async fn public_rooms(
        &self,
        limit: Option<u64>,
        since: Option<&str>,
        search: Option<&str>,
        for_other_servers: bool,
    ) -> Result<Value, Error> {
        let mut entries = Vec::new();
        for room_id in self.db().published_rooms().await? {
            let Ok(room_id) = RoomId::parse(&room_id) else { continue };
            if for_other_servers && !self.federates(&room_id).await? {
                // A room created with `m.federate: false` is not listed to other servers.
                continue;
            }
            let entry = self.directory_entry(&room_id).await?;
            if let Some(term) = search.map(str::to_lowercase).filter(|t| !t.is_empty()) {
                let haystack = ["name", "topic", "canonical_alias", "room_id"]
                    .iter()
                    .filter_map(|k| entry.get(*k).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                if !haystack.contains(&term) {
                    continue;
                }
            }
            entries.push(entry);
        }
        entries.sort_by(|a, b| {
            b["num_joined_members"]
                .as_i64()
                .cmp(&a["num_joined_members"].as_i64())
                .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
        });
        let total = entries.len();
        let offset: usize = match since {
            Some(token) => token
                .strip_prefix('o')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::invalid_param("invalid pagination token"))?,
            None => 0,
        };
        let limit =
            limit.map(|l| l as usize).unwrap_or(MAX_PUBLIC_ROOMS_PAGE).clamp(1, MAX_PUBLIC_ROOMS_PAGE);
        let page: Vec<Value> = entries.into_iter().skip(offset).take(limit).collect();
        let mut body = json!({ "chunk": page, "total_room_count_estimate": total });
        if offset.saturating_add(limit) < total {
            body["next_batch"] = json!(format!("o{}", offset.saturating_add(limit)));
        }
        if offset > 0 {
            body["prev_batch"] = json!(format!("o{}", offset.saturating_sub(limit)));
        }
        Ok(body)
    }
}
