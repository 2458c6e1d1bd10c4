//! The per-plugin dispatcher: follows the event stream from the plugin's persisted cursor,
//! offers each event the plugin's interest admits (`on-event`, or `on-command` for commands),
//! one at a time, so events reach it in stream order (and so in order per room). A failed
//! delivery is retried with doubling waits (a `rate-limited` error waits as long as it asks);
//! after the last attempt the event goes to the dead-letter list and the cursor moves on. The
//! cursor only moves past an event once it was delivered or dead-lettered, and is saved after
//! every batch, so after a restart nothing acknowledged is lost; what was delivered after the
//! last save is delivered again (at least once: `delivery.id` tells a plugin it saw it).
//! While the plugin is disabled or its breaker is open, events wait at the cursor. Due timers
//! are fired between events, at least once (a timer is removed only after `on-timer` succeeded).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use homeserver_core::{streams::StreamPos, time::now_millis};
use homeserver_storage::{events::EventRow, plugins::DeadLetterRow};

use crate::{
    bindings::{guest, types},
    host::event_to_wit,
    instance::CallError,
    interest::{Interest, Offer},
    plugin::{Call, Plugin, truncate},
};

/// Events read from the stream at a time.
const BATCH: i64 = 200;
/// After a failed timer, when it is tried again.
const TIMER_RETRY: Duration = Duration::from_secs(5);

pub(crate) async fn dispatch(plugin: Arc<Plugin>) {
    let ctx = plugin.ctx.clone();
    let db = &ctx.services.db;
    let stream = ctx.services.rooms.stream().clone();
    let mut advanced = stream.watch_current();
    let state = match db.plugin_state(&ctx.id, StreamPos::live(stream.current())).await {
        Ok(state) => state,
        Err(err) => {
            ctx.log("error", format!("cannot read the delivery cursor; not delivering: {err}"));
            return;
        }
    };
    let mut cursor = state.stream_pos;
    let mut saved = cursor;
    plugin.health.lock().expect("health poisoned").disabled = state.disabled;
    // The rooms of the plugin's users as of the cursor, not as of now: what it is offered next
    // follows their membership event by event from there.
    let joined = match db.plugin_joined_at(&ctx.id, cursor).await {
        // Only its users as the plugin knows them now (a renamed bot's old account is not).
        Ok(pairs) => pairs.into_iter().filter(|(_, user)| ctx.is_own(user)).collect::<Vec<_>>(),
        Err(err) => {
            ctx.log("error", format!("cannot read the plugin's rooms; not delivering: {err}"));
            return;
        }
    };
    let own_ctx = ctx.clone();
    let own: crate::interest::Own = Box::new(move |user: &str| own_ctx.is_own(user));
    let mut interest = Interest::new(ctx.user.to_string(), own, joined, commands(&plugin).await);
    if let Some(rooms) = &ctx.scope {
        interest = interest.within(rooms.iter().map(ToString::to_string));
    }
    loop {
        if stream.is_shutting_down() {
            return;
        }
        wait_until_callable(&plugin, &plugin.control).await;
        interest.set_commands(commands(&plugin).await);
        replay_dead_letters(&plugin, &mut interest).await;
        fire_due_timers(&plugin).await;
        let now = StreamPos::live(stream.current());
        if cursor < now {
            let batch_start = cursor;
            match db.stream_events(cursor, now, BATCH).await {
                Ok(rows) => {
                    let mut finished = true;
                    for row in &rows {
                        let offer = interest.offer(row);
                        if offer != Offer::Skip && !deliver(&plugin, row, offer).await {
                            finished = false;
                            break;
                        }
                        cursor = row.stream_pos;
                        plugin.health.lock().expect("health poisoned").cursor = cursor.get();
                        if stream.is_shutting_down() {
                            finished = false;
                            break;
                        }
                    }
                    // Past the last row only when the whole range was read and offered.
                    if finished && (rows.len() as i64) < BATCH {
                        cursor = cursor.max(now);
                    }
                    if cursor > batch_start {
                        crate::ephemeral::deliver_receipts(&plugin, &interest, batch_start, cursor).await;
                    }
                    if cursor != saved {
                        match db.set_plugin_cursor(&ctx.id, cursor).await {
                            Ok(()) => saved = cursor,
                            Err(err) => ctx.log("warn", format!("cannot save the delivery cursor: {err}")),
                        }
                    }
                }
                Err(err) => {
                    ctx.log("warn", format!("cannot read the event stream: {err}"));
                    tokio::time::sleep(plugin.settings.retry_base).await;
                }
            }
            continue;
        }
        let next_timer = next_timer_in(&plugin).await;
        tokio::select! {
            changed = advanced.changed() => if changed.is_err() { return },
            () = plugin.control.notified() => {}
            () = ctx.timers_changed.notified() => {}
            () = tokio::time::sleep(next_timer) => {}
        }
    }
}

/// The command words of the loaded version.
async fn commands(plugin: &Plugin) -> Vec<String> {
    plugin.slot.lock().await.as_ref().map(|s| s.registration.commands.clone()).unwrap_or_default()
}

/// Waits while the plugin is disabled or suspended by its breaker.
/// Waits while the plugin is disabled or suspended; `control` is the waiter's own wake-up
/// (`Plugin::wake` rings every waiter's).
pub(crate) async fn wait_until_callable(plugin: &Plugin, control: &tokio::sync::Notify) {
    loop {
        let disabled = plugin.health.lock().expect("health poisoned").disabled;
        let suspended = plugin.breaker.lock().expect("breaker poisoned").open_until(Instant::now());
        match (disabled, suspended) {
            (true, _) => control.notified().await,
            (false, Some(until)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    () = control.notified() => {}
                }
            }
            (false, None) => return,
        }
    }
}

