//! The body of a `POST /_matrix/push/v1/notify` (push gateway API, as Sygnal reads it): one
//! notification for one device, in the pusher's format — the whole event, or with
//! `"format": "event_id_only"` just the ids and the counts (for apps that fetch the event
//! themselves, so no message text passes through the gateway).

use homeserver_storage::pushers::PusherRow;
use serde_json::{Map, Value, json};

/// What the notification is about, read from the event and the room.
#[derive(Debug, Clone, Default)]
pub struct NotifiedEvent {
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub sender: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub sender_display_name: Option<String>,
    pub room_name: Option<String>,
    pub room_alias: Option<String>,
}

/// Whether the pusher asked for ids only.
pub fn event_id_only(pusher: &PusherRow) -> bool {
    data_of(pusher).get("format").and_then(Value::as_str) == Some("event_id_only")
}

/// The pusher's `data` object.
pub fn data_of(pusher: &PusherRow) -> Map<String, Value> {
    match serde_json::from_str(&pusher.data) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The gateway URL of the pusher.
pub fn url_of(pusher: &PusherRow) -> Option<String> {
    data_of(pusher).get("url").and_then(Value::as_str).map(str::to_owned)
}

/// The `set_tweak` actions of a notification as a `tweaks` object (`highlight` without a
/// value means `true`).
pub fn tweaks(actions: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = action.get("set_tweak").and_then(Value::as_str) {
            let value = action.get("value").cloned().unwrap_or(Value::Bool(true));
            out.insert(name.to_owned(), value);
        }
    }
    out
}

/// The notification body for one pusher. `unread`: the badge, the number of rooms with
/// unread notifications.
pub fn notification(pusher: &PusherRow, event: &NotifiedEvent, actions: &Value, unread: u64) -> Value {
    let tweaks = tweaks(actions);
    // As Synapse decides: what makes a sound, mentions the user or is encrypted (and so may be
    // either) wakes the phone; the rest may wait for the device's next window.
    let high = event.event_type == "m.room.encrypted"
        || tweaks.get("highlight").is_some_and(|h| h == &Value::Bool(true))
        || tweaks.contains_key("sound");
    let ids_only = event_id_only(pusher);
    // As Synapse: an ids-only push tells the gateway nothing about the event's rules.
    let device = device(pusher, if ids_only { Map::new() } else { tweaks });
    let mut n = Map::new();
    n.insert("event_id".into(), json!(event.event_id));
    n.insert("room_id".into(), json!(event.room_id));
    n.insert("counts".into(), json!({ "unread": unread }));
    n.insert("prio".into(), json!(if high { "high" } else { "low" }));
    n.insert("devices".into(), json!([device]));
    if !ids_only {
        // Synapse's name for the event id, which SyTest and older gateways read.
        n.insert("id".into(), json!(event.event_id));
        n.insert("type".into(), json!(event.event_type));
        n.insert("sender".into(), json!(event.sender));
        n.insert("content".into(), event.content.clone());
        if let Some(name) = &event.sender_display_name {
            n.insert("sender_display_name".into(), json!(name));
        }
        if let Some(name) = &event.room_name {
            n.insert("room_name".into(), json!(name));
        }
        if let Some(alias) = &event.room_alias {
            n.insert("room_alias".into(), json!(alias));
        }
        if event.event_type == "m.room.member" {
            n.insert("user_is_target".into(), json!(event.state_key.as_deref() == Some(&pusher.user_id)));
            if let Some(membership) = event.content.get("membership") {
                n.insert("membership".into(), membership.clone());
            }
        }
    }
    json!({ "notification": n })
}

/// A badge-only notification (no event): sent when the user read something, so the phone's
/// badge follows (as Synapse sends it).
pub fn badge(pusher: &PusherRow, unread: u64) -> Value {
    json!({ "notification": {
        "id": "", "type": null, "sender": "",
        "counts": { "unread": unread },
        "devices": [device(pusher, Map::new())],
    } })
}

