//! The version 1 forms of `send_join`, `send_leave` and `invite`, which the spec deprecates
//! but older servers (and SyTest's) still use. They take the same checks as the v2 forms
//! (`membership`, `invites`) and differ only in shape: the answer is wrapped as `[200, body]`,
//! and the v1 invite's body is the event itself, with its stripped state in
//! `unsigned.invite_room_state` and no room version (versions 1 and 2 differ only in state
//! resolution, which an invite does not involve, so version 1 is assumed).
//!
//! ruma no longer describes these endpoints; their request type is declared here (by hand:
//! ruma's request macros cannot read this workspace's manifests) so they go through the same
//! `X-Matrix` extractor as every other federation route.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
    api::{
        BytesBody, IncomingRequest, IncomingResponse, Metadata, OutgoingRequest,
        error::{DeserializationError, IntoHttpError},
        federation::{
            authentication::ServerSignatures,
            membership::{RawStrippedState, create_leave_event},
        },
        path_builder::SinglePath,
    },
};
use serde_json::{Value, json, value::RawValue};
use std::marker::PhantomData;

use crate::{FederationError, FederationState};

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(send_join).ruma_route(send_leave).ruma_route(invite)
}

/// A v1 request whose body is one event, at the path `P` names.
pub struct EventRequest<P> {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub pdu: Box<RawValue>,
    path: PhantomData<P>,
}

/// The path of an [`EventRequest`].
pub trait EventPath {
    const PATH: &'static str;
}

/// Declares an [`EventPath`].
macro_rules! event_path {
    ($name:ident, $path:literal) => {
        pub struct $name;
        impl EventPath for $name {
            const PATH: &'static str = $path;
        }
    };
}

event_path!(SendJoinV1, "/_matrix/federation/v1/send_join/{room_id}/{event_id}");
event_path!(SendLeaveV1, "/_matrix/federation/v1/send_leave/{room_id}/{event_id}");
event_path!(InviteV1, "/_matrix/federation/v1/invite/{room_id}/{event_id}");

impl<P: EventPath> Metadata for EventRequest<P> {
    const METHOD: http::Method = http::Method::PUT;
    const RATE_LIMITED: bool = false;
    type Authentication = ServerSignatures;
    type PathBuilder = SinglePath;
    const PATH_BUILDER: SinglePath = SinglePath::new(P::PATH);
}

impl<P: EventPath> IncomingRequest for EventRequest<P> {
    type EndpointError = <create_leave_event::v2::Request as IncomingRequest>::EndpointError;
    // Never built: the handlers answer with their own (wrapped) bodies.
    type OutgoingResponse = create_leave_event::v2::Response;

    fn try_from_http_request_inner(
        request: http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        let (room, event) = match path_args {
            [room, event] => (*room, *event),
            _ => ("", ""),
        };
        Ok(Self {
            room_id: RoomId::parse(room)?,
            event_id: EventId::parse(event)?,
            pdu: serde_json::from_slice(request.body())?,
            path: PhantomData,
        })
    }
}

impl<P> Clone for EventRequest<P> {
    fn clone(&self) -> Self {
        Self {
            room_id: self.room_id.clone(),
            event_id: self.event_id.clone(),
            pdu: self.pdu.clone(),
            path: PhantomData,
        }
    }
}

impl<P: EventPath> EventRequest<P> {
    pub fn new(room_id: OwnedRoomId, event_id: OwnedEventId, pdu: Box<RawValue>) -> Self {
        Self { room_id, event_id, pdu, path: PhantomData }
    }
}

impl<P: EventPath> OutgoingRequest for EventRequest<P> {
    type Body = BytesBody;
    type EndpointError = <Self as IncomingRequest>::EndpointError;
    type IncomingResponse = WrappedAnswer;

    fn try_into_http_request_inner(
        self,
        base_url: &str,
        path_builder_input: (),
    ) -> Result<http::Request<BytesBody>, IntoHttpError> {
        let room_id = self.room_id.to_string();
        let event_id = self.event_id.to_string();
        let args: [&dyn std::fmt::Display; 2] = [&room_id, &event_id];
        let url = Self::make_endpoint_url(path_builder_input, base_url, &args, "")?;
        Ok(http::Request::builder()
            .method(http::Method::PUT)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(BytesBody(self.pdu.get().as_bytes().to_vec()))?)
    }
}

/// A v1 answer, `[200, body]`: the body.
pub struct WrappedAnswer(pub Value);

impl IncomingResponse for WrappedAnswer {
    type EndpointError = <EventRequest<SendJoinV1> as IncomingRequest>::EndpointError;

    fn try_from_http_response_inner(response: http::Response<&[u8]>) -> Result<Self, DeserializationError> {
        let (_status, body): (Value, Value) = serde_json::from_slice(response.body())?;
        Ok(Self(body))
    }
}

/// Whether another server's answer to a v2 request means it may only know the v1 form: a 404
/// (an unknown path; a server that knows v2 but not the room answers v1 the same), or a 400
/// `M_UNRECOGNIZED` — the answers after which Synapse falls back too.
pub(crate) fn only_v1(err: &FederationError) -> bool {
    match err {
        FederationError::Status { status: 404, .. } => true,
        FederationError::Status { status: 400, body } => body.contains("M_UNRECOGNIZED"),
        _ => false,
    }
}

/// The v1 answer shape.
fn wrapped(body: Value) -> JsonBody {
    JsonBody(json!([200, body]))
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`
async fn send_join(
    state: FederationState,
    req: Ruma<EventRequest<SendJoinV1>>,
) -> Result<JsonBody, ApiError> {
    let body = &req.body;
    let answer = crate::membership::join(&state, &req.auth, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(wrapped(answer))
}

/// `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`
async fn send_leave(
    state: FederationState,
    req: Ruma<EventRequest<SendLeaveV1>>,
) -> Result<JsonBody, ApiError> {
    let body = &req.body;
    crate::membership::leave(&state, &req.auth, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(wrapped(json!({})))
}

/// `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}`
async fn invite(state: FederationState, req: Ruma<EventRequest<InviteV1>>) -> Result<JsonBody, ApiError> {
    let body = &req.body;
    let mut event: Value =
        serde_json::from_str(body.pdu.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    // The room state travels in `unsigned`; it is taken out (and bounded by the receiver) so
    // the stored invite does not carry it.
    let room_state: Vec<RawStrippedState> = event
        .get_mut("unsigned")
        .and_then(Value::as_object_mut)
        .and_then(|unsigned| unsigned.remove("invite_room_state"))
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    // The v1 form names no version: the room's if this server knows it as 1 or 2, else 1
    // (the two differ only in state resolution, which an invite does not involve).
    let version = match state.rooms.room_version(&body.room_id).await? {
        Some(known @ (RoomVersionId::V1 | RoomVersionId::V2)) => known,
        _ => RoomVersionId::V1,
    };
    let text = event.to_string();
    let invite = crate::invites::Invite {
        room_id: &body.room_id,
        event_id: &body.event_id,
        version: &version,
        event: &text,
        invite_room_state: &room_state,
    };
    let signed = crate::invites::receive(&state, &req.auth, invite).await?;
    Ok(wrapped(json!({ "event": signed })))
}
