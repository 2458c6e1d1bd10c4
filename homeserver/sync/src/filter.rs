//! Event filters: the filter model applied by `/sync`, `/messages` and `/context`, and the
//! lookup of filters stored through `/user/{userId}/filter`.
//!
//! Filters are stored as the JSON the client sent and parsed into [`FilterDefinition`] when used.
//! ruma validates the shape on upload (so a malformed filter is `M_BAD_JSON`).

use homeserver_core::Error;
use homeserver_storage::{Db, events::EventRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which events of a list pass (types, senders, rooms, URL presence).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RoomEventFilter {
    pub limit: Option<u64>,
    #[serde(default, deserialize_with = "bounded_patterns_opt")]
    pub types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded_patterns")]
    pub not_types: Vec<String>,
    #[serde(default, deserialize_with = "bounded_ids_opt")]
    pub senders: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded_ids")]
    pub not_senders: Vec<String>,
    #[serde(default, deserialize_with = "bounded_ids_opt")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded_ids")]
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    #[serde(default)]
    pub lazy_load_members: bool,
    #[serde(default)]
    pub include_redundant_members: bool,
    #[serde(default)]
    pub unread_thread_notifications: bool,
}

/// The `room` part of a filter.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RoomFilter {
    #[serde(default, deserialize_with = "bounded_ids_opt")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "bounded_ids")]
    pub not_rooms: Vec<String>,
    #[serde(default)]
    pub include_leave: bool,
    #[serde(default)]
    pub timeline: RoomEventFilter,
    #[serde(default)]
    pub state: RoomEventFilter,
    #[serde(default)]
    pub ephemeral: RoomEventFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
}

/// A whole filter definition.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FilterDefinition {
    #[serde(default)]
    pub room: RoomFilter,
    #[serde(default)]
    pub account_data: RoomEventFilter,
    #[serde(default)]
    pub presence: RoomEventFilter,
}

/// The most type patterns one list (`types`, `not_types`) of a filter may hold.
pub const MAX_PATTERNS: usize = 100;
/// The longest type pattern; event types are at most 255 bytes, as Synapse enforces.
pub const MAX_PATTERN_BYTES: usize = 255;
/// The most ids one list (`senders`, `rooms`, and their `not_` forms) of a filter may hold.
pub const MAX_IDS: usize = 1_000;

/// Glob match with `*` wildcards, as filters use for event types.
///
/// Linear in `pattern.len() + value.len()`: the pattern splits at its stars into literal pieces;
/// the first must be a prefix, the last a suffix, and each one between is taken at its leftmost
/// occurrence after the previous one. With `*` as the only wildcard the leftmost occurrence is
/// always a safe choice, so nothing is ever retried (a recursive matcher is exponential in the
/// number of stars).
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else { return false };
    let middle_and_last: Vec<&str> = pieces.collect();
    let Some((last, middle)) = middle_and_last.split_last() else {
        return rest.is_empty(); // No star: the pattern is the whole value.
    };
    for piece in middle.iter().filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Deserialises a list of type patterns, refusing more than [`MAX_PATTERNS`] or any longer
/// than [`MAX_PATTERN_BYTES`], so that matching an event against a filter is bounded.
fn bounded_patterns_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    bounded_list(d, MAX_PATTERNS, "type patterns")
}

fn bounded_patterns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(bounded_patterns_opt(d)?.unwrap_or_default())
}

/// Deserialises a list of user or room ids, at most [`MAX_IDS`] of them.
fn bounded_ids_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    bounded_list(d, MAX_IDS, "ids")
}

fn bounded_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(bounded_ids_opt(d)?.unwrap_or_default())
}

fn bounded_list<'de, D: serde::Deserializer<'de>>(
    d: D,
    max_items: usize,
    what: &str,
) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error as _;
    let Some(items) = Option::<Vec<String>>::deserialize(d)? else { return Ok(None) };
    if items.len() > max_items {
        return Err(D::Error::custom(format!("a filter list may hold at most {max_items} {what}")));
    }
    if items.iter().any(|i| i.len() > MAX_PATTERN_BYTES) {
        return Err(D::Error::custom(format!("filter {what} are at most {MAX_PATTERN_BYTES} bytes long")));
    }
    Ok(Some(items))
}

