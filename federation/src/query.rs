//! Profile queries: other servers asking about this one's users
//! (`GET /_matrix/federation/v1/query/profile`), and this server asking about theirs.

use axum::Router;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::{UserId, api::federation::query::get_profile_information};
use serde_json::{Map, Value, json};

use crate::FederationState;

pub fn routes(router: Router<FederationState>) -> Router<FederationState> {
    router.ruma_route(profile)
}

/// `GET /_matrix/federation/v1/query/profile`: a local user's display name and avatar (one of
/// them when `field` says so).
async fn profile(
    state: FederationState,
    req: Ruma<get_profile_information::v1::Request>,
) -> Result<JsonBody, ApiError> {
    let user_id = &req.body.user_id;
    if user_id.server_name() != state.key.server_name() {
        return Err(Error::invalid_param("the user does not belong to this server").into());
    }
    let user = state
        .db
        .user(user_id.as_str())
        .await
        .map_err(Error::from)?
        .filter(|u| !u.deactivated || u.displayname.is_some())
        .ok_or_else(|| Error::not_found("Profile not found"))?;
    let field = req.body.field.as_ref().map(|f| f.as_str().to_owned());
    let wanted = |name: &str| field.as_deref().is_none_or(|f| f == name);
    let mut body = Map::new();
    if let Some(name) = user.displayname.filter(|_| wanted("displayname")) {
        body.insert("displayname".into(), json!(name));
    }
    if let Some(url) = user.avatar_url.filter(|_| wanted("avatar_url")) {
        body.insert("avatar_url".into(), json!(url));
    }
    Ok(JsonBody(Value::Object(body)))
}

/// A remote user's display name and avatar, asked of the user's server.
pub(crate) async fn fetch_profile(
    state: &FederationState,
    user: &UserId,
) -> Result<Map<String, Value>, Error> {
    let request = get_profile_information::v1::Request::new(user.to_owned());
    let answer = state.client.send(user.server_name(), request).await.map_err(|err| match err {
        crate::FederationError::Status { status: 404, .. } => Error::not_found("Profile not found"),
        other => Error::new(ErrorKind::Unknown, format!("could not reach the user's server: {other}")),
    })?;
    // Only the two fields clients know, and only as strings: the rest of a remote answer is
    // not passed on.
    let mut body = Map::new();
    for field in ["displayname", "avatar_url"] {
        if let Some(value) = answer.data.get(field).and_then(Value::as_str) {
            body.insert(field.into(), json!(value));
        }
    }
    Ok(body)
}
