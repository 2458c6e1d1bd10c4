//! `GET /sync`: initial and incremental sync over the global event stream, with long-polling.
//!
//! A token is a stream position (see `homeserver_core::token`): everything at or below it has been
//! delivered. An incremental sync returns what changed in `(since, now]`. A long-poll subscribes to
//! the user's wake-up channel *before* looking for data, then waits on it, so a commit between the
//! look and the wait still wakes it; there is no polling loop.
//!
//! Per room the response follows the spec: `timeline` holds the newest events of the window
//! (`limited` and `prev_batch` when older ones were cut), `state` the state at the start of the
//! timeline — all of it for rooms new to the client, only what changed since `since` for a
//! `limited` timeline, nothing otherwise — with `lazy_load_members` reducing member events to the
//! timeline's senders (each device gets a member event once, see [`lazy`]). A room is "new to the
//! client" when the user was not joined to it at `since` (a profile change is not a new join).

pub mod lazy;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use axum::Router;
use homeserver_core::{Error, streams::watermarks::Mark, token::StreamToken};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_rooms::format::{RoomIdField, Viewer};
use homeserver_storage::events::{Direction, EventRow, MembershipRow};
use ruma::{
    RoomId,
    api::client::{filter::FilterDefinition as RumaFilter, sync::sync_events},
};
use serde_json::{Map, Value, json};

use crate::{
    App,
    filter::{FilterDefinition, RoomEventFilter, parse_filter, resolve_filter},
    presence, receipts,
};
use homeserver_rooms::push::PUSH_RULES_TYPE;
use homeserver_storage::receipts::ReceiptRow;

/// How many batches a timeline read may scan looking for events that pass the filter.
const TIMELINE_SCAN_BATCHES: usize = 8;
/// Timeline length when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: u64 = 10;
/// Event types shown to invitees in `invite_state`.
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.topic",
];

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(sync)
}

/// Everything one sync computation needs to know.
struct SyncContext<'a> {
    app: &'a App,
    session: &'a Session,
    filter: FilterDefinition,
    since: Option<StreamToken>,
    now: i64,
    full_state: bool,
    /// Users whose events and invites this user ignores (`m.ignored_user_list`).
    ignored: crate::account_data::Ignored,
}

/// The ephemeral events of one room in this sync.
#[derive(Default)]
struct Ephemeral {
    /// Who is typing, when the client should be told (changed since `since`, or a new room).
    typing: Option<Vec<ruma::OwnedUserId>>,
    receipts: Vec<ReceiptRow>,
}

/// `GET /_matrix/client/v3/sync`
async fn sync(app: App, req: Ruma<sync_events::v3::Request>) -> Result<JsonBody, ApiError> {
    let session = &req.auth;
    let since = match req.body.since.as_deref() {
        Some(token) => {
            Some(token.parse::<StreamToken>().map_err(|_| Error::invalid_param("invalid since token"))?)
        }
        None => None,
    };
    let filter = match &req.body.filter {
        None => FilterDefinition::default(),
        Some(sync_events::v3::Filter::FilterId(id)) => {
            resolve_filter(&app, session.user_id.as_str(), id).await?
        }
        Some(sync_events::v3::Filter::FilterDefinition(def)) => inline_filter(def)?,
        Some(_) => FilterDefinition::default(),
    };
    let timeout =
        req.body.timeout.unwrap_or_default().min(Duration::from_millis(app.config.max_sync_timeout_ms));
    let deadline = tokio::time::Instant::now() + timeout;
    // The user counts as syncing (online) until this request ends.
    let _syncing = presence::on_sync(&app, &session.user_id, req.body.set_presence.as_str()).await?;
    let mut wake = app.stream.subscribe(&session.user_id);
    loop {
        wake.borrow_and_update();
        let now = app.stream.current() as i64;
        let ctx = SyncContext {
            app: &app,
            session,
            filter: filter.clone(),
            since: since.map(|s| StreamToken { pos: (s.pos as i64).min(now) as u64, ephemeral: s.ephemeral }),
            now,
            full_state: req.body.full_state,
            ignored: crate::account_data::ignored_users(&app, session.user_id.as_str()).await?,
        };
        let (body, has_data) = build_response(&ctx).await?;
        if has_data
            || since.is_none()
            || req.body.full_state
            || app.stream.is_shutting_down()
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(JsonBody(body));
        }
        match tokio::time::timeout_at(deadline, wake.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out (or the stream is shutting down): answer with an empty sync.
            _ => return Ok(JsonBody(build_response(&ctx).await?.0)),
        }
    }
}

