//! Why the room model refuses an event, in its own terms rather than a client's errcode.
//!
//! The auth rules and the server's own rules for local events produce a [`Rejection`]. The remote
//! path turns it into a stored outcome (a rejected or soft-failed event, see
//! [`crate::remote::Verdict`]); only a local event refused on its way in becomes an error for a
//! client, through the one conversion below, which is where `M_FORBIDDEN` (or `M_BAD_JSON` for an
//! event the rules cannot even read) is decided.

use homeserver_core::{Error, ErrorKind};
use ruma::OwnedEventId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The auth rules cannot read the event (a member event without a valid membership, say).
    #[error("invalid event: {0}")]
    Malformed(String),
    /// The event fails the auth rules (against its auth events or the state it is checked
    /// against); the text names the rule.
    #[error("{0}")]
    Unauthorized(String),
    /// The event passes the auth rules at its place in the DAG but not against the room's
    /// current state.
    #[error("not allowed by the room's current state: {0}")]
    SoftFailed(String),
    /// A rule of this server for its own users' events refuses it (membership only through the
    /// membership operations, redaction authority).
    #[error("{0}")]
    LocalRule(String),
    /// These prev or auth events must be known first.
    #[error("{} events must be known first", .0.len())]
    NeedsEvents(Vec<OwnedEventId>),
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        let kind = match &rejection {
            Rejection::Malformed(_) => ErrorKind::BadJson,
            Rejection::Unauthorized(_) | Rejection::SoftFailed(_) | Rejection::LocalRule(_) => {
                ErrorKind::Forbidden
            }
            // A local event is built on what the room has: needing events is our bug.
            Rejection::NeedsEvents(_) => return Error::internal(rejection.to_string()),
        };
        Error::new(kind, rejection.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_client_errcodes_in_one_place() {
        let forbidden = Error::from(Rejection::Unauthorized("sender not in room".into()));
        assert_eq!(forbidden.kind, ErrorKind::Forbidden);
        assert_eq!(forbidden.message, "sender not in room");
        assert_eq!(Error::from(Rejection::SoftFailed("banned".into())).kind, ErrorKind::Forbidden);
        assert_eq!(Error::from(Rejection::LocalRule("no".into())).kind, ErrorKind::Forbidden);
        assert_eq!(Error::from(Rejection::Malformed("bad membership".into())).kind, ErrorKind::BadJson);
        assert_eq!(Error::from(Rejection::NeedsEvents(vec![])).kind, ErrorKind::Internal);
    }

    #[test]
    fn verdicts_say_why_in_the_room_model_terms() {
        use crate::remote::Verdict;
        let id: OwnedEventId = "$a".try_into().unwrap();
        assert_eq!(Verdict::Accepted(id.clone()).rejection(), None);
        assert_eq!(Verdict::Duplicate(id.clone()).rejection(), None);
        assert!(matches!(Verdict::SoftFailed(id.clone()).rejection(), Some(Rejection::SoftFailed(_))));
        assert_eq!(
            Verdict::Rejected(id.clone(), "no".into()).rejection(),
            Some(Rejection::Unauthorized("no".into()))
        );
        assert_eq!(
            Verdict::Missing(id.clone(), vec![id.clone()]).rejection(),
            Some(Rejection::NeedsEvents(vec![id]))
        );
        assert_eq!(Verdict::Dropped("bad".into()).rejection(), Some(Rejection::Malformed("bad".into())));
    }
}
