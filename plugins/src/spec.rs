//! A plugin as `lattice.toml` declares it:
//!
//! ```toml
//! [plugins.echo]
//! path = "plugins/echo_bot.wasm"
//! user = "echo"                 # the bot's localpart (default: the plugin id)
//! config = { greeting = "hi" }  # checked against what the plugin declares in `init`
//! [plugins.echo.grants]
//! storage_mb = 10
//! ```
//!
//! and the check of its `config` table against the plugin's own declaration: unknown keys,
//! missing required keys and values of the wrong kind refuse the start. Secrets are written
//! `{ env = "NAME" }`, read from the server's environment, and never shown to the plugin.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bindings::guest::{ConfigKey, ConfigKind};

/// One `[plugins.<id>]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// The component (`.wasm`).
    pub path: PathBuf,
    /// The bot user's localpart; the plugin id when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Handed to the plugin (secrets excepted) after checking it against its declaration.
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub grants: Grants,
}

/// What the admin allows a plugin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// Key-value store quota (keys and values), in MiB.
    pub storage_mb: u32,
    /// Linear memory per instance, in MiB.
    pub memory_mb: u32,
    /// CPU time one call may spend in guest code (time in host calls does not count), in ms.
    pub cpu_ms_per_call: u32,
    /// Wall-clock time one call may take, host calls included, in ms.
    pub wall_ms_per_call: u32,
    /// Events sent per second (sustained); twice as many may go in a burst.
    pub sends_per_second: u32,
    /// Timers the plugin may have set at once.
    pub max_timers: u32,
    /// Hosts the plugin may send HTTP requests to (`host`, `*.domain` or either with `:port`),
    /// through `wasi:http`; none by default (the import is then not even linked).
    pub http_hosts: Vec<String>,
    /// Destinations (`host:port`) the plugin may open connections to (`net`); none by default.
    pub net: Vec<String>,
    /// Connections the plugin may have open at once.
    pub max_connections: u32,
    /// Lines the plugin may send per second over all its connections (four times as many in a
    /// burst).
    pub net_lines_per_second: u32,
    /// The users a bridge acts as and the aliases it owns, in the shape of an appservice
    /// registration's namespaces (regexes over whole ids).
    pub namespaces: NamespaceGrants,
    /// Whether the server asks the plugin (`policy-guest.check-event`) about every event its
    /// users send, and waits for the answer.
    pub policy: bool,
    /// How long the server waits for a policy answer, in ms; slower answers allow the event.
    pub policy_ms: u32,
    /// Whether requests to `/_lattice/plugins/<id>/…` reach the plugin (`on-http-request`).
    pub webhooks: bool,
    /// If not empty, the only rooms (ids or aliases, resolved at start) the plugin's users may
    /// join and act in and whose events it sees; it creates no rooms then.
    pub rooms: Vec<String>,
}

/// One namespace: a regex over whole ids, and whether the plugin owns it exclusively (clients
/// cannot register such users or create such aliases).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceGrant {
    pub regex: String,
    #[serde(default)]
    pub exclusive: bool,
}

/// `grants.namespaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceGrants {
    pub users: Vec<NamespaceGrant>,
    pub aliases: Vec<NamespaceGrant>,
}

/// Longest namespace regex, and most namespaces of a kind.
const MAX_REGEX: usize = 256;
const MAX_NAMESPACES: usize = 16;

fn compile(grants: &[NamespaceGrant], kind: &str) -> Result<Vec<appservices::Namespace>, String> {
    if grants.len() > MAX_NAMESPACES {
        return Err(format!("grants.namespaces.{kind}: at most {MAX_NAMESPACES} entries"));
    }
    grants
        .iter()
        .map(|g| {
            if g.regex.len() > MAX_REGEX {
                return Err(format!("grants.namespaces.{kind}: regexes are at most {MAX_REGEX} bytes"));
            }
            appservices::Namespace::new(&g.regex, g.exclusive)
                .map_err(|e| format!("grants.namespaces.{kind}: `{}`: {e}", g.regex))
        })
        .collect()
}

