//! The imports plugins call. Each import re-arms the caller's CPU budget (time in the host is
//! not the guest's), checks the plugin's grants, and answers with the WIT `error` variant on
//! failure — never a trap. Matrix actions go through the room model as any client's would, so
//! the room's rules (auth, power levels, membership vetting, redaction authority) apply.

/// Re-arms the guest's budget and runs `$method` of the plugin's context on the server's
/// runtime with the (owned) arguments.
macro_rules! on_main {
    ($state:expr, $method:ident($($arg:expr),*)) => {{
        $state.rearm();
        let ctx = $state.ctx.clone();
        ctx.clone().on_main(ctx.$method($($arg),*)).await
    }};
}

mod bridge;
mod matrix;
mod media;
mod misc;
mod store;

use homeserver_core::{Error, ErrorKind};
use homeserver_storage::events::EventRow;
use serde_json::Value;

use crate::{bindings::types, instance::PluginState};

impl types::Host for PluginState {}

/// The one mapping from the server's errors to what plugins see.
pub(crate) fn to_wit(err: Error) -> types::Error {
    let message = err.message.clone();
    match err.kind {
        ErrorKind::Forbidden | ErrorKind::GuestAccessForbidden | ErrorKind::Exclusive => {
            types::Error::Denied(message)
        }
        ErrorKind::NotFound => types::Error::NotFound(message),
        ErrorKind::LimitExceeded { retry_after_ms } => {
            types::Error::RateLimited(retry_after_ms.min(u64::from(u32::MAX)) as u32)
        }
        ErrorKind::TooLarge => types::Error::Quota(message),
        ErrorKind::BadJson
        | ErrorKind::NotJson
        | ErrorKind::InvalidParam
        | ErrorKind::MissingParam
        | ErrorKind::BadAlias
        | ErrorKind::DuplicateAnnotation
        | ErrorKind::RoomInUse
        | ErrorKind::UnsupportedRoomVersion => types::Error::Invalid(message),
        _ => types::Error::Internal(message),
    }
}

/// A stored event as plugins see it; a redacted event's content is empty.
pub(crate) fn event_to_wit(row: &EventRow) -> types::Event {
    let json: Value = serde_json::from_str(&row.json).unwrap_or(Value::Null);
    let content = match row.redacted_by {
        Some(_) => Value::Object(Default::default()),
        None => json.get("content").cloned().unwrap_or(Value::Object(Default::default())),
    };
    let relates = content.get("m.relates_to");
    let relation = relates.and_then(|r| {
        Some(types::Relation {
            rel_type: r.get("rel_type")?.as_str()?.to_owned(),
            event_id: r.get("event_id")?.as_str()?.to_owned(),
            key: r.get("key").and_then(Value::as_str).map(str::to_owned),
        })
    });
    let thread_root = relation.as_ref().filter(|r| r.rel_type == "m.thread").map(|r| r.event_id.clone());
    types::Event {
        event_id: row.event_id.clone(),
        room_id: row.room_id.clone(),
        sender: row.sender.clone(),
        event_type: row.event_type.clone(),
        state_key: row.state_key.clone(),
        origin_server_ts: row.origin_server_ts.max(0) as u64,
        content_json: content.to_string(),
        relation,
        thread_root,
    }
}

/// A storage failure as plugins see it.
pub(crate) fn storage(err: homeserver_storage::StorageError) -> types::Error {
    to_wit(err.into())
}

/// Parses a JSON object a plugin handed over.
pub(crate) fn parse_object(json: &str, what: &str) -> Result<Value, types::Error> {
    match serde_json::from_str::<Value>(json) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(types::Error::Invalid(format!("{what} must be a JSON object"))),
        Err(err) => Err(types::Error::Invalid(format!("{what}: {err}"))),
    }
}