fn inline_filter(def: &RumaFilter) -> Result<FilterDefinition, Error> {
    let json = serde_json::to_string(def).map_err(|e| Error::bad_json(e.to_string()))?;
    parse_filter(&json)
}

/// Builds the sync response; the flag says whether it carries anything new.
async fn build_response(ctx: &SyncContext<'_>) -> Result<(Value, bool), Error> {
    let app = ctx.app;
    let user = ctx.session.user_id.as_str();
    let since = ctx.since.map(|s| s.pos as i64).unwrap_or(0);
    let memberships = app.db.memberships_of_user(user).await.map_err(Error::from)?;
    let marks = app.stream.marks();
    let changed_rooms: HashSet<String> = if ctx.since.is_none() {
        HashSet::new()
    } else if marks.cover(since as u64) {
        // The room watermarks know which rooms had events since the token: no query.
        memberships
            .iter()
            .filter(|m| marks.changed_after(Mark::RoomEvents, &m.room_id, since as u64))
            .map(|m| m.room_id.clone())
            .collect()
    } else {
        app.db
            .rooms_changed_between(user, since, ctx.now)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    };
    let room_filter = &ctx.filter.room;

    if ctx.since.is_none() {
        app.lazy_members.reset(user, ctx.session.device_id.as_str());
    }
    let typing_serial = app.typing.serial();
    let ephemeral_since = ctx.since.map(|s| s.ephemeral).unwrap_or(0);
    // Receipts are read only for the rooms whose watermark says they may have new ones.
    let receipt_rooms: Vec<String> = memberships
        .iter()
        .filter(|m| m.membership == "join")
        .filter(|m| marks.changed_after(Mark::RoomReceipts, &m.room_id, since as u64))
        .map(|m| m.room_id.clone())
        .collect();
    let mut receipts_by_room: HashMap<String, Vec<ReceiptRow>> = HashMap::new();
    if !receipt_rooms.is_empty() {
        for r in app.db.receipts_between(&receipt_rooms, since, ctx.now).await.map_err(Error::from)? {
            receipts_by_room.entry(r.room_id.clone()).or_default().push(r);
        }
    }
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut knock = Map::new();
    let mut leave = Map::new();
    for m in &memberships {
        if !room_filter.allows_room(&m.room_id) || m.stream_pos > ctx.now {
            continue;
        }
        let Ok(room_id) = RoomId::parse(&m.room_id) else { continue };
        let changed_in_window = ctx.since.is_none() || m.stream_pos > since;
        match m.membership.as_str() {
            "join" => {
                // New to the client: initial sync, or not joined at `since` (a join, not a
                // profile change, happened in the window).
                let new_to_client = ctx.since.is_none()
                    || (changed_in_window
                        && membership_at(ctx, &room_id, since).await?.as_deref() != Some("join"));
                let (typing_users, room_serial) = app.typing.typing_in(&room_id);
                let ephemeral = Ephemeral {
                    typing: (room_serial > ephemeral_since || (new_to_client && !typing_users.is_empty()))
                        .then_some(typing_users),
                    receipts: receipts_by_room.remove(&m.room_id).unwrap_or_default(),
                };
                let ephemeral_changed = ephemeral.typing.is_some() || !ephemeral.receipts.is_empty();
                if !(new_to_client
                    || ctx.full_state
                    || ephemeral_changed
                    || changed_rooms.contains(&m.room_id))
                {
                    continue;
                }
                if let Some(room) = joined_room(ctx, &room_id, new_to_client, m.joined_pos, ephemeral).await?
                {
                    join.insert(m.room_id.clone(), room);
                }
            }
            "invite" if changed_in_window => {
                if let Some(room) = invited_room(ctx, &room_id, m).await? {
                    invite.insert(m.room_id.clone(), room);
                }
            }
            "knock" if changed_in_window => {
                knock.insert(m.room_id.clone(), knocked_room(ctx, &room_id, m).await?);
            }
            "leave" | "ban" if changed_in_window && !m.forgotten => {
                // Initial syncs show left rooms only when the filter asks for them.
                if ctx.since.is_none() && !room_filter.include_leave {
                    continue;
                }
                let new_to_client = ctx.since.is_none()
                    || !matches!(membership_at(ctx, &room_id, since).await?.as_deref(), Some("join"));
                if let Some(room) = left_room(ctx, &room_id, m, new_to_client).await? {
                    leave.insert(m.room_id.clone(), room);
                }
            }
            _ => {}
        }
    }

    let mut global_account_data = Vec::new();
    let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
    let account_data = if marks.changed_after(Mark::AccountData, user, since as u64) {
        app.db.account_data_since(user, since, ctx.now).await.map_err(Error::from)?
    } else {
        Vec::new()
    };
    for row in account_data {
        let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
        let event = json!({ "type": row.data_type, "content": content });
        if row.room_id.is_empty() {
            if ctx.filter.account_data.allows(&row.data_type, user) {
                global_account_data.push(event);
            }
        } else if room_filter.account_data.allows(&row.data_type, user) {
            room_account_data.entry(row.room_id).or_default().push(event);
        }
    }
    for (room_id, events) in room_account_data {
        let section = if join.contains_key(&room_id) {
            &mut join
        } else if leave.contains_key(&room_id) {
            &mut leave
        } else if memberships.iter().any(|m| m.room_id == room_id && m.membership == "join") {
            join.insert(room_id.clone(), empty_joined_room());
            &mut join
        } else {
            continue;
        };
        if let Some(room) = section.get_mut(&room_id) {
            room["account_data"] = json!({ "events": events });
        }
    }

    if ctx.since.is_none()
        && !global_account_data.iter().any(|e| e["type"] == PUSH_RULES_TYPE)
        && ctx.filter.account_data.allows(PUSH_RULES_TYPE, user)
    {
        // Clients expect their push rules from the first sync, default ones included.
        let rules = ruma::push::Ruleset::server_default(&ctx.session.user_id);
        global_account_data.push(json!({ "type": PUSH_RULES_TYPE, "content": { "global": rules } }));
    }
    let presence = presence_events(ctx, since).await?;

    let has_data = !join.is_empty()
        || !invite.is_empty()
        || !knock.is_empty()
        || !leave.is_empty()
        || !global_account_data.is_empty()
        || !presence.is_empty();
    let next_batch = StreamToken { pos: ctx.now as u64, ephemeral: typing_serial };
    let body = json!({
        "next_batch": next_batch.to_string(),
        "rooms": { "join": join, "invite": invite, "knock": knock, "leave": leave },
        "account_data": { "events": global_account_data },
        "presence": { "events": presence },
    });
    Ok((body, has_data))
}

