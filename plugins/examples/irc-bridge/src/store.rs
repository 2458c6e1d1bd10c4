//! What the bridge keeps in its key-value store, so that a reloaded or restarted instance knows
//! what the previous one did: the keys, and typed reads and writes.
//!
//! | key | value |
//! |---|---|
//! | `bridged/<#channel>` | empty: a channel added with `!irc bridge` (configured ones are not stored) |
//! | `portal/<#channel>` | the portal room's id |
//! | `room/<room id>` | the channel the room is the portal of |
//! | `conn/<net name>` | a connection's [`Conn`] (JSON); net names are `irc/bot` and [`crate::names::user_conn_name`] |
//! | `nick/<case-folded nick>` | the net name of the bridge's connection using that nick |
//! | `puppet/<user id>` | a puppet's [`Puppet`] record (JSON) |
//! | `outbox/<sequence, 20 digits>` | IRC events waiting to reach Matrix (see `relay`; at most `relay::MAX_OUTBOX`) |
//! | `outbox-seq` | the last outbox sequence number |

use std::collections::BTreeSet;

use lattice_plugin_sdk::{self as sdk, Kv};
use serde::{Deserialize, Serialize};

use crate::conn::Conn;
use crate::names::casefold;

pub const BRIDGED: &str = "bridged/";
pub const PORTAL: &str = "portal/";
pub const ROOM: &str = "room/";
pub const CONN: &str = "conn/";
pub const NICK: &str = "nick/";
pub const PUPPET: &str = "puppet/";
pub const OUTBOX: &str = "outbox/";
pub const OUTBOX_SEQ: &str = "outbox-seq";

/// What the bridge knows of one of its puppets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Puppet {
    /// The IRC nick as last seen (its display name).
    pub nick: String,
    /// The portal rooms it joined.
    pub rooms: BTreeSet<String>,
}

/// Every key under `prefix` (the store lists at most 1000 at a time), without the prefix.
pub fn keys(prefix: &str) -> sdk::Result<Vec<String>> {
    let kv = Kv::prefixed(prefix);
    let mut all: Vec<String> = Vec::new();
    loop {
        let page = kv.list("", all.last().map(String::as_str), 1000)?;
        let full = page.len() == 1000;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

pub fn bridged_channels() -> sdk::Result<Vec<String>> {
    keys(BRIDGED)
}

/// Adds a channel to the bridged ones; whether it was new.
pub fn add_bridged_channel(channel: &str) -> sdk::Result<bool> {
    let kv = Kv::prefixed(BRIDGED);
    if kv.get(channel)?.is_some() {
        return Ok(false);
    }
    kv.put(channel, b"")?;
    Ok(true)
}

/// Whether a channel was added with `!irc bridge` (and not dropped since).
pub fn is_bridged_channel(channel: &str) -> sdk::Result<bool> {
    Ok(Kv::prefixed(BRIDGED).get(channel)?.is_some())
}

pub fn remove_bridged_channel(channel: &str) -> sdk::Result<()> {
    Kv::prefixed(BRIDGED).delete(channel)?;
    Ok(())
}

pub fn portal_room(channel: &str) -> sdk::Result<Option<String>> {
    Kv::prefixed(PORTAL).get_str(channel)
}

pub fn portal_channel(room: &str) -> sdk::Result<Option<String>> {
    Kv::prefixed(ROOM).get_str(room)
}

pub fn set_portal(channel: &str, room: &str) -> sdk::Result<()> {
    Kv::prefixed(ROOM).put_str(room, channel)?;
    Kv::prefixed(PORTAL).put_str(channel, room)?;
    Ok(())
}

pub fn conn(name: &str) -> sdk::Result<Option<Conn>> {
    Kv::prefixed(CONN).get_json(name)
}

pub fn save_conn(name: &str, conn: &Conn) -> sdk::Result<()> {
    Kv::prefixed(CONN).put_json(name, conn)?;
    Ok(())
}

pub fn delete_conn(name: &str) -> sdk::Result<()> {
    Kv::prefixed(CONN).delete(name)?;
    Ok(())
}

/// The net names of every connection the store knows.
pub fn conn_names() -> sdk::Result<Vec<String>> {
    keys(CONN)
}

/// The bridge's connection using `nick`, if one does.
pub fn own_nick(nick: &str) -> sdk::Result<Option<String>> {
    Kv::prefixed(NICK).get_str(&casefold(nick))
}

pub fn set_own_nick(nick: &str, name: &str) -> sdk::Result<()> {
    Kv::prefixed(NICK).put_str(&casefold(nick), name)?;
    Ok(())
}

/// Forgets `nick` as the connection `name`'s (if another connection has it now, it stays).
pub fn forget_own_nick(nick: &str, name: &str) -> sdk::Result<()> {
    if own_nick(nick)?.as_deref() == Some(name) {
        Kv::prefixed(NICK).delete(&casefold(nick))?;
    }
    Ok(())
}

pub fn puppet(user: &str) -> sdk::Result<Option<Puppet>> {
    Kv::prefixed(PUPPET).get_json(user)
}

/// Saves a puppet's record, or deletes it once the puppet is in no room (it is recreated, with
/// its display name, when the nick is seen again).
pub fn save_puppet(user: &str, puppet: &Puppet) -> sdk::Result<()> {
    let kv = Kv::prefixed(PUPPET);
    if puppet.rooms.is_empty() {
        kv.delete(user)?;
    } else {
        kv.put_json(user, puppet)?;
    }
    Ok(())
}
