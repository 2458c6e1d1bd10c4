//! `GET /rooms/{roomId}/timestamp_to_event`: jump to a date — the event closest to a timestamp
//! in the given direction, among those the user may see.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::events::Direction;
use ruma::api::{Direction as RumaDirection, client::room::get_event_by_timestamp};
use serde_json::json;

use crate::{App, events::require_history_access, storage};

/// Events looked at per step while skipping ones the user may not see.
const SCAN_BATCH: i64 = 50;

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
    // The nearest event the user may see: hidden ones (before they could see history) are
    // stepped over, a bounded number at a time.
    let mut from = ts;
    let mut skip: Option<String> = None;
    let row = loop {
        let rows =
            app.db.events_near_timestamp(room_id.as_str(), from, dir, SCAN_BATCH).await.map_err(storage)?;
        let exhausted = (rows.len() as i64) < SCAN_BATCH;
        let Some(last) = rows.last().map(|r| (r.origin_server_ts, r.event_id.clone())) else {
            return Err(Error::not_found("No event found in that direction").into());
        };
        let fresh: Vec<_> = rows.into_iter().skip_while(|r| skip.as_ref() == Some(&r.event_id)).collect();
        if let Some(row) = app.rooms.filter_visible(&req.auth.user_id, fresh).await?.into_iter().next() {
            break row;
        }
        if exhausted || from == last.0 {
            return Err(Error::not_found("No visible event found in that direction").into());
        }
        (from, skip) = (last.0, Some(last.1));
    };
    Ok(JsonBody(json!({ "event_id": row.event_id, "origin_server_ts": row.origin_server_ts })))
}
