//! Joining over federation, as the resident server: `GET /make_join/{roomId}/{userId}` hands
//! out a join template for a user of the requesting server, `PUT /v2/send_join/{roomId}/{eventId}`
//! takes the signed join through the room model's remote path and answers with the state before
//! it and the auth chain (`members_omitted: false`: this server always sends the full state).
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
    RoomId, ServerName, UserId,
    api::federation::membership::{create_join_event, prepare_join_event},
};
use serde_json::{Value, json, value::RawValue};

use crate::FederationState;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(make_join).ruma_route(send_join)
}

/// The room is known here and its ACL admits `origin`, which `user` belongs to.
async fn may_join(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
    user: &UserId,
) -> Result<(), Error> {
    if user.server_name() != origin {
        return Err(Error::forbidden("The user does not belong to the requesting server"));
    }
    if state.rooms.room_version(room_id).await?.is_none() {
        return Err(Error::not_found("Unknown room"));
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
    may_join(&state, &req.auth, room_id, user).await?;
    let version = state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    // Servers that send no `ver` are taken to support version 1 only, as the spec says.
    let supported =
        if req.body.ver.is_empty() { vec![ruma::RoomVersionId::V1] } else { req.body.ver.clone() };
    if !supported.contains(&version) {
        let error = Error::new(
            ErrorKind::IncompatibleRoomVersion { room_version: version.to_string() },
            "Your server does not support this room version",
        );
        return Err(error.into());
    }
    let event = state.rooms.join_template(room_id, user).await?;
    Ok(JsonBody(json!({ "room_version": version, "event": event })))
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join(
    state: FederationState,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    let value: Value =
        serde_json::from_str(req.body.pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let sender = field("sender")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(|| Error::bad_json("no valid sender"))?;
    let is_join = field("type") == Some("m.room.member")
        && field("state_key") == Some(sender.as_str())
        && value.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) == Some("join");
    if !is_join {
        return Err(Error::bad_json("not a join event of its sender").into());
    }
    may_join(&state, &req.auth, room_id, &sender).await?;
    let version = state.rooms.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = versions::rules(&version).ok_or_else(|| Error::internal("unsupported room version"))?;
    if crate::transactions::event_id_of(&value, &rules).as_ref() != Some(&req.body.event_id) {
        return Err(Error::bad_json("the event id in the path is not the event's").into());
    }
    state.keys.prefetch_for_event(&value, &rules).await?;
    let incoming = IncomingPdu::new(req.body.pdu.get().to_owned());
    let verdict = state.rooms.receive_remote(room_id, vec![incoming], Arrival::Live).await?.pop();
    let join_id = match verdict {
        Some(Verdict::Accepted(id) | Verdict::Duplicate(id)) if id == req.body.event_id => id,
        Some(Verdict::Accepted(_) | Verdict::Duplicate(_)) => {
            return Err(Error::bad_json("the event id in the path is not the event's").into());
        }
        Some(other) => {
            let why = other.rejection().map(|r| r.to_string()).unwrap_or_default();
            return Err(Error::forbidden(format!("The join was not accepted: {why}")).into());
        }
        None => return Err(Error::internal("no verdict").into()),
    };
    let joined = state.rooms.joined_state(&join_id).await?;
    let raw = |texts: Vec<String>| -> Vec<Box<RawValue>> {
        texts.into_iter().filter_map(|t| RawValue::from_string(t).ok()).collect()
    };
    let servers = servers_in_room(&state, room_id).await?;
    Ok(JsonBody(json!({
        "origin": state.key.server_name(),
        "members_omitted": false,
        "state": raw(joined.state),
        "auth_chain": raw(joined.auth_chain),
        "servers_in_room": servers,
    })))
}

/// The servers with a joined member in the room.
async fn servers_in_room(state: &FederationState, room_id: &RoomId) -> Result<Vec<String>, Error> {
    let mut servers: Vec<String> = state
        .db
        .room_members(room_id.as_str(), "join")
        .await?
        .iter()
        .filter_map(|u| UserId::parse(u).ok().map(|u| u.server_name().to_string()))
        .collect();
    servers.sort();
    servers.dedup();
    Ok(servers)
}
