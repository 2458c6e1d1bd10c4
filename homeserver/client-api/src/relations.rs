//! Relations: `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]` (edits,
//! reactions, thread replies, references of an event, paginated, optionally recursive) and
//! `GET /rooms/{roomId}/threads` (thread roots by latest activity). The bundled aggregations in
//! `unsigned.m.relations` are added where events are formatted (`homeserver-rooms::format`).

use std::collections::HashSet;

use axum::Router;
use homeserver_core::{Error, token::StreamToken};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_rooms::format::RoomIdField;
use homeserver_storage::events::{Bound, EventRow};
use ruma::{
    EventId, RoomId,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads,
        },
    },
};
use serde_json::json;

use crate::{
    App,
    events::{require_history_access, viewer},
};

/// How deep `recurse=true` follows relations of relations (as Synapse does).
const MAX_RECURSION_DEPTH: usize = 3;
/// The most events a recursive `/relations` follows (a popular event's reactions must not turn
/// one request into a walk over all of them).
const MAX_RECURSION_TARGETS: usize = 1_000;
/// Page size when the client gives none, and the most one page holds.
const DEFAULT_LIMIT: u64 = 5;
const MAX_LIMIT: u64 = 100;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(relations)
        .ruma_route(relations_of_type)
        .ruma_route(relations_of_type_and_event)
        .ruma_route(threads)
}

/// The query of a `/relations` request, whichever of the three paths it came through.
struct RelationsQuery<'a> {
    room_id: &'a RoomId,
    event_id: &'a EventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<u64>,
    recurse: bool,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
