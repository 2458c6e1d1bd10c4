//! Leaving a room this server holds no state of — rejecting another server's invite,
//! withdrawing a knock — as the leaving server: `make_leave` to one of the servers that know the
//! room (the inviter's first), the leave built and signed here from the template's prev and
//! auth events and depth only (as joins are), `send_leave` v2, then the leave stored out of
//! band so the user's sync shows the room left. When no server takes the leave, the rejection
//! still happens here: a leave built on the invite itself is stored, so the invite does not
//! linger (the inviting server keeps its own view until it hears otherwise).

use homeserver_core::{Error, ErrorKind};
use homeserver_rooms::{event_format, versions};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedServerName, RoomId, RoomVersionId, ServerName,
    UserId,
    api::federation::membership::{create_leave_event, prepare_leave_event},
};
use serde_json::{Value, json};

use crate::{FederationState, client::remote_error, joiner::sign_membership};

/// Servers tried for one leave.
const MAX_VIA: usize = 5;

/// Leaves `room_id` for `user` through the first of `via` that takes it, or locally.
pub(crate) async fn leave(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
) -> Result<(), Error> {
    let mut last = Error::not_found("No server could take the leave");
    for server in via.iter().filter(|s| **s != state.key.server_name()).take(MAX_VIA) {
        match leave_via(state, room_id, user, server).await {
            Ok((version, leave)) => {
                // Stored once, after the one server that took it.
                state.rooms.store_out_of_band(room_id, version, leave.to_string(), None).await?;
                return Ok(());
            }
            Err(err) => {
                tracing::info!(%room_id, %server, error = %err.message, "remote leave failed");
                last = err;
            }
        }
    }
    leave_locally(state, room_id, user).await.map_err(|_| last)
}

fn leave_content() -> CanonicalJsonObject {
    CanonicalJsonObject::from([("membership".into(), CanonicalJsonValue::String("leave".into()))])
}

/// The leave, sent through `server`: its room version and the event.
async fn leave_via(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    server: &ServerName,
) -> Result<(RoomVersionId, Value), Error> {
    let ask = prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    let made = state.client.send(server, ask).await.map_err(remote_error)?;
    let version = made.room_version.unwrap_or(RoomVersionId::V1);
    let rules = versions::rules(&version).ok_or_else(|| {
        Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version} is not supported"))
    })?;
    let (leave, leave_id) = sign_membership(state, room_id, user, made.event.get(), leave_content(), &rules)?;
    let raw = serde_json::value::to_raw_value(&leave).map_err(Error::internal_from)?;
    let send = create_leave_event::v2::Request::new(room_id.to_owned(), leave_id.clone(), raw.clone());
    match state.client.send(server, send).await {
        Ok(_) => {}
        Err(err) if crate::legacy::only_v1(&err) => {
            let send = crate::legacy::EventRequest::<crate::legacy::SendLeaveV1>::new(
                room_id.to_owned(),
                leave_id,
                raw,
            );
            state.client.send(server, send).await.map_err(remote_error)?;
        }
        Err(err) => return Err(remote_error(err)),
    }
    Ok((version, leave))
}

/// A leave built on the user's out-of-band invite (or knock) and stored here only.
async fn leave_locally(state: &FederationState, room_id: &RoomId, user: &UserId) -> Result<(), Error> {
    let oob = state.rooms.out_of_band(room_id, user).await?.ok_or_else(|| Error::not_found("No invite"))?;
    let version = room_version_of(&oob.event).ok_or_else(|| Error::not_found("Unknown room version"))?;
    let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
    let depth = serde_json::from_str::<Value>(&oob.event.json)
        .ok()
        .and_then(|v| v.get("depth")?.as_u64())
        .unwrap_or(0)
        .saturating_add(1);
    // The invite (or knock) is the leave's only known predecessor, in the version's format.
    let oob_id = EventId::parse(&oob.event.event_id).map_err(Error::internal_from)?;
    let hashes = event_format::ReferenceHashes::from_iter(
        event_format::reference_hash(&oob.event.json, &rules).map(|h| (oob_id.clone(), h)),
    );
    let references = event_format::reference_list(std::slice::from_ref(&oob_id), &hashes, &rules)
        .map_err(Error::internal)?;
    let template = json!({
        "type": "m.room.member",
        "state_key": user,
        "sender": user,
        "room_id": room_id,
        "content": { "membership": "leave" },
        "prev_events": references,
        "auth_events": references,
        "depth": depth,
    });
    let (leave, _) = sign_membership(state, room_id, user, &template.to_string(), leave_content(), &rules)?;
    state.rooms.store_out_of_band(room_id, version, leave.to_string(), None).await?;
    Ok(())
}

/// The room version of an out-of-band invite: as the inviting server declared it (kept with
/// the event), else as the stripped create event names it.
fn room_version_of(event: &homeserver_storage::events::EventRow) -> Option<RoomVersionId> {
    let extra: Value = serde_json::from_str(event.unsigned_extra.as_deref()?).ok()?;
    if let Some(version) = extra.get("room_version").and_then(Value::as_str) {
        return RoomVersionId::try_from(version).ok();
    }
    let create = extra
        .get("invite_room_state")?
        .as_array()?
        .iter()
        .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.create"))?;
    let version = create.get("content")?.get("room_version").and_then(Value::as_str).unwrap_or("1");
    RoomVersionId::try_from(version).ok()
}
