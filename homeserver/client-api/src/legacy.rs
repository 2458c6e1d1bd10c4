//! The deprecated pre-`/sync` endpoints that clients and SyTest still use: `GET /initialSync`,
//! `GET /rooms/{roomId}/initialSync` and the `GET /events` stream. They are views over the same
//! storage, visibility and formatting as `/sync`; ruma has no types for them, so they are plain
//! axum routes.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use homeserver_core::{
    Error, ErrorKind,
    streams::{StreamPos, watermarks::Mark},
    token::StreamToken,
};
use homeserver_http::{ApiError, Authenticated, Session};
use homeserver_rooms::format::{RoomIdField, Viewer};
use homeserver_storage::events::{Direction, EventRow, MembershipRow};
use ruma::{RoomId, events::room::member::MembershipState};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    App,
    events::readable_state_rows,
    legacy_extras::{joined_members, presence_of, receipts_in, user_and_room_mates, v1_events},
};

const DEFAULT_LIMIT: i64 = 10;

pub fn routes(router: Router<App>) -> Router<App> {
    let mut router = router;
    for version in ["r0", "v3"] {
        router = router
            .route(&format!("/_matrix/client/{version}/initialSync"), get(initial_sync))
            .route(
                &format!("/_matrix/client/{version}/rooms/{{room_id}}/initialSync"),
                get(room_initial_sync),
            )
            .route(&format!("/_matrix/client/{version}/events"), get(events));
    }
    router
}

fn viewer(session: &Session) -> Viewer<'_> {
    Viewer { user_id: session.user_id.as_str(), device_id: Some(session.device_id.as_str()) }
}

#[derive(Deserialize)]
struct InitialSyncQuery {
    limit: Option<i64>,
    #[serde(default)]
    archived: Option<String>,
}

/// The newest `limit` visible events at or below `up_to`, oldest first, with pagination tokens.
async fn messages(
    app: &App,
    session: &Session,
    room_id: &RoomId,
    up_to: StreamPos,
    limit: i64,
) -> Result<Value, Error> {
    let mut rows = app
        .db
        .room_events(room_id.as_str(), up_to, None, Direction::Backward, limit)
        .await
        .map_err(Error::from)?;
    rows.reverse();
    let start = rows.first().map(|r| r.stream_pos.before()).unwrap_or(up_to);
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;
    rows.retain(|r| !ignored.hides(r));
    let rows = app.rooms.filter_visible(&session.user_id, rows).await?;
    let chunk = v1_events(app.rooms.client_events(&rows, Some(viewer(session)), RoomIdField::Include).await?);
    Ok(json!({
        "chunk": chunk,
        "start": StreamToken::new(start.as_live()).to_string(),
        "end": StreamToken::new(up_to.as_live()).to_string(),
    }))
}

async fn room_account_data(app: &App, user: &str, room_id: &str) -> Result<Vec<Value>, Error> {
    Ok(app
        .db
        .account_data_since(user, 0, i64::MAX)
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|row| row.room_id == room_id)
        .map(|row| json!({ "type": row.data_type, "content": serde_json::from_str::<Value>(&row.content).unwrap_or_default() }))
        .collect())
}

