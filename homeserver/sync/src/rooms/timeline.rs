//! The timeline of a room's section: the newest events of a window in stream order, read
//! backwards in bounded batches, and the tokens and state groups at its edges.

use std::collections::HashSet;

use homeserver_core::{Error, streams::StreamPos, token::StreamToken};
use homeserver_storage::events::{Direction, EventRow};
use ruma::RoomId;

use crate::{context::SyncContext, filter::RoomEventFilter};

/// How many batches a timeline read may scan looking for events that pass the filter.
const TIMELINE_SCAN_BATCHES: usize = 8;
/// Timeline length when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: u64 = 10;

/// The timeline window `(after, up_to]` of a room: newest `limit` events, oldest first.
pub(crate) struct Timeline {
    pub rows: Vec<EventRow>,
    pub limited: bool,
    /// Rows history visibility hid that are shown as the room's current state.
    pub current_only: HashSet<String>,
}

impl Timeline {
    /// The oldest row the user may see by the visibility rule: the state before it is where the
    /// state section starts (the state before an older row kept only as current state is not
    /// the user's to see).
    fn first_visible(&self) -> Option<&EventRow> {
        self.rows.iter().find(|r| !self.current_only.contains(&r.event_id))
    }
}

/// Whose timeline it is decides what history visibility lets through besides what the rule
/// permits: a member also sees the room's current state (readable to them anyway); someone who
/// left (or only rejected an invite) sees nothing more.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    Member,
    Departed,
}

pub(crate) async fn timeline(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    (after, up_to): (StreamPos, StreamPos),
    filter: &RoomEventFilter,
    reader: Reader,
) -> Result<Timeline, Error> {
    let limit = filter.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).min(1000) as usize;
    // Read backwards in batches until `limit + 1` events pass the filter (one more than shown
    // tells whether the timeline is limited), the window is exhausted, or the scan budget is
    // spent — a filter that matches little must not turn one sync into a full-history scan.
    let batch = ((limit + 1) * 2).min(500) as i64;
    let mut collected = Vec::with_capacity(limit + 1);
    let mut current_only = HashSet::new();
    let mut cursor = up_to;
    let mut exhausted = false;
    for _ in 0..TIMELINE_SCAN_BATCHES {
        let rows = ctx
            .syncer
            .db
            .room_events(room_id.as_str(), cursor, Some(after), Direction::Backward, batch)
            .await
            .map_err(Error::from)?;
        exhausted = (rows.len() as i64) < batch;
        if let Some(last) = rows.last() {
            cursor = last.stream_pos.before();
        }
        // What the user may not see does not count towards the limit: older events they may
        // see fill the timeline instead (as Synapse does), within the scan budget.
        let passing: Vec<EventRow> =
            rows.into_iter().filter(|r| filter.allows_row(r) && !ctx.ignored.hides(r)).collect();
        let visible = match reader {
            Reader::Member => {
                let (rows, kept) =
                    ctx.syncer.rooms.filter_visible_or_current(ctx.user, room_id, passing).await?;
                current_only.extend(kept);
                rows
            }
            Reader::Departed => ctx.syncer.rooms.filter_visible(ctx.user, passing).await?,
        };
        collected.extend(visible);
        if collected.len() > limit || exhausted {
            break;
        }
    }
    let limited = collected.len() > limit || !exhausted;
    collected.truncate(limit);
    collected.reverse();
    current_only.retain(|id| collected.iter().any(|r| &r.event_id == id));
    Ok(Timeline { rows: collected, limited, current_only })
}

/// The room's current state group at the start of a timeline (just before its first event the
/// user may see by the visibility rule, or at `up_to` if there is none).
pub(crate) async fn start_group(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    timeline: &Timeline,
    up_to: StreamPos,
) -> Result<i64, Error> {
    let first = timeline.first_visible();
    let at = first.map_or(up_to, |first| first.stream_pos.before());
    let group = ctx.syncer.db.current_state_group_at(room_id.as_str(), at).await.map_err(Error::from)?;
    // A room joined over federation had no current state before its first live event (the join):
    // the state the client starts from is the state before that event.
    match first {
        Some(first) if group == 0 => Ok(first.state_before),
        _ => Ok(group),
    }
}

/// `prev_batch` of a timeline: just before its first event, or at `up_to` when it is empty.
pub(crate) fn prev_batch(tl: &Timeline, up_to: StreamPos) -> String {
    let pos = tl.rows.first().map(|r| r.stream_pos.before()).unwrap_or(up_to);
    StreamToken::new(pos.as_live()).to_string()
}
