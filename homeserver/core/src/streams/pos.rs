//! [`StreamPos`]: a position in the global stream as rows carry it.

use std::fmt;

/// A stored stream position. Positive positions are the live stream the allocator hands out
/// (sync tokens count them); events outside it — outliers, backfilled history, soft-failed and
/// rejected events — carry negative ones, and 0 means "before anything". A newtype, so a position
/// cannot be mixed up with a depth, a state group or a count, and the `u64` of the allocator
/// meets the `i64` of the database in one place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamPos(i64);

impl StreamPos {
    pub const ZERO: Self = Self(0);

    /// A position as stored.
    pub const fn new(pos: i64) -> Self {
        Self(pos)
    }

    /// A live position from the allocator (or a sync token).
    pub fn live(pos: u64) -> Self {
        Self(i64::try_from(pos).unwrap_or(i64::MAX))
    }

    /// The value stored in the database.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The allocator's view of a live position; 0 for positions outside the live stream.
    pub fn as_live(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0)
    }

    /// Whether the position belongs to the live stream (sync delivers it).
    pub const fn is_live(self) -> bool {
        self.0 > 0
    }

    /// The position just before this one: "everything before the event at `self`".
    pub const fn before(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl fmt::Display for StreamPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_outside_positions() {
        assert!(StreamPos::live(5).is_live());
        assert!(!StreamPos::new(-3).is_live() && !StreamPos::ZERO.is_live());
        assert_eq!(StreamPos::new(-3).as_live(), 0);
        assert_eq!(StreamPos::live(u64::MAX).get(), i64::MAX);
        assert_eq!(StreamPos::new(7).before(), StreamPos::new(6));
        assert!(StreamPos::new(-2) < StreamPos::ZERO);
    }
}
