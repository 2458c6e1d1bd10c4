//! The rooms section: one entry per room the user is in, was invited to, knocked on or left,
//! when something in it changed since the token (room events from the watermarks, typing and
//! receipts from [`crate::ephemeral`]).

pub(crate) mod invited;
pub(crate) mod joined;
pub(crate) mod left;
pub(crate) mod state;
pub(crate) mod timeline;

use std::collections::HashSet;

use homeserver_core::{Error, streams::watermarks::Mark};
use homeserver_storage::events::MembershipRow;
use ruma::events::room::member::MembershipState as M;
use serde_json::{Map, Value};

use crate::{context::SyncContext, ephemeral::EphemeralStreams};

/// The four parts of the rooms section, by room id.
#[derive(Default)]
pub(crate) struct RoomSections {
    pub join: Map<String, Value>,
    pub invite: Map<String, Value>,
    pub knock: Map<String, Value>,
    pub leave: Map<String, Value>,
}

impl RoomSections {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && self.invite.is_empty() && self.knock.is_empty() && self.leave.is_empty()
    }
}

/// The rooms whose events changed in `(since, now]`: from the room watermarks when they reach
/// back that far, otherwise from the database.
async fn changed_rooms(
    ctx: &SyncContext<'_>,
    memberships: &[MembershipRow],
) -> Result<HashSet<String>, Error> {
    let since = ctx.since_pos();
    let marks = ctx.syncer.stream.marks();
    if ctx.since.is_none() {
        return Ok(HashSet::new());
    }
    if marks.cover(since.as_live()) {
        return Ok(memberships
            .iter()
            .filter(|m| marks.changed_after(Mark::RoomEvents, m.room_id.as_str(), since.as_live()))
            .map(|m| m.room_id.to_string())
            .collect());
    }
    let changed = ctx.syncer.db.rooms_changed_between(ctx.user.as_str(), since, ctx.now).await?;
    Ok(changed.into_iter().map(|(r, _)| r).collect())
}

pub(crate) async fn room_sections(
    ctx: &SyncContext<'_>,
    memberships: &[MembershipRow],
) -> Result<RoomSections, Error> {
    let since = ctx.since_pos();
    let changed_rooms = changed_rooms(ctx, memberships).await?;
    let mut ephemeral = EphemeralStreams::read(ctx, memberships).await?;
    let room_filter = &ctx.filter.room;
    let mut sections = RoomSections::default();
    for m in memberships {
        if !room_filter.allows_room(m.room_id.as_str()) || m.stream_pos > ctx.now {
            continue;
        }
        let room_id = &m.room_id;
        let changed_in_window = ctx.since.is_none() || m.stream_pos > since;
        match m.membership {
            M::Join => {
                // New to the client: initial sync, or not joined at `since` (a join, not a
                // profile change, happened in the window).
                let new_to_client = ctx.since.is_none()
                    || (changed_in_window && ctx.membership_at(room_id, since).await? != Some(M::Join));
                let ephemeral = ephemeral.take(ctx, room_id, new_to_client);
                if !(new_to_client
                    || ctx.full_state
                    || !ephemeral.is_empty()
                    || changed_rooms.contains(m.room_id.as_str()))
                {
                    continue;
                }
                if let Some(room) =
                    joined::joined_room(ctx, room_id, new_to_client, m.joined_pos, ephemeral).await?
                {
                    sections.join.insert(m.room_id.to_string(), room);
                }
            }
            M::Invite if changed_in_window => {
                if let Some(room) = invited::invited_room(ctx, room_id, m).await? {
                    sections.invite.insert(m.room_id.to_string(), room);
                }
            }
            M::Knock if changed_in_window => {
                sections.knock.insert(m.room_id.to_string(), invited::knocked_room(ctx, room_id, m).await?);
            }
            M::Leave | M::Ban if changed_in_window && !m.forgotten => {
                // Initial syncs show left rooms only when the filter asks for them.
                if ctx.since.is_none() && !room_filter.include_leave {
                    continue;
                }
                let new_to_client =
                    ctx.since.is_none() || ctx.membership_at(room_id, since).await? != Some(M::Join);
                if let Some(room) = left::left_room(ctx, room_id, m, new_to_client).await? {
                    sections.leave.insert(m.room_id.to_string(), room);
                }
            }
            _ => {}
        }
    }
    Ok(sections)
}
