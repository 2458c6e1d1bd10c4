//! Outbound HTTP over the standard WASI interface `wasi:http/outgoing-handler` (WASI 0.2).
//!
//! A small blocking client: build a [`Request`], [`send`](Request::send) it, read the
//! [`Response`] whole ([`text`](Response::text), [`bytes`](Response::bytes),
//! [`json`](Response::json), each with a size cap) or in chunks ([`Response::body_reader`]), or
//! as server-sent events ([`SseReader`]).
//!
//! ```ignore
//! use lattice_plugin_sdk::http::Request;
//!
//! let response = Request::get("https://api.example.com/v1/status")
//!     .header("Authorization", "Bearer {secret:api_key}")
//!     .timeout_ms(10_000)
//!     .send()?;
//! let text = response.text(64 * 1024)?;
//! ```
//!
//! # What the host allows
//!
//! The `bot` world does not import `wasi:http`: a component that uses this module imports
//! `wasi:http/outgoing-handler` and `wasi:http/types` (version 0.2.4) besides it, and the host
//! links them only for plugins granted `http_hosts` in `lattice.toml`. A request to a host not
//! in that list, or anything else the host refuses, fails with [`Error::Denied`]`("the host did
//! not allow this request (grants.http_hosts)")`. Other failures are [`Error::Upstream`]
//! (connection, TLS, DNS, timeouts, a response over the host's size limit…), [`Error::Invalid`]
//! (a malformed URL or header), [`Error::Quota`] (a body over the cap the plugin passed, or a
//! request body over the host's) or [`Error::RateLimited`] (past the host's request rate).
//! An HTTP error status is not an `Err`: check [`Response::status`].
//!
//! # Secrets
//!
//! A header value may contain `{secret:NAME}`: the host replaces it, on its side, with the
//! secret configured for the plugin as `NAME = { env = "VAR" }` (read from the server's
//! environment), for a configuration key `NAME` the plugin declared with
//! [`ConfigKind::Secret`](crate::ConfigKind::Secret). The plugin never sees the value, and
//! [`crate::config()`] does not contain it: write `.header("Authorization", "Bearer
//! {secret:api_key}")` and the host sends the token.
//!
//! # Time
//!
//! The calls block the plugin (the wall-clock time counts against `wall_ms_per_call`, the
//! waiting does not count as CPU). [`Request::timeout_ms`] bounds the connection, the wait for
//! the response's first byte and every wait between two body chunks.
//! [`BodyReader::next_chunk_until`] and [`SseReader::next_event_until`] wait for the body only
//! until a deadline the plugin chooses (and can be called again): a plugin streaming a long
//! answer uses them to stop before its `wall_ms_per_call`, or to do other work between chunks.

mod sse;

use std::collections::VecDeque;
use std::time::Instant;

use serde::de::DeserializeOwned;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

pub use sse::{SseEvent, SseParser};

/// What a read with a deadline ([`BodyReader::next_chunk_until`],
/// [`SseReader::next_event_until`]) got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timed<T> {
    /// The read completed: a chunk or event, or `None` at the end of the body.
    Ready(T),
    /// The deadline passed first. Nothing was lost: reading can go on.
    TimedOut,
}

use crate::{Error, Result};

/// The message of a request the host refused ([`ErrorCode::HttpRequestDenied`]).
pub const DENIED: &str = "the host did not allow this request (grants.http_hosts)";

/// How much one [`BodyReader::next_chunk`] asks the host for.
const CHUNK: u64 = 64 * 1024;
/// Request bodies are written in pieces of this size (what `blocking-write-and-flush` accepts).
const WRITE_PIECE: usize = 4096;

/// An HTTP request being built; [`send`](Request::send) performs it.
#[derive(Clone, Debug)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout_ms: Option<u64>,
}

