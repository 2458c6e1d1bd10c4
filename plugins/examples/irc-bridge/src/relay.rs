//! IRC to Matrix: what the bridge's own connection sees in bridged channels becomes puppet
//! actions in the portal rooms (messages, joins, leaves, nick changes).
//!
//! Net events are delivered once (an error is only logged), and the plugin's send rate is
//! limited, so an action the host refuses for the rate waits in the outbox (KV `outbox/…`, in
//! order) and the `outbox` timer sends it later; while anything waits there, new actions queue
//! behind it so that a room's messages keep their order. The outbox is one queue for every
//! channel, of at most [`MAX_OUTBOX`] entries: past that the oldest are dropped (counted in
//! `outbox_dropped`), so that a flood cannot fill the store or hold everything back for ever.

use std::time::{Duration, Instant};

use lattice_plugin_sdk::matrix::{self as m, as_user};
use lattice_plugin_sdk::serde_json::json;
use lattice_plugin_sdk::{self as sdk, Error, Kv, puppets, timers};
use serde::{Deserialize, Serialize};

use crate::inbound::{Inbound, Kind};
use crate::names::casefold;
use crate::store::{self, OUTBOX, OUTBOX_SEQ, Puppet};

/// The timer that sends what waits in the outbox.
pub const OUTBOX_TIMER: &str = "outbox";
/// The most entries (the actions for one IRC event each) the outbox keeps.
pub const MAX_OUTBOX: u64 = 10_000;
/// How long one timer call sends from the outbox before leaving the rest to the next call
/// (well within the default `wall_ms_per_call` of 30 s).
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// One thing to do in Matrix for something seen on IRC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// The nick's puppet says `text` in the room (joining it first if needed).
    Say { room: String, nick: String, kind: Kind, text: String, time: Option<u64> },
    /// The nick's puppet joins the room.
    Join { room: String, nick: String },
    /// The nick's puppet leaves the room.
    Leave { room: String, nick: String },
    /// The nick's puppet leaves every portal it is in (QUIT).
    LeaveAll { nick: String },
    /// NICK: the new nick's puppet joins the old one's rooms, and the old one leaves them.
    Rename { old: String, new: String },
}

