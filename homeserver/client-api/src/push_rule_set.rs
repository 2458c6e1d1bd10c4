//! A user's push rules as the client API reads and edits them: the spec's JSON (`{"override":
//! [...], "content": [...], "room": [...], "sender": [...], "underride": [...]}`), kept as
//! sent. Rule ids are free-form strings here, as Synapse keeps them (a room rule named
//! `#spam:example.com` is stored and listed); evaluation parses the set into ruma's typed rules
//! and skips rules it cannot use (`homeserver_rooms::push::parse_ruleset`).
//!
//! Every edit is checked here: the kind, the rule id (not a server-default `.` id, no `/` or
//! `\`), the body (actions, and conditions or a pattern where the kind needs them), the
//! `before`/`after` anchor, and the number of rules a user keeps.

use homeserver_core::{Error, ErrorKind};
use ruma::push::{Action, PushCondition};
use serde_json::{Map, Value, json};

/// The rule kinds in priority order.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// Most rules of their own one user keeps (all kinds together).
const MAX_USER_RULES: usize = 1_000;
/// Largest rule (serialised), and largest rule set: the set is account data, rewritten on
/// every edit and read for every event the user may be notified of.
const MAX_RULE_BYTES: usize = 16 * 1024;
const MAX_SET_BYTES: usize = 1024 * 1024;
/// Longest rule id, and most conditions of one rule.
const MAX_RULE_ID_BYTES: usize = 512;
const MAX_CONDITIONS: usize = 20;

/// Where a new rule goes among its kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Placement<'a> {
    pub before: Option<&'a str>,
    pub after: Option<&'a str>,
}

/// A user's rule set (the `global` scope).
#[derive(Debug, Clone)]
pub struct RuleSet(Map<String, Value>);

/// A kind named in a path: one of [`KINDS`], else 400.
pub fn kind(name: &str) -> Result<&'static str, Error> {
    KINDS
        .iter()
        .find(|k| **k == name)
        .copied()
        .ok_or_else(|| Error::invalid_param(format!("unknown push rule kind {name}")))
}

fn not_found() -> Error {
    Error::not_found("Push rule not found")
}

