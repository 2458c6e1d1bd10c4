//! History visibility: which events a user may see.
//!
//! For each event, the room's `m.room.history_visibility` and the user's membership are read from
//! the state *after* the event (so a user sees their own join). Rules, per the spec and Synapse:
//! `world_readable` is visible to all; a joined member sees the event; `invited` also shows it to
//! invitees; `shared` shows it to anyone who is joined to the room now. For a visibility change
//! itself, the more permissive of the old and new setting applies. Users always see their own
//! membership events.
//!
//! Lookups are per distinct state group (a timeline page usually spans one or two), and each reads
//! only the two state entries it needs, not the whole state.

use std::collections::HashMap;

use homeserver_core::Error;
use homeserver_storage::events::EventRow;
use ruma::{EventId, RoomId, UserId};

use crate::Rooms;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Visibility {
    // Ordered from most to least restrictive.
    Joined,
    Invited,
    Shared,
    WorldReadable,
}

fn parse_visibility(value: Option<String>) -> Visibility {
    match value.as_deref() {
        Some("world_readable") => Visibility::WorldReadable,
        Some("invited") => Visibility::Invited,
        Some("joined") => Visibility::Joined,
        _ => Visibility::Shared,
    }
}

#[derive(Debug, Clone)]
struct GroupView {
    visibility: Visibility,
    membership: Option<String>,
}

impl Rooms {
    async fn group_view(&self, group: i64, user: &UserId) -> Result<GroupView, Error> {
        let hv_id = self.state_entry(group, "m.room.history_visibility", "").await?;
        let member_id = self.state_entry(group, "m.room.member", user.as_str()).await?;
        let mut visibility = Visibility::Shared;
        if let Some(id) = hv_id.and_then(|id| EventId::parse(id).ok())
            && let Some(pdu) = self.cache().get(&id).await?
        {
            visibility = parse_visibility(pdu.content_str("history_visibility"));
        }
        let mut membership = None;
        if let Some(id) = member_id.and_then(|id| EventId::parse(id).ok())
            && let Some(pdu) = self.cache().get(&id).await?
        {
            membership = pdu.content_str("membership");
        }
        Ok(GroupView { visibility, membership })
    }

    /// Keeps only the events `user` may see (order preserved).
    pub async fn filter_visible(&self, user: &UserId, rows: Vec<EventRow>) -> Result<Vec<EventRow>, Error> {
        let mut views: HashMap<i64, GroupView> = HashMap::new();
        let mut joined_now: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if row.event_type == "m.room.member" && row.state_key.as_deref() == Some(user.as_str()) {
                out.push(row);
                continue;
            }
            for group in [row.state_after, row.state_before] {
                if let std::collections::hash_map::Entry::Vacant(slot) = views.entry(group) {
                    slot.insert(self.group_view(group, user).await?);
                }
            }
            let after = &views[&row.state_after];
            let mut visibility = after.visibility;
            if row.event_type == "m.room.history_visibility" {
                visibility = visibility.max(views[&row.state_before].visibility);
            }
            let visible = match (visibility, after.membership.as_deref()) {
                (Visibility::WorldReadable, _) | (_, Some("join")) => true,
                (Visibility::Invited | Visibility::Shared, Some("invite")) => {
                    visibility == Visibility::Invited
                        || self.joined_now(&mut joined_now, &row.room_id, user).await?
                }
                (Visibility::Shared, _) => self.joined_now(&mut joined_now, &row.room_id, user).await?,
                _ => false,
            };
            if visible {
                out.push(row);
            }
        }
        Ok(out)
    }

    async fn joined_now(
        &self,
        memo: &mut HashMap<String, bool>,
        room_id: &str,
        user: &UserId,
    ) -> Result<bool, Error> {
        if let Some(v) = memo.get(room_id) {
            return Ok(*v);
        }
        let room = RoomId::parse(room_id).map_err(|e| Error::internal(e.to_string()))?;
        let joined = self.is_joined(&room, user).await?;
        memo.insert(room_id.to_owned(), joined);
        Ok(joined)
    }

    /// Whether `user` may see an event at all (for `/event`, `/context`).
    pub async fn can_see(&self, user: &UserId, row: &EventRow) -> Result<bool, Error> {
        Ok(!self.filter_visible(user, vec![row.clone()]).await?.is_empty())
    }
}
