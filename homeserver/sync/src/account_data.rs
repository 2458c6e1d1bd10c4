//! The account-data section: global documents, and per-room ones placed into the rooms'
//! sections (a joined room with nothing else new gets an otherwise empty section for them).

use std::collections::HashMap;

use homeserver_core::{Error, streams::watermarks::Mark};
use homeserver_rooms::push::PUSH_RULES_TYPE;
use homeserver_storage::events::MembershipRow;
use ruma::events::room::member::MembershipState;
use serde_json::{Value, json};

use crate::{
    context::SyncContext,
    rooms::{RoomSections, joined::empty_joined_room},
};

/// The global account-data events; room ones are added to `rooms`.
pub(crate) async fn account_data_section(
    ctx: &SyncContext<'_>,
    memberships: &[MembershipRow],
    rooms: &mut RoomSections,
) -> Result<Vec<Value>, Error> {
    let user = ctx.user.as_str();
    let since = ctx.since_pos();
    let room_filter = &ctx.filter.room;
    let mut global = Vec::new();
    let mut by_room: HashMap<String, Vec<Value>> = HashMap::new();
    let changed = ctx.syncer.stream.marks().changed_after(Mark::AccountData, user, since.as_live());
    let rows = if changed {
        ctx.syncer.db.account_data_since(user, since.get(), ctx.now.get()).await?
    } else {
        Vec::new()
    };
    for row in rows {
        let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
        let event = json!({ "type": row.data_type, "content": content });
        if row.room_id.is_empty() {
            if ctx.filter.account_data.allows(&row.data_type, user) {
                global.push(event);
            }
        } else if room_filter.account_data.allows(&row.data_type, user) {
            by_room.entry(row.room_id).or_default().push(event);
        }
    }
    for (room_id, events) in by_room {
        let section = if rooms.join.contains_key(&room_id) {
            &mut rooms.join
        } else if rooms.leave.contains_key(&room_id) {
            &mut rooms.leave
        } else if memberships.iter().any(|m| m.room_id == room_id && m.membership == MembershipState::Join) {
            rooms.join.insert(room_id.clone(), empty_joined_room());
            &mut rooms.join
        } else {
            continue;
        };
        if let Some(room) = section.get_mut(&room_id) {
            room["account_data"] = json!({ "events": events });
        }
    }
    if ctx.since.is_none()
        && !global.iter().any(|e| e["type"] == PUSH_RULES_TYPE)
        && ctx.filter.account_data.allows(PUSH_RULES_TYPE, user)
    {
        // Clients expect their push rules from the first sync, default ones included.
        let rules = ruma::push::Ruleset::server_default(ctx.user);
        global.push(json!({ "type": PUSH_RULES_TYPE, "content": { "global": rules } }));
    }
    Ok(global)
}
