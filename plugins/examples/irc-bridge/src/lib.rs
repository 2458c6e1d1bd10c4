//! The IRC bridge: IRC channels as Matrix portal rooms. IRC users appear in the portals as
//! puppets (`@irc_bob:server`); each user of this homeserver in a portal gets an IRC connection
//! of their own (`alice[m]`), and the bridge's own connection says what users of other servers
//! write (`<Alice> hi`). See `README.md` beside this crate for what an admin configures.
//!
//! - `lib.rs`: the exports, the start-up sync, and Matrix events of portal rooms;
//! - `message.rs`, `inbound.rs`: IRC lines and what they mean (pure);
//! - `text.rs`, `outbound.rs`: message text both ways, Matrix messages as IRC lines (pure);
//! - `names.rs`: nicks, puppet ids, aliases and templates (pure);
//! - `conn.rs`: one connection's protocol state (pure);
//! - `settings.rs`: the configuration;
//! - `store.rs`: the key-value layout;
//! - `links.rs`: the connections (host calls);
//! - `relay.rs`: IRC to Matrix, with an outbox for when the send rate runs out;
//! - `portals.rs`: the portal rooms; `admin.rs`: the `!irc` commands.

mod admin;
mod conn;
mod inbound;
mod links;
mod message;
mod names;
mod outbound;
mod portals;
mod relay;
mod settings;
mod store;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use lattice_plugin_sdk::raw::matrix as host;
use lattice_plugin_sdk::serde_json::Value;
use lattice_plugin_sdk::{
    self as sdk, Command, Delivery, Error, Event, Info, NetEvent, Plugin, Registration, puppets, timers,
};

use crate::names::Naming;
use crate::settings::Settings;

/// The timer that (re)establishes everything: portals, connections, who is where. Set at every
/// instance start; it is idempotent.
pub const SYNC_TIMER: &str = "sync";

struct Context {
    settings: Settings,
    bot: String,
}

static CONTEXT: OnceLock<Context> = OnceLock::new();

fn context() -> &'static Context {
    CONTEXT.get().expect("init runs before anything else")
}

fn settings() -> &'static Settings {
    &context().settings
}

fn naming() -> &'static Naming {
    &context().settings.naming
}

/// Whether a user is the bridge's own: the bot, or a puppet (by the id's shape, or the host's
/// namespaces).
fn is_bridge_user(user: &str) -> bool {
    user == context().bot || naming().nick_of_puppet(user).is_some() || puppets::owns(user)
}

/// Whether a user is of this homeserver (only they get IRC connections of their own).
fn is_local_user(user: &str) -> bool {
    names::is_local_user(user, &naming().server_name)
}

