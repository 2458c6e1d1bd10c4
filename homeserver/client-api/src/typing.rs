//! `PUT /rooms/{roomId}/typing/{userId}`: the handler in front of `homeserver_live::typing`.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_live::typing::MAX_TIMEOUT;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing as TypingState};
use serde_json::json;
use tokio::time::Instant;

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(put_typing)
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
async fn put_typing(app: App, req: Ruma<create_typing_event::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only set your own typing state").into());
    }
    let room_id = &req.body.room_id;
    if !app.rooms.is_joined(room_id, &req.auth.user_id).await? {
        return Err(Error::forbidden("You are not in this room").into());
    }
    let until = match &req.body.state {
        TypingState::Yes(info) => Some(Instant::now() + info.timeout.min(MAX_TIMEOUT)),
        _ => None,
    };
    app.live.presence.activity(&req.auth.user_id).await;
    let members = app.rooms.joined_members(room_id).await?;
    app.live.typing.set(room_id, &req.auth.user_id, until, members);
    Ok(JsonBody(json!({})))
}
