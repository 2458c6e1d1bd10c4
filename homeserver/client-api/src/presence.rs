//! Presence: `GET/PUT /presence/{userId}/status`, the online/unavailable/offline state machine
//! and the presence events `/sync` delivers.
//!
//! A user sets their own state and status message; anyone sharing a room with them may read it.
//! Syncing keeps a user online (unless the sync says `set_presence=offline`); thirty seconds after
//! their last sync they go offline, and after five minutes without activity an online user becomes
//! unavailable. One task sleeps until the next such deadline — nothing polls. Every change takes a
//! stream position and wakes the users who share a room with the user.
//!
//! Presence is a known CPU sink on busy servers; `presence.enabled = false` turns it off (status
//! requests are then accepted and ignored, and syncs carry no presence).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::presence::PresenceRow;
use ruma::api::client::presence::{get_presence, set_presence};
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::{sync::Notify, time::Instant};

use crate::{App, storage};

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(put_status).ruma_route(get_status)
}

/// After the last sync ends, a user stays online this long.
const SYNC_ONLINE_TIMEOUT: Duration = Duration::from_secs(30);
/// An online user without activity is shown as unavailable after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Activity is written at most this often (it only moves `last_active_ago`).
const ACTIVITY_WRITE_INTERVAL_MS: i64 = 60_000;

/// Who is syncing, for the offline timer. A std mutex: map updates only.
pub struct PresenceTracker {
    pub enabled: bool,
    last_sync: Mutex<HashMap<OwnedUserId, Instant>>,
    rearm: Notify,
}

impl PresenceTracker {
    pub fn new(enabled: bool) -> Arc<Self> {
        Arc::new(Self { enabled, last_sync: Mutex::new(HashMap::new()), rearm: Notify::new() })
    }
}

/// Writes a presence change and wakes everyone who shares a room with the user.
pub async fn store_presence(
    app: &App,
    user: &UserId,
    state: &str,
    status_msg: Option<&str>,
    last_active_ts: i64,
) -> Result<(), Error> {
    let reservation = app.stream.reserve(1);
    app.db
        .set_presence(user.as_str(), state, status_msg, last_active_ts, reservation.first() as i64)
        .await
        .map_err(storage)?;
    let mates: Vec<OwnedUserId> = app
        .db
        .room_mates(user.as_str())
        .await
        .map_err(storage)?
        .into_iter()
        .filter_map(|u| UserId::parse(u).ok())
        .chain([user.to_owned()])
        .collect();
    reservation.complete(mates);
    Ok(())
}

/// Called at the start of every sync: keeps the user online (or sets the requested state).
pub async fn on_sync(app: &App, user: &UserId, set_presence: &str) -> Result<(), Error> {
    if !app.presence.enabled {
        return Ok(());
    }
    app.presence.last_sync.lock().expect("presence poisoned").insert(user.to_owned(), Instant::now());
    app.presence.rearm.notify_one();
    if set_presence == "offline" {
        return Ok(());
    }
    let wanted = if set_presence == "unavailable" { "unavailable" } else { "online" };
    let now = now_millis() as i64;
    let current = app.db.presence(user.as_str()).await.map_err(storage)?;
    let stale = current
        .as_ref()
        .is_none_or(|p| p.state != wanted || now - p.last_active_ts > ACTIVITY_WRITE_INTERVAL_MS);
    if stale {
        let msg = current.and_then(|p| p.status_msg);
        store_presence(app, user, wanted, msg.as_deref(), now).await?;
    }
    Ok(())
}

/// Moves users offline once their syncs stop.
pub async fn presence_timers(app: App) {
    loop {
        let rearm = app.presence.rearm.notified();
        let now = Instant::now();
        let (expired, next): (Vec<OwnedUserId>, Option<Instant>) = {
            let mut map = app.presence.last_sync.lock().expect("presence poisoned");
            let expired: Vec<OwnedUserId> = map
                .iter()
                .filter(|(_, t)| **t + SYNC_ONLINE_TIMEOUT <= now)
                .map(|(u, _)| u.clone())
                .collect();
            for user in &expired {
                map.remove(user);
            }
            (expired, map.values().map(|t| *t + SYNC_ONLINE_TIMEOUT).min())
        };
        for user in expired {
            if let Ok(Some(p)) = app.db.presence(user.as_str()).await
                && p.state != "offline"
                && let Err(err) =
                    store_presence(&app, &user, "offline", p.status_msg.as_deref(), p.last_active_ts).await
            {
                tracing::warn!(%user, error = %err, "could not mark user offline");
            }
        }
        if app.stream.is_shutting_down() {
            return;
        }
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = rearm => {}
                }
            }
            None => rearm.await,
        }
    }
}

/// A presence event as `/sync` delivers it. An online user idle for long reads as unavailable
/// (computed on read, so idleness needs no timer write).
pub fn presence_event(p: &PresenceRow, now: i64) -> Value {
    let mut state = p.state.clone();
    if state == "online" && now - p.last_active_ts > IDLE_TIMEOUT.as_millis() as i64 {
        state = "unavailable".into();
    }
    let mut content = json!({
        "presence": state,
        "last_active_ago": (now - p.last_active_ts).max(0),
        "currently_active": state == "online",
    });
    if let Some(msg) = &p.status_msg {
        content["status_msg"] = json!(msg);
    }
    json!({ "type": "m.presence", "sender": p.user_id, "content": content })
}

/// `PUT /_matrix/client/v3/presence/{userId}/status`
async fn put_status(app: App, req: Ruma<set_presence::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only set your own presence").into());
    }
    let body: Value = serde_json::from_slice(&req.raw_body).unwrap_or_default();
    let state = body.get("presence").and_then(Value::as_str).unwrap_or("online");
    if !matches!(state, "online" | "unavailable" | "offline") {
        return Err(Error::invalid_param(format!("unknown presence state {state}")).into());
    }
    if app.presence.enabled {
        let status_msg = body.get("status_msg").and_then(Value::as_str);
        store_presence(&app, &req.auth.user_id, state, status_msg, now_millis() as i64).await?;
    }
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
async fn get_status(app: App, req: Ruma<get_presence::v3::Request>) -> Result<JsonBody, ApiError> {
    let target = &req.body.user_id;
    if app.db.user(target.as_str()).await.map_err(storage)?.is_none() {
        return Err(Error::not_found("Unknown user").into());
    }
    if *target != req.auth.user_id
        && !app.db.share_a_room(req.auth.user_id.as_str(), target.as_str()).await.map_err(storage)?
    {
        return Err(Error::forbidden("You do not share a room with this user").into());
    }
    let now = now_millis() as i64;
    let stored =
        if app.presence.enabled { app.db.presence(target.as_str()).await.map_err(storage)? } else { None };
    Ok(JsonBody(match stored {
        Some(p) => presence_event(&p, now)["content"].clone(),
        None => json!({ "presence": "offline" }),
    }))
}
