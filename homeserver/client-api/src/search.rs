//! `POST /search`: full-text search over the `room_events` category — message bodies, room names
//! and topics in the rooms the user is joined to, only events they may see, ranked or newest
//! first, with optional context, room state and groupings. The index is SQLite FTS5 or
//! PostgreSQL's GIN `tsvector` (see `homeserver-storage::search`); CJK text is tokenised into
//! characters and bigrams (`homeserver-core::text`) so 你好 finds 你好世界.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::Router;
use homeserver_core::{Error, text::query_tokens};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_rooms::format::RoomIdField;
use homeserver_storage::{
    events::{Bound, Direction, EventRow, TopoPos},
    search::{SearchOrder, SearchQuery},
};
use ruma::{RoomId, api::client::search::search_events};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use homeserver_sync::filter::RoomEventFilter;

use crate::{App, events::viewer};

/// Results per page when the filter gives no limit, and the most one page holds.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
/// Most index pages one request reads looking for visible hits; past that the client gets what
/// was found and a `next_batch` to go on from, so a search full of hidden hits stays bounded.
const MAX_PASSES: usize = 8;
/// Most context events on either side of a result.
const MAX_CONTEXT: u64 = 50;
/// The searchable keys, and the default when the request names none.
const ALL_KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(search)
}

#[derive(Deserialize)]
struct SearchBody {
    search_categories: Categories,
}

#[derive(Deserialize)]
struct Categories {
    room_events: Option<Criteria>,
}

#[derive(Deserialize)]
struct Criteria {
    search_term: String,
    keys: Option<Vec<String>>,
    #[serde(default)]
    filter: RoomEventFilter,
    order_by: Option<String>,
    event_context: Option<ContextSpec>,
    #[serde(default)]
    include_state: bool,
    #[serde(default)]
    groupings: Groupings,
}

#[derive(Deserialize)]
struct ContextSpec {
    #[serde(default = "five")]
    before_limit: u64,
    #[serde(default = "five")]
    after_limit: u64,
    #[serde(default)]
    include_profile: bool,
}

fn five() -> u64 {
    5
}

#[derive(Deserialize, Default)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<GroupBy>,
}

#[derive(Deserialize)]
struct GroupBy {
    key: Option<String>,
}

/// `next_batch` tokens: how many hits earlier pages consumed.
fn parse_batch(token: &str) -> Result<i64, Error> {
    token
        .strip_prefix('o')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::invalid_param("invalid next_batch token"))
}

/// `POST /_matrix/client/v3/search`
async fn search(app: App, req: Ruma<search_events::v3::Request>) -> Result<JsonBody, ApiError> {
    let body: SearchBody =
        serde_json::from_slice(&req.raw_body).map_err(|e| Error::bad_json(format!("invalid search: {e}")))?;
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(JsonBody(json!({ "search_categories": {} })));
    };
    let offset = req.body.next_batch.as_deref().map(parse_batch).transpose()?.unwrap_or(0);
    Ok(JsonBody(json!({
        "search_categories": { "room_events": room_events(&app, &req.auth, criteria, offset).await? }
    })))
}

