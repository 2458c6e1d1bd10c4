//! IRC protocol lines (RFC 1459/2812 with IRCv3 message tags): parsing what the server sends
//! into a [`Message`], and building the lines the bridge sends.

use std::collections::BTreeMap;

/// The longest line, `\r\n` excluded, that servers accept (512 with it).
pub const MAX_LINE_BYTES: usize = 510;

/// Who sent a message: `nick!user@host`, or a server name (then only `nick` is set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub nick: String,
    pub user: Option<String>,
    pub host: Option<String>,
}

impl Source {
    fn parse(source: &str) -> Source {
        let (rest, host) = match source.split_once('@') {
            Some((rest, host)) => (rest, Some(host.to_owned())),
            None => (source, None),
        };
        let (nick, user) = match rest.split_once('!') {
            Some((nick, user)) => (nick, Some(user.to_owned())),
            None => (rest, None),
        };
        Source { nick: nick.to_owned(), user, host }
    }
}

/// One message from the server: `@tags :source COMMAND param param :trailing`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// IRCv3 tags, values unescaped (a tag without a value has an empty one).
    pub tags: BTreeMap<String, String>,
    pub source: Option<Source>,
    /// The command, upper case, or a three-digit numeric reply.
    pub command: String,
    /// The parameters, the trailing one (after ` :`) last, as any other.
    pub params: Vec<String>,
}

impl Message {
    /// Parses one line (a trailing `\r\n` is ignored). `None` for a line without a command.
    pub fn parse(line: &str) -> Option<Message> {
        let mut rest = line.trim_end_matches(['\r', '\n']);
        let mut message = Message::default();
        if let Some(tagged) = rest.strip_prefix('@') {
            let (tags, after) = tagged.split_once(' ').unwrap_or((tagged, ""));
            message.tags = parse_tags(tags);
            rest = after;
        }
        rest = rest.trim_start_matches(' ');
        if let Some(sourced) = rest.strip_prefix(':') {
            let (source, after) = sourced.split_once(' ').unwrap_or((sourced, ""));
            message.source = Some(Source::parse(source));
            rest = after;
        }
        rest = rest.trim_start_matches(' ');
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return None;
        }
        message.command = command.to_ascii_uppercase();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                message.params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            message.params.push(param.to_owned());
            rest = after;
        }
        Some(message)
    }

    /// The `i`th parameter.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    /// The sender's nick (or server name).
    pub fn nick(&self) -> Option<&str> {
        self.source.as_ref().map(|s| s.nick.as_str())
    }

    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags.get(name).map(String::as_str)
    }
}

fn parse_tags(tags: &str) -> BTreeMap<String, String> {
    tags.split(';')
        .filter(|t| !t.is_empty())
        .map(|tag| match tag.split_once('=') {
            Some((key, value)) => (key.to_owned(), unescape_tag_value(value)),
            None => (tag.to_owned(), String::new()),
        })
        .collect()
}

/// IRCv3 tag value escapes: `\:` `;`, `\s` space, `\\` `\`, `\r`, `\n`; a backslash before
/// anything else is dropped, and so is a lone one at the end.
fn unescape_tag_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Builds a line from a command and its parameters. Line breaks and NULs in a parameter become
/// spaces (they would end the line early); the last parameter is written as trailing (`:…`),
/// which it must be when it is empty, holds a space or starts with `:`. Middle parameters must
/// not need that; the bridge only passes channels and nicks there.
pub fn line(command: &str, params: &[&str]) -> String {
    let mut out = command.to_owned();
    for (i, param) in params.iter().enumerate() {
        let clean: String =
            param.chars().map(|c| if matches!(c, '\r' | '\n' | '\0') { ' ' } else { c }).collect();
        out.push(' ');
        if i + 1 == params.len() && (clean.is_empty() || clean.contains(' ') || clean.starts_with(':')) {
            out.push(':');
        }
        out.push_str(&clean);
    }
    out
}

