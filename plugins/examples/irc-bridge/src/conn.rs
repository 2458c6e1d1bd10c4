//! One IRC connection's state and protocol steps, without host calls: registering (nick, taken
//! nicks), the channels it should be in and those it is in, lines waiting for registration, and
//! the reconnect backoff. The bridge keeps a [`Conn`] per connection in the key-value store, so
//! that a reloaded or restarted instance carries on with the connections the host kept open.
//!
//! Every step returns the lines to send, in order.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::message::{MAX_LINE_BYTES, line};
use crate::names::{alternative_nick, casefold};

/// Lines waiting for registration, per connection; past it the oldest are dropped.
pub const MAX_QUEUED: usize = 50;
/// Taken nicks tried (`alice[m]_`, `alice[m]__`…) before giving up.
pub const MAX_NICK_ATTEMPTS: u32 = 10;
/// The first reconnect delay; it doubles with every failure up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 60_000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Conn {
    /// The Matrix user the connection speaks for; `None` for the bridge's own.
    pub user: Option<String>,
    /// The nick it registers with, before any change for a taken one.
    pub base_nick: String,
    /// The nick being registered, then the one the server confirmed.
    pub nick: String,
    /// How often the nick asked for was taken in this registration.
    pub nick_attempts: u32,
    /// Opened (connecting or connected) rather than waiting to reconnect.
    pub open: bool,
    /// The server confirmed the registration (`001`).
    pub registered: bool,
    /// Channels it should be in (case-folded).
    pub wanted: BTreeSet<String>,
    /// Channels the server confirmed it joined (case-folded).
    pub joined: BTreeSet<String>,
    /// Lines said before the registration, sent once it completes.
    pub queue: VecDeque<String>,
    /// The next reconnect delay.
    pub backoff_ms: u64,
    /// It sent QUIT and is closing for good.
    pub quitting: bool,
    /// Opening it was refused for good (the plugin's connection quota, a destination not
    /// granted, a name the host does not take) or it could not register: it is not reopened on
    /// a timer, only when its user next joins a portal or at the next sync. Meanwhile the
    /// bridge's own connection relays its user's messages.
    pub failed: bool,
}

impl Conn {
    pub fn new(user: Option<String>, nick: &str) -> Conn {
        Conn {
            user,
            base_nick: nick.to_owned(),
            nick: nick.to_owned(),
            backoff_ms: MIN_BACKOFF_MS,
            ..Conn::default()
        }
    }

    /// Whether `nick` is this connection's.
    pub fn is_me(&self, nick: &str) -> bool {
        casefold(nick) == casefold(&self.nick)
    }

    /// A user's connection that is in no portal any more (the bridge's own is never idle).
    pub fn is_idle(&self) -> bool {
        self.user.is_some() && self.wanted.is_empty()
    }

    /// The connection is established: register. The `server-time` capability is asked for
    /// without waiting for the answer (`CAP END` follows at once); a server without it, or
    /// without capabilities at all, registers the connection all the same.
    pub fn on_connected(&mut self, username: &str, realname: &str) -> Vec<String> {
        self.open = true;
        self.registered = false;
        self.joined.clear();
        self.nick = self.base_nick.clone();
        self.nick_attempts = 0;
        vec![
            line("CAP", &["REQ", "server-time"]),
            line("NICK", &[&self.nick]),
            line("USER", &[username, "0", "*", realname]),
            line("CAP", &["END"]),
        ]
    }

    /// `001`: registered as `nick`. Joins the channels it should be in, then sends what waited.
    pub fn on_welcome(&mut self, nick: &str) -> Vec<String> {
        self.registered = true;
        self.nick = nick.to_owned();
        self.backoff_ms = MIN_BACKOFF_MS;
        let mut lines = join_lines(self.wanted.iter().filter(|c| !self.joined.contains(*c)));
        lines.extend(self.queue.drain(..));
        lines
    }

    /// `433`: the nick asked for is taken. While registering, the next alternative; `None`
    /// after [`MAX_NICK_ATTEMPTS`] (give up). Once registered (a nick change was refused)
    /// nothing changes.
    pub fn on_nick_in_use(&mut self) -> Option<Vec<String>> {
        if self.registered {
            return Some(Vec::new());
        }
        self.nick_attempts += 1;
        if self.nick_attempts > MAX_NICK_ATTEMPTS {
            return None;
        }
        self.nick = alternative_nick(&self.base_nick, self.nick_attempts);
        Some(vec![line("NICK", &[&self.nick])])
    }

    /// `432`: the server does not accept the nick; tries `fallback` instead (from then on), or
    /// gives up (`None`) if that was refused too.
    pub fn on_erroneous_nick(&mut self, fallback: &str) -> Option<Vec<String>> {
        if self.registered {
            return Some(Vec::new());
        }
        if self.base_nick == fallback {
            return None;
        }
        self.base_nick = fallback.to_owned();
        self.nick = fallback.to_owned();
        self.nick_attempts = 0;
        Some(vec![line("NICK", &[&self.nick])])
    }

