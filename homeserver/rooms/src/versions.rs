//! Room versions Lattice creates and joins.
//!
//! ruma implements auth rules and state resolution v2 for every version it knows, but state
//! resolution v1 (rooms 1–5) is not implemented, so — as ruma's documentation advises — only
//! versions 6 to 12 are offered. Their rules are data (`RoomVersionRules`), so the room model does
//! not `match` on versions.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

/// Versions offered for new rooms and accepted from clients.
pub const SUPPORTED_VERSIONS: [RoomVersionId; 7] = [
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
