//! Names across the bridge: IRC nicks as puppet localparts and back, Matrix users as IRC nicks,
//! channels as portal room aliases, and the templates that shape them.

/// IRC's default case mapping (`rfc1459`): ASCII letters, and `[]\~` as the upper case of
/// `{}|^`. Nicks and channels that fold alike are the same to the server.
pub fn casefold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// A template with one placeholder, e.g. `irc_{nick}`: what comes before and after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    /// Parses `template`, which must hold `placeholder` (`{nick}`) exactly once.
    pub fn parse(template: &str, placeholder: &str) -> Result<Template, String> {
        match template.split_once(placeholder) {
            Some((prefix, suffix)) if !suffix.contains(placeholder) => {
                Ok(Template { prefix: prefix.to_owned(), suffix: suffix.to_owned() })
            }
            _ => Err(format!("{template:?} must contain {placeholder} exactly once")),
        }
    }

    pub fn fill(&self, value: &str) -> String {
        format!("{}{value}{}", self.prefix, self.suffix)
    }

    /// The value `filled` was made from, if it has the template's shape (and a value at all).
    pub fn extract<'a>(&self, filled: &'a str) -> Option<&'a str> {
        let value = filled.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        (!value.is_empty()).then_some(value)
    }

    /// The fixed text around the placeholder.
    pub fn fixed_text(&self) -> String {
        format!("{}{}", self.prefix, self.suffix)
    }
}

/// Whether a character may appear in a Matrix user localpart as the bridge writes them.
fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '/')
}

/// A nick as a user localpart: case-folded ([`casefold`], since the server treats `Bob` and `bob`
/// as one user), then every character outside `[a-z0-9._-/]` written as `=` and two lowercase
/// hex digits per UTF-8 byte (`=` itself included). `[Bob]` → `=7bbob=7d`.
pub fn encode_nick(nick: &str) -> String {
    let mut out = String::with_capacity(nick.len());
    for c in casefold(nick).chars() {
        if is_localpart_char(c) {
            out.push(c);
        } else {
            let mut buf = [0; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("={byte:02x}"));
            }
        }
    }
    out
}

/// The (case-folded) nick an [`encode_nick`] localpart part stands for. `None` unless `encoded`
/// is exactly what `encode_nick` writes for it, so that one nick has one puppet.
pub fn decode_nick(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, after)) = rest.split_first() {
        if b == b'=' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(b);
            rest = after;
        }
    }
    let nick = String::from_utf8(bytes).ok()?;
    (!nick.is_empty() && encode_nick(&nick) == encoded).then_some(nick)
}

/// Whether a character may appear in an IRC nick (RFC 2812: letters, digits, `-` and
/// `[]\`_^{|}`).
pub fn is_nick_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-[]\\`_^{|}".contains(c)
}

/// Whether `nick` is a nick the bridge may ask for: nick characters, not starting with a digit
/// or `-`.
pub fn is_valid_nick(nick: &str) -> bool {
    nick.chars().all(is_nick_char) && nick.chars().next().is_some_and(|c| !c.is_ascii_digit() && c != '-')
}

/// The IRC nick of a Matrix user: the template with the localpart, characters a nick cannot have
/// as `_`, and `_` in front if it would start with a digit or `-`.
/// `@alice:example.org` with `{localpart}[m]` → `alice[m]`; `@3.14:x` → `_3_14[m]`.
pub fn nick_for_user(template: &Template, user_id: &str) -> String {
    let localpart = localpart(user_id);
    let clean: String = localpart.chars().map(|c| if is_nick_char(c) { c } else { '_' }).collect();
    let nick = template.fill(&clean);
    match nick.chars().next() {
        Some(c) if c.is_ascii_digit() || c == '-' => format!("_{nick}"),
        None => "_".to_owned(),
        Some(_) => nick,
    }
}

/// The nick to try after `attempt` (from 1) tries of `base` were refused as taken: `base_`,
/// `base__`, then `base_3`, `base_4`…
pub fn alternative_nick(base: &str, attempt: u32) -> String {
    match attempt {
        0 => base.to_owned(),
        1 | 2 => format!("{base}{}", "_".repeat(attempt as usize)),
        n => format!("{base}_{n}"),
    }
}

/// A nick that is valid on any server, for one whose own was refused as malformed: `mx` and the
/// user id's hash (FNV-1a, six hex digits).
pub fn fallback_nick(user_id: &str) -> String {
    let hash = user_id.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("mx{:06x}", hash & 0x00ff_ffff)
}

/// An IRC username (the ident part of `nick!user@host`): letters and digits of `from`, at most
/// ten, or `matrix`.
pub fn username(from: &str) -> String {
    let name: String = from.chars().filter(char::is_ascii_alphanumeric).take(10).collect();
    if name.is_empty() { "matrix".to_owned() } else { name.to_ascii_lowercase() }
}

/// The localpart of a user id (`@alice:example.org` → `alice`).
pub fn localpart(user_id: &str) -> &str {
    let id = user_id.strip_prefix('@').unwrap_or(user_id);
    id.split_once(':').map_or(id, |(local, _)| local)
}

/// A channel name as the bridge keeps it: case-folded, `#` first, at most 50 bytes, without the
/// characters a channel cannot have (space, comma, BEL), `:` (it would end an alias's localpart)
/// or control characters. `None` if it is not such a name.
pub fn normalize_channel(channel: &str) -> Option<String> {
    let channel = channel.trim();
    let valid = channel.starts_with('#')
        && (2..=50).contains(&channel.len())
        && !channel.chars().any(|c| c == ' ' || c == ',' || c == ':' || c.is_control());
    valid.then(|| casefold(channel))
}

