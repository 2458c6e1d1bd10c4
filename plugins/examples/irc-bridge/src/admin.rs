//! `!irc` commands: `!irc bridge #channel` (room moderators: power level 50 or more in the room
//! where it is said) bridges one more channel; `!irc channels` lists the bridged ones. Answered
//! with a notice.

use lattice_plugin_sdk::raw::matrix as host;
use lattice_plugin_sdk::serde_json::Value;
use lattice_plugin_sdk::{self as sdk, Command, Error, Event, matrix};

use crate::names::normalize_channel;
use crate::{links, portals, store};

/// The command word.
pub const WORD: &str = "irc";
/// The power level `!irc bridge` takes.
pub const MODERATOR_LEVEL: i64 = 50;

const HELP: &str = "IRC bridge: `!irc channels` lists the bridged channels; \
    `!irc bridge #channel` (room moderators) bridges one more.";

#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Bridge(&'a str),
    Channels,
    Help,
}

pub fn parse(args: &str) -> Request<'_> {
    let mut words = args.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("bridge"), Some(channel), None) => Request::Bridge(channel),
        (Some("channels"), None, None) => Request::Channels,
        _ => Request::Help,
    }
}

/// A user's power level from `m.room.power_levels` content: `users[user]`, else
/// `users_default`, else 0 (levels written as strings, as old rooms may have them, count too).
pub fn power_level(power_levels: &Value, user: &str) -> i64 {
    let level = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
    level(&power_levels["users"][user]).or_else(|| level(&power_levels["users_default"])).unwrap_or(0)
}

/// Whether `user` may bridge channels from `room`: power level 50 or more, or one of the room's
/// creators where they are not listed in the power levels (room versions 12 on) or there are
/// no power levels at all.
fn may_bridge(room: &str, user: &str) -> sdk::Result<bool> {
    let levels = host::get_state(room, "m.room.power_levels", "")?
        .and_then(|json| sdk::serde_json::from_str::<Value>(&json).ok());
    if levels.as_ref().is_some_and(|l| power_level(l, user) >= MODERATOR_LEVEL) {
        return Ok(true);
    }
    let create: Value = host::get_state(room, "m.room.create", "")?
        .and_then(|json| sdk::serde_json::from_str(&json).ok())
        .unwrap_or_default();
    if levels.is_none() && create["creator"].as_str() == Some(user) {
        return Ok(true);
    }
    // Room ids without a server name are the create event's hash (version 12 on), whose
    // sender and `additional_creators` outrank every power level.
    let Some(hash) = room.strip_prefix('!').filter(|h| !h.contains(':')) else { return Ok(false) };
    if create["additional_creators"].as_array().is_some_and(|c| c.iter().any(|u| u.as_str() == Some(user))) {
        return Ok(true);
    }
    match host::get_event(room, &format!("${hash}")) {
        Ok(event) => Ok(Event::from_raw(event).sender() == user),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn handle(command: &Command) -> sdk::Result<()> {
    let event = &command.event;
    let reply = match parse(&command.args) {
        Request::Help => HELP.to_owned(),
        Request::Channels => {
            let channels = portals::channels()?;
            if channels.is_empty() {
                "No channels are bridged.".to_owned()
            } else {
                let naming = crate::naming();
                let list: Vec<String> =
                    channels.iter().map(|c| format!("{c} ↔ {}", naming.alias(c))).collect();
                format!("Bridged channels: {}", list.join(", "))
            }
        }
        Request::Bridge(channel) => bridge(event, channel)?,
    };
    matrix::send_notice(event.room_id(), &reply)?;
    Ok(())
}

fn bridge(event: &Event, channel: &str) -> sdk::Result<String> {
    let Some(channel) = normalize_channel(channel) else {
        return Ok(format!("{channel} is not an IRC channel name (like #test)."));
    };
    if !may_bridge(event.room_id(), event.sender())? {
        return Ok("Only room moderators (power level 50 or more) can bridge channels.".to_owned());
    }
    store::add_bridged_channel(&channel)?;
    let room = match portals::ensure(&channel) {
        Ok(room) => room,
        Err(e @ (Error::RateLimited(_) | Error::Internal(_))) => return Err(e),
        Err(e) => return Ok(format!("Could not set up the portal room for {channel}: {}", e.message())),
    };
    links::bot_wants(&channel)?;
    sdk::info!("{} bridged {channel} ({room})", event.sender());
    Ok(format!("Bridging {channel}: join {} to talk there.", crate::naming().alias(&channel)))
}

#[cfg(test)]
mod tests {
    use lattice_plugin_sdk::serde_json::json;

    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(parse("bridge #test"), Request::Bridge("#test"));
        assert_eq!(parse("  bridge   #test "), Request::Bridge("#test"));
        assert_eq!(parse("channels"), Request::Channels);
        assert_eq!(parse(""), Request::Help);
        assert_eq!(parse("bridge"), Request::Help);
        assert_eq!(parse("bridge #a #b"), Request::Help);
        assert_eq!(parse("unbridge #a"), Request::Help);
    }

    #[test]
    fn power_levels() {
        let levels = json!({"users": {"@mod:x": 50, "@admin:x": "100"}, "users_default": 10});
        assert_eq!(power_level(&levels, "@mod:x"), 50);
        assert_eq!(power_level(&levels, "@admin:x"), 100);
        assert_eq!(power_level(&levels, "@someone:x"), 10);
        assert_eq!(power_level(&json!({}), "@someone:x"), 0);
    }
}
