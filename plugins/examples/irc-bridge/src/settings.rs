//! The bridge's configuration: the keys it declares, their defaults, and the checks that refuse
//! a start on values it cannot work with.

use std::collections::BTreeSet;

use lattice_plugin_sdk::serde_json::Value;
use lattice_plugin_sdk::{ConfigKey, ConfigKind, Registration};

use crate::names::{Naming, Template, is_user_id, is_valid_nick, normalize_channel};

pub const DEFAULT_ALIAS_TEMPLATE: &str = "irc_{channel}";
pub const DEFAULT_PUPPET_TEMPLATE: &str = "irc_{nick}";
pub const DEFAULT_NICK_TEMPLATE: &str = "{localpart}[m]";
pub const DEFAULT_BOT_NICK: &str = "lattice";
/// The most channels the bridge bridges, configured and added with `!irc bridge` together (its
/// own connection joins them all, and IRC servers limit the channels of one connection).
pub const MAX_CHANNELS: usize = 100;

/// The registration's configuration keys.
pub fn declare(registration: Registration) -> Registration {
    registration
        .config_key(ConfigKey::required(
            "server",
            ConfigKind::String,
            "The IRC server, host:port (also listed in grants.net).",
        ))
        .config_key(ConfigKey::optional("tls", ConfigKind::Boolean, "Connect with TLS (default false)."))
        .config_key(ConfigKey::optional(
            "channels",
            ConfigKind::List,
            "IRC channels to bridge, e.g. [\"#test\"] (default none; !irc bridge adds more).",
        ))
        .config_key(ConfigKey::optional(
            "alias_template",
            ConfigKind::String,
            "The portal room alias's localpart; {channel} is the channel without # (default irc_{channel}).",
        ))
        .config_key(ConfigKey::optional(
            "puppet_template",
            ConfigKind::String,
            "The localpart of an IRC user's puppet; {nick} is the escaped nick (default irc_{nick}).",
        ))
        .config_key(ConfigKey::optional(
            "nick_template",
            ConfigKind::String,
            "The IRC nick of a Matrix user; {localpart} is their localpart (default {localpart}[m]).",
        ))
        .config_key(ConfigKey::optional(
            "bot_nick",
            ConfigKind::String,
            "The nick of the bridge's own IRC connection (default lattice).",
        ))
        .config_key(ConfigKey::optional(
            "admins",
            ConfigKind::List,
            "Matrix user ids that may use `!irc bridge` (default none: the command is refused).",
        ))
}

/// The configuration, checked, with defaults applied.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `host:port`.
    pub server: String,
    pub tls: bool,
    /// The configured channels, normalized.
    pub channels: Vec<String>,
    pub naming: Naming,
    pub bot_nick: String,
    /// The users who may bridge more channels (`!irc bridge`).
    pub admins: BTreeSet<String>,
}

