//! The presence section: presence of the user and the people they share rooms with, changed
//! since the token (nothing is read when the tracker says nothing changed) — and, as Synapse
//! does, the presence of everyone who came to share a room with the user since the token
//! (a room the user joined, or a room someone joined), changed or not, so a client learns it.

use std::collections::BTreeSet;

use homeserver_core::Error;
use homeserver_live::presence::presence_event;
use homeserver_storage::{events::MembershipRow, presence::PresenceRow};
use ruma::events::room::member::MembershipState;
use serde_json::{Map, Value};

use crate::context::SyncContext;

/// Most newly met users whose presence one sync adds.
const MAX_NEWCOMERS: usize = 1_000;
/// Most newly joined rooms whose members are read for it.
const MAX_NEW_ROOMS: usize = 50;

pub(crate) async fn presence_section(
    ctx: &SyncContext<'_>,
    memberships: &[MembershipRow],
    joined_sections: &Map<String, Value>,
) -> Result<Vec<Value>, Error> {
    let since = ctx.since_pos();
    let presence = &ctx.syncer.live.presence;
    if !presence.enabled || !ctx.filter.presence.allows("m.presence", "") {
        return Ok(Vec::new());
    }
    let user = ctx.user.as_str();
    let mut rows = if presence.changed_since(since.get()) {
        ctx.syncer.db.presence_of_room_mates(user, since.get(), ctx.now.get()).await?
    } else {
        Vec::new()
    };
    if ctx.since.is_some() {
        let newcomers: Vec<String> = newcomers(ctx, memberships, joined_sections)
            .await?
            .into_iter()
            .filter(|u| u != user && !rows.iter().any(|r| &r.user_id == u))
            .take(MAX_NEWCOMERS)
            .collect();
        if !newcomers.is_empty() {
            let stored = ctx.syncer.db.presence_of(&newcomers).await?;
            // One never seen is offline (Synapse sends that too, so the client learns of them).
            let unseen: Vec<PresenceRow> = newcomers
                .iter()
                .filter(|u| !stored.iter().any(|r| &r.user_id == *u))
                .map(|u| PresenceRow::never_seen(u))
                .collect();
            rows.extend(stored);
            rows.extend(unseen);
        }
    }
    let now = homeserver_core::time::now_millis() as i64;
    Ok(rows
        .iter()
        .filter(|p| !ctx.ignored.contains(&p.user_id))
        .filter(|p| ctx.filter.presence.allows("m.presence", &p.user_id))
        .map(|p| presence_event(p, now))
        .collect())
}

/// Users who came to share a room with the user in this sync: the members of rooms the user
/// joined since the token, and those whose join is in a joined room's section.
async fn newcomers(
    ctx: &SyncContext<'_>,
    memberships: &[MembershipRow],
    joined_sections: &Map<String, Value>,
) -> Result<BTreeSet<String>, Error> {
    let since = ctx.since_pos();
    let mut users = BTreeSet::new();
    let new_rooms = memberships
        .iter()
        .filter(|m| m.membership == MembershipState::Join && m.joined_pos > since && m.joined_pos <= ctx.now);
    for room in new_rooms.take(MAX_NEW_ROOMS) {
        users.extend(ctx.syncer.db.room_members(room.room_id.as_str(), "join").await?);
    }
    for section in joined_sections.values() {
        let events = ["timeline", "state"]
            .iter()
            .filter_map(|part| section.get(*part)?.get("events")?.as_array())
            .flatten();
        for event in events {
            if event.get("type").and_then(Value::as_str) == Some("m.room.member")
                && event.pointer("/content/membership").and_then(Value::as_str) == Some("join")
                && let Some(member) = event.get("state_key").and_then(Value::as_str)
            {
                users.insert(member.to_owned());
            }
        }
    }
    Ok(users)
}