impl RuleSet {
    /// A set from its JSON (every kind present, each a list).
    pub fn from_json(global: Value) -> Self {
        let mut map = match global {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        for kind in KINDS {
            if !map.get(kind).is_some_and(Value::is_array) {
                map.insert(kind.to_owned(), json!([]));
            }
        }
        RuleSet(map)
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    fn rules(&self, kind: &str) -> &[Value] {
        self.0.get(kind).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    fn rules_mut(&mut self, kind: &str) -> &mut Vec<Value> {
        let entry = self.0.entry(kind.to_owned()).or_insert_with(|| json!([]));
        if !entry.is_array() {
            *entry = json!([]);
        }
        entry.as_array_mut().expect("made an array above")
    }

    fn index(&self, kind: &str, rule_id: &str) -> Option<usize> {
        self.rules(kind).iter().position(|r| r["rule_id"] == rule_id)
    }

    /// The rules of one kind.
    pub fn list(&self, kind: &str) -> Value {
        Value::Array(self.rules(kind).to_vec())
    }

    /// One rule, or 404.
    pub fn get(&self, kind: &str, rule_id: &str) -> Result<&Value, Error> {
        self.index(kind, rule_id).map(|i| &self.rules(kind)[i]).ok_or_else(not_found)
    }

    fn get_mut(&mut self, kind: &str, rule_id: &str) -> Result<&mut Value, Error> {
        let i = self.index(kind, rule_id).ok_or_else(not_found)?;
        Ok(&mut self.rules_mut(kind)[i])
    }

    /// Adds (or replaces, in place) a rule of the user's own from a client's body.
    pub fn put(&mut self, kind: &str, rule_id: &str, body: &Value, at: Placement<'_>) -> Result<(), Error> {
        check_rule_id(rule_id)?;
        let mut rule = new_rule(kind, rule_id, body)?;
        for anchor in [at.before, at.after].into_iter().flatten() {
            if anchor.starts_with('.') {
                return Err(Error::invalid_param(
                    "a rule cannot be placed relative to a server-default rule",
                ));
            }
            if anchor == rule_id {
                return Err(Error::invalid_param("a rule cannot be placed relative to itself"));
            }
            self.get(kind, anchor)?;
        }
        // A rule set again keeps whether it was enabled.
        if let Ok(existing) = self.get(kind, rule_id) {
            rule["enabled"] = existing["enabled"].clone();
        }
        if self.to_json().to_string().len() + rule.to_string().len() > MAX_SET_BYTES {
            return Err(Error::new(ErrorKind::TooLarge, "the push rules would exceed 1 MiB"));
        }
        if at.before.is_none()
            && at.after.is_none()
            && let Some(i) = self.index(kind, rule_id)
        {
            self.rules_mut(kind)[i] = rule;
            return Ok(());
        }
        let own = KINDS.iter().flat_map(|k| self.rules(k)).filter(|r| r["default"] != true).count();
        if self.index(kind, rule_id).is_none() && own >= MAX_USER_RULES {
            return Err(Error::new(ErrorKind::TooLarge, format!("at most {MAX_USER_RULES} push rules")));
        }
        if let Some(i) = self.index(kind, rule_id) {
            self.rules_mut(kind).remove(i);
        }
        let rules = self.rules(kind);
        let at = match (at.before, at.after) {
            (Some(before), _) => rules.iter().position(|r| r["rule_id"] == before).unwrap_or(0),
            (None, Some(after)) => rules.iter().position(|r| r["rule_id"] == after).map_or(0, |i| i + 1),
            // First among the user's own rules: above every server-default rule of the kind
            // but `.m.rule.master`, which stays above everything (spec: push rules).
            (None, None) => rules.iter().take_while(|r| r["rule_id"] == ".m.rule.master").count(),
        };
        self.rules_mut(kind).insert(at, rule);
        Ok(())
    }

    /// Removes a rule of the user's own (server-default rules stay: 400).
    pub fn delete(&mut self, kind: &str, rule_id: &str) -> Result<(), Error> {
        if self.get(kind, rule_id)?["default"] == true {
            return Err(Error::invalid_param("server-default rules cannot be deleted"));
        }
        let i = self.index(kind, rule_id).ok_or_else(not_found)?;
        self.rules_mut(kind).remove(i);
        Ok(())
    }

    pub fn set_enabled(&mut self, kind: &str, rule_id: &str, enabled: bool) -> Result<(), Error> {
        self.get_mut(kind, rule_id)?["enabled"] = json!(enabled);
        Ok(())
    }

    pub fn set_actions(&mut self, kind: &str, rule_id: &str, actions: &Value) -> Result<(), Error> {
        check_actions(actions)?;
        self.get_mut(kind, rule_id)?["actions"] = actions.clone();
        Ok(())
    }
}

fn check_rule_id(rule_id: &str) -> Result<(), Error> {
    if rule_id.is_empty() || rule_id.len() > MAX_RULE_ID_BYTES {
        return Err(Error::invalid_param("a rule id is 1 to 512 bytes"));
    }
    if rule_id.starts_with('.') {
        return Err(Error::invalid_param("rule ids starting with '.' are the server's"));
    }
    if rule_id.contains(['/', '\\']) {
        return Err(Error::invalid_param("a rule id contains no '/' or '\\'"));
    }
    Ok(())
}

/// Actions: a list of `notify`, `dont_notify`, `coalesce` or `{"set_tweak": …}` objects that
/// the evaluator reads (a known tweak with a valid value).
pub fn check_actions(actions: &Value) -> Result<(), Error> {
    let Some(list) = actions.as_array() else {
        return Err(Error::bad_json("actions must be a list"));
    };
    for action in list {
        let known = match action {
            Value::String(name) => matches!(name.as_str(), "notify" | "dont_notify" | "coalesce"),
            Value::Object(tweak) => tweak.get("set_tweak").is_some_and(Value::is_string),
            _ => false,
        };
        if !known {
            return Err(Error::invalid_param(format!("unknown action {action}")));
        }
    }
    serde_json::from_value::<Vec<Action>>(actions.clone())
        .map_err(|e| Error::invalid_param(format!("invalid action: {e}")))?;
    Ok(())
}

/// The stored form of a new rule of the user's own.
fn new_rule(kind: &str, rule_id: &str, body: &Value) -> Result<Value, Error> {
    if !body.is_object() {
        return Err(Error::bad_json("the body must be an object"));
    }
    let actions = body.get("actions").ok_or_else(|| Error::bad_json("actions are missing"))?;
    check_actions(actions)?;
    let mut rule = json!({ "rule_id": rule_id, "default": false, "enabled": true, "actions": actions });
    match kind {
        "override" | "underride" => {
            let conditions = body
                .get("conditions")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::bad_json("conditions are missing"))?;
            if conditions.len() > MAX_CONDITIONS {
                return Err(Error::invalid_param(format!("at most {MAX_CONDITIONS} conditions")));
            }
            if !conditions.iter().all(|c| c.get("kind").is_some_and(Value::is_string)) {
                return Err(Error::bad_json("every condition needs a kind"));
            }
            // Conditions the evaluator cannot read would make it drop the rule.
            serde_json::from_value::<Vec<PushCondition>>(Value::Array(conditions.clone()))
                .map_err(|e| Error::bad_json(format!("invalid condition: {e}")))?;
            rule["conditions"] = Value::Array(conditions.clone());
        }
        "content" => {
            let pattern = body
                .get("pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::bad_json("a content rule needs a pattern"))?;
            rule["pattern"] = json!(pattern);
        }
        _ => {}
    }
    if rule.to_string().len() > MAX_RULE_BYTES {
        return Err(Error::new(ErrorKind::TooLarge, "a push rule is at most 16 KiB"));
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> RuleSet {
        RuleSet::from_json(json!({
            "override": [{ "rule_id": ".m.rule.master", "default": true, "enabled": false, "actions": [] },
                         { "rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true, "actions": [] }],
            "underride": [{ "rule_id": ".m.rule.message", "default": true, "enabled": true, "actions": ["notify"] }],
        }))
    }

    fn ids(set: &RuleSet, kind: &str) -> Vec<String> {
        set.rules(kind).iter().map(|r| r["rule_id"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn new_rules_go_first_but_below_master_and_anchors_place_them() {
        let mut rules = set();
        let body = json!({ "actions": ["notify"], "conditions": [{ "kind": "event_match", "key": "k", "pattern": "p" }] });
        rules.put("override", "a", &body, Placement::default()).unwrap();
        rules.put("override", "b", &body, Placement::default()).unwrap();
        assert_eq!(ids(&rules, "override"), [".m.rule.master", "b", "a", ".m.rule.suppress_notices"]);
        rules.put("override", "c", &body, Placement { before: None, after: Some("a") }).unwrap();
        rules.put("override", "d", &body, Placement { before: Some("b"), after: None }).unwrap();
        assert_eq!(
            ids(&rules, "override"),
            [".m.rule.master", "d", "b", "a", "c", ".m.rule.suppress_notices"]
        );
        // Room rules keep any id, as Synapse does.
        rules
            .put("room", "#spam:example.com", &json!({ "actions": ["dont_notify"] }), Placement::default())
            .unwrap();
        assert_eq!(rules.get("room", "#spam:example.com").unwrap()["actions"], json!(["dont_notify"]));
        // Adding again replaces in place, enabled or not as it was; a huge rule is refused.
        rules.set_enabled("override", "b", false).unwrap();
        rules
            .put("override", "b", &json!({ "actions": [], "conditions": [] }), Placement::default())
            .unwrap();
        assert_eq!(rules.get("override", "b").unwrap()["enabled"], false);
        let huge = json!({ "actions": [], "pattern": "x".repeat(20_000) });
        assert!(rules.put("content", "big", &huge, Placement::default()).is_err());
        assert_eq!(ids(&rules, "override")[2], "b");
        assert_eq!(rules.get("override", "b").unwrap()["actions"], json!([]));
    }

    #[test]
    fn bad_edits_are_refused_and_change_nothing() {
        let mut rules = set();
        let before = rules.to_json();
        let notify = json!({ "actions": ["notify"] });
        let cases: [(&str, &str, Value, Placement); 13] = [
            ("room", "x", json!({ "actions": [{ "set_tweak": "sound" }] }), Placement::default()),
            (
                "room",
                "x",
                json!({ "actions": [{ "set_tweak": "highlight", "value": "yes" }] }),
                Placement::default(),
            ),
            (
                "override",
                "x",
                json!({ "actions": [], "conditions": [{ "kind": "event_match" }] }),
                Placement::default(),
            ),
            ("room", "x", notify.clone(), Placement { before: Some("x"), after: None }),
            ("override", "x", notify.clone(), Placement::default()),
            ("underride", "x", json!({ "actions": [], "conditions": [{}] }), Placement::default()),
            ("content", "x", notify.clone(), Placement::default()),
            ("room", "x", json!({}), Placement::default()),
            ("room", "x", json!({ "actions": ["not_an_action"] }), Placement::default()),
            ("room", ".mine", notify.clone(), Placement::default()),
            ("room", "#fo\\o:example.com", notify.clone(), Placement::default()),
            ("room", "x", notify.clone(), Placement { before: Some("nowhere"), after: None }),
            (
                "override",
                "x",
                json!({ "actions": [], "conditions": [] }),
                Placement { before: Some(".m.rule.master"), after: None },
            ),
        ];
        for (kind, id, body, at) in cases {
            assert!(rules.put(kind, id, &body, at).is_err(), "{kind} {id} {body}");
        }
        assert!(rules.delete("override", ".m.rule.master").is_err());
        assert!(rules.delete("room", "nothing").is_err());
        assert!(kind("not_a_template").is_err());
        assert_eq!(rules.to_json(), before);
    }
}
