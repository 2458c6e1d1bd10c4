//! The bridge's IRC connections, over the host's `net` connections: the bridge's own
//! (`irc/bot`, which relays what it sees) and one per Matrix user in a portal
//! (`irc/<user id>`, which speaks for them). Opening, registering, joining and parting, the
//! reconnect backoff and the registration watchdog; the protocol steps themselves are in
//! [`crate::conn`].
//!
//! Timers: `reconnect/<net name>` (reopen after the backoff, or end a QUIT that did not close)
//! and `register/<net name>` (a connection not registered in time is closed and reopened).

use std::collections::{BTreeMap, BTreeSet};

use lattice_plugin_sdk::net::{self, NetEvent, OpenOptions};
use lattice_plugin_sdk::{self as sdk, Error, timers};

use crate::conn::{Conn, MIN_BACKOFF_MS};
use crate::inbound::{Inbound, classify};
use crate::message::{Message, line};
use crate::names::{self, casefold};
use crate::settings::Settings;
use crate::{portals, relay, store};

/// The bridge's own connection.
pub const BOT: &str = "irc/bot";
pub const RECONNECT_TIMER: &str = "reconnect/";
pub const REGISTER_TIMER: &str = "register/";
/// How long a connection may take from opening to `001`.
const REGISTER_WITHIN_MS: u64 = 60_000;
/// How long a QUIT may take to close the connection before the bridge closes it.
const QUIT_WITHIN_MS: u64 = 10_000;
/// How long after being kicked the bridge's own connection tries its channels again.
const REJOIN_AFTER_MS: u64 = 30_000;
/// What the bridge's own connection tells IRC about itself.
const BOT_REALNAME: &str = "Lattice IRC bridge";

/// The connection of a Matrix user.
pub fn user_conn_name(user: &str) -> String {
    format!("irc/{user}")
}

fn settings() -> &'static Settings {
    crate::settings()
}

/// Sends lines; a failure is logged (the connection's `closed` follows and reconnects).
fn transmit(name: &str, lines: &[String]) {
    for text in lines {
        if let Err(e) = net::send(name, text) {
            sdk::warn!("{name}: sending failed: {}", e.message());
            sdk::log::counter("send_failures", 1);
            return;
        }
    }
}

/// Opens the connection (`false` from the host: it was open already, nothing to do).
fn open(name: &str, conn: &mut Conn) -> sdk::Result<()> {
    let options = OpenOptions::lines().tls(settings().tls);
    match net::open(name, &settings().server, options) {
        Ok(opening) => {
            conn.open = true;
            if opening {
                conn.registered = false;
                conn.joined.clear();
                timers::set(&format!("{REGISTER_TIMER}{name}"), REGISTER_WITHIN_MS)?;
            }
        }
        Err(Error::Denied(why)) => {
            // Not in grants.net: nothing to retry until the admin changes the grants (which
            // restarts the plugin, and its start opens the connections again).
            sdk::error!("{name}: the host refused the connection to {}: {why}", settings().server);
            conn.open = false;
        }
        Err(e) => {
            sdk::warn!("{name}: opening failed: {}", e.message());
            let delay = conn.on_closed();
            timers::set(&format!("{RECONNECT_TIMER}{name}"), delay)?;
        }
    }
    store::save_conn(name, conn)
}

/// Something happened on one of the bridge's connections.
pub fn on_net(name: &str, event: NetEvent) -> sdk::Result<()> {
    let Some(mut conn) = store::conn(name)? else {
        if !matches!(event, NetEvent::Closed(_)) {
            sdk::warn!("{name}: a connection the bridge has no record of; closing it");
            net::close(name);
        }
        return Ok(());
    };
    match event {
        NetEvent::Connected => {
            let (username, realname) = match &conn.user {
                Some(user) => (names::username(names::localpart(user)), user.clone()),
                None => (names::username(&settings().bot_nick), BOT_REALNAME.to_owned()),
            };
            let lines = conn.on_connected(&username, &realname);
            store::save_conn(name, &conn)?;
            transmit(name, &lines);
            Ok(())
        }
        NetEvent::Message(text) => match Message::parse(&text) {
            Some(message) => on_message(name, conn, &message),
            None => Ok(()),
        },
        NetEvent::Closed(why) => on_closed(name, conn, &why),
    }
}

