//! Redaction authority: whether a redaction event takes effect.
//!
//! From room version 3 the auth rules accept any redaction a member may send and leave it to the
//! server to decide whether it redacts (event ids no longer name a server to compare). The rule,
//! as the spec's room versions describe it: the redaction's sender has the room's `redact` power
//! level, or sent the original event. For events from other servers "sent the original" is
//! judged by server (the original sender's server vouches for its own users); for our own users
//! it is judged by user, so one local user cannot redact another's messages without the power.
//!
//! The room pipeline ([`crate::input`]) asks this module for every `m.room.redaction` it accepts,
//! whichever endpoint sent it (`/redact`, `/send`, the state endpoint, `createRoom`'s
//! `initial_state`): only a redaction that takes effect is persisted as redacting its target.

use ruma::events::TimelineEventType;

use crate::{pdu::Pdu, power::PowerLevels};

/// Where a redaction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent by one of our users through the client API.
    Local,
    /// Received from another server.
    Remote,
}

/// The event a redaction names, for events that are redactions at all.
pub fn target(pdu: &Pdu) -> Option<&ruma::EventId> {
    (pdu.kind == TimelineEventType::RoomRedaction).then_some(pdu.redacts.as_deref()).flatten()
}

/// Whether `redaction` redacts `original`, judged with the power levels in force when the
/// redaction was accepted.
pub fn takes_effect(redaction: &Pdu, original: &Pdu, levels: &PowerLevels, origin: Origin) -> bool {
    if redaction.room_id != original.room_id {
        return false;
    }
    if levels.user_level(&redaction.sender) >= levels.redact() {
        return true;
    }
    match origin {
        Origin::Local => redaction.sender == original.sender,
        Origin::Remote => redaction.sender.server_name() == original.sender.server_name(),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::Arc};

    use ruma::{EventId, RoomId};
    use serde_json::json;

    use super::*;

    fn pdu(id: &str, room: &str, sender: &str, kind: &str, redacts: Option<&str>) -> Pdu {
        let mut value = json!({
            "room_id": room, "sender": sender, "type": kind, "content": {},
            "origin_server_ts": 1, "depth": 1, "prev_events": [], "auth_events": [],
        });
        if let Some(target) = redacts {
            value["content"]["redacts"] = json!(target);
        }
        Pdu::parse(EventId::parse(id).unwrap(), None, Arc::from(value.to_string())).unwrap()
    }

    fn levels(users: serde_json::Value) -> PowerLevels {
        PowerLevels::new(Some(json!({ "users": users, "redact": 50 })), None, HashSet::new())
    }

    #[test]
    fn power_or_own_event() {
        let room = "!r:a";
        let original = pdu("$orig", room, "@alice:a", "m.room.message", None);
        let by_bob = pdu("$r1", room, "@bob:a", "m.room.redaction", Some("$orig"));
        let by_alice = pdu("$r2", room, "@alice:a", "m.room.redaction", Some("$orig"));
        let plain = levels(json!({}));
        assert_eq!(target(&by_bob).map(|e| e.as_str()), Some("$orig"));
        assert!(!takes_effect(&by_bob, &original, &plain, Origin::Local));
        assert!(takes_effect(&by_alice, &original, &plain, Origin::Local));
        assert!(takes_effect(&by_bob, &original, &levels(json!({ "@bob:a": 50 })), Origin::Local));
        // A remote server vouches for its own users, but not for another server's.
        assert!(takes_effect(&by_bob, &original, &plain, Origin::Remote));
        let by_mallory = pdu("$r3", room, "@mallory:b", "m.room.redaction", Some("$orig"));
        assert!(!takes_effect(&by_mallory, &original, &plain, Origin::Remote));
        // Never across rooms, whatever the power.
        let elsewhere = pdu("$r4", "!other:a", "@alice:a", "m.room.redaction", Some("$orig"));
        assert!(!takes_effect(&elsewhere, &original, &levels(json!({ "@alice:a": 100 })), Origin::Local));
        let _ = RoomId::parse(room).unwrap();
    }

    #[test]
    fn only_redaction_events_have_targets() {
        let msg = pdu("$m", "!r:a", "@alice:a", "m.room.message", Some("$orig"));
        assert!(target(&msg).is_none());
    }
}
