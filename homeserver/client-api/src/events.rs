//! Room events: sending (messages, state, redactions) and reading (`/event`, `/state`,
//! `/members`, `/joined_members`, `/messages`, `/context`).
//!
//! What a user may read follows Synapse: members read current state; former members read the
//! state as of their departure; anyone reads world-readable rooms. Timeline reads pass through the
//! history-visibility filter of `homeserver-rooms`.

use axum::Router;
use homeserver_core::{Error, ErrorKind, streams::StreamPos, token::StreamToken};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_rooms::{
    format::{RoomIdField, Viewer},
    membership::{MembershipAction, MembershipChange},
};
use homeserver_storage::{
    events::{Bound, Direction, EventRow, TopoPos},
    persist::TxnRecord,
};
use ruma::{
    EventId, RoomId, UserId,
    api::{
        Direction as RumaDirection,
        client::{
            context::get_context,
            membership::{get_member_events, joined_members},
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
    },
    events::room::member::MembershipState,
};
use serde_json::{Map, Value, json};

use homeserver_sync::filter::RoomEventFilter;

use crate::{App, paging, ratelimit::Action};

/// Paths for state with an empty state key, which ruma's templates (ending in `{state_key}`)
/// cannot match.
const STATE_NO_KEY_PATHS: &[&str] = &[
    "/_matrix/client/r0/rooms/{room_id}/state/{event_type}",
    "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
    "/_matrix/client/r0/rooms/{room_id}/state/{event_type}/",
    "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
];

/// Most events one `/messages` page returns.
const MAX_PAGE: u64 = 1000;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_matrix/client/r0/rooms/{room_id}/send/{event_type}", axum::routing::post(send_without_txn))
        .route("/_matrix/client/v3/rooms/{room_id}/send/{event_type}", axum::routing::post(send_without_txn))
        .route(
            "/_matrix/client/r0/rooms/{room_id}/redact/{event_id}",
            axum::routing::post(redact_without_txn),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/redact/{event_id}",
            axum::routing::post(redact_without_txn),
        )
        .ruma_route(send_message)
        .ruma_route_with(put_state, STATE_NO_KEY_PATHS)
        .ruma_route_with(get_state_event, STATE_NO_KEY_PATHS)
        .ruma_route(get_state)
        .ruma_route(redact)
        .ruma_route(get_event)
        .ruma_route(members)
        .ruma_route(joined_members_of)
        .ruma_route(messages)
        .ruma_route(context)
}

fn content_object(raw: &[u8]) -> Result<Value, Error> {
    let value: Value = if raw.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(raw).map_err(|_| Error::new(ErrorKind::NotJson, "content is not JSON"))?
    };
    if !value.is_object() {
        return Err(Error::bad_json("event content must be a JSON object"));
    }
    Ok(value)
}