/// Presence of the user and the people they share rooms with, changed since `since`.
async fn presence_events(ctx: &SyncContext<'_>, since: i64) -> Result<Vec<Value>, Error> {
    let app = ctx.app;
    if !app.presence.enabled
        || !ctx.filter.presence.allows("m.presence", "")
        || !app.presence.changed_since(since)
    {
        return Ok(Vec::new());
    }
    let now = homeserver_core::time::now_millis() as i64;
    let user = ctx.session.user_id.as_str();
    Ok(app
        .db
        .presence_of_room_mates(user, since, ctx.now)
        .await
        .map_err(Error::from)?
        .iter()
        .filter(|p| !ctx.ignored.contains(&p.user_id))
        .filter(|p| ctx.filter.presence.allows("m.presence", &p.user_id))
        .map(|p| presence::presence_event(p, now))
        .collect())
}

/// The user's membership in a room as of stream position `pos` (None if they had none).
async fn membership_at(ctx: &SyncContext<'_>, room_id: &RoomId, pos: i64) -> Result<Option<String>, Error> {
    // The room's current state then, not the newest event's own (which may sit on a fork that
    // resolution set aside).
    let group = ctx.app.db.current_state_group_at(room_id.as_str(), pos).await.map_err(Error::from)?;
    let Some(event_id) =
        ctx.app.rooms.state_entry(group, "m.room.member", ctx.session.user_id.as_str()).await?
    else {
        return Ok(None);
    };
    let Ok(event_id) = ruma::EventId::parse(event_id) else { return Ok(None) };
    Ok(ctx.app.rooms.cache().get(&event_id).await?.and_then(|pdu| pdu.content_str("membership")))
}