fn on_message(name: &str, mut conn: Conn, message: &Message) -> sdk::Result<()> {
    let inbound = classify(message);
    let lines = match inbound {
        Inbound::Ping(token) => {
            transmit(name, &[line("PONG", &[&token])]);
            return Ok(());
        }
        Inbound::Welcome { nick } => {
            store::forget_own_nick(&conn.nick, name)?;
            let lines = conn.on_welcome(&nick);
            store::set_own_nick(&nick, name)?;
            timers::cancel(&format!("{REGISTER_TIMER}{name}"));
            sdk::info!("{name}: registered as {nick}");
            lines
        }
        Inbound::NickInUse => match conn.on_nick_in_use() {
            Some(lines) => lines,
            None => return give_up(name, conn, "every nick it tried was taken"),
        },
        Inbound::ErroneousNick => {
            let fallback = names::fallback_nick(conn.user.as_deref().unwrap_or(&settings().bot_nick));
            match conn.on_erroneous_nick(&fallback) {
                Some(lines) => lines,
                None => return give_up(name, conn, "the server refused its nicks"),
            }
        }
        Inbound::Joined { nick, channel } if conn.is_me(&nick) => conn.on_self_join(&channel),
        Inbound::Parted { nick, channel } if conn.is_me(&nick) => {
            conn.on_self_left(&channel);
            Vec::new()
        }
        Inbound::Kicked { nick, channel } if conn.is_me(&nick) => {
            sdk::warn!("{name}: kicked from {channel}");
            conn.on_self_left(&channel);
            if conn.user.is_none() {
                // The bridge's own connection must be in its channels to relay them.
                timers::set(crate::SYNC_TIMER, REJOIN_AFTER_MS)?;
            }
            Vec::new()
        }
        Inbound::NickChanged { old, new } if conn.is_me(&old) => {
            store::forget_own_nick(&old, name)?;
            conn.nick = new.clone();
            store::set_own_nick(&new, name)?;
            Vec::new()
        }
        Inbound::Error(why) => {
            sdk::info!("{name}: the server says: {why}");
            return Ok(());
        }
        Inbound::Other => return Ok(()),
        other if conn.user.is_none() => {
            let is_ours = |nick: &str| conn.is_me(nick) || store::own_nick(nick).ok().flatten().is_some();
            let actions = relay::actions(other, |channel| portals::room_of(channel).ok().flatten(), is_ours);
            return relay::submit(actions);
        }
        // A Matrix user's connection only speaks; the bridge's own connection relays.
        _ => return Ok(()),
    };
    store::save_conn(name, &conn)?;
    transmit(name, &lines);
    Ok(())
}

/// Ends a connection that cannot register; a user's opens again when they next join a portal,
/// the bridge's own at the next start.
fn give_up(name: &str, conn: Conn, why: &str) -> sdk::Result<()> {
    sdk::error!("{name}: giving up on the connection: {why}");
    transmit(name, &[line("QUIT", &[why])]);
    net::close(name);
    forget(name, &conn)
}

fn forget(name: &str, conn: &Conn) -> sdk::Result<()> {
    store::forget_own_nick(&conn.nick, name)?;
    timers::cancel(&format!("{REGISTER_TIMER}{name}"));
    timers::cancel(&format!("{RECONNECT_TIMER}{name}"));
    store::delete_conn(name)
}

fn on_closed(name: &str, mut conn: Conn, why: &str) -> sdk::Result<()> {
    if conn.quitting || conn.is_idle() {
        sdk::debug!("{name}: closed after QUIT");
        return forget(name, &conn);
    }
    store::forget_own_nick(&conn.nick, name)?;
    timers::cancel(&format!("{REGISTER_TIMER}{name}"));
    let delay = conn.on_closed();
    store::save_conn(name, &conn)?;
    timers::set(&format!("{RECONNECT_TIMER}{name}"), delay)?;
    sdk::warn!("{name}: closed ({why}); reconnecting in {delay} ms");
    sdk::log::counter("reconnects", 1);
    Ok(())
}

/// The `reconnect/<name>` timer: reopen, or finish a QUIT.
pub fn reconnect_due(name: &str) -> sdk::Result<()> {
    let Some(mut conn) = store::conn(name)? else { return Ok(()) };
    if conn.quitting || conn.is_idle() {
        net::close(name);
        return forget(name, &conn);
    }
    if conn.open && net::is_open(name) {
        return Ok(());
    }
    open(name, &mut conn)
}

/// The `register/<name>` timer: a connection still not registered is closed and reopened
/// after the backoff.
pub fn registration_due(name: &str) -> sdk::Result<()> {
    let Some(conn) = store::conn(name)? else { return Ok(()) };
    if conn.open && !conn.registered {
        net::close(name);
        return on_closed(name, conn, "not registered in time");
    }
    Ok(())
}

/// Loads a user's connection, or a new one under the nick template.
fn user_conn(user: &str) -> sdk::Result<(String, Conn, bool)> {
    let name = user_conn_name(user);
    Ok(match store::conn(&name)? {
        Some(conn) => (name, conn, false),
        None => (name, Conn::new(Some(user.to_owned()), &crate::naming().irc_nick(user)), true),
    })
}

/// A Matrix user is in a channel's portal: their connection (opened if new) joins it.
pub fn user_wants(user: &str, channel: &str) -> sdk::Result<()> {
    let (name, mut conn, new) = user_conn(user)?;
    let lines = conn.want(channel);
    if new {
        sdk::info!("{name}: opening for {channel}");
        return open(&name, &mut conn);
    }
    store::save_conn(&name, &conn)?;
    transmit(&name, &lines);
    Ok(())
}

