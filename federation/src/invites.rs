//! Invites between servers.
//!
//! Receiving: `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}` — another server asks this
//! one to countersign an invite of one of its users. The invite must be the origin's user
//! inviting a local user (one who does not exist gets the same answer and nothing is stored, so
//! existence is not revealed), of a supported room version, signed and hashed correctly,
//! with the id the path names, in a room whose ACL (when known here) admits the origin, of the
//! version the room has here, and not blocked here; signatures are checked before anything
//! about the invitee is answered. It is countersigned and, unless a local user is in the room
//! (the room then brings the invite like any event), stored out of band with its stripped state
//! and room version so the invitee's sync shows it. `invite_room_state` entries may be PDUs (Matrix 1.16) or stripped
//! events; in version 12 rooms the spec's validation applies (a create event, every entry a
//! valid PDU of this room), otherwise unusable entries are dropped.
//!
//! Sending: [`send_invite`] has the invitee's server countersign an invite built here.

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_rooms::{outbound::RemoteInvite, versions};
use ruma::{
    CanonicalJsonObject, EventId, RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{RawStrippedState, create_invite},
    room_version_rules::RoomVersionRules,
};
use serde_json::{Value, json, value::RawValue};

use crate::{FederationState, client::remote_error, transactions::event_id_of};

/// Most `invite_room_state` entries taken from an invite.
const MAX_INVITE_STATE: usize = 50;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(invite)
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn invite(state: FederationState, req: Ruma<create_invite::v2::Request>) -> Result<JsonBody, ApiError> {
    let body = &req.body;
    let invite = Invite {
        room_id: &body.room_id,
        event_id: &body.event_id,
        version: &body.room_version,
        event: body.event.get(),
        invite_room_state: &body.invite_room_state,
    };
    let signed = receive(&state, &req.auth, invite).await?;
    Ok(JsonBody(json!({ "event": signed })))
}

/// An invite another server asks this one to countersign (either API version).
pub(crate) struct Invite<'a> {
    pub room_id: &'a RoomId,
    pub event_id: &'a EventId,
    pub version: &'a RoomVersionId,
    pub event: &'a str,
    pub invite_room_state: &'a [RawStrippedState],
}

/// Checks, countersigns and stores an invite of a local user; returns the countersigned event.
pub(crate) async fn receive(
    state: &FederationState,
    origin: &ServerName,
    invite: Invite<'_>,
) -> Result<Value, Error> {
    let Invite { room_id, event_id, version, event, invite_room_state } = invite;
    let rules = versions::rules(version).ok_or_else(|| {
        Error::new(
            ErrorKind::IncompatibleRoomVersion { room_version: version.to_string() },
            "This server does not support the room's version",
        )
    })?;
    let value: Value = serde_json::from_str(event).map_err(|e| Error::invalid_param(e.to_string()))?;
    if event_id_of(&value, &rules).as_deref() != Some(event_id) {
        return Err(Error::invalid_param("the event id in the path is not the event's"));
    }
    if let Some(known) = state.rooms.room_version(room_id).await?
        && known != *version
    {
        return Err(Error::invalid_param(format!("the room's version is {known}")));
    }
    // Signatures first: nothing about local users is answered to an unsigned invite.
    state.keys.prefetch_for_event(&value, &rules).await?;
    state.rooms.verify_remote_pdu(room_id, version, event)?;
    let invitee = check_invite(state, origin, room_id, &value).await?;
    let signed = countersign(state, event, &rules)?;
    if !state.rooms.may_be_invited(&invitee).await? {
        // Answered like any invite (as Synapse does), so other servers cannot tell which
        // users exist here; there is nobody to show it to, so nothing is stored.
        tracing::info!(%room_id, %invitee, %origin, "invite of a user who does not exist");
        return Ok(signed);
    }
    let stripped = stripped_room_state(state, room_id, version, &rules, invite_room_state).await?;
    // Stored out of band unless a user of this server is in the room (the room's actor
    // decides, in the room's order): the room then brings the invite like any event.
    let extra = json!({ "invite_room_state": stripped, "room_version": version });
    state.rooms.store_out_of_band(room_id, version.clone(), signed.to_string(), Some(extra)).await?;
    tracing::info!(%room_id, %invitee, %origin, "invite from another server");
    Ok(signed)
}

/// The invite is the origin's user inviting a user of this server into a room that admits the
/// origin; returns the invitee.
async fn check_invite(
    state: &FederationState,
    origin: &ruma::ServerName,
    room_id: &RoomId,
    value: &Value,
) -> Result<ruma::OwnedUserId, Error> {
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let membership = value.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str);
    if field("type") != Some("m.room.member") || membership != Some("invite") {
        return Err(Error::bad_json("not an invite"));
    }
    let sender =
        field("sender").and_then(|s| UserId::parse(s).ok()).ok_or_else(|| Error::bad_json("no sender"))?;
    if sender.server_name() != origin {
        return Err(Error::forbidden("The inviter does not belong to the requesting server"));
    }
    let invitee = field("state_key")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(|| Error::bad_json("no invitee"))?;
    if invitee.server_name() != state.key.server_name() {
        return Err(Error::invalid_param("The invitee does not belong to this server"));
    }
    // The room's rules first: a server the room bans learns nothing about local users.
    if state.db.is_room_blocked(room_id.as_str()).await? {
        return Err(Error::forbidden("This room has been blocked on this server"));
    }
    if state.rooms.room_version(room_id).await?.is_some()
        && !state.rooms.server_allowed(room_id, origin).await?
    {
        return Err(Error::forbidden("The room's server ACL forbids this server"));
    }
    Ok(invitee)
}