fn empty_joined_room() -> Value {
    json!({
        "timeline": { "events": [], "limited": false },
        "state": { "events": [] },
        "account_data": { "events": [] },
        "ephemeral": { "events": [] },
        "unread_notifications": {},
    })
}

fn viewer<'a>(ctx: &'a SyncContext<'_>) -> Viewer<'a> {
    Viewer { user_id: ctx.session.user_id.as_str(), device_id: Some(ctx.session.device_id.as_str()) }
}

/// The timeline window `(after, up_to]` of a room: newest `limit` events, oldest first.
struct Timeline {
    rows: Vec<EventRow>,
    limited: bool,
}

async fn timeline(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    after: i64,
    up_to: i64,
    filter: &RoomEventFilter,
) -> Result<Timeline, Error> {
    let limit = filter.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).min(1000) as usize;
    // Read backwards in batches until `limit + 1` events pass the filter (one more than shown
    // tells whether the timeline is limited), the window is exhausted, or the scan budget is
    // spent — a filter that matches little must not turn one sync into a full-history scan.
    let batch = ((limit + 1) * 2).min(500) as i64;
    let mut collected = Vec::with_capacity(limit + 1);
    let mut cursor = up_to;
    let mut exhausted = false;
    for _ in 0..TIMELINE_SCAN_BATCHES {
        let rows = ctx
            .app
            .db
            .room_events(room_id.as_str(), cursor, Some(after), Direction::Backward, batch)
            .await
            .map_err(Error::from)?;
        exhausted = (rows.len() as i64) < batch;
        if let Some(last) = rows.last() {
            cursor = last.stream_pos - 1;
        }
        collected.extend(rows.into_iter().filter(|r| filter.allows_row(r)));
        if collected.len() > limit || exhausted {
            break;
        }
    }
    let limited = collected.len() > limit || !exhausted;
    collected.truncate(limit);
    collected.reverse();
    collected.retain(|r| !ctx.ignored.hides(r));
    let rows = ctx.app.rooms.filter_visible(&ctx.session.user_id, collected).await?;
    Ok(Timeline { rows, limited })
}

