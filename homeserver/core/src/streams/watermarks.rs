//! Watermarks: the newest stream position written for each room or user, per kind of data, so a
//! sync can tell without a query that nothing of a kind changed since its token.
//!
//! The invariant that makes skipping a query safe: a writer advances the watermark *after* its
//! rows are committed and *before* it completes its [`Reservation`](super::Reservation). A reader
//! that saw position `p` as visible therefore also sees every watermark up to `p`, and "the
//! watermark is at or below `since`" proves that no row of that kind exists in `(since, p]`.
//!
//! Keys never written since start-up sit at the floor, the position visible at start-up: they
//! may have rows at or below it, so a token older than the floor always asks the database.
//! Watermarks live in the process, as the wake-up channels do; a second process writing the same
//! database must reach this one through the same channel that wakes its syncs.

use std::{collections::HashMap, sync::Mutex};

/// Which kind of data a watermark follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    /// Room events, keyed by room ID.
    RoomEvents,
    /// Read receipts in a room, keyed by room ID.
    RoomReceipts,
    /// One user's read receipts in one room, keyed by [`user_in_room`].
    UserReceipts,
    /// Account data (global and per room), keyed by user ID.
    AccountData,
    /// Membership changes in a room's current state, keyed by room ID (device lists follow
    /// who shares a room, not every message).
    Memberships,
    /// Device-list changes of any user, under the key `""` (a sync asks whether any happened).
    DeviceLists,
}

/// The key of a [`Mark::UserReceipts`] watermark.
pub fn user_in_room(user_id: &str, room_id: &str) -> String {
    format!("{room_id}\u{0}{user_id}")
}

pub struct Watermarks {
    floor: u64,
    latest: Mutex<HashMap<(Mark, String), u64>>,
}

impl Watermarks {
    pub fn new(floor: u64) -> Self {
        Self { floor, latest: Mutex::new(HashMap::new()) }
    }

    /// True when the watermarks answer exactly for a token at `since`: it is not older than
    /// the floor.
    pub fn cover(&self, since: u64) -> bool {
        since >= self.floor
    }

    /// Records that `key` has data of `mark`'s kind at `pos` (committed, not yet visible).
    pub fn advance(&self, mark: Mark, key: &str, pos: u64) {
        let mut latest = self.latest.lock().expect("watermarks poisoned");
        let entry = latest.entry((mark, key.to_owned())).or_insert(pos);
        *entry = (*entry).max(pos);
    }

    /// False only when `key` certainly has no data of this kind after `since` (among the
    /// positions visible when the caller read the stream's current position).
    pub fn changed_after(&self, mark: Mark, key: &str, since: u64) -> bool {
        let latest = self.latest.lock().expect("watermarks poisoned");
        // A `(Mark, String)` key cannot be looked up by `(Mark, &str)`: one small allocation.
        latest.get(&(mark, key.to_owned())).copied().unwrap_or(self.floor) > since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_sit_at_the_floor_and_writes_raise_them() {
        let marks = Watermarks::new(10);
        assert!(marks.changed_after(Mark::AccountData, "@a:x", 9), "older tokens must ask the database");
        assert!(!marks.changed_after(Mark::AccountData, "@a:x", 10));
        marks.advance(Mark::AccountData, "@a:x", 14);
        marks.advance(Mark::AccountData, "@a:x", 12);
        assert!(marks.changed_after(Mark::AccountData, "@a:x", 13));
        assert!(!marks.changed_after(Mark::AccountData, "@a:x", 14));
        assert!(!marks.changed_after(Mark::RoomReceipts, "@a:x", 10), "kinds are apart");
        assert!(marks.cover(10) && !marks.cover(9));
    }
}
