//! Guest access: the endpoints a guest account may call. Every resolved access token goes
//! through [`check`], so an endpoint is closed to guests unless it is listed here.
//!
//! The list is the spec's ("Guest Access", client behaviour) plus what Synapse also opens to
//! guests and clients of guests rely on: joining by alias, leaving, typing, receipts and read
//! markers, the user's filters, push rules, presence, capabilities, members and logging out.
//! On endpoints where a token is optional (`/versions`, `/publicRooms`), a guest's request is
//! answered as an anonymous one instead of refused.

use axum::{extract::MatchedPath, http::request::Parts};
use homeserver_core::{Error, ErrorKind};

use crate::Session;

/// `METHOD path` below `/_matrix/client/{version}/`, a path parameter written `*`.
const ALLOWED: &[&str] = &[
    // Reading rooms and their history (the spec's list).
    "GET rooms/*/state",
    "GET rooms/*/state/*",
    "GET rooms/*/state/*/",
    "GET rooms/*/state/*/*",
    "GET rooms/*/context/*",
    "GET rooms/*/event/*",
    "GET rooms/*/messages",
    "GET rooms/*/members",
    "GET rooms/*/joined_members",
    "GET rooms/*/initialSync",
    "GET sync",
    "GET events",
    "GET media/download/*/*",
    "GET media/download/*/*/*",
    "GET media/thumbnail/*/*",
    // Taking part.
    "POST rooms/*/join",
    "POST join/*",
    "POST rooms/*/leave",
    "PUT rooms/*/send/*/*",
    "PUT rooms/*/state/*",
    "PUT rooms/*/state/*/",
    "PUT rooms/*/state/*/*",
    "PUT sendToDevice/*/*",
    "PUT rooms/*/typing/*",
    "POST rooms/*/receipt/*/*",
    "POST rooms/*/receipt/*/*/*",
    "POST rooms/*/read_markers",
    // Their own account.
    "GET profile/*",
    "GET profile/*/*",
    "PUT profile/*/displayname",
    "DELETE profile/*/displayname",
    "GET devices",
    "GET devices/*",
    "PUT devices/*",
    "GET account/whoami",
    "POST logout",
    "POST user/*/filter",
    "GET user/*/filter/*",
    "GET pushrules",
    "GET pushrules/",
    "GET pushrules/*",
    "GET presence/*/status",
    "PUT presence/*/status",
    "GET capabilities",
    "GET voip/turnServer",
    // End-to-end encryption.
    "POST keys/upload",
    "POST keys/query",
    "POST keys/claim",
];

/// Refuses a guest's request to an endpoint not in [`ALLOWED`] with `M_GUEST_ACCESS_FORBIDDEN`.
/// The route's template is what is compared (never the concrete path, whose parameters could
/// spell anything); a request without one is refused.
pub(crate) fn check(session: &Session, parts: &Parts) -> Result<(), Error> {
    if !session.is_guest {
        return Ok(());
    }
    let template = parts.extensions.get::<MatchedPath>().map(MatchedPath::as_str);
    if template.is_some_and(|t| allowed(parts.method.as_str(), t)) {
        return Ok(());
    }
    Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest access is not allowed for this endpoint"))
}

fn allowed(method: &str, template: &str) -> bool {
    let Some(versioned) = template.strip_prefix("/_matrix/client/") else { return false };
    let Some((_version, path)) = versioned.split_once('/') else { return false };
    let normalized: Vec<&str> =
        path.split('/').map(|segment| if segment.starts_with('{') { "*" } else { segment }).collect();
    let normalized = normalized.join("/");
    ALLOWED.iter().any(|entry| entry.split_once(' ') == Some((method, normalized.as_str())))
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn templates_are_matched_by_shape_and_method() {
        assert!(allowed("GET", "/_matrix/client/v3/rooms/{roomId}/messages"));
        assert!(allowed("GET", "/_matrix/client/r0/sync"));
        assert!(allowed("PUT", "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"));
        assert!(allowed("POST", "/_matrix/client/v3/join/{roomIdOrAlias}"));
        assert!(allowed("PUT", "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/"));
        assert!(!allowed("POST", "/_matrix/client/v3/createRoom"));
        assert!(!allowed("PUT", "/_matrix/client/v3/profile/{userId}/avatar_url"));
        assert!(!allowed("DELETE", "/_matrix/client/v3/rooms/{roomId}/messages"));
        assert!(!allowed("GET", "/_matrix/client/v3/rooms/!r:x/messages/extra"));
        assert!(!allowed("GET", "/_synapse/admin/v1/rooms/{roomId}/messages"));
    }
}