/// The state section: full state at `group` (fresh rooms), or the state the client lacks: what
/// changed between the current state at `since` and at the timeline's start, plus changes
/// within the timeline's range that none of its events carries (a merge of forks can bring an
/// older state event back). Key removals cannot be expressed in a sync response and are not
/// sent.
async fn state_section(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    timeline: &Timeline,
    start_group: i64,
    fresh: bool,
    (since, up_to): (i64, i64),
) -> Result<Vec<EventRow>, Error> {
    let db = &ctx.app.db;
    let state_filter = &ctx.filter.room.state;
    let mut rows = if fresh {
        let entries = ctx.app.rooms.state_at_group(start_group).await?;
        let ids: Vec<String> = entries.into_iter().map(|(_, _, id)| id).collect();
        db.events(&ids).await.map_err(Error::from)?
    } else {
        let since_group = db.current_state_group_at(room_id.as_str(), since).await.map_err(Error::from)?;
        // One event per key: what the client lacks at the timeline's start, replaced by what a
        // merge within the timeline's range set the key to at its end.
        let mut by_key: HashMap<(String, String), String> = HashMap::new();
        for (ty, key, id) in ctx.app.rooms.state_diff(since_group, start_group).await? {
            if let Some(id) = id {
                by_key.insert((ty, key), id);
            }
        }
        let end_group = db.current_state_group_at(room_id.as_str(), up_to).await.map_err(Error::from)?;
        if end_group != start_group {
            for (ty, key, id) in ctx.app.rooms.state_diff(start_group, end_group).await? {
                // A key the timeline's own events end on needs nothing more.
                let last_in_timeline = timeline
                    .rows
                    .iter()
                    .rev()
                    .find(|r| r.event_type == ty && r.state_key.as_deref() == Some(key.as_str()))
                    .map(|r| r.event_id.clone());
                match id {
                    Some(id) if last_in_timeline.as_deref() != Some(id.as_str()) => {
                        by_key.insert((ty, key), id);
                    }
                    _ => {}
                }
            }
        }
        let ids: Vec<String> = by_key.into_values().collect();
        db.events(&ids).await.map_err(Error::from)?
    };
    if state_filter.lazy_load_members {
        let lazy = &ctx.app.lazy_members;
        let (user, device) = (ctx.session.user_id.as_str(), ctx.session.device_id.as_str());
        let mut wanted: Vec<&str> = timeline.rows.iter().map(|r| r.sender.as_str()).collect();
        if fresh {
            wanted.push(user);
        }
        let in_timeline: Vec<&str> = timeline
            .rows
            .iter()
            .filter(|r| r.event_type == "m.room.member")
            .filter_map(|r| r.state_key.as_deref())
            .collect();
        rows.retain(|r| {
            r.event_type != "m.room.member"
                || r.state_key.as_deref().is_some_and(|k| wanted.contains(&k) && !in_timeline.contains(&k))
        });
        if !fresh && !timeline.rows.is_empty() {
            // Members of timeline senders the client may not know yet.
            let mut missing: Vec<String> = Vec::new();
            for sender in &wanted {
                if in_timeline.contains(sender)
                    || rows.iter().any(|r| r.state_key.as_deref() == Some(*sender))
                {
                    continue;
                }
                if let Some(id) = ctx.app.rooms.state_entry(start_group, "m.room.member", sender).await? {
                    missing.push(id);
                }
            }
            rows.extend(db.events(&missing).await.map_err(Error::from)?);
        }
        if !state_filter.include_redundant_members {
            rows.retain(|r| {
                r.event_type != "m.room.member" || !lazy.was_sent(user, device, room_id.as_str(), &r.event_id)
            });
        }
        let sent = rows
            .iter()
            .chain(timeline.rows.iter())
            .filter(|r| r.event_type == "m.room.member")
            .map(|r| r.event_id.clone());
        lazy.mark_sent(user, device, room_id.as_str(), sent.collect::<Vec<_>>());
    }
    rows.retain(|r| state_filter.allows_row(r));
    rows.sort_by_key(|r| r.stream_pos);
    Ok(rows)
}

/// The room's current state group at the start of a timeline (just before its first event,
/// or at `up_to` if it is empty).
async fn start_group(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    timeline: &Timeline,
    up_to: i64,
) -> Result<i64, Error> {
    let at = timeline.rows.first().map_or(up_to, |first| first.stream_pos - 1);
    ctx.app.db.current_state_group_at(room_id.as_str(), at).await.map_err(Error::from)
}

async fn summary(ctx: &SyncContext<'_>, room_id: &RoomId) -> Result<Value, Error> {
    let db = &ctx.app.db;
    let joined = db.room_members(room_id.as_str(), "join").await.map_err(Error::from)?;
    let invited = db.room_members(room_id.as_str(), "invite").await.map_err(Error::from)?;
    let me = ctx.session.user_id.as_str();
    let mut summary = json!({
        "m.joined_member_count": joined.len(),
        "m.invited_member_count": invited.len(),
    });
    // Heroes name a room that has no name or canonical alias of its own.
    let named = ctx.app.rooms.current_state_event(room_id, "m.room.name", "").await?.is_some()
        || ctx.app.rooms.current_state_event(room_id, "m.room.canonical_alias", "").await?.is_some();
    if !named {
        let heroes: Vec<&String> =
            joined.iter().chain(invited.iter()).filter(|u| u.as_str() != me).take(5).collect();
        summary["m.heroes"] = json!(heroes);
    }
    Ok(summary)
}