/// `Err` for host failures a retry may fix (the host delivers the event again), else logged.
fn settle(result: sdk::Result<()>, doing: &str) -> sdk::Result<()> {
    match result {
        Err(e @ (Error::RateLimited(_) | Error::Internal(_))) => Err(e),
        Err(e) => {
            sdk::warn!("{doing}: {}", e.message());
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Portals for every bridged channel, the bridge's own connection in them, the connections the
/// store knows reopened if the host lost them, and the connection of every user of this server
/// in a portal in the channels of the portals they are in (one that failed tried again).
fn sync() -> sdk::Result<()> {
    let mut portals = BTreeMap::new();
    let bridged = portals::channels()?;
    for channel in bridged.iter().cloned() {
        match portals::ensure(&channel) {
            Ok(room) => {
                portals.insert(channel, room);
            }
            Err(Error::RateLimited(ms)) => {
                // The rest next time; what is done stays done.
                timers::set(SYNC_TIMER, u64::from(ms))?;
                break;
            }
            Err(e) => sdk::warn!("{channel}: no portal room: {}", e.message()),
        }
    }
    links::revive()?;
    links::ensure_bot(&portals.keys().cloned().collect())?;
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked = BTreeSet::new();
    for (channel, room) in &portals {
        match host::members(room) {
            Ok(members) => {
                checked.insert(channel.clone());
                for user in members.into_iter().filter(|u| is_local_user(u) && !is_bridge_user(u)) {
                    wanted.entry(user).or_default().insert(channel.clone());
                }
            }
            Err(e) => sdk::warn!("{channel}: reading the members of {room}: {}", e.message()),
        }
    }
    links::reconcile_users(&wanted, &checked, &bridged)
}

/// A Matrix user of this server joined or left a portal (users of other servers have no
/// connections of their own).
fn on_membership(event: &Event, channel: &str) -> sdk::Result<()> {
    let Some(user) = event.state_key() else { return Ok(()) };
    if is_bridge_user(user) || !is_local_user(user) {
        return Ok(());
    }
    match event.membership() {
        Some("join") => links::user_wants(user, [channel]),
        Some("leave" | "ban") => links::user_unwants(user, channel),
        _ => Ok(()),
    }
}

/// A Matrix user's message in a portal, said on IRC by their connection; or, for a user of
/// another server (or one whose connection failed), by the bridge's own as `<name> text`.
fn on_message(event: &Event, channel: &str) -> sdk::Result<()> {
    if is_bridge_user(event.sender()) {
        return Ok(());
    }
    // The bridge's own commands are for the bridge.
    if event.body().is_some_and(|b| b == "!irc" || b.starts_with("!irc ")) {
        return Ok(());
    }
    let reply_nick = outbound::reply_target(event.content()).and_then(|id| replied_nick(event.room_id(), id));
    let Some(rendered) = outbound::render(event.content(), reply_nick.as_deref()) else { return Ok(()) };
    let sender = event.sender();
    if is_local_user(sender) && links::say(sender, channel, outbound::lines(channel, &rendered))? {
        return Ok(());
    }
    let speaker = speaker_name(event.room_id(), sender);
    links::bot_say(outbound::relayed_lines(channel, &rendered, &speaker))
}

/// How the bridge's own connection names a Matrix user it speaks for: their display name in
/// the room, else their localpart (see [`outbound::speaker_name`]).
fn speaker_name(room: &str, user: &str) -> String {
    let displayname = host::get_state(room, "m.room.member", user)
        .inspect_err(|e| sdk::debug!("reading the membership of {user}: {}", e.message()))
        .ok()
        .flatten()
        .and_then(|json| sdk::serde_json::from_str::<Value>(&json).ok())
        .and_then(|content| content["displayname"].as_str().map(str::to_owned));
    outbound::speaker_name(displayname.as_deref(), user)
}

/// The IRC nick of whoever sent the event `id`: a puppet's nick, the bridge's own, a Matrix
/// user's connection's, or the name the bridge's connection gives a user it speaks for.
fn replied_nick(room: &str, id: &str) -> Option<String> {
    let event = host::get_event(room, id)
        .inspect_err(|e| sdk::debug!("reading the replied-to {id}: {}", e.message()))
        .ok()?;
    let sender = &event.sender;
    if *sender == context().bot {
        return Some(links::bot_nick());
    }
    if let Some(nick) = relay::puppet_nick(sender) {
        return Some(nick);
    }
    if let Some(nick) = is_local_user(sender).then(|| links::nick_of_user(sender)).flatten() {
        return Some(nick);
    }
    Some(speaker_name(room, sender))
}

struct IrcBridge;

impl Plugin for IrcBridge {
    fn registration() -> Registration {
        settings::declare(Registration::new("1.0.0").command(admin::WORD))
    }

    fn init(info: &Info) -> Result<Registration, String> {
        let settings = Settings::from_config(&sdk::config(), &info.server_name)?;
        let _ = CONTEXT.set(Context { settings, bot: info.user_id.clone() });
        // Every new instance (a start, a reload, after a crash) checks what the last one left.
        if let Err(e) = timers::set(SYNC_TIMER, 0) {
            sdk::warn!("setting the sync timer: {}", e.message());
        }
        Ok(Self::registration())
    }

    fn on_event(event: &Event, _delivery: Delivery) -> sdk::Result<()> {
        if sdk::accept_invite(event)? {
            return Ok(());
        }
        let Some(channel) = portals::channel_of(event.room_id())? else { return Ok(()) };
        let result = match event.event_type() {
            "m.room.member" => on_membership(event, &channel),
            "m.room.message" => on_message(event, &channel),
            _ => Ok(()),
        };
        settle(result, &format!("{} in {channel}", event.id()))
    }

    fn on_command(command: &Command, _delivery: Delivery) -> sdk::Result<()> {
        if command.name != admin::WORD || is_bridge_user(command.event.sender()) {
            return Ok(());
        }
        settle(admin::handle(command), "!irc")
    }

    fn on_timer(tag: &str) -> sdk::Result<()> {
        let result = if tag == SYNC_TIMER {
            sync()
        } else if tag == relay::OUTBOX_TIMER {
            relay::drain()
        } else if let Some(name) = tag.strip_prefix(links::RECONNECT_TIMER) {
            links::reconnect_due(name)
        } else if let Some(name) = tag.strip_prefix(links::REGISTER_TIMER) {
            links::registration_due(name)
        } else {
            Ok(())
        };
        // A timer fires at least once, but nothing says it fires again after an error: one that
        // failed for a passing reason is set again.
        match result {
            Err(Error::RateLimited(ms)) => timers::set(tag, u64::from(ms)),
            Err(Error::Internal(e)) => {
                sdk::warn!("timer {tag}: {e}; trying again in 5 s");
                timers::set(tag, 5_000)
            }
            other => other,
        }
    }

    fn on_net(name: &str, event: NetEvent) -> sdk::Result<()> {
        links::on_net(name, event)
    }
}

lattice_plugin_sdk::export_plugin!(IrcBridge);
