//! Server ACLs (`m.room.server_acl`): which servers may take part in a room. [`allows`] is the
//! one rule; federation asks it (through [`crate::Rooms::server_allowed`]) for every inbound
//! endpoint and EDU the spec lists.
//!
//! As the spec says: a room without the event allows everyone; with it, a server is refused if
//! its host (the server name without port) is an IP literal and `allow_ip_literals` is false, or
//! matches a `deny` glob, and is allowed only if it matches an `allow` glob (an absent `allow`
//! allows no one). Globs take `*` (any run of characters) and `?` (one character) and compare
//! ASCII case-insensitively, as Synapse does.

use std::net::IpAddr;

use homeserver_core::Error;
use ruma::{RoomId, ServerName};
use serde_json::Value;

use crate::Rooms;

/// Globs of one list that are considered (a longer list is cut, so the check stays bounded).
const MAX_GLOBS: usize = 1_000;

/// Whether `server` may take part in a room whose ACL content is `content`.
pub fn allows(content: &Value, server: &ServerName) -> bool {
    let host = server.host();
    let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok();
    if literal && content.get("allow_ip_literals").and_then(Value::as_bool) == Some(false) {
        return false;
    }
    let globs = |field: &str| -> Vec<&str> {
        content
            .get(field)
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).take(MAX_GLOBS).collect())
            .unwrap_or_default()
    };
    if globs("deny").iter().any(|g| glob_matches(g, host)) {
        return false;
    }
    globs("allow").iter().any(|g| glob_matches(g, host))
}

/// `*`/`?` glob matching, ASCII case-insensitive, in O(pattern × text) at worst.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<u8>, Vec<u8>) = (pattern.bytes().collect(), text.bytes().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last star take one more character and retry after it.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

impl Rooms {
    /// Whether `server` may take part in the room under its current server ACL.
    pub async fn server_allowed(&self, room_id: &RoomId, server: &ServerName) -> Result<bool, Error> {
        Ok(match self.current_state_event(room_id, "m.room.server_acl", "").await? {
            Some(acl) => allows(&acl.content_value(), server),
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn name(s: &str) -> &ServerName {
        s.try_into().unwrap()
    }

    #[test]
    fn deny_wins_allow_is_required_and_ports_are_ignored() {
        let acl =
            json!({ "allow": ["*"], "deny": ["*.evil.example", "bad.example"], "allow_ip_literals": false });
        assert!(allows(&acl, name("good.example:8448")));
        assert!(!allows(&acl, name("sub.evil.example")));
        assert!(!allows(&acl, name("BAD.example")), "case-insensitive");
        assert!(!allows(&acl, name("1.2.3.4:8448")), "no IP literals");
        assert!(!allows(&acl, name("[::1]:8448")));
        assert!(!allows(&json!({}), name("good.example")), "no allow list: no one");
        assert!(allows(&json!({ "allow": ["*.example"] }), name("1.example")));
        assert!(allows(&json!({ "allow": ["*"] }), name("1.2.3.4")), "IP literals allowed by default");
        assert!(allows(&json!({ "allow": ["ser?er.example"] }), name("server.example")));
        assert!(!allows(&json!({ "allow": ["ser?er.example"] }), name("serer.example")));
    }

    #[test]
    fn globs_are_bounded() {
        let pattern = "*a".repeat(100) + "b";
        let text = "a".repeat(255);
        let started = std::time::Instant::now();
        assert!(!glob_matches(&pattern, &text));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
        assert!(glob_matches("**", ""));
        assert!(glob_matches("a*", "a"));
        assert!(!glob_matches("a?", "a"));
    }
}