async fn room_entry(
    app: &App,
    session: &Session,
    membership: &MembershipRow,
    limit: i64,
    now: StreamPos,
) -> Result<Value, Error> {
    let room_id = RoomId::parse(&membership.room_id).map_err(|e| Error::internal(e.to_string()))?;
    let published =
        app.db.room(room_id.as_str()).await.map_err(Error::from)?.map(|r| r.published).unwrap_or(false);
    let mut entry = json!({
        "room_id": room_id,
        "membership": membership.membership,
        "visibility": if published { "public" } else { "private" },
    });
    if membership.membership == MembershipState::Invite {
        if let Some(row) = app.db.event(membership.event_id.as_str()).await.map_err(Error::from)? {
            let invite = app.rooms.client_event(&row, Some(viewer(session)), RoomIdField::Include).await?;
            entry["invite"] = invite.clone();
            entry["state"] = json!([invite]);
        }
        return Ok(entry);
    }
    let up_to = if membership.membership == MembershipState::Join { now } else { membership.stream_pos };
    entry["messages"] = messages(app, session, &room_id, up_to, limit).await?;
    let state_rows = match readable_state_rows(app, &room_id, &session.user_id).await {
        Ok(rows) => rows,
        // A room whose state the user may not read (an invite they rejected, a ban before they
        // ever joined) is listed with their own events and no state.
        Err(err) if err.kind == homeserver_core::ErrorKind::Forbidden => Vec::new(),
        Err(err) => return Err(err),
    };
    entry["state"] = Value::Array(v1_events(
        app.rooms.client_events(&state_rows, Some(viewer(session)), RoomIdField::Include).await?,
    ));
    entry["account_data"] =
        Value::Array(room_account_data(app, session.user_id.as_str(), room_id.as_str()).await?);
    Ok(entry)
}

