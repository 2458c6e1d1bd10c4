//! The state part of a room's section: the full state for rooms new to the client, otherwise
//! the difference between state groups, reduced by lazy-loading of members.

use std::collections::HashMap;

use homeserver_core::{Error, streams::StreamPos};
use homeserver_storage::events::EventRow;
use ruma::RoomId;

use crate::{context::SyncContext, rooms::timeline::Timeline};

/// The state section: full state at `group` (fresh rooms), or the state the client lacks: what
/// changed between the current state at `since` and at the timeline's start, plus changes
/// within the timeline's range that none of its events carries (a merge of forks can bring an
/// older state event back). Key removals cannot be expressed in a sync response and are not
/// sent. Lazy loading keeps only the memberships of timeline senders, except that a gappy
/// incremental sync keeps every membership change of the gap too (as Synapse does): the client
/// cannot page back over a gap to learn who joined or left in it.
pub(crate) async fn state_section(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    timeline: &Timeline,
    start_group: i64,
    fresh: bool,
    (since, up_to): (StreamPos, StreamPos),
) -> Result<Vec<EventRow>, Error> {
    let db = &ctx.syncer.db;
    let state_filter = &ctx.filter.room.state;
    let mut rows = if fresh {
        let entries = ctx.syncer.rooms.state_at_group(start_group).await?;
        let ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
        db.events(&ids).await.map_err(Error::from)?
    } else {
        let since_group = db.current_state_group_at(room_id.as_str(), since).await.map_err(Error::from)?;
        // One event per key: what the client lacks at the timeline's start, replaced by what a
        // merge within the timeline's range set the key to at its end.
        let mut by_key: HashMap<(String, String), String> = HashMap::new();
        for (ty, key, id) in ctx.syncer.rooms.state_diff(since_group, start_group).await? {
            if let Some(id) = id {
                by_key.insert((ty, key), id);
            }
        }
        let end_group = db.current_state_group_at(room_id.as_str(), up_to).await.map_err(Error::from)?;
        if end_group != start_group {
            for (ty, key, id) in ctx.syncer.rooms.state_diff(start_group, end_group).await? {
                // A key the timeline's own events end on needs nothing more.
                let last_in_timeline = timeline
                    .rows
                    .iter()
                    .rev()
                    .find(|r| r.event_type == ty && r.state_key.as_deref() == Some(key.as_str()))
                    .map(|r| r.event_id.clone());
                match id {
                    Some(id) if last_in_timeline.as_deref() != Some(id.as_str()) => {
                        by_key.insert((ty, key), id);
                    }
                    _ => {}
                }
            }
        }
        let ids: Vec<String> = by_key.into_values().collect();
        db.events(&ids).await.map_err(Error::from)?
    };
    if state_filter.lazy_load_members {
        let lazy = &ctx.syncer.live.lazy_members;
        let (user, device) = (ctx.user.as_str(), ctx.device.as_str());
        let mut wanted: Vec<&str> = timeline.rows.iter().map(|r| r.sender.as_str()).collect();
        if fresh {
            wanted.push(user);
        }
        let in_timeline: Vec<&str> = timeline
            .rows
            .iter()
            .filter(|r| r.event_type == "m.room.member")
            .filter_map(|r| r.state_key.as_deref())
            .collect();
        let keep_gap_changes = !fresh && timeline.limited;
        rows.retain(|r| {
            r.event_type != "m.room.member"
                || keep_gap_changes
                || r.state_key.as_deref().is_some_and(|k| wanted.contains(&k) && !in_timeline.contains(&k))
        });
        if !fresh && !timeline.rows.is_empty() {
            // Members of timeline senders the client may not know yet.
            let mut missing: Vec<String> = Vec::new();
            for sender in &wanted {
                if in_timeline.contains(sender)
                    || rows.iter().any(|r| r.state_key.as_deref() == Some(*sender))
                {
                    continue;
                }
                if let Some(id) = ctx.syncer.rooms.state_entry(start_group, "m.room.member", sender).await? {
                    missing.push(id);
                }
            }
            rows.extend(db.events(&missing).await.map_err(Error::from)?);
        }
        if !state_filter.include_redundant_members {
            rows.retain(|r| {
                r.event_type != "m.room.member" || !lazy.was_sent(user, device, room_id.as_str(), &r.event_id)
            });
        }
        let sent = rows
            .iter()
            .chain(timeline.rows.iter())
            .filter(|r| r.event_type == "m.room.member")
            .map(|r| r.event_id.clone());
        lazy.mark_sent(user, device, room_id.as_str(), sent.collect::<Vec<_>>());
    }
    rows.retain(|r| state_filter.allows_row(r));
    rows.sort_by_key(|r| r.stream_pos);
    Ok(rows)
}
