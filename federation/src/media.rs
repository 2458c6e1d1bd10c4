//! Media over federation (spec: server-server "Content repository"): serving this server's
//! media to other servers (`GET /_matrix/federation/v1/media/download/{mediaId}` and
//! `/thumbnail/{mediaId}`, `multipart/mixed`, streamed), and [`FederatedMedia`], the
//! repository's fetcher of other servers' media (a `Location` answer followed through the
//! same address guard). Both stream: the body never sits whole in memory.

use std::sync::Arc;

use crate::{FederationClient, FederationState};
use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::Response,
};
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use homeserver_core::Error;
use homeserver_http::{ApiError, RawResponse, RouterExt, Ruma};
use homeserver_media::{
    MediaRepo, RemoteContent, RemoteError, RemoteMedia, Thumbnail, multipart, remote::disposition_filename,
    serving, thumbnail::Method,
};
use ruma::{
    ServerName,
    api::federation::authenticated_media::{get_content, get_content_thumbnail},
    media::Method as RumaMethod,
};

pub fn routes(router: axum::Router<FederationState>) -> axum::Router<FederationState> {
    router.ruma_route(download).ruma_route(thumbnail)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: this server's own media only.
async fn download(
    state: FederationState,
    req: Ruma<get_content::v1::Request>,
) -> Result<RawResponse, ApiError> {
    let row = state.media.get_local(&req.body.media_id).await.map_err(Error::from)?;
    let sha256 = row.sha256.as_deref().unwrap_or_default();
    let disposition = serving::disposition(&row.content_type, row.filename.as_deref());
    Ok(multipart_response(&state.media, sha256, &row.content_type, &disposition, row.size).await?)
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    state: FederationState,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<RawResponse, ApiError> {
    let row = state.media.get_local(&req.body.media_id).await.map_err(Error::from)?;
    let method = match req.body.method {
        Some(RumaMethod::Crop) => Method::Crop,
        _ => Method::Scale,
    };
    let dimension = |n: ruma::UInt| u32::try_from(u64::from(n)).unwrap_or(u32::MAX).max(1);
    let (width, height) = (dimension(req.body.width), dimension(req.body.height));
    let animated = req.body.animated.unwrap_or(false);
    let answer = state.media.thumbnail(row, width, height, method, animated).await.map_err(Error::from)?;
    let (sha256, content_type, size) = match &answer {
        Thumbnail::Original(row) => {
            (row.sha256.clone().unwrap_or_default(), row.content_type.clone(), row.size)
        }
        Thumbnail::Generated(t) => (t.sha256.clone(), t.content_type.clone(), t.size),
    };
    let disposition = serving::disposition(&content_type, None);
    Ok(multipart_response(&state.media, &sha256, &content_type, &disposition, size).await?)
}

/// Stored content as the two-part body: `{}` metadata, then the bytes with their headers.
async fn multipart_response(
    media: &MediaRepo,
    sha256: &str,
    content_type: &str,
    disposition: &str,
    size: i64,
) -> Result<RawResponse, Error> {
    let file = media.open_content(sha256).await?;
    let encoder = multipart::Encoder::new();
    let head = encoder.head(&[("Content-Type", content_type), ("Content-Disposition", disposition)]);
    let tail = encoder.tail();
    let length = head.len() as u64 + size.max(0) as u64 + tail.len() as u64;
    let content = homeserver_media::store::chunks(file);
    let body = futures::stream::iter([Ok(head)]).chain(content).chain(futures::stream::iter([Ok(tail)]));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    let value = HeaderValue::from_str(&encoder.content_type()).map_err(|e| Error::internal(e.to_string()))?;
    headers.insert(header::CONTENT_TYPE, value);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(RawResponse(response))
}

/// Other servers' media, fetched over federation for the media repository.
pub struct FederatedMedia {
    client: FederationClient,
}

impl FederatedMedia {
    pub fn new(client: FederationClient) -> Arc<FederatedMedia> {
        Arc::new(FederatedMedia { client })
    }

    async fn fetch(&self, origin: &ServerName, media_id: &str) -> Result<RemoteContent, RemoteError> {
        let unavailable = |e: &dyn std::fmt::Display| RemoteError::Unavailable(e.to_string());
        let request = get_content::v1::Request::new(media_id.to_owned());
        let response = self.client.send_streaming(origin, request).await.map_err(|e| unavailable(&e))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(RemoteError::NotFound),
            504 => return Err(RemoteError::NotYetUploaded),
            status => return Err(RemoteError::Unavailable(format!("the server answered {status}"))),
        }
        let content_type = header_of(&response, header::CONTENT_TYPE).unwrap_or_default();
        let boundary = multipart::boundary_of(&content_type)
            .ok_or_else(|| RemoteError::Unavailable("the answer is not multipart/mixed".into()))?;
        let part = multipart::split(body_of(response), &boundary).await.map_err(|e| unavailable(&e))?;
        if let Some(location) = part.header("location") {
            // The content is elsewhere: fetched from there, described by that answer's headers.
            let response = self.client.get_url(location).await.map_err(|e| unavailable(&e))?;
            if !response.status().is_success() {
                return Err(RemoteError::Unavailable(format!(
                    "the media's location answered {}",
                    response.status()
                )));
            }
            let filename =
                header_of(&response, header::CONTENT_DISPOSITION).as_deref().and_then(disposition_filename);
            let content_type = header_of(&response, header::CONTENT_TYPE);
            return Ok(RemoteContent { content_type, filename, body: body_of(response) });
        }
        let filename = part.header("content-disposition").and_then(disposition_filename);
        let content_type = part.header("content-type").map(str::to_owned);
        let body = part.body.map(|chunk| chunk.map_err(|e| e.to_string())).boxed();
        Ok(RemoteContent { content_type, filename, body })
    }
}

impl RemoteMedia for FederatedMedia {
    fn download<'a>(
        &'a self,
        origin: &'a ServerName,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<RemoteContent, RemoteError>> {
        Box::pin(self.fetch(origin, media_id))
    }
}

fn header_of(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A response's body as a stream of chunks.
fn body_of(response: reqwest::Response) -> futures::stream::BoxStream<'static, Result<Bytes, String>> {
    futures::stream::unfold(Some(response), |response| async move {
        let mut response = response?;
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(response))),
            Ok(None) => None,
            Err(err) => Some((Err(err.to_string()), None)),
        }
    })
    .boxed()
}
