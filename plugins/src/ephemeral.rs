//! Typing notices and read receipts for bridges (`bridge-guest.on-ephemeral`), in the rooms
//! their bot is joined to, never their own users'. Typing follows the live typing service and
//! is best effort: a change is sent as the room's whole typing list, dropped while the plugin
//! is disabled or suspended. Receipts hold stream positions, so the dispatcher hands over the
//! public ones of each batch of the stream it delivered: at least once, as events are.

use std::sync::Arc;

use homeserver_core::streams::StreamPos;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    bindings::bridge_guest::Ephemeral,
    interest::Interest,
    plugin::{Call, Plugin},
};

/// Hands typing changes in the bot's rooms to a bridge, until the server stops.
pub(crate) async fn typing(plugin: Arc<Plugin>) {
    let ctx = plugin.ctx.clone();
    let typing = ctx.services.live.typing.clone();
    let mut changes = typing.subscribe();
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let disabled = plugin.health.lock().expect("health poisoned").disabled;
        if disabled
            || plugin.suspended_until().is_some()
            || !plugin.is_bridge()
            || ctx.is_own(change.user_id.as_str())
        {
            continue;
        }
        if ctx.scope.as_ref().is_some_and(|rooms| !rooms.contains(&change.room_id)) {
            continue;
        }
        if !ctx.services.rooms.is_joined(&change.room_id, &ctx.user).await.unwrap_or(false) {
            continue;
        }
        let (users, _) = typing.typing_in(&change.room_id);
        let users: Vec<String> = users.iter().map(ToString::to_string).filter(|u| !ctx.is_own(u)).collect();
        let event = Ephemeral {
            room_id: change.room_id.to_string(),
            edu_type: "m.typing".into(),
            content_json: json!({ "user_ids": users }).to_string(),
        };
        if let Err(err) = plugin.call(Call::Ephemeral(event)).await {
            ctx.log("warn", format!("on-ephemeral (typing) failed: {}", err.describe()));
        }
    }
}

/// Hands a bridge the public receipts of its rooms with positions in `(after, up_to]`.
pub(crate) async fn deliver_receipts(
    plugin: &Arc<Plugin>,
    interest: &Interest,
    after: StreamPos,
    up_to: StreamPos,
) {
    if !plugin.is_bridge() {
        return;
    }
    let ctx = &plugin.ctx;
    let rooms = interest.joined();
    if rooms.is_empty() {
        return;
    }
    let receipts = match ctx.services.db.receipts_between(&rooms, after.get(), up_to.get()).await {
        Ok(receipts) => receipts,
        Err(err) => {
            ctx.log("warn", format!("cannot read receipts: {err}"));
            return;
        }
    };
    for receipt in receipts.iter().filter(|r| r.receipt_type == "m.read" && !ctx.is_own(&r.user_id)) {
        let mut read = json!({ "ts": receipt.ts });
        if !receipt.thread_id.is_empty() {
            read["thread_id"] = json!(receipt.thread_id);
        }
        let content = json!({ &receipt.event_id: { "m.read": { &receipt.user_id: read } } });
        let event = Ephemeral {
            room_id: receipt.room_id.clone(),
            edu_type: "m.receipt".into(),
            content_json: content.to_string(),
        };
        if let Err(err) = plugin.call(Call::Ephemeral(event)).await {
            ctx.log("warn", format!("on-ephemeral (receipt) failed: {}", err.describe()));
        }
    }
}