/// The names the bridge gives to Matrix things, from its templates and the server's name.
#[derive(Clone, Debug)]
pub struct Naming {
    pub server_name: String,
    pub puppet: Template,
    pub alias: Template,
    pub nick: Template,
}

impl Naming {
    /// The puppet of an IRC nick: `bob` → `@irc_bob:example.org`.
    pub fn puppet_id(&self, nick: &str) -> String {
        format!("@{}:{}", self.puppet.fill(&encode_nick(nick)), self.server_name)
    }

    /// The (case-folded) nick a puppet id stands for, `None` if it is not one of the bridge's
    /// puppet ids.
    pub fn nick_of_puppet(&self, user_id: &str) -> Option<String> {
        let (local, server) = user_id.strip_prefix('@')?.split_once(':')?;
        if server != self.server_name {
            return None;
        }
        decode_nick(self.puppet.extract(local)?)
    }

    /// The localpart of a channel's portal alias: `#Test` → `irc_test`.
    pub fn alias_localpart(&self, channel: &str) -> String {
        let name = channel.strip_prefix('#').unwrap_or(channel);
        self.alias.fill(&name.to_lowercase())
    }

    /// A channel's portal alias: `#test` → `#irc_test:example.org`.
    pub fn alias(&self, channel: &str) -> String {
        format!("#{}:{}", self.alias_localpart(channel), self.server_name)
    }