impl RoomEventFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        if self.not_rooms.iter().any(|r| r == room_id) {
            return false;
        }
        self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }

    /// Whether an event of `event_type` from `sender` passes.
    pub fn allows(&self, event_type: &str, sender: &str) -> bool {
        if self.not_types.iter().any(|p| glob_match(p, event_type)) {
            return false;
        }
        if let Some(types) = &self.types
            && !types.iter().any(|p| glob_match(p, event_type))
        {
            return false;
        }
        if self.not_senders.iter().any(|s| s == sender) {
            return false;
        }
        self.senders.as_ref().is_none_or(|senders| senders.iter().any(|s| s == sender))
    }

    /// Applies the filter to stored events (type, sender, room, `contains_url`).
    pub fn allows_row(&self, row: &EventRow) -> bool {
        if !self.allows_room(&row.room_id) || !self.allows(&row.event_type, &row.sender) {
            return false;
        }
        if let Some(wants_url) = self.contains_url {
            let has_url = serde_json::from_str::<Value>(&row.json)
                .ok()
                .and_then(|v| v.get("content").and_then(|c| c.get("url")).map(|u| u.is_string()))
                .unwrap_or(false);
            if has_url != wants_url {
                return false;
            }
        }
        true
    }
}

impl RoomFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        if self.not_rooms.iter().any(|r| r == room_id) {
            return false;
        }
        self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }
}

/// Parses filter JSON (stored or inline).
pub fn parse_filter(json: &str) -> Result<FilterDefinition, Error> {
    serde_json::from_str(json).map_err(|e| Error::bad_json(format!("invalid filter: {e}")))
}

/// Loads a filter by id or parses an inline one (`{`…).
pub async fn resolve_filter(db: &Db, user_id: &str, filter: &str) -> Result<FilterDefinition, Error> {
    if filter.trim_start().starts_with('{') {
        return parse_filter(filter);
    }
    let id: i64 = filter.parse().map_err(|_| Error::invalid_param("invalid filter id"))?;
    let stored = db
        .filter(user_id, id)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Filter not found"))?;
    // A filter stored before the bounds existed is cut to them rather than refused: refusing
    // would break every sync that names it.
    let mut value: Value =
        serde_json::from_str(&stored).map_err(|e| Error::bad_json(format!("invalid filter: {e}")))?;
    clamp_lists(&mut value);
    serde_json::from_value(value).map_err(|e| Error::bad_json(format!("invalid filter: {e}")))
}

/// Cuts every bounded list of a filter to its bounds (see [`MAX_PATTERNS`], [`MAX_IDS`]).
fn clamp_lists(value: &mut Value) {
    let Some(map) = value.as_object_mut() else { return };
    for (key, item) in map.iter_mut() {
        let max = match key.as_str() {
            "types" | "not_types" => Some(MAX_PATTERNS),
            "senders" | "not_senders" | "rooms" | "not_rooms" => Some(MAX_IDS),
            _ => None,
        };
        match (max, item) {
            (Some(max), Value::Array(list)) => {
                list.retain(|v| v.as_str().is_some_and(|s| s.len() <= MAX_PATTERN_BYTES));
                list.truncate(max);
            }
            (None, item) => clamp_lists(item),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("m.room.*", "m.room.message"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("m.*.message", "m.room.message"));
        assert!(!glob_match("m.room.*", "m.reaction"));
        assert!(glob_match("m.room.message", "m.room.message"));
        assert!(!glob_match("m.room.message", "m.room.messages"));
    }

    #[test]
    fn stored_filters_are_cut_to_the_bounds() {
        let mut value = json!({ "room": { "timeline": {
            "types": vec!["m.room.message"; MAX_PATTERNS + 50],
            "not_senders": ["@a:x", "x".repeat(MAX_PATTERN_BYTES + 1)],
        } } });
        clamp_lists(&mut value);
        let filter: FilterDefinition = serde_json::from_value(value).unwrap();
        assert_eq!(filter.room.timeline.types.map(|t| t.len()), Some(MAX_PATTERNS));
        assert_eq!(filter.room.timeline.not_senders, vec!["@a:x".to_owned()]);
    }

    #[test]
    fn globs_are_linear() {
        let pattern = "*a".repeat(40) + "b";
        let value = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!glob_match(&pattern, &value));
        assert!(glob_match(&pattern, &(value + "b")));
        assert!(started.elapsed() < std::time::Duration::from_millis(100), "{:?}", started.elapsed());
        assert!(glob_match("*.message", "m.room.message"));
        assert!(glob_match("m.*.*", "m.room.message"));
        assert!(!glob_match("m.*.x", "m.room.message"));
        assert!(glob_match("**", ""));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn type_and_sender_rules() {
        let f = RoomEventFilter {
            types: Some(vec!["m.room.*".into()]),
            not_types: vec!["m.room.member".into()],
            not_senders: vec!["@spam:x".into()],
            ..Default::default()
        };
        assert!(f.allows("m.room.message", "@a:x"));
        assert!(!f.allows("m.room.member", "@a:x"));
        assert!(!f.allows("m.reaction", "@a:x"));
        assert!(!f.allows("m.room.message", "@spam:x"));
    }
}
