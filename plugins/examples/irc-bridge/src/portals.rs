//! Portal rooms: one public Matrix room per bridged channel, found by its alias or created, and
//! remembered both ways in the key-value store.

use std::collections::BTreeSet;

use lattice_plugin_sdk::raw::matrix as host;
use lattice_plugin_sdk::serde_json::json;
use lattice_plugin_sdk::{self as sdk, matrix};

use crate::names::casefold;
use crate::settings::MAX_CHANNELS;
use crate::store;

/// The bridged channels: the configured ones and those added with `!irc bridge`, at most
/// [`MAX_CHANNELS`]. Added ones past that (only a store from before the limit has them) are
/// dropped, with a warning: their portals stay, but are not bridged any more.
pub fn channels() -> sdk::Result<BTreeSet<String>> {
    let (channels, over) = cap(&crate::settings().channels, store::bridged_channels()?, MAX_CHANNELS);
    for channel in over {
        sdk::warn!("{channel}: not bridged any more: more than {MAX_CHANNELS} channels were bridged");
        store::remove_bridged_channel(&channel)?;
    }
    Ok(channels)
}

/// Whether a (normalized) channel is bridged.
pub fn is_bridged(channel: &str) -> sdk::Result<bool> {
    Ok(crate::settings().channels.iter().any(|c| c == channel) || store::is_bridged_channel(channel)?)
}

/// The configured channels and then the added ones (in their order), up to `max` in all; and
/// the added ones left over.
pub fn cap(configured: &[String], added: Vec<String>, max: usize) -> (BTreeSet<String>, Vec<String>) {
    let mut channels: BTreeSet<String> = configured.iter().cloned().collect();
    let mut over = Vec::new();
    for channel in added {
        if channels.contains(&channel) {
            continue;
        }
        if channels.len() < max {
            channels.insert(channel);
        } else {
            over.push(channel);
        }
    }
    (channels, over)
}

/// The portal room of a channel (as IRC wrote it, any case), if there is one.
pub fn room_of(channel: &str) -> sdk::Result<Option<String>> {
    store::portal_room(&casefold(channel))
}

/// The channel a room is the portal of, if that channel is still bridged.
pub fn channel_of(room: &str) -> sdk::Result<Option<String>> {
    match store::portal_channel(room)? {
        Some(channel) if is_bridged(&channel)? => Ok(Some(channel)),
        _ => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn configured_channels_come_first_under_the_cap() {
        let (kept, over) = cap(&list(&["#a", "#b"]), list(&["#b", "#c", "#d", "#e"]), 4);
        assert_eq!(kept, BTreeSet::from(["#a", "#b", "#c", "#d"].map(String::from)));
        assert_eq!(over, ["#e"]);
        let (kept, over) = cap(&list(&["#a"]), list(&["#b"]), 100);
        assert_eq!((kept.len(), over.len()), (2, 0));
    }
}
