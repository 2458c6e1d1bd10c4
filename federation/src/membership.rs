//! Joining, leaving and knocking over federation, as the resident server: `GET
//! /make_join/{roomId}/{userId}` (and `make_leave`, `make_knock`) hands out a member event
//! template for a user of the requesting server, `PUT /v2/send_join/{roomId}/{eventId}` (and
//! `send_leave`, `send_knock`) takes the signed event through the room model's remote path; a
//! join's answer is the state before it and the auth chain (`members_omitted: false`: this server
//! always sends the full state), a knock's the room's stripped state.
//!
//! Both check the room's server ACL, that the user belongs to the requesting server, and (for
//! `make_join`) that the joining server supports the room's version.

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_rooms::{
    remote::{Arrival, IncomingPdu, Verdict},
    versions,
};
use ruma::{
    EventId, OwnedEventId, RoomId, ServerName, UserId,
    api::federation::membership::{
        create_join_event, create_knock_event, create_leave_event, prepare_join_event, prepare_knock_event,
        prepare_leave_event,
    },
};
use serde_json::{Value, json, value::RawValue};

use crate::FederationState;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router
        .ruma_route(make_join)
        .ruma_route(send_join)
        .ruma_route(make_leave)
        .ruma_route(send_leave)
        .ruma_route(make_knock)
        .ruma_route(send_knock)
}

