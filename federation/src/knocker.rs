//! Knocking on a room this server holds no state of, as the knocking server: `make_knock` to
//! one of the servers that know the room (up to five), the knock built and signed here from the
//! template's prev and auth events and depth only (as joins are; the content carries the
//! user's profile and reason), `send_knock`, then the knock stored out of band with the room's
//! stripped state the resident answered with, so the user's sync shows the room knocked on.
//! Withdrawing it is a leave through the same servers (`leaver`).

use homeserver_core::{Error, ErrorKind};
use homeserver_rooms::versions;
use ruma::{
    CanonicalJsonValue, OwnedServerName, RoomId, ServerName, UserId,
    api::federation::membership::{create_knock_event, prepare_knock_event},
};
use serde_json::json;

use crate::{
    FederationState,
    client::remote_error,
    invites,
    joiner::{member_content, sign_membership},
};

/// Servers tried for one knock.
const MAX_VIA: usize = 5;
/// Longest knock reason taken.
const MAX_REASON_BYTES: usize = 1024;

/// Knocks on `room_id` for `user` through the first of `via` that takes it.
pub(crate) async fn knock(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    reason: Option<String>,
) -> Result<(), Error> {
    let mut last = Error::not_found("No server could let this server knock on the room");
    for server in via.iter().filter(|s| **s != state.key.server_name()).take(MAX_VIA) {
        match knock_via(state, room_id, user, server, reason.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::info!(%room_id, %server, error = %err.message, "remote knock failed");
                last = err;
            }
        }
    }
    Err(last)
}

async fn knock_via(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    server: &ServerName,
    reason: Option<String>,
) -> Result<(), Error> {
    let mut ask = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    ask.ver = versions::SUPPORTED_VERSIONS.to_vec();
    let made = state.client.send(server, ask).await.map_err(remote_error)?;
    let version = made.room_version;
    let rules = versions::rules(&version).ok_or_else(|| {
        Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version} is not supported"))
    })?;
    let mut content = member_content(state, user, "knock").await?;
    if let Some(reason) = reason.filter(|r| !r.is_empty() && r.len() <= MAX_REASON_BYTES) {
        content.insert("reason".into(), CanonicalJsonValue::String(reason));
    }
    let (knock, knock_id) = sign_membership(state, room_id, user, made.event.get(), content, &rules)?;
    let raw = serde_json::value::to_raw_value(&knock).map_err(Error::internal_from)?;
    let send = create_knock_event::v1::Request::new(room_id.to_owned(), knock_id, raw);
    let answer = state.client.send(server, send).await.map_err(remote_error)?;
    let stripped =
        invites::stripped_room_state(state, room_id, &version, &rules, &answer.knock_room_state).await?;
    let extra = json!({ "knock_room_state": stripped, "room_version": version });
    state.rooms.store_out_of_band(room_id, version, knock.to_string(), Some(extra)).await?;
    Ok(())
}
