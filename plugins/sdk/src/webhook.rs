//! Webhooks: what [`crate::Plugin::on_http_request`] receives and answers, and helpers for
//! common answers and for reading the request.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A request to `/_lattice/plugins/<id>/…`: method, the path after the id, the query string,
/// headers (names in lower case) and body.
pub use crate::bindings::exports::lattice::plugin::webhook_guest::HttpRequest;
/// An answer: status (200–599), headers (only `content-type`, `cache-control` and `retry-after`
/// reach the caller) and body (at most 1 MiB).
pub use crate::bindings::exports::lattice::plugin::webhook_guest::HttpResponse;

/// A plain-text answer.
pub fn text(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// A JSON answer.
pub fn json(status: u16, body: &Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

/// The value of a header (names are lower case), if present.
pub fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_is(request: &HttpRequest, token: &str) -> bool {
    let Some(given) = header(request, "authorization").and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body parsed as JSON into `T`.
pub fn json_body<T: DeserializeOwned>(request: &HttpRequest) -> Result<T, serde_json::Error> {
    serde_json::from_slice(&request.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: "/hook".into(),
            query: String::new(),
            headers: auth.map(|a| ("authorization".to_owned(), a.to_owned())).into_iter().collect(),
            body: br#"{"text":"hi"}"#.to_vec(),
        }
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_is(&request(Some("Bearer s3cret")), "s3cret"));
        assert!(!bearer_is(&request(Some("Bearer s3cre")), "s3cret"));
        assert!(!bearer_is(&request(Some("Basic s3cret")), "s3cret"));
        assert!(!bearer_is(&request(None), "s3cret"));
        let body: Value = json_body(&request(None)).unwrap();
        assert_eq!(body["text"], "hi");
    }
}
