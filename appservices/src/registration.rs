//! Registration files: `id`, `url`, `as_token`, `hs_token`, `sender_localpart`, `namespaces`
//! (`users`, `aliases`, `rooms`: lists of `{exclusive, regex}`), `rate_limited`, `protocols`.

use std::path::Path;

use regex::Regex;

use crate::claims::Claim;
use serde::Deserialize;

/// One namespace entry: a regex over ids and whether the service claims it exclusively.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: Regex,
}

/// A validated application-service registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: String,
    /// Where the homeserver pushes transactions; `None` for services that only use the client API.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
    pub rate_limited: bool,
    pub protocols: Vec<String>,
}

#[derive(Deserialize)]
struct RawNamespace {
    #[serde(default)]
    exclusive: bool,
    regex: String,
}

#[derive(Deserialize, Default)]
struct RawNamespaces {
    #[serde(default)]
    users: Vec<RawNamespace>,
    #[serde(default)]
    aliases: Vec<RawNamespace>,
    #[serde(default)]
    rooms: Vec<RawNamespace>,
}

#[derive(Deserialize)]
struct RawRegistration {
    id: String,
    url: Option<String>,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
    #[serde(default)]
    namespaces: RawNamespaces,
    rate_limited: Option<bool>,
    /// May be absent or null.
    protocols: Option<Vec<String>>,
}

/// Why a registration file was refused.
#[derive(Debug, thiserror::Error)]
#[error("application service registration {path}: {message}")]
pub struct RegistrationError {
    pub path: String,
    pub message: String,
}

impl Namespace {
    /// A namespace of whole ids matching `regex`.
    pub fn new(regex: &str, exclusive: bool) -> Result<Namespace, regex::Error> {
        // Bounded: a registration's regex must not take the server's memory.
        let regex = regex::RegexBuilder::new(&format!("^(?:{regex})$")).size_limit(1 << 20).build()?;
        Ok(Namespace { exclusive, regex })
    }
}

fn namespaces(raw: Vec<RawNamespace>, kind: &str) -> Result<Vec<Namespace>, String> {
    raw.into_iter()
        .map(|ns| {
            Namespace::new(&ns.regex, ns.exclusive)
                .map_err(|e| format!("invalid {kind} regex `{}`: {e}", ns.regex))
        })
        .collect()
}

impl Registration {
    /// Parses and validates one registration's YAML text.
    pub fn parse(text: &str) -> Result<Registration, String> {
        let raw: RawRegistration = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if raw.id.is_empty() || raw.as_token.is_empty() || raw.hs_token.is_empty() {
            return Err("id, as_token and hs_token must not be empty".into());
        }
        if raw.sender_localpart.is_empty() {
            return Err("sender_localpart must not be empty".into());
        }
        Ok(Registration {
            users: namespaces(raw.namespaces.users, "users")?,
            aliases: namespaces(raw.namespaces.aliases, "aliases")?,
            rooms: namespaces(raw.namespaces.rooms, "rooms")?,
            id: raw.id,
            url: raw.url.filter(|u| !u.is_empty() && u != "null"),
            as_token: raw.as_token,
            hs_token: raw.hs_token,
            sender_localpart: raw.sender_localpart,
            rate_limited: raw.rate_limited.unwrap_or(true),
            protocols: raw.protocols.unwrap_or_default(),
        })
    }

    pub fn is_interested_in_user(&self, user_id: &str) -> bool {
        self.users.iter().any(|ns| ns.regex.is_match(user_id))
    }

    pub fn is_interested_in_alias(&self, alias: &str) -> bool {
        self.aliases.iter().any(|ns| ns.regex.is_match(alias))
    }

    pub fn is_interested_in_room(&self, room_id: &str) -> bool {
        self.rooms.iter().any(|ns| ns.regex.is_match(room_id))
    }

    /// What the service claims exclusively, for [`crate::Claims`].
    pub fn claim(&self, server_name: &str) -> Claim {
        Claim {
            owner: format!("application service {}", self.id),
            own_user: format!("@{}:{server_name}", self.sender_localpart),
            plugin: None,
            users: self.users.clone(),
            aliases: self.aliases.clone(),
        }
    }
}

/// Loads every registration file; ids and tokens must be unique across them.
pub fn load_registrations(paths: &[impl AsRef<Path>]) -> Result<Vec<Registration>, RegistrationError> {
    let mut out: Vec<Registration> = Vec::new();
    for path in paths {
        let display = path.as_ref().display().to_string();
        let fail = |message: String| RegistrationError { path: display.clone(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let reg = Registration::parse(&text).map_err(fail)?;
        if out.iter().any(|r| r.id == reg.id) {
            return Err(fail(format!("duplicate id `{}`", reg.id)));
        }
        if out.iter().any(|r| r.as_token == reg.as_token) {
            return Err(fail("as_token is used by another registration".into()));
        }
        out.push(reg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r##"
id: "irc"
url: "http://127.0.0.1:9000"
as_token: "as-secret"
hs_token: "hs-secret"
sender_localpart: "_irc_bot"
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_.*:example.org"
  aliases:
    - exclusive: false
      regex: "#_irc_.*:example.org"
  rooms: []
"##;

    #[test]
    fn parses_and_matches_whole_ids() {
        let reg = Registration::parse(EXAMPLE).unwrap();
        assert_eq!(reg.id, "irc");
        assert!(reg.rate_limited);
        assert!(reg.is_interested_in_user("@_irc_bob:example.org"));
        assert!(reg.claim("example.org").reserves_user("@_irc_bob:example.org"));
        assert!(!reg.is_interested_in_user("@_irc_bob:example.org.evil"));
        assert!(reg.is_interested_in_alias("#_irc_chan:example.org"));
        assert!(!reg.is_interested_in_room("!x:example.org"));
    }

    #[test]
    fn rejects_bad_files() {
        assert!(Registration::parse("id: x").is_err());
        let bad_regex = EXAMPLE.replace("@_irc_.*:example.org", "@_irc_(:example.org");
        assert!(Registration::parse(&bad_regex).unwrap_err().contains("regex"));
        let dir = std::env::temp_dir().join(format!("lattice-as-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.yaml"), dir.join("b.yaml"));
        std::fs::write(&a, EXAMPLE).unwrap();
        std::fs::write(&b, EXAMPLE).unwrap();
        assert_eq!(load_registrations(&[&a]).unwrap().len(), 1);
        let err = load_registrations(&[&a, &b]).unwrap_err();
        assert!(err.message.contains("duplicate"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
