//! `POST /rooms/{roomId}/upgrade`: replacing a room with one of a newer version. The work is the
//! room model's (`homeserver-rooms::upgrade`); this is the thin handler.

use axum::Router;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::api::client::room::upgrade_room;
use serde_json::json;

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(upgrade)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
async fn upgrade(app: App, req: Ruma<upgrade_room::v3::Request>) -> Result<JsonBody, ApiError> {
    let b = &req.body;
    let new_room = app
        .rooms
        .upgrade_room(&b.room_id, &req.auth.user_id, b.new_version.clone(), b.additional_creators.clone())
        .await?;
    Ok(JsonBody(json!({ "replacement_room": new_room })))
}