/// A user of this server is in the room, its ACL admits `origin`, and `user` belongs to `origin`.
async fn may_change_membership(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
) -> Result<(), Error> {
    if user.server_name() != origin {
        return Err(Error::forbidden("The user does not belong to the requesting server"));
    }
    // Only a server with a user in the room holds its current state and may vouch for it.
    if state.rooms.room_version(room_id).await?.is_none() || !state.rooms.local_user_joined(room_id).await? {
        return Err(Error::not_found("This server is not in the room"));
    }
    if !state.rooms.server_allowed(room_id, origin).await? {
        return Err(Error::forbidden("The room's server ACL forbids this server"));
    }
    Ok(())
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join(
    state: FederationState,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let (room_id, user) = (&req.body.room_id, &req.body.user_id);
    may_change_membership(&state, &req.auth, room_id, user).await?;
    let version = supported_version(&state, room_id, &req.body.ver).await?;
    let event = state.rooms.membership_template(room_id, user, "join").await?;
    Ok(JsonBody(json!({ "room_version": version, "event": event })))
}

/// The room's version, if the asking server supports it (`ver`): `M_INCOMPATIBLE_ROOM_VERSION`
/// with the version otherwise. Servers that send no `ver` support version 1 only, the spec says.
async fn supported_version(
    state: &FederationState,
    room_id: &RoomId,
    ver: &[ruma::RoomVersionId],
) -> Result<ruma::RoomVersionId, Error> {
    let version = state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let supported = if ver.is_empty() { &[ruma::RoomVersionId::V1][..] } else { ver };
    if !supported.contains(&version) {
        return Err(Error::new(
            ErrorKind::IncompatibleRoomVersion { room_version: version.to_string() },
            "Your server does not support this room version",
        ));
    }
    Ok(version)
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock(
    state: FederationState,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let (room_id, user) = (&req.body.room_id, &req.body.user_id);
    may_change_membership(&state, &req.auth, room_id, user).await?;
    let version = supported_version(&state, room_id, &req.body.ver).await?;
    let event = state.rooms.membership_template(room_id, user, "knock").await?;
    Ok(JsonBody(json!({ "room_version": version, "event": event })))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`: answers with the room's stripped
/// state as PDUs (the create event among them).
async fn send_knock(
    state: FederationState,
    req: Ruma<create_knock_event::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    place_member_event(&state, &req.auth, room_id, &req.body.event_id, &req.body.pdu, "knock").await?;
    let room_state: Vec<Box<RawValue>> = state
        .rooms
        .stripped_state_pdus(room_id)
        .await?
        .iter()
        .filter_map(|pdu| RawValue::from_string(pdu.json.to_string()).ok())
        .collect();
    Ok(JsonBody(json!({ "knock_room_state": room_state })))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn make_leave(
    state: FederationState,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let (room_id, user) = (&req.body.room_id, &req.body.user_id);
    may_change_membership(&state, &req.auth, room_id, user).await?;
    let version = state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let event = state.rooms.membership_template(room_id, user, "leave").await?;
    Ok(JsonBody(json!({ "room_version": version, "event": event })))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn send_leave(
    state: FederationState,
    req: Ruma<create_leave_event::v2::Request>,
) -> Result<JsonBody, ApiError> {
    leave(&state, &req.auth, &req.body.room_id, &req.body.event_id, &req.body.pdu).await?;
    Ok(JsonBody(json!({})))
}

/// Places a leave a user of `origin` signed (either API version).
pub(crate) async fn leave(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    pdu: &RawValue,
) -> Result<(), Error> {
    place_member_event(state, origin, room_id, event_id, pdu, "leave").await.map(drop)
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join(
    state: FederationState,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<JsonBody, ApiError> {
    let body = &req.body;
    Ok(JsonBody(join(&state, &req.auth, &body.room_id, &body.event_id, &body.pdu).await?))
}

/// Places a join a user of `origin` signed and answers with the room's state before it and
/// that state's auth chain (either API version).
pub(crate) async fn join(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    pdu: &RawValue,
) -> Result<Value, Error> {
    let (pdu, countersigned) = countersign_restricted_join(state, room_id, pdu).await?;
    let join_id = place_member_event(state, origin, room_id, event_id, &pdu, "join").await?;
    let joined = state.rooms.joined_state(&join_id).await?;
    let raw = |texts: Vec<String>| -> Vec<Box<RawValue>> {
        texts.into_iter().filter_map(|t| RawValue::from_string(t).ok()).collect()
    };
    let servers = state.rooms.servers_in_room(room_id).await?;
    let mut answer = json!({
        "origin": state.key.server_name(),
        "members_omitted": false,
        "state": raw(joined.state),
        "auth_chain": raw(joined.auth_chain),
        "servers_in_room": servers,
    });
    if countersigned {
        // The joining server needs the join with this server's signature (restricted rooms).
        answer["event"] = serde_json::from_str(pdu.get()).map_err(Error::internal_from)?;
    }
    Ok(answer)
}

/// A join into a restricted room names the local member who vouches for it
/// (`join_authorised_via_users_server`); this server adds its signature, which the auth rules
/// require of the authorising server. Returns the join to place and whether it was signed here.
async fn countersign_restricted_join(
    state: &FederationState,
    room_id: &RoomId,
    pdu: &RawValue,
) -> Result<(Box<RawValue>, bool), Error> {
    let value: Value = serde_json::from_str(pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let authoriser = value
        .get("content")
        .and_then(|c| c.get("join_authorised_via_users_server"))
        .and_then(Value::as_str)
        .and_then(|u| UserId::parse(u).ok());
    let sender = value.get("sender").and_then(Value::as_str).and_then(|u| UserId::parse(u).ok());
    match (authoriser, sender) {
        (Some(authoriser), Some(sender)) if authoriser.server_name() == state.key.server_name() => {
            // Vouch only for a user who meets the join rule here: the auth rules check the
            // authoriser's power, not the joiner's right to be vouched for.
            if !state.rooms.may_vouch_for_join(room_id, &sender).await? {
                return Err(Error::forbidden("The user is not in any of the rooms the join rule allows"));
            }
            let version =
                state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let rules =
                versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
            let signed = crate::invites::countersign(state, pdu.get(), &rules)?;
            let raw = serde_json::value::to_raw_value(&signed).map_err(Error::internal_from)?;
            Ok((raw, true))
        }
        _ => Ok((pdu.to_owned(), false)),
    }
}

/// Places a member event (`join`, `leave`) a user of `origin` signed for themselves, sent to
/// the path's event id, through the remote path; returns its id once accepted.
async fn place_member_event(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &EventId,
    pdu: &RawValue,
    membership: &str,
) -> Result<OwnedEventId, Error> {
    let value: Value = serde_json::from_str(pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let sender = field("sender")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(|| Error::bad_json("no valid sender"))?;
    let is_own = field("type") == Some("m.room.member")
        && field("state_key") == Some(sender.as_str())
        && value.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) == Some(membership);
    if !is_own {
        return Err(Error::bad_json(format!("not a {membership} event of its sender")));
    }
    may_change_membership(state, origin, room_id, &sender).await?;
    let version = state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
    if crate::transactions::event_id_of(&value, &rules).as_deref() != Some(event_id) {
        return Err(Error::bad_json("the event id in the path is not the event's"));
    }
    state.keys.prefetch_for_event(&value, &rules).await?;
    // Marked before it is placed, so the sender forwards it to the room's other servers.
    state.db.mark_forward(event_id.as_str()).await?;
    let incoming = IncomingPdu::new(pdu.get().to_owned());
    let verdict = state.rooms.receive_remote(room_id, vec![incoming], Arrival::Live).await?.pop();
    match verdict {
        Some(Verdict::Accepted(id)) if id == event_id => Ok(id),
        // Sent before: it counts only if it took its place in the room then (a rejected or
        // soft-failed join sent again must not buy the room's state).
        Some(Verdict::Duplicate(id)) if id == event_id => {
            let stored = state.db.event(id.as_str()).await?;
            if stored.is_some_and(|row| !row.outlier && !row.soft_failed && row.rejected_reason.is_none()) {
                Ok(id)
            } else {
                Err(Error::forbidden(format!("The {membership} was not accepted")))
            }
        }
        Some(Verdict::Accepted(_) | Verdict::Duplicate(_)) => {
            Err(Error::bad_json("the event id in the path is not the event's"))
        }
        Some(other) => {
            let why = other.rejection().map(|r| r.to_string()).unwrap_or_default();
            Err(Error::forbidden(format!("The {membership} was not accepted: {why}")))
        }
        None => Err(Error::internal("no verdict")),
    }
}
