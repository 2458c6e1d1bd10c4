//! The Synapse-compatible admin API (`/_synapse/admin`), the subset admin tools such as the
//! synapse-admin web UI use, with Synapse's JSON shapes:
//! - [`register`]: shared-secret registration (`v1/register`), for bootstrapping and SyTest.
//! - [`users`]: `v2/users` list/get/create/modify, `v1/deactivate`, `v1/reset_password`,
//!   `v1/users/{id}/joined_rooms`, and the client-server `admin/whois`.
//! - [`rooms`]: `v1/rooms` list, details, members, and `DELETE` (kick everyone, block, purge);
//!   `v1/event_reports`.
//! - [`federation`]: `v1/federation/destinations` list, details and `reset_connection`.
//! - [`media`]: quarantine, deletion and purging the cache of remote media.
//!
//! Everything but registration and the server version needs a server admin's access token; anyone else gets
//! `M_FORBIDDEN`. Query strings and bodies that do not parse are `M_INVALID_PARAM`/`M_BAD_JSON`
//! like everywhere else, never axum's plain-text rejections.

pub mod federation;
pub mod media;
pub mod register;
pub mod rooms;
pub mod users;

use axum::{
    Json, Router,
    extract::{Query, rejection::QueryRejection},
    routing::get,
};
use homeserver_core::Error;
use homeserver_http::{Authenticated, Session};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;

pub use register::Nonces;

pub fn routes(router: Router<App>) -> Router<App> {
    let router = router.route("/_synapse/admin/v1/server_version", get(server_version));
    let router = register::routes(router);
    let router = users::routes(router);
    let router = federation::routes(router);
    let router = media::routes(router);
    rooms::routes(router)
}

/// The session, if it belongs to a server admin.
pub fn require_admin(Authenticated(session): Authenticated) -> Result<Session, Error> {
    if !session.is_admin {
        return Err(Error::forbidden("You are not a server admin"));
    }
    Ok(session)
}

/// A query string parsed into `T`, or `M_INVALID_PARAM`.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    query.map(|Query(q)| q).map_err(|e| Error::invalid_param(e.body_text()))
}

/// A JSON body parsed into `T` (an empty body is `T::default()`), or `M_NOT_JSON`/`M_BAD_JSON`.
pub(crate) fn body<T: for<'de> Deserialize<'de> + Default>(raw: &[u8]) -> Result<T, Error> {
    if raw.is_empty() {
        return Ok(T::default());
    }
    let value: Value = serde_json::from_slice(raw)
        .map_err(|_| Error::new(homeserver_core::ErrorKind::NotJson, "request body is not JSON"))?;
    serde_json::from_value(value).map_err(|e| Error::bad_json(format!("invalid request body: {e}")))
}

/// Pagination shared by the lists: `from` (an offset) and `limit`, `dir` `f` or `b`.
#[derive(Deserialize, Default)]
pub(crate) struct Page {
    pub from: Option<i64>,
    pub limit: Option<i64>,
    pub dir: Option<String>,
}

impl Page {
    pub fn offset(&self) -> Result<i64, Error> {
        match self.from {
            Some(from) if from < 0 => Err(Error::invalid_param("from must not be negative")),
            from => Ok(from.unwrap_or(0)),
        }
    }

    pub fn limit(&self, default: i64) -> Result<i64, Error> {
        match self.limit {
            Some(limit) if limit < 0 => Err(Error::invalid_param("limit must not be negative")),
            limit => Ok(limit.unwrap_or(default).min(1000)),
        }
    }

    pub fn descending(&self) -> Result<bool, Error> {
        match self.dir.as_deref() {
            None | Some("f") => Ok(false),
            Some("b") => Ok(true),
            Some(_) => Err(Error::invalid_param("dir must be f or b")),
        }
    }
}

/// `GET /_synapse/admin/v1/server_version` (public, as in Synapse: tools probe it before login)
async fn server_version() -> Json<Value> {
    Json(json!({ "server_version": format!("Lattice {}", env!("CARGO_PKG_VERSION")) }))
}
