//! Sync and pagination tokens.
//!
//! A token names a point in the global event stream: "everything at or below `pos` has been seen".
//! `ephemeral` counts non-persisted updates (typing) so that a sync woken only by them still gets
//! a fresh `next_batch`. The text form is `s{pos}_{ephemeral}`; the leading `s` is the format
//! version, so a richer token (per-stream positions) can later be introduced without breaking the
//! tokens clients already hold.

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
    fn garbage_is_rejected() {
        for bad in ["", "42", "sx", "s1_x", "t1", "s-1"] {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
        }
    }
}
