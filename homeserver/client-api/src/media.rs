//! The media repository's client endpoints (spec: "Content repository", authenticated media):
//! uploads (`POST /_matrix/media/v3/upload`, `POST /_matrix/media/v1/create` then `PUT
//! /_matrix/media/v3/upload/{server}/{id}`), `GET /_matrix/client/v1/media/config` and
//! `/download/{server}/{id}[/{fileName}]`, `/thumbnail/{server}/{id}`, and the legacy
//! unauthenticated `/_matrix/media/v3/download|thumbnail` — which serve only this server's
//! media uploaded while `[media] legacy_unauthenticated_download` was on, as Synapse freezes
//! it. Other servers' media is fetched and cached by the repository. The work is
//! `homeserver_media::MediaRepo`'s; downloads stream the file with headers that keep it from
//! running script on our origin.

use std::collections::HashMap;

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use homeserver_core::Error;
use homeserver_http::{ApiError, Authenticated};
use homeserver_media::{Thumbnail, serving, thumbnail::Method};
use homeserver_storage::media::MediaRow;
use serde_json::{Value, json};

use crate::App;

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/media/v1/create", post(create))
        .route("/_matrix/media/v3/upload/{server}/{id}", put(fill))
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/media/v3/config", get(config))
        .route("/_matrix/client/v1/media/download/{server}/{id}", get(download))
        .route("/_matrix/client/v1/media/download/{server}/{id}/{filename}", get(download_as))
        .route("/_matrix/media/v3/download/{server}/{id}", get(legacy_download))
        .route("/_matrix/media/v3/download/{server}/{id}/{filename}", get(legacy_download_as))
        // The r0 paths older clients (matrix-nio) still use.
        .route("/_matrix/media/r0/upload", post(upload))
        .route("/_matrix/media/r0/config", get(config))
        .route("/_matrix/media/r0/download/{server}/{id}", get(legacy_download))
        .route("/_matrix/media/r0/download/{server}/{id}/{filename}", get(legacy_download_as))
        .route("/_matrix/client/v1/media/thumbnail/{server}/{id}", get(thumbnail))
        .route("/_matrix/media/v3/thumbnail/{server}/{id}", get(legacy_thumbnail))
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}?width=&height=&method=&animated=`
async fn thumbnail(
    State(app): State<App>,
    _auth: Authenticated,
    Path((server, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&app, &server, &id, &query, false).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (no authentication)
async fn legacy_thumbnail(
    State(app): State<App>,
    Path((server, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_thumbnail(&app, &server, &id, &query, true).await
}

/// A thumbnail request's size, method and animation preference.
pub struct ThumbnailQuery {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

impl ThumbnailQuery {
    /// From the query string: `width` and `height` positive integers, `method` `crop` or
    /// `scale` (default), `animated` `true` or `false`.
    pub fn parse(query: &HashMap<String, String>) -> Result<ThumbnailQuery, Error> {
        let dimension = |name: &str| -> Result<u32, Error> {
            let value = query.get(name).ok_or_else(|| Error::missing_param(format!("{name} is required")))?;
            match value.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::invalid_param(format!("{name} must be a positive integer"))),
            }
        };
        let method = Method::parse(query.get("method").map(String::as_str))
            .ok_or_else(|| Error::invalid_param("method must be crop or scale"))?;
        let animated = match query.get("animated").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(Error::invalid_param("animated must be true or false")),
        };
        Ok(ThumbnailQuery { width: dimension("width")?, height: dimension("height")?, method, animated })
    }
}

async fn serve_thumbnail(
    app: &App,
    server: &str,
    id: &str,
    query: &HashMap<String, String>,
    legacy: bool,
) -> Result<Response, ApiError> {
    let wanted = ThumbnailQuery::parse(query)?;
    let row = media_row(app, server, id, legacy).await?;
    let answer = app
        .media
        .thumbnail(row, wanted.width, wanted.height, wanted.method, wanted.animated)
        .await
        .map_err(Error::from)?;
    match answer {
        Thumbnail::Original(row) => stream_row(app, &row, None).await,
        Thumbnail::Generated(thumbnail) => {
            let file = app.media.open_content(&thumbnail.sha256).await.map_err(Error::from)?;
            let mut response = Response::new(Body::from_stream(homeserver_media::store::chunks(file)));
            let headers = response.headers_mut();
            set_headers(headers, &thumbnail.content_type, thumbnail.size, None);
            Ok(response)
        }
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

fn guests_may_not(auth: &Authenticated) -> Result<(), Error> {
    match auth.0.is_guest {
        true => {
            Err(Error::new(homeserver_core::ErrorKind::GuestAccessForbidden, "Guests cannot upload media"))
        }
        false => Ok(()),
    }
}

/// `POST /_matrix/media/v3/upload?filename=`
async fn upload(
    State(app): State<App>,
    auth: Authenticated,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    guests_may_not(&auth)?;
    let filename = query.get("filename").map(String::as_str);
    let uploaded = app
        .media
        .upload(&auth.0.user_id, content_type(&headers), filename, body.into_data_stream())
        .await
        .map_err(Error::from)?;
    Ok(Json(json!({ "content_uri": uploaded.mxc })))
}

/// `POST /_matrix/media/v1/create`
async fn create(State(app): State<App>, auth: Authenticated) -> Result<Json<Value>, ApiError> {
    guests_may_not(&auth)?;
    let (uploaded, expires) = app.media.create(&auth.0.user_id).await.map_err(Error::from)?;
    Ok(Json(json!({ "content_uri": uploaded.mxc, "unused_expires_at": expires })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}?filename=`