impl PluginSpec {
    /// The bot user's localpart.
    pub fn localpart<'a>(&'a self, id: &'a str) -> &'a str {
        self.user.as_deref().unwrap_or(id)
    }

    /// The plugin's namespaces as a claim (what clients may not register or create).
    pub fn claim(&self, id: &str, server_name: &str) -> Result<appservices::Claim, String> {
        Ok(appservices::Claim {
            owner: format!("plugin {id}"),
            own_user: format!("@{}:{server_name}", self.localpart(id)),
            plugin: Some(id.to_owned()),
            users: compile(&self.grants.namespaces.users, "users")?,
            aliases: compile(&self.grants.namespaces.aliases, "aliases")?,
        })
    }
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            storage_mb: 10,
            memory_mb: 64,
            cpu_ms_per_call: 200,
            wall_ms_per_call: 30_000,
            sends_per_second: 10,
            max_timers: 1_000,
            http_hosts: Vec::new(),
            net: Vec::new(),
            max_connections: 100,
            net_lines_per_second: 50,
            namespaces: NamespaceGrants::default(),
            policy: false,
            policy_ms: 200,
            webhooks: false,
            rooms: Vec::new(),
        }
    }
}

impl Grants {
    /// Refuses grants the host cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.memory_mb) {
            return Err("grants.memory_mb must be between 1 and 4096".into());
        }
        if self.cpu_ms_per_call < 10 || self.wall_ms_per_call < self.cpu_ms_per_call {
            return Err(
                "grants.cpu_ms_per_call must be at least 10 and at most grants.wall_ms_per_call".into()
            );
        }
        if self.sends_per_second == 0 {
            return Err("grants.sends_per_second must be at least 1".into());
        }
        for host in &self.http_hosts {
            crate::http::Destination::parse(host).map_err(|e| format!("grants.http_hosts: {e}"))?;
        }
        for destination in &self.net {
            crate::net::parse_grant(destination).map_err(|e| format!("grants.net: {e}"))?;
        }
        if self.max_connections > 10_000 {
            return Err("grants.max_connections must be at most 10000".into());
        }
        if !(10..=5_000).contains(&self.policy_ms) {
            return Err("grants.policy_ms must be between 10 and 5000".into());
        }
        if self.net_lines_per_second == 0 {
            return Err("grants.net_lines_per_second must be at least 1".into());
        }
        if self.rooms.len() > 1000 {
            return Err("grants.rooms: at most 1000 rooms".into());
        }
        for room in &self.rooms {
            if ruma::RoomOrAliasId::parse(room).is_err() {
                return Err(format!("grants.rooms: `{room}` is not a room id or alias"));
            }
        }
        compile(&self.namespaces.users, "users")?;
        compile(&self.namespaces.aliases, "aliases")?;
        Ok(())
    }
}

/// A checked configuration: what the plugin sees, and the secrets the host keeps.
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckedConfig {
    pub visible: Map<String, Value>,
    pub secrets: BTreeMap<String, String>,
}

