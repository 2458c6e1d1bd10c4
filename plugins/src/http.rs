//! Outbound HTTP for plugins, through the standard `wasi:http/outgoing-handler`: linked only
//! for plugins granted `http_hosts`, and every request checked here before it leaves — https
//! to a granted host (and port), at most 2 per second (bursts of 20), request bodies up to
//! 8 MiB, responses cut off past 16 MiB, at most 8 requests open at once. Plain http and private or loopback addresses (checked
//! on the literal and on every address a name resolves to) only with the server's `[testing]
//! allow_private_destinations`. Credential headers (`Authorization`, `X-Api-Key`, `Api-Key`) may
//! name a secret as `{secret:NAME}`: the host puts the value in on the way out and takes any
//! response header that echoes it away, so the plugin does not hold it (a granted server that
//! echoes it in a body could still hand it back: grant only hosts trusted with the key). Requests are sent by the
//! server's runtime (reqwest on rustls with ring), the response body streams back to the guest.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiHttpHooks};

use crate::context::PluginCtx;

/// Largest request body a plugin may send.
const MAX_REQUEST_BYTES: usize = 8 << 20;
/// Largest response body a plugin may read.
const MAX_RESPONSE_BYTES: u64 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the response head, and between two reads of its body.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests a plugin may have open at once (until their response body is read or dropped).
const MAX_IN_FLIGHT: usize = 8;
/// Headers a secret may be put into: credentials, never headers a server commonly echoes.
const SECRET_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

type WasiBody = UnsyncBoxBody<Bytes, HttpError>;
type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;
type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// One granted destination: a host name (or `*.` and a suffix) and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    host: String,
    port: Option<u16>,
}

impl Destination {
    /// Parses `host` or `host:port`.
    pub(crate) fn parse(grant: &str) -> Result<Destination, String> {
        let (host, port) = match grant.rsplit_once(':') {
            Some((host, port)) => {
                (host, Some(port.parse::<u16>().map_err(|_| format!("bad port in `{grant}`"))?))
            }
            None => (grant, None),
        };
        let name = host.strip_prefix("*.").unwrap_or(host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        // A name whose last label is a number is an address in some spelling (`0x7f.1`,
        // `2130706433`) that URL parsers read differently: only plain IPv4 literals pass.
        let numeric_tail = name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()) || l.starts_with("0x"));
        if !valid || (numeric_tail && name.parse::<std::net::Ipv4Addr>().is_err()) {
            return Err(format!("`{grant}` is not a host name (or host:port)"));
        }
        Ok(Destination { host: host.to_ascii_lowercase(), port })
    }

    pub(crate) fn port(&self) -> Option<u16> {
        self.port
    }

    pub(crate) fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        host_ok && port == self.port.unwrap_or(default_port)
    }
}

