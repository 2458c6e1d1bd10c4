//! Reporting content to the server's administrators: an event (`POST /rooms/{roomId}/report/
//! {eventId}`), a room (`POST /rooms/{roomId}/report`) or a user (`POST /users/{userId}/report`).
//! Reports are stored for the admin API (`/_synapse/admin/v1/event_reports`).

use axum::Router;
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_storage::reports::NewReport;
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};
use serde_json::{Value, json};

use crate::{App, ratelimit::Action};

/// Longest reason kept.
const MAX_REASON_LEN: usize = 4096;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(report_event).ruma_route(report_room).ruma_route(report_user)
}

fn check_reason(reason: Option<&str>) -> Result<(), Error> {
    if reason.is_some_and(|r| r.len() > MAX_REASON_LEN) {
        return Err(Error::invalid_param(format!("reason is longer than {MAX_REASON_LEN} bytes")));
    }
    Ok(())
}

async fn file(app: &App, session: &Session, report: NewReport<'_>) -> Result<JsonBody, Error> {
    check_reason(report.reason)?;
    // Reports share the sender's message budget, so a script cannot flood the moderators' queue.
    app.limit(Action::Message, session.user_id.as_str())?;
    tracing::info!(kind = report.kind, reporter = %session.user_id, room = ?report.room_id,
        event = ?report.event_id, user = ?report.target_user, "content reported");
    app.db.add_report(report).await.map_err(Error::from)?;
    Ok(JsonBody(json!({})))
}

fn report<'a>(kind: &'a str, session: &'a Session, reason: Option<&'a str>) -> NewReport<'a> {
    NewReport {
        kind,
        reporter: session.user_id.as_str(),
        room_id: None,
        event_id: None,
        target_user: None,
        reason,
        score: None,
        now: now_millis() as i64,
    }
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`: only for events in a room the
/// reporter is joined to and may see.
async fn report_event(app: App, req: Ruma<report_content::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let room_id = &req.body.room_id;
    let not_found = || Error::not_found("The event was not found or you are not joined to the room");
    if !app.rooms.is_joined(room_id, &session.user_id).await? {
        return Err(not_found().into());
    }
    let row = app
        .db
        .event(req.body.event_id.as_str())
        .await
        .map_err(Error::from)?
        .filter(|r| r.room_id == room_id.as_str())
        .ok_or_else(not_found)?;
    if !app.rooms.can_see(&session.user_id, &row).await? {
        return Err(not_found().into());
    }
    // `score` was dropped from the spec in v1.18 but older clients still send it (-100..=0).
    let raw: Value = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let score = match raw.get("score") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|s| (-100..=0).contains(s)) {
            Some(s) => Some(s),
            None => return Err(Error::invalid_param("score must be an integer between -100 and 0").into()),
        },
    };
    let mut r = report("event", session, req.body.reason.as_deref());
    r.room_id = Some(room_id.as_str());
    r.event_id = Some(req.body.event_id.as_str());
    r.target_user = Some(row.sender.as_str());
    r.score = score;
    Ok(file(&app, session, r).await?)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`
async fn report_room(app: App, req: Ruma<report_room::v3::Request>) -> Result<JsonBody, ApiError> {
    if app.rooms.room_version(&req.body.room_id).await?.is_none() {
        return Err(Error::not_found("Room not found").into());
    }
    let mut r = report("room", &req.auth, Some(req.body.reason.as_str()));
    r.room_id = Some(req.body.room_id.as_str());
    Ok(file(&app, &req.auth, r).await?)
}

/// `POST /_matrix/client/v3/users/{userId}/report`
async fn report_user(app: App, req: Ruma<report_user::v3::Request>) -> Result<JsonBody, ApiError> {
    let target = &req.body.user_id;
    let known = target.server_name() == app.rooms.server_name()
        && app.db.user(target.as_str()).await.map_err(Error::from)?.is_some();
    if !known {
        return Err(Error::not_found("User not found").into());
    }
    let mut r = report("user", &req.auth, Some(req.body.reason.as_str()));
    r.target_user = Some(target.as_str());
    Ok(file(&app, &req.auth, r).await?)
}
