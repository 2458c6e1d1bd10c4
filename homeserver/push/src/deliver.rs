//! One pusher's delivery: the notifications after its cursor, in order, one at a time. Each is
//! sent (with the user's badge as it is now), or passed over when it no longer applies — the
//! event was redacted, its sender is ignored, or the user has read it meanwhile (a phone is
//! not woken for what was read on another device) — and only then does the cursor move past
//! it. A failing gateway is retried after a doubling delay, the notification given up on only
//! after [`Backoff::give_up_after`](crate::Backoff); the time it began to fail is stored, so a
//! restart does not reset that clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use homeserver_core::Error;
use homeserver_live::ignore::Ignored;
use homeserver_storage::{
    Db,
    notifications::NotificationRow,
    pushers::{PusherKey, PusherRow},
    receipts::read_up_to,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{
    Inner,
    gateway::Outcome,
    payload::{self, NotifiedEvent},
};

/// Notifications read per query.
const BATCH: i64 = 20;

/// What became of one notification.
enum Step {
    /// Sent: the cursor moves past it now.
    Sent,
    /// No longer applies (read, redacted, ignored sender, refused for good): the cursor moves
    /// past it with the next write.
    Skipped,
    /// The gateway says the pushkey is no longer valid: the pusher goes.
    Rejected,
    /// Not delivered now; try again later.
    Retry(String),
}

/// What one pass over a batch came to.
enum Pass {
    /// Nothing more is owed (or the pusher is gone).
    CaughtUp,
    /// A full batch was handled: there may be more.
    More,
    /// The gateway failed; retry after the delay.
    Failing(String),
}

/// Sends the pusher's notifications after its cursor, up to the stream's current position.
/// `reset` ends a retry delay early (the pusher was set again).
pub(crate) async fn catch_up(inner: &Inner, key: &PusherKey, reset: &Notify) -> Result<(), Error> {
    let mut delay = inner.backoff.initial;
    loop {
        let pass = {
            let _turn = inner.active.acquire().await.expect("the semaphore is never closed");
            one_pass(inner, key).await?
        };
        match pass {
            Pass::CaughtUp => return Ok(()),
            Pass::More => delay = inner.backoff.initial,
            Pass::Failing(why) => {
                warn!(user = %key.user_id, app_id = %key.app_id, reason = %why, retry_in_ms = delay.as_millis() as u64, "push gateway unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => delay = (delay * 2).min(inner.backoff.max),
                    _ = reset.notified() => delay = inner.backoff.initial,
                }
            }
        }
    }
}

/// One batch: read the pusher (it may have been deleted or set again) and what it is owed,
/// send it in order, and save how far it got.
async fn one_pass(inner: &Inner, key: &PusherKey) -> Result<Pass, Error> {
    let db = &inner.db;
    let Some(pusher) = db.pusher(key).await? else { return Ok(Pass::CaughtUp) };
    let now = inner.stream.current() as i64;
    let batch = db.notifications_after(&key.user_id, pusher.last_pos, now, BATCH).await?;
    let full = batch.len() as i64 == BATCH;
    let ignored = inner.live.ignore_lists.of(&key.user_id).await?;
    let mut badge = None;
    let mut handled = pusher.last_pos;
    for row in &batch {
        match send_one(inner, &pusher, row, &ignored, &mut badge).await? {
            Step::Sent => {
                handled = row.stream_pos;
                if !db.advance_pusher(key, handled).await? {
                    return Ok(Pass::CaughtUp);
                }
            }
            Step::Skipped => handled = row.stream_pos,
            Step::Rejected => {
                info!(user = %key.user_id, app_id = %key.app_id, "the push gateway rejected the pushkey: pusher removed");
                db.delete_pusher(key).await?;
                return Ok(Pass::CaughtUp);
            }
            Step::Retry(why) => {
                if handled > pusher.last_pos && !db.advance_pusher(key, handled).await? {
                    return Ok(Pass::CaughtUp);
                }
                // The failure clock runs per notification: a notification after the stored
                // cursor that already failed keeps its start; a later one starts now.
                let now_ms = now_millis();
                let since = match handled == pusher.last_pos {
                    true => pusher.failing_since.unwrap_or(now_ms),
                    false => now_ms,
                };
                if now_ms - since >= inner.backoff.give_up_after.as_millis() as i64 {
                    warn!(user = %key.user_id, app_id = %key.app_id, event = %row.event_id, reason = %why, "gave up pushing a notification");
                    db.advance_pusher(key, row.stream_pos).await?;
                    return Ok(Pass::More);
                }
                if handled != pusher.last_pos || pusher.failing_since.is_none() {
                    db.set_pusher_failing(key, since).await?;
                }
                return Ok(Pass::Failing(why));
            }
        }
    }
    // Everything up to `now` was read; unless the batch was cut short, nothing else is owed up
    // to there, so the cursor moves to `now` (later reads start past muted rooms' events).
    let up_to = if full { handled } else { now.max(handled) };
    if up_to > pusher.last_pos && !db.advance_pusher(key, up_to).await? {
        return Ok(Pass::CaughtUp);
    }
    Ok(if full { Pass::More } else { Pass::CaughtUp })
}

async fn send_one(
    inner: &Inner,
    pusher: &PusherRow,
    row: &NotificationRow,
    ignored: &Ignored,
    badge: &mut Option<u64>,
) -> Result<Step, Error> {
    let db = &inner.db;
    let user = pusher.user_id.as_str();
    let Some(event) = db.event(&row.event_id).await? else { return Ok(Step::Skipped) };
    if event.redacted_by.is_some() || ignored.contains(&event.sender) {
        return Ok(Step::Skipped);
    }
    let receipts = db.user_receipts(&row.room_id, user).await?;
    if row.stream_pos <= read_up_to(&receipts, row.thread_id.as_deref()) {
        return Ok(Step::Skipped);
    }
    let Some(url) = payload::url_of(pusher) else { return Ok(Step::Skipped) };
    let pdu: Value = serde_json::from_str(&event.json).unwrap_or_default();
    let mut notified = NotifiedEvent {
        event_id: event.event_id.clone(),
        room_id: event.room_id.clone(),
        event_type: event.event_type.clone(),
        sender: event.sender.clone(),
        state_key: event.state_key.clone(),
        content: pdu.get("content").filter(|c| c.is_object()).cloned().unwrap_or_else(|| json!({})),
        ..NotifiedEvent::default()
    };
    if !payload::event_id_only(pusher) {
        describe_room(db, &mut notified).await?;
    }
    // The badge as of now, once per batch: every notification of the batch is in it.
    let unread = match *badge {
        Some(unread) => unread,
        None => {
            let unread = count_badge(inner, user, ignored).await?;
            *badge = Some(unread);
            unread
        }
    };
    let actions: Value = serde_json::from_str(&row.actions).unwrap_or_default();
    let body = payload::notification(pusher, &notified, &actions, unread);
    Ok(match inner.gateways.notify(&url, &body).await {
        Outcome::Delivered { rejected } if rejected.contains(&pusher.pushkey) => Step::Rejected,
        Outcome::Delivered { .. } => Step::Sent,
        Outcome::Refused(status) => {
            warn!(user, app_id = %pusher.app_id, status, "the push gateway refused a notification; not retried");
            Step::Skipped
        }
        Outcome::Retry(why) => Step::Retry(why),
    })
}

/// Sends the user's badge alone (after they read something), once; a gateway that rejects
/// the pushkey removes the pusher.
pub(crate) async fn send_badge(inner: &Inner, key: &PusherKey) {
    let result = async {
        let Some(pusher) = inner.db.pusher(key).await? else { return Ok(()) };
        let Some(url) = payload::url_of(&pusher) else { return Ok(()) };
        let ignored = inner.live.ignore_lists.of(&key.user_id).await?;
        let unread = count_badge(inner, &key.user_id, &ignored).await?;
        let body = payload::badge(&pusher, unread);
        let _turn = inner.active.acquire().await.expect("the semaphore is never closed");
        if let Outcome::Delivered { rejected } = inner.gateways.notify(&url, &body).await
            && rejected.contains(&pusher.pushkey)
        {
            inner.db.delete_pusher(key).await?;
        }
        Ok::<(), Error>(())
    };
    if let Err(err) = result.await {
        warn!(user = %key.user_id, app_id = %key.app_id, error = %err, "could not push a badge");
    }
}

/// The sender's display name and the room's name and alias, from the room's current state.
async fn describe_room(db: &Db, notified: &mut NotifiedEvent) -> Result<(), Error> {
    let text = |content: Option<Value>, field: &str| {
        content.and_then(|c| c.get(field).and_then(Value::as_str).map(str::to_owned))
    };
    let room = notified.room_id.clone();
    let member = state_content(db, &room, "m.room.member", &notified.sender).await?;
    notified.sender_display_name = text(member, "displayname");
    notified.room_name = text(state_content(db, &room, "m.room.name", "").await?, "name");
    notified.room_alias = text(state_content(db, &room, "m.room.canonical_alias", "").await?, "alias");
    // A room without a name is shown by its alias (as Synapse names it in pushes).
    if notified.room_name.is_none() {
        notified.room_name = notified.room_alias.clone();
    }
    Ok(())
}

async fn state_content(
    db: &Db,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> Result<Option<Value>, Error> {
    let Some(id) = db.current_state_event_id(room_id, event_type, state_key).await? else { return Ok(None) };
    let Some(event) = db.event(&id).await? else { return Ok(None) };
    // A redacted name, alias or display name is gone: it never goes to a gateway.
    if event.redacted_by.is_some() {
        return Ok(None);
    }
    Ok(serde_json::from_str::<Value>(&event.json).ok().and_then(|v| v.get("content").cloned()))
}

/// The badge: how many rooms hold unread notifications of the user, plus their invites (as
/// Synapse counts by default). One query finds the rooms that may; the unread cache counts
/// those exactly, as of the stream's position now.
async fn count_badge(inner: &Inner, user: &str, ignored: &Ignored) -> Result<u64, Error> {
    let now = inner.stream.current() as i64;
    let mut rooms = inner.db.count_invites(user).await?.max(0) as u64;
    for (room_id, joined_at) in inner.db.rooms_with_unread_candidates(user).await? {
        let counts = inner.live.unread.counts(user, &room_id, joined_at, false, ignored, now).await?;
        rooms += u64::from(counts.main.0 > 0);
    }
    Ok(rooms)
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as i64
}