impl Request {
    /// A request with this method (`"GET"`, `"POST"`, `"PUT"`, `"DELETE"`, `"PATCH"`, `"HEAD"`,
    /// `"OPTIONS"`, or any other token) to an `https://` (or `http://`) URL.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            _ => Method::Other(method.to_owned()),
        };
        Request { method, url: url.into(), headers: Vec::new(), body: Vec::new(), timeout_ms: None }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request (set its body with [`body`](Request::body) or [`json`](Request::json)).
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header (repeat the name for several values). The value may contain
    /// `{secret:NAME}`, which the host replaces with the plugin's secret `NAME` (see the
    /// [module documentation](self#secrets)).
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to this JSON, and `Content-Type: application/json` unless a content type
    /// was set.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = value.to_string().into_bytes();
        if !self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
            self.headers.push(("content-type".to_owned(), b"application/json".to_vec()));
        }
        self
    }

    /// Bounds, in milliseconds, each of: connecting, waiting for the response's first byte, and
    /// waiting between two chunks of the body (`request-options` `connect-timeout`,
    /// `first-byte-timeout`, `between-bytes-timeout`; one the host does not support is left
    /// out). Not a deadline for the whole exchange. Without it the host's defaults apply.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Performs the request and waits for the response's status and headers; the body is read
    /// from the [`Response`] afterwards.
    pub fn send(self) -> Result<Response> {
        let target = Target::parse(&self.url)?;
        let fields = Fields::new();
        for (name, value) in &self.headers {
            fields.append(name, value).map_err(|e| header_error(name, e))?;
        }
        let request = OutgoingRequest::new(fields);
        request
            .set_method(&self.method)
            .map_err(|()| Error::Invalid(format!("invalid HTTP method {:?}", self.method)))?;
        request
            .set_scheme(Some(&target.scheme))
            .and_then(|()| request.set_authority(Some(&target.authority)))
            .and_then(|()| request.set_path_with_query(Some(&target.path_with_query)))
            .map_err(|()| Error::Invalid(format!("invalid URL {:?}", self.url)))?;
        let options = self.timeout_ms.map(|ms| {
            let options = RequestOptions::new();
            let ns = Some(ms.saturating_mul(1_000_000));
            // Each setter fails only when the host does not support that timeout.
            let _ = options.set_connect_timeout(ns);
            let _ = options.set_first_byte_timeout(ns);
            let _ = options.set_between_bytes_timeout(ns);
            options
        });
        let outgoing_body =
            request.body().map_err(|()| Error::Internal("the request body was already taken".to_owned()))?;
        let future = outgoing_handler::handle(request, options).map_err(error_code)?;

        // The body goes out after `handle`, so the host can stream it while it sends.
        let written = write_body(&outgoing_body, &self.body);
        let finished = written.and_then(|()| OutgoingBody::finish(outgoing_body, None).map_err(error_code));

        let response = {
            let ready = future.subscribe();
            loop {
                match future.get() {
                    Some(Ok(Ok(response))) => break Ok(response),
                    Some(Ok(Err(code))) => break Err(error_code(code)),
                    Some(Err(())) => break Err(Error::Internal("the response was already taken".to_owned())),
                    None => ready.block(),
                }
            }
        };
        // A failed body write usually means the exchange failed: report the response's error
        // when there is one, the write's otherwise.
        let response = response?;
        finished?;
        Response::new(response)
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<()> {
    let stream = body.write().map_err(|()| Error::Internal("the request body stream was already taken".to_owned()))?;
    for piece in bytes.chunks(WRITE_PIECE) {
        stream.blocking_write_and_flush(piece).map_err(|e| stream_error("sending the request body", e))?;
    }
    Ok(())
    // `stream` is dropped here, before `body` is finished (it is its child).
}

/// A URL split the way `outgoing-request` takes it.
struct Target {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target> {
        let invalid = |why: &str| Error::Invalid(format!("invalid URL {url:?}: {why}"));
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(invalid("spaces or control characters"));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => return Err(invalid("only https:// and http:// are supported")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in URLs are not supported (use a header)"));
        }
        let path_with_query = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        Ok(Target { scheme, authority: authority.to_owned(), path_with_query })
    }
}

/// A response: status and headers, then the body, read once by one of [`text`](Response::text),
/// [`bytes`](Response::bytes), [`json`](Response::json), [`body_reader`](Response::body_reader)
/// or [`SseReader::new`].
#[derive(Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: BodyReader,
}

