//! `GET /_matrix/federation/v1/openid/userinfo?access_token=`: who an OpenID token (issued by
//! the client API's `request_token`) belongs to. Unsigned, as the spec has it: the token is the
//! credential. Missing, unknown and expired tokens are 401s.

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::get,
};
use homeserver_core::{Error, ErrorKind, ids, time::now_millis};
use homeserver_http::ApiError;
use serde_json::{Value, json};

use crate::FederationState;

pub fn routes(router: axum::Router<FederationState>) -> Router<FederationState> {
    router.route("/_matrix/federation/v1/openid/userinfo", get(userinfo))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn userinfo(
    State(state): State<FederationState>,
    Query(query): Query<TokenQuery>,
) -> Result<Json<Value>, ApiError> {
    let token = query.access_token.ok_or_else(|| Error::new(ErrorKind::MissingToken, "no access token"))?;
    let user = state
        .db
        .openid_token_user(&ids::hash_token(&token), now_millis() as i64)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| {
            Error::new(ErrorKind::UnknownToken { soft_logout: false }, "unknown or expired token")
        })?;
    Ok(Json(json!({ "sub": user })))
}