async fn fill(
    State(app): State<App>,
    auth: Authenticated,
    Path((server, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    guests_may_not(&auth)?;
    let filename = query.get("filename").map(String::as_str);
    app.media
        .fill(&auth.0.user_id, &server, &id, content_type(&headers), filename, body.into_data_stream())
        .await
        .map_err(Error::from)?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v1/media/config` (and the legacy `/_matrix/media/v3/config`)
async fn config(State(app): State<App>, _auth: Authenticated) -> Json<Value> {
    Json(json!({ "m.upload.size": app.media.config.max_upload_bytes }))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(app): State<App>,
    _auth: Authenticated,
    Path((server, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    serve(&app, &server, &id, None, false).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    State(app): State<App>,
    _auth: Authenticated,
    Path((server, id, filename)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    serve(&app, &server, &id, Some(filename), false).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (no authentication)
async fn legacy_download(
    State(app): State<App>,
    Path((server, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    serve(&app, &server, &id, None, true).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (no authentication)
async fn legacy_download_as(
    State(app): State<App>,
    Path((server, id, filename)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    serve(&app, &server, &id, Some(filename), true).await
}

/// Streams stored media with its safe headers; `legacy`: only media uploaded while the
/// unauthenticated endpoints were on, and only while they are.
async fn serve(
    app: &App,
    server: &str,
    id: &str,
    filename: Option<String>,
    legacy: bool,
) -> Result<Response, ApiError> {
    let row = media_row(app, server, id, legacy).await?;
    stream_row(app, &row, filename.as_deref()).await
}

/// The media a request may see: for the legacy unauthenticated endpoints, only media
/// uploaded while they were on (never other servers' media), and only while they are.
async fn media_row(app: &App, server: &str, id: &str, legacy: bool) -> Result<MediaRow, ApiError> {
    if legacy && server != app.media.server_name() {
        return Err(Error::not_found("Unknown media (other servers' media needs authentication)").into());
    }
    let row = app.media.get(server, id).await.map_err(Error::from)?;
    if legacy && !(app.media.config.legacy_unauthenticated && row.legacy_visible) {
        return Err(Error::not_found(
            "Unknown media (this server serves new media to authenticated requests only)",
        )
        .into());
    }
    Ok(row)
}

/// Streams a media row's content with its safe headers (`filename` over the stored one).
async fn stream_row(app: &App, row: &MediaRow, filename: Option<&str>) -> Result<Response, ApiError> {
    let file = app.media.open(row).await.map_err(Error::from)?;
    let mut response = Response::new(Body::from_stream(homeserver_media::store::chunks(file)));
    set_headers(response.headers_mut(), &row.content_type, row.size, filename.or(row.filename.as_deref()));
    Ok(response.into_response())
}

fn set_headers(headers: &mut HeaderMap, content_type: &str, size: i64, filename: Option<&str>) {
    let value = |s: &str| {
        HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
    };
    headers.insert(header::CONTENT_TYPE, value(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size.max(0) as u64));
    let disposition = serving::disposition(content_type, filename);
    if let Ok(disposition) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; script-src 'none'; object-src 'none'; style-src 'unsafe-inline'; media-src 'self'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400, immutable"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
}