    /// The server confirmed a JOIN of this connection.
    pub fn on_self_join(&mut self, channel: &str) -> Vec<String> {
        let channel = casefold(channel);
        if self.wanted.contains(&channel) {
            self.joined.insert(channel);
            Vec::new()
        } else {
            // Joined somewhere no portal wants (a forced join, or one wanted no more): leave.
            vec![line("PART", &[&channel])]
        }
    }

    /// This connection left a channel (PART or KICK).
    pub fn on_self_left(&mut self, channel: &str) {
        self.joined.remove(&casefold(channel));
    }

    /// The channel is wanted: JOIN it now if registered (else at registration).
    pub fn want(&mut self, channel: &str) -> Vec<String> {
        let channel = casefold(channel);
        self.wanted.insert(channel.clone());
        if self.quitting {
            // The QUIT is on its way: the connection closes, and opens again for this.
            self.quitting = false;
            self.registered = false;
        }
        if self.registered && !self.joined.contains(&channel) {
            return join_lines([&channel]);
        }
        Vec::new()
    }

    /// The channel is not wanted any more: PART it if joined.
    pub fn unwant(&mut self, channel: &str) -> Vec<String> {
        let channel = casefold(channel);
        self.wanted.remove(&channel);
        if self.registered && self.joined.remove(&channel) {
            return vec![line("PART", &[&channel])];
        }
        Vec::new()
    }

    /// Lines to say: sent now if registered, else queued (how many older ones were dropped to
    /// make room is the second value).
    pub fn say(&mut self, lines: Vec<String>) -> (Vec<String>, usize) {
        if self.registered {
            return (lines, 0);
        }
        self.queue.extend(lines);
        let dropped = self.queue.len().saturating_sub(MAX_QUEUED);
        self.queue.drain(..dropped);
        (Vec::new(), dropped)
    }

    /// Says goodbye: the server answers QUIT by closing the connection.
    pub fn quit(&mut self, reason: &str) -> Vec<String> {
        self.quitting = true;
        vec![line("QUIT", &[reason])]
    }

    /// Opening the connection was refused for good, or it gave up registering: not open, not
    /// reconnecting. Returns how many lines waiting for the registration were dropped.
    pub fn fail(&mut self) -> usize {
        self.open = false;
        self.registered = false;
        self.failed = true;
        self.joined.clear();
        let dropped = self.queue.len();
        self.queue.clear();
        dropped
    }

    /// The connection closed: returns the delay before reconnecting, and doubles the next one.
    pub fn on_closed(&mut self) -> u64 {
        self.open = false;
        self.registered = false;
        self.joined.clear();
        let delay = self.backoff_ms.clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
        self.backoff_ms = (delay * 2).min(MAX_BACKOFF_MS);
        delay
    }
}