async fn room_events(app: &App, session: &Session, criteria: Criteria, offset: i64) -> Result<Value, Error> {
    let keys = match &criteria.keys {
        Some(keys) => {
            if let Some(bad) = keys.iter().find(|k| !ALL_KEYS.contains(&k.as_str())) {
                return Err(Error::invalid_param(format!("unknown search key {bad}")));
            }
            keys.clone()
        }
        None => ALL_KEYS.iter().map(|k| k.to_string()).collect(),
    };
    let order = match criteria.order_by.as_deref() {
        None | Some("rank") => SearchOrder::Rank,
        Some("recent") => SearchOrder::Recent,
        Some(other) => return Err(Error::invalid_param(format!("unknown order_by {other}"))),
    };
    let filter = &criteria.filter;
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as i64;
    // Only rooms the user is in now: leaving a room takes it out of their search.
    let rooms: Vec<String> = app
        .db
        .memberships_of_user(session.user_id.as_str())
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|m| {
            m.membership == ruma::events::room::member::MembershipState::Join
                && filter.allows_room(m.room_id.as_str())
        })
        .map(|m| m.room_id.to_string())
        .collect();
    let tokens = query_tokens(&criteria.search_term);
    let ignored = app.live.ignore_lists.of(session.user_id.as_str()).await?;

    // Hits the filter or visibility drop are skipped; keep fetching until the page is full.
    let mut results: Vec<(f64, EventRow)> = Vec::new();
    let mut consumed = offset;
    let mut count = None;
    let mut exhausted = false;
    let mut passes = 0;
    // Hits the user may not see (before they could see history, between a leave and a rejoin)
    // are neither returned nor counted.
    let visible = app.rooms.visible_set(&session.user_id, rooms.iter().map(String::as_str)).await?;
    let query = SearchQuery { rooms: &rooms, keys: &keys, tokens: &tokens, order, visible: &visible };
    while (results.len() as i64) < limit && !exhausted && passes < MAX_PASSES {
        passes += 1;
        let (hits, total) =
            app.db.search_events(&query, limit, consumed, count.is_none()).await.map_err(Error::from)?;
        let total = *count.get_or_insert(total.unwrap_or(0));
        exhausted = consumed + (hits.len() as i64) >= total || hits.is_empty();
        let ranks: HashMap<i64, f64> = hits.iter().map(|h| (h.stream_pos, h.rank)).collect();
        let mut rows = app
            .db
            .events_at(&hits.iter().map(|h| h.stream_pos).collect::<Vec<_>>())
            .await
            .map_err(Error::from)?;
        // Keep the hit order, and consume only as many hits as end up needed for this page.
        let order_of: HashMap<i64, usize> = hits.iter().enumerate().map(|(i, h)| (h.stream_pos, i)).collect();
        rows.sort_by_key(|r| order_of.get(&r.stream_pos.get()).copied().unwrap_or(usize::MAX));
        rows.retain(|r| filter.allows_row(r) && !ignored.hides(r));
        let visible = app.rooms.filter_visible(&session.user_id, rows).await?;
        let mut used = hits.len();
        for row in visible {
            if results.len() == limit as usize {
                used = order_of[&row.stream_pos.get()];
                break;
            }
            results.push((ranks[&row.stream_pos.get()], row));
        }
        consumed += used as i64;
    }
    let count = count.unwrap_or(0);
    let next_batch = (!exhausted || consumed < count).then(|| format!("o{consumed}"));

    let v = Some(viewer(session));
    let rows: Vec<EventRow> = results.iter().map(|(_, r)| r.clone()).collect();
    let formatted = app.rooms.client_events(&rows, v, RoomIdField::Include).await?;
    let mut out_results = Vec::with_capacity(rows.len());
    for ((rank, row), event) in results.iter().zip(formatted) {
        let mut result = json!({ "rank": rank, "result": event });
        if let Some(spec) = &criteria.event_context {
            result["context"] = context(app, session, row, spec, &ignored).await?;
        }
        out_results.push(result);
    }

    let mut body = json!({
        "count": count,
        "results": out_results,
        "highlights": highlights(&criteria.search_term),
    });
    if let Some(next) = &next_batch {
        body["next_batch"] = json!(next);
    }
    if criteria.include_state {
        let mut state = Map::new();
        let result_rooms: BTreeMap<&str, ()> = rows.iter().map(|r| (r.room_id.as_str(), ())).collect();
        for room in result_rooms.keys() {
            let room_id = RoomId::parse(*room).map_err(|e| Error::internal(e.to_string()))?;
            let entries = app.rooms.current_state_ids(&room_id).await?;
            let ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
            let mut state_rows = app.db.events(&ids).await.map_err(Error::from)?;
            state_rows.sort_by_key(|r| r.stream_pos);
            state.insert(
                room.to_string(),
                json!(app.rooms.client_events(&state_rows, v, RoomIdField::Include).await?),
            );
        }
        body["state"] = Value::Object(state);
    }
    let groups = groups(&criteria.groupings, &rows, next_batch.as_deref());
    if !groups.is_empty() {
        body["groups"] = Value::Object(groups);
    }
    Ok(body)
}