    /// The IRC nick of a Matrix user (see [`nick_for_user`]).
    pub fn irc_nick(&self, user_id: &str) -> String {
        nick_for_user(&self.nick, user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming() -> Naming {
        Naming {
            server_name: "example.org".into(),
            puppet: Template::parse("irc_{nick}", "{nick}").unwrap(),
            alias: Template::parse("irc_{channel}", "{channel}").unwrap(),
            nick: Template::parse("{localpart}[m]", "{localpart}").unwrap(),
        }
    }

    #[test]
    fn folds_case_the_irc_way() {
        assert_eq!(casefold("Bob[Away]\\~"), "bob{away}|^");
        assert_eq!(casefold("#Test"), "#test");
    }

    #[test]
    fn templates() {
        let t = Template::parse("irc_{nick}_x", "{nick}").unwrap();
        assert_eq!(t.fill("bob"), "irc_bob_x");
        assert_eq!(t.extract("irc_bob_x"), Some("bob"));
        assert_eq!(t.extract("irc__x"), None);
        assert_eq!(t.extract("other_bob_x"), None);
        assert_eq!(t.fixed_text(), "irc__x");
        assert!(Template::parse("irc_", "{nick}").is_err());
        assert!(Template::parse("{nick}{nick}", "{nick}").is_err());
    }

    #[test]
    fn encodes_nicks_as_localparts() {
        assert_eq!(encode_nick("bob"), "bob");
        assert_eq!(encode_nick("Bob"), "bob");
        assert_eq!(encode_nick("[Bob]"), "=7bbob=7d");
        assert_eq!(encode_nick("a=b"), "a=3db");
        assert_eq!(encode_nick("x|y^z`"), "x=7cy=5ez=60");
        assert_eq!(encode_nick("zoë"), "zo=c3=ab");
        assert_eq!(encode_nick("a_b-c.d/e"), "a_b-c.d/e");
    }

    #[test]
    fn decodes_exactly_what_it_encodes() {
        for nick in ["bob", "{bob}", "a=b", "x|y^z`", "zoë", "a_b-c", "==", "=3d"] {
            assert_eq!(decode_nick(&encode_nick(nick)).as_deref(), Some(nick), "{nick}");
        }
        // Upper case nicks come back folded: the server sees the same user.
        assert_eq!(decode_nick(&encode_nick("[Bob]")).as_deref(), Some("{bob}"));
        // Not canonical, or not an encoding at all.
        for encoded in ["", "=61", "=7B", "bob=", "bob=4", "=zz", "Bob", "=ff", "a b"] {
            assert_eq!(decode_nick(encoded), None, "{encoded}");
        }
    }

    #[test]
    fn puppet_ids_round_trip() {
        let n = naming();
        assert_eq!(n.puppet_id("bob"), "@irc_bob:example.org");
        assert_eq!(n.puppet_id("[Bob]"), "@irc_=7bbob=7d:example.org");
        assert_eq!(n.nick_of_puppet("@irc_=7bbob=7d:example.org").as_deref(), Some("{bob}"));
        assert_eq!(n.nick_of_puppet("@irc_bob:example.org").as_deref(), Some("bob"));
        assert_eq!(n.nick_of_puppet("@irc_bob:other.org"), None);
        assert_eq!(n.nick_of_puppet("@bob:example.org"), None);
        assert_eq!(n.nick_of_puppet("@irc_:example.org"), None);
        assert_eq!(n.nick_of_puppet("irc_bob"), None);
    }

    #[test]
    fn aliases() {
        let n = naming();
        assert_eq!(n.alias_localpart("#Test"), "irc_test");
        assert_eq!(n.alias("#rust-dev"), "#irc_rust-dev:example.org");
    }

    #[test]
    fn nicks_for_matrix_users() {
        let n = naming();
        assert_eq!(n.irc_nick("@alice:example.org"), "alice[m]");
        assert_eq!(n.irc_nick("@alice.smith:other.org"), "alice_smith[m]");
        assert_eq!(n.irc_nick("@3po:example.org"), "_3po[m]");
        assert_eq!(n.irc_nick("@-x:example.org"), "_-x[m]");
        assert!(is_valid_nick(&n.irc_nick("@a=b/c+d:example.org")));
        assert!(is_valid_nick("lattice") && is_valid_nick("[m]bob") && is_valid_nick("b0b-"));
        assert!(
            !is_valid_nick("0bob") && !is_valid_nick("-bob") && !is_valid_nick("bo b") && !is_valid_nick("")
        );
    }

    #[test]
    fn alternative_and_fallback_nicks() {
        assert_eq!(alternative_nick("alice[m]", 1), "alice[m]_");
        assert_eq!(alternative_nick("alice[m]", 2), "alice[m]__");
        assert_eq!(alternative_nick("alice[m]", 3), "alice[m]_3");
        let fallback = fallback_nick("@alice:example.org");
        assert_eq!(fallback, fallback_nick("@alice:example.org"));
        assert_ne!(fallback, fallback_nick("@bob:example.org"));
        assert!(fallback.len() == 8 && is_valid_nick(&fallback), "{fallback}");
    }

    #[test]
    fn usernames_and_localparts() {
        assert_eq!(username("Alice.Smith_2000"), "alicesmith");
        assert_eq!(username("..."), "matrix");
        assert_eq!(localpart("@alice:example.org"), "alice");
        assert_eq!(localpart("@alice:example.org:8448"), "alice");
    }

    #[test]
    fn normalizes_channels() {
        assert_eq!(normalize_channel(" #Test ").as_deref(), Some("#test"));
        assert_eq!(normalize_channel("#[x]").as_deref(), Some("#{x}"));
        for bad in ["test", "#", "#a b", "#a,b", "#a:b", "#a\u{7}", &format!("#{}", "x".repeat(50))] {
            assert_eq!(normalize_channel(bad), None, "{bad:?}");
        }
    }
}
