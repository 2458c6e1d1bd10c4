//! The bridge's IRC connections, over the host's `net` connections: the bridge's own
//! (`irc/bot`, which relays what it sees, and says what users of other servers write) and one
//! per user of this server in a portal ([`user_conn_name`], which speaks for them). Opening,
//! registering, joining and parting, the reconnect backoff and the registration watchdog; the
//! protocol steps themselves are in [`crate::conn`].
//!
//! Every connection the bridge opens has its record (`conn/<net name>`) stored before it is
//! opened, so an event of a connection without one is not of one being opened; and a `closed`
//! for a name that is open again is of an earlier connection, and changes nothing.
//!
//! Timers: `reconnect/<net name>` (reopen after the backoff, or end a QUIT that did not close)
//! and `register/<net name>` (a connection not registered in time is closed and reopened).

use std::collections::{BTreeMap, BTreeSet};

use lattice_plugin_sdk::net::{self, NetEvent, OpenOptions};
use lattice_plugin_sdk::{self as sdk, Error, timers};

use crate::conn::{Conn, MIN_BACKOFF_MS};
use crate::inbound::{Inbound, classify};
use crate::message::{Message, line};
use crate::names::{self, casefold, user_conn_name};
use crate::settings::Settings;
use crate::{portals, relay, store};

/// The bridge's own connection.
pub const BOT: &str = names::BOT_CONN;
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

/// Opens the connection (`false` from the host: it was open already, nothing to do), its
/// record stored first. A refusal that a retry would not change ([`refused_for_good`]) marks
/// it failed: no reconnect timer, but another try when its user next joins a portal or at the
/// next sync.
fn open(name: &str, conn: &mut Conn) -> sdk::Result<()> {
    conn.open = true;
    conn.failed = false;
    store::save_conn(name, conn)?;
    let options = OpenOptions::lines().tls(settings().tls);
    match net::open(name, &settings().server, options) {
        Ok(opening) => {
            if opening {
                conn.registered = false;
                conn.joined.clear();
                timers::set(&format!("{REGISTER_TIMER}{name}"), REGISTER_WITHIN_MS)?;
            }
        }
        Err(e) if refused_for_good(&e, conn.user.is_none()) => {
            sdk::error!(
                "{name}: the host refused a connection to {}: {}; not retrying before the next sync{}",
                settings().server,
                e.message(),
                if conn.user.is_some() { " or join" } else { "" },
            );
            sdk::log::counter("open_refused", 1);
            let dropped = conn.fail();
            if dropped > 0 {
                sdk::log::counter("queue_dropped", dropped as u64);
            }
            timers::cancel(&format!("{RECONNECT_TIMER}{name}"));
        }
        Err(e) => {
            sdk::warn!("{name}: opening failed: {}", e.message());
            let delay = conn.on_closed();
            timers::set(&format!("{RECONNECT_TIMER}{name}"), delay)?;
        }
    }
    store::save_conn(name, conn)
}

/// Whether `net.open` would refuse the same on a retry: a destination not granted, a name the
/// host does not take, or, for a user's connection (not the bridge's `own`), the plugin's
/// connection quota. The bridge's own connection keeps trying on its backoff when the quota is
/// full: without it, nothing is relayed.
fn refused_for_good(error: &Error, own: bool) -> bool {
    match error {
        Error::Denied(_) | Error::Invalid(_) => true,
        Error::Quota(_) => !own,
        _ => false,
    }
}

