//! No NUL characters from clients: a middleware in front of every route.
//!
//! PostgreSQL cannot store U+0000 in a text column, so a NUL that reached a column (an event type
//! or state key from the path, a display name, a presence message, a search text) would fail the
//! write with a 500 on PostgreSQL and not on SQLite. Matrix has no use for NUL in any id or text,
//! so requests that carry one — percent-encoded in the path or query, or as `\u0000` in a JSON
//! body's strings — are refused here, before any handler, with the spec's error: `M_INVALID_PARAM`
//! for the URI, `M_BAD_JSON` for the body.

use axum::{
    body::{Body, Bytes},
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use homeserver_core::Error;

use crate::{ApiError, extract::MAX_JSON_BODY};

/// Refuses requests with a NUL in the decoded path or query, or in a string of a JSON body.
pub async fn refuse_nul(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let decoded = |s: &str| percent_encoding::percent_decode_str(s).any(|b| b == 0);
    if decoded(uri.path()) || uri.query().is_some_and(decoded) {
        return ApiError(Error::invalid_param("NUL characters are not allowed")).into_response();
    }
    // Only JSON (or untyped) bodies are read here; media uploads (of any type) stream to their
    // endpoint, which stores them as bytes.
    if uri.path().starts_with("/_matrix/media/") {
        return next.run(req).await;
    }
    let json = match req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(kind) => kind.trim().is_empty() || kind.to_ascii_lowercase().contains("json"),
    };
    if !json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_JSON_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError(Error::too_large("request body is too large")).into_response(),
    };
    if json_has_nul(&bytes) {
        return ApiError(Error::bad_json("NUL characters are not allowed")).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Whether a JSON text has a string containing U+0000. Only texts with a `\u0000` escape are
/// parsed (raw NUL bytes are not valid JSON and fail elsewhere as `M_NOT_JSON`).
fn json_has_nul(bytes: &Bytes) -> bool {
    if !bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return false;
    }
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| walk(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nul_only_in_strings() {
        assert!(json_has_nul(&Bytes::from_static(br#"{"body":"a\u0000b"}"#)));
        assert!(json_has_nul(&Bytes::from_static(br#"{"a\u0000":1}"#)));
        // An escaped backslash followed by "u0000" is the text \u0000, not a NUL.
        assert!(!json_has_nul(&Bytes::from_static(br#"{"body":"\\u0000"}"#)));
        assert!(!json_has_nul(&Bytes::from_static(br#"{"body":"fine"}"#)));
        assert!(!json_has_nul(&Bytes::new()));
    }
}
