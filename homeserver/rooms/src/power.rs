//! Power levels as the client API needs them outside the auth rules (e.g. "may this user redact
//! someone else's event?"). The auth rules themselves are ruma's.

use std::collections::HashSet;

use ruma::{OwnedUserId, UserId};
use serde_json::Value;

/// The parts of `m.room.power_levels` plus the creators who outrank everyone in v12 rooms.
#[derive(Debug, Clone, Default)]
pub struct PowerLevels {
    content: Value,
    /// Room creators with infinite power (room version 12+), empty otherwise.
    creators: HashSet<OwnedUserId>,
    /// True when the room has no power-levels event (the creator then has 100).
    missing: bool,
    create_sender: Option<OwnedUserId>,
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl PowerLevels {
    /// `content` is the power-levels content (None if the room has none); `create_sender` the
    /// room creator; `creators` the privileged creators for versions that have them.
    pub fn new(
        content: Option<Value>,
        create_sender: Option<OwnedUserId>,
        creators: HashSet<OwnedUserId>,
    ) -> Self {
        let missing = content.is_none();
        Self { content: content.unwrap_or(Value::Null), creators, missing, create_sender }
    }

    /// A user's level; `i64::MAX` stands for a v12 creator's infinite power.
    pub fn user_level(&self, user: &UserId) -> i64 {
        if self.creators.contains(user) {
            return i64::MAX;
        }
        if self.missing {
            return if self.create_sender.as_deref() == Some(user) { 100 } else { 0 };
        }
        int(self.content.get("users").and_then(|u| u.get(user.as_str())))
            .or_else(|| int(self.content.get("users_default")))
            .unwrap_or(0)
    }

    /// The power levels a room's create and power-levels events define, under the room
    /// version's rules (which say whether creators are privileged).
    pub fn from_events(
        rules: &ruma::room_version_rules::AuthorizationRules,
        create: Option<&crate::pdu::Pdu>,
        power_levels: Option<&crate::pdu::Pdu>,
    ) -> Self {
        let mut creators: HashSet<OwnedUserId> = HashSet::new();
        if let Some(create) = create.filter(|_| rules.explicitly_privilege_room_creators) {
            creators.insert(create.sender.clone());
            if let Some(extra) = create.content_value().get("additional_creators").and_then(|v| v.as_array())
            {
                creators.extend(extra.iter().filter_map(|u| u.as_str()?.try_into().ok()));
            }
        }
        Self::new(power_levels.map(|p| p.content_value()), create.map(|c| c.sender.clone()), creators)
    }

    /// The privileged creators (room version 12+), empty for earlier versions.
    pub fn creators(&self) -> impl Iterator<Item = &OwnedUserId> {
        self.creators.iter()
    }

    /// Whether the user is a privileged creator (room version 12+).
    pub fn is_creator(&self, user: &UserId) -> bool {
        self.creators.contains(user)
    }

    /// The highest level the content names anywhere (users, events, actions), at least 100.
    pub fn highest_named_level(&self) -> i64 {
        fn walk(value: &Value, max: &mut i64) {
            match value {
                Value::Object(map) => map.values().for_each(|v| walk(v, max)),
                other => {
                    if let Some(level) = int(Some(other)) {
                        *max = (*max).max(level);
                    }
                }
            }
        }
        let mut max = 100;
        walk(&self.content, &mut max);
        max
    }

    fn named(&self, name: &str, default: i64) -> i64 {
        int(self.content.get(name)).unwrap_or(default)
    }

    pub fn redact(&self) -> i64 {
        self.named("redact", 50)
    }
    pub fn kick(&self) -> i64 {
        self.named("kick", 50)
    }
    pub fn ban(&self) -> i64 {
        self.named("ban", 50)
    }
    pub fn invite(&self) -> i64 {
        self.named("invite", 0)
    }

    /// The level needed to send an event of this type (state or not).
    pub fn event_level(&self, event_type: &str, is_state: bool) -> i64 {
        if let Some(level) = int(self.content.get("events").and_then(|e| e.get(event_type))) {
            return level;
        }
        if is_state {
            self.named("state_default", if self.missing { 0 } else { 50 })
        } else {
            self.named("events_default", 0)
        }
    }

    /// The level that triggers a room-wide `@room` notification.
    pub fn notification_room(&self) -> i64 {
        int(self.content.get("notifications").and_then(|n| n.get("room"))).unwrap_or(50)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(s: &str) -> OwnedUserId {
        s.try_into().unwrap()
    }

    #[test]
    fn levels_default_and_override() {
        let pl = PowerLevels::new(
            Some(
                json!({"users": {"@a:x": 100}, "users_default": 5, "events": {"m.room.name": 60}, "redact": "40"}),
            ),
            None,
            HashSet::new(),
        );
        assert_eq!(pl.user_level(&user("@a:x")), 100);
        assert_eq!(pl.user_level(&user("@b:x")), 5);
        assert_eq!(pl.event_level("m.room.name", true), 60);
        assert_eq!(pl.event_level("m.room.topic", true), 50);
        assert_eq!(pl.event_level("m.room.message", false), 0);
        assert_eq!(pl.redact(), 40);
    }

    #[test]
    fn creators_outrank_everyone_and_missing_levels_favour_the_creator() {
        let creators = HashSet::from([user("@c:x")]);
        let pl = PowerLevels::new(Some(json!({"users": {"@a:x": 100}})), None, creators);
        assert!(pl.user_level(&user("@c:x")) > pl.user_level(&user("@a:x")));
        let none = PowerLevels::new(None, Some(user("@c:x")), HashSet::new());
        assert_eq!(none.user_level(&user("@c:x")), 100);
        assert_eq!(none.user_level(&user("@d:x")), 0);
    }
}
