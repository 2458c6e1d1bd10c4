//! Portal rooms: one public Matrix room per bridged channel, found by its alias or created, and
//! remembered both ways in the key-value store.

use std::collections::BTreeSet;

use lattice_plugin_sdk::raw::matrix as host;
use lattice_plugin_sdk::serde_json::json;
use lattice_plugin_sdk::{self as sdk, matrix};

use crate::names::casefold;
use crate::store;

/// The bridged channels: the configured ones and those added with `!irc bridge`.
pub fn channels() -> sdk::Result<BTreeSet<String>> {
    let mut channels: BTreeSet<String> = crate::settings().channels.iter().cloned().collect();
    channels.extend(store::bridged_channels()?);
    Ok(channels)
}

/// The portal room of a channel (as IRC wrote it, any case), if there is one.
pub fn room_of(channel: &str) -> sdk::Result<Option<String>> {
    store::portal_room(&casefold(channel))
}

/// The channel a room is the portal of.
pub fn channel_of(room: &str) -> sdk::Result<Option<String>> {
    store::portal_channel(room)
}

/// The portal room of a (normalized) channel: the one remembered, else the room its alias
/// names (which the bot joins), else a new public room with that alias. Idempotent.
pub fn ensure(channel: &str) -> sdk::Result<String> {
    if let Some(room) = store::portal_room(channel)? {
        return Ok(room);
    }
    let naming = crate::naming();
    let room = match host::resolve_alias(&naming.alias(channel))? {
        Some(room) => {
            matrix::join(&room)?;
            room
        }
        None => {
            let options = json!({
                "room_alias_name": naming.alias_localpart(channel),
                "name": channel,
                "preset": "public_chat",
                "visibility": "public",
            });
            host::create_room(None, &options.to_string())?
        }
    };
    store::set_portal(channel, &room)?;
    sdk::info!("{channel}: portal room {room} ({})", naming.alias(channel));
    Ok(room)
}