async fn relations(app: App, req: Ruma<get_relating_events::v1::Request>) -> Result<JsonBody, ApiError> {
    let b = &req.body;
    let query = RelationsQuery {
        room_id: &b.room_id,
        event_id: &b.event_id,
        rel_type: None,
        event_type: None,
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: b.limit.map(u64::from),
        recurse: b.recurse,
    };
    Ok(relations_page(&app, &req.auth, query).await?)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
async fn relations_of_type(
    app: App,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let b = &req.body;
    let query = RelationsQuery {
        room_id: &b.room_id,
        event_id: &b.event_id,
        rel_type: Some(b.rel_type.to_string()),
        event_type: None,
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: b.limit.map(u64::from),
        recurse: b.recurse,
    };
    Ok(relations_page(&app, &req.auth, query).await?)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
async fn relations_of_type_and_event(
    app: App,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let b = &req.body;
    let query = RelationsQuery {
        room_id: &b.room_id,
        event_id: &b.event_id,
        rel_type: Some(b.rel_type.to_string()),
        event_type: Some(b.event_type.to_string()),
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        dir: b.dir,
        limit: b.limit.map(u64::from),
        recurse: b.recurse,
    };
    Ok(relations_page(&app, &req.auth, query).await?)
}

fn parse_token(token: &str) -> Result<i64, Error> {
    token
        .parse::<StreamToken>()
        .map(|t| t.pos as i64)
        .map_err(|_| Error::invalid_param("invalid pagination token"))
}

/// The related events visible to the user, one page, newest first (`dir=b`, the default) or
/// oldest first, in the room's topological order. Tokens are `/messages` tokens: a page
/// continues strictly after (or before) the point its token names; a sync token keeps what
/// arrived after it (or by then).
async fn relations_page(app: &App, session: &Session, q: RelationsQuery<'_>) -> Result<JsonBody, Error> {
    let parent = app
        .db
        .event(q.event_id.as_str())
        .await
        .map_err(Error::from)?
        .filter(|row| row.room_id == q.room_id.as_str())
        .ok_or_else(|| Error::not_found("Event not found"))?;
    if !app.rooms.can_see(&session.user_id, &parent).await? {
        return Err(Error::not_found("Event not found"));
    }
    let mut targets = vec![parent.event_id.clone()];
    if q.recurse {
        let mut seen: HashSet<String> = targets.iter().cloned().collect();
        let mut frontier = targets.clone();
        for _ in 1..MAX_RECURSION_DEPTH {
            let room = MAX_RECURSION_TARGETS.saturating_sub(targets.len());
            let next: Vec<String> = app
                .db
                .relating_event_ids(&frontier, room)
                .await
                .map_err(Error::from)?
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if next.is_empty() {
                break;
            }
            targets.extend(next.iter().cloned());
            frontier = next;
        }
    }
    let forward = q.dir == Direction::Forward;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as i64;
    let from = q.from.map(crate::paging::parse).transpose()?;
    let to = q.to.map(crate::paging::parse).transpose()?;
    let mut rows = app
        .db
        .related_events(&targets, q.rel_type.as_deref(), q.event_type.as_deref(), from, forward, limit + 1)
        .await
        .map_err(Error::from)?;
    if let Some(to) = to {
        rows.retain(|r| match (to, forward) {
            (Bound::Stream(p), true) => r.stream_pos <= p,
            (Bound::Stream(p), false) => r.stream_pos > p,
            (Bound::Topo(t), true) => r.topo() <= t,
            (Bound::Topo(t), false) => r.topo() > t,
        });
    }
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    // The next page continues strictly after (or before) the page's last event.
    let next_batch =
        if more { rows.last().map(|last| crate::paging::token(Bound::Topo(last.topo()))) } else { None };
    let chunk = visible_events(app, session, rows).await?;
    let mut body = json!({ "chunk": chunk });
    if let Some(next) = next_batch {
        body["next_batch"] = json!(next);
    }
    if let Some(from) = q.from {
        body["prev_batch"] = json!(from);
    }
    if q.recurse {
        body["recursion_depth"] = json!(MAX_RECURSION_DEPTH);
    }
    Ok(JsonBody(body))
}

/// Drops events from ignored users and events the user may not see, and formats the rest.
async fn visible_events(
    app: &App,
    session: &Session,
    mut rows: Vec<EventRow>,
) -> Result<Vec<serde_json::Value>, Error> {
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;
    rows.retain(|r| !ignored.hides(r));
    let rows = app.rooms.filter_visible(&session.user_id, rows).await?;
    app.rooms.client_events(&rows, Some(viewer(session)), RoomIdField::Include).await
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`
async fn threads(app: App, req: Ruma<get_threads::v1::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let room_id = &req.body.room_id;
    require_history_access(&app, room_id, &session.user_id).await?;
    let limit = req.body.limit.map(u64::from).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as i64;
    let before = req.body.from.as_deref().map(parse_token).transpose()?.unwrap_or(i64::MAX);
    let participant = (req.body.include == get_threads::v1::IncludeThreads::Participated)
        .then_some(session.user_id.as_str());
    // Ordered by the latest reply the user may see; threads with none are not listed.
    let visible = app.rooms.visible_set(&session.user_id, [room_id.as_str()]).await?;
    let mut roots = app
        .db
        .threads(room_id.as_str(), before, limit + 1, participant, &visible)
        .await
        .map_err(Error::from)?;
    let more = roots.len() as i64 > limit;
    roots.truncate(limit as usize);
    let ids: Vec<String> = roots.iter().map(|(id, _)| id.clone()).collect();
    let mut rows = app.db.events(&ids).await.map_err(Error::from)?;
    // Newest activity first, as the thread list is ordered.
    rows.sort_by_key(|r| std::cmp::Reverse(roots.iter().find(|(id, _)| *id == r.event_id).map(|(_, p)| *p)));
    let chunk = visible_events(&app, session, rows).await?;
    let mut body = json!({ "chunk": chunk });
    if more && let Some((_, latest)) = roots.last() {
        body["next_batch"] = json!(StreamToken::new(*latest as u64).to_string());
    }
    Ok(JsonBody(body))
}
