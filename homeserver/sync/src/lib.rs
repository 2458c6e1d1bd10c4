//! homeserver-sync: `/sync` — initial and incremental sync over the global event stream, with
//! long-polling.
//!
//! A token is a stream position (see `homeserver_core::token`): everything at or below it has been
//! delivered. An incremental sync returns what changed in `(since, now]`. A long-poll subscribes to
//! the user's wake-up channel *before* looking for data, then waits on it, so a commit between the
//! look and the wait still wakes it; there is no polling loop.
//!
//! One module per stream of the response: [`rooms`] (room events and state: `join`, `invite`,
//! `knock`, `leave`, with unread counts and summaries), [`ephemeral`] (typing and receipts, inside
//! joined rooms), [`account_data`], [`presence`] and `to_device` (to-device messages, the
//! device's one-time key counts, and the device lists of the users it shares rooms with). [`filter`] is the filter model `/sync`, `/messages` and
//! `/context` share. The client API's handler only parses the request.
//!
//! Per room the response follows the spec: `timeline` holds the newest events of the window
//! (`limited` and `prev_batch` when older ones were cut), `state` the state at the start of the
//! timeline — all of it for rooms new to the client, only what changed since `since` for a
//! `limited` timeline, nothing otherwise — with `lazy_load_members` reducing member events to the
//! timeline's senders (each device gets a member event once, see `homeserver_live::lazy`). A room
//! is "new to the client" when the user was not joined to it at `since` (a profile change is not
//! a new join).

mod account_data;
mod context;
pub mod ephemeral;
pub mod filter;
mod presence;
mod rooms;
mod to_device;

use std::{sync::Arc, time::Duration};

use homeserver_core::{
    Error,
    streams::{EventStream, StreamPos},
    token::StreamToken,
};
use homeserver_live::Live;
use homeserver_rooms::Rooms;
use homeserver_storage::Db;
use ruma::{DeviceId, UserId};
use serde_json::{Value, json};

use crate::{context::SyncContext, filter::FilterDefinition};

/// One `/sync` request, parsed.
pub struct SyncRequest {
    pub since: Option<StreamToken>,
    pub filter: FilterDefinition,
    /// How long to wait for something new (already capped by the server's limit).
    pub timeout: Duration,
    pub full_state: bool,
    /// `set_presence`: `online` (the default), `unavailable` or `offline`.
    pub set_presence: String,
}

/// Computes sync responses. Cheap to clone.
#[derive(Clone)]
pub struct Syncer {
    db: Db,
    rooms: Rooms,
    stream: Arc<EventStream>,
    live: Live,
}

impl Syncer {
    pub fn new(db: Db, rooms: Rooms, live: Live) -> Self {
        let stream = rooms.stream().clone();
        Self { db, rooms, stream, live }
    }

    /// Answers a sync: at once when there is something new (or it is an initial or full-state
    /// sync), otherwise when something arrives or the timeout passes.
    pub async fn sync(
        &self,
        user: &UserId,
        device: &DeviceId,
        request: &SyncRequest,
    ) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + request.timeout;
        // The user counts as syncing (online) until this request ends.
        let _syncing = self.live.presence.on_sync(user, &request.set_presence).await?;
        let mut wake = self.stream.subscribe(user);
        loop {
            wake.borrow_and_update();
            let now = StreamPos::live(self.stream.current());
            let ctx = SyncContext {
                syncer: self,
                user,
                device,
                filter: &request.filter,
                since: request.since.map(|s| StreamToken { pos: s.pos.min(now.as_live()), ..s }),
                now,
                full_state: request.full_state,
                ignored: self.live.ignore_lists.of(user.as_str()).await?,
            };
            let (body, has_data) = build_response(&ctx).await?;
            if has_data
                || request.since.is_none()
                || request.full_state
                || self.stream.is_shutting_down()
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(body);
            }
            match tokio::time::timeout_at(deadline, wake.changed()).await {
                Ok(Ok(())) => continue,
                // Timed out (or the stream is shutting down): answer with an empty sync.
                _ => return Ok(build_response(&ctx).await?.0),
            }
        }
    }
}

/// Builds the sync response from its sections; the flag says whether it carries anything new.
async fn build_response(ctx: &SyncContext<'_>) -> Result<(Value, bool), Error> {
    let user = ctx.user.as_str();
    let memberships = ctx.syncer.db.memberships_of_user(user).await?;
    if ctx.since.is_none() {
        ctx.syncer.live.lazy_members.reset(user, ctx.device.as_str());
    }
    // Read before the sections, so a typing change while they are built is delivered next time.
    let typing_serial = ctx.syncer.live.typing.serial();
    let mut rooms = rooms::room_sections(ctx, &memberships).await?;
    let account_data = account_data::account_data_section(ctx, &memberships, &mut rooms).await?;
    let presence = presence::presence_section(ctx, &memberships, &rooms.join).await?;
    let (to_device, to_device_upto) = to_device::to_device_section(ctx).await?;
    let (key_counts, fallback_types) = to_device::key_counts(ctx).await?;
    let (devices_changed, devices_left) = to_device::device_lists(ctx, &memberships).await?;
    let has_data = !rooms.is_empty()
        || !account_data.is_empty()
        || !presence.is_empty()
        || !to_device.is_empty()
        || !devices_changed.is_empty()
        || !devices_left.is_empty();
    let next_batch =
        StreamToken { pos: ctx.now.as_live(), ephemeral: typing_serial, to_device: to_device_upto };
    let body = json!({
        "next_batch": next_batch.to_string(),
        "rooms": { "join": rooms.join, "invite": rooms.invite, "knock": rooms.knock, "leave": rooms.leave },
        "account_data": { "events": account_data },
        "presence": { "events": presence },
        "to_device": { "events": to_device },
        "device_one_time_keys_count": key_counts,
        "device_unused_fallback_key_types": fallback_types,
        "device_lists": { "changed": devices_changed, "left": devices_left },
    });
    Ok((body, has_data))
}
