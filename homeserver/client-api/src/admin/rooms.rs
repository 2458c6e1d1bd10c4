//! Room administration: `GET /_synapse/admin/v1/rooms` (paged, searchable, ordered),
//! `GET /_synapse/admin/v1/rooms/{roomId}` and `/members`, `DELETE /_synapse/admin/v1/rooms/
//! {roomId}` (every local member leaves, aliases and listing go, optionally block and purge), and
//! `GET /_synapse/admin/v1/event_reports`.

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::get,
};
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, Authenticated};
use homeserver_storage::admin::RoomSummary;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Page, body, query, require_admin};
use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_synapse/admin/v1/rooms", get(list))
        .route("/_synapse/admin/v1/rooms/{room_id}", get(details).delete(delete_room))
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(members))
        .route("/_synapse/admin/v1/event_reports", get(event_reports))
}

fn field<'a>(summary: &'a RoomSummary, ty: &str, key: &str) -> Option<&'a Value> {
    summary.state.get(ty).and_then(|c| c.get(key)).filter(|v| !v.is_null())
}

/// A room as Synapse's admin room list shows one.
fn room_json(s: &RoomSummary) -> Value {
    json!({
        "room_id": s.room_id,
        "name": field(s, "m.room.name", "name"),
        "canonical_alias": field(s, "m.room.canonical_alias", "alias"),
        "joined_members": s.joined_members,
        "joined_local_members": s.joined_local_members,
        "version": s.version,
        "creator": s.creator,
        "encryption": field(s, "m.room.encryption", "algorithm"),
        "federatable": field(s, "m.room.create", "m.federate").and_then(Value::as_bool).unwrap_or(true),
        "public": s.published,
        "join_rules": field(s, "m.room.join_rules", "join_rule"),
        "guest_access": field(s, "m.room.guest_access", "guest_access"),
        "history_visibility": field(s, "m.room.history_visibility", "history_visibility"),
        "state_events": s.state_events,
        "room_type": field(s, "m.room.create", "type"),
    })
}

fn parse_room(raw: &str) -> Result<OwnedRoomId, Error> {
    RoomId::parse(raw).map_err(|_| Error::invalid_param(format!("{raw} is not a room id")))
}

async fn summary(app: &App, room_id: &RoomId) -> Result<RoomSummary, Error> {
    app.db
        .room_summaries(app.server_name().as_str(), Some(room_id.as_str()))
        .await
        .map_err(Error::from)?
        .pop()
        .ok_or_else(|| Error::not_found("Room not found"))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<String>,
    order_by: Option<String>,
    search_term: Option<String>,
}

/// `GET /_synapse/admin/v1/rooms`
async fn list(
    State(app): State<App>,
    auth: Authenticated,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let q = query(q)?;
    let page = Page { from: q.from, limit: q.limit, dir: q.dir.clone() };
    let offset = page.offset()? as usize;
    let limit = page.limit(100)? as usize;
    let mut rooms = app.db.room_summaries(app.server_name().as_str(), None).await.map_err(Error::from)?;
    if let Some(term) = q.search_term.as_deref().map(str::to_lowercase).filter(|t| !t.is_empty()) {
        rooms.retain(|s| {
            s.room_id.to_lowercase().contains(&term)
                || [("m.room.name", "name"), ("m.room.canonical_alias", "alias")].iter().any(|(ty, key)| {
                    field(s, ty, key)
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.to_lowercase().contains(&term))
                })
        });
    }
    let text = |s: &RoomSummary, ty: &str, key: &str| {
        field(s, ty, key).and_then(Value::as_str).map(str::to_lowercase).unwrap_or_default()
    };
    match q.order_by.as_deref().unwrap_or("name") {
        "name" => rooms.sort_by_key(|s| (text(s, "m.room.name", "name"), s.room_id.clone())),
        "canonical_alias" => {
            rooms.sort_by_key(|s| (text(s, "m.room.canonical_alias", "alias"), s.room_id.clone()))
        }
        "joined_members" => rooms.sort_by_key(|s| (std::cmp::Reverse(s.joined_members), s.room_id.clone())),
        "joined_local_members" => {
            rooms.sort_by_key(|s| (std::cmp::Reverse(s.joined_local_members), s.room_id.clone()))
        }
        "version" => rooms.sort_by_key(|s| (s.version.clone(), s.room_id.clone())),
        "creator" => rooms.sort_by_key(|s| (s.creator.clone(), s.room_id.clone())),
        "state_events" => rooms.sort_by_key(|s| (std::cmp::Reverse(s.state_events), s.room_id.clone())),
        "public" => rooms.sort_by_key(|s| (std::cmp::Reverse(s.published), s.room_id.clone())),
        other => return Err(Error::invalid_param(format!("unsupported order_by {other}")).into()),
    }
    if page.descending()? {
        rooms.reverse();
    }
    let total = rooms.len();
    let listed: Vec<Value> = rooms.iter().skip(offset).take(limit).map(room_json).collect();
    let mut out = json!({ "rooms": listed, "offset": offset, "total_rooms": total });
    if offset + limit < total {
        out["next_batch"] = json!(offset + limit);
    }
    if offset > 0 {
        out["prev_batch"] = json!(offset.saturating_sub(limit));
    }
    Ok(Json(out))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`
async fn details(
    State(app): State<App>,
    auth: Authenticated,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let room_id = parse_room(&room_id)?;
    let s = summary(&app, &room_id).await?;
    let mut out = room_json(&s);
    out["topic"] = json!(field(&s, "m.room.topic", "topic"));
    out["avatar"] = json!(field(&s, "m.room.avatar", "url"));
    out["forgotten"] = json!(false);
    Ok(Json(out))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/members`