/// The actions for an IRC event seen on the bridge's own connection. `portal`: the portal room
/// of a channel, if it is bridged; `is_ours`: whether a nick is one of the bridge's own
/// connections (the bot's, or a Matrix user's), whose doings are never relayed back.
pub fn actions(
    inbound: Inbound,
    portal: impl Fn(&str) -> Option<String>,
    is_ours: impl Fn(&str) -> bool,
) -> Vec<Action> {
    match inbound {
        Inbound::Said { nick, target, kind, text, time } if !is_ours(&nick) => {
            portal(&target).map(|room| Action::Say { room, nick, kind, text, time }).into_iter().collect()
        }
        Inbound::Joined { nick, channel } if !is_ours(&nick) => {
            portal(&channel).map(|room| Action::Join { room, nick }).into_iter().collect()
        }
        Inbound::Parted { nick, channel } | Inbound::Kicked { nick, channel } if !is_ours(&nick) => {
            portal(&channel).map(|room| Action::Leave { room, nick }).into_iter().collect()
        }
        Inbound::Quit { nick } if !is_ours(&nick) => vec![Action::LeaveAll { nick }],
        // A Matrix user's connection may have taken the new nick already, or not yet.
        Inbound::NickChanged { old, new } if !is_ours(&old) && !is_ours(&new) => {
            vec![Action::Rename { old, new }]
        }
        Inbound::Names { channel, nicks } => match portal(&channel) {
            Some(room) => nicks
                .into_iter()
                .filter(|nick| !is_ours(nick))
                .map(|nick| Action::Join { room: room.clone(), nick })
                .collect(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A batch of actions in the outbox; `next` is the first not done yet.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Batch {
    next: usize,
    actions: Vec<Action>,
}

/// Carries out actions now, or queues them behind those already waiting.
pub fn submit(actions: Vec<Action>) -> sdk::Result<()> {
    if actions.is_empty() {
        return Ok(());
    }
    if !Kv::prefixed(OUTBOX).list("", None, 1)?.is_empty() {
        return enqueue(Batch { next: 0, actions });
    }
    let mut batch = Batch { next: 0, actions };
    match run(&mut batch, None, None) {
        Ok(()) => Ok(()),
        Err(wait_ms) => {
            enqueue(batch)?;
            timers::set(OUTBOX_TIMER, wait_ms)?;
            Ok(())
        }
    }
}

fn enqueue(batch: Batch) -> sdk::Result<()> {
    let seq = Kv::new().increment(OUTBOX_SEQ, 1)?;
    Kv::prefixed(OUTBOX).put_json(&format!("{seq:020}"), &batch)?;
    sdk::log::counter("outbox_deferred", (batch.actions.len() - batch.next) as u64);
    trim(seq)
}

/// Drops the oldest entries past [`MAX_OUTBOX`] (`last`: the newest entry's sequence number).
fn trim(last: u64) -> sdk::Result<()> {
    let outbox = Kv::prefixed(OUTBOX);
    let first = outbox.list("", None, 1)?.first().and_then(|key| key.parse::<u64>().ok());
    let Some(first) = first else { return Ok(()) };
    let excess = outbox_excess(first, last, MAX_OUTBOX);
    let mut dropped = 0;
    while dropped < excess {
        let keys = outbox.list("", None, (excess - dropped).min(1000) as u32)?;
        if keys.is_empty() {
            break;
        }
        for key in keys {
            outbox.delete(&key)?;
            dropped += 1;
        }
    }
    if dropped > 0 {
        sdk::warn!("the outbox is full ({MAX_OUTBOX} entries): dropped the {dropped} oldest");
        sdk::log::counter("outbox_dropped", dropped);
    }
    Ok(())
}

/// How many entries to drop from an outbox holding the sequence numbers `first..=last` (they
/// are taken in order and dropped oldest first, so it holds at most that many) to keep `max`.
pub fn outbox_excess(first: u64, last: u64, max: u64) -> u64 {
    if last < first {
        return 0;
    }
    (last - first + 1).saturating_sub(max)
}

/// The `outbox` timer: carries out what waits, oldest first, until the rate stops it (then the
/// timer is set for when the host said to retry) or for [`DRAIN_FOR`].
pub fn drain() -> sdk::Result<()> {
    let started = Instant::now();
    let outbox = Kv::prefixed(OUTBOX);
    loop {
        let keys = outbox.list("", None, 20)?;
        if keys.is_empty() {
            return Ok(());
        }
        for key in keys {
            if started.elapsed() > DRAIN_FOR {
                timers::set(OUTBOX_TIMER, 0)?;
                return Ok(());
            }
            let Some(mut batch) = outbox.get_json::<Batch>(&key).unwrap_or_else(|e| {
                sdk::warn!("dropping unreadable outbox entry {key}: {}", e.message());
                None
            }) else {
                outbox.delete(&key)?;
                continue;
            };
            if let Err(wait_ms) = run(&mut batch, Some(&key), Some(started)) {
                outbox.put_json(&key, &batch)?;
                timers::set(OUTBOX_TIMER, wait_ms)?;
                return Ok(());
            }
            outbox.delete(&key)?;
        }
    }
}

/// Carries out the batch from `next` on. `Err(wait)` when the host asked to wait (`next` is
/// then the action to retry). Other failures are logged and the action dropped: retrying would
/// not help (a room the puppet may not join, a nick outside the namespace…). `key`: the outbox
/// entry, whose actions get transaction ids so that a retried send is not sent twice.
fn run(batch: &mut Batch, key: Option<&str>, started: Option<Instant>) -> Result<(), u64> {
    while let Some(action) = batch.actions.get(batch.next) {
        if started.is_some_and(|s| s.elapsed() > DRAIN_FOR) {
            return Err(0);
        }
        let txn = key.map(|k| format!("irc/{k}/{}", batch.next));
        match execute(action, txn) {
            Ok(()) => sdk::log::counter("irc_to_matrix", 1),
            Err(Error::RateLimited(ms)) => return Err(u64::from(ms).max(100)),
            Err(Error::Internal(e)) => {
                sdk::warn!("relaying {action:?}, will retry: {e}");
                return Err(1_000);
            }
            Err(e) => {
                sdk::warn!("relaying {action:?}: {}", e.message());
                sdk::log::counter("relay_failures", 1);
            }
        }
        batch.next += 1;
    }
    Ok(())
}

fn execute(action: &Action, txn: Option<String>) -> sdk::Result<()> {
    match action {
        Action::Say { room, nick, kind, text, time } => {
            let (user, mut puppet) = ensure_puppet(nick)?;
            enter(&user, &mut puppet, room)?;
            let mut options = as_user(&user);
            options.txn_id = txn;
            options.origin_ts = *time;
            let content = json!({ "msgtype": kind.msgtype(), "body": text });
            m::send_json_with(room, "m.room.message", &content, &options)?;
        }
        Action::Join { room, nick } => {
            let (user, mut puppet) = ensure_puppet(nick)?;
            enter(&user, &mut puppet, room)?;
        }
        Action::Leave { room, nick } => {
            let user = crate::naming().puppet_id(nick);
            if let Some(mut puppet) = store::puppet(&user)? {
                exit(&user, &mut puppet, room)?;
            }
        }
        Action::LeaveAll { nick } => {
            let user = crate::naming().puppet_id(nick);
            if let Some(mut puppet) = store::puppet(&user)? {
                for room in puppet.rooms.clone() {
                    exit(&user, &mut puppet, &room)?;
                }
            }
        }
        Action::Rename { old, new } => {
            let old_user = crate::naming().puppet_id(old);
            let Some(mut old_puppet) = store::puppet(&old_user)? else { return Ok(()) };
            let (new_user, mut new_puppet) = ensure_puppet(new)?;
            if new_user == old_user {
                // Only the case changed: the same puppet, with the new display name.
                return Ok(());
            }
            // Room by room, the new one in before the old one out, so a retry after a refusal
            // resumes where this stopped.
            for room in old_puppet.rooms.clone() {
                enter(&new_user, &mut new_puppet, &room)?;
                exit(&old_user, &mut old_puppet, &room)?;
            }
        }
    }
    Ok(())
}

/// The puppet of `nick`, created (or its display name set) if the bridge has no record of it
/// under this exact nick.
fn ensure_puppet(nick: &str) -> sdk::Result<(String, Puppet)> {
    let user = crate::naming().puppet_id(nick);
    let mut puppet = store::puppet(&user)?.unwrap_or_default();
    if puppet.nick != nick {
        puppets::ensure(&user, Some(nick))?;
        puppet.nick = nick.to_owned();
        store::save_puppet(&user, &puppet)?;
    }
    Ok((user, puppet))
}

/// Joins the puppet to the room unless its record says it is in.
fn enter(user: &str, puppet: &mut Puppet, room: &str) -> sdk::Result<()> {
    if puppet.rooms.insert(room.to_owned()) {
        if let Err(e) = m::join_as(user, room) {
            puppet.rooms.remove(room);
            return Err(e);
        }
        store::save_puppet(user, puppet)?;
    }
    Ok(())
}

/// Has the puppet leave the room if its record says it is in.
fn exit(user: &str, puppet: &mut Puppet, room: &str) -> sdk::Result<()> {
    if puppet.rooms.contains(room) {
        match m::leave_as(user, room) {
            // Not in the room after all (someone kicked it): the record was wrong.
            Ok(()) | Err(Error::NotFound(_)) | Err(Error::Denied(_)) => {}
            Err(e) => return Err(e),
        }
        puppet.rooms.remove(room);
        store::save_puppet(user, puppet)?;
    }
    Ok(())
}

/// The display nick the bridge knows for a puppet id (its last seen nick, or the one decoded
/// from the id).
pub fn puppet_nick(user: &str) -> Option<String> {
    let decoded = crate::naming().nick_of_puppet(user)?;
    match store::puppet(user) {
        Ok(Some(puppet)) if casefold(&puppet.nick) == decoded => Some(puppet.nick),
        _ => Some(decoded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(channel: &str) -> Option<String> {
        (channel == "#test").then(|| "!room:x".to_owned())
    }

    fn ours(nick: &str) -> bool {
        matches!(nick, "lattice" | "alice[m]")
    }

    fn join(nick: &str) -> Action {
        Action::Join { room: "!room:x".into(), nick: nick.into() }
    }

    #[test]
    fn messages_in_bridged_channels_from_others() {
        let said = |nick: &str, target: &str| Inbound::Said {
            nick: nick.into(),
            target: target.into(),
            kind: Kind::Emote,
            text: "waves".into(),
            time: Some(5),
        };
        assert_eq!(
            actions(said("bob", "#test"), portal, ours),
            [Action::Say {
                room: "!room:x".into(),
                nick: "bob".into(),
                kind: Kind::Emote,
                text: "waves".into(),
                time: Some(5)
            }]
        );
        assert!(actions(said("alice[m]", "#test"), portal, ours).is_empty(), "no echo");
        assert!(actions(said("bob", "#other"), portal, ours).is_empty());
        assert!(actions(said("bob", "lattice"), portal, ours).is_empty(), "private messages");
    }

    #[test]
    fn membership_follows_irc() {
        let joined = Inbound::Joined { nick: "bob".into(), channel: "#test".into() };
        assert_eq!(actions(joined, portal, ours), [join("bob")]);
        let parted = Inbound::Parted { nick: "bob".into(), channel: "#test".into() };
        assert_eq!(
            actions(parted, portal, ours),
            [Action::Leave { room: "!room:x".into(), nick: "bob".into() }]
        );
        let kicked = Inbound::Kicked { nick: "alice[m]".into(), channel: "#test".into() };
        assert!(actions(kicked, portal, ours).is_empty());
        assert_eq!(
            actions(Inbound::Quit { nick: "bob".into() }, portal, ours),
            [Action::LeaveAll { nick: "bob".into() }]
        );
        assert!(actions(Inbound::Quit { nick: "lattice".into() }, portal, ours).is_empty());
    }

    #[test]
    fn nick_changes_move_puppets_unless_ours() {
        let change = |old: &str, new: &str| Inbound::NickChanged { old: old.into(), new: new.into() };
        assert_eq!(
            actions(change("bob", "robert"), portal, ours),
            [Action::Rename { old: "bob".into(), new: "robert".into() }]
        );
        assert!(actions(change("alice[m]", "alice[m]_"), portal, ours).is_empty());
        assert!(actions(change("alice_", "alice[m]"), portal, ours).is_empty());
    }

    #[test]
    fn names_join_everyone_but_ours() {
        let names = Inbound::Names {
            channel: "#test".into(),
            nicks: ["lattice", "bob", "alice[m]", "carol"].map(String::from).to_vec(),
        };
        assert_eq!(actions(names, portal, ours), [join("bob"), join("carol")]);
        let elsewhere = Inbound::Names { channel: "#other".into(), nicks: vec!["bob".into()] };
        assert!(actions(elsewhere, portal, ours).is_empty());
    }

    #[test]
    fn the_outbox_is_bounded() {
        assert_eq!(outbox_excess(1, 1, MAX_OUTBOX), 0);
        assert_eq!(outbox_excess(1, MAX_OUTBOX, MAX_OUTBOX), 0);
        assert_eq!(outbox_excess(1, MAX_OUTBOX + 1, MAX_OUTBOX), 1);
        assert_eq!(outbox_excess(500, 500 + MAX_OUTBOX + 9, MAX_OUTBOX), 10);
        assert_eq!(outbox_excess(7, 3, MAX_OUTBOX), 0);
    }

    #[test]
    fn actions_are_stored_as_tagged_json() {
        let action = Action::Say {
            room: "!r".into(),
            nick: "bob".into(),
            kind: Kind::Text,
            text: "hi".into(),
            time: None,
        };
        let json = sdk::serde_json::to_value(&action).unwrap();
        assert_eq!(
            json,
            json!({"do": "say", "room": "!r", "nick": "bob", "kind": "text", "text": "hi", "time": null})
        );
        assert_eq!(sdk::serde_json::from_value::<Action>(json).unwrap(), action);
    }
}