/// `prev_batch` of a timeline: just before its first event, or at `up_to` when it is empty.
fn prev_batch(tl: &Timeline, up_to: i64) -> String {
    let pos = tl.rows.first().map(|r| r.stream_pos - 1).unwrap_or(up_to);
    StreamToken::new(pos.max(0) as u64).to_string()
}

/// A joined room's section. `new_to_client`: the user was not joined at `since` (or this is an
/// initial sync), so the client gets the room's whole state and a timeline from its history.
/// A joined room's section. `joined_at` is where the user's stay began: unread counts start
/// there when the user has no receipt yet (their own invite does not count).
async fn joined_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    new_to_client: bool,
    joined_at: i64,
    ephemeral: Ephemeral,
) -> Result<Option<Value>, Error> {
    let up_to = ctx.now;
    let since = ctx.since.map(|s| s.pos as i64).unwrap_or(0);
    let timeline_from = if new_to_client { 0 } else { since };
    let full_state = new_to_client || ctx.full_state;
    let timeline_filter = &ctx.filter.room.timeline;
    let mut tl = timeline(ctx, room_id, timeline_from, up_to, timeline_filter).await?;
    // A room joined since the last sync has history the client has not seen (as Synapse says).
    tl.limited |= new_to_client && ctx.since.is_some();
    let group = start_group(ctx, room_id, &tl, up_to).await?;
    let state = state_section(ctx, room_id, &tl, group, full_state, (since, up_to)).await?;
    let ephemeral_events = ephemeral_events(ctx, ephemeral);
    if !full_state && tl.rows.is_empty() && state.is_empty() && ephemeral_events.is_empty() {
        return Ok(None);
    }
    let app = ctx.app;
    let v = Some(viewer(ctx));
    let members_changed =
        full_state || tl.rows.iter().chain(state.iter()).any(|r| r.event_type == "m.room.member");
    let mut room = empty_joined_room();
    room["timeline"] = json!({
        "events": app.rooms.client_events(&tl.rows, v, RoomIdField::Omit).await?,
        "limited": tl.limited,
        "prev_batch": prev_batch(&tl, up_to),
    });
    room["state"] = json!({ "events": app.rooms.client_events(&state, v, RoomIdField::Omit).await? });
    room["ephemeral"] = json!({ "events": ephemeral_events });
    let per_thread = ctx.filter.room.timeline.unread_thread_notifications;
    let user = ctx.session.user_id.as_str();
    let counts = crate::unread::unread_counts(
        app,
        user,
        room_id.as_str(),
        joined_at,
        per_thread,
        &ctx.ignored,
        ctx.now,
    )
    .await?;
    room["unread_notifications"] =
        json!({ "notification_count": counts.main.0, "highlight_count": counts.main.1 });
    if per_thread {
        let threads: Map<String, Value> = counts
            .threads
            .into_iter()
            .map(|(t, n, h)| (t, json!({ "notification_count": n, "highlight_count": h })))
            .collect();
        room["unread_thread_notifications"] = Value::Object(threads);
    }
    if members_changed {
        room["summary"] = summary(ctx, room_id).await?;
    }
    Ok(Some(room))
}

/// The typing and receipt events a room's section carries, as the ephemeral filter allows.
fn ephemeral_events(ctx: &SyncContext<'_>, ephemeral: Ephemeral) -> Vec<Value> {
    let filter = &ctx.filter.room.ephemeral;
    let mut events = Vec::new();
    if let Some(users) = ephemeral.typing
        && filter.allows("m.typing", "")
    {
        let users: Vec<_> = users.into_iter().filter(|u| !ctx.ignored.contains(u.as_str())).collect();
        events.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
    }
    let receipts: Vec<ReceiptRow> =
        ephemeral.receipts.into_iter().filter(|r| !ctx.ignored.contains(&r.user_id)).collect();
    if filter.allows("m.receipt", "")
        && let Some(event) = receipts::receipt_event(&receipts, ctx.session.user_id.as_str())
    {
        events.push(event);
    }
    events
}