/// TLS for plugins' outbound traffic (HTTP and connections): ring, the public web roots.
pub(crate) fn public_tls() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The outbound HTTP policy of one plugin, and its client.
pub(crate) struct Egress {
    destinations: Vec<Destination>,
    allow_private: bool,
    client: reqwest::Client,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Egress {
    pub(crate) fn new(grants: &[String], allow_private: bool) -> Result<Egress, String> {
        let destinations = grants.iter().map(|g| Destination::parse(g)).collect::<Result<Vec<_>, _>>()?;
        let tls = public_tls()?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(PublicOnly { allow_private }))
            .redirect(reqwest::redirect::Policy::none())
            // Never through a proxy from the environment: the address checks are about the target.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Egress {
            destinations,
            allow_private,
            client,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Whether the request may go out, by scheme, host and port.
    fn check(&self, uri: &http::Uri) -> Result<(), HttpError> {
        let https = uri.scheme_str() == Some("https");
        let plain_allowed = self.allow_private && uri.scheme_str() == Some("http");
        if !(https || plain_allowed) {
            return Err(HttpError::HttpRequestDenied);
        }
        let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.allow_private
            && !homeserver_core::net::is_public(ip)
        {
            return Err(HttpError::DestinationIpProhibited);
        }
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        match self.destinations.iter().any(|d| d.allows(host, port, default_port)) {
            true => Ok(()),
            false => Err(HttpError::HttpRequestDenied),
        }
    }
}

/// Resolves names for plugin requests, keeping only public addresses (unless allowed).
struct PublicOnly {
    allow_private: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let addrs: Vec<SocketAddr> =
                found.filter(|a| allow_private || homeserver_core::net::is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("{} has no address plugins may reach", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The `wasi:http` hooks of one plugin instance.
pub(crate) struct Hooks {
    pub ctx: Arc<PluginCtx>,
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> SendFuture {
        let ctx = self.ctx.clone();
        Box::new(async move {
            let Some(egress) = ctx.egress.as_ref() else { return Err(HttpError::HttpRequestDenied) };
            egress.check(request.uri())?;
            if ctx.take(|b| &mut b.http, 1.0).is_err() {
                return Err(HttpError::ConnectionLimitReached);
            }
            let permit = egress
                .in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| HttpError::ConnectionLimitReached)?;
            let (parts, body) = request.into_parts();
            let body = collect_limited(body).await?;
            let (headers, secrets) = inject_secrets(&ctx, parts.headers)?;
            let client = egress.client.clone();
            let first_byte =
                options.and_then(|o| o.first_byte_timeout).unwrap_or(READ_TIMEOUT).min(READ_TIMEOUT);
            let between =
                options.and_then(|o| o.between_bytes_timeout).unwrap_or(READ_TIMEOUT).min(READ_TIMEOUT);
            let (method, uri) = (parts.method, parts.uri.to_string());
            // Built and sent by the server's runtime: the connection's tasks and timers must not
            // live on the guests'.
            let response = ctx
                .main
                .spawn(async move {
                    let send = client.request(method, uri).headers(headers).body(body).send();
                    tokio::time::timeout(first_byte, send).await
                })
                .await
                .map_err(|_| HttpError::ConnectionTerminated)?
                .map_err(|_| HttpError::ConnectionReadTimeout)?
                .map_err(map_error)?;
            ctx.count("http_requests", 1);
            let response = into_wasi_response(response, &secrets, permit, between);
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

/// The request body, refused past [`MAX_REQUEST_BYTES`].
async fn collect_limited(body: WasiBody) -> Result<Vec<u8>, HttpError> {
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(_) => Err(HttpError::HttpRequestBodySize(None)),
    }
}

/// Replaces `{secret:NAME}` in the values of credential headers ([`SECRET_HEADERS`]) with the
/// configured secret, marked sensitive; returns the headers and the secret values used. A secret
/// named in any other header, or an unknown name, refuses the request.
fn inject_secrets(
    ctx: &PluginCtx,
    headers: http::HeaderMap,
) -> Result<(http::HeaderMap, Vec<String>), HttpError> {
    let secrets = ctx.config.lock().expect("config poisoned").secrets.clone();
    let mut used = Vec::new();
    let mut out = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        let text = value.to_str().unwrap_or_default();
        if !text.contains("{secret:") {
            out.append(name.clone(), value.clone());
            continue;
        }
        let refuse = |why: String| HttpError::InternalError(Some(why));
        if !SECRET_HEADERS.contains(&name.as_str()) {
            return Err(refuse(format!("secrets go only into {}", SECRET_HEADERS.join(", "))));
        }
        let mut filled = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{secret:") {
            filled.push_str(&rest[..start]);
            let after = &rest[start + "{secret:".len()..];
            let end = after.find('}').ok_or_else(|| refuse(format!("unknown secret in header {name}")))?;
            let secret = secrets
                .get(&after[..end])
                .ok_or_else(|| refuse(format!("unknown secret in header {name}")))?;
            filled.push_str(secret);
            used.push(secret.clone());
            rest = &after[end + 1..];
        }
        filled.push_str(rest);
        let mut value = http::HeaderValue::from_str(&filled)
            .map_err(|_| refuse(format!("header {name} is not valid with its secret")))?;
        value.set_sensitive(true);
        out.append(name.clone(), value);
    }
    Ok((out, used))
}

fn map_error(err: reqwest::Error) -> HttpError {
    if err.is_timeout() {
        HttpError::ConnectionTimeout
    } else if err.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::ConnectionTerminated
    }
}

/// The response for the guest: its head (without any header that carries a secret the request
/// used, should the server echo it), and its body streamed up to [`MAX_RESPONSE_BYTES`], each
/// chunk within `between` of the last. The in-flight permit is released when the body is read
/// to the end or dropped.
fn into_wasi_response(
    response: reqwest::Response,
    secrets: &[String],
    permit: tokio::sync::OwnedSemaphorePermit,
    between: Duration,
) -> http::Response<WasiBody> {
    let mut builder = http::Response::builder().status(response.status());
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in response.headers() {
            let echoes =
                value.to_str().is_ok_and(|v| secrets.iter().any(|s| !s.is_empty() && v.contains(s.as_str())));
            if !echoes {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    // Each chunk within `between` of the last (the guest's between-bytes timeout, at most the
    // host's), the whole within MAX_RESPONSE_BYTES; the first failure ends the body.
    let chunks = Box::pin(response.bytes_stream());
    let stream = futures::stream::unfold(
        (chunks, permit, 0u64, false),
        move |(mut chunks, permit, read, failed)| async move {
            if failed {
                return None;
            }
            let (item, read, failed) = match tokio::time::timeout(between, chunks.next()).await {
                Err(_) => (Err(HttpError::ConnectionReadTimeout), read, true),
                Ok(None) => return None,
                Ok(Some(Err(_))) => (Err(HttpError::ConnectionTerminated), read, true),
                Ok(Some(Ok(chunk))) => {
                    let read = read + chunk.len() as u64;
                    match read > MAX_RESPONSE_BYTES {
                        true => (Err(HttpError::HttpResponseBodySize(Some(read))), read, true),
                        false => (Ok(http_body::Frame::data(chunk)), read, false),
                    }
                }
            };
            Some((item, (chunks, permit, read, failed)))
        },
    );
    let body = StreamBody::new(stream).boxed_unsync();
    builder.body(body).expect("a response head from a response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(grants: &[&str], allow_private: bool) -> Egress {
        let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
        Egress::new(&grants, allow_private).unwrap()
    }

    fn allowed(e: &Egress, uri: &str) -> bool {
        e.check(&uri.parse().unwrap()).is_ok()
    }

    #[test]
    fn only_granted_https_destinations_are_reached() {
        let e = egress(&["api.example.com", "*.llm.example", "alt.example:8443"], false);
        assert!(allowed(&e, "https://api.example.com/v1/chat"));
        assert!(allowed(&e, "https://API.example.com:443/"));
        assert!(!allowed(&e, "https://api.example.com:8443/"), "another port");
        assert!(!allowed(&e, "http://api.example.com/"), "plain http");
        assert!(allowed(&e, "https://eu.llm.example/"));
        assert!(!allowed(&e, "https://llm.example/"), "the wildcard needs a subdomain");
        assert!(!allowed(&e, "https://evilllm.example/"));
        assert!(allowed(&e, "https://alt.example:8443/"));
        assert!(!allowed(&e, "https://alt.example/"));
        assert!(!allowed(&e, "https://other.example/"));
        assert!(!allowed(&e, "https://127.0.0.1/"));
    }

    #[test]
    fn private_destinations_and_plain_http_only_when_testing_allows() {
        let strict = egress(&["127.0.0.1:8080", "10.0.0.1"], false);
        assert!(!allowed(&strict, "https://127.0.0.1:8080/"));
        assert!(!allowed(&strict, "https://10.0.0.1/"));
        let testing = egress(&["127.0.0.1:8080"], true);
        assert!(allowed(&testing, "http://127.0.0.1:8080/v1"));
        assert!(!allowed(&testing, "http://127.0.0.1:9090/"), "still only granted ones");
    }

    #[test]
    fn grants_must_be_host_names() {
        assert!(Destination::parse("api.example.com").is_ok());
        assert!(Destination::parse("*.example.com:8443").is_ok());
        assert!(Destination::parse("127.0.0.1:8080").is_ok());
        for bad in
            ["", "https://x.com", "x.com/path", "x.com:port", "a b.com", "0x7f.1", "2130706433", "127.1"]
        {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }
}
