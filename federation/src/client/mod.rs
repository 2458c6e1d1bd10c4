//! The outbound side of federation: connection-pooled HTTPS clients (reqwest on rustls with
//! ring; one follows the SRV routes of [`dns`], one does not) that find a server through
//! [`discovery`], refuse destinations [`guard`] forbids, sign
//! every request with `X-Matrix`, and turn responses into ruma types with bounded bodies; and
//! [`remote_error`], the one way another server's refusal reaches a local client.

pub mod discovery;
pub mod dns;
pub mod guard;
pub mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use homeserver_core::keys::ServerKey;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponse, IncomingResponseExt as _, OutgoingRequest, OutgoingRequestExt as _,
        auth_scheme::NoAuthentication,
        federation::authentication::{ServerSignatures, XMatrixSigningInput},
        path_builder::SinglePath,
    },
};

use discovery::Discovery;

/// The largest response body read from another server.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// The largest answer of an unauthenticated endpoint (key responses).
pub const MAX_UNSIGNED_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("federation client configuration: {0}")]
    Config(String),
    #[error("cannot find server: {0}")]
    Discovery(String),
    #[error("destination refused: {0}")]
    Refused(String),
    #[error("request could not be built: {0}")]
    Request(String),
    #[error("HTTP error: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered {status}: {body}")]
    Status { status: u16, body: String },
    /// A success status whose body could not be read or understood.
    #[error("invalid response: {0}")]
    Response(String),
}

/// Settings of the outbound client (from `[federation]` and `[testing]`).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Accept any certificate (`[testing] insecure_federation_tls`).
    pub insecure_tls: bool,
    /// Allow private and loopback destinations (`[testing] allow_private_destinations`).
    pub allow_private: bool,
    /// Extra trusted CA certificates (PEM), for tests that check TLS for real.
    pub ca_file: Option<PathBuf>,
    /// Upper bound for one request, connection included.
    pub timeout: Duration,
    /// DNS servers asked instead of the system's (`[federation] nameservers`).
    pub nameservers: Vec<SocketAddr>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            insecure_tls: false,
            allow_private: false,
            ca_file: None,
            timeout: Duration::from_secs(60),
            nameservers: Vec::new(),
        }
    }
}

/// Sends requests to other servers. Cheap to clone.
#[derive(Clone)]
pub struct FederationClient(Arc<Inner>);

struct Inner {
    /// For URLs discovery found through SRV records: follows the DNS routes.
    routed: reqwest::Client,
    /// For everything else (`.well-known`, explicit ports, IP literals): a host's own addresses.
    direct: reqwest::Client,
    key: ServerKey,
    discovery: Discovery,
    allow_private: bool,
}

impl FederationClient {
    pub fn new(key: ServerKey, settings: &ClientSettings) -> Result<Self, FederationError> {
        let tls = tls::client_config(settings.ca_file.as_deref(), settings.insecure_tls)?;
        let dns = Arc::new(dns::Dns::new(&settings.nameservers)?);
        let allow_private = settings.allow_private;
        let client = |follow_routes: bool| {
            let resolver = guard::GuardedResolver { allow_private, follow_routes, dns: dns.clone() };
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                .dns_resolver(Arc::new(resolver))
                .timeout(settings.timeout)
                .connect_timeout(Duration::from_secs(15))
                .redirect(guard::redirect_policy(allow_private))
                // Never through a proxy from the environment: the address guard is about the target.
                .no_proxy()
                .user_agent(concat!("Lattice/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let (routed, direct) = (client(true)?, client(false)?);
        let discovery = Discovery::new(allow_private, dns);
        Ok(Self(Arc::new(Inner { routed, direct, key, discovery, allow_private })))
    }

    /// This server's name (the origin of every request).
    pub fn server_name(&self) -> &ServerName {
        self.0.key.server_name()
    }

    /// Sends an `X-Matrix`-signed request to `destination`.
    pub async fn send<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        self.send_limited(destination, request, MAX_RESPONSE_BYTES).await
    }

    /// Sends an `X-Matrix`-signed request whose answer may be at most `max_bytes` long.
    pub async fn send_limited<R>(
        &self,
        destination: &ServerName,
        request: R,
        max_bytes: usize,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let (endpoint, http_request) = self.signed(destination, request).await?;
        self.execute::<R::IncomingResponse>(&endpoint, http_request, max_bytes).await
    }

    /// The destination's endpoint and the request for it, `X-Matrix`-signed.
    async fn signed<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<(discovery::Endpoint, http::Request<Vec<u8>>), FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let endpoint = self.0.discovery.endpoint(&self.0.direct, destination).await?;
        let origin: OwnedServerName = self.server_name().to_owned();
        let signing = XMatrixSigningInput::new(origin, destination.to_owned(), self.0.key.pair());
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&endpoint.base, signing, ())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        Ok((endpoint, http_request))
    }

