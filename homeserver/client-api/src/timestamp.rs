//! `GET /rooms/{roomId}/timestamp_to_event`: jump to a date — the event closest to a timestamp
//! in the given direction, among those the user may see.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::events::Direction;
use ruma::api::{Direction as RumaDirection, client::room::get_event_by_timestamp};
use serde_json::json;

use crate::{App, events::require_history_access};

/// Candidates read for the per-event visibility check.
const CANDIDATES: i64 = 20;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(timestamp_to_event)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
async fn timestamp_to_event(
    app: App,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    require_history_access(&app, room_id, &req.auth.user_id).await?;
    let dir = match req.body.dir {
        RumaDirection::Backward => Direction::Backward,
        RumaDirection::Forward => Direction::Forward,
    };
    let ts = i64::try_from(u64::from(req.body.ts.get())).unwrap_or(i64::MAX);
    // One indexed query over the positions the user may see: hidden history (before they could
    // see it, after they left) is never walked event by event. The per-event rule then has the
    // last word on the few candidates.
    let visible = app.rooms.visible_set(&req.auth.user_id, [room_id.as_str()]).await?;
    let rows = app
        .db
        .events_near_timestamp(room_id.as_str(), ts, dir, CANDIDATES, &visible)
        .await
        .map_err(Error::from)?;
    let Some(row) = app.rooms.filter_visible(&req.auth.user_id, rows).await?.into_iter().next() else {
        return Err(Error::not_found("No visible event found in that direction").into());
    };
    Ok(JsonBody(json!({ "event_id": row.event_id, "origin_server_ts": row.origin_server_ts })))
}
