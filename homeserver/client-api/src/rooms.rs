//! Rooms: creation, membership, aliases and the public room directory.

use axum::Router;
use homeserver_core::{Error, ErrorKind, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_rooms::membership::{MembershipAction, MembershipChange};
use homeserver_storage::StorageError;
use ruma::events::room::member::MembershipState;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility},
        knock::knock_room,
        membership::{
            ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias, joined_rooms,
            kick_user, leave_room, unban_user,
        },
        room::{aliases, create_room},
    },
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    App,
    ratelimit::{Action, address_key},
};

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(create)
        .ruma_route(join_by_id)
        .ruma_route(join_by_id_or_alias)
        .ruma_route(knock)
        .ruma_route(invite)
        .ruma_route(leave)
        .ruma_route(forget)
        .ruma_route(kick)
        .ruma_route(ban)
        .ruma_route(unban)
        .ruma_route(joined)
        .ruma_route(put_alias)
        .ruma_route(resolve_alias)
        .ruma_route(remove_alias)
        .ruma_route(room_aliases)
        .ruma_route(public_rooms)
        .ruma_route(public_rooms_filtered)
        .ruma_route(directory_visibility)
        .route(
            "/_matrix/client/v3/directory/list/room/{room_id}",
            axum::routing::put(set_directory_visibility),
        )
        .route(
            "/_matrix/client/r0/directory/list/room/{room_id}",
            axum::routing::put(set_directory_visibility),
        )
}

fn body_json<T: for<'de> Deserialize<'de> + Default>(raw: &[u8]) -> Result<T, Error> {
    if raw.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| Error::bad_json(format!("invalid request body: {e}")))
}

/// `POST /_matrix/client/v3/createRoom`
async fn create(app: App, req: Ruma<create_room::v3::Request>) -> Result<JsonBody, ApiError> {
    app.limit(Action::RoomCreation, req.auth.user_id.as_str())?;
    let request =
        homeserver_rooms::create::CreateRoom::from_client_body(req.auth.user_id.clone(), &req.raw_body)?;
    // Each invitee is an invite, under the same limit as `/invite`.
    for _ in &request.invite {
        app.limit(Action::Invite, req.auth.user_id.as_str())?;
    }
    let profile = app.rooms.profile_of(&req.auth.user_id).await?;
    let room_id = app.rooms.create_room(request, profile).await?;
    Ok(JsonBody(json!({ "room_id": room_id })))
}

#[derive(Deserialize, Default)]
struct TargetBody {
    user_id: Option<OwnedUserId>,
    reason: Option<String>,
}

impl TargetBody {
    fn target(&self) -> Result<&UserId, Error> {
        self.user_id.as_deref().ok_or_else(|| Error::missing_param("Missing user_id"))
    }
}

/// Every membership change a client asks for goes through here: the join and invite rate
/// limits, then the room model's membership rules (`Rooms::change_membership`).
pub(crate) async fn change_membership(
    app: &App,
    room_id: &RoomId,
    change: MembershipChange,
) -> Result<ruma::OwnedEventId, Error> {
    match change.action {
        MembershipAction::Join | MembershipAction::Knock => {
            app.limit(Action::Join, change.sender.as_str())?
        }
        MembershipAction::Invite => app.limit(Action::Invite, change.sender.as_str())?,
        _ => {}
    }
    app.rooms.change_membership(room_id, change).await
}

/// Extra member-event content a join request carries (its whole JSON body, as Synapse takes it).
fn join_content(raw: &[u8]) -> Result<Map<String, Value>, Error> {
    let body: Map<String, Value> = body_json(raw)?;
    Ok(body)
}

