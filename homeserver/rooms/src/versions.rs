//! Room versions Lattice creates and joins.
//!
//! ruma implements the auth rules of every version and state resolution v2, which versions 2 and
//! later use; state resolution v1 (room version 1) is not implemented, so versions 3 to 12 are
//! offered — 3 to 5 because older public rooms still run them (servers created v4 and v5 rooms
//! by default for years). Version 2 is left out with 1: nothing creates it, and its event ids
//! (with a server name) would need their own handling. The rules are data (`RoomVersionRules`),
//! so the room model does not `match` on versions.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

/// Versions offered for new rooms and accepted from clients.
pub const SUPPORTED_VERSIONS: [RoomVersionId; 10] = [
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
