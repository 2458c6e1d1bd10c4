//! Webhooks: HTTP requests to `/_lattice/plugins/<id>/…` handed to a plugin granted `webhooks`
//! (`webhook-guest.on-http-request`), and its answer made safe to serve from the server's
//! origin: a status from 200 to 599, only a few harmless headers, bodies of at most
//! [`MAX_BODY`] both ways, and at most 20 requests a second per plugin (bursts of 50).

use crate::{
    PluginHost,
    bindings::webhook_guest::{HttpRequest, HttpResponse},
    plugin::truncate,
};

/// Largest request or response body.
pub const MAX_BODY: usize = 1 << 20;
/// Response headers a plugin may set; everything else it sets is dropped.
const PASSED_HEADERS: [&str; 3] = ["content-type", "cache-control", "retry-after"];
/// Most request headers handed over.
const MAX_HEADERS: usize = 100;

/// A request for a plugin.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: String,
    /// After `/_lattice/plugins/<id>`: `/` or longer.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A plugin's answer, checked.
#[derive(Debug, Clone)]
pub struct WebhookResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a webhook was not answered by its plugin.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such plugin, or it does not take webhooks.
    #[error("no webhook here")]
    NotFound,
    #[error("request body over {MAX_BODY} bytes")]
    TooLarge,
    #[error("too many requests")]
    RateLimited(u32),
    /// Disabled, suspended by its breaker, or busy for longer than a call may take.
    #[error("the plugin is not available: {0}")]
    Unavailable(String),
    /// It failed, or answered something the server does not pass on.
    #[error("the plugin failed: {0}")]
    Failed(String),
}

impl PluginHost {
    /// Hands a request to plugin `id` and returns its checked answer.
    pub async fn webhook(&self, id: &str, request: WebhookRequest) -> Result<WebhookResponse, WebhookError> {
        let plugin = self.plugin(id).map_err(|_| WebhookError::NotFound)?;
        let ctx = &plugin.ctx;
        if !ctx.grants.webhooks {
            return Err(WebhookError::NotFound);
        }
        if request.body.len() > MAX_BODY {
            return Err(WebhookError::TooLarge);
        }
        if plugin.health.lock().expect("health poisoned").disabled {
            return Err(WebhookError::Unavailable("disabled".into()));
        }
        if plugin.suspended_until().is_some() {
            return Err(WebhookError::Unavailable("suspended after repeated crashes".into()));
        }
        ctx.take(|b| &mut b.webhooks, 1.0).map_err(|e| match e {
            crate::bindings::types::Error::RateLimited(ms) => WebhookError::RateLimited(ms),
            _ => WebhookError::RateLimited(1000),
        })?;
        ctx.count("webhook_requests", 1);
        let request = HttpRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers.into_iter().take(MAX_HEADERS).collect(),
            body: request.body,
        };
        let response = plugin.webhook(request).await.map_err(|err| match err {
            crate::instance::CallError::Busy => WebhookError::Unavailable("busy".into()),
            other => WebhookError::Failed(truncate(other.describe())),
        })?;
        checked(response)
    }
}

/// The plugin's answer as the server passes it on.
fn checked(response: HttpResponse) -> Result<WebhookResponse, WebhookError> {
    if !(200..=599).contains(&response.status) {
        return Err(WebhookError::Failed(format!("answered status {}", response.status)));
    }
    if response.body.len() > MAX_BODY {
        return Err(WebhookError::Failed(format!("answered a body over {MAX_BODY} bytes")));
    }
    let headers = response
        .headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, value)| PASSED_HEADERS.contains(&name.as_str()) && !value.contains(['\r', '\n']))
        .collect();
    Ok(WebhookResponse { status: response.status, headers, body: response.body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_only_harmless_headers_and_valid_statuses() {
        let response = HttpResponse {
            status: 201,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Set-Cookie".into(), "session=evil".into()),
                ("Access-Control-Allow-Origin".into(), "*".into()),
            ],
            body: b"{}".to_vec(),
        };
        let ok = checked(response).unwrap();
        assert_eq!(ok.headers, [("content-type".to_owned(), "application/json".to_owned())]);
        let bad = HttpResponse { status: 101, headers: vec![], body: vec![] };
        assert!(matches!(checked(bad), Err(WebhookError::Failed(_))));
        let huge = HttpResponse { status: 200, headers: vec![], body: vec![0; MAX_BODY + 1] };
        assert!(matches!(checked(huge), Err(WebhookError::Failed(_))));
    }
}