/// Joins a room with the request's body as extra member content, then carries the user's own
/// view of a predecessor room over (upgrades). A room this server is not in is joined through
/// `via` (or the server its id names) over federation.
async fn join_room(
    app: &App,
    user: &UserId,
    room_id: OwnedRoomId,
    raw_body: &[u8],
    via: Vec<ruma::OwnedServerName>,
) -> Result<JsonBody, ApiError> {
    if app.rooms.joins_remotely(&room_id).await? {
        // The join rate limit applies to joins through other servers too.
        app.limit(Action::Join, user.as_str())?;
        app.rooms.join_remote_via(room_id.clone(), user.to_owned(), via).await?;
        return Ok(JsonBody(json!({ "room_id": room_id })));
    }
    let extra = join_content(raw_body)?;
    let change = MembershipChange::new(MembershipAction::Join, user, user).with_content(extra);
    change_membership(app, &room_id, change).await?;
    crate::upgrade::carry_user_state(app, user, &room_id).await;
    Ok(JsonBody(json!({ "room_id": room_id })))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
async fn join_by_id(app: App, req: Ruma<join_room_by_id::v3::Request>) -> Result<JsonBody, ApiError> {
    join_room(&app, &req.auth.user_id, req.body.room_id.clone(), &req.raw_body, Vec::new()).await
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
async fn join_by_id_or_alias(
    app: App,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let (room_id, via) = room_and_via(&app, req.body.room_id_or_alias.as_str(), &req.body.via).await?;
    join_room(&app, &req.auth.user_id, room_id, &req.raw_body, via).await
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
async fn knock(app: App, req: Ruma<knock_room::v3::Request>) -> Result<JsonBody, ApiError> {
    #[derive(Deserialize, Default)]
    struct KnockBody {
        reason: Option<String>,
    }
    let body: KnockBody =
        if req.raw_body.is_empty() { KnockBody::default() } else { body_json(&req.raw_body)? };
    let (room_id, mut via) = room_and_via(&app, req.body.room_id_or_alias.as_str(), &req.body.via).await?;
    let user = &req.auth.user_id;
    if app.rooms.joins_remotely(&room_id).await? {
        app.limit(Action::Join, user.as_str())?;
        if let Some(server) = room_id.server_name()
            && !via.iter().any(|s| s == server)
        {
            via.push(server.to_owned());
        }
        app.rooms.knock_remote(room_id.clone(), user.clone(), via, body.reason).await?;
        return Ok(JsonBody(json!({ "room_id": room_id })));
    }
    let change =
        MembershipChange::new(MembershipAction::Knock, user, user).with_reason(body.reason.as_deref());
    change_membership(&app, &room_id, change).await?;
    Ok(JsonBody(json!({ "room_id": room_id })))
}

/// The room a room id or alias names, and the servers to reach it through: the request's
/// `via`, then those the alias's server names.
async fn room_and_via(
    app: &App,
    room_id_or_alias: &str,
    via: &[ruma::OwnedServerName],
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>), Error> {
    let mut servers = via.to_vec();
    let room_id = match <&RoomId>::try_from(room_id_or_alias) {
        Ok(room_id) => room_id.to_owned(),
        Err(_) => {
            let alias = <&RoomAliasId>::try_from(room_id_or_alias)
                .map_err(|_| Error::invalid_param("invalid room id or alias"))?;
            let (room_id, named) = app.rooms.resolve_alias(alias).await?;
            servers.extend(named.into_iter().filter(|s| !via.contains(s)));
            room_id
        }
    };
    Ok((room_id, servers))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
async fn invite(app: App, req: Ruma<invite_user::v3::Request>) -> Result<JsonBody, ApiError> {
    let body: TargetBody = body_json(&req.raw_body)?;
    let target = body.target()?;
    let change = MembershipChange::new(MembershipAction::Invite, &req.auth.user_id, target)
        .with_reason(body.reason.as_deref());
    change_membership(&app, &req.body.room_id, change).await?;
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
async fn leave(app: App, req: Ruma<leave_room::v3::Request>) -> Result<JsonBody, ApiError> {
    let user = &req.auth.user_id;
    let change =
        MembershipChange::new(MembershipAction::Leave, user, user).with_reason(req.body.reason.as_deref());
    change_membership(&app, &req.body.room_id, change).await?;
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
async fn forget(app: App, req: Ruma<forget_room::v3::Request>) -> Result<JsonBody, ApiError> {
    let room = req.body.room_id.as_str();
    let user = req.auth.user_id.as_str();
    match app.db.membership(room, user).await.map_err(Error::from)? {
        Some(m) if matches!(m.membership, MembershipState::Leave | MembershipState::Ban) => {
            app.db.forget_room(room, user).await.map_err(Error::from)?;
            Ok(JsonBody(json!({})))
        }
        Some(_) => Err(Error::new(ErrorKind::Unknown, "You must leave the room before forgetting it").into()),
        None => Err(Error::not_found("You have never been in this room").into()),
    }
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
async fn kick(app: App, req: Ruma<kick_user::v3::Request>) -> Result<JsonBody, ApiError> {
    let change = MembershipChange::new(MembershipAction::Kick, &req.auth.user_id, &req.body.user_id)
        .with_reason(req.body.reason.as_deref());
    change_membership(&app, &req.body.room_id, change).await?;
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
async fn ban(app: App, req: Ruma<ban_user::v3::Request>) -> Result<JsonBody, ApiError> {
    let body: TargetBody = body_json(&req.raw_body)?;
    let change = MembershipChange::new(MembershipAction::Ban, &req.auth.user_id, body.target()?)
        .with_reason(body.reason.as_deref());
    change_membership(&app, &req.body.room_id, change).await?;
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
async fn unban(app: App, req: Ruma<unban_user::v3::Request>) -> Result<JsonBody, ApiError> {
    let body: TargetBody = body_json(&req.raw_body)?;
    let change = MembershipChange::new(MembershipAction::Unban, &req.auth.user_id, body.target()?)
        .with_reason(body.reason.as_deref());
    change_membership(&app, &req.body.room_id, change).await?;
    Ok(JsonBody(json!({})))
}

/// `GET /_matrix/client/v3/joined_rooms`
async fn joined(app: App, req: Ruma<joined_rooms::v3::Request>) -> Result<JsonBody, ApiError> {
    let rooms: Vec<ruma::OwnedRoomId> = app
        .db
        .memberships_of_user(req.auth.user_id.as_str())
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|m| m.membership == MembershipState::Join)
        .map(|m| m.room_id)
        .collect();
    Ok(JsonBody(json!({ "joined_rooms": rooms })))
}

fn require_local_alias(app: &App, alias: &RoomAliasId) -> Result<(), Error> {
    if alias.server_name() != app.server_name() {
        return Err(Error::invalid_param("Room alias must be on this server"));
    }
    Ok(())
}

/// May `user` manage aliases and directory listing of the room? Joined, with the power to set the
/// canonical alias, or a server admin.
async fn may_manage_room(app: &App, session: &Session, room_id: &RoomId) -> Result<bool, Error> {
    if session.is_admin {
        return Ok(true);
    }
    if !app.rooms.is_joined(room_id, &session.user_id).await? {
        return Ok(false);
    }
    let levels = app.rooms.power_levels(room_id).await?;
    Ok(levels.user_level(&session.user_id) >= levels.event_level("m.room.canonical_alias", true))
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
async fn put_alias(app: App, req: Ruma<create_alias::v3::Request>) -> Result<JsonBody, ApiError> {
    let alias = &req.body.room_alias;
    require_local_alias(&app, alias)?;
    let room_id = &req.body.room_id;
    if app.rooms.room_version(room_id).await?.is_none() {
        return Err(Error::not_found("Room not found").into());
    }
    if !app.rooms.is_joined(room_id, &req.auth.user_id).await? && !req.auth.is_admin {
        return Err(Error::forbidden("You must be in the room to give it an alias").into());
    }
    app.rooms.check_alias_claim(alias, &req.auth.user_id).await?;
    match app
        .db
        .create_alias(alias.as_str(), room_id.as_str(), req.auth.user_id.as_str(), now_millis() as i64)
        .await
    {
        Ok(()) => Ok(JsonBody(json!({}))),
        Err(StorageError::Conflict) => {
            Err(Error::new(ErrorKind::Conflict, format!("Room alias {alias} already exists")).into())
        }
        Err(e) => Err(Error::from(e).into()),
    }
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`: this server's aliases, and other
/// servers' asked of them.
async fn resolve_alias(app: App, req: Ruma<get_alias::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.room_alias.server_name() != app.server_name() {
        // Served without authentication, and it makes this server ask another: each address
        // has its budget.
        app.limit(Action::Anonymous, &address_key(req.client_ip))?;
    }
    let (room_id, servers) = app.rooms.resolve_alias(&req.body.room_alias).await?;
    Ok(JsonBody(json!({ "room_id": room_id, "servers": servers })))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
async fn remove_alias(app: App, req: Ruma<delete_alias::v3::Request>) -> Result<JsonBody, ApiError> {
    let alias = &req.body.room_alias;
    require_local_alias(&app, alias)?;
    let record = app
        .db
        .alias(alias.as_str())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    let room_id = RoomId::parse(&record.room_id).map_err(|e| Error::internal(e.to_string()))?;
    let allowed =
        record.creator == req.auth.user_id.as_str() || may_manage_room(&app, &req.auth, &room_id).await?;
    if !allowed {
        return Err(Error::forbidden("You may not delete this alias").into());
    }
    app.db.delete_alias(alias.as_str()).await.map_err(Error::from)?;
    remove_from_canonical_alias(&app, &req.auth, &room_id, alias.as_str()).await;
    Ok(JsonBody(json!({})))
}

/// Drops a deleted alias from the room's canonical alias event (as Synapse does). Best effort:
/// without the power to change it, the stale alias stays.
async fn remove_from_canonical_alias(app: &App, session: &Session, room_id: &RoomId, alias: &str) {
    let Ok(Some(current)) = app.rooms.current_state_event(room_id, "m.room.canonical_alias", "").await else {
        return;
    };
    let mut content = current.content_value();
    let mut changed = false;
    if content.get("alias").and_then(Value::as_str) == Some(alias)
        && let Some(obj) = content.as_object_mut()
    {
        obj.remove("alias");
        changed = true;
    }
    if let Some(Value::Array(alt)) = content.get_mut("alt_aliases") {
        let before = alt.len();
        alt.retain(|a| a.as_str() != Some(alias));
        changed |= alt.len() != before;
    }
    if changed
        && let Err(err) =
            app.rooms.send_state(room_id, &session.user_id, "m.room.canonical_alias", "", content).await
    {
        tracing::debug!(%room_id, error = %err, "could not update the canonical alias");
    }
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
async fn room_aliases(app: App, req: Ruma<aliases::v3::Request>) -> Result<JsonBody, ApiError> {
    let room_id = &req.body.room_id;
    if !app.rooms.is_joined(room_id, &req.auth.user_id).await? && !req.auth.is_admin {
        return Err(Error::forbidden("You are not in this room").into());
    }
    let aliases = app.db.room_aliases(room_id.as_str()).await.map_err(Error::from)?;
    Ok(JsonBody(json!({ "aliases": aliases })))
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
async fn directory_visibility(
    app: App,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let room = app
        .db
        .room(req.body.room_id.as_str())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Room not found"))?;
    Ok(JsonBody(json!({ "visibility": if room.published { "public" } else { "private" } })))
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`. A plain route rather than ruma's
/// request type: the spec makes `visibility` optional (default `public`), ruma requires it.
async fn set_directory_visibility(
    axum::extract::State(app): axum::extract::State<App>,
    homeserver_http::Authenticated(session): homeserver_http::Authenticated,
    axum::extract::Path(room_id): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let room_id = RoomId::parse(&room_id).map_err(|_| Error::invalid_param("invalid room id"))?;
    #[derive(Deserialize, Default)]
    struct Body {
        visibility: Option<String>,
    }
    let body: Body = body_json(&body)?;
    let public = match body.visibility.as_deref() {
        Some("public") | None => true,
        Some("private") => false,
        Some(other) => return Err(Error::invalid_param(format!("unknown visibility {other}")).into()),
    };
    if app.rooms.room_version(&room_id).await?.is_none() {
        return Err(Error::not_found("Room not found").into());
    }
    if !may_manage_room(&app, &session, &room_id).await? {
        return Err(Error::forbidden("You may not change this room's directory listing").into());
    }
    app.db.set_room_published(room_id.as_str(), public).await.map_err(Error::from)?;
    Ok(axum::Json(json!({})))
}

/// A page of this server's public room directory, or of the one `server` names.
async fn public_rooms_of(
    app: &App,
    server: Option<&ruma::ServerName>,
    limit: Option<u64>,
    since: Option<&str>,
    search: Option<&str>,
) -> Result<Value, Error> {
    match server {
        Some(server) if server != app.server_name() => {
            let query = homeserver_rooms::outbound::DirectoryQuery {
                limit,
                since: since.map(str::to_owned),
                search: search.map(str::to_owned),
            };
            app.rooms.remote_public_rooms(server.to_owned(), query).await
        }
        _ => app.rooms.public_rooms(limit, since, search, false).await,
    }
}

/// `GET /_matrix/client/v3/publicRooms`
async fn public_rooms(app: App, req: Ruma<get_public_rooms::v3::Request>) -> Result<JsonBody, ApiError> {
    // Served without authentication: each address has its budget.
    app.limit(Action::Anonymous, &address_key(req.client_ip))?;
    let limit = req.body.limit.map(u64::from);
    Ok(JsonBody(
        public_rooms_of(&app, req.body.server.as_deref(), limit, req.body.since.as_deref(), None).await?,
    ))
}

/// `POST /_matrix/client/v3/publicRooms`
async fn public_rooms_filtered(
    app: App,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<JsonBody, ApiError> {
    let limit = req.body.limit.map(u64::from);
    let term = req.body.filter.generic_search_term.as_deref();
    Ok(JsonBody(
        public_rooms_of(&app, req.body.server.as_deref(), limit, req.body.since.as_deref(), term).await?,
    ))
}