impl Response {
    fn new(response: IncomingResponse) -> Result<Response> {
        let status = response.status();
        // The headers resource is a child of the response: read it and drop it at once.
        let headers = response.headers().entries();
        let body = response.consume().map_err(|()| Error::Internal("the response body was already taken".to_owned()))?;
        let stream = body.stream().map_err(|()| Error::Internal("the response body stream was already taken".to_owned()))?;
        Ok(Response {
            status,
            headers,
            body: BodyReader { stream: Some(stream), body: Some(body), _response: response },
        })
    }

    /// The status code (an error status is not an `Err`).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header (names are case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .find_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every header, names in lower case, in the order received.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body, to read chunk by chunk.
    pub fn body_reader(self) -> BodyReader {
        self.body
    }

    /// The whole body; [`Error::Quota`] if it is longer than `max` bytes.
    pub fn bytes(self, max: usize) -> Result<Vec<u8>> {
        let mut body = self.body;
        let mut out = Vec::new();
        while let Some(chunk) = body.next_chunk()? {
            if out.len() + chunk.len() > max {
                return Err(Error::Quota(format!("the response body is longer than {max} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The whole body as UTF-8 text ([`Error::Invalid`] if it is not); [`Error::Quota`] if it
    /// is longer than `max` bytes.
    pub fn text(self, max: usize) -> Result<String> {
        Ok(String::from_utf8(self.bytes(max)?)?)
    }

    /// The whole body parsed as JSON; [`Error::Quota`] if it is longer than `max` bytes.
    pub fn json<T: DeserializeOwned>(self, max: usize) -> Result<T> {
        Ok(serde_json::from_slice(&self.bytes(max)?)?)
    }

    /// The body as server-sent events (`text/event-stream`).
    pub fn sse(self) -> SseReader {
        SseReader::new(self)
    }
}

/// A response body, read in chunks as they arrive (`incoming-body.stream` and
/// `input-stream.blocking-read`).
#[derive(Debug)]
pub struct BodyReader {
    // Dropped in this order: the stream is a child of the body.
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _response: IncomingResponse,
}

impl BodyReader {
    /// The next chunk of the body (at most 64 KiB, never empty), waiting for it; `None` at the
    /// end of the body.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        loop {
            match stream.blocking_read(CHUNK) {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => {
                    self.close();
                    return Ok(None);
                }
                Err(e) => {
                    let error = stream_error("reading the response body", e);
                    self.close();
                    return Err(error);
                }
            }
        }
    }

    /// Reads until at least `max` bytes or the end of the body, and returns the first `max` (or
    /// fewer) bytes; what follows is left unread.
    pub fn read_at_most(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(chunk) = self.next_chunk()? else { break };
            out.extend_from_slice(&chunk);
        }
        out.truncate(max);
        Ok(out)
    }

    /// Like [`next_chunk`](BodyReader::next_chunk), but waits at most until `deadline`
    /// ([`Timed::TimedOut`] then, and the body can still be read): for a plugin that must do
    /// something else now and then while a slow body arrives, or stay within its
    /// `wall_ms_per_call`.
    pub fn next_chunk_until(&mut self, deadline: Instant) -> Result<Timed<Option<Vec<u8>>>> {
        let Some(stream) = &self.stream else {
            return Ok(Timed::Ready(None));
        };
        loop {
            match stream.read(CHUNK) {
                Ok(bytes) if !bytes.is_empty() => return Ok(Timed::Ready(Some(bytes))),
                Ok(_) => {}
                Err(StreamError::Closed) => {
                    self.close();
                    return Ok(Timed::Ready(None));
                }
                Err(e) => {
                    let error = stream_error("reading the response body", e);
                    self.close();
                    return Err(error);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Timed::TimedOut);
            }
            // Both pollables are dropped before the next read (`ready` is a child of the stream).
            let ready = stream.subscribe();
            let timer = wasi::clocks::monotonic_clock::subscribe_duration(
                u64::try_from(left.as_nanos()).unwrap_or(u64::MAX),
            );
            wasi::io::poll::poll(&[&ready, &timer]);
        }
    }

    fn close(&mut self) {
        self.stream = None;
        self.body = None;
    }
}

impl Iterator for BodyReader {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// A response body read as server-sent events, with [`SseParser`].
///
/// ```ignore
/// let mut events = Request::post(url).json(&body).send()?.sse();
/// while let Some(event) = events.next_event()? {
///     if event.data == "[DONE]" { break; }
///     // event.event, event.data
/// }
/// ```
#[derive(Debug)]
pub struct SseReader {
    body: BodyReader,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    max_pending: usize,
}

impl SseReader {
    /// Reads `response`'s body as an event stream. Its status is not checked: look at
    /// [`Response::status`] first.
    pub fn new(response: Response) -> Self {
        SseReader { body: response.body, parser: SseParser::new(), ready: VecDeque::new(), max_pending: 1 << 20 }
    }

    /// The most bytes held for one unfinished event before [`next_event`](SseReader::next_event)
    /// fails with [`Error::Quota`] (default 1 MiB).
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// The next event, waiting for it; `None` when the body ends (an event not terminated by a
    /// blank line is dropped, as the event-stream rules say).
    pub fn next_event(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let Some(chunk) = self.body.next_chunk()? else {
                return Ok(None);
            };
            self.ready.extend(self.parser.push(&chunk));
            if self.parser.buffered_len() > self.max_pending {
                self.body.close();
                return Err(Error::Quota(format!("a server-sent event is longer than {} bytes", self.max_pending)));
            }
        }
    }
    /// Like [`next_event`](SseReader::next_event), but waits at most until `deadline`
    /// ([`Timed::TimedOut`] then, and reading can go on; a partly received event is kept).
    pub fn next_event_until(&mut self, deadline: Instant) -> Result<Timed<Option<SseEvent>>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Timed::Ready(Some(event)));
            }
            let chunk = match self.body.next_chunk_until(deadline)? {
                Timed::Ready(Some(chunk)) => chunk,
                Timed::Ready(None) => return Ok(Timed::Ready(None)),
                Timed::TimedOut => return Ok(Timed::TimedOut),
            };
            self.ready.extend(self.parser.push(&chunk));
            if self.parser.buffered_len() > self.max_pending {
                self.body.close();
                return Err(Error::Quota(format!("a server-sent event is longer than {} bytes", self.max_pending)));
            }
        }
    }
}

