//! EDUs of inbound transactions, each for a user of the origin who is joined to a room whose
//! ACL admits the origin. Typing notices go to the same `homeserver_live::typing::Typing` a
//! local `PUT /typing` feeds; a remote typing notice lasts 30 seconds unless renewed or stopped
//! (servers resend while their user types). Read receipts (`m.receipt`, `m.read` only: private
//! receipts never leave their server) go through `homeserver_live::receipts`, the one receipt
//! write path, for events known here, at most [`MAX_RECEIPTS`] per EDU. Presence (`m.presence`:
//! the last update of each user in a transaction, at most [`MAX_PRESENCE`] users) is taken for the origin's users who share a room with a
//! user of this server, and shown as sent: no local timers drive remote users. To-device
//! messages (`m.direct_to_device`) from the origin's users are queued for this server's users
//! through `homeserver_live::to_device`; device-list and cross-signing key updates
//! (`m.device_list_update`, `m.signing_key_update`, at most [`MAX_DEVICE_LIST_UPDATES`] each)
//! go to `device_lists`, which keeps the origin's users' lists cached. Other EDU types are
//! accepted and ignored.

use std::time::Duration;

use homeserver_core::{Error, ErrorKind};
use homeserver_live::{
    presence::{RemotePresence, State},
    receipts::NewReceipt,
    to_device::{Outgoing, Recipient},
};
use ruma::{
    RoomId, ServerName, UserId,
    api::federation::transactions::edu::{
        DirectDeviceContent, Edu, PresenceUpdate, ReceiptContent, TypingContent,
    },
    events::receipt::ReceiptThread,
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use tokio::time::Instant;

use crate::FederationState;

/// Most users whose presence one transaction updates.
const MAX_PRESENCE: usize = 100;
/// Longest status message taken.
const MAX_STATUS_BYTES: usize = 1024;

/// Most receipts taken from one EDU.
const MAX_RECEIPTS: usize = 100;

/// Most device-list (and, apart, cross-signing) updates taken from one transaction.
const MAX_DEVICE_LIST_UPDATES: usize = 100;

/// How long a remote typing notice lasts.
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// Applies the EDUs a transaction carried; malformed or unauthorised ones are skipped.
pub(crate) async fn receive_edus(
    state: &FederationState,
    origin: &ServerName,
    edus: &[Raw<Edu>],
) -> Result<(), Error> {
    // Presence is gathered over the whole transaction: the last update of each user counts,
    // at most `MAX_PRESENCE` users, so a transaction costs a bounded number of writes.
    let mut presence: Vec<PresenceUpdate> = Vec::new();
    // Device-list and cross-signing updates are applied together, user by user.
    let (mut device_lists, mut signing_keys) = (Vec::new(), Vec::new());
    for raw in edus {
        match raw.deserialize() {
            Ok(Edu::Typing(typing)) => typing_notice(state, origin, &typing).await?,
            Ok(Edu::Receipt(receipts)) => read_receipts(state, origin, &receipts).await?,
            Ok(Edu::Presence(content)) => {
                for update in content.push {
                    match presence.iter().position(|p| p.user_id == update.user_id) {
                        Some(i) => presence[i] = update,
                        None if presence.len() < MAX_PRESENCE => presence.push(update),
                        None => {}
                    }
                }
            }
            Ok(Edu::DirectToDevice(content)) => to_device(state, origin, content).await?,
            Ok(Edu::DeviceListUpdate(update)) if device_lists.len() < MAX_DEVICE_LIST_UPDATES => {
                device_lists.push(update)
            }
            Ok(Edu::SigningKeyUpdate(update)) if signing_keys.len() < MAX_DEVICE_LIST_UPDATES => {
                signing_keys.push(update)
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(%origin, error = %err, "skipping a malformed EDU"),
        }
    }
    crate::device_lists::receive(state, origin, device_lists, signing_keys).await?;
    presence_updates(state, origin, &presence).await
}

/// A user of `origin` sends to-device messages (`m.direct_to_device`) to this server's users:
/// queued like a local `sendToDevice` (once per message id, so a repeated transaction queues
/// nothing again); recipients of other servers are ignored.
async fn to_device(
    state: &FederationState,
    origin: &ServerName,
    content: DirectDeviceContent,
) -> Result<(), Error> {
    if content.sender.server_name() != origin {
        return Ok(());
    }
    let ours = state.key.server_name();
    let mut messages = Vec::new();
    for (user, devices) in content.messages.into_iter().filter(|(user, _)| user.server_name() == ours) {
        for (device, message) in devices {
            let devices = match device {
                DeviceIdOrAllDevices::DeviceId(id) => Recipient::Device(id.to_string()),
                DeviceIdOrAllDevices::AllDevices => Recipient::AllDevices,
            };
            messages.push(Outgoing { user: user.clone(), devices, content: message.json().get().to_owned() });
        }
    }
    if messages.is_empty() {
        return Ok(());
    }
    // The sender's server stands in for the sending device in the once-per-id key.
    let device = format!("{}{origin}", homeserver_storage::FEDERATION_DEVICE_PREFIX);
    let sent = state
        .live
        .to_device
        .send(&content.sender, &device, &content.ev_type.to_string(), content.message_id.as_str(), messages)
        .await;
    match sent {
        Ok(()) => Ok(()),
        // Too many recipients: the message is refused, not the transaction.
        Err(err) if err.kind == ErrorKind::TooLarge => {
            tracing::debug!(%origin, error = %err.message, "skipping a to-device EDU");
            Ok(())
        }
        // Anything else (the database) fails the transaction, so the origin retries it; the
        // message id makes the retry queue nothing twice.
        Err(err) => Err(err),
    }
}

/// Whether `user` of `origin` may act in the room: the room is known, its ACL admits the
/// origin and the user is joined.
async fn may_act(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
) -> Result<bool, Error> {
    Ok(user.server_name() == origin
        && state.rooms.room_version(room_id).await?.is_some()
        && state.rooms.server_allowed(room_id, origin).await?
        && state.rooms.is_joined(room_id, user).await?)
}

async fn read_receipts(
    state: &FederationState,
    origin: &ServerName,
    content: &ReceiptContent,
) -> Result<(), Error> {
    let mut receipts = Vec::new();
    for (room, map) in &content.receipts {
        for (user, data) in &map.read {
            receipts.push((room, user, data));
        }
    }
    for (room_id, user, data) in receipts.into_iter().take(MAX_RECEIPTS) {
        let Some(event_id) = data.event_ids.last() else { continue };
        if !may_act(state, origin, room_id, user).await? {
            continue;
        }
        let thread_id = match &data.data.thread {
            ReceiptThread::Main => "main".to_owned(),
            ReceiptThread::Thread(root) => root.to_string(),
            _ => String::new(),
        };
        let ts =
            data.data.ts.map_or_else(|| homeserver_core::time::now_millis() as i64, |t| i64::from(t.get()));
        let receipt = NewReceipt {
            room_id,
            user_id: user,
            event_id,
            receipt_type: "m.read",
            thread_id: &thread_id,
            ts,
        };
        match state.live.receipts.store(&receipt).await {
            Ok(_) => {}
            // An event this server does not have (yet): the receipt is dropped, as Synapse does.
            Err(err) if err.kind == homeserver_core::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Presence of the origin's users who share a room with a user of this server (others are no
/// one's business here), shown as the origin says: no local timers drive them.
async fn presence_updates(
    state: &FederationState,
    origin: &ServerName,
    updates: &[PresenceUpdate],
) -> Result<(), Error> {
    if !state.live.presence.enabled {
        return Ok(());
    }
    let ours = state.key.server_name().as_str();
    for update in updates {
        if update.user_id.server_name() != origin
            || !state.db.shares_room_with_server(update.user_id.as_str(), ours).await?
        {
            continue;
        }
        let Some(presence_state) = State::parse(update.presence.as_str()) else { continue };
        let remote = RemotePresence {
            user: update.user_id.clone(),
            state: presence_state,
            status_msg: update.status_msg.clone().filter(|m| m.len() <= MAX_STATUS_BYTES),
            last_active_ago: i64::try_from(u64::from(update.last_active_ago)).unwrap_or(i64::MAX),
            currently_active: update.currently_active,
        };
        state.live.presence.set_remote(remote).await?;
    }
    Ok(())
}

async fn typing_notice(
    state: &FederationState,
    origin: &ServerName,
    typing: &TypingContent,
) -> Result<(), Error> {
    let (room_id, user) = (&typing.room_id, &typing.user_id);
    if !may_act(state, origin, room_id, user).await? {
        return Ok(());
    }
    let until = typing.typing.then(|| Instant::now() + REMOTE_TYPING);
    let members = state.rooms.joined_members(room_id).await?;
    // Only local members have syncs to wake.
    let local = members.into_iter().filter(|m| m.server_name() == state.key.server_name()).collect();
    state.live.typing.set(room_id, user, until, local);
    Ok(())
}