/// JOIN lines for channels, as few as fit the line limit (`JOIN #a,#b,#c`).
pub fn join_lines<'a>(channels: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for channel in channels {
        if !current.is_empty() && "JOIN ".len() + current.len() + 1 + channel.len() > MAX_LINE_BYTES {
            lines.push(line("JOIN", &[&current]));
            current.clear();
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(channel);
    }
    if !current.is_empty() {
        lines.push(line("JOIN", &[&current]));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn::new(Some("@alice:example.org".into()), "alice[m]")
    }

    #[test]
    fn registers_joins_and_flushes_the_queue() {
        let mut c = conn();
        assert!(c.want("#Test").is_empty());
        assert_eq!(c.say(vec!["PRIVMSG #test :early".into()]), (vec![], 0));
        assert_eq!(
            c.on_connected("alice", "@alice:example.org"),
            ["CAP REQ server-time", "NICK alice[m]", "USER alice 0 * @alice:example.org", "CAP END"]
        );
        assert!(c.open && !c.registered);
        assert_eq!(c.on_welcome("alice[m]"), ["JOIN #test", "PRIVMSG #test :early"]);
        assert!(c.registered && c.queue.is_empty());
        assert!(c.on_self_join("#test").is_empty());
        assert_eq!(c.joined, BTreeSet::from(["#test".to_owned()]));
        assert_eq!(c.say(vec!["PRIVMSG #test :now".into()]), (vec!["PRIVMSG #test :now".to_owned()], 0));
    }

    #[test]
    fn realnames_with_spaces_are_trailing() {
        let mut c = Conn::new(None, "lattice");
        assert_eq!(
            c.on_connected("lattice", "Lattice IRC bridge")[2],
            "USER lattice 0 * :Lattice IRC bridge"
        );
    }

    #[test]
    fn taken_nicks_get_alternatives_then_give_up() {
        let mut c = conn();
        c.on_connected("alice", "x");
        assert_eq!(c.on_nick_in_use(), Some(vec!["NICK alice[m]_".to_owned()]));
        assert_eq!(c.on_nick_in_use(), Some(vec!["NICK alice[m]__".to_owned()]));
        for _ in 3..=MAX_NICK_ATTEMPTS {
            assert!(c.on_nick_in_use().is_some());
        }
        assert_eq!(c.on_nick_in_use(), None);
        // A new connection starts from the template's nick again.
        c.on_connected("alice", "x");
        assert_eq!(c.nick, "alice[m]");
        // Once registered, a refused nick change changes nothing.
        c.on_welcome("alice[m]");
        assert_eq!(c.on_nick_in_use(), Some(vec![]));
        assert_eq!(c.nick, "alice[m]");
    }

    #[test]
    fn malformed_nicks_fall_back_once() {
        let mut c = conn();
        c.on_connected("alice", "x");
        assert_eq!(c.on_erroneous_nick("mx123456"), Some(vec!["NICK mx123456".to_owned()]));
        assert_eq!(c.on_erroneous_nick("mx123456"), None);
    }

    #[test]
    fn the_server_names_the_nick() {
        let mut c = conn();
        c.on_connected("alice", "x");
        c.on_nick_in_use();
        c.on_welcome("Alice[m]_");
        assert!(c.is_me("alice{m}_"));
        assert!(!c.is_me("alice[m]"));
    }

    #[test]
    fn wanting_and_unwanting_channels() {
        let mut c = conn();
        c.on_connected("alice", "x");
        c.on_welcome("alice[m]");
        assert_eq!(c.want("#a"), ["JOIN #a"]);
        c.on_self_join("#a");
        assert!(c.want("#a").is_empty(), "already joined");
        assert_eq!(c.unwant("#a"), ["PART #a"]);
        assert!(c.unwant("#a").is_empty());
        assert!(c.is_idle());
        // A join nobody wants is undone.
        assert_eq!(c.on_self_join("#forced"), ["PART #forced"]);
        assert!(!Conn::new(None, "lattice").is_idle());
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut c = conn();
        let (sent, dropped) = c.say((0..MAX_QUEUED + 3).map(|i| format!("PRIVMSG #a :{i}")).collect());
        assert!(sent.is_empty());
        assert_eq!(dropped, 3);
        assert_eq!(c.queue.len(), MAX_QUEUED);
        assert_eq!(c.queue.front().unwrap(), "PRIVMSG #a :3");
    }

    #[test]
    fn backoff_doubles_and_resets_on_registration() {
        let mut c = conn();
        let delays: Vec<u64> = (0..8).map(|_| c.on_closed()).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
        c.on_connected("alice", "x");
        c.on_welcome("alice[m]");
        assert_eq!(c.on_closed(), 1_000);
    }

    #[test]
    fn closing_forgets_joins_but_not_wants() {
        let mut c = conn();
        c.want("#a");
        c.on_connected("alice", "x");
        c.on_welcome("alice[m]");
        c.on_self_join("#a");
        c.on_closed();
        assert!(!c.open && !c.registered && c.joined.is_empty());
        c.on_connected("alice", "x");
        assert_eq!(c.on_welcome("alice[m]"), ["JOIN #a"]);
    }

    #[test]
    fn wanting_again_while_quitting_reconnects() {
        let mut c = conn();
        c.on_connected("alice", "x");
        c.on_welcome("alice[m]");
        assert_eq!(c.quit("bye"), ["QUIT bye"]);
        assert!(c.want("#a").is_empty());
        assert!(!c.quitting && !c.registered);
        assert_eq!(c.say(vec!["PRIVMSG #a :hi".into()]).0, Vec::<String>::new());
    }

    #[test]
    fn failing_keeps_the_channels_and_drops_the_queue() {
        let mut c = conn();
        c.want("#a");
        c.say(vec!["PRIVMSG #a :one".into(), "PRIVMSG #a :two".into()]);
        assert_eq!(c.fail(), 2);
        assert!(c.failed && !c.open && !c.registered && c.queue.is_empty());
        assert_eq!(c.wanted, BTreeSet::from(["#a".to_owned()]));
        // Stored before the field existed: not failed.
        let old: Conn =
            lattice_plugin_sdk::serde_json::from_str(r#"{"nick": "alice[m]", "open": true}"#).unwrap();
        assert!(!old.failed && old.open);
    }

    #[test]
    fn joins_are_batched_within_the_line_limit() {
        let channels: Vec<String> = (0..100).map(|i| format!("#channel-{i:03}")).collect();
        let lines = join_lines(&channels);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES && l.starts_with("JOIN #")));
        let joined: Vec<&str> = lines.iter().flat_map(|l| l["JOIN ".len()..].split(',')).collect();
        assert_eq!(joined, channels);
        assert_eq!(join_lines(&["#a".to_owned(), "#b".to_owned()]), ["JOIN #a,#b"]);
        assert!(join_lines(&Vec::<String>::new()).is_empty());
    }
}
