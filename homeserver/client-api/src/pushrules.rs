//! Push rules (`/pushrules/…`) and the notification list (`GET /notifications`).
//!
//! A user's rules are the spec's server-default set until they change something; from then on the
//! whole rule set is stored as global account data `m.push_rules` (so `/sync` delivers it) and the
//! room pipeline's cached copy is dropped.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::Method,
    routing::get,
};
use homeserver_core::{Error, token::StreamToken};
use homeserver_http::{ApiError, Authenticated, JsonBody, RouterExt, Ruma};
use homeserver_rooms::{
    format::{RoomIdField, Viewer},
    push::PUSH_RULES_TYPE,
};
use ruma::{UserId, api::client::push::get_notifications, push::Ruleset};
use serde_json::{Value, json};

use crate::{
    App,
    push_rule_set::{self, Placement, RuleSet},
};

pub fn routes(router: Router<App>) -> Router<App> {
    let mut router = router.ruma_route(notifications);
    for version in ["r0", "v3"] {
        router = router
            .route(&format!("/_matrix/client/{version}/pushrules/"), get(all_rules).fallback(no_scope))
            .route(
                &format!("/_matrix/client/{version}/pushrules/{{*path}}"),
                get(rule_path).put(rule_path).delete(rule_path),
            );
    }
    router
}

/// A user's current rule set as JSON (the server's defaults until they change something).
async fn rule_set(app: &App, user: &UserId) -> Result<RuleSet, Error> {
    let stored = app.db.account_data(user.as_str(), "", PUSH_RULES_TYPE).await.map_err(Error::from)?;
    Ok(stored_rule_set(user, stored.as_deref()))
}

fn stored_rule_set(user: &UserId, stored: Option<&str>) -> RuleSet {
    let global = stored
        .and_then(|content| serde_json::from_str::<Value>(content).ok())
        .and_then(|mut content| content.get_mut("global").map(Value::take))
        .unwrap_or_else(|| serde_json::to_value(Ruleset::server_default(user)).unwrap_or_default());
    RuleSet::from_json(global)
}

/// Changes a user's rule set atomically: `change` edits the stored rules and says whether it
/// changed anything (concurrent changes apply one after another, none is lost); then the
/// pipeline's cached copy is dropped.
pub(crate) async fn update(
    app: &App,
    user: &UserId,
    change: impl FnOnce(&mut RuleSet) -> Result<bool, Error>,
) -> Result<(), Error> {
    let written = app
        .live
        .account_data
        .update(user, "", PUSH_RULES_TYPE, |stored| {
            let mut rules = stored_rule_set(user, stored);
            Ok(change(&mut rules)?.then(|| json!({ "global": rules.to_json() }).to_string()))
        })
        .await?;
    if written {
        app.rooms.push_rules().invalidate(user);
    }
    Ok(())
}

/// `GET /_matrix/client/v3/pushrules/`
async fn all_rules(
    State(app): State<App>,
    Authenticated(session): Authenticated,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "global": rule_set(&app, &session.user_id).await?.to_json() })))
}

/// Anything but `GET` on `/pushrules/`: no scope named.
async fn no_scope() -> ApiError {
    Error::invalid_param("no push rule scope given").into()
}

#[derive(serde::Deserialize, Default)]
struct Anchors {
    before: Option<String>,
    after: Option<String>,
}

