//! What an IRC message means to the bridge: the few commands and numeric replies it acts on, with
//! their parameters picked out and checked.

use crate::message::{Message, parse_server_time};
use crate::text;

/// The kind of a message said on IRC, and of the Matrix message it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// PRIVMSG: `m.text`.
    Text,
    /// CTCP ACTION: `m.emote`.
    Emote,
    /// NOTICE: `m.notice`.
    Notice,
}

impl Kind {
    pub fn msgtype(self) -> &'static str {
        match self {
            Kind::Text => "m.text",
            Kind::Emote => "m.emote",
            Kind::Notice => "m.notice",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// `PING token`: answer `PONG token`.
    Ping(String),
    /// `001`: registered, under this nick.
    Welcome {
        nick: String,
    },
    /// `433`/`436`: the nick asked for is taken.
    NickInUse,
    /// `432`: the nick asked for is not acceptable to the server.
    ErroneousNick,
    /// PRIVMSG or NOTICE (CTCP ACTION as [`Kind::Emote`]), text without formatting codes.
    /// `time`: the IRCv3 `time` tag, in milliseconds since the epoch.
    Said {
        nick: String,
        target: String,
        kind: Kind,
        text: String,
        time: Option<u64>,
    },
    Joined {
        nick: String,
        channel: String,
    },
    Parted {
        nick: String,
        channel: String,
    },
    Kicked {
        nick: String,
        channel: String,
    },
    Quit {
        nick: String,
    },
    NickChanged {
        old: String,
        new: String,
    },
    /// `353` (`RPL_NAMREPLY`): some of the nicks in a channel, without their status prefixes.
    Names {
        channel: String,
        nicks: Vec<String>,
    },
    /// `ERROR`: the server is closing the connection.
    Error(String),
    /// Anything else (and malformed messages).
    Other,
}

/// Status prefixes in front of nicks in a NAMES reply (owner, admin, op, half-op, voice).
const STATUS_PREFIXES: &[char] = &['~', '&', '@', '%', '+', '!'];

/// What `message` means (see [`Inbound`]).
pub fn classify(message: &Message) -> Inbound {
    meaning(message).unwrap_or(Inbound::Other)
}

fn meaning(message: &Message) -> Option<Inbound> {
    let nick = || message.nick().filter(|n| !n.is_empty()).map(str::to_owned);
    let param = |i: usize| message.param(i).filter(|p| !p.is_empty()).map(str::to_owned);
    match message.command.as_str() {
        "PING" => Some(Inbound::Ping(message.param(0).unwrap_or("").to_owned())),
        "001" => param(0).map(|nick| Inbound::Welcome { nick }),
        "433" | "436" => Some(Inbound::NickInUse),
        "432" => Some(Inbound::ErroneousNick),
        "PRIVMSG" | "NOTICE" => said(message),
        "JOIN" => Some(Inbound::Joined { nick: nick()?, channel: param(0)? }),
        "PART" => Some(Inbound::Parted { nick: nick()?, channel: param(0)? }),
        "KICK" => Some(Inbound::Kicked { nick: param(1)?, channel: param(0)? }),
        "QUIT" => Some(Inbound::Quit { nick: nick()? }),
        "NICK" => Some(Inbound::NickChanged { old: nick()?, new: param(0)? }),
        "353" => names(message),
        "ERROR" => Some(Inbound::Error(message.param(0).unwrap_or("").to_owned())),
        _ => None,
    }
}

fn said(message: &Message) -> Option<Inbound> {
    let nick = message.nick().filter(|n| !n.is_empty())?.to_owned();
    // Server notices (`NOTICE * :*** Looking up your hostname`) come from a server name.
    if message.source.as_ref()?.user.is_none() && nick.contains('.') {
        return None;
    }
    let target = message.param(0)?.to_owned();
    let raw = message.param(1)?;
    let (kind, body) = match (message.command.as_str(), text::action_text(raw)) {
        (_, Some(action)) => (Kind::Emote, action),
        // Other CTCP (VERSION, PING…) is between clients, not for the room.
        _ if text::is_ctcp(raw) => return None,
        ("NOTICE", None) => (Kind::Notice, raw),
        _ => (Kind::Text, raw),
    };
    let text = text::strip_formatting(body);
    if text.trim().is_empty() {
        return None;
    }
    let time = message.tag("time").and_then(parse_server_time);
    Some(Inbound::Said { nick, target, kind, text, time })
}

fn names(message: &Message) -> Option<Inbound> {
    // `353 me = #chan :nicks`; some servers leave out the channel type (`353 me #chan :nicks`).
    let (channel, list) = match message.params.as_slice() {
        [_, _, channel, list] | [_, channel, list] => (channel, list),
        _ => return None,
    };
    let nicks = list
        .split(' ')
        .map(|entry| entry.trim_start_matches(STATUS_PREFIXES))
        // `userhost-in-names` gives `nick!user@host`.
        .map(|entry| entry.split('!').next().unwrap_or(entry))
        .filter(|nick| !nick.is_empty())
        .map(str::to_owned)
        .collect();
    Some(Inbound::Names { channel: channel.clone(), nicks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_line(line: &str) -> Inbound {
        classify(&Message::parse(line).unwrap())
    }

    fn said(nick: &str, target: &str, kind: Kind, text: &str) -> Inbound {
        Inbound::Said { nick: nick.into(), target: target.into(), kind, text: text.into(), time: None }
    }

    #[test]
    fn messages() {
        assert_eq!(classify_line(":bob!b@h PRIVMSG #test :hello"), said("bob", "#test", Kind::Text, "hello"));
        assert_eq!(
            classify_line(":bob!b@h PRIVMSG #test :\u{1}ACTION waves\u{1}"),
            said("bob", "#test", Kind::Emote, "waves")
        );
        assert_eq!(classify_line(":bob!b@h NOTICE #test :psst"), said("bob", "#test", Kind::Notice, "psst"));
        assert_eq!(
            classify_line(":bob!b@h PRIVMSG #test :\u{2}bold\u{2} move"),
            said("bob", "#test", Kind::Text, "bold move")
        );
        assert_eq!(classify_line(":bob!b@h PRIVMSG #test :\u{1}VERSION\u{1}"), Inbound::Other);
        assert_eq!(classify_line(":bob!b@h PRIVMSG #test :\u{3}4"), Inbound::Other);
        assert_eq!(classify_line(":bob!b@h PRIVMSG #test"), Inbound::Other);
        assert_eq!(classify_line(":irc.example.org NOTICE * :*** Looking up your hostname"), Inbound::Other);
        // A nick without user@host (some servers relay so) is still a nick.
        assert_eq!(classify_line(":bob NOTICE #test :hi"), said("bob", "#test", Kind::Notice, "hi"));
    }

    #[test]
    fn message_times() {
        let line = "@time=2024-05-01T12:30:05.123Z :bob!b@h PRIVMSG #test :hi";
        let Inbound::Said { time, .. } = classify_line(line) else { panic!() };
        assert_eq!(time, Some(1_714_566_605_123));
    }

    #[test]
    fn membership() {
        assert_eq!(
            classify_line(":bob!b@h JOIN #test"),
            Inbound::Joined { nick: "bob".into(), channel: "#test".into() }
        );
        // extended-join adds the account and real name.
        assert_eq!(
            classify_line(":bob!b@h JOIN #test bobacct :Bob B"),
            Inbound::Joined { nick: "bob".into(), channel: "#test".into() }
        );
        assert_eq!(
            classify_line(":bob!b@h PART #test :bye"),
            Inbound::Parted { nick: "bob".into(), channel: "#test".into() }
        );
        assert_eq!(
            classify_line(":op!o@h KICK #test bob :spam"),
            Inbound::Kicked { nick: "bob".into(), channel: "#test".into() }
        );
        assert_eq!(classify_line(":bob!b@h QUIT :Ping timeout"), Inbound::Quit { nick: "bob".into() });
        assert_eq!(
            classify_line(":bob!b@h NICK :robert"),
            Inbound::NickChanged { old: "bob".into(), new: "robert".into() }
        );
        assert_eq!(classify_line("JOIN #test"), Inbound::Other);
    }

    #[test]
    fn names_replies() {
        assert_eq!(
            classify_line(":irc 353 lattice = #test :lattice @op +voice ~owner %half bob"),
            Inbound::Names {
                channel: "#test".into(),
                nicks: ["lattice", "op", "voice", "owner", "half", "bob"].map(String::from).to_vec()
            }
        );
        assert_eq!(
            classify_line(":irc 353 lattice #test :@+both carol!c@h"),
            Inbound::Names { channel: "#test".into(), nicks: vec!["both".into(), "carol".into()] }
        );
        assert_eq!(classify_line(":irc 353 lattice"), Inbound::Other);
    }

    #[test]
    fn connection_management() {
        assert_eq!(classify_line("PING :abc"), Inbound::Ping("abc".into()));
        assert_eq!(
            classify_line(":irc 001 alice[m]_ :Welcome"),
            Inbound::Welcome { nick: "alice[m]_".into() }
        );
        assert_eq!(classify_line(":irc 433 * alice[m] :Nickname is already in use"), Inbound::NickInUse);
        assert_eq!(classify_line(":irc 432 * a:b :Erroneous Nickname"), Inbound::ErroneousNick);
        assert_eq!(classify_line("ERROR :Closing Link"), Inbound::Error("Closing Link".into()));
        assert_eq!(classify_line(":irc 005 me CHANTYPES=# :are supported"), Inbound::Other);
    }

    #[test]
    fn kinds_are_msgtypes() {
        assert_eq!(
            [Kind::Text, Kind::Emote, Kind::Notice].map(Kind::msgtype),
            ["m.text", "m.emote", "m.notice"]
        );
    }
}
