//! `POST /user/{userId}/openid/request_token`: a token a third party (an integration manager,
//! a widget) exchanges at `/_matrix/federation/v1/openid/userinfo` to learn who the user is.
//! Only the token's hash is stored, as for access tokens; it lasts an hour.

use axum::Router;
use homeserver_core::{Error, ids, time::now_millis};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::api::client::account::request_openid_token;
use serde_json::json;

use crate::{App, ratelimit::Action};

/// How long an OpenID token lasts.
const LIFETIME_MS: u64 = 3_600_000;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(request_token)
}

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`
async fn request_token(app: App, req: Ruma<request_openid_token::v3::Request>) -> Result<JsonBody, ApiError> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden("OpenID tokens are issued for one's own account only").into());
    }
    // Each token is a row written: limited as messages are.
    app.limit(Action::Message, req.auth.user_id.as_str())?;
    let token = ids::random_string(32);
    let now = now_millis();
    app.db
        .add_openid_token(
            &ids::hash_token(&token),
            req.auth.user_id.as_str(),
            (now + LIFETIME_MS) as i64,
            now as i64,
        )
        .await
        .map_err(Error::from)?;
    Ok(JsonBody(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": app.server_name(),
        "expires_in": LIFETIME_MS / 1000,
    })))
}
