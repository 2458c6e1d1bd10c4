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

/// The server name of a user id (`@alice:example.org` → `example.org`; a port stays with it).
pub fn server_of(user_id: &str) -> Option<&str> {
    user_id.strip_prefix('@')?.split_once(':').map(|(_, server)| server).filter(|s| !s.is_empty())
}

/// Whether `user_id` is a user of the homeserver `server_name`.
pub fn is_local_user(user_id: &str, server_name: &str) -> bool {
    server_of(user_id) == Some(server_name)
}

/// Whether `value` looks like a Matrix user id: `@localpart:server`, at most 255 bytes, without
/// whitespace or control characters.
pub fn is_user_id(value: &str) -> bool {
    value.len() <= 255
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && value
            .strip_prefix('@')
            .and_then(|v| v.split_once(':'))
            .is_some_and(|(l, s)| !l.is_empty() && !s.is_empty())
}

/// The net name of the bridge's own connection.
pub const BOT_CONN: &str = "irc/bot";

/// Whether the bridge keeps a stored connection `name` of `user` (`None`: the bridge's own) on
/// the homeserver `server_name`: its own as [`BOT_CONN`], and users of that server (no others)
/// under [`user_conn_name`].
pub fn keeps_conn(name: &str, user: Option<&str>, server_name: &str) -> bool {
    match user {
        None => name == BOT_CONN,
        Some(user) => is_local_user(user, server_name) && user_conn_name(user) == name,
    }
}

/// The longest connection name the bridge gives. The host takes names of up to 255 bytes, but
/// the timers named after a connection (`reconnect/<name>`) must fit its 256-byte timer tags.
pub const MAX_CONN_NAME: usize = 240;

/// The net name of a Matrix user's connection: `irc/<user id>`, or for a user id too long for
/// that (over [`MAX_CONN_NAME`] bytes), `irc/h/<SHA-256 of the user id, 64 hex digits>/<as much
/// of the user id as fits>`. User ids start with `@`, so the two forms never meet, and neither
/// meets the bridge's own `irc/bot`.
pub fn user_conn_name(user_id: &str) -> String {
    let plain = format!("irc/{user_id}");
    if plain.len() <= MAX_CONN_NAME {
        return plain;
    }
    let head: String = sha256(user_id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let head = format!("irc/h/{head}/");
    let mut end = (MAX_CONN_NAME - head.len()).min(user_id.len());
    while !user_id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{head}{}", &user_id[..end])
}

/// SHA-256 (FIPS 180-4), for connection names that must not collide.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
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
    fn local_users_and_user_ids() {
        assert_eq!(server_of("@alice:example.org"), Some("example.org"));
        assert_eq!(server_of("@alice:example.org:8448"), Some("example.org:8448"));
        assert_eq!(server_of("alice"), None);
        assert_eq!(server_of("@alice:"), None);
        assert!(is_local_user("@alice:example.org", "example.org"));
        assert!(!is_local_user("@alice:evil.org", "example.org"));
        assert!(!is_local_user("@alice:example.org.evil.org", "example.org"));
        assert!(!is_local_user("@alice:example.org:8448", "example.org"));
        assert!(is_user_id("@alice:example.org") && is_user_id("@a:b:8448"));
        for bad in ["alice", "@alice", "@:example.org", "@alice:", "@al ice:x", "@a\n:x", "#a:x"] {
            assert!(!is_user_id(bad), "{bad:?}");
        }
        assert!(!is_user_id(&format!("@{}:x", "a".repeat(260))));
    }

    #[test]
    fn sha256_known_answers() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            hex(sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Two blocks of padding, and a multiple of the block size.
        assert_eq!(
            hex(sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
    }

    #[test]
    fn connection_names_fit() {
        assert_eq!(user_conn_name("@alice:example.org"), "irc/@alice:example.org");
        let longest_plain = format!("@{}:x", "a".repeat(MAX_CONN_NAME - "irc/@:x".len()));
        assert_eq!(user_conn_name(&longest_plain), format!("irc/{longest_plain}"));
        let long = format!("@{}:example.org", "a".repeat(240));
        let name = user_conn_name(&long);
        assert!(name.starts_with("irc/h/") && name.len() == MAX_CONN_NAME, "{name}");
        // The hash, then the start of the id.
        let (hash, start) = name.split_once("/@").unwrap();
        assert_eq!(hash.len(), "irc/h/".len() + 64);
        assert!(long.starts_with(&format!("@{start}")));
        assert_eq!(name, user_conn_name(&long), "deterministic");
        // Ids that differ only past the kept part get different names.
        let other = format!("@{}:example.org.", "a".repeat(240));
        assert_ne!(user_conn_name(&other), name);
        // Cut between characters, not inside one.
        let wide = format!("@{}:example.org", "é".repeat(120));
        let name = user_conn_name(&wide);
        assert!(name.len() <= MAX_CONN_NAME && name.starts_with("irc/h/"), "{name}");
        // Timers named after a connection fit the host's 256-byte tags.
        assert!("reconnect/".len() + MAX_CONN_NAME <= 256);
    }

    #[test]
    fn connections_kept() {
        let keeps = |name: &str, user: Option<&str>| keeps_conn(name, user, "example.org");
        assert!(keeps("irc/bot", None));
        assert!(keeps("irc/@alice:example.org", Some("@alice:example.org")));
        // An earlier version connected users of other servers too.
        assert!(!keeps("irc/@alice:evil.org", Some("@alice:evil.org")));
        assert!(!keeps("irc/bot", Some("@alice:example.org")));
        assert!(!keeps("irc/other", None));
        // And named connections `irc/<user id>` whatever the length.
        let long = format!("@{}:example.org", "a".repeat(240));
        assert!(!keeps(&format!("irc/{long}"), Some(&long)));
        assert!(keeps(&user_conn_name(&long), Some(&long)));
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
