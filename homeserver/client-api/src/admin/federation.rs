//! Federation destinations, as Synapse's admin API shows them: `GET
//! /_synapse/admin/v1/federation/destinations` (paged), `GET …/destinations/{destination}` and
//! `POST …/destinations/{destination}/reset_connection` (clears the backoff and sends at once).
//! Besides Synapse's keys (`retry_interval`, `retry_last_ts`, `failure_ts` — when the current
//! run of failures began — and `last_successful_stream_ordering`), each entry has Lattice's own: `failures`, `retry_at_ts`,
//! `last_success_ts` and `queued` (positions waiting to be delivered).

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use homeserver_core::{Error, time::now_millis};
use homeserver_http::{ApiError, Authenticated};
use homeserver_storage::destinations::DestinationRow;
use ruma::ServerName;
use serde_json::{Value, json};

use super::{Page, query, require_admin};
use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_synapse/admin/v1/federation/destinations", get(list))
        .route("/_synapse/admin/v1/federation/destinations/{destination}", get(details))
        .route("/_synapse/admin/v1/federation/destinations/{destination}/reset_connection", post(reset))
}

/// A destination as the admin API shows it.
fn destination_json(row: &DestinationRow) -> Value {
    let now = now_millis() as i64;
    let backing_off = row.failures > 0;
    json!({
        "destination": row.destination,
        "retry_last_ts": 0,
        "retry_interval": if backing_off { (row.retry_at - now).max(0) } else { 0 },
        "failure_ts": row.failure_ts,
        "last_successful_stream_ordering": Value::Null,
        "failures": row.failures,
        "retry_at_ts": row.retry_at,
        "last_success_ts": row.last_success_ts,
        "queued": row.queued,
    })
}

async fn list(
    State(app): State<App>,
    auth: Authenticated,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let page = query(page)?;
    let rows = app.db.destinations().await.map_err(Error::from)?;
    let total = rows.len();
    let from = page.offset()? as usize;
    let limit = page.limit(100)?.max(1) as usize;
    let chunk: Vec<Value> = rows.iter().skip(from).take(limit).map(destination_json).collect();
    let mut body = json!({ "destinations": chunk, "total": total });
    if from + limit < total {
        body["next_token"] = json!((from + limit).to_string());
    }
    Ok(Json(body))
}

async fn details(
    State(app): State<App>,
    auth: Authenticated,
    Path(destination): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let row = app.db.destination(&destination).await.map_err(Error::from)?;
    let row = row.ok_or_else(|| Error::not_found("Unknown destination"))?;
    Ok(Json(destination_json(&row)))
}

async fn reset(
    State(app): State<App>,
    auth: Authenticated,
    Path(destination): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(auth)?;
    let name = ServerName::parse(&destination).map_err(|_| Error::invalid_param("not a server name"))?;
    if !app.rooms.retry_destination(name).await? {
        return Err(Error::not_found("Unknown destination").into());
    }
    Ok(Json(json!({})))
}