    /// Sends an `X-Matrix`-signed request and hands back the answer unread, whatever its status
    /// (media, whose bodies are streamed).
    pub async fn send_streaming<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<reqwest::Response, FederationError>
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let (endpoint, http_request) = self.signed(destination, request).await?;
        let http = if endpoint.routed { &self.0.routed } else { &self.0.direct };
        Ok(http.execute(reqwest::Request::try_from(http_request)?).await?)
    }

    /// A plain `GET` of a URL another server gave (a media `Location`), through the same
    /// address guard as every federation request.
    pub async fn get_url(&self, url: &str) -> Result<reqwest::Response, FederationError> {
        let url = url::Url::parse(url).map_err(|e| FederationError::Request(e.to_string()))?;
        if !guard::url_allowed(&url, self.0.allow_private) {
            return Err(FederationError::Request(format!("{url} is not a destination federation may reach")));
        }
        Ok(self.0.direct.get(url).send().await?)
    }

    /// Sends a request that needs no signature (the key endpoints; answers of at most
    /// [`MAX_UNSIGNED_RESPONSE_BYTES`]).
    pub async fn send_unsigned<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse, FederationError>
    where
        R: OutgoingRequest<Authentication = NoAuthentication, PathBuilder = SinglePath>,
    {
        let endpoint = self.0.discovery.endpoint(&self.0.direct, destination).await?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&endpoint.base, (), ())
            .map_err(|e| FederationError::Request(e.to_string()))?;
        self.execute::<R::IncomingResponse>(&endpoint, http_request, MAX_UNSIGNED_RESPONSE_BYTES).await
    }

    async fn execute<T: IncomingResponse>(
        &self,
        endpoint: &discovery::Endpoint,
        request: http::Request<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<T, FederationError> {
        let request = reqwest::Request::try_from(request)?;
        let http = if endpoint.routed { &self.0.routed } else { &self.0.direct };
        let response = http.execute(request).await?;
        let status = response.status();
        let mut builder = http::Response::builder().status(status);
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers().clone();
        }
        let body = match read_limited(response, max_bytes).await {
            Ok(body) => body,
            // An error answer too long to read is still an error answer: `Response` errors are
            // only for successes whose body is unusable.
            Err(_) if !status.is_success() => Bytes::new(),
            Err(err) => return Err(err),
        };
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            return Err(FederationError::Status { status: status.as_u16(), body });
        }
        let response = builder.body(body.as_ref()).map_err(|e| FederationError::Response(e.to_string()))?;
        T::try_from_http_response(response).map_err(|e| FederationError::Response(e.to_string()))
    }
}

/// Another server's refusal, as the local client should see it: a 4xx answer with its own
/// errcode passes through with that status and errcode (Synapse's clients see the same);
/// otherwise forbidden, not found, or unreachable.
pub(crate) fn remote_error(err: FederationError) -> homeserver_core::Error {
    if let FederationError::Status { status, body } = &err
        && let Some((errcode, message)) = passed_through(*status, body)
    {
        // The one refusal with more to say than its errcode: the room's version.
        let room_version = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|b| b.get("room_version")?.as_str().map(|v| v.chars().take(64).collect::<String>()));
        let kind = match room_version {
            Some(room_version) if errcode == "M_INCOMPATIBLE_ROOM_VERSION" => {
                homeserver_core::ErrorKind::IncompatibleRoomVersion { room_version }
            }
            _ => homeserver_core::ErrorKind::Remote { status: *status, errcode },
        };
        return homeserver_core::Error::new(kind, format!("The other server refused: {message}"));
    }
    match err {
        FederationError::Status { status: 403, body } => {
            homeserver_core::Error::forbidden(format!("The other server refused: {body}"))
        }
        FederationError::Status { status: 404, .. } => {
            homeserver_core::Error::not_found("The other server does not know the room or the user")
        }
        other => homeserver_core::Error::new(
            homeserver_core::ErrorKind::Unknown,
            format!("could not reach the other server: {other}"),
        ),
    }
}

/// The errcode and message of another server's 4xx answer worth passing through: one with a
/// well-formed errcode other than the plain `M_FORBIDDEN` and `M_NOT_FOUND` (those map to
/// this server's own kinds).
fn passed_through(status: u16, body: &str) -> Option<(String, String)> {
    if !(400..500).contains(&status) {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    let errcode = body.get("errcode")?.as_str()?;
    let well_formed = errcode.len() <= 64
        && errcode.starts_with("M_")
        && errcode.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed || matches!(errcode, "M_FORBIDDEN" | "M_NOT_FOUND") {
        return None;
    }
    let message = body.get("error").and_then(serde_json::Value::as_str).unwrap_or_default();
    Some((errcode.to_owned(), message.chars().take(512).collect()))
}

/// Reads a response body, refusing one longer than `max` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Bytes, FederationError> {
    if response.content_length().is_some_and(|len| len > max as u64) {
        return Err(FederationError::Response(format!("body larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(FederationError::Response(format!("body larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_servers_refusals_pass_through_only_when_well_formed() {
        let body = r#"{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","error":"y u no upgrade","room_version":"x"}"#;
        let err = remote_error(FederationError::Status { status: 400, body: body.into() });
        assert_eq!(
            err.kind,
            homeserver_core::ErrorKind::IncompatibleRoomVersion { room_version: "x".into() }
        );
        let body = r#"{"errcode":"M_TEST_ERROR_CODE","error":"denied!"}"#;
        let err = remote_error(FederationError::Status { status: 418, body: body.into() });
        assert_eq!(
            err.kind,
            homeserver_core::ErrorKind::Remote { status: 418, errcode: "M_TEST_ERROR_CODE".into() }
        );
        assert!(err.message.contains("denied!"), "{}", err.message);
        // Plain refusals keep this server's own kinds; junk and server errors pass nothing on.
        let forbidden = remote_error(FederationError::Status {
            status: 403,
            body: r#"{"errcode":"M_FORBIDDEN"}"#.into(),
        });
        assert_eq!(forbidden.kind, homeserver_core::ErrorKind::Forbidden);
        assert!(passed_through(400, r#"{"errcode":"m_lower"}"#).is_none());
        assert!(passed_through(400, "not json").is_none());
        assert!(passed_through(500, r#"{"errcode":"M_UNKNOWN"}"#).is_none());
        assert!(passed_through(400, &format!(r#"{{"errcode":"M_{}"}}"#, "A".repeat(100))).is_none());
    }
}