/// Delivers one event, retrying until it is taken or dead-lettered; false only if the server
/// is shutting down before either (the event stays at the cursor).
async fn deliver(plugin: &Arc<Plugin>, row: &EventRow, offer: Offer) -> bool {
    let event = event_to_wit(row);
    let settings = &plugin.settings;
    let stream = plugin.ctx.services.rooms.stream();
    let mut attempt = 1u32;
    loop {
        wait_until_callable(plugin, &plugin.control).await;
        let delivery = types::Delivery { id: row.stream_pos.get() as u64, attempt };
        let call = match &offer {
            Offer::Command { name, args } => {
                let invocation =
                    guest::Invocation { event: event.clone(), name: name.clone(), args: args.clone() };
                Call::Command(invocation, delivery)
            }
            _ => Call::Event(event.clone(), delivery),
        };
        let error = match plugin.call(call).await {
            Ok(()) => {
                plugin.health.lock().expect("health poisoned").delivered += 1;
                return true;
            }
            Err(error) => error,
        };
        let message = truncate(error.describe());
        if !error.is_fatal() {
            plugin.ctx.log("warn", format!("{} (attempt {attempt}) failed: {message}", row.event_id));
            plugin.health.lock().expect("health poisoned").last_error = Some(message.clone());
        }
        if attempt >= settings.max_attempts {
            return dead_letter(plugin, row, attempt, &message).await;
        }
        let wait = match &error {
            CallError::Returned(types::Error::RateLimited(ms)) => Duration::from_millis(u64::from(*ms)),
            _ => settings.retry_base.saturating_mul(1 << (attempt - 1).min(16)),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = plugin.control.notified() => {}
        }
        if stream.is_shutting_down() {
            return false;
        }
        attempt += 1;
    }
}

/// Files the event as a dead letter; retried until the database takes it, since the cursor
/// moves past the event only once it is filed (false: the server is shutting down first).
async fn dead_letter(plugin: &Plugin, row: &EventRow, attempts: u32, error: &str) -> bool {
    let ctx = &plugin.ctx;
    ctx.log("error", format!("{} dead-lettered after {attempts} attempts: {error}", row.event_id));
    let letter = DeadLetterRow {
        stream_pos: row.stream_pos,
        event_id: row.event_id.clone(),
        room_id: row.room_id.clone(),
        attempts: i64::from(attempts),
        error: error.to_owned(),
        failed_ts: now_millis() as i64,
    };
    loop {
        match ctx.services.db.add_dead_letter(&ctx.id, &letter).await {
            Ok(()) => return true,
            Err(err) => ctx.log("error", format!("cannot file the dead letter for {}: {err}", row.event_id)),
        }
        if ctx.services.rooms.stream().is_shutting_down() {
            return false;
        }
        tokio::time::sleep(plugin.settings.retry_base.max(Duration::from_millis(100))).await;
    }
}

/// Delivers the dead letters the admin asked to replay (a replay is offered as it was first);
/// each leaves the list once delivered, or is filed again with its new error.
async fn replay_dead_letters(plugin: &Arc<Plugin>, interest: &mut Interest) {
    let ctx = &plugin.ctx;
    loop {
        let next = plugin.health.lock().expect("health poisoned").replays.pop_front();
        let Some(pos) = next else { return };
        match ctx.services.db.event_at(pos).await {
            Ok(Some(row)) => {
                let offer = match interest.classify(&row) {
                    Offer::Skip => Offer::Event,
                    offer => offer,
                };
                let delivered_before = plugin.health.lock().expect("health poisoned").delivered;
                if deliver(plugin, &row, offer).await
                    && plugin.health.lock().expect("health poisoned").delivered > delivered_before
                    && let Err(err) = ctx.services.db.remove_dead_letter(&ctx.id, pos).await
                {
                    ctx.log(
                        "warn",
                        format!("cannot remove the replayed dead letter at {}: {err}", pos.get()),
                    );
                }
            }
            Ok(None) => ctx.log("warn", format!("dead letter at {} is gone", pos.get())),
            Err(err) => ctx.log("warn", format!("cannot read dead letter at {}: {err}", pos.get())),
        }
    }
}

/// How long until the plugin's next timer (an hour when it has none).
async fn next_timer_in(plugin: &Plugin) -> Duration {
    let ctx = &plugin.ctx;
    match ctx.services.db.plugin_timers(&ctx.id, 1).await {
        Ok(timers) => timers
            .first()
            .map(|(_, due)| Duration::from_millis((*due - now_millis() as i64).max(0) as u64))
            .unwrap_or(Duration::from_secs(3600)),
        Err(_) => TIMER_RETRY,
    }
}

/// Fires every due timer.
async fn fire_due_timers(plugin: &Arc<Plugin>) {
    let ctx = &plugin.ctx;
    let db = &ctx.services.db;
    let Ok(timers) = db.plugin_timers(&ctx.id, 100).await else { return };
    let now = now_millis() as i64;
    for (tag, due) in timers.into_iter().filter(|(_, due)| *due <= now) {
        match plugin.call(Call::Timer(tag.clone())).await {
            Ok(()) => {
                let _ = db.remove_plugin_timer(&ctx.id, &tag, Some(due)).await;
            }
            Err(err) => {
                ctx.log("warn", format!("timer {tag} failed: {}", err.describe()));
                let retry = now_millis() as i64 + TIMER_RETRY.as_millis() as i64;
                let _ = db.set_plugin_timer(&ctx.id, &tag, retry).await;
            }
        }
    }
}
