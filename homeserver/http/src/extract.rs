//! The [`Ruma`] extractor: an axum request turned into a ruma request type plus the caller's
//! resolved identity.
//!
//! In one pass it limits and buffers the body, rejects bodies that are not JSON (`M_NOT_JSON`),
//! resolves the access token as the endpoint's ruma metadata demands, and lets ruma parse path,
//! query and body (`M_BAD_JSON` / `M_INVALID_PARAM` on failure). The authentication outcome is
//! typed per scheme ([`AuthKind`]): `AccessToken` endpoints get a [`Session`], optional ones an
//! `Option<Session>`, unauthenticated ones `()`.

use std::future::Future;

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts as _, Path, Request},
    http::request::Parts,
};
use bytes::Bytes;
use homeserver_core::{Error, ErrorKind};
use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
            NoAuthentication,
        },
        error::{DeserializationError, FromHttpRequestError},
        federation::authentication::{ServerSignatures, XMatrix},
        path_builder::PathBuilder as _,
    },
};

use crate::ApiError;

/// The longest `User-Agent` kept, in characters.
pub const MAX_USER_AGENT: usize = 512;

/// The largest request body accepted by JSON endpoints.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The largest federation transaction body: 50 PDUs and 100 EDUs of up to 64 KiB each.
pub const MAX_TRANSACTION_BODY: usize = 150 * 64 * 1024;

/// An authenticated client: the user and the device its access token belongs to.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_admin: bool,
    /// A guest account: only the endpoints guests may call are open to it.
    pub is_guest: bool,
}

/// What the HTTP layer needs from the application state: resolving access tokens and, for
/// federation endpoints, verifying the requesting server's signature.
pub trait AuthState: Clone + Send + Sync + 'static {
    /// Resolves an access token, or fails with `M_UNKNOWN_TOKEN`.
    fn authenticate(&self, token: &str) -> impl Future<Output = Result<Session, Error>> + Send;

    /// Verifies an `X-Matrix` signed request (method, URI as received, body) and returns the
    /// origin server, or fails with `M_UNAUTHORIZED`. States without federation refuse.
    fn authenticate_server(
        &self,
        _header: XMatrix,
        _request: &http::Request<&[u8]>,
    ) -> impl Future<Output = Result<OwnedServerName, Error>> + Send {
        async { Err(Error::new(ErrorKind::Unauthorized, "this endpoint does not serve other servers")) }
    }
}

/// What authenticating one request may look at.
pub struct AuthRequest<'a> {
    /// The access token, from the header or the query.
    pub token: Option<String>,
    pub parts: &'a Parts,
    pub body: &'a [u8],
}

/// How a ruma auth scheme is satisfied, and what a handler receives for it.
pub trait AuthKind {
    type Resolved: Send + Sync + 'static;
    /// Whether requests must carry an `X-Matrix` header (checked before the body is read).
    const SERVER_SIGNED: bool = false;
    fn resolve<S: AuthState>(
        request: AuthRequest<'_>,
        state: &S,
    ) -> impl Future<Output = Result<Self::Resolved, Error>> + Send;
}

/// The session of an access token, refused when a guest calls what guests may not.
async fn session_for<S: AuthState>(state: &S, token: &str, parts: &Parts) -> Result<Session, Error> {
    let session = state.authenticate(token).await?;
    crate::guest::check(&session, parts)?;
    Ok(session)
}

fn missing_token() -> Error {
    Error::new(ErrorKind::MissingToken, "Missing access token")
}

impl AuthKind for AccessToken {
    type Resolved = Session;
    async fn resolve<S: AuthState>(request: AuthRequest<'_>, state: &S) -> Result<Session, Error> {
        session_for(state, &request.token.ok_or_else(missing_token)?, request.parts).await
    }
}

impl AuthKind for AccessTokenOptional {
    type Resolved = Option<Session>;
    async fn resolve<S: AuthState>(request: AuthRequest<'_>, state: &S) -> Result<Option<Session>, Error> {
        match request.token {
            // A guest on an endpoint not open to guests is served as anyone without a token.
            Some(token) => match session_for(state, &token, request.parts).await {
                Ok(session) => Ok(Some(session)),
                Err(err) if err.kind == ErrorKind::GuestAccessForbidden => Ok(None),
                Err(err) => Err(err),
            },
            None => Ok(None),
        }
    }
}

impl AuthKind for NoAuthentication {
    type Resolved = ();
    async fn resolve<S: AuthState>(_: AuthRequest<'_>, _: &S) -> Result<(), Error> {
        Ok(())
    }
}

impl AuthKind for NoAccessToken {
    type Resolved = ();
    async fn resolve<S: AuthState>(_: AuthRequest<'_>, _: &S) -> Result<(), Error> {
        Ok(())
    }
}

/// Appservice tokens are passed through unresolved until appservices exist.
impl AuthKind for AppserviceTokenOptional {
    type Resolved = Option<String>;
    async fn resolve<S: AuthState>(request: AuthRequest<'_>, _: &S) -> Result<Option<String>, Error> {
        Ok(request.token)
    }
}

