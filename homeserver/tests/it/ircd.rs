//! A real IRC server for the IRC bridge's tests — Debian's `ngircd`, started on a loopback port
//! with a configuration of the test's own — and a small IRC client that plays the people on
//! the IRC side. `.ci/run` installs ngircd; without it (and without `LATTICE_REQUIRE_PLUGINS`)
//! the tests skip.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use crate::federation::free_port;

const NGIRCD: &str = "/usr/sbin/ngircd";

pub struct Ircd {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Ircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ircd {
    /// Starts ngircd on a free loopback port; `None` (the test skips) if it is not installed.
    pub async fn start() -> Option<Ircd> {
        if !Path::new(NGIRCD).exists() {
            assert!(std::env::var_os("LATTICE_REQUIRE_PLUGINS").is_none(), "{NGIRCD} is not installed");
            eprintln!("skipping: {NGIRCD} is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Nicks long enough for `alice[m]`-style names, any number of clients from loopback.
        let config = format!(
            "[Global]\nName = irc.lattice.test\nInfo = Lattice test\nListen = 127.0.0.1\nPorts = {port}\n\
             MotdPhrase = test\n[Limits]\nMaxNickLength = 30\nMaxConnectionsIP = 0\n\
             [Options]\nPAM = no\nDNS = no\nIdent = no\n"
        );
        std::fs::write(dir.path().join("ngircd.conf"), config).unwrap();
        let child = spawn(dir.path());
        let ircd = Ircd { port, child, dir };
        ircd.wait_listening().await;
        Some(ircd)
    }

    /// Stops the server (every client is cut off) and starts it again on the same port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.dir.path());
        self.wait_listening().await;
    }

    async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "ngircd did not start listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(dir: &Path) -> Child {
    Command::new(NGIRCD)
        .args(["-n", "-f"])
        .arg(dir.join("ngircd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One line from the server: the prefix's nick, the command and its parameters (the trailing
/// one included).
#[derive(Debug, Clone)]
pub struct Line {
    pub nick: String,
    pub command: String,
    pub params: Vec<String>,
}

impl Line {
    fn parse(raw: &str) -> Line {
        let mut rest = raw;
        let mut nick = String::new();
        if let Some(stripped) = rest.strip_prefix(':') {
            let (prefix, after) = stripped.split_once(' ').unwrap_or((stripped, ""));
            nick = prefix.split('!').next().unwrap_or_default().to_owned();
            rest = after;
        }
        let (head, trailing) = match rest.split_once(" :") {
            Some((head, trailing)) => (head, Some(trailing)),
            None => (rest, None),
        };
        let mut words = head.split_whitespace().map(str::to_owned);
        let command = words.next().unwrap_or_default();
        let mut params: Vec<String> = words.collect();
        params.extend(trailing.map(str::to_owned));
        Line { nick, command, params }
    }

    /// The last parameter (a message's text).
    pub fn text(&self) -> &str {
        self.params.last().map(String::as_str).unwrap_or_default()
    }
}

/// A person on IRC.
pub struct IrcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl IrcClient {
    /// Connects and registers under `nick`.
    pub async fn connect(port: u16, nick: &str) -> IrcClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (reader, writer) = stream.into_split();
        let mut client = IrcClient { reader: BufReader::new(reader), writer };
        client.send(&format!("NICK {nick}")).await;
        client.send(&format!("USER {nick} 0 * :{nick}")).await;
        client.expect(20, "the welcome", |l| l.command == "001").await;
        client
    }

    pub async fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    }

    pub async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        self.expect(20, "the end of the names list", |l| l.command == "366").await;
    }

    pub async fn say(&mut self, channel: &str, text: &str) {
        self.send(&format!("PRIVMSG {channel} :{text}")).await;
    }

    /// Reads lines (answering pings) until one matches; panics after `secs` seconds.
    pub async fn expect(&mut self, secs: u64, what: &str, wanted: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut raw = String::new();
            let read = tokio::time::timeout(left, self.reader.read_line(&mut raw)).await;
            let Ok(Ok(n)) = read else { panic!("timed out waiting for {what} on IRC") };
            assert!(n > 0, "the IRC server closed the connection while waiting for {what}");
            let line = Line::parse(raw.trim_end_matches(['\r', '\n']));
            if line.command == "PING" {
                self.send(&format!("PONG :{}", line.text())).await;
                continue;
            }
            if wanted(&line) {
                return line;
            }
        }
    }

    /// Asks for the channel's names until `nick` is among them; panics after `secs` seconds.
    pub async fn wait_for_nick(&mut self, channel: &str, nick: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.send(&format!("NAMES {channel}")).await;
            let names = self.expect(10, "the names", |l| l.command == "353").await;
            if names.text().split_whitespace().any(|n| n.trim_start_matches(['@', '+']) == nick) {
                return;
            }
            assert!(Instant::now() < deadline, "{nick} never appeared in {channel}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every line that arrives within `window` (pings answered).
    pub async fn collect(&mut self, window: Duration) -> Vec<Line> {
        let deadline = Instant::now() + window;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut raw = String::new();
            match tokio::time::timeout(left, self.reader.read_line(&mut raw)).await {
                Ok(Ok(n)) if n > 0 => {
                    let line = Line::parse(raw.trim_end_matches(['\r', '\n']));
                    if line.command == "PING" {
                        self.send(&format!("PONG :{}", line.text())).await;
                    } else {
                        lines.push(line);
                    }
                }
                _ => return lines,
            }
        }
    }
}

#[test]
fn lines_are_parsed_with_prefix_and_trailing_text() {
    let line = Line::parse(":bob!~bob@127.0.0.1 PRIVMSG #test :hello there");
    assert_eq!((line.nick.as_str(), line.command.as_str()), ("bob", "PRIVMSG"));
    assert_eq!(line.params, ["#test", "hello there"]);
    assert_eq!(Line::parse("PING :irc.lattice.test").text(), "irc.lattice.test");
}
