//! Which events a plugin is offered, and which of them are commands. A plugin sees the events
//! of the rooms its users — its bot and its puppets (a bridge's namespace users) — are joined
//! to (as of each event: the joined set follows their member events in stream order), and
//! invites of them; never its own users' events (no echo loops). A message whose
//! body is `!word …` with `word` one of the plugin's commands is a command.

use std::collections::{HashMap, HashSet};

use homeserver_storage::events::EventRow;
use serde_json::Value;

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Skip,
    Event,
    Command { name: String, args: String },
}

/// Tells the plugin's own users.
pub(crate) type Own = Box<dyn Fn(&str) -> bool + Send + Sync>;

pub(crate) struct Interest {
    user: String,
    /// Whether a user is the plugin's own (its bot, its puppets).
    own: Own,
    /// The only rooms whose events it is offered (`grants.rooms`), if limited.
    scope: Option<HashSet<String>>,
    /// Rooms with the plugin's users (the bot, puppets) joined, and which of them.
    joined: HashMap<String, HashSet<String>>,
    commands: Vec<String>,
}

impl Interest {
    pub(crate) fn new(
        user: String,
        own: Own,
        joined: impl IntoIterator<Item = (String, String)>,
        commands: Vec<String>,
    ) -> Interest {
        let mut rooms: HashMap<String, HashSet<String>> = HashMap::new();
        for (room, member) in joined {
            rooms.entry(room).or_default().insert(member);
        }
        Interest { user, own, scope: None, joined: rooms, commands }
    }

    /// Limits the offer to these rooms.
    pub(crate) fn within(mut self, rooms: impl IntoIterator<Item = String>) -> Interest {
        self.scope = Some(rooms.into_iter().collect());
        self
    }

    /// The rooms the bot or a puppet is joined to, as of the last event offered.
    pub(crate) fn joined(&self) -> Vec<String> {
        self.joined.keys().cloned().collect()
    }

    /// The command words changed (a reload).
    pub(crate) fn set_commands(&mut self, commands: Vec<String>) {
        self.commands = commands;
    }

    /// Classifies the next event of the stream (and follows the bot's membership).
    pub(crate) fn offer(&mut self, row: &EventRow) -> Offer {
        if self.scope.as_ref().is_some_and(|rooms| !rooms.contains(&row.room_id)) {
            return Offer::Skip;
        }
        let content =
            || serde_json::from_str::<Value>(&row.json).ok().and_then(|j| j.get("content").cloned());
        if row.event_type == "m.room.member"
            && let Some(target) = row.state_key.as_deref().filter(|t| *t == self.user || (self.own)(t))
        {
            let membership =
                content().and_then(|c| c.get("membership").and_then(Value::as_str).map(str::to_owned));
            match membership.as_deref() {
                Some("join") if !row.outlier => {
                    self.joined.entry(row.room_id.clone()).or_default().insert(target.to_owned());
                }
                // The bot or a puppet invited (a puppet: a direct chat with someone on the
                // other network).
                Some("invite") if !row.outlier && !(self.own)(&row.sender) => return Offer::Event,
                Some("invite") if target == self.user && !(self.own)(&row.sender) => return Offer::Event,
                other => {
                    let was_in = self.joined.contains_key(&row.room_id);
                    if let Some(users) = self.joined.get_mut(&row.room_id) {
                        users.remove(target);
                        if users.is_empty() {
                            self.joined.remove(&row.room_id);
                        }
                    }
                    // Kicked or banned by someone else: the plugin hears of it even when that
                    // was its last user in the room.
                    if was_in
                        && !row.outlier
                        && matches!(other, Some("leave" | "ban"))
                        && !(self.own)(&row.sender)
                    {
                        return self.classify(row);
                    }
                }
            }
        }
        if row.outlier || !self.joined.contains_key(&row.room_id) {
            return Offer::Skip;
        }
        self.classify(row)
    }

    /// What an event is to the plugin, leaving the membership alone (a replayed dead letter):
    /// its own events are skipped, messages with a command word are commands.
    pub(crate) fn classify(&self, row: &EventRow) -> Offer {
        if (self.own)(&row.sender) {
            return Offer::Skip;
        }
        let content =
            || serde_json::from_str::<Value>(&row.json).ok().and_then(|j| j.get("content").cloned());
        if row.event_type == "m.room.message"
            && let Some(body) =
                content().and_then(|c| c.get("body").and_then(Value::as_str).map(str::to_owned))
            && let Some((name, args)) = self.command(&body)
        {
            return Offer::Command { name, args };
        }
        Offer::Event
    }