/// Everything below `/pushrules/`: `global/` (the scope), `global/{kind}/` (a kind's rules),
/// `global/{kind}/{ruleId}` and its `enabled` and `actions`. Any other shape is a 400, as
/// Synapse answers.
async fn rule_path(
    State(app): State<App>,
    Authenticated(session): Authenticated,
    method: Method,
    Path(path): Path<String>,
    Query(anchors): Query<Anchors>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let user = &session.user_id;
    let segments: Vec<&str> = path.split('/').collect();
    let read = method == Method::GET;
    let answer = match segments.as_slice() {
        ["global", ""] if read => rule_set(&app, user).await?.to_json(),
        ["global", kind, ""] if read => rule_set(&app, user).await?.list(push_rule_set::kind(kind)?),
        ["global", kind, rule_id] if !rule_id.is_empty() => {
            let kind = push_rule_set::kind(kind)?;
            match method {
                Method::GET => rule_set(&app, user).await?.get(kind, rule_id)?.clone(),
                Method::PUT => {
                    let body = json_body(&body)?;
                    let at = Placement { before: anchors.before.as_deref(), after: anchors.after.as_deref() };
                    update(&app, user, |rules| rules.put(kind, rule_id, &body, at).map(|()| true)).await?;
                    json!({})
                }
                _ => {
                    update(&app, user, |rules| rules.delete(kind, rule_id).map(|()| true)).await?;
                    json!({})
                }
            }
        }
        ["global", kind, rule_id, attribute @ ("enabled" | "actions")] if method != Method::DELETE => {
            let kind = push_rule_set::kind(kind)?;
            if read {
                let rules = rule_set(&app, user).await?;
                let rule = rules.get(kind, rule_id)?;
                json!({ *attribute: rule.get(*attribute).cloned().unwrap_or(Value::Null) })
            } else {
                let body = json_body(&body)?;
                let value =
                    body.get(*attribute).ok_or_else(|| Error::bad_json(format!("{attribute} is missing")))?;
                match *attribute {
                    "enabled" => {
                        let enabled = value
                            .as_bool()
                            .ok_or_else(|| Error::bad_json("enabled must be true or false"))?;
                        update(&app, user, |rules| rules.set_enabled(kind, rule_id, enabled).map(|()| true))
                            .await?
                    }
                    _ => {
                        update(&app, user, |rules| rules.set_actions(kind, rule_id, value).map(|()| true))
                            .await?
                    }
                }
                json!({})
            }
        }
        _ => return Err(Error::invalid_param(format!("unrecognised push rule path {path}")).into()),
    };
    Ok(Json(answer))
}

fn json_body(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body).map_err(|e| Error::bad_json(e.to_string()))
}

/// `GET /_matrix/client/v3/notifications`
async fn notifications(app: App, req: Ruma<get_notifications::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let before = match req.body.from.as_deref() {
        Some(token) => {
            token.parse::<StreamToken>().map_err(|_| Error::invalid_param("invalid from token"))?.pos as i64
        }
        None => i64::MAX,
    };
    let limit = req.body.limit.map(u64::from).unwrap_or(50).clamp(1, 200) as i64;
    let only_highlight = req.body.only.as_deref() == Some("highlight");
    let rows = app
        .db
        .notifications(session.user_id.as_str(), before, limit, only_highlight)
        .await
        .map_err(Error::from)?;
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    // Notified events the user can no longer see (the room's history closed to them) are not
    // shown.
    let events =
        app.rooms.filter_visible(&session.user_id, app.db.events(&ids).await.map_err(Error::from)?).await?;
    let viewer = Viewer { user_id: session.user_id.as_str(), device_id: Some(session.device_id.as_str()) };
    let formatted = app.rooms.client_events(&events, Some(viewer), RoomIdField::Include).await?;
    let by_id: std::collections::HashMap<&str, (&homeserver_storage::events::EventRow, &Value)> =
        events.iter().zip(formatted.iter()).map(|(e, f)| (e.event_id.as_str(), (e, f))).collect();
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;
    let mut receipts_of_room = std::collections::HashMap::new();
    let mut out = Vec::new();
    for row in &rows {
        let Some((event, formatted)) = by_id.get(row.event_id.as_str()) else { continue };
        if ignored.hides(event) {
            continue;
        }
        if !receipts_of_room.contains_key(&row.room_id) {
            let receipts =
                app.db.user_receipts(&row.room_id, session.user_id.as_str()).await.map_err(Error::from)?;
            receipts_of_room.insert(row.room_id.clone(), receipts);
        }
        let read_up_to = homeserver_storage::receipts::read_up_to(
            &receipts_of_room[&row.room_id],
            row.thread_id.as_deref(),
        );
        out.push(json!({
            "actions": serde_json::from_str::<Value>(&row.actions).unwrap_or_else(|_| json!([])),
            "event": formatted,
            "read": row.stream_pos <= read_up_to,
            "room_id": row.room_id,
            "ts": event.origin_server_ts,
        }));
    }
    let mut body = json!({ "notifications": out });
    if rows.len() as i64 == limit
        && let Some(last) = rows.last()
    {
        body["next_token"] = json!(StreamToken::new(last.stream_pos as u64).to_string());
    }
    Ok(JsonBody(body))
}
