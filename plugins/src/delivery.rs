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
    manager::Plugin,
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
    plugin.health.lock().expect("health poisoned").disabled = state.disabled;
    let joined = match db.memberships_of_user(ctx.user.as_str()).await {
        Ok(rows) => {
            rows.into_iter().filter(|m| m.membership.as_str() == "join").map(|m| m.room_id.to_string())
        }
        Err(err) => {
            ctx.log("error", format!("cannot read the bot's rooms; not delivering: {err}"));
            return;
        }
    };
    let commands =
        plugin.slot.lock().await.as_ref().map(|s| s.registration.commands.clone()).unwrap_or_default();
    let mut interest = Interest::new(ctx.user.to_string(), joined.collect::<Vec<_>>(), commands);
    loop {
        if stream.is_shutting_down() {
            return;
        }
        wait_until_callable(&plugin).await;
        let commands =
            plugin.slot.lock().await.as_ref().map(|s| s.registration.commands.clone()).unwrap_or_default();
        interest.set_commands(commands);
        replay_dead_letters(&plugin, &mut interest).await;
        fire_due_timers(&plugin).await;
        let now = StreamPos::live(stream.current());
        if cursor < now {
            match db.stream_events(cursor, now, BATCH).await {
                Ok(rows) => {
                    for row in &rows {
                        let offer = interest.offer(row);
                        if offer != Offer::Skip {
                            deliver(&plugin, row, offer).await;
                        }
                        cursor = row.stream_pos;
                        plugin.health.lock().expect("health poisoned").cursor = cursor.get();
                        if stream.is_shutting_down() {
                            break;
                        }
                    }
                    if (rows.len() as i64) < BATCH {
                        cursor = cursor.max(now);
                    }
                    if let Err(err) = db.set_plugin_cursor(&ctx.id, cursor).await {
                        ctx.log("warn", format!("cannot save the delivery cursor: {err}"));
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

/// Waits while the plugin is disabled or suspended by its breaker.
async fn wait_until_callable(plugin: &Plugin) {
    loop {
        let disabled = plugin.health.lock().expect("health poisoned").disabled;
        let suspended = plugin.breaker.lock().expect("breaker poisoned").open_until(Instant::now());
        match (disabled, suspended) {
            (true, _) => plugin.control.notified().await,
            (false, Some(until)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    () = plugin.control.notified() => {}
                }
            }
            (false, None) => return,
        }
    }
}

/// Delivers one event, retrying until it is taken or dead-lettered.
async fn deliver(plugin: &Plugin, row: &EventRow, offer: Offer) {
    let event = event_to_wit(row);
    let settings = &plugin.settings;
    let mut attempt = 1u32;
    loop {
        wait_until_callable(plugin).await;
        let delivery = types::Delivery { id: row.stream_pos.get() as u64, attempt };
        let result = match &offer {
            Offer::Command { name, args } => {
                let invocation =
                    guest::Invocation { event: event.clone(), name: name.clone(), args: args.clone() };
                plugin.call(async |instance| instance.on_command(&invocation, delivery).await).await
            }
            _ => plugin.call(async |instance| instance.on_event(&event, delivery).await).await,
        };
        let error = match result {
            Ok(()) => {
                plugin.health.lock().expect("health poisoned").delivered += 1;
                return;
            }
            Err(error) => error,
        };
        let message = error.describe();
        if !error.is_fatal() {
            plugin.ctx.log("warn", format!("{} (attempt {attempt}) failed: {message}", row.event_id));
            plugin.health.lock().expect("health poisoned").last_error = Some(message.clone());
        }
        if attempt >= settings.max_attempts {
            dead_letter(plugin, row, attempt, &message).await;
            return;
        }
        let wait = match &error {
            CallError::Returned(types::Error::RateLimited(ms)) => Duration::from_millis(u64::from(*ms)),
            _ => settings.retry_base.saturating_mul(1 << (attempt - 1).min(16)),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = plugin.control.notified() => {}
        }
        attempt += 1;
    }
}

async fn dead_letter(plugin: &Plugin, row: &EventRow, attempts: u32, error: &str) {
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
    if let Err(err) = ctx.services.db.add_dead_letter(&ctx.id, &letter).await {
        ctx.log("error", format!("cannot file the dead letter for {}: {err}", row.event_id));
    }
}

/// Delivers the dead letters the admin asked to replay (a replay is offered as it was first).
async fn replay_dead_letters(plugin: &Plugin, interest: &mut Interest) {
    loop {
        let next = plugin.health.lock().expect("health poisoned").replays.pop_front();
        let Some(pos) = next else { return };
        match plugin.ctx.services.db.event_at(pos).await {
            Ok(Some(row)) => {
                let offer = match interest.offer(&row) {
                    Offer::Skip => Offer::Event,
                    offer => offer,
                };
                deliver(plugin, &row, offer).await;
            }
            Ok(None) => plugin.ctx.log("warn", format!("dead letter at {} is gone", pos.get())),
            Err(err) => plugin.ctx.log("warn", format!("cannot read dead letter at {}: {err}", pos.get())),
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
async fn fire_due_timers(plugin: &Plugin) {
    let ctx = &plugin.ctx;
    let db = &ctx.services.db;
    let Ok(timers) = db.plugin_timers(&ctx.id, 100).await else { return };
    let now = now_millis() as i64;
    for (tag, due) in timers.into_iter().filter(|(_, due)| *due <= now) {
        match plugin.call(async |instance| instance.on_timer(&tag).await).await {
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