/// The room summary an invitee or knocker sees before joining: name, topic, join rules and such.
async fn stripped_state(ctx: &SyncContext<'_>, room_id: &RoomId) -> Result<Vec<Value>, Error> {
    let mut events = Vec::new();
    for ty in STRIPPED_STATE_TYPES {
        if let Some(pdu) = ctx.app.rooms.current_state_event(room_id, ty, "").await? {
            events.push(json!({
                "type": pdu.kind.to_string(),
                "state_key": pdu.state_key,
                "content": pdu.content_value(),
                "sender": pdu.sender,
            }));
        }
    }
    Ok(events)
}

/// A room the user knocked on: its stripped state and the knock itself.
async fn knocked_room(ctx: &SyncContext<'_>, room_id: &RoomId, m: &MembershipRow) -> Result<Value, Error> {
    let mut events = stripped_state(ctx, room_id).await?;
    if let Some(row) = ctx.app.db.event(&m.event_id).await.map_err(Error::from)? {
        let mut knock_event = ctx.app.rooms.client_event(&row, Some(viewer(ctx)), RoomIdField::Omit).await?;
        if let Some(obj) = knock_event.as_object_mut() {
            obj.remove("unsigned");
        }
        events.push(knock_event);
    }
    Ok(json!({ "knock_state": { "events": events } }))
}

async fn invited_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    m: &MembershipRow,
) -> Result<Option<Value>, Error> {
    let app = ctx.app;
    if let Some(invite) = app.db.event(&m.event_id).await.map_err(Error::from)?
        && ctx.ignored.contains(&invite.sender)
    {
        // Invites from ignored users are not shown at all.
        return Ok(None);
    }
    let mut events = stripped_state(ctx, room_id).await?;
    if let Some(row) = app.db.event(&m.event_id).await.map_err(Error::from)? {
        if let Ok(sender) = ruma::UserId::parse(&row.sender)
            && let Some(inviter) =
                app.rooms.current_state_event(room_id, "m.room.member", sender.as_str()).await?
        {
            events.push(json!({
                "type": "m.room.member",
                "state_key": inviter.state_key,
                "content": inviter.content_value(),
                "sender": inviter.sender,
            }));
        }
        let mut invite_event = app.rooms.client_event(&row, Some(viewer(ctx)), RoomIdField::Omit).await?;
        if let Some(obj) = invite_event.as_object_mut() {
            obj.remove("unsigned");
        }
        events.push(invite_event);
    }
    Ok(Some(json!({ "invite_state": { "events": events } })))
}

/// A left room's section: the timeline up to the departure; full state if the room is new to
/// the client (e.g. joined and left within the window).
async fn left_room(
    ctx: &SyncContext<'_>,
    room_id: &RoomId,
    m: &MembershipRow,
    new_to_client: bool,
) -> Result<Option<Value>, Error> {
    let since = ctx.since.map(|s| s.pos as i64).unwrap_or(0);
    let timeline_filter = &ctx.filter.room.timeline;
    let tl = timeline(ctx, room_id, since, m.stream_pos, timeline_filter).await?;
    let group = start_group(ctx, room_id, &tl, m.stream_pos).await?;
    let full_state = new_to_client || ctx.full_state;
    // The room's state only if the user could see the room where the timeline starts: someone
    // who only rejected an invite or withdrew a knock sees their own event, not the members.
    let user = &ctx.session.user_id;
    let may_read = ctx.app.rooms.may_read_state_at(user, room_id, group).await?
        || match ctx.app.db.event(&m.event_id).await.map_err(Error::from)? {
            Some(departure) => ctx.app.rooms.may_read_state_around(user, room_id, &departure).await?,
            None => false,
        };
    let state = match may_read {
        true => state_section(ctx, room_id, &tl, group, full_state, (since, m.stream_pos)).await?,
        false => Vec::new(),
    };
    let v = Some(viewer(ctx));
    Ok(Some(json!({
        "timeline": {
            "events": ctx.app.rooms.client_events(&tl.rows, v, RoomIdField::Omit).await?,
            "limited": tl.limited,
            "prev_batch": prev_batch(&tl, m.stream_pos),
        },
        "state": { "events": ctx.app.rooms.client_events(&state, v, RoomIdField::Omit).await? },
        "account_data": { "events": [] },
    })))
}
