//! Webhooks for plugins: any request to `/_lattice/plugins/{id}` or below it goes to plugin
//! `id` if it is granted `webhooks` (`plugins::webhook`). No Matrix authentication: the plugin
//! authenticates its callers. Its answer is served with headers that keep it from running
//! script on the server's origin (`Content-Security-Policy: sandbox`, `nosniff`).

use axum::{
    Router,
    body::Body,
    extract::{Path, Request},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use homeserver_client_api::App;
use homeserver_core::{Error, ErrorKind};
use homeserver_http::ApiError;
use plugins::{PluginHost, WebhookError, WebhookRequest, webhook::MAX_BODY};

/// Adds the webhook routes (none without plugins).
pub fn routes(router: Router<App>, host: Option<PluginHost>) -> Router<App> {
    let Some(host) = host else { return router };
    let h = host.clone();
    let router = router.route(
        "/_lattice/plugins/{id}",
        any(move |Path(id): Path<String>, req: Request| serve(h.clone(), id, "/".to_owned(), req)),
    );
    router.route(
        "/_lattice/plugins/{id}/{*rest}",
        any(move |Path((id, rest)): Path<(String, String)>, req: Request| {
            serve(host.clone(), id, format!("/{rest}"), req)
        }),
    )
}

async fn serve(host: PluginHost, id: String, path: String, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        Error::new(ErrorKind::TooLarge, format!("request bodies are at most {MAX_BODY} bytes"))
    })?;
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let request = WebhookRequest {
        method: parts.method.to_string(),
        path,
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body: body.to_vec(),
    };
    let answer = host.webhook(&id, request).await.map_err(|err| {
        tracing::warn!(plugin = %id, "webhook not answered: {err}");
        api_error(err)
    })?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response.into_response())
}

/// The one mapping from webhook failures to Matrix errors.
fn api_error(err: WebhookError) -> ApiError {
    let status = |status: u16| ErrorKind::Remote { status, errcode: "M_UNKNOWN".into() };
    ApiError(match err {
        WebhookError::NotFound => Error::not_found("no webhook here"),
        WebhookError::TooLarge => Error::new(ErrorKind::TooLarge, err.to_string()),
        WebhookError::RateLimited(ms) => {
            Error::new(ErrorKind::LimitExceeded { retry_after_ms: ms.into() }, "too many requests")
        }
        WebhookError::Unavailable(_) => Error::new(ErrorKind::Unavailable, err.to_string()),
        WebhookError::Failed(_) => Error::new(status(502), "the plugin failed to answer"),
    })
}
