//! What the deprecated endpoints carry besides events, and the event format they use: the
//! "v1" client format (Synapse's default there), presence with `content.user_id`, and read
//! receipts as `m.receipt` events naming their room.

use std::collections::HashMap;

use homeserver_core::Error;
use homeserver_live::presence::presence_event;
use homeserver_storage::{presence::PresenceRow, receipts::ReceiptRow};
use homeserver_sync::ephemeral::receipt_event;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::App;

/// Most users whose presence one answer lists.
const MAX_PRESENCE: usize = 1_000;

/// The v1 client format: the sender also as `user_id`, and `unsigned`'s `age`, `prev_content`,
/// `redacted_because` and `replaces_state` also at the top (as Synapse's legacy endpoints have
/// them, and SyTest reads them).
pub(crate) fn v1_events(events: Vec<Value>) -> Vec<Value> {
    events.into_iter().map(v1_event).collect()
}

fn v1_event(mut event: Value) -> Value {
    let Some(object) = event.as_object_mut() else { return event };
    if let Some(sender) = object.get("sender").cloned() {
        object.entry("user_id").or_insert(sender);
    }
    let copied: Vec<(String, Value)> = object
        .get("unsigned")
        .and_then(Value::as_object)
        .map(|unsigned| {
            ["age", "prev_content", "redacted_because", "replaces_state"]
                .iter()
                .filter_map(|key| unsigned.get(*key).map(|v| ((*key).to_owned(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    for (key, value) in copied {
        object.entry(key).or_insert(value);
    }
    event
}

/// Presence events of `users` (at most [`MAX_PRESENCE`], none of those `viewer` ignores),
/// `offline` for those never seen, each with `content.user_id`; none when presence is off.
pub(crate) async fn presence_of(app: &App, viewer: &UserId, users: &[String]) -> Result<Vec<Value>, Error> {
    if !app.live.presence.enabled {
        return Ok(Vec::new());
    }
    let ignored = app.live.ignore_lists.of(viewer.as_str()).await?;
    let users: Vec<String> =
        users.iter().filter(|u| !ignored.contains(u)).take(MAX_PRESENCE).cloned().collect();
    let users = &users[..];
    let stored = app.db.presence_of(users).await.map_err(Error::from)?;
    let now = homeserver_core::time::now_millis() as i64;
    Ok(users
        .iter()
        .map(|user| {
            let row = stored
                .iter()
                .find(|p| &p.user_id == user)
                .cloned()
                .unwrap_or_else(|| PresenceRow::never_seen(user));
            let mut event = presence_event(&row, now);
            event["content"]["user_id"] = json!(user);
            event
        })
        .collect())
}

/// The user and everyone sharing a joined room with them, the user first.
pub(crate) async fn user_and_room_mates(app: &App, user: &UserId) -> Result<Vec<String>, Error> {
    let mut users = vec![user.to_string()];
    let mates = app.db.room_mates(user.as_str()).await.map_err(Error::from)?;
    users.extend(mates.into_iter().filter(|m| m != user.as_str()));
    Ok(users)
}

/// One `m.receipt` event per room (naming it) with the receipts `viewer` may see there (not
/// those of users they ignore).
pub(crate) async fn receipts_in(app: &App, rooms: &[String], viewer: &UserId) -> Result<Vec<Value>, Error> {
    let now = homeserver_core::streams::StreamPos::live(app.stream.current());
    let ignored = app.live.ignore_lists.of(viewer.as_str()).await?;
    let mut by_room: HashMap<String, Vec<ReceiptRow>> = HashMap::new();
    for row in app.db.receipts_between(rooms, 0, now.get()).await.map_err(Error::from)? {
        if !ignored.contains(&row.user_id) {
            by_room.entry(row.room_id.clone()).or_default().push(row);
        }
    }
    Ok(rooms
        .iter()
        .filter_map(|room| {
            let mut event = receipt_event(by_room.get(room)?, viewer.as_str())?;
            event["room_id"] = json!(room);
            Some(event)
        })
        .collect())
}

/// The joined members of a room, as user ids.
pub(crate) async fn joined_members(app: &App, room_id: &RoomId) -> Result<Vec<String>, Error> {
    Ok(app.rooms.joined_members(room_id).await?.into_iter().map(|u| u.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_format_repeats_sender_and_unsigned_fields_at_the_top() {
        let event = json!({
            "type": "m.room.topic", "sender": "@a:x", "content": {},
            "unsigned": { "age": 5, "prev_content": { "topic": "old" }, "transaction_id": "t" },
        });
        let v1 = v1_event(event);
        assert_eq!(v1["user_id"], "@a:x");
        assert_eq!(v1["age"], 5);
        assert_eq!(v1["prev_content"]["topic"], "old");
        assert!(v1.get("transaction_id").is_none(), "only the v1 fields move");
        assert_eq!(v1_event(json!("not an object")), json!("not an object"));
    }
}
