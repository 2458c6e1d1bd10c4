//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{type}/{eventId}` and
//! `POST /rooms/{roomId}/read_markers`, and the unread counts they reset.
//!
//! A public receipt (`m.read`) goes to everyone in the room through sync; a private one
//! (`m.read.private`) only to its owner. Both mark the user's notifications up to that event as
//! read (the counts themselves are in [`crate::unread`]). `m.fully_read` is the read marker,
//! kept as (server-managed) room account data.

use axum::Router;
use homeserver_core::{Error, ErrorKind, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_live::receipts::NewReceipt;
use ruma::{
    EventId, RoomId,
    api::client::{read_marker::set_read_marker, receipt::create_receipt},
};
use serde_json::{Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(post_receipt).ruma_route(post_read_markers)
}

/// Stores a local user's receipt (through the one receipt write path, `homeserver_live`).
pub async fn set_receipt(
    app: &App,
    session: &Session,
    room_id: &RoomId,
    event_id: &EventId,
    receipt_type: &str,
    thread_id: &str,
) -> Result<(), Error> {
    let receipt = NewReceipt {
        room_id,
        user_id: &session.user_id,
        event_id,
        receipt_type,
        thread_id,
        ts: now_millis() as i64,
    };
    app.live.receipts.store(&receipt).await?;
    Ok(())
}

async fn set_fully_read(
    app: &App,
    session: &Session,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(), Error> {
    let target = app
        .db
        .event(event_id.as_str())
        .await
        .map_err(Error::from)?
        .filter(|e| e.room_id == room_id.as_str())
        .ok_or_else(|| Error::not_found("Event not found in this room"))?;
    // The read marker only moves forward, as in Synapse: a client catching up on an old device
    // must not pull it back. Which marker is newer depends on event positions, read outside
    // the update; the update then only writes if the marker is still the one compared against,
    // and otherwise compares again.
    let user = session.user_id.as_str();
    for _ in 0..MAX_MARKER_ATTEMPTS {
        let stored =
            app.db.account_data(user, room_id.as_str(), "m.fully_read").await.map_err(Error::from)?;
        let current_id = stored.as_deref().and_then(|c| {
            serde_json::from_str::<Value>(c).ok()?.get("event_id")?.as_str().map(str::to_owned)
        });
        if let Some(current_id) = &current_id
            && let Some(current) = app.db.event(current_id).await.map_err(Error::from)?
            && current.stream_pos >= target.stream_pos
        {
            return Ok(());
        }
        let content = json!({ "event_id": event_id }).to_string();
        let outcome = app
            .live
            .account_data
            .update(&session.user_id, room_id.as_str(), "m.fully_read", |now| {
                if now != stored.as_deref() {
                    return Err(Error::new(ErrorKind::Conflict, "the read marker moved meanwhile"));
                }
                Ok(Some(content))
            })
            .await;
        match outcome {
            Err(err) if err.kind == ErrorKind::Conflict => continue,
            other => return other.map(|_| ()),
        }
    }
    Err(Error::new(ErrorKind::LimitExceeded { retry_after_ms: 100 }, "the read marker is changing too fast"))
}

/// How often a read-marker update compares again when another update got in first. Each
/// round lets at least one of the contending updates through, so this many concurrent moves of
/// one marker all finish (a client's devices make a few; the durability test makes twelve).
const MAX_MARKER_ATTEMPTS: usize = 32;

async fn require_joined(app: &App, session: &Session, room_id: &RoomId) -> Result<(), Error> {
    if !app.rooms.is_joined(room_id, &session.user_id).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
async fn post_receipt(app: App, req: Ruma<create_receipt::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    require_joined(&app, &req.auth, room_id).await?;
    app.live.presence.activity(&req.auth.user_id).await;
    let receipt_type = req.body.receipt_type.to_string();
    let body: Value = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let thread_id = match body.get("thread_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(_) => return Err(Error::invalid_param("thread_id must be a non-empty string").into()),
    };
    match receipt_type.as_str() {
        "m.read" | "m.read.private" => {
            set_receipt(&app, &req.auth, room_id, &req.body.event_id, &receipt_type, &thread_id).await?
        }
        "m.fully_read" if !thread_id.is_empty() => {
            return Err(Error::invalid_param("thread_id is not allowed on m.fully_read").into());
        }
        "m.fully_read" => set_fully_read(&app, &req.auth, room_id, &req.body.event_id).await?,
        other => return Err(Error::invalid_param(format!("unknown receipt type {other}")).into()),
    }
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
async fn post_read_markers(app: App, req: Ruma<set_read_marker::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    require_joined(&app, &req.auth, room_id).await?;
    app.live.presence.activity(&req.auth.user_id).await;
    if let Some(event_id) = &req.body.fully_read {
        set_fully_read(&app, &req.auth, room_id, event_id).await?;
    }
    if let Some(event_id) = &req.body.read_receipt {
        set_receipt(&app, &req.auth, room_id, event_id, "m.read", "").await?;
    }
    if let Some(event_id) = &req.body.private_read_receipt {
        set_receipt(&app, &req.auth, room_id, event_id, "m.read.private", "").await?;
    }
    Ok(JsonBody(json!({})))
}