/// `GET /_matrix/client/v3/initialSync` (deprecated)
async fn initial_sync(
    State(app): State<App>,
    Authenticated(session): Authenticated,
    Query(query): Query<InitialSyncQuery>,
) -> Result<Json<Value>, ApiError> {
    let now = StreamPos::live(app.stream.current());
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(0, 1000);
    let archived = matches!(query.archived.as_deref(), Some("true" | "1"));
    let mut rooms = Vec::new();
    let mut joined = Vec::new();
    for m in app.db.memberships_of_user(session.user_id.as_str()).await.map_err(Error::from)? {
        if m.membership == MembershipState::Join {
            joined.push(m.room_id.to_string());
        }
        let wanted = match m.membership {
            MembershipState::Join | MembershipState::Invite => true,
            MembershipState::Leave | MembershipState::Ban => archived && !m.forgotten,
            _ => false,
        };
        if wanted {
            rooms.push(room_entry(&app, &session, &m, limit, now).await?);
        }
    }
    let account_data: Vec<Value> = app
        .db
        .account_data_since(session.user_id.as_str(), 0, now.get())
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|row| row.room_id.is_empty())
        .map(|row| json!({ "type": row.data_type, "content": serde_json::from_str::<Value>(&row.content).unwrap_or_default() }))
        .collect();
    Ok(Json(json!({
        "end": StreamToken::new(now.as_live()).to_string(),
        "rooms": rooms,
        "presence": presence_of(&app, &session.user_id, &user_and_room_mates(&app, &session.user_id).await?).await?,
        "receipts": receipts_in(&app, &joined, &session.user_id).await?,
        "account_data": account_data,
    })))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/initialSync` (deprecated)
async fn room_initial_sync(
    State(app): State<App>,
    Authenticated(session): Authenticated,
    Path(room_id): Path<String>,
    Query(query): Query<InitialSyncQuery>,
) -> Result<Json<Value>, ApiError> {
    let room_id = RoomId::parse(&room_id).map_err(|_| Error::invalid_param("invalid room id"))?;
    let now = StreamPos::live(app.stream.current());
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(0, 1000);
    // Access follows the state endpoints: members, former members (as of leaving), or anyone
    // for world-readable rooms.
    let state_rows = readable_state_rows(&app, &room_id, &session.user_id).await?;
    let membership =
        app.db.membership(room_id.as_str(), session.user_id.as_str()).await.map_err(Error::from)?;
    let up_to = match &membership {
        Some(m) if !matches!(m.membership, MembershipState::Join | MembershipState::Invite) => m.stream_pos,
        _ => now,
    };
    // Presence and receipts are of now: only for members (a departed user gets none).
    let (presence, receipts) = match &membership {
        Some(m) if m.membership == MembershipState::Join => (
            presence_of(&app, &session.user_id, &joined_members(&app, &room_id).await?).await?,
            receipts_in(&app, &[room_id.to_string()], &session.user_id).await?,
        ),
        _ => (Vec::new(), Vec::new()),
    };
    let published =
        app.db.room(room_id.as_str()).await.map_err(Error::from)?.map(|r| r.published).unwrap_or(false);
    let mut body = json!({
        "room_id": room_id,
        "messages": messages(&app, &session, &room_id, up_to, limit).await?,
        "state": v1_events(
            app.rooms.client_events(&state_rows, Some(viewer(&session)), RoomIdField::Include).await?,
        ),
        "presence": presence,
        "receipts": receipts,
        "visibility": if published { "public" } else { "private" },
        "account_data": room_account_data(&app, session.user_id.as_str(), room_id.as_str()).await?,
    });
    if let Some(m) = membership {
        body["membership"] = json!(m.membership);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
    timeout: Option<u64>,
    room_id: Option<String>,
    /// Read as text so that a bad value is this endpoint's 400, not a generic rejection.
    limit: Option<String>,
}

/// The most events one `/events` answer carries.
const MAX_EVENTS_LIMIT: usize = 1000;

/// What an `/events` poll reads: the user's rooms (or one of them), or a world-readable room
/// the user is not in (peeking, as room previews do).
enum Scope<'a> {
    Mine(Option<&'a str>),
    Peek(&'a RoomId),
}

/// Events for the user in `(from, now]`: their rooms' events they may see, oldest first, and
/// how far they are complete — short of `now` when a room had more than one read brings, so
/// the page must end before that room's next event.
async fn events_since(
    app: &App,
    session: &Session,
    from: StreamPos,
    now: StreamPos,
    scope: &Scope<'_>,
) -> Result<(Vec<EventRow>, StreamPos), Error> {
    let mut complete_to = now;
    let user = session.user_id.as_str();
    let mut rows = Vec::new();
    let rooms: Vec<(String, StreamPos)> = match scope {
        // Woken by every event on the server, a peek asks the database only when its room has
        // new events.
        Scope::Peek(room_id)
            if !app.stream.marks().changed_after(Mark::RoomEvents, room_id.as_str(), from.as_live()) =>
        {
            Vec::new()
        }
        Scope::Peek(room_id) => vec![(room_id.to_string(), now)],
        Scope::Mine(only_room) => {
            let mut rooms = Vec::new();
            for (room_id, _) in app.db.rooms_changed_between(user, from, now).await.map_err(Error::from)? {
                if only_room.is_some_and(|only| only != room_id) {
                    continue;
                }
                let membership = app.db.membership(&room_id, user).await.map_err(Error::from)?;
                // Rooms one has left contribute events up to the departure.
                match &membership {
                    Some(m) if m.membership == MembershipState::Join => rooms.push((room_id, now)),
                    Some(m) => rooms.push((room_id, m.stream_pos.min(now))),
                    None => {}
                }
            }
            rooms
        }
    };
    for (room_id, up_to) in rooms {
        let batch = app
            .db
            .room_events(&room_id, from, Some(up_to), Direction::Forward, MAX_EVENTS_LIMIT as i64)
            .await
            .map_err(Error::from)?;
        if batch.len() >= MAX_EVENTS_LIMIT
            && let Some(last) = batch.last()
        {
            complete_to = complete_to.min(last.stream_pos);
        }
        rows.extend(batch);
    }
    rows.retain(|r| r.stream_pos <= complete_to);
    rows.sort_by_key(|r| r.stream_pos);
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;
    rows.retain(|r| !ignored.hides(r));
    Ok((app.rooms.filter_visible(&session.user_id, rows).await?, complete_to))
}

/// The user's account-data changes in `(from, up_to]` as events (`room_id` on a room's).
async fn account_data_events(
    app: &App,
    session: &Session,
    from: StreamPos,
    up_to: StreamPos,
) -> Result<Vec<Value>, Error> {
    let rows = app
        .db
        .account_data_since(session.user_id.as_str(), from.get(), up_to.get())
        .await
        .map_err(Error::from)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let content = serde_json::from_str::<Value>(&row.content).unwrap_or_default();
            let mut event = json!({ "type": row.data_type, "content": content });
            if !row.room_id.is_empty() {
                event["room_id"] = json!(row.room_id);
            }
            event
        })
        .collect())
}

/// `GET /_matrix/client/v3/events` (deprecated): long-polls like `/sync` (and, like it, marks
/// the user online while it polls).
async fn events(
    State(app): State<App>,
    Authenticated(session): Authenticated,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let from = match query.from.as_deref() {
        Some(token) => StreamPos::live(
            token.parse::<StreamToken>().map_err(|_| Error::invalid_param("invalid from token"))?.pos,
        ),
        None => StreamPos::live(app.stream.current()),
    };
    let limit = match query.limit.as_deref() {
        None => MAX_EVENTS_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| Error::invalid_param("limit must be a non-negative integer"))?
            .min(MAX_EVENTS_LIMIT),
    };
    // A room the user is not (and was never) in is read only if anyone may read it (peeking);
    // any other is refused at once rather than long-polled. Guests read single rooms only.
    let peeked = match query.room_id.as_deref() {
        Some(room) => {
            let room_id = RoomId::parse(room).map_err(|_| Error::invalid_param("invalid room id"))?;
            let membership =
                app.db.membership(room_id.as_str(), session.user_id.as_str()).await.map_err(Error::from)?;
            match membership {
                Some(_) => None,
                None if crate::events::world_readable(&app, &room_id).await? => Some(room_id),
                None => return Err(Error::forbidden("You are not a member of this room").into()),
            }
        }
        None if session.is_guest => {
            return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guests must name a room_id").into());
        }
        None => None,
    };
    let scope = match &peeked {
        Some(room_id) => Scope::Peek(room_id),
        None => Scope::Mine(query.room_id.as_deref()),
    };
    let timeout = Duration::from_millis(query.timeout.unwrap_or(30_000).min(app.config.max_sync_timeout_ms));
    let deadline = tokio::time::Instant::now() + timeout;
    // Polling the stream shows the user online while it lasts, as a sync does (and as the
    // clients that still poll it expect).
    let _syncing = app.live.presence.on_sync(&session.user_id, "online").await?;
    // A peeked room's events do not wake the user's own subscription: any new event does.
    let mut wake = match &peeked {
        Some(_) => app.stream.watch_current(),
        None => app.stream.subscribe(&session.user_id),
    };
    loop {
        wake.borrow_and_update();
        let now = StreamPos::live(app.stream.current());
        let (mut rows, complete_to) = events_since(&app, &session, from.min(now), now, &scope).await?;
        // A page cut short ends at its last event, so the next poll resumes right after it.
        let end = match rows.get(limit) {
            Some(_) if limit > 0 => rows[limit - 1].stream_pos,
            Some(_) => from.min(now),
            None => complete_to,
        };
        rows.truncate(limit);
        // The user's account data changes (tags included) up to the page's end come too.
        let account_data = match (limit, &query.room_id) {
            (0, _) | (_, Some(_)) => Vec::new(),
            _ => account_data_events(&app, &session, from.min(now), end).await?,
        };
        if !rows.is_empty()
            || !account_data.is_empty()
            || limit == 0
            || complete_to < now
            || app.stream.is_shutting_down()
            || tokio::time::Instant::now() >= deadline
        {
            let mut chunk = v1_events(
                app.rooms.client_events(&rows, Some(viewer(&session)), RoomIdField::Include).await?,
            );
            chunk.extend(account_data);
            return Ok(Json(json!({
                "start": StreamToken::new(from.as_live()).to_string(),
                "end": StreamToken::new(end.as_live()).to_string(),
                "chunk": chunk,
            })));
        }
        if tokio::time::timeout_at(deadline, wake.changed()).await.is_err() {
            continue;
        }
    }
}
