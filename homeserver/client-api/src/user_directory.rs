//! `POST /user_directory/search`: finding people. A user finds those they share a room with and
//! those in public rooms (everyone, with `user_directory.search_all_users`). The search reads the
//! live account and membership tables, so it is current after every profile or membership change.

use axum::Router;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::api::client::user_directory::search_users;
use serde_json::json;

use homeserver_core::Error;

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(search)
}

/// `POST /_matrix/client/v3/user_directory/search`
async fn search(app: App, req: Ruma<search_users::v3::Request>) -> Result<JsonBody, ApiError> {
    let limit = u64::from(req.body.limit).clamp(1, 100) as i64;
    let term = req.body.search_term.trim();
    let mut rows = app
        .db
        .search_user_directory(req.auth.user_id.as_str(), term, app.config.search_all_users, limit)
        .await
        .map_err(Error::from)?;
    let limited = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let results: Vec<_> = rows
        .into_iter()
        .map(|u| {
            crate::without_nulls(
                json!({ "user_id": u.user_id, "display_name": u.displayname, "avatar_url": u.avatar_url }),
            )
        })
        .collect();
    Ok(JsonBody(json!({ "limited": limited, "results": results })))
}
