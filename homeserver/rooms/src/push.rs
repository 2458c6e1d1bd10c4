//! Push rules: each user's rule set (cached), and evaluating an event for a room's members.
//!
//! Rule sets live in global account data `m.push_rules` (`{"global": …}`) once a user changes
//! them; until then the spec's server-default set applies. The room pipeline evaluates an event
//! once for a stand-in member with the default rules (the common outcome, stored once per event
//! as a broadcast row) and fully only for members it may not fit: those with their own rules and
//! those the event may concern personally ([`PersonalTriggers`]: invited or mentioned). A
//! message to a 1,000-member room therefore costs one evaluation, a cheap check per member and
//! one row, not 1,000 of each; missing rule sets are loaded in one batch and cached.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use homeserver_core::Error;
use homeserver_storage::Db;
use lru::LruCache;
use ruma::{
    Int, OwnedRoomId, OwnedUserId, UInt, UserId,
    power_levels::NotificationPowerLevels,
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::{AuthorizationRules, RoomPowerLevelsRules},
    serde::Raw,
};
use serde_json::Value;

/// The account-data type holding a user's push rules.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Rule sets by user, with the server default for users who never changed theirs.
pub struct PushRules {
    db: Db,
    cache: Mutex<LruCache<OwnedUserId, UserRules>>,
    /// Bumped by every invalidation, so a load racing a rule change does not cache stale rules.
    generation: std::sync::atomic::AtomicU64,
    /// The server-default rules of a user nobody can mention: the common outcome of an event.
    generic: (OwnedUserId, Arc<Ruleset>),
}

/// One user's rules, and whether they are their own (`custom`) or the server default.
#[derive(Clone)]
pub struct UserRules {
    pub rules: Arc<Ruleset>,
    pub custom: bool,
}

/// Parses stored `m.push_rules` content (`{"global": ruleset}`), falling back to the default.
/// A rule the evaluator cannot use (a room rule whose id is no room id, a sender rule whose id
/// is no user id — Synapse stores those too —, or any rule ruma cannot read) is left out, not
/// the whole set: one odd rule never costs a user their mutes.
pub fn parse_ruleset(user: &UserId, content: &str) -> Ruleset {
    let Some(mut global) =
        serde_json::from_str::<Value>(content).ok().and_then(|mut v| v.get_mut("global").map(Value::take))
    else {
        return Ruleset::server_default(user);
    };
    if let Ok(rules) = serde_json::from_value::<Ruleset>(global.clone()) {
        return rules;
    }
    use ruma::push::{ConditionalPushRule, PatternedPushRule, SimplePushRule};
    let usable = |kind: &str, rule: &Value| {
        let rule = rule.clone();
        match kind {
            "override" | "underride" => serde_json::from_value::<ConditionalPushRule>(rule).is_ok(),
            "content" => serde_json::from_value::<PatternedPushRule>(rule).is_ok(),
            "room" => serde_json::from_value::<SimplePushRule<ruma::OwnedRoomId>>(rule).is_ok(),
            "sender" => serde_json::from_value::<SimplePushRule<OwnedUserId>>(rule).is_ok(),
            _ => false,
        }
    };
    if let Some(kinds) = global.as_object_mut() {
        for (kind, rules) in kinds.iter_mut() {
            if let Some(rules) = rules.as_array_mut() {
                rules.retain(|rule| usable(kind, rule));
            }
        }
    }
    serde_json::from_value::<Ruleset>(global).unwrap_or_else(|_| Ruleset::server_default(user))
}

impl PushRules {
    pub fn new(db: Db) -> Self {
        let generic_user: OwnedUserId =
            "@lattice-generic-member:lattice.invalid".try_into().expect("valid user id");
        let generic_rules = Arc::new(Ruleset::server_default(&generic_user));
        Self {
            db,
            cache: Mutex::new(LruCache::new(NonZeroUsize::new(100_000).expect("non-zero"))),
            generation: std::sync::atomic::AtomicU64::new(0),
            generic: (generic_user, generic_rules),
        }
    }

    /// The stand-in member and its rules for computing an event's common outcome.
    pub fn generic(&self) -> (&UserId, &Ruleset) {
        (&self.generic.0, &self.generic.1)
    }

