//! Events from other servers: what a caller hands the room model and what becomes of each.
//!
//! The room actor takes remote events next to local ones (`Submission::Remote`), runs the
//! spec's checks in order ([`check`] for format, signatures and hashes; then the auth rules
//! against the event's own auth events, against the state before it, and against the room's
//! current state) and answers with one [`Verdict`] per event. It never fetches anything: events
//! it lacks are reported ([`Verdict::Missing`]) for the caller to fetch and submit first.

pub mod check;

use ruma::OwnedEventId;

pub use check::{KeyRing, LayeredKeys, ServerKeys};

use crate::rejection::Rejection;

/// How a remote event enters the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A new event of the room (a federation transaction, a missing event fetched to fill a
    /// gap): it takes part in the live timeline, the forward extremities and current state.
    Live,
    /// Older history fetched on demand: it sorts by depth before what the room already shows
    /// and never appears as new in a sync.
    Backfill,
    /// Known only as the auth or state of other events: stored, checked against its own auth
    /// events, with no place in the timeline until it arrives again as `Live` or `Backfill`.
    Outlier,
}

/// A PDU as received, and what the caller knows about the state before it.
#[derive(Debug, Clone)]
pub struct IncomingPdu {
    /// The PDU JSON exactly as received.
    pub json: String,
    /// The state before the event, by event id, when its prev events are not all known (the
    /// origin's answer to `/state_ids`; the events must be stored, as outliers if need be).
    pub state_before: Option<Vec<OwnedEventId>>,
}

impl IncomingPdu {
    pub fn new(json: impl Into<String>) -> Self {
        Self { json: json.into(), state_before: None }
    }
}

/// What became of a remote event. The room model's own vocabulary: the client API never sees
/// these; a federation endpoint maps them to its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored in its place: in the timeline (live or backfilled) or as an outlier.
    Accepted(OwnedEventId),
    /// Passed the auth rules at its place in the DAG but not against the room's current state:
    /// stored, never shown to clients, never a forward extremity.
    SoftFailed(OwnedEventId),
    /// Failed the auth rules against its auth events or the state before it: stored as rejected
    /// (with the reason), never part of any state.
    Rejected(OwnedEventId, String),
    /// Already stored: nothing changed.
    Duplicate(OwnedEventId),
    /// Not a valid event of this room (format, size, signatures): not stored.
    Dropped(String),
    /// These prev or auth events must be stored first (or, for prev events, the state before
    /// the event given); nothing was stored.
    Missing(OwnedEventId, Vec<OwnedEventId>),
}

impl Verdict {
    /// Why the event did not enter the room as a live event, in the room model's terms; `None`
    /// when it did or already had.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Verdict::Accepted(_) | Verdict::Duplicate(_) => None,
            Verdict::SoftFailed(_) => {
                Some(Rejection::SoftFailed("the room's current state forbids it".into()))
            }
            Verdict::Rejected(_, reason) => Some(Rejection::Unauthorized(reason.clone())),
            Verdict::Dropped(reason) => Some(Rejection::Malformed(reason.clone())),
            Verdict::Missing(_, ids) => Some(Rejection::NeedsEvents(ids.clone())),
        }
    }

    /// The event's id, when it could be computed.
    pub fn event_id(&self) -> Option<&OwnedEventId> {
        match self {
            Verdict::Accepted(id)
            | Verdict::SoftFailed(id)
            | Verdict::Rejected(id, _)
            | Verdict::Duplicate(id)
            | Verdict::Missing(id, _) => Some(id),
            Verdict::Dropped(_) => None,
        }
    }
}
