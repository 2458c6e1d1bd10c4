//! Pagination tokens for room timelines (`/messages`, `/context`, search context): between the
//! text clients hold ([`PageToken`]) and the bounds storage reads pages by ([`Bound`]).
//!
//! Pages walk the room in topological order, so the tokens they hand out are points in that
//! order (`t{depth}_{pos}`); a sync token (`s…`, a `prev_batch`) is accepted wherever a page
//! starts and means "everything that had arrived by then".

use homeserver_core::{
    Error,
    streams::StreamPos,
    token::{PageToken, StreamToken},
};
use homeserver_storage::events::{Bound, EventRow, TopoPos};

/// The bound a client's token names; `M_INVALID_PARAM` for anything else.
pub(crate) fn parse(token: &str) -> Result<Bound, Error> {
    match token.parse::<PageToken>() {
        Ok(PageToken::Stream(t)) => i64::try_from(t.pos)
            .map(|pos| Bound::Stream(StreamPos::new(pos)))
            .map_err(|_| Error::invalid_param("invalid pagination token")),
        Ok(PageToken::Topo { depth, pos }) => {
            Ok(Bound::Topo(TopoPos { depth, stream_pos: StreamPos::new(pos) }))
        }
        Err(_) => Err(Error::invalid_param("invalid pagination token")),
    }
}

/// The token naming a bound.
pub(crate) fn token(bound: Bound) -> String {
    match bound {
        Bound::Stream(pos) if pos >= StreamPos::ZERO => StreamToken::new(pos.as_live()).to_string(),
        // Only "from the very beginning" is a negative stream bound.
        Bound::Stream(_) => token(Bound::Topo(BEGINNING)),
        Bound::Topo(t) => PageToken::Topo { depth: t.depth, pos: t.stream_pos.get() }.to_string(),
    }
}

/// Before every event of a room, for pages that go forward from the start.
pub(crate) const BEGINNING: TopoPos = TopoPos { depth: 0, stream_pos: StreamPos::new(i64::MIN) };

/// The token just before an event (where a backward page that ended with it continues).
pub(crate) fn before(row: &EventRow) -> String {
    token(Bound::Topo(row.topo_before()))
}

/// The token just after an event (where a forward page that ended with it continues).
pub(crate) fn after(row: &EventRow) -> String {
    token(Bound::Topo(row.topo()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_bounds() {
        for bound in [
            Bound::Stream(StreamPos::new(42)),
            Bound::Topo(TopoPos { depth: 7, stream_pos: StreamPos::new(-3) }),
            Bound::Topo(BEGINNING),
        ] {
            assert_eq!(parse(&token(bound)).unwrap(), bound);
        }
        assert_eq!(token(Bound::Stream(StreamPos::new(i64::MIN))), token(Bound::Topo(BEGINNING)));
        assert!(parse("s18446744073709551615").is_err(), "beyond any position");
        assert!(parse("garbage").is_err());
    }
}