/// Adds this server's signature to an event (its hashes, already checked, stay as they are).
pub(crate) fn countersign(
    state: &FederationState,
    event: &str,
    rules: &RoomVersionRules,
) -> Result<Value, Error> {
    let mut object: CanonicalJsonObject =
        serde_json::from_str(event).map_err(|e| Error::bad_json(e.to_string()))?;
    ruma::signatures::sign_event(
        state.key.server_name().as_str(),
        state.key.pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::internal(e.to_string()))?;
    serde_json::to_value(&object).map_err(Error::internal_from)
}

/// An invite's `invite_room_state` (or a knock's `knock_room_state`) as stripped events for the
/// client.
pub(crate) async fn stripped_room_state(
    state: &FederationState,
    room_id: &RoomId,
    version: &RoomVersionId,
    rules: &RoomVersionRules,
    entries: &[RawStrippedState],
) -> Result<Vec<Value>, Error> {
    let strict = *version == RoomVersionId::V12;
    let mut stripped = Vec::new();
    let mut has_create = false;
    for entry in entries.iter().take(MAX_INVITE_STATE) {
        #[allow(deprecated)] // servers before Matrix 1.16 send stripped events
        let (raw, is_pdu) = match entry {
            RawStrippedState::Pdu(pdu) => (pdu.get(), true),
            RawStrippedState::Stripped(event) => (event.json().get(), false),
            _ => continue,
        };
        let Ok(value) = serde_json::from_str::<Value>(raw) else { continue };
        let valid = is_pdu && {
            state.keys.prefetch_for_event(&value, rules).await.is_ok()
                && state.rooms.verify_remote_pdu(room_id, version, raw).is_ok()
        };
        if strict && !valid {
            return Err(Error::invalid_param(
                "invite_room_state holds an event that is not a valid PDU of the room",
            ));
        }
        has_create |= value.get("type").and_then(Value::as_str) == Some("m.room.create");
        stripped.push(json!({
            "type": value.get("type"),
            "state_key": value.get("state_key"),
            "content": value.get("content"),
            "sender": value.get("sender"),
        }));
    }
    if strict && !has_create {
        return Err(Error::invalid_param("invite_room_state has no m.room.create event"));
    }
    Ok(stripped)
}

/// Has the invitee's server countersign an invite built here (`/invite` v2, or v1 for a
/// version 1 or 2 room on a server that knows only that).
pub(crate) async fn send_invite(state: &FederationState, invite: RemoteInvite) -> Result<String, Error> {
    let invitee_server = serde_json::from_str::<Value>(&invite.event)
        .ok()
        .and_then(|v| v.get("state_key")?.as_str().and_then(|k| UserId::parse(k).ok()))
        .map(|u| u.server_name().to_owned())
        .ok_or_else(|| Error::internal("the invite has no invitee"))?;
    let event = RawValue::from_string(invite.event).map_err(Error::internal_from)?;
    let room_state = invite
        .invite_room_state
        .into_iter()
        .filter_map(|pdu| RawValue::from_string(pdu).ok().map(RawStrippedState::Pdu))
        .collect();
    let early = matches!(invite.version, RoomVersionId::V1 | RoomVersionId::V2);
    let request = create_invite::v2::Request::new(
        invite.room_id.clone(),
        invite.event_id.clone(),
        invite.version,
        event.clone(),
        room_state,
    );
    let answer = match state.client.send(&invitee_server, request).await {
        Ok(answer) => answer.event.get().to_owned(),
        // Servers from before version 3 rooms know only the v1 form, which cannot name a later
        // room version (Synapse falls back the same way).
        Err(err) if early && crate::legacy::only_v1(&err) => {
            let request = crate::legacy::EventRequest::<crate::legacy::InviteV1>::new(
                invite.room_id,
                invite.event_id,
                event,
            );
            let answer = state.client.send(&invitee_server, request).await.map_err(remote_error)?;
            answer
                .0
                .get("event")
                .map(Value::to_string)
                .ok_or_else(|| Error::bad_json("the invite answer has no event"))?
        }
        Err(err) => return Err(remote_error(err)),
    };
    // An answer that is not canonical JSON (a float, say) cannot be a signed event: the
    // client learns the invitee's server sent bad JSON, as Synapse tells it.
    if let Err(e) = serde_json::from_str::<ruma::CanonicalJsonValue>(&answer) {
        return Err(Error::bad_json(format!("The invitee's server answered with invalid JSON: {e}")));
    }
    Ok(answer)
}