pub(crate) fn viewer(session: &Session) -> Viewer<'_> {
    Viewer { user_id: session.user_id.as_str(), device_id: Some(session.device_id.as_str()) }
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send_message(app: App, req: Ruma<send_message_event::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let room_id = &req.body.room_id;
    let kind = req.body.event_type.to_string();
    let txn = TxnRecord {
        user_id: session.user_id.to_string(),
        device_id: session.device_id.to_string(),
        scope: format!("send/{room_id}/{kind}"),
        txn_id: req.body.txn_id.to_string(),
    };
    // A retry of a sent transaction is answered by the room pipeline, which checks the
    // transaction ids before anything else, so the common (first) send costs no extra lookup
    // here. Only a retry that the rate limit would refuse is looked up first: retries must
    // never be refused.
    if let Err(limited) = app.limit(Action::Message, session.user_id.as_str()) {
        return match app.db.txn_event(&txn.user_id, &txn.device_id, &txn.scope, &txn.txn_id).await {
            Ok(Some(event_id)) => Ok(JsonBody(json!({ "event_id": event_id }))),
            Ok(None) => Err(limited.into()),
            Err(e) => Err(Error::from(e).into()),
        };
    }
    app.live.presence.activity(&session.user_id).await;
    let content = content_object(&req.raw_body)?;
    let event_id = app.rooms.send_message(room_id, &session.user_id, &kind, content, Some(txn)).await?;
    Ok(JsonBody(json!({ "event_id": event_id })))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/send/{eventType}`: the pre-r0 form without a
/// transaction id, which Synapse still serves; each request is a new event.
async fn send_without_txn(
    axum::extract::State(app): axum::extract::State<App>,
    homeserver_http::Authenticated(session): homeserver_http::Authenticated,
    axum::extract::Path((room_id, event_type)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let room_id = RoomId::parse(&room_id).map_err(|_| Error::invalid_param("invalid room id"))?;
    app.limit(Action::Message, session.user_id.as_str())?;
    app.live.presence.activity(&session.user_id).await;
    let content = content_object(&body)?;
    let event_id = app.rooms.send_message(&room_id, &session.user_id, &event_type, content, None).await?;
    Ok(axum::Json(json!({ "event_id": event_id })))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn put_state(app: App, req: Ruma<send_state_event::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    app.limit(Action::Message, session.user_id.as_str())?;
    app.live.presence.activity(&session.user_id).await;
    let content = content_object(&req.raw_body)?;
    if req.body.event_type.to_string() == "m.room.member" {
        // Membership changes take the membership path, with all its rules, as Synapse does.
        let target = UserId::parse(req.body.state_key.as_str())
            .map_err(|_| Error::bad_json("the state key of a member event must be a user id"))?;
        let banned = app.rooms.membership(&req.body.room_id, &target).await? == Some(MembershipState::Ban);
        let membership = content.get("membership").and_then(Value::as_str);
        let action = MembershipAction::from_state_event(membership, &session.user_id, &target, banned)?;
        let change = MembershipChange::new(action, &session.user_id, &target)
            .with_content(content.as_object().cloned().unwrap_or_default());
        let event_id = crate::rooms::change_membership(&app, &req.body.room_id, change).await?;
        return Ok(JsonBody(json!({ "event_id": event_id })));
    }
    let event_id = app
        .rooms
        .send_state(
            &req.body.room_id,
            &session.user_id,
            &req.body.event_type.to_string(),
            &req.body.state_key,
            content,
        )
        .await?;
    Ok(JsonBody(json!({ "event_id": event_id })))
}

/// Which state a user may read: the current state, or the state as of when they left.
enum ReadableState {
    Current,
    /// The state group, and the stream position it was reached at (the user's departure).
    AsOf {
        group: i64,
        pos: StreamPos,
    },
}

async fn readable_state(app: &App, room_id: &RoomId, user: &UserId) -> Result<ReadableState, Error> {
    if app.rooms.room_version(room_id).await?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    match app.db.membership(room_id.as_str(), user.as_str()).await.map_err(Error::from)? {
        Some(m) if m.membership == MembershipState::Join => return Ok(ReadableState::Current),
        Some(m) if m.membership == MembershipState::Leave => {
            // A departed member sees the room as it was when they left, if they could see it
            // just before (someone who only rejected an invite never could), unless it is world
            // readable now. A banned user sees nothing, as in Synapse.
            if let Some(row) = app.db.event(m.event_id.as_str()).await.map_err(Error::from)?
                && !world_readable(app, room_id).await?
                && app.rooms.may_read_state_at(user, room_id, row.state_before).await?
            {
                return Ok(ReadableState::AsOf { group: row.state_after, pos: row.stream_pos });
            }
        }
        _ => {}
    }
    if world_readable(app, room_id).await? {
        return Ok(ReadableState::Current);
    }
    Err(Error::forbidden("You are not a member of this room"))
}

/// Whether anyone may read the room (its current history visibility is `world_readable`).
pub(crate) async fn world_readable(app: &App, room_id: &RoomId) -> Result<bool, Error> {
    Ok(app
        .rooms
        .current_state_event(room_id, "m.room.history_visibility", "")
        .await?
        .and_then(|p| p.content_str("history_visibility"))
        .as_deref()
        == Some("world_readable"))
}

async fn state_rows(app: &App, room_id: &RoomId, readable: &ReadableState) -> Result<Vec<EventRow>, Error> {
    let entries = match readable {
        ReadableState::Current => app.rooms.current_state_ids(room_id).await?,
        ReadableState::AsOf { group, .. } => app.rooms.state_at_group(*group).await?,
    };
    let ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
    let mut rows = app.db.events(&ids).await.map_err(Error::from)?;
    rows.sort_by_key(|r| r.stream_pos);
    Ok(rows)
}

/// The state events a user may read in a room (see [`readable_state`]), oldest first.
pub(crate) async fn readable_state_rows(
    app: &App,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Vec<EventRow>, Error> {
    let readable = readable_state(app, room_id, user).await?;
    state_rows(app, room_id, &readable).await
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn get_state_event(
    app: App,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    let readable = readable_state(&app, room_id, &req.auth.user_id).await?;
    let kind = req.body.event_type.to_string();
    let key = &req.body.state_key;
    let event_id = match readable {
        ReadableState::Current => {
            app.db.current_state_event_id(room_id.as_str(), &kind, key).await.map_err(Error::from)
        }
        ReadableState::AsOf { group, .. } => app.rooms.state_entry(group, &kind, key).await,
    }?
    .ok_or_else(|| Error::not_found("Event not found"))?;
    let row = app
        .db
        .event(&event_id)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let event = app.rooms.client_event(&row, Some(viewer(&req.auth)), RoomIdField::Include).await?;
    let wants_event = req.raw_query_format_event();
    if wants_event {
        return Ok(JsonBody(event));
    }
    Ok(JsonBody(event.get("content").cloned().unwrap_or_else(|| json!({}))))
}

/// Reads `format=event` without depending on ruma's enum spelling.
trait FormatQuery {
    fn raw_query_format_event(&self) -> bool;
}

impl FormatQuery for Ruma<get_state_event_for_key::v3::Request> {
    fn raw_query_format_event(&self) -> bool {
        serde_json::to_value(&self.body.format).ok().and_then(|v| v.as_str().map(|s| s == "event"))
            == Some(true)
    }
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn get_state(app: App, req: Ruma<get_state_events::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    let readable = readable_state(&app, room_id, &req.auth.user_id).await?;
    let rows = state_rows(&app, room_id, &readable).await?;
    let events = app.rooms.client_events(&rows, Some(viewer(&req.auth)), RoomIdField::Include).await?;
    Ok(JsonBody(Value::Array(events)))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact(app: App, req: Ruma<redact_event::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let room_id = &req.body.room_id;
    let txn = TxnRecord {
        user_id: session.user_id.to_string(),
        device_id: session.device_id.to_string(),
        scope: format!("redact/{room_id}"),
        txn_id: req.body.txn_id.to_string(),
    };
    if let Some(event_id) =
        app.db.txn_event(&txn.user_id, &txn.device_id, &txn.scope, &txn.txn_id).await.map_err(Error::from)?
    {
        return Ok(JsonBody(json!({ "event_id": event_id })));
    }
    let event_id =
        redact_as_member(&app, session, room_id, &req.body.event_id, req.body.reason.as_deref(), Some(txn))
            .await?;
    Ok(JsonBody(json!({ "event_id": event_id })))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/redact/{eventId}`: the form without a transaction id
/// that Synapse still serves (and SyTest uses); each call redacts anew.
async fn redact_without_txn(
    axum::extract::State(app): axum::extract::State<App>,
    homeserver_http::Authenticated(session): homeserver_http::Authenticated,
    axum::extract::Path((room_id, event_id)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let room_id = RoomId::parse(&room_id).map_err(|_| Error::invalid_param("invalid room id"))?;
    let event_id = EventId::parse(&event_id).map_err(|_| Error::invalid_param("invalid event id"))?;
    let body = content_object(&body)?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(reason.as_str()),
        Some(_) => return Err(Error::bad_json("reason must be a string").into()),
    };
    let redaction = redact_as_member(&app, &session, &room_id, &event_id, reason, None).await?;
    Ok(axum::Json(json!({ "event_id": redaction })))
}

/// Redacts an event as a member of its room (the room model decides whether the sender may).
async fn redact_as_member(
    app: &App,
    session: &Session,
    room_id: &RoomId,
    event_id: &EventId,
    reason: Option<&str>,
    txn: Option<TxnRecord>,
) -> Result<ruma::OwnedEventId, Error> {
    app.limit(Action::Message, session.user_id.as_str())?;
    app.live.presence.activity(&session.user_id).await;
    if !app.rooms.is_joined(room_id, &session.user_id).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    app.rooms.redact(room_id, &session.user_id, event_id, reason, txn).await
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
async fn get_event(app: App, req: Ruma<get_room_event::v3::Request>) -> Result<JsonBody, ApiError> {
    let row = app
        .db
        .event(req.body.event_id.as_str())
        .await
        .map_err(Error::from)?
        // Soft-failed events are never relayed to clients (they stay in the DAG only).
        .filter(|row| row.room_id == req.body.room_id.as_str() && !row.soft_failed)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if !app.rooms.can_see(&req.auth.user_id, &row).await? {
        return Err(Error::not_found("Event not found").into());
    }
    Ok(JsonBody(app.rooms.client_event(&row, Some(viewer(&req.auth)), RoomIdField::Include).await?))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
async fn members(app: App, req: Ruma<get_member_events::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    let mut readable = readable_state(&app, room_id, &req.auth.user_id).await?;
    if let Some(at) = &req.body.at {
        let token: StreamToken = at.parse().map_err(|_| Error::invalid_param("invalid `at` token"))?;
        let bound = match readable {
            ReadableState::Current => StreamPos::live(token.pos),
            ReadableState::AsOf { pos, .. } => StreamPos::live(token.pos).min(pos),
        };
        // The member list as of `at`, if the user could see the room then (Synapse answers
        // 403 otherwise); before the room's first event there were no members.
        readable = match app.db.latest_room_event(room_id.as_str(), bound).await.map_err(Error::from)? {
            Some(row) if app.rooms.may_read_state_around(&req.auth.user_id, room_id, &row).await? => {
                // The room's current state as of then (not the event's own, which a fork may
                // have set aside).
                let group = app
                    .db
                    .current_state_group_at(room_id.as_str(), row.stream_pos)
                    .await
                    .map_err(Error::from)?;
                ReadableState::AsOf { group, pos: row.stream_pos }
            }
            Some(_) => return Err(Error::forbidden("You may not see the room at that point").into()),
            None => ReadableState::AsOf { group: 0, pos: StreamPos::ZERO },
        };
    }
    let membership = req.body.membership.as_ref().map(|m| m.to_string());
    let not_membership = req.body.not_membership.as_ref().map(|m| m.to_string());
    let rows: Vec<EventRow> = state_rows(&app, room_id, &readable)
        .await?
        .into_iter()
        .filter(|row| row.event_type == "m.room.member")
        .collect();
    let events = app.rooms.client_events(&rows, Some(viewer(&req.auth)), RoomIdField::Include).await?;
    let chunk: Vec<Value> = events
        .into_iter()
        .filter(|ev| {
            let m = ev.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
            membership.as_deref().is_none_or(|want| m == Some(want))
                && not_membership.as_deref().is_none_or(|skip| m != Some(skip))
        })
        .collect();
    Ok(JsonBody(json!({ "chunk": chunk })))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
async fn joined_members_of(app: App, req: Ruma<joined_members::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    if !app.rooms.is_joined(room_id, &req.auth.user_id).await? && !req.auth.is_admin {
        readable_state(&app, room_id, &req.auth.user_id).await?;
        if !world_readable(&app, room_id).await? {
            return Err(Error::forbidden("You are not in this room").into());
        }
    }
    let entries = app.rooms.current_state_ids(room_id).await?;
    let member_entries: Vec<_> = entries.into_iter().filter(|(t, _, _)| t == "m.room.member").collect();
    let mut joined = Map::new();
    for pdu in app.rooms.state_events(&member_entries).await? {
        let content = pdu.content_value();
        if content.get("membership").and_then(Value::as_str) == Some("join")
            && let Some(user) = &pdu.state_key
        {
            joined.insert(
                user.clone(),
                crate::without_nulls(json!({
                    "display_name": content.get("displayname"),
                    "avatar_url": content.get("avatar_url"),
                })),
            );
        }
    }
    Ok(JsonBody(json!({ "joined": joined })))
}

/// Checks that a user may page through a room's history at all.
pub(crate) async fn require_history_access(app: &App, room_id: &RoomId, user: &UserId) -> Result<(), Error> {
    if app.rooms.room_version(room_id).await?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    if app.db.membership(room_id.as_str(), user.as_str()).await.map_err(Error::from)?.is_some()
        || world_readable(app, room_id).await?
    {
        return Ok(());
    }
    Err(Error::forbidden("You are not a member of this room"))
}

/// Our filter model from ruma's parsed one; over-long lists and patterns are refused here (see
/// `filter::MAX_PATTERNS`).
fn room_filter(value: &impl serde::Serialize) -> Result<RoomEventFilter, Error> {
    let value = serde_json::to_value(value).map_err(|e| Error::bad_json(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| Error::bad_json(format!("invalid filter: {e}")))
}

/// Member events of the senders of `rows`, as of the newest of them (lazy loading).
async fn lazy_members(app: &App, session: &Session, rows: &[EventRow]) -> Result<Vec<Value>, Error> {
    let Some(anchor) = rows.iter().max_by_key(|r| r.stream_pos) else { return Ok(Vec::new()) };
    let mut senders: Vec<&str> = rows.iter().map(|r| r.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut ids = Vec::new();
    for sender in senders {
        if let Some(id) = app.rooms.state_entry(anchor.state_after, "m.room.member", sender).await? {
            ids.push(id);
        }
    }
    let member_rows = app.db.events(&ids).await.map_err(Error::from)?;
    app.rooms.client_events(&member_rows, Some(viewer(session)), RoomIdField::Include).await
}

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(app: App, req: Ruma<get_message_events::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    let session = &req.auth;
    require_history_access(&app, room_id, &session.user_id).await?;
    let dir = match req.body.dir {
        RumaDirection::Backward => Direction::Backward,
        RumaDirection::Forward => Direction::Forward,
    };
    // A departed member pages back from where they left at the latest, as Synapse does: what
    // came after is not theirs to see, and a page of it would come back empty.
    let left_at = match dir {
        Direction::Backward => app
            .db
            .membership(room_id.as_str(), session.user_id.as_str())
            .await
            .map_err(Error::from)?
            .filter(|m| matches!(m.membership, MembershipState::Leave | MembershipState::Ban))
            .map(|m| m.stream_pos),
        Direction::Forward => None,
    };
    let from = match (req.body.from.as_deref(), left_at) {
        (Some(t), Some(left)) => match paging::parse(t)? {
            Bound::Stream(pos) if pos > left => Bound::Stream(left),
            bound => bound,
        },
        (Some(t), None) => paging::parse(t)?,
        (None, Some(left)) => Bound::Stream(left),
        (None, None) => match dir {
            Direction::Backward => Bound::Stream(StreamPos::live(app.stream.current())),
            Direction::Forward => Bound::Topo(paging::BEGINNING),
        },
    };
    let to = req.body.to.as_deref().map(paging::parse).transpose()?;
    let filter = room_filter(&req.body.filter)?;
    let limit = u64::from(req.body.limit).clamp(1, MAX_PAGE) as i64;
    let mut rows = app.db.room_page(room_id.as_str(), from, to, dir, limit).await.map_err(Error::from)?;
    if dir == Direction::Backward && (rows.len() as i64) < limit {
        // Paging back past what this server holds: history from the room's other servers
        // (a late joiner's), then the page again. Failing that, the page is what is held.
        match app.rooms.backfill(room_id, limit as u32).await {
            Ok(0) => {}
            Ok(_) => {
                rows = app.db.room_page(room_id.as_str(), from, to, dir, limit).await.map_err(Error::from)?
            }
            Err(err) => tracing::debug!(%room_id, error = %err.message, "backfill failed"),
        }
    }
    // Like Synapse: `end` accompanies every non-empty page; only an empty page has none.
    let end = rows.last().map(|r| match dir {
        Direction::Backward => paging::before(r),
        Direction::Forward => paging::after(r),
    });
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;
    let rows: Vec<EventRow> =
        rows.into_iter().filter(|r| filter.allows_row(r) && !ignored.hides(r)).collect();
    let rows = app.rooms.filter_visible(&session.user_id, rows).await?;
    let state = if filter.lazy_load_members { lazy_members(&app, session, &rows).await? } else { Vec::new() };
    let chunk = app.rooms.client_events(&rows, Some(viewer(session)), RoomIdField::Include).await?;
    let start = req.body.from.clone().unwrap_or_else(|| paging::token(from));
    let mut body = json!({ "start": start, "chunk": chunk });
    if let Some(end) = end {
        body["end"] = json!(end.to_string());
    }
    if !state.is_empty() {
        body["state"] = Value::Array(state);
    }
    Ok(JsonBody(body))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context(app: App, req: Ruma<get_context::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    let session = &req.auth;
    let row = app
        .db
        .event(req.body.event_id.as_str())
        .await
        .map_err(Error::from)?
        // Context exists only around events of the timeline.
        .filter(|row| row.room_id == room_id.as_str() && !row.soft_failed && !row.outlier)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if !app.rooms.can_see(&session.user_id, &row).await? {
        return Err(Error::forbidden("You may not see this event").into());
    }
    let filter = room_filter(&req.body.filter)?;
    let limit = u64::from(req.body.limit).min(MAX_PAGE) as i64;
    let before_limit = limit / 2;
    let after_limit = limit - before_limit;
    let page = |from: TopoPos, dir: Direction, limit: i64| {
        app.db.room_page(room_id.as_str(), Bound::Topo(from), None, dir, limit.max(0))
    };
    let before = page(row.topo_before(), Direction::Backward, before_limit).await.map_err(Error::from)?;
    let after = page(row.topo(), Direction::Forward, after_limit).await.map_err(Error::from)?;
    let start = paging::before(before.last().unwrap_or(&row));
    let end = paging::after(after.last().unwrap_or(&row));
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;
    let keep = |rows: Vec<EventRow>| {
        rows.into_iter().filter(|r| filter.allows_row(r) && !ignored.hides(r)).collect::<Vec<_>>()
    };
    let before = app.rooms.filter_visible(&session.user_id, keep(before)).await?;
    let after = app.rooms.filter_visible(&session.user_id, keep(after)).await?;
    // The state at the event, if the user could see the room there: their own membership event
    // is always visible to them, but a rejected invite must not show the room's state.
    let state_entries = match app.rooms.may_read_state_around(&session.user_id, room_id, &row).await? {
        true => app.rooms.state_at_group(row.state_before).await?,
        false => Vec::new(),
    };
    let mut state_rows = app
        .db
        .events(&state_entries.into_iter().map(|(_, _, id)| id).collect::<Vec<_>>())
        .await
        .map_err(Error::from)?;
    if filter.lazy_load_members {
        let mut senders: Vec<&str> =
            before.iter().chain(after.iter()).chain([&row]).map(|r| r.sender.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        state_rows.retain(|r| {
            r.event_type != "m.room.member" || r.state_key.as_deref().is_some_and(|k| senders.contains(&k))
        });
    }
    state_rows.sort_by_key(|r| r.stream_pos);
    let v = Some(viewer(session));
    Ok(JsonBody(json!({
        "start": start,
        "end": end,
        "event": app.rooms.client_event(&row, v, RoomIdField::Include).await?,
        "events_before": app.rooms.client_events(&before, v, RoomIdField::Include).await?,
        "events_after": app.rooms.client_events(&after, v, RoomIdField::Include).await?,
        "state": app.rooms.client_events(&state_rows, v, RoomIdField::Include).await?,
    })))
}