impl Iterator for SseReader {
    type Item = Result<SseEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

fn header_error(name: &str, e: HeaderError) -> Error {
    match e {
        HeaderError::Forbidden => Error::Invalid(format!("the header {name:?} may not be set")),
        _ => Error::Invalid(format!("the header {name:?} or its value is malformed")),
    }
}

fn stream_error(doing: &str, e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Upstream(format!("{doing}: the connection was closed")),
        StreamError::LastOperationFailed(e) => match wasi::http::types::http_error_code(&e) {
            Some(code) => error_code(code),
            None => Error::Upstream(format!("{doing}: {}", e.to_debug_string())),
        },
    }
}

/// Maps a `wasi:http` error code to the SDK's [`Error`].
pub fn error_code(code: ErrorCode) -> Error {
    use ErrorCode as E;
    let upstream = |s: &str| Error::Upstream(s.to_owned());
    match code {
        E::HttpRequestDenied => Error::Denied(DENIED.to_owned()),
        E::DestinationIpProhibited => {
            Error::Denied("the host did not allow this destination address (private or loopback)".to_owned())
        }
        E::HttpRequestMethodInvalid => Error::Invalid("the host refused the request's method".to_owned()),
        E::HttpRequestUriInvalid => Error::Invalid("the host refused the request's URL".to_owned()),
        E::HttpRequestUriTooLong => Error::Invalid("the request's URL is too long".to_owned()),
        E::HttpRequestBodySize(limit) => Error::Quota(match limit {
            Some(n) => format!("the request body is over the host's limit of {n} bytes"),
            None => "the request body is over the host's limit".to_owned(),
        }),
        E::HttpRequestHeaderSectionSize(_) | E::HttpRequestHeaderSize(_) => {
            Error::Invalid("the request's headers are too large".to_owned())
        }
        E::HttpResponseBodySize(limit) => Error::Upstream(match limit {
            Some(n) => format!("the response body is over the host's limit of {n} bytes"),
            None => "the response body is over the host's limit".to_owned(),
        }),
        E::DnsTimeout => upstream("DNS lookup timed out"),
        E::DnsError(p) => Error::Upstream(format!(
            "DNS lookup failed{}",
            p.rcode.map(|r| format!(" ({r})")).unwrap_or_default()
        )),
        E::DestinationNotFound => upstream("the destination host was not found"),
        E::DestinationUnavailable => upstream("the destination is unavailable"),
        E::DestinationIpUnroutable => upstream("the destination address is unroutable"),
        E::ConnectionRefused => upstream("connection refused"),
        E::ConnectionTerminated => upstream("the connection was closed"),
        E::ConnectionTimeout => upstream("connecting timed out"),
        E::ConnectionReadTimeout => upstream("reading from the connection timed out"),
        E::ConnectionWriteTimeout => upstream("writing to the connection timed out"),
        // What the host answers past its request rate (2 per second, bursts of 20): a token is
        // back within half a second. Returned from a handler, the host retries after that.
        E::ConnectionLimitReached => Error::RateLimited(500),
        E::TlsProtocolError => upstream("TLS protocol error"),
        E::TlsCertificateError => upstream("the server's TLS certificate was not accepted"),
        E::TlsAlertReceived(p) => Error::Upstream(format!(
            "TLS alert received{}",
            p.alert_message.map(|m| format!(": {m}")).unwrap_or_default()
        )),
        E::HttpResponseIncomplete => upstream("the response was cut short"),
        E::HttpResponseTimeout => upstream("the response timed out"),
        E::HttpProtocolError => upstream("HTTP protocol error"),
        E::InternalError(Some(message)) => Error::Upstream(message),
        other => Error::Upstream(format!("HTTP request failed: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{Scheme, Target};

    fn target(url: &str) -> (String, String, String) {
        let t = Target::parse(url).unwrap();
        let scheme = match t.scheme {
            Scheme::Https => "https".to_owned(),
            Scheme::Http => "http".to_owned(),
            Scheme::Other(s) => s,
        };
        (scheme, t.authority, t.path_with_query)
    }

    fn parts(scheme: &str, authority: &str, path: &str) -> (String, String, String) {
        (scheme.to_owned(), authority.to_owned(), path.to_owned())
    }

    #[test]
    fn urls() {
        assert_eq!(target("https://api.example.com"), parts("https", "api.example.com", "/"));
        assert_eq!(target("HTTPS://api.example.com/v1/x?a=b"), parts("https", "api.example.com", "/v1/x?a=b"));
        assert_eq!(target("http://llm.internal:8443?q"), parts("http", "llm.internal:8443", "/?q"));
        assert_eq!(target("https://[::1]:8443/p#frag"), parts("https", "[::1]:8443", "/p"));
        for bad in ["ftp://x/", "api.example.com/x", "https:///x", "https://u:p@host/", "https://h/a b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
