//! Example plugin for webhooks: a service (a CI, a monitoring system) posts
//! `{"room": "!id or #alias", "text": "…"}` to `/_lattice/plugins/<id>/notify` with
//! `Authorization: Bearer <token>`, and the bot says the text in that room as an `m.notice`.
//! It joins rooms it is invited to; it only posts where it is joined.
//!
//! ```toml
//! [plugins.notify]
//! path = "webhook_notify.wasm"
//! config = { token = "a long random string" }
//! [plugins.notify.grants]
//! webhooks = true
//! ```

use lattice_plugin_sdk::{
    self as sdk, ConfigKey, ConfigKind, Delivery, Event, Plugin, Registration,
    serde_json::json,
    webhook::{self, HttpRequest, HttpResponse},
};
use serde::Deserialize;

/// Longest text posted.
const MAX_TEXT: usize = 16 * 1024;

#[derive(Deserialize)]
struct Notification {
    room: String,
    text: String,
}

struct Notify;

impl Plugin for Notify {
    fn registration() -> Registration {
        Registration::new("1.0.0").config_key(ConfigKey::required(
            "token",
            ConfigKind::String,
            "the bearer token callers of the webhook present",
        ))
    }

    fn on_event(event: &Event, _delivery: Delivery) -> sdk::Result<()> {
        sdk::accept_invite(event)?;
        Ok(())
    }

    fn on_http_request(request: &HttpRequest) -> HttpResponse {
        if request.path != "/notify" {
            return webhook::text(404, "not found");
        }
        if request.method != "POST" {
            return webhook::text(405, "POST a notification");
        }
        let token = sdk::config()["token"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() || !webhook::bearer_is(request, &token) {
            return webhook::json(401, &json!({ "error": "wrong or missing bearer token" }));
        }
        let Ok(notification) = webhook::json_body::<Notification>(request) else {
            return webhook::json(400, &json!({ "error": "expected {\"room\": …, \"text\": …}" }));
        };
        if notification.text.is_empty() || notification.text.len() > MAX_TEXT {
            return webhook::json(400, &json!({ "error": "text must be 1 to 16384 bytes" }));
        }
        match post(&notification) {
            Ok(event_id) => webhook::json(202, &json!({ "event_id": event_id })),
            Err(sdk::Error::Denied(why)) | Err(sdk::Error::NotFound(why)) => {
                webhook::json(403, &json!({ "error": why }))
            }
            Err(err) => webhook::json(502, &json!({ "error": format!("{err:?}") })),
        }
    }
}

/// Says the text in the room (an alias is resolved first).
fn post(notification: &Notification) -> sdk::Result<String> {
    let room = match notification.room.starts_with('#') {
        true => sdk::raw::matrix::resolve_alias(&notification.room)?
            .ok_or_else(|| sdk::Error::NotFound(format!("no room {}", notification.room)))?,
        false => notification.room.clone(),
    };
    sdk::matrix::send_notice(&room, &notification.text)
}

lattice_plugin_sdk::export_plugin!(Notify);
