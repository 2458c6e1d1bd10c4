//! Sync and pagination tokens.
//!
//! A token names a point in the global event stream: "everything at or below `pos` has been seen".
//! `ephemeral` counts non-persisted updates (typing) so that a sync woken only by them still gets
//! a fresh `next_batch`. The text form is `s{pos}_{ephemeral}`; the leading `s` is the format
//! version, so a richer token (per-stream positions) can later be introduced without breaking the
//! tokens clients already hold. A third part, `s{pos}_{ephemeral}_{to_device}`, appears when a
//! device's to-device messages were delivered only up to a lower position (a sync hands out at
//! most 100): the rest come next time.
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
    /// Up to where the device's to-device messages were delivered, when below `pos`.
    pub to_device: Option<u64>,
}

impl StreamToken {
    pub fn new(pos: u64) -> Self {
        Self { pos, ephemeral: 0, to_device: None }
    }

    /// Up to where to-device messages were delivered.
    pub fn to_device_pos(&self) -> u64 {
        self.to_device.unwrap_or(self.pos).min(self.pos)
    }
}

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.pos, self.ephemeral)?;
        match self.to_device {
            Some(to_device) if to_device < self.pos => write!(f, "_{to_device}"),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream token")]
pub struct InvalidToken;

impl FromStr for StreamToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix('s').ok_or(InvalidToken)?;
        let mut parts = rest.split('_');
        let number = |part: Option<&str>| -> Result<Option<u64>, InvalidToken> {
            match part {
                None => Ok(None),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map(Some).map_err(|_| InvalidToken)
                }
                Some(_) => Err(InvalidToken),
            }
        };
        let pos = number(parts.next())?.ok_or(InvalidToken)?;
        let ephemeral = number(parts.next())?.unwrap_or(0);
        let to_device = number(parts.next())?;
        if parts.next().is_some() || to_device.is_some_and(|t| t > pos) {
            return Err(InvalidToken);
        }
        Ok(Self { pos, ephemeral, to_device })
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
        let t = StreamToken { pos: 42, ephemeral: 3, to_device: None };
        assert_eq!(t.to_string(), "s42_3");
        assert_eq!("s42_3".parse::<StreamToken>().unwrap(), t);
        assert_eq!("s42".parse::<StreamToken>().unwrap(), StreamToken::new(42));
        let behind = StreamToken { pos: 42, ephemeral: 3, to_device: Some(40) };
        assert_eq!(behind.to_string(), "s42_3_40");
        assert_eq!("s42_3_40".parse::<StreamToken>().unwrap(), behind);
        assert_eq!(behind.to_device_pos(), 40);
        assert_eq!(t.to_device_pos(), 42);
    }

    #[test]
    fn page_tokens_are_sync_tokens_or_topological_points() {
        let topo = PageToken::Topo { depth: 5, pos: -3 };
        assert_eq!(topo.to_string(), "t5_-3");
        assert_eq!("t5_-3".parse::<PageToken>().unwrap(), topo);
        assert_eq!(
            "s9_1".parse::<PageToken>().unwrap(),
            PageToken::Stream(StreamToken { pos: 9, ephemeral: 1, to_device: None })
        );
        for bad in ["t", "t5", "t-1_2", "t+1_2", "t1_x", "tx_1", "t1_2_3", "x1_2"] {
            assert!(bad.parse::<PageToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "42", "sx", "s1_x", "t1", "s-1", "s5_1_6", "s5_1_2_3", "s5__1", "s+5"] {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
        }
    }
}