impl AuthKind for AppserviceToken {
    type Resolved = String;
    async fn resolve<S: AuthState>(request: AuthRequest<'_>, _: &S) -> Result<String, Error> {
        request.token.ok_or_else(missing_token)
    }
}

/// Federation endpoints: the request must carry a valid `X-Matrix` signature of its origin; the
/// handler receives the origin server.
impl AuthKind for ServerSignatures {
    type Resolved = OwnedServerName;
    const SERVER_SIGNED: bool = true;
    async fn resolve<S: AuthState>(request: AuthRequest<'_>, state: &S) -> Result<OwnedServerName, Error> {
        let header = x_matrix(request.parts)?;
        let mut builder =
            http::Request::builder().method(request.parts.method.clone()).uri(request.parts.uri.clone());
        if let Some(headers) = builder.headers_mut() {
            *headers = request.parts.headers.clone();
        }
        let signed = builder.body(request.body).map_err(|e| Error::bad_json(e.to_string()))?;
        let refused = match state.authenticate_server(header, &signed).await {
            Ok(origin) => return Ok(origin),
            Err(refused) => refused,
        };
        // The signature covers the body as canonical JSON: a body that cannot be (floats,
        // integers beyond 2^53) is bad JSON, not a bad signature. Checked only once the
        // signature failed, so accepted requests (transactions of megabytes) are parsed once.
        if !request.body.is_empty()
            && let Err(e) = serde_json::from_slice::<ruma::CanonicalJsonValue>(request.body)
        {
            return Err(Error::bad_json(format!("the body is not canonical JSON: {e}")));
        }
        Err(refused)
    }
}

/// The request's `X-Matrix` authorization, parsed: 401 without one, 400 for an `X-Matrix` header
/// that cannot be parsed (an origin that is not a server name, say), as Synapse answers.
fn x_matrix(parts: &Parts) -> Result<XMatrix, Error> {
    XMatrix::extract_from_http_headers(&parts.headers).map_err(|e| {
        // Only an `X-Matrix` header is malformed; others (a client's `Bearer`) are no
        // authorization here at all, as Synapse treats them.
        let x_matrix_header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.trim_start().starts_with("X-Matrix"));
        let kind = if x_matrix_header { ErrorKind::MalformedAuthorization } else { ErrorKind::Unauthorized };
        Error::new(kind, format!("invalid X-Matrix authorization: {e}"))
    })
}

/// The body limit of an endpoint: federation transactions may be larger than client requests.
fn body_limit<T: IncomingRequest>() -> usize {
    let is_transaction = T::PATH_BUILDER.all_paths().any(|p| p.starts_with("/_matrix/federation/v1/send/"));
    if is_transaction { MAX_TRANSACTION_BODY } else { MAX_JSON_BODY }
}

/// The caller's session, for the few routes that are not ruma endpoints (Synapse-specific and
/// legacy paths).
pub struct Authenticated(pub Session);

impl<S: AuthState> axum::extract::FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or_else(missing_token)?;
        Ok(Authenticated(session_for(state, &token, parts).await?))
    }
}

/// A parsed ruma request with its authentication.
pub struct Ruma<T: IncomingRequest>
where
    T::Authentication: AuthKind,
{
    pub body: T,
    pub auth: <T::Authentication as AuthKind>::Resolved,
    /// The raw request body (user-interactive auth reads fields ruma does not keep).
    pub raw_body: Bytes,
    /// The peer address, when the server was started with connect info.
    pub client_ip: Option<std::net::IpAddr>,
    /// The client's `User-Agent` (at most [`MAX_USER_AGENT`] bytes), if it sent one.
    pub user_agent: Option<String>,
    /// `METHOD /path` of the request (names the operation for UIA sessions).
    pub fingerprint: String,
}

/// The access token from `Authorization: Bearer …` or the deprecated `access_token` query
/// parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "access_token")
            .then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

fn parse_error(err: FromHttpRequestError) -> Error {
    match err {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            Error::bad_json(format!("invalid request body: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            Error::invalid_param(format!("invalid query parameter: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => Error::bad_json(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::new(ErrorKind::Unrecognized, "method not allowed")
        }
        other => Error::bad_json(other.to_string()),
    }
}

/// Methods whose requests carry a JSON body on body-bearing endpoints.
fn body_expected(method: &http::Method) -> bool {
    matches!(*method, http::Method::POST | http::Method::PUT)
}

/// Whether the request declares a JSON body or no type at all (an absent body is then `{}`).
fn json_or_untyped(parts: &Parts) -> bool {
    match parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(kind) => kind.trim().is_empty() || kind.to_ascii_lowercase().contains("json"),
    }
}

/// Lets ruma parse path, query and body. A panic inside a ruma deserialiser (they index into
/// maps on some malformed inputs) is the client's bad input, not a server failure: it becomes
/// `M_BAD_JSON` instead of a dropped connection.
fn parse_request<T: IncomingRequest>(parts: &Parts, body: &[u8], args: &[&str]) -> Result<T, Error> {
    let mut builder = http::Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    let request = builder.body(body).map_err(|e| Error::bad_json(e.to_string()))?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(request, args))) {
        Ok(parsed) => parsed.map_err(parse_error),
        Err(_) => {
            tracing::warn!(path = %parts.uri.path(), "request parser panicked on malformed input");
            Err(Error::bad_json("invalid request body"))
        }
    }
}

