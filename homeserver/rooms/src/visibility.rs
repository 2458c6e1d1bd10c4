//! History visibility: which events, and which room state, a user may see.
//!
//! The rule lives in [`permits`], one pure function every check goes through. For an event it is
//! applied to the room's `m.room.history_visibility` and the user's membership in the state
//! *after* the event (so a user sees their own join). As in the spec and Synapse:
//! `world_readable` is visible to all; a joined member sees the event; `invited` also shows it to
//! invitees; `shared` shows it to anyone who is joined to the room now. For a visibility change
//! itself, the more permissive of the old and new setting applies, and users always see their own
//! membership events.
//!
//! Three views of the rule:
//! - [`Rooms::filter_visible`] keeps the events of a list a user may see (lookups per distinct
//!   state group, two state entries each, never the whole state);
//!   [`Rooms::filter_visible_or_current`] also keeps the room's current state, for sync.
//! - [`Rooms::may_read_state_at`] says whether a user may read the room's state as of a state
//!   group: as an ordinary event there would be seen, without the own-membership exception (a
//!   rejected invite must not show the member list).
//! - [`Rooms::visible_set`] turns the rule into the stream-position ranges of rooms the user
//!   may see, for aggregate queries (thread summaries, edits, search counts, jump to date) that
//!   must not count or pick what the user cannot see. Positions follow the room's order while
//!   rooms are linear (every event's state is the state after the one before it); the ranges
//!   carry the rule for ordinary events, which is what those queries read.

use std::collections::HashMap;

use homeserver_core::Error;
use homeserver_storage::{
    events::EventRow,
    visibility::{PositionRange, VisibilityChange, VisibleSet},
};
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

fn parse_visibility(value: Option<&str>) -> Visibility {
    match value {
        Some("world_readable") => Visibility::WorldReadable,
        Some("invited") => Visibility::Invited,
        Some("joined") => Visibility::Joined,
        _ => Visibility::Shared,
    }
}

/// The rule: may a user whose membership at the event is `membership` (and who is `joined_now`
/// or not) see an ordinary event under `visibility`?
fn permits(visibility: Visibility, membership: Option<&str>, joined_now: bool) -> bool {
    match (visibility, membership) {
        (Visibility::WorldReadable, _) | (_, Some("join")) => true,
        (Visibility::Invited, Some("invite")) => true,
        (Visibility::Shared, _) => joined_now,
        _ => false,
    }
}

