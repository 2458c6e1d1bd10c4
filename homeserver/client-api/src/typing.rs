//! `PUT /rooms/{roomId}/typing/{userId}`: the handler in front of `homeserver_live::typing`.
//! The body is read here rather than by ruma's type, which requires `timeout` with
//! `typing: true`; Synapse (and SyTest, and some clients) leave it out, meaning 30 seconds.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, State},
};
use homeserver_core::Error;
use homeserver_http::{ApiError, Authenticated};
use homeserver_live::typing::MAX_TIMEOUT;
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::App;

/// How long a typing notice lasts when the client names no timeout (Synapse's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_matrix/client/r0/rooms/{room_id}/typing/{user_id}", axum::routing::put(put_typing))
        .route("/_matrix/client/v3/rooms/{room_id}/typing/{user_id}", axum::routing::put(put_typing))
}

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    /// Milliseconds.
    timeout: Option<u64>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
async fn put_typing(
    State(app): State<App>,
    Authenticated(session): Authenticated,
    Path((room_id, user_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let room_id = RoomId::parse(&room_id).map_err(|_| Error::invalid_param("invalid room id"))?;
    let user_id = UserId::parse(&user_id).map_err(|_| Error::invalid_param("invalid user id"))?;
    let body: TypingBody =
        serde_json::from_slice(&body).map_err(|e| Error::bad_json(format!("invalid request body: {e}")))?;
    if user_id != session.user_id {
        return Err(Error::forbidden("You can only set your own typing state").into());
    }
    if !app.rooms.is_joined(&room_id, &session.user_id).await? {
        return Err(Error::forbidden("You are not in this room").into());
    }
    let until = body.typing.then(|| {
        let timeout = body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Instant::now() + timeout.min(MAX_TIMEOUT)
    });
    app.live.presence.activity(&session.user_id).await;
    let members = app.rooms.joined_members(&room_id).await?;
    app.live.typing.set(&room_id, &session.user_id, until, members);
    Ok(axum::Json(json!({})))
}
