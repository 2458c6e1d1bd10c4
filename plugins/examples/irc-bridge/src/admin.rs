//! `!irc` commands: `!irc bridge #channel` (the bridge's admins, the `admins` setting) bridges
//! one more channel, up to [`MAX_CHANNELS`]; `!irc channels` lists the bridged ones. Answered
//! with a notice.

use std::collections::BTreeSet;

use lattice_plugin_sdk::{self as sdk, Command, Error, Event, matrix};

use crate::names::normalize_channel;
use crate::settings::MAX_CHANNELS;
use crate::{links, portals, store};

/// The command word.
pub const WORD: &str = "irc";

const HELP: &str = "IRC bridge: `!irc channels` lists the bridged channels; \
    `!irc bridge #channel` (the bridge's admins) bridges one more.";

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

/// Why `sender` may not bridge `channel` now, as the answer to give; `None` if they may.
/// `admins`: the configured ones; `bridged`: the channels bridged now.
pub fn refusal(
    admins: &BTreeSet<String>,
    sender: &str,
    bridged: &BTreeSet<String>,
    channel: &str,
) -> Option<String> {
    if admins.is_empty() {
        return Some(
            "Sorry, bridging more channels is turned off: the bridge has no admins configured.".to_owned(),
        );
    }
    if !admins.contains(sender) {
        return Some("Sorry, only the bridge's admins can bridge channels.".to_owned());
    }
    if !bridged.contains(channel) && bridged.len() >= MAX_CHANNELS {
        return Some(format!(
            "Sorry, {} channels are bridged already, the most this bridge takes ({MAX_CHANNELS}).",
            bridged.len()
        ));
    }
    None
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
    let bridged = portals::channels()?;
    if let Some(answer) = refusal(&crate::settings().admins, event.sender(), &bridged, &channel) {
        sdk::info!("{} may not bridge {channel}: {answer}", event.sender());
        return Ok(answer);
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
    fn only_admins_bridge_and_only_so_many() {
        let admins = BTreeSet::from(["@admin:example.org".to_owned()]);
        let bridged: BTreeSet<String> = ["#a".to_owned()].into();
        assert_eq!(refusal(&admins, "@admin:example.org", &bridged, "#b"), None);
        assert!(
            refusal(&admins, "@mod:example.org", &bridged, "#b")
                .unwrap()
                .contains("only the bridge's admins")
        );
        assert!(refusal(&admins, "@admin:evil.org", &bridged, "#b").is_some());
        assert!(
            refusal(&BTreeSet::new(), "@admin:example.org", &bridged, "#b").unwrap().contains("no admins")
        );
        let full: BTreeSet<String> = (0..MAX_CHANNELS).map(|i| format!("#c{i}")).collect();
        assert!(refusal(&admins, "@admin:example.org", &full, "#b").unwrap().contains("the most"));
        // Bridging one that is bridged already is no new channel.
        assert_eq!(refusal(&admins, "@admin:example.org", &full, "#c1"), None);
    }
}