/// The words to highlight in results: the search term's words, lower-cased.
fn highlights(term: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    term.split_whitespace().map(str::to_lowercase).filter(|w| seen.insert(w.clone())).collect()
}

/// Results grouped by room or sender, in result order.
fn groups(groupings: &Groupings, rows: &[EventRow], next_batch: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    for group_by in &groupings.group_by {
        let Some(key) = group_by.key.as_deref() else { continue };
        let pick: fn(&EventRow) -> &str = match key {
            "room_id" => |r| r.room_id.as_str(),
            "sender" => |r| r.sender.as_str(),
            _ => continue,
        };
        let mut grouped: Map<String, Value> = Map::new();
        for row in rows {
            let order = grouped.len();
            let entry = grouped
                .entry(pick(row).to_owned())
                .or_insert_with(|| json!({ "results": [], "order": order + 1 }));
            entry["results"].as_array_mut().expect("results array").push(json!(row.event_id));
            if let Some(next) = next_batch {
                entry["next_batch"] = json!(next);
            }
        }
        out.insert(key.to_owned(), Value::Object(grouped));
    }
    out
}

/// The events around one result, and optionally the profiles of their senders.
async fn context(
    app: &App,
    session: &Session,
    row: &EventRow,
    spec: &ContextSpec,
    ignored: &homeserver_live::ignore::Ignored,
) -> Result<Value, Error> {
    let before_limit = spec.before_limit.min(MAX_CONTEXT) as i64;
    let after_limit = spec.after_limit.min(MAX_CONTEXT) as i64;
    let load = |from: TopoPos, dir: Direction, limit: i64| async move {
        if limit == 0 {
            return Ok::<_, Error>(Vec::new());
        }
        let mut rows =
            app.db.room_page(&row.room_id, Bound::Topo(from), None, dir, limit).await.map_err(Error::from)?;
        rows.retain(|r| !ignored.hides(r));
        app.rooms.filter_visible(&session.user_id, rows).await
    };
    let before = load(row.topo_before(), Direction::Backward, before_limit).await?;
    let after = load(row.topo(), Direction::Forward, after_limit).await?;
    let v = Some(viewer(session));
    let mut context = json!({
        "start": crate::paging::before(before.last().unwrap_or(row)),
        "end": crate::paging::after(after.last().unwrap_or(row)),
        "events_before": app.rooms.client_events(&before, v, RoomIdField::Include).await?,
        "events_after": app.rooms.client_events(&after, v, RoomIdField::Include).await?,
    });
    if spec.include_profile {
        let mut senders: Vec<&str> =
            before.iter().chain(after.iter()).chain([row]).map(|r| r.sender.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut ids = Vec::new();
        for sender in &senders {
            if let Some(id) = app.rooms.state_entry(row.state_after, "m.room.member", sender).await? {
                ids.push(id);
            }
        }
        let mut profiles = Map::new();
        for member in app.db.events(&ids).await.map_err(Error::from)? {
            let content = serde_json::from_str::<Value>(&member.json)
                .ok()
                .and_then(|v| v.get("content").cloned())
                .unwrap_or_default();
            if let Some(user) = member.state_key {
                let mut profile = Map::new();
                for field in ["displayname", "avatar_url"] {
                    if let Some(value) = content.get(field).filter(|v| v.is_string()) {
                        profile.insert(field.to_owned(), value.clone());
                    }
                }
                profiles.insert(user, Value::Object(profile));
            }
        }
        context["profile_info"] = Value::Object(profiles);
    }
    Ok(context)
}
