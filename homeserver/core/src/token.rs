//! Sync and pagination tokens.
//!
//! A token names a point in the global event stream: "everything at or below `pos` has been seen".
//! `ephemeral` counts non-persisted updates (typing) so that a sync woken only by them still gets
//! a fresh `next_batch`. The text form is `s{pos}_{ephemeral}`; the leading `s` is the format
//! version, so a richer token (per-stream positions) can later be introduced without breaking the
//! tokens clients already hold.
//!
//! Pagination (`/messages`, `/context`) walks a room's DAG in topological order (depth, then
//! position), so its tokens, [`PageToken`], are either a sync token (everything that arrived by
//! then) or a point in that order, `t{depth}_{position}` (positions of backfilled history are
//! negative: `t5_-3`).

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamToken {
    pub pos: u64,
    pub ephemeral: u64,
}

impl StreamToken {
    pub fn new(pos: u64) -> Self {
        Self { pos, ephemeral: 0 }
    }
}

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.pos, self.ephemeral)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream token")]
pub struct InvalidToken;

impl FromStr for StreamToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix('s').ok_or(InvalidToken)?;
        let (pos, ephemeral) = match rest.split_once('_') {
            Some((p, e)) => (p, Some(e)),
            None => (rest, None),
        };
        let pos = pos.parse().map_err(|_| InvalidToken)?;
        let ephemeral = match ephemeral {
            Some(e) => e.parse().map_err(|_| InvalidToken)?,
            None => 0,
        };
        Ok(Self { pos, ephemeral })
    }
}

/// Where a page of a room's timeline starts or stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageToken {
    /// A sync token: every event that arrived at or before its position.
    Stream(StreamToken),
    /// A point in topological order: just after the event at `(depth, pos)`.
    Topo { depth: i64, pos: i64 },
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageToken::Stream(t) => t.fmt(f),
            PageToken::Topo { depth, pos } => write!(f, "t{depth}_{pos}"),
        }
    }
}

impl FromStr for PageToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix('t') else { return s.parse().map(PageToken::Stream) };
        let (depth, pos) = rest.split_once('_').ok_or(InvalidToken)?;
        // Digits only (an optional minus for the position): no `+`, no whitespace.
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(depth) || !digits(pos.strip_prefix('-').unwrap_or(pos)) {
            return Err(InvalidToken);
        }
        let depth = depth.parse().map_err(|_| InvalidToken)?;
        let pos = pos.parse().map_err(|_| InvalidToken)?;
        Ok(PageToken::Topo { depth, pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bare_form() {
        let t = StreamToken { pos: 42, ephemeral: 3 };
        assert_eq!(t.to_string(), "s42_3");
        assert_eq!("s42_3".parse::<StreamToken>().unwrap(), t);
        assert_eq!("s42".parse::<StreamToken>().unwrap(), StreamToken::new(42));
    }

    #[test]
    fn page_tokens_are_sync_tokens_or_topological_points() {
        let topo = PageToken::Topo { depth: 5, pos: -3 };
        assert_eq!(topo.to_string(), "t5_-3");
        assert_eq!("t5_-3".parse::<PageToken>().unwrap(), topo);
        assert_eq!(
            "s9_1".parse::<PageToken>().unwrap(),
            PageToken::Stream(StreamToken { pos: 9, ephemeral: 1 })
        );
        for bad in ["t", "t5", "t-1_2", "t+1_2", "t1_x", "tx_1", "t1_2_3", "x1_2"] {
            assert!(bad.parse::<PageToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "42", "sx", "s1_x", "t1", "s-1"] {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
        }
    }
}
