//! Room versions Lattice creates and joins: all of 1 to 12.
//!
//! ruma implements the auth rules of every version and state resolution v2; state resolution
//! v1, which only version 1 uses, is [`crate::resolve_v1`]. Versions 1 and 2 also name their
//! events differently ([`crate::event_format`]). Older versions matter because public rooms on
//! the network still run them (servers created v1 rooms until 2019 and v4 and v5 for years
//! after). The rules are data (`RoomVersionRules`), so the room model does not `match` on
//! versions.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

/// Versions offered for new rooms and accepted from clients.
pub const SUPPORTED_VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// True if Lattice can create and serve rooms of this version.
pub fn is_supported(version: &RoomVersionId) -> bool {
    SUPPORTED_VERSIONS.contains(version)
}

/// The rules of a supported version.
pub fn rules(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if is_supported(version) { version.rules() } else { None }
}