/// Milliseconds since the Unix epoch of an IRCv3 `time` tag (`2024-05-01T12:30:05.123Z`,
/// UTC); `None` if it is not in that form.
pub fn parse_server_time(value: &str) -> Option<u64> {
    let (date, time) = value.strip_suffix('Z')?.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut time_parts = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (time_parts.next()??, time_parts.next()??, time_parts.next()??);
    let valid = (1970..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61
        && !fraction.is_empty()
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    // Milliseconds: the first three digits of the fraction, padded.
    let millis = format!("{fraction:0<3}")[..3].parse::<i64>().ok()?;
    let seconds = days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (the usual "days from
/// civil" arithmetic: years counted from March, so the leap day ends a year).
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_from_a_user() {
        let m = Message::parse(":bob!~bob@host.example PRIVMSG #test :hello there\r\n").unwrap();
        assert_eq!(
            m.source,
            Some(Source { nick: "bob".into(), user: Some("~bob".into()), host: Some("host.example".into()) })
        );
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#test", "hello there"]);
        assert_eq!(m.nick(), Some("bob"));
        assert!(m.tags.is_empty());
    }

    #[test]
    fn parses_tags_with_escapes() {
        let m = Message::parse(
            r"@time=2024-05-01T12:30:05.123Z;msgid=a\sb\:c\\d;+draft/flag :nick PRIVMSG #c :x",
        )
        .unwrap();
        assert_eq!(m.tag("time"), Some("2024-05-01T12:30:05.123Z"));
        assert_eq!(m.tag("msgid"), Some(r"a b;c\d"));
        assert_eq!(m.tag("+draft/flag"), Some(""));
        assert_eq!(m.nick(), Some("nick"));
        assert_eq!(unescape_tag_value(r"end\"), "end");
        assert_eq!(unescape_tag_value(r"\x\r\n"), "x\r\n");
    }

    #[test]
    fn parses_commands_without_source_or_trailing() {
        let ping = Message::parse("PING :irc.example.org").unwrap();
        assert_eq!(
            (&ping.source, ping.command.as_str(), ping.param(0)),
            (&None, "PING", Some("irc.example.org"))
        );
        let join = Message::parse(":alice!a@h join #Test").unwrap();
        assert_eq!((join.command.as_str(), join.params.as_slice()), ("JOIN", &["#Test".to_owned()][..]));
        let server = Message::parse(":irc.example.org 001 me :Welcome to IRC").unwrap();
        assert_eq!(server.source.unwrap(), Source { nick: "irc.example.org".into(), user: None, host: None });
        assert_eq!(server.params, ["me", "Welcome to IRC"]);
    }

    #[test]
    fn keeps_empty_and_colon_trailing_parameters() {
        assert_eq!(Message::parse(":a PRIVMSG #c :").unwrap().params, ["#c", ""]);
        assert_eq!(Message::parse(":a PRIVMSG #c ::-)").unwrap().params, ["#c", ":-)"]);
        // Extra spaces between parameters, and inside the trailing one.
        assert_eq!(Message::parse(":a  MODE  #c  +o   b").unwrap().params, ["#c", "+o", "b"]);
        assert_eq!(Message::parse(":a PRIVMSG #c :two  spaces ").unwrap().params, ["#c", "two  spaces "]);
    }

    #[test]
    fn refuses_lines_without_a_command() {
        assert_eq!(Message::parse(""), None);
        assert_eq!(Message::parse(":only.a.source"), None);
        assert_eq!(Message::parse("@a=b"), None);
        assert_eq!(Message::parse("   "), None);
    }

    #[test]
    fn builds_lines() {
        assert_eq!(line("NICK", &["alice[m]"]), "NICK alice[m]");
        assert_eq!(line("PRIVMSG", &["#test", "hello world"]), "PRIVMSG #test :hello world");
        assert_eq!(line("PRIVMSG", &["#test", "hi"]), "PRIVMSG #test hi");
        assert_eq!(line("PRIVMSG", &["#test", ":)"]), "PRIVMSG #test ::)");
        assert_eq!(line("QUIT", &[""]), "QUIT :");
        assert_eq!(line("PRIVMSG", &["#t", "a\r\nQUIT :b\0"]), "PRIVMSG #t :a  QUIT :b ");
        assert_eq!(line("CAP", &["END"]), "CAP END");
        // What it builds, it parses back.
        let built = line("PRIVMSG", &["#test", " :lead and trail "]);
        assert_eq!(Message::parse(&built).unwrap().params, ["#test", " :lead and trail "]);
    }

    #[test]
    fn reads_server_time() {
        assert_eq!(parse_server_time("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_server_time("2024-05-01T12:30:05.123Z"), Some(1_714_566_605_123));
        assert_eq!(parse_server_time("2000-02-29T23:59:59Z"), Some(951_868_799_000));
        assert_eq!(parse_server_time("2024-05-01T12:30:05.1Z"), Some(1_714_566_605_100));
        assert_eq!(parse_server_time("2024-05-01T12:30:05.123456Z"), Some(1_714_566_605_123));
        for bad in [
            "2024-05-01T12:30:05",
            "2024-13-01T00:00:00Z",
            "yesterday",
            "2024-05-01T25:00:00Z",
            "2024-05-01T1:2:3.x1Z",
        ] {
            assert_eq!(parse_server_time(bad), None, "{bad}");
        }
    }
}
