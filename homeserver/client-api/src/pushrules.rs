//! Push rules (`/pushrules/…`) and the notification list (`GET /notifications`).
//!
//! A user's rules are the spec's server-default set until they change something; from then on the
//! whole rule set is stored as global account data `m.push_rules` (so `/sync` delivers it) and the
//! room pipeline's cached copy is dropped.

use axum::Router;
use homeserver_core::{Error, ErrorKind, token::StreamToken};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_rooms::{
    format::{RoomIdField, Viewer},
    push::{PUSH_RULES_TYPE, parse_ruleset},
};
use ruma::{
    UserId,
    api::client::push::{
        delete_pushrule, get_notifications, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pushrule, set_pushrule_actions,
        set_pushrule_enabled,
    },
    push::{RuleKind, Ruleset},
};
use serde_json::{Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(all_rules)
        .ruma_route(global_rules)
        .ruma_route(get_rule)
        .ruma_route(put_rule)
        .ruma_route(delete_rule)
        .ruma_route(get_enabled)
        .ruma_route(put_enabled)
        .ruma_route(get_actions)
        .ruma_route(put_actions)
        .ruma_route(notifications)
}

/// A user's current rule set.
pub async fn ruleset(app: &App, user: &UserId) -> Result<Ruleset, Error> {
    let stored = app.db.account_data(user.as_str(), "", PUSH_RULES_TYPE).await.map_err(Error::from)?;
    Ok(stored_ruleset(user, stored.as_deref()))
}

fn stored_ruleset(user: &UserId, stored: Option<&str>) -> Ruleset {
    match stored {
        Some(content) => parse_ruleset(user, content),
        None => Ruleset::server_default(user),
    }
}

/// Changes a user's rule set atomically: `change` edits the stored rules and says whether it
/// changed anything (concurrent changes apply one after another, none is lost); then the
/// pipeline's cached copy is dropped.
pub(crate) async fn update(
    app: &App,
    user: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<bool, Error>,
) -> Result<(), Error> {
    let written = app
        .live
        .account_data
        .update(user, "", PUSH_RULES_TYPE, |stored| {
            let mut rules = stored_ruleset(user, stored);
            Ok(change(&mut rules)?.then(|| json!({ "global": rules }).to_string()))
        })
        .await?;
    if written {
        app.rooms.push_rules().invalidate(user);
    }
    Ok(())
}

fn rule_json(rules: &Ruleset, kind: RuleKind, rule_id: &str) -> Result<Value, Error> {
    use ruma::{api::client::push::PushRule, push::AnyPushRule};
    let rule = rules.get(kind, rule_id).ok_or_else(|| Error::not_found("Push rule not found"))?;
    let rule: PushRule = match rule.to_owned() {
        AnyPushRule::Override(r) | AnyPushRule::Underride(r) => r.into(),
        AnyPushRule::Content(r) => r.into(),
        AnyPushRule::Room(r) => r.into(),
        AnyPushRule::Sender(r) => r.into(),
        _ => return Err(Error::not_found("Push rule not found")),
    };
    serde_json::to_value(rule).map_err(|e| Error::internal(e.to_string()))
}

/// `GET /_matrix/client/v3/pushrules/`
async fn all_rules(app: App, req: Ruma<get_pushrules_all::v3::Request>) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(json!({ "global": ruleset(&app, &req.auth.user_id).await? })))
}

/// `GET /_matrix/client/v3/pushrules/global/`
async fn global_rules(
    app: App,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<JsonBody, ApiError> {
    Ok(JsonBody(
        serde_json::to_value(ruleset(&app, &req.auth.user_id).await?)
            .map_err(|e| Error::internal(e.to_string()))?,
    ))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn get_rule(app: App, req: Ruma<get_pushrule::v3::Request>) -> Result<JsonBody, ApiError> {
    let rules = ruleset(&app, &req.auth.user_id).await?;
    Ok(JsonBody(rule_json(&rules, req.body.kind.clone(), &req.body.rule_id)?))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn put_rule(app: App, req: Ruma<set_pushrule::v3::Request>) -> Result<JsonBody, ApiError> {
    let b = &req.body;
    update(&app, &req.auth.user_id, |rules| {
        rules.insert(b.rule.clone(), b.after.as_deref(), b.before.as_deref()).map_err(|e| match e {
            ruma::push::InsertPushRuleError::UnknownRuleId => Error::not_found(e.to_string()),
            other => Error::new(ErrorKind::InvalidParam, other.to_string()),
        })?;
        Ok(true)
    })
    .await?;
    Ok(JsonBody(json!({})))
}

/// `DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}`
async fn delete_rule(app: App, req: Ruma<delete_pushrule::v3::Request>) -> Result<JsonBody, ApiError> {
    update(&app, &req.auth.user_id, |rules| {
        rules.remove(req.body.kind.clone(), &req.body.rule_id).map_err(|e| match e {
            ruma::push::RemovePushRuleError::NotFound => Error::not_found("Push rule not found"),
            other => Error::invalid_param(other.to_string()),
        })?;
        Ok(true)
    })
    .await?;
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn get_enabled(app: App, req: Ruma<get_pushrule_enabled::v3::Request>) -> Result<JsonBody, ApiError> {
    let rules = ruleset(&app, &req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(|| Error::not_found("Push rule not found"))?;
    Ok(JsonBody(json!({ "enabled": rule.enabled() })))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled`
async fn put_enabled(app: App, req: Ruma<set_pushrule_enabled::v3::Request>) -> Result<JsonBody, ApiError> {
    update(&app, &req.auth.user_id, |rules| {
        rules
            .set_enabled(req.body.kind.clone(), &req.body.rule_id, req.body.enabled)
            .map_err(|_| Error::not_found("Push rule not found"))?;
        Ok(true)
    })
    .await?;
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn get_actions(app: App, req: Ruma<get_pushrule_actions::v3::Request>) -> Result<JsonBody, ApiError> {
    let rules = ruleset(&app, &req.auth.user_id).await?;
    let rule = rules
        .get(req.body.kind.clone(), &req.body.rule_id)
        .ok_or_else(|| Error::not_found("Push rule not found"))?;
    Ok(JsonBody(json!({ "actions": rule.actions() })))
}

/// `PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions`
async fn put_actions(app: App, req: Ruma<set_pushrule_actions::v3::Request>) -> Result<JsonBody, ApiError> {
    update(&app, &req.auth.user_id, |rules| {
        rules
            .set_actions(req.body.kind.clone(), &req.body.rule_id, req.body.actions.clone())
            .map_err(|_| Error::not_found("Push rule not found"))?;
        Ok(true)
    })
    .await?;
    Ok(JsonBody(json!({})))
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