/// Something happened on one of the bridge's connections.
pub fn on_net(name: &str, event: NetEvent) -> sdk::Result<()> {
    let Some(mut conn) = store::conn(name)? else {
        // Records are stored before connections are opened, and the host does not deliver the
        // events of a connection replaced by a newer one of the same name: this is none of the
        // bridge's (one it forgot, or an earlier version's under a name it no longer gives).
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
        NetEvent::Closed(why) => {
            if net::is_open(name) {
                // The host delivers the `closed` of a connection even after the bridge opened
                // another of the same name: that one is not concerned.
                sdk::debug!("{name}: an earlier connection closed ({why}); the open one stays");
                return Ok(());
            }
            if !conn.open {
                // The bridge closed it itself, and has dealt with that already.
                sdk::debug!("{name}: closed ({why})");
                return Ok(());
            }
            on_closed(name, conn, &why)
        }
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

/// Ends a connection that cannot register, as failed: it is tried again when its user next
/// joins a portal or at the next sync.
fn give_up(name: &str, mut conn: Conn, why: &str) -> sdk::Result<()> {
    sdk::error!("{name}: giving up on the connection: {why}");
    transmit(name, &[line("QUIT", &[why])]);
    net::close(name);
    if conn.is_idle() {
        return forget(name, &conn);
    }
    store::forget_own_nick(&conn.nick, name)?;
    timers::cancel(&format!("{REGISTER_TIMER}{name}"));
    timers::cancel(&format!("{RECONNECT_TIMER}{name}"));
    let dropped = conn.fail();
    if dropped > 0 {
        sdk::log::counter("queue_dropped", dropped as u64);
    }
    store::save_conn(name, &conn)
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
    if conn.failed || (conn.open && net::is_open(name)) {
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

/// Loads a user's connection, or a new one under the nick template (`true`: new). `None` if the
/// name is taken by another user's record (it cannot be, short of a SHA-256 collision).
fn user_conn(user: &str) -> sdk::Result<Option<(String, Conn, bool)>> {
    let name = user_conn_name(user);
    Ok(match store::conn(&name)? {
        Some(conn) if conn.user.as_deref() == Some(user) => Some((name, conn, false)),
        Some(_) => {
            sdk::error!("{name}: the connection of another user; {user} gets none");
            None
        }
        None => Some((name, Conn::new(Some(user.to_owned()), &crate::naming().irc_nick(user)), true)),
    })
}

/// A Matrix user of this server is in the portals of these channels: their connection (opened
/// if new, or tried again if it failed) joins them.
pub fn user_wants<'a>(user: &str, channels: impl IntoIterator<Item = &'a str>) -> sdk::Result<()> {
    let Some((name, mut conn, new)) = user_conn(user)? else { return Ok(()) };
    let mut lines = Vec::new();
    for channel in channels {
        lines.extend(conn.want(channel));
    }
    if new || conn.failed {
        sdk::info!("{name}: opening for {}", conn.wanted.iter().cloned().collect::<Vec<_>>().join(","));
        return open(&name, &mut conn);
    }
    store::save_conn(&name, &conn)?;
    transmit(&name, &lines);
    Ok(())
}

/// A Matrix user left a channel's portal: their connection parts it, and quits once in none.
pub fn user_unwants(user: &str, channel: &str) -> sdk::Result<()> {
    let Some((name, mut conn, false)) = user_conn(user)? else { return Ok(()) };
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

/// Lines a Matrix user of this server says in a channel: sent on their connection, or queued
/// until it is registered (opening it if they had none). `false` if they have no connection to
/// say them (it failed, see [`open`]): the bridge's own says them instead.
pub fn say(user: &str, channel: &str, lines: Vec<String>) -> sdk::Result<bool> {
    let Some((name, mut conn, new)) = user_conn(user)? else { return Ok(false) };
    if conn.failed {
        return Ok(false);
    }
    let mut out = conn.want(channel);
    if new {
        open(&name, &mut conn)?;
        if conn.failed {
            return Ok(false);
        }
    }
    let (now, dropped) = conn.say(lines);
    out.extend(now);
    if dropped > 0 {
        sdk::warn!("{name}: not registered yet; dropped {dropped} older queued lines");
        sdk::log::counter("queue_dropped", dropped as u64);
    }
    sdk::log::counter("matrix_to_irc", 1);
    store::save_conn(&name, &conn)?;
    transmit(&name, &out);
    Ok(true)
}

/// Lines the bridge's own connection says for a Matrix user without a connection of their own
/// (queued like a user's until it is registered).
pub fn bot_say(lines: Vec<String>) -> sdk::Result<()> {
    let Some(mut conn) = store::conn(BOT)? else {
        sdk::warn!("{BOT}: no connection to relay on; dropped {} lines", lines.len());
        sdk::log::counter("queue_dropped", lines.len() as u64);
        return Ok(());
    };
    let (now, dropped) = conn.say(lines);
    if dropped > 0 {
        sdk::warn!("{BOT}: not registered yet; dropped {dropped} older queued lines");
        sdk::log::counter("queue_dropped", dropped as u64);
    }
    sdk::log::counter("matrix_to_irc", 1);
    if now.is_empty() {
        return store::save_conn(BOT, &conn);
    }
    transmit(BOT, &now);
    Ok(())
}

/// The IRC nick a Matrix user of this server has (their connection's), or would have; `None` if
/// their connection failed (the bridge's own relays them).
pub fn nick_of_user(user: &str) -> Option<String> {
    match store::conn(&user_conn_name(user)) {
        Ok(Some(conn)) if conn.user.as_deref() == Some(user) => (!conn.failed).then_some(conn.nick),
        _ => Some(crate::naming().irc_nick(user)),
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
/// restarted) are opened again; open ones the store does not know are closed, and so are those
/// it knows but does not keep (see [`names::keeps_conn`]: an earlier version's, for users of
/// other servers or under names too long).
pub fn revive() -> sdk::Result<()> {
    // The host's list before the store's: a connection opened in between has its record stored
    // before it was opened, so it is not taken for an unknown one.
    let open_now: BTreeSet<String> = net::list().into_iter().collect();
    let known = store::conn_names()?;
    for name in &known {
        let Some(mut conn) = store::conn(name)? else { continue };
        if !names::keeps_conn(name, conn.user.as_deref(), &crate::naming().server_name) {
            sdk::info!("{name}: not a connection this bridge keeps; closing it");
            if open_now.contains(name) {
                transmit(name, &[line("QUIT", &["the bridge does not connect this user any more"])]);
                net::close(name);
            }
            forget(name, &conn)?;
            continue;
        }
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

/// At start: every connection of a user of this server wants exactly the channels of the
/// portals they are in (`wanted`, for the channels in `checked` — those whose members could be
/// read — and none that is not `bridged` any more), and a failed one is tried again.
pub fn reconcile_users(
    wanted: &BTreeMap<String, BTreeSet<String>>,
    checked: &BTreeSet<String>,
    bridged: &BTreeSet<String>,
) -> sdk::Result<()> {
    for name in store::conn_names()? {
        let Some(conn) = store::conn(&name)? else { continue };
        let Some(user) = conn.user else { continue };
        let stale: Vec<&String> = conn
            .wanted
            .iter()
            .filter(|c| {
                !bridged.contains(*c)
                    || (checked.contains(*c) && !wanted.get(&user).is_some_and(|w| w.contains(*c)))
            })
            .collect();
        for channel in stale {
            user_unwants(&user, channel)?;
        }
    }
    for (user, channels) in wanted {
        user_wants(user, channels.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_for_good() {
        for own in [false, true] {
            assert!(refused_for_good(&Error::Denied("not granted".into()), own));
            assert!(refused_for_good(&Error::Invalid("name too long".into()), own));
            assert!(!refused_for_good(&Error::Internal("oops".into()), own));
            assert!(!refused_for_good(&Error::RateLimited(100), own));
        }
        assert!(refused_for_good(&Error::Quota("at most 100 connections".into()), false));
        assert!(!refused_for_good(&Error::Quota("at most 100 connections".into()), true));
    }
}