impl Settings {
    /// Reads the `config` table (`server_name`: the homeserver's, for puppet ids and aliases).
    pub fn from_config(config: &Value, server_name: &str) -> Result<Settings, String> {
        let text = |key: &str, default: &str| match &config[key] {
            Value::Null => Ok(default.to_owned()),
            Value::String(s) => Ok(s.clone()),
            _ => Err(format!("{key} must be a string")),
        };
        let server = text("server", "")?;
        if !valid_destination(&server) {
            return Err(format!("server must be host:port, not {server:?}"));
        }
        let tls = match &config["tls"] {
            Value::Null => false,
            Value::Bool(b) => *b,
            _ => return Err("tls must be true or false".to_owned()),
        };
        let channels = match &config["channels"] {
            Value::Null => Vec::new(),
            Value::Array(list) => list
                .iter()
                .map(|c| {
                    c.as_str()
                        .and_then(normalize_channel)
                        .ok_or_else(|| format!("channels: {c} is not an IRC channel name like \"#test\""))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("channels must be a list of channel names".to_owned()),
        };
        if channels.iter().collect::<BTreeSet<_>>().len() > MAX_CHANNELS {
            return Err(format!("channels: at most {MAX_CHANNELS} channels can be bridged"));
        }
        let admins = match &config["admins"] {
            Value::Null => BTreeSet::new(),
            Value::Array(list) => list
                .iter()
                .map(|a| {
                    a.as_str().filter(|a| is_user_id(a)).map(str::to_owned).ok_or_else(|| {
                        format!("admins: {a} is not a Matrix user id like \"@alice:example.org\"")
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("admins must be a list of Matrix user ids".to_owned()),
        };
        let alias = Template::parse(&text("alias_template", DEFAULT_ALIAS_TEMPLATE)?, "{channel}")
            .map_err(|e| format!("alias_template: {e}"))?;
        if alias.fixed_text().contains([':', ' ']) {
            return Err("alias_template must not contain ':' or spaces".to_owned());
        }
        let puppet = Template::parse(&text("puppet_template", DEFAULT_PUPPET_TEMPLATE)?, "{nick}")
            .map_err(|e| format!("puppet_template: {e}"))?;
        if !puppet
            .fixed_text()
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/'))
        {
            return Err("puppet_template may only contain a-z 0-9 . _ = - / besides {nick}".to_owned());
        }
        let nick = Template::parse(&text("nick_template", DEFAULT_NICK_TEMPLATE)?, "{localpart}")
            .map_err(|e| format!("nick_template: {e}"))?;
        if !is_valid_nick(&nick.fill("x")) {
            return Err("nick_template may only contain IRC nick characters besides {localpart}".to_owned());
        }
        let bot_nick = text("bot_nick", DEFAULT_BOT_NICK)?;
        if !is_valid_nick(&bot_nick) {
            return Err(format!("bot_nick {bot_nick:?} is not a valid IRC nick"));
        }
        let naming = Naming { server_name: server_name.to_owned(), puppet, alias, nick };
        Ok(Settings { server, tls, channels, naming, bot_nick, admins })
    }
}

/// `host:port` with a port from 1 to 65535 and a host without spaces or slashes.
fn valid_destination(destination: &str) -> bool {
    let Some((host, port)) = destination.rsplit_once(':') else { return false };
    let host_ok = !host.is_empty() && !host.contains([' ', '/', '@']);
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use lattice_plugin_sdk::serde_json::json;

    use super::*;

    #[test]
    fn defaults() {
        let s = Settings::from_config(&json!({"server": "irc.example.org:6697"}), "example.org").unwrap();
        assert_eq!(
            (s.server.as_str(), s.tls, s.bot_nick.as_str()),
            ("irc.example.org:6697", false, "lattice")
        );
        assert!(s.channels.is_empty());
        assert!(s.admins.is_empty());
        assert_eq!(s.naming.puppet_id("bob"), "@irc_bob:example.org");
        assert_eq!(s.naming.alias("#test"), "#irc_test:example.org");
        assert_eq!(s.naming.irc_nick("@alice:example.org"), "alice[m]");
    }

    #[test]
    fn everything_set() {
        let config = json!({
            "server": "[::1]:6667",
            "tls": true,
            "channels": ["#Test", "#rust"],
            "alias_template": "libera_{channel}",
            "puppet_template": "libera_{nick}",
            "nick_template": "m_{localpart}",
            "bot_nick": "bridge",
            "admins": ["@admin:example.org", "@ops:other.org"],
        });
        let s = Settings::from_config(&config, "example.org").unwrap();
        assert!(s.tls);
        assert_eq!(s.channels, ["#test", "#rust"]);
        assert_eq!(s.naming.puppet_id("Bob"), "@libera_bob:example.org");
        assert_eq!(s.naming.alias("#test"), "#libera_test:example.org");
        assert_eq!(s.naming.irc_nick("@alice:example.org"), "m_alice");
        assert_eq!(s.bot_nick, "bridge");
        assert_eq!(s.admins, BTreeSet::from(["@admin:example.org".to_owned(), "@ops:other.org".to_owned()]));
    }

    #[test]
    fn refusals() {
        let with = |key: &str, value: Value| {
            let mut config = json!({"server": "irc.example.org:6697"});
            config[key] = value;
            Settings::from_config(&config, "example.org").map(|_| ()).unwrap_err()
        };
        assert!(with("server", json!("irc.example.org")).contains("host:port"));
        assert!(with("server", json!("irc.example.org:0")).contains("host:port"));
        assert!(with("server", json!(":6667")).contains("host:port"));
        assert!(with("tls", json!("yes")).contains("tls"));
        assert!(with("channels", json!(["test"])).contains("channels"));
        assert!(with("channels", json!("#test")).contains("channels"));
        assert!(with("alias_template", json!("irc")).contains("alias_template"));
        assert!(with("alias_template", json!("a:{channel}")).contains("alias_template"));
        assert!(with("puppet_template", json!("IRC_{nick}")).contains("puppet_template"));
        assert!(with("puppet_template", json!("irc_{nick}{nick}")).contains("puppet_template"));
        assert!(with("nick_template", json!("{localpart} m")).contains("nick_template"));
        assert!(with("bot_nick", json!("9lives")).contains("bot_nick"));
        assert!(with("admins", json!("@admin:example.org")).contains("admins"));
        assert!(with("admins", json!(["admin"])).contains("admins"));
        assert!(with("admins", json!([42])).contains("admins"));
        let too_many: Vec<String> = (0..=MAX_CHANNELS).map(|i| format!("#c{i}")).collect();
        assert!(with("channels", json!(too_many)).contains("at most"));
        // Repeats count once.
        let mut config = json!({"server": "irc.example.org:6697"});
        config["channels"] = json!(vec!["#same"; MAX_CHANNELS + 1]);
        assert!(Settings::from_config(&config, "example.org").is_ok());
        assert!(Settings::from_config(&json!({}), "example.org").is_err());
    }
}