/// A Matrix user left a channel's portal: their connection parts it, and quits once in none.
pub fn user_unwants(user: &str, channel: &str) -> sdk::Result<()> {
    let name = user_conn_name(user);
    let Some(mut conn) = store::conn(&name)? else { return Ok(()) };
    let mut lines = conn.unwant(channel);
    if conn.is_idle() {
        if !conn.open {
            return forget(&name, &conn);
        }
        lines.extend(conn.quit("left the bridged rooms"));
        timers::set(&format!("{RECONNECT_TIMER}{name}"), QUIT_WITHIN_MS)?;
    }
    store::save_conn(&name, &conn)?;
    transmit(&name, &lines);
    Ok(())
}

/// Lines a Matrix user says in a channel: sent on their connection, or queued until it is
/// registered (opening it if they had none).
pub fn say(user: &str, channel: &str, lines: Vec<String>) -> sdk::Result<()> {
    let (name, mut conn, new) = user_conn(user)?;
    let mut out = conn.want(channel);
    let (now, dropped) = conn.say(lines);
    out.extend(now);
    if dropped > 0 {
        sdk::warn!("{name}: not registered yet; dropped {dropped} older queued lines");
        sdk::log::counter("queue_dropped", dropped as u64);
    }
    sdk::log::counter("matrix_to_irc", 1);
    if new {
        return open(&name, &mut conn);
    }
    store::save_conn(&name, &conn)?;
    transmit(&name, &out);
    Ok(())
}

/// The IRC nick a Matrix user has (their connection's), or would have.
pub fn nick_of_user(user: &str) -> String {
    match store::conn(&user_conn_name(user)) {
        Ok(Some(conn)) => conn.nick,
        _ => crate::naming().irc_nick(user),
    }
}

/// The nick of the bridge's own connection.
pub fn bot_nick() -> String {
    match store::conn(BOT) {
        Ok(Some(conn)) => conn.nick,
        _ => settings().bot_nick.clone(),
    }
}

/// The bridge's own connection: in exactly these channels, opened if it is not.
pub fn ensure_bot(channels: &BTreeSet<String>) -> sdk::Result<()> {
    let mut conn = store::conn(BOT)?.unwrap_or_else(|| Conn::new(None, &settings().bot_nick));
    // A changed `bot_nick` applies from the next registration.
    conn.base_nick.clone_from(&settings().bot_nick);
    let mut lines = Vec::new();
    for channel in channels {
        lines.extend(conn.want(channel));
    }
    let unwanted: Vec<String> = conn.wanted.difference(channels).cloned().collect();
    for channel in unwanted {
        lines.extend(conn.unwant(&channel));
    }
    if !conn.open || !net::is_open(BOT) {
        return open(BOT, &mut conn);
    }
    store::save_conn(BOT, &conn)?;
    transmit(BOT, &lines);
    Ok(())
}

/// The bridge's own connection joins one more channel.
pub fn bot_wants(channel: &str) -> sdk::Result<()> {
    let Some(mut conn) = store::conn(BOT)? else {
        return ensure_bot(&BTreeSet::from([casefold(channel)]));
    };
    let lines = conn.want(channel);
    store::save_conn(BOT, &conn)?;
    transmit(BOT, &lines);
    Ok(())
}

/// At start: connections the store says are open but the host does not have (the server
/// restarted) are opened again; open ones the store does not know are closed.
pub fn revive() -> sdk::Result<()> {
    let open_now: BTreeSet<String> = net::list().into_iter().collect();
    let known = store::conn_names()?;
    for name in &known {
        let Some(mut conn) = store::conn(name)? else { continue };
        if conn.open && !open_now.contains(name) {
            sdk::info!("{name}: gone while the bridge was away; opening again");
            conn.backoff_ms = MIN_BACKOFF_MS;
            open(name, &mut conn)?;
        }
    }
    for name in open_now.iter().filter(|n| !known.contains(n)) {
        sdk::warn!("{name}: open without a record; closing it");
        net::close(name);
    }
    Ok(())
}

/// At start: every Matrix user's connection wants exactly the channels of the portals they are
/// in (`wanted`, for the channels in `checked` — those whose members could be read).
pub fn reconcile_users(
    wanted: &BTreeMap<String, BTreeSet<String>>,
    checked: &BTreeSet<String>,
) -> sdk::Result<()> {
    for name in store::conn_names()? {
        let Some(conn) = store::conn(&name)? else { continue };
        let Some(user) = conn.user else { continue };
        let stale: Vec<&String> = conn
            .wanted
            .iter()
            .filter(|c| checked.contains(*c) && !wanted.get(&user).is_some_and(|w| w.contains(*c)))
            .collect();
        for channel in stale {
            user_unwants(&user, channel)?;
        }
    }
    for (user, channels) in wanted {
        for channel in channels {
            user_wants(user, channel)?;
        }
    }
    Ok(())
}