async fn members(
    State(app): State<App>,
    auth: Authenticated,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let room_id = parse_room(&room_id)?;
    if app.rooms.room_version(&room_id).await?.is_none() {
        return Err(Error::not_found("Room not found").into());
    }
    let members = app.db.room_members(room_id.as_str(), "join").await.map_err(Error::from)?;
    Ok(Json(json!({ "total": members.len(), "members": members })))
}

#[derive(Deserialize, Default)]
struct DeleteRoom {
    new_room_user_id: Option<String>,
    #[serde(default)]
    block: bool,
    purge: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    force_purge: bool,
    #[allow(dead_code)]
    message: Option<String>,
    #[allow(dead_code)]
    room_name: Option<String>,
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}`: every local member leaves, aliases and the
/// directory listing are removed, the room is blocked on request and purged unless
/// `purge: false`.
async fn delete_room(
    State(app): State<App>,
    auth: Authenticated,
    Path(room_id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let admin = require_admin(auth)?;
    let room_id = parse_room(&room_id)?;
    let req: DeleteRoom = body(&raw)?;
    if req.new_room_user_id.is_some() {
        return Err(
            Error::invalid_param("Moving members to a new room (new_room_user_id) is not supported").into()
        );
    }
    let exists = app.rooms.room_version(&room_id).await?.is_some();
    if req.block {
        app.db
            .block_room(room_id.as_str(), admin.user_id.as_str(), now_millis() as i64)
            .await
            .map_err(Error::from)?;
    }
    if !exists {
        if req.block {
            return Ok(Json(
                json!({ "kicked_users": [], "failed_to_kick_users": [], "local_aliases": [], "new_room_id": null }),
            ));
        }
        return Err(Error::not_found("Room not found").into());
    }
    let mut kicked = Vec::new();
    let mut failed = Vec::new();
    for (user, membership) in app.db.room_memberships(room_id.as_str()).await.map_err(Error::from)? {
        let Ok(user) = UserId::parse(&user) else { continue };
        if !app.is_local(&user) || !matches!(membership.as_str(), "join" | "invite" | "knock") {
            continue;
        }
        match app.rooms.leave(&room_id, &user, Some("The room was shut down by the server admin")).await {
            Ok(_) => kicked.push(user.to_string()),
            Err(err) => {
                tracing::warn!(%room_id, %user, error = %err, "could not remove member from deleted room");
                failed.push(user.to_string());
            }
        }
    }
    let aliases = app.db.room_aliases(room_id.as_str()).await.map_err(Error::from)?;
    for alias in &aliases {
        app.db.delete_alias(alias).await.map_err(Error::from)?;
    }
    app.db.set_room_published(room_id.as_str(), false).await.map_err(Error::from)?;
    if req.purge.unwrap_or(true) {
        app.rooms.purge_room(&room_id).await?;
    }
    Ok(Json(json!({
        "kicked_users": kicked,
        "failed_to_kick_users": failed,
        "local_aliases": aliases,
        "new_room_id": null,
    })))
}

/// `GET /_synapse/admin/v1/event_reports`
async fn event_reports(
    State(app): State<App>,
    auth: Authenticated,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let page = query(q)?;
    let offset = page.offset()?;
    let limit = page.limit(100)?;
    let (reports, total) = app.db.reports("event", limit, offset).await.map_err(Error::from)?;
    let reports: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "received_ts": r.created_ts,
                "room_id": r.room_id,
                "event_id": r.event_id,
                "user_id": r.reporter,
                "sender": r.target_user,
                "reason": r.reason,
                "score": r.score,
            })
        })
        .collect();
    let mut out = json!({ "event_reports": reports, "total": total });
    if offset + (reports.len() as i64) < total {
        out["next_token"] = json!(offset + reports.len() as i64);
    }
    Ok(Json(out))
}