/// The pusher as the `devices` entry: its `data` without the URL, which is the server's.
fn device(pusher: &PusherRow, tweaks: Map<String, Value>) -> Value {
    let mut data = data_of(pusher);
    data.remove("url");
    json!({
        "app_id": pusher.app_id,
        "pushkey": pusher.pushkey,
        "pushkey_ts": pusher.created_ts / 1000,
        "data": data,
        "tweaks": tweaks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pusher(data: Value) -> PusherRow {
        PusherRow {
            user_id: "@bob:hs".into(),
            app_id: "com.example.app".into(),
            pushkey: "key1".into(),
            kind: "http".into(),
            app_display_name: "App".into(),
            device_display_name: "Phone".into(),
            profile_tag: None,
            lang: "en".into(),
            data: data.to_string(),
            device_id: Some("DEV".into()),
            created_ts: 1_700_000_000_123,
            last_pos: 0,
            failing_since: None,
        }
    }

    fn message() -> NotifiedEvent {
        NotifiedEvent {
            event_id: "$e".into(),
            room_id: "!r:hs".into(),
            event_type: "m.room.message".into(),
            sender: "@alice:hs".into(),
            content: json!({ "msgtype": "m.text", "body": "hi" }),
            sender_display_name: Some("Alice".into()),
            room_name: Some("Room".into()),
            ..NotifiedEvent::default()
        }
    }

    #[test]
    fn full_format_carries_the_event_and_the_device_without_its_url() {
        let p = pusher(json!({ "url": "https://push.example/_matrix/push/v1/notify", "extra": 1 }));
        let actions = json!(["notify", { "set_tweak": "sound", "value": "default" }]);
        let body = notification(&p, &message(), &actions, 3);
        let n = &body["notification"];
        assert_eq!(n["content"]["body"], "hi");
        assert_eq!(n["id"], "$e");
        assert_eq!(n["sender_display_name"], "Alice");
        assert_eq!(n["room_name"], "Room");
        assert_eq!(n["counts"]["unread"], 3);
        assert_eq!(n["prio"], "high");
        assert_eq!(n["devices"][0]["data"], json!({ "extra": 1 }));
        assert_eq!(n["devices"][0]["tweaks"], json!({ "sound": "default" }));
        assert_eq!(n["devices"][0]["pushkey_ts"], 1_700_000_000);
        assert!(n.get("user_is_target").is_none());
    }

    #[test]
    fn event_id_only_leaves_the_content_out() {
        let p = pusher(
            json!({ "url": "https://push.example/_matrix/push/v1/notify", "format": "event_id_only" }),
        );
        let body = notification(&p, &message(), &json!(["notify"]), 1);
        let n = &body["notification"];
        assert_eq!(n["event_id"], "$e");
        assert_eq!(n["room_id"], "!r:hs");
        assert!(n.get("content").is_none() && n.get("sender").is_none() && n.get("room_name").is_none());
        assert_eq!(n["prio"], "low");
        assert_eq!(n["devices"][0]["data"], json!({ "format": "event_id_only" }));
        assert_eq!(n["devices"][0]["tweaks"], json!({}));
        assert!(n.get("id").is_none());
        let badge = badge(&p, 4);
        assert_eq!(badge["notification"]["counts"]["unread"], 4);
        assert_eq!(badge["notification"]["type"], Value::Null);
        assert_eq!(badge["notification"]["devices"][0]["data"], json!({ "format": "event_id_only" }));
    }

    #[test]
    fn highlight_without_value_is_true_and_invites_name_their_target() {
        assert_eq!(tweaks(&json!(["notify", { "set_tweak": "highlight" }]))["highlight"], true);
        let p = pusher(json!({ "url": "u" }));
        let mut invite = message();
        invite.event_type = "m.room.member".into();
        invite.state_key = Some("@bob:hs".into());
        invite.content = json!({ "membership": "invite" });
        let n =
            &notification(&p, &invite, &json!(["notify", { "set_tweak": "highlight" }]), 0)["notification"];
        assert_eq!(n["user_is_target"], true);
        assert_eq!(n["membership"], "invite");
        assert_eq!(n["prio"], "high");
    }
}