/// Shapes ruma's parsers are known to mishandle, refused before they run. `POST /login` needs a
/// string `type`: ruma's `LoginInfo` deserialiser indexes the key without checking it exists.
fn precheck_body<T: IncomingRequest>(raw_body: &[u8]) -> Result<(), Error> {
    let client_post = |suffix: &str| {
        T::METHOD == http::Method::POST
            && T::PATH_BUILDER.all_paths().any(|p| p.ends_with(suffix) && p.starts_with("/_matrix/client/"))
    };
    if !client_post("/login") {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct LoginType {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<LoginType>(raw_body) {
        Ok(LoginType { kind: Some(serde_json::Value::String(_)) }) => Ok(()),
        Ok(_) => Err(Error::bad_json("login requires a string `type`")),
        Err(_) => Err(Error::bad_json("the login body must be a JSON object")),
    }
}

/// A room upgrade to a version whose name is not even a room version's (`my_bad_version`) is
/// an unsupported version, as Synapse answers, not a malformed body.
fn precheck_upgrade(raw_body: &[u8]) -> Result<(), Error> {
    #[derive(serde::Deserialize)]
    struct Upgrade {
        new_version: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Upgrade>(raw_body) {
        Ok(Upgrade { new_version: Some(serde_json::Value::String(version)) })
            if ruma::RoomVersionId::try_from(version.as_str()).is_err() =>
        {
            Err(Error::new(
                ErrorKind::UnsupportedRoomVersion,
                format!("room version {version} is not supported"),
            ))
        }
        _ => Ok(()),
    }
}

impl<T, S> FromRequest<S> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthKind,
    S: AuthState,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let mut path_args: Vec<String> =
            match Path::<Vec<String>>::from_request_parts(&mut parts, state).await {
                Ok(Path(args)) => args,
                Err(_) => Vec::new(),
            };
        let expected = T::PATH_BUILDER.all_paths().next().map(|p| p.matches('{').count()).unwrap_or(0);
        while path_args.len() < expected {
            path_args.push(String::new());
        }
        // A federation request without a usable signature header is refused before its body
        // (up to a transaction's size) is read.
        if T::Authentication::SERVER_SIGNED {
            x_matrix(&parts)?;
        }
        let raw_body = axum::body::to_bytes(Body::new(body), body_limit::<T>())
            .await
            .map_err(|_| Error::too_large("request body is too large"))?;
        // serde_json skips over invalid UTF-8 inside ignored strings, so check the encoding first.
        if !raw_body.is_empty()
            && (std::str::from_utf8(&raw_body).is_err()
                || serde_json::from_slice::<serde::de::IgnoredAny>(&raw_body).is_err())
        {
            return Err(Error::new(ErrorKind::NotJson, "request body is not valid JSON").into());
        }
        precheck_body::<T>(&raw_body)?;
        let token = access_token(&parts);
        let auth =
            T::Authentication::resolve(AuthRequest { token, parts: &parts, body: &raw_body }, state).await?;
        // After authentication: a request without a token is a 401 whatever its body says.
        let is_upgrade = T::METHOD == http::Method::POST
            && T::PATH_BUILDER
                .all_paths()
                .any(|p| p.ends_with("/upgrade") && p.starts_with("/_matrix/client/"));
        if is_upgrade {
            precheck_upgrade(&raw_body)?;
        }

        let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // Lax clients (matrix-nio) send no body at all where every field is optional; Synapse
        // reads that as `{}`, and so do we (handlers reading `raw_body` see `{}` too). If `{}`
        // does not parse either, a field is required and the error names it.
        let missing_json_body =
            raw_body.is_empty() && body_expected(&parts.method) && json_or_untyped(&parts);
        let (body, raw_body) = match parse_request::<T>(&parts, &raw_body, &args) {
            Ok(body) if missing_json_body => (body, Bytes::from_static(b"{}")),
            Ok(body) => (body, raw_body),
            Err(_) if missing_json_body => {
                let empty = Bytes::from_static(b"{}");
                (parse_request::<T>(&parts, &empty, &args)?, empty)
            }
            // A body that does not parse may carry UIA's pre-r0.4 password stage: only then is
            // it rewritten, so no other body is ever touched.
            Err(err) => {
                let rewritten = match T::Authentication::SERVER_SIGNED {
                    true => None,
                    false => crate::legacy_auth::rewrite(&raw_body),
                };
                match rewritten.map(|body| (parse_request::<T>(&parts, &body, &args), body)) {
                    Some((Ok(parsed), body)) => (parsed, body),
                    _ => return Err(err.into()),
                }
            }
        };
        let client_ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let fingerprint = format!("{} {}", parts.method, parts.uri.path());
        let user_agent = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Ok(Ruma { body, auth, raw_body, client_ip, user_agent, fingerprint })
    }
}