    /// Forgets a user's cached rules (after they changed them). A load that started before
    /// this call does not store what it read (the generation moved on).
    pub fn invalidate(&self, user: &UserId) {
        let mut cache = self.cache.lock().expect("push cache poisoned");
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.pop(user);
    }

    /// The rule sets of `users`, loading all missing ones in one query.
    pub async fn rulesets(&self, users: &[OwnedUserId]) -> Result<HashMap<OwnedUserId, UserRules>, Error> {
        let mut out = HashMap::with_capacity(users.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.cache.lock().expect("push cache poisoned");
            for user in users {
                match cache.get(user) {
                    Some(rules) => {
                        out.insert(user.clone(), rules.clone());
                    }
                    None => missing.push(user.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = missing.iter().map(|u| u.to_string()).collect();
        let stored: HashMap<String, String> = self
            .db
            .global_account_data_of(&ids, PUSH_RULES_TYPE)
            .await
            .map_err(Error::from)?
            .into_iter()
            .collect();
        let mut cache = self.cache.lock().expect("push cache poisoned");
        // Rules changed while they were read: answer with what was read, but do not keep it.
        let keep = self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation;
        for user in missing {
            let rules = match stored.get(user.as_str()) {
                Some(content) => UserRules { rules: Arc::new(parse_ruleset(&user, content)), custom: true },
                None => UserRules { rules: Arc::new(Ruleset::server_default(&user)), custom: false },
            };
            if keep {
                cache.put(user.clone(), rules.clone());
            }
            out.insert(user, rules);
        }
        Ok(out)
    }
}

/// What about an event could make a member with the server-default rules differ from the common
/// outcome: being its state key (an invite) or being in `m.mentions.user_ids`. (The spec's
/// default rules no longer look for names in the body, v1.17; stored rule sets that still do are
/// custom and always evaluated in full.) Computed once per event.
pub struct PersonalTriggers {
    state_key: Option<String>,
    mentioned: Vec<String>,
}

impl PersonalTriggers {
    pub fn of(state_key: Option<&str>, content: &Value) -> Self {
        let mentioned = content
            .get("m.mentions")
            .and_then(|m| m.get("user_ids"))
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Self { state_key: state_key.map(str::to_owned), mentioned }
    }

    /// Whether a member with the default rules needs an evaluation of their own.
    pub fn may_concern(&self, user: &UserId) -> bool {
        self.state_key.as_deref() == Some(user.as_str()) || self.mentioned.iter().any(|m| m == user.as_str())
    }
}

/// What a room contributes to evaluating an event.
pub struct RoomPushContext {
    pub room_id: OwnedRoomId,
    pub member_count: u64,
    pub power_levels: Option<PushConditionPowerLevelsCtx>,
}

/// Power levels as the push rules need them (who may notify `@room`), from the power-levels
/// content and the room's creators.
pub fn power_levels_ctx(
    content: Option<&Value>,
    rules: &AuthorizationRules,
    creators: Vec<OwnedUserId>,
) -> PushConditionPowerLevelsCtx {
    let int = |v: Option<&Value>, default: i64| {
        v.and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .and_then(|n| Int::try_from(n).ok())
            .unwrap_or_else(|| Int::try_from(default).unwrap_or_default())
    };
    let users = content
        .and_then(|c| c.get("users"))
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((UserId::parse(k).ok()?, int(Some(v), 0)))).collect())
        .unwrap_or_default();
    let users_default = int(content.and_then(|c| c.get("users_default")), 0);
    let mut notifications = NotificationPowerLevels::new();
    notifications.room = int(content.and_then(|c| c.get("notifications")).and_then(|n| n.get("room")), 50);
    let rules = RoomPowerLevelsRules::new(rules, creators);
    PushConditionPowerLevelsCtx::new(users, users_default, notifications, rules)
}

/// The event flattened for rule matching (once per event).
pub fn flatten(pdu_json: &str) -> Option<FlattenedJson> {
    let raw = serde_json::value::RawValue::from_string(pdu_json.to_owned()).ok()?;
    Some(FlattenedJson::from_raw(&Raw::<Value>::from_json(raw)))
}

/// The actions of the first matching rule for one user, if any.
pub async fn actions_for(
    event: &FlattenedJson,
    ruleset: &Ruleset,
    room: &RoomPushContext,
    user: &UserId,
    display_name: &str,
) -> Vec<Action> {
    let mut ctx = PushConditionRoomCtx::new(
        room.room_id.clone(),
        UInt::new(room.member_count).unwrap_or_default(),
        user.to_owned(),
        display_name.to_owned(),
    );
    ctx.power_levels = room.power_levels.clone();
    for rule in ruleset.iter() {
        if rule.enabled() && rule.applies(event, &ctx).await {
            return rule.actions().to_vec();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> OwnedUserId {
        s.try_into().unwrap()
    }

    async fn eval(json: Value, who: &str, name: &str) -> Vec<Action> {
        let flat = flatten(&json.to_string()).unwrap();
        let ctx = RoomPushContext {
            room_id: "!r:x".try_into().unwrap(),
            member_count: 5,
            power_levels: Some(power_levels_ctx(
                Some(&serde_json::json!({"users": {"@boss:x": 100}})),
                &AuthorizationRules::V10,
                vec![],
            )),
        };
        actions_for(&flat, &Ruleset::server_default(&user(who)), &ctx, &user(who), name).await
    }

    #[tokio::test]
    async fn default_rules_notify_messages_and_highlight_mentions() {
        let msg = serde_json::json!({"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": {"msgtype": "m.text", "body": "hello"}});
        let actions = eval(msg, "@b:x", "Bob").await;
        assert!(actions.iter().any(Action::should_notify));
        assert!(!actions.iter().any(Action::is_highlight));

        let mention = serde_json::json!({"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@b:x"]}}});
        assert!(eval(mention, "@b:x", "Bob").await.iter().any(Action::is_highlight));

        let room_mention = serde_json::json!({"type": "m.room.message", "sender": "@boss:x", "room_id": "!r:x", "content": {"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}});
        assert!(eval(room_mention.clone(), "@b:x", "Bob").await.iter().any(Action::is_highlight));
        let mut weak = room_mention;
        weak["sender"] = serde_json::json!("@a:x");
        assert!(!eval(weak, "@b:x", "Bob").await.iter().any(Action::is_highlight), "@room needs power");

        let own = serde_json::json!({"type": "m.room.message", "sender": "@b:x", "room_id": "!r:x", "content": {"msgtype": "m.text", "body": "me"}});
        assert!(eval(own, "@b:x", "Bob").await.is_empty(), "own messages never notify");

        let notice = serde_json::json!({"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": {"msgtype": "m.notice", "body": "bot"}});
        assert!(!eval(notice, "@b:x", "Bob").await.iter().any(Action::should_notify));
    }

    #[test]
    fn stored_rules_parse_and_fall_back() {
        let u = user("@b:x");
        let mut rules = Ruleset::server_default(&u);
        rules.set_enabled(ruma::push::RuleKind::Override, ".m.rule.master", true).unwrap();
        let stored = serde_json::json!({"global": rules}).to_string();
        let parsed = parse_ruleset(&u, &stored);
        assert!(parsed.get(ruma::push::RuleKind::Override, ".m.rule.master").unwrap().enabled());
        let fallback = parse_ruleset(&u, "not json");
        assert!(!fallback.get(ruma::push::RuleKind::Override, ".m.rule.master").unwrap().enabled());
    }

    #[test]
    fn an_unusable_stored_rule_is_left_out_not_the_set() {
        let u = user("@b:x");
        let mut rules = Ruleset::server_default(&u);
        rules.set_enabled(ruma::push::RuleKind::Override, ".m.rule.master", true).unwrap();
        let mut global = serde_json::to_value(&rules).unwrap();
        global["override"].as_array_mut().unwrap().push(serde_json::json!({
            "rule_id": "odd", "default": false, "enabled": true, "actions": [], "conditions": [{ "kind": "event_match" }],
        }));
        global["room"] = serde_json::json!([
            { "rule_id": "#spam:example.com", "default": false, "enabled": true, "actions": [] },
            { "rule_id": "!r:x", "default": false, "enabled": true, "actions": [] },
        ]);
        let parsed = parse_ruleset(&u, &serde_json::json!({ "global": global }).to_string());
        assert!(parsed.get(ruma::push::RuleKind::Override, ".m.rule.master").unwrap().enabled());
        assert!(parsed.get(ruma::push::RuleKind::Override, "odd").is_none());
        assert!(parsed.get(ruma::push::RuleKind::Room, "!r:x").is_some(), "the usable room rule stays");
    }
}