/// The rule for another server (what federation may hand it): it sees an event if the room's
/// history is `world_readable` or `shared`, or if one of its users is joined at the event (or,
/// under `invited`, invited). `memberships` are those of the server's users in the state after
/// the event. As in Synapse, what it may not see goes to it redacted, not left out, so the DAG
/// stays whole.
fn permits_server<'a>(visibility: Visibility, mut memberships: impl Iterator<Item = &'a str>) -> bool {
    match visibility {
        Visibility::WorldReadable | Visibility::Shared => true,
        Visibility::Invited => memberships.any(|m| m == "join" || m == "invite"),
        Visibility::Joined => memberships.any(|m| m == "join"),
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
            visibility = parse_visibility(pdu.content_str("history_visibility").as_deref());
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
            // "Joined now" only matters for `shared`; it costs a lookup, so only then.
            let now = visibility == Visibility::Shared
                && after.membership.as_deref() != Some("join")
                && self.joined_now(&mut joined_now, &row.room_id, user).await?;
            if permits(visibility, after.membership.as_deref(), now) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// [`Rooms::filter_visible`] for a sync timeline of `room_id`: what the rule hides is kept
    /// anyway when it is the room's current state. A member may read that state at any time,
    /// and a client that was away when it changed (a join under `joined` history while the
    /// user had left, say) learns of it only from the timeline, as with Synapse. Also returns
    /// the ids kept only for that reason: the state before them is not the user's to see.
    pub async fn filter_visible_or_current(
        &self,
        user: &UserId,
        room_id: &RoomId,
        rows: Vec<EventRow>,
    ) -> Result<(Vec<EventRow>, std::collections::HashSet<String>), Error> {
        let visible: std::collections::HashSet<String> =
            self.filter_visible(user, rows.clone()).await?.into_iter().map(|r| r.event_id).collect();
        let hidden_state: Vec<(&str, &str, &str)> = rows
            .iter()
            .filter(|r| !visible.contains(&r.event_id))
            .filter_map(|r| Some((r.event_type.as_str(), r.state_key.as_deref()?, r.event_id.as_str())))
            .collect();
        let current = if hidden_state.is_empty() {
            Default::default()
        } else {
            self.db().in_current_state(room_id.as_str(), &hidden_state).await.map_err(Error::from)?
        };
        let kept =
            rows.into_iter().filter(|r| visible.contains(&r.event_id) || current.contains(&r.event_id));
        Ok((kept.collect(), current))
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
    /// Whether another server may see an event unredacted ([`permits_server`]): the rule
    /// applied to the history visibility and its users' memberships in the state after the
    /// event (the more permissive of old and new for a visibility change).
    pub async fn server_may_see(&self, server: &ruma::ServerName, row: &EventRow) -> Result<bool, Error> {
        let mut visibility = Visibility::Joined;
        for group in [row.state_after, row.state_before] {
            let hv = match self.state_entry(group, "m.room.history_visibility", "").await? {
                Some(id) => {
                    // A visibility event that cannot be read shows nothing (fail closed).
                    let Ok(id) = EventId::parse(id) else { continue };
                    match self.cache().get(&id).await? {
                        Some(pdu) => pdu.content_str("history_visibility"),
                        None => continue,
                    }
                }
                None => None,
            };
            visibility = visibility.max(parse_visibility(hv.as_deref()));
        }
        if visibility >= Visibility::Shared {
            return Ok(true);
        }
        let state = self.state_at_group(row.state_after).await?;
        let member_ids: Vec<ruma::OwnedEventId> = state
            .iter()
            .filter(|(ty, key, _)| {
                ty == "m.room.member" && UserId::parse(key.as_str()).is_ok_and(|u| u.server_name() == server)
            })
            .filter_map(|(_, _, id)| EventId::parse(id).ok())
            .collect();
        let members = self.cache().get_many(&member_ids).await?;
        let memberships: Vec<String> = members.values().filter_map(|p| p.content_str("membership")).collect();
        Ok(permits_server(visibility, memberships.iter().map(String::as_str)))
    }

    pub async fn can_see(&self, user: &UserId, row: &EventRow) -> Result<bool, Error> {
        Ok(!self.filter_visible(user, vec![row.clone()]).await?.is_empty())
    }

    /// Whether `user` may read the state of `room_id` as of state group `group`: only if an
    /// ordinary event with that state would be visible to them.
    pub async fn may_read_state_at(
        &self,
        user: &UserId,
        room_id: &RoomId,
        group: i64,
    ) -> Result<bool, Error> {
        let view = self.group_view(group, user).await?;
        let now = view.visibility == Visibility::Shared && self.is_joined(room_id, user).await?;
        Ok(permits(view.visibility, view.membership.as_deref(), now))
    }

    /// Whether `user` may read the room's state as of event `row`: the state after an event
    /// they may see as an ordinary event, or — for their own membership event, which they always
    /// see — if they could see the room just before it (a member who left reads the room as it
    /// was when they left; someone who only rejected an invite does not).
    pub async fn may_read_state_around(
        &self,
        user: &UserId,
        room_id: &RoomId,
        row: &EventRow,
    ) -> Result<bool, Error> {
        if self.may_read_state_at(user, room_id, row.state_after).await? {
            return Ok(true);
        }
        let own_membership =
            row.event_type == "m.room.member" && row.state_key.as_deref() == Some(user.as_str());
        Ok(own_membership && self.may_read_state_at(user, room_id, row.state_before).await?)
    }

    /// What `user` may see of `rooms`, as a filter for storage queries: the rule evaluated
    /// between the events that change its inputs (the user's membership events and the rooms'
    /// history-visibility events). Two queries however many rooms.
    pub async fn visible_set(
        &self,
        user: &UserId,
        rooms: impl IntoIterator<Item = &str>,
    ) -> Result<VisibleSet, Error> {
        let mut rooms: Vec<String> = rooms.into_iter().map(str::to_owned).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut changes = self.db().visibility_changes(&rooms, user.as_str()).await.map_err(Error::from)?;
        let joined = self.db().joined_among(&rooms, user.as_str()).await.map_err(Error::from)?;
        let mut set = VisibleSet::default();
        for room in rooms {
            let ranges = ranges_of(&changes.remove(&room).unwrap_or_default(), joined.contains(&room));
            if let Some(ranges) = ranges {
                set.ranges.extend(ranges.into_iter().map(|(from, to)| PositionRange {
                    room_id: room.clone(),
                    from,
                    to,
                }));
                set.restricted.push(room);
            }
        }
        Ok(set)
    }
}

/// The visible ranges of one room given its visibility changes, or `None` if all of it is.
fn ranges_of(changes: &[VisibilityChange], joined_now: bool) -> Option<Vec<(i64, i64)>> {
    let mut visibility = Visibility::Shared;
    let mut membership: Option<&str> = None;
    // Segments: each change's own position (the rule's exceptions: users see their own
    // membership events, and a visibility change under the more permissive of its old and new
    // setting), then from after it to the next change, with the state after the change.
    let mut segments: Vec<(i64, bool)> = vec![(i64::MIN, permits(visibility, None, joined_now))];
    for change in changes {
        let field = |name: &str| change.content.get(name).and_then(|v| v.as_str());
        let at_change = match change.event_type.as_str() {
            "m.room.history_visibility" => {
                let before = visibility;
                visibility = parse_visibility(field("history_visibility"));
                permits(visibility.max(before), membership, joined_now)
            }
            _ => {
                membership = field("membership");
                true
            }
        };
        segments.push((change.stream_pos, at_change));
        segments.push((change.stream_pos.saturating_add(1), permits(visibility, membership, joined_now)));
    }
    if segments.iter().all(|(_, visible)| *visible) {
        return None;
    }
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for (i, (from, visible)) in segments.iter().enumerate() {
        let to = segments.get(i + 1).map(|(next, _)| next - 1).unwrap_or(i64::MAX);
        if !visible || to < *from {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.1.saturating_add(1) == *from => last.1 = to,
            _ => ranges.push((*from, to)),
        }
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        use Visibility::*;
        assert!(permits(WorldReadable, None, false));
        assert!(permits(Joined, Some("join"), false));
        assert!(!permits(Joined, Some("invite"), true));
        assert!(permits(Invited, Some("invite"), false));
        assert!(!permits(Invited, Some("leave"), true));
        assert!(permits(Shared, None, true));
        assert!(permits(Shared, Some("leave"), true));
        assert!(!permits(Shared, Some("leave"), false));
        assert!(!permits(Shared, Some("invite"), false));
    }

    #[test]
    fn the_rule_for_servers() {
        use Visibility::*;
        assert!(permits_server(Shared, std::iter::empty()), "shared history is the room's, for any server");
        assert!(permits_server(WorldReadable, std::iter::empty()));
        assert!(!permits_server(Joined, ["leave", "invite"].into_iter()));
        assert!(permits_server(Joined, ["leave", "join"].into_iter()), "one joined user suffices");
        assert!(permits_server(Invited, ["invite"].into_iter()));
        assert!(!permits_server(Invited, ["ban", "leave"].into_iter()));
    }

    fn change(pos: i64, kind: &str, value: &str) -> VisibilityChange {
        let content = match kind {
            "m.room.history_visibility" => serde_json::json!({ "history_visibility": value }),
            _ => serde_json::json!({ "membership": value }),
        };
        VisibilityChange { stream_pos: pos, event_type: kind.to_owned(), content }
    }

    #[test]
    fn ranges_follow_membership_and_visibility_changes() {
        let (hv, member) = ("m.room.history_visibility", "m.room.member");
        // Joined, shared history, still there: everything.
        assert_eq!(ranges_of(&[change(3, member, "join")], true), None);
        // Left at 10 (shared, not joined now): up to and including the leave, not after.
        let left = [change(3, member, "join"), change(10, member, "leave")];
        assert_eq!(ranges_of(&left, false), Some(vec![(3, 10)]));
        // `joined` history and joined late at 20: the change to `joined` itself (visible under
        // the old `shared`), then from the join.
        let late = [change(2, hv, "joined"), change(20, member, "join")];
        assert_eq!(ranges_of(&late, true), Some(vec![(i64::MIN, 2), (20, i64::MAX)]));
        // Left and came back: the gap stays hidden under `joined`, but for the user's own events.
        let gap = [
            change(2, hv, "joined"),
            change(5, member, "join"),
            change(8, member, "leave"),
            change(12, member, "join"),
        ];
        assert_eq!(ranges_of(&gap, true), Some(vec![(i64::MIN, 2), (5, 8), (12, i64::MAX)]));
        // Invited under `joined`: the invite itself is theirs to see, nothing else until the join.
        let invited = [change(2, hv, "joined"), change(7, member, "invite"), change(9, member, "join")];
        assert_eq!(ranges_of(&invited, true), Some(vec![(i64::MIN, 2), (7, 7), (9, i64::MAX)]));
        // Never joined, not world readable: nothing at all.
        assert_eq!(ranges_of(&[change(2, hv, "shared")], false), Some(vec![]));
        assert_eq!(ranges_of(&[change(2, hv, "world_readable")], false), Some(vec![(2, i64::MAX)]));
    }
}