    fn command(&self, body: &str) -> Option<(String, String)> {
        let rest = body.strip_prefix('!')?;
        let (word, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        self.commands.iter().any(|c| c == word).then(|| (word.to_owned(), args.trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use homeserver_core::streams::StreamPos;
    use serde_json::json;

    use super::*;

    fn row(room: &str, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> EventRow {
        EventRow {
            stream_pos: StreamPos::new(1),
            event_id: "$e".into(),
            room_id: room.into(),
            event_type: kind.into(),
            state_key: state_key.map(Into::into),
            sender: sender.into(),
            depth: 1,
            origin_server_ts: 0,
            json: json!({ "content": content }).to_string(),
            unsigned_extra: None,
            state_before: 0,
            state_after: 0,
            redacted_by: None,
            txn_device: None,
            txn_id: None,
            outlier: false,
            soft_failed: false,
            rejected_reason: None,
        }
    }

    /// The bot and one puppet, `@irc_bob:hs`.
    fn interest(joined: &[&str], commands: &[&str]) -> Interest {
        let own: Own = Box::new(|user: &str| user == "@bot:hs" || user == "@irc_bob:hs");
        Interest::new(
            "@bot:hs".into(),
            own,
            joined.iter().map(|r| (r.to_string(), "@bot:hs".to_owned())),
            commands.iter().map(|c| c.to_string()).collect(),
        )
    }

    #[test]
    fn a_bridge_sees_invites_of_its_puppets_but_never_their_events() {
        let mut interest = interest(&["!a"], &[]);
        let puppet_says = row("!a", "@irc_bob:hs", "m.room.message", None, json!({"body": "hi"}));
        assert_eq!(interest.offer(&puppet_says), Offer::Skip, "no echo of what the bridge sent");
        let dm = row("!dm", "@u:hs", "m.room.member", Some("@irc_bob:hs"), json!({"membership": "invite"}));
        assert_eq!(interest.offer(&dm), Offer::Event, "in a room the bot is not in");
        let by_puppet =
            row("!a", "@irc_bob:hs", "m.room.member", Some("@irc_ann:hs"), json!({"membership": "invite"}));
        assert_eq!(interest.offer(&by_puppet), Offer::Skip);
        let other = row("!dm", "@u:hs", "m.room.member", Some("@carol:hs"), json!({"membership": "invite"}));
        assert_eq!(interest.offer(&other), Offer::Skip);
        let puppet_joins =
            row("!dm", "@irc_bob:hs", "m.room.member", Some("@irc_bob:hs"), json!({"membership": "join"}));
        assert_eq!(interest.offer(&puppet_joins), Offer::Skip, "its own event");
        let in_dm = row("!dm", "@u:hs", "m.room.message", None, json!({"body": "psst"}));
        assert_eq!(interest.offer(&in_dm), Offer::Event, "a room a puppet is in, without the bot");
        let kicked =
            row("!dm", "@u:hs", "m.room.member", Some("@irc_bob:hs"), json!({"membership": "leave"}));
        assert_eq!(interest.offer(&kicked), Offer::Event, "its last user in the room kicked");
        assert_eq!(interest.offer(&puppet_joins), Offer::Skip);
        let puppet_leaves =
            row("!dm", "@irc_bob:hs", "m.room.member", Some("@irc_bob:hs"), json!({"membership": "leave"}));
        interest.offer(&puppet_leaves);
        assert_eq!(interest.offer(&in_dm), Offer::Skip, "after the puppet left");
        let lookalike = row("!a", "@irc_fan:hs", "m.room.message", None, json!({"body": "hi"}));
        assert_eq!(
            interest.offer(&lookalike),
            Offer::Event,
            "an account the bridge does not own is not its own"
        );
    }

    #[test]
    fn the_bot_sees_its_rooms_invites_and_commands_but_not_itself() {
        let mut interest = interest(&[], &["ai"]);
        let msg = |room: &str, body: &str| row(room, "@u:hs", "m.room.message", None, json!({"body": body}));
        assert_eq!(interest.offer(&msg("!a", "hello")), Offer::Skip, "not in the room");
        let invite = row("!a", "@u:hs", "m.room.member", Some("@bot:hs"), json!({"membership": "invite"}));
        assert_eq!(interest.offer(&invite), Offer::Event);
        let join = row("!a", "@bot:hs", "m.room.member", Some("@bot:hs"), json!({"membership": "join"}));
        assert_eq!(interest.offer(&join), Offer::Skip, "its own events");
        assert_eq!(interest.offer(&msg("!a", "hello")), Offer::Event);
        assert_eq!(
            interest.offer(&msg("!a", "!ai  what is  love ")),
            Offer::Command { name: "ai".into(), args: "what is  love".into() }
        );
        assert_eq!(interest.offer(&msg("!a", "!aim high")), Offer::Event, "a whole word only");
        let own = row("!a", "@bot:hs", "m.room.message", None, json!({"body": "!ai loop"}));
        assert_eq!(interest.offer(&own), Offer::Skip);
        let kicked = row("!a", "@u:hs", "m.room.member", Some("@bot:hs"), json!({"membership": "leave"}));
        interest.offer(&kicked);
        assert_eq!(interest.offer(&msg("!a", "hello")), Offer::Skip, "left");
    }
}
