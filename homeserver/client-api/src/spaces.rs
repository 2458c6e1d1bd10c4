//! `GET /rooms/{roomId}/hierarchy`: the rooms of a space, walked breadth-first through its
//! `m.space.child` events (only spaces have children). A room is shown if the user may see or join it (member, invited,
//! world-readable, public or knockable, or restricted to a room the user is in); children are
//! ordered by their `order` field, then when they were added, then room id. Pagination is by
//! position in the walk, so a token stays valid as long as the space does not change.

use std::collections::{HashSet, VecDeque};

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::{OwnedRoomId, RoomId, UserId, api::client::space::get_hierarchy};
use serde_json::{Value, json};

use crate::App;

/// Page size when the client gives none, and the most one page holds.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 100;
/// How deep the walk goes when the client does not say, and how many rooms it visits at most.
const DEFAULT_MAX_DEPTH: u64 = 10;
const MAX_ROOMS: usize = 1000;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(hierarchy)
}

/// A child link: `m.space.child` with a non-empty `via`.
struct Child {
    room_id: OwnedRoomId,
    order: Option<String>,
    ts: u64,
    suggested: bool,
    event: Value,
}

/// The space's children, in the order the spec gives.
async fn children(app: &App, room_id: &RoomId) -> Result<Vec<Child>, Error> {
    let state = app.rooms.current_state_ids(room_id).await?;
    let entries: Vec<_> = state.into_iter().filter(|(ty, _, _)| ty == "m.space.child").collect();
    let mut out = Vec::new();
    for pdu in app.rooms.state_events(&entries).await? {
        let content = pdu.content_value();
        let has_via = content.get("via").and_then(Value::as_array).is_some_and(|v| !v.is_empty());
        let Some(child) = pdu.state_key.as_deref().and_then(|k| RoomId::parse(k).ok()) else { continue };
        if !has_via {
            continue;
        }
        // `order` only counts if it is a short string of printable ASCII.
        let order = content
            .get("order")
            .and_then(Value::as_str)
            .filter(|o| o.len() <= 50 && o.chars().all(|c| (' '..='~').contains(&c)))
            .map(str::to_owned);
        out.push(Child {
            room_id: child,
            order,
            ts: pdu.origin_server_ts.get().into(),
            suggested: content.get("suggested").and_then(Value::as_bool).unwrap_or(false),
            event: json!({
                "type": "m.space.child",
                "state_key": pdu.state_key,
                "content": content,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
            }),
        });
    }
    out.sort_by(|a, b| {
        // Children with an order come first, by order; then by time added, then id.
        match (&a.order, &b.order) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(a.ts.cmp(&b.ts))
        .then(a.room_id.cmp(&b.room_id))
    });
    Ok(out)
}

/// Whether the user may see the room in a hierarchy (peek at it or join it).
async fn accessible(app: &App, room_id: &RoomId, user: &UserId, entry: &Value) -> Result<bool, Error> {
    if matches!(
        app.rooms.membership(room_id, user).await?,
        Some(
            ruma::events::room::member::MembershipState::Join
                | ruma::events::room::member::MembershipState::Invite
        )
    ) {
        return Ok(true);
    }
    if entry["world_readable"] == true {
        return Ok(true);
    }
    let Some(rules) = app.rooms.current_state_event(room_id, "m.room.join_rules", "").await? else {
        return Ok(false);
    };
    let content = rules.content_value();
    match content.get("join_rule").and_then(Value::as_str) {
        Some("public" | "knock") => Ok(true),
        Some("restricted" | "knock_restricted") => {
            for allowed in content.get("allow").and_then(Value::as_array).into_iter().flatten() {
                if let Some(allowed) =
                    allowed.get("room_id").and_then(Value::as_str).and_then(|r| RoomId::parse(r).ok())
                    && app.rooms.is_joined(&allowed, user).await?
                {
                    return Ok(true);
                }
            }
            Ok(content.get("join_rule").and_then(Value::as_str) == Some("knock_restricted"))
        }
        _ => Ok(false),
    }
}

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
async fn hierarchy(app: App, req: Ruma<get_hierarchy::v1::Request>) -> Result<JsonBody, ApiError> {
    let user = &req.auth.user_id;
    let root = &req.body.room_id;
    let limit = req.body.limit.map(u64::from).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
    let max_depth = req.body.max_depth.map(u64::from).unwrap_or(DEFAULT_MAX_DEPTH);
    let skip = match req.body.from.as_deref() {
        Some(token) => {
            token.parse::<usize>().map_err(|_| Error::invalid_param("invalid pagination token"))?
        }
        None => 0,
    };
    if app.rooms.room_version(root).await?.is_none() {
        return Err(Error::forbidden("You may not see this room").into());
    }
    let root_entry = app.rooms.directory_entry(root).await?;
    if !accessible(&app, root, user, &root_entry).await? {
        return Err(Error::forbidden("You may not see this room").into());
    }

    // Breadth-first over the rooms this server knows; each room once.
    let mut rooms = Vec::new();
    let mut seen: HashSet<OwnedRoomId> = HashSet::from([root.to_owned()]);
    let mut queue: VecDeque<(OwnedRoomId, u64)> = VecDeque::from([(root.to_owned(), 0)]);
    while let Some((room_id, depth)) = queue.pop_front() {
        if rooms.len() > skip + limit || rooms.len() >= MAX_ROOMS {
            break;
        }
        if app.rooms.room_version(&room_id).await?.is_none() {
            continue;
        }
        let mut entry = app.rooms.directory_entry(&room_id).await?;
        if room_id != *root && !accessible(&app, &room_id, user, &entry).await? {
            continue;
        }
        // Only a space has children; `m.space.child` in an ordinary room means nothing here.
        let children =
            if entry["room_type"] == "m.space" { children(&app, &room_id).await? } else { Vec::new() };
        let mut children_state = Vec::new();
        for child in children {
            if req.body.suggested_only && !child.suggested {
                continue;
            }
            children_state.push(child.event);
            if depth < max_depth && seen.insert(child.room_id.clone()) {
                queue.push_back((child.room_id, depth + 1));
            }
        }
        entry["children_state"] = json!(children_state);
        if let Some(allowed) = allowed_room_ids(&app, &room_id).await? {
            entry["allowed_room_ids"] = json!(allowed);
        }
        rooms.push(entry);
    }
    let more = rooms.len() > skip + limit;
    let page: Vec<Value> = rooms.into_iter().skip(skip).take(limit).collect();
    let mut body = json!({ "rooms": page });
    if more {
        body["next_batch"] = json!((skip + limit).to_string());
    }
    Ok(JsonBody(body))
}

/// The rooms a restricted room admits members of.
async fn allowed_room_ids(app: &App, room_id: &RoomId) -> Result<Option<Vec<String>>, Error> {
    let Some(rules) = app.rooms.current_state_event(room_id, "m.room.join_rules", "").await? else {
        return Ok(None);
    };
    let content = rules.content_value();
    if !matches!(content.get("join_rule").and_then(Value::as_str), Some("restricted" | "knock_restricted")) {
        return Ok(None);
    }
    Ok(Some(
        content
            .get("allow")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("room_id").and_then(Value::as_str).map(str::to_owned))
            .collect(),
    ))
}
