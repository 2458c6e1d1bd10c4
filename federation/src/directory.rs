//! The room directory over federation, both ways: `GET /_matrix/federation/v1/query/directory`
//! (which room a local alias names, and servers in it, this server first), and `GET`/`POST
//! /_matrix/federation/v1/publicRooms` (pages of this server's published rooms, as clients see
//! them, less those created with `m.federate: false`); and asking other servers the same for local clients (joining by a remote alias,
//! `/publicRooms?server=…`).

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_rooms::outbound::DirectoryQuery;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedServerName, ServerName, UInt,
    api::federation::{
        directory::{get_public_rooms, get_public_rooms_filtered},
        query::get_room_information,
    },
    directory::Filter,
};
use serde_json::{Value, json};

use crate::{FederationState, client::remote_error};

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(query_directory).ruma_route(public_rooms).ruma_route(public_rooms_filtered)
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=…`
async fn query_directory(
    state: FederationState,
    req: Ruma<get_room_information::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let alias = &req.body.room_alias;
    if alias.server_name() != state.key.server_name() {
        return Err(Error::not_found("The alias does not belong to this server").into());
    }
    let (room_id, servers) = state.rooms.resolve_alias(alias).await?;
    Ok(JsonBody(json!({ "room_id": room_id, "servers": servers })))
}

/// `GET /_matrix/federation/v1/publicRooms`
async fn public_rooms(
    state: FederationState,
    req: Ruma<get_public_rooms::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let limit = req.body.limit.map(u64::from);
    Ok(JsonBody(state.rooms.public_rooms(limit, req.body.since.as_deref(), None, true).await?))
}

/// `POST /_matrix/federation/v1/publicRooms`
async fn public_rooms_filtered(
    state: FederationState,
    req: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let limit = req.body.limit.map(u64::from);
    let term = req.body.filter.generic_search_term.as_deref();
    Ok(JsonBody(state.rooms.public_rooms(limit, req.body.since.as_deref(), term, true).await?))
}

/// The room an alias of another server names, asked of that server.
pub(crate) async fn fetch_alias(
    state: &FederationState,
    alias: &OwnedRoomAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>), Error> {
    let request = get_room_information::v1::Request::new(alias.clone());
    let answer = state.client.send(alias.server_name(), request).await.map_err(|err| match err {
        crate::FederationError::Status { status: 404, .. } => {
            Error::not_found(format!("Room alias {alias} not found"))
        }
        other => remote_error(other),
    })?;
    // The alias's own server first: it answered, so it can be joined through.
    let mut servers = vec![alias.server_name().to_owned()];
    servers.extend(answer.servers.into_iter().filter(|s| s != alias.server_name()).take(MAX_SERVERS));
    Ok((answer.room_id, servers))
}

/// Most servers taken from another server's directory answer.
const MAX_SERVERS: usize = 20;

/// A page of another server's public room directory.
pub(crate) async fn fetch_public_rooms(
    state: &FederationState,
    server: &ServerName,
    query: DirectoryQuery,
) -> Result<Value, Error> {
    let mut request = get_public_rooms_filtered::v1::Request::new();
    request.limit = query.limit.and_then(|l| UInt::try_from(l).ok());
    request.since = query.since;
    let mut filter = Filter::new();
    filter.generic_search_term = query.search;
    request.filter = filter;
    let answer = state.client.send(server, request).await.map_err(remote_error)?;
    let mut body = json!({ "chunk": answer.chunk });
    if let Some(next) = answer.next_batch {
        body["next_batch"] = json!(next);
    }
    if let Some(prev) = answer.prev_batch {
        body["prev_batch"] = json!(prev);
    }
    if let Some(total) = answer.total_room_count_estimate {
        body["total_room_count_estimate"] = json!(total);
    }
    Ok(body)
}