/// Checks `config` against the plugin's declared keys; `env` reads the server's environment.
pub(crate) fn check_config(
    declared: &[ConfigKey],
    config: &Map<String, Value>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<CheckedConfig, String> {
    if let Some(unknown) = config.keys().find(|k| !declared.iter().any(|d| &d.name == *k)) {
        return Err(format!("unknown key `{unknown}`"));
    }
    let mut checked = CheckedConfig::default();
    for key in declared {
        let Some(value) = config.get(&key.name) else {
            if key.required {
                return Err(format!("missing required key `{}` ({})", key.name, key.description));
            }
            continue;
        };
        if key.kind == ConfigKind::Secret {
            let var = value
                .get("env")
                .and_then(Value::as_str)
                .filter(|_| value.as_object().is_some_and(|o| o.len() == 1))
                .ok_or_else(|| format!("`{}` is a secret: write it as {{ env = \"VARIABLE\" }}", key.name))?;
            let secret =
                env(var).ok_or_else(|| format!("`{}`: environment variable {var} is not set", key.name))?;
            checked.secrets.insert(key.name.clone(), secret);
            continue;
        }
        let fits = match key.kind {
            ConfigKind::String => value.is_string(),
            ConfigKind::Integer => value.is_i64() || value.is_u64(),
            ConfigKind::Boolean => value.is_boolean(),
            ConfigKind::List => value.is_array(),
            ConfigKind::Table => value.is_object(),
            ConfigKind::Secret => unreachable!("handled above"),
        };
        if !fits {
            return Err(format!("`{}` must be a {}", key.name, kind_name(key.kind)));
        }
        checked.visible.insert(key.name.clone(), value.clone());
    }
    Ok(checked)
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::String => "string",
        ConfigKind::Integer => "integer",
        ConfigKind::Boolean => "boolean",
        ConfigKind::List => "list",
        ConfigKind::Table => "table",
        ConfigKind::Secret => "secret",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(name: &str, kind: ConfigKind, required: bool) -> ConfigKey {
        ConfigKey { name: name.into(), kind, required, description: format!("the {name}") }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_config_is_checked_against_the_declaration() {
        let declared = [
            key("model", ConfigKind::String, true),
            key("max", ConfigKind::Integer, false),
            key("api_key", ConfigKind::Secret, false),
        ];
        let env = |name: &str| (name == "KEY").then(|| "sk-secret".to_owned());
        let ok =
            check_config(&declared, &map(json!({"model": "m", "api_key": {"env": "KEY"}})), env).unwrap();
        assert_eq!(Value::Object(ok.visible), json!({"model": "m"}), "secrets are never visible");
        assert_eq!(ok.secrets["api_key"], "sk-secret");

        let err = check_config(&declared, &map(json!({"max": 3})), env).unwrap_err();
        assert!(err.contains("missing required key `model`"), "{err}");
        let err = check_config(&declared, &map(json!({"model": "m", "other": 1})), env).unwrap_err();
        assert!(err.contains("unknown key `other`"), "{err}");
        let err = check_config(&declared, &map(json!({"model": 5})), env).unwrap_err();
        assert!(err.contains("must be a string"), "{err}");
        let err = check_config(&declared, &map(json!({"model": "m", "api_key": "inline"})), env).unwrap_err();
        assert!(err.contains("is a secret"), "{err}");
        let err = check_config(&declared, &map(json!({"model": "m", "api_key": {"env": "NOPE"}})), env)
            .unwrap_err();
        assert!(err.contains("NOPE is not set"), "{err}");
    }

    #[test]
    fn grants_out_of_range_are_refused() {
        assert!(Grants::default().validate().is_ok());
        assert!(Grants { memory_mb: 0, ..Grants::default() }.validate().is_err());
        assert!(Grants { cpu_ms_per_call: 1, ..Grants::default() }.validate().is_err());
        assert!(Grants { sends_per_second: 0, ..Grants::default() }.validate().is_err());
        assert!(Grants { http_hosts: vec!["https://x".into()], ..Grants::default() }.validate().is_err());
        assert!(
            Grants { net: vec!["irc.example.org".into()], ..Grants::default() }.validate().is_err(),
            "needs a port"
        );
        assert!(Grants { net: vec!["irc.example.org:6697".into()], ..Grants::default() }.validate().is_ok());
        let bad_regex = NamespaceGrants {
            users: vec![NamespaceGrant { regex: "@irc_(".into(), exclusive: true }],
            aliases: vec![],
        };
        assert!(Grants { namespaces: bad_regex, ..Grants::default() }.validate().is_err());
    }
}
