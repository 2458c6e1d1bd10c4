//! The domain error shared by the room model, storage users and handlers.
//!
//! Every failure a client can see is one [`ErrorKind`], which corresponds to one Matrix `errcode`.
//! `homeserver-http` is the only place that turns a kind into an HTTP status and a JSON body, so a
//! library never decides a status code.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Matrix-visible error: a kind (the errcode) and a human-readable message, plus the failure
/// underneath it when there is one (kept for the log, never shown to clients).
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

/// The Matrix error codes Lattice produces (spec: client-server API, "Standard error response").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Forbidden,
    UnknownToken {
        soft_logout: bool,
    },
    MissingToken,
    BadJson,
    NotJson,
    NotFound,
    LimitExceeded {
        retry_after_ms: u64,
    },
    Unrecognized,
    Unknown,
    Unauthorized,
    /// An `Authorization` header that is there but cannot be parsed (HTTP 400, errcode
    /// `M_UNAUTHORIZED`, as Synapse answers a malformed `X-Matrix` header).
    MalformedAuthorization,
    UserDeactivated,
    UserInUse,
    InvalidUsername,
    RoomInUse,
    InvalidRoomState,
    UnsupportedRoomVersion,
    /// The requesting server does not support the room's version (the body names it).
    IncompatibleRoomVersion {
        room_version: String,
    },
    BadState,
    /// A key-backup request for a version that is not the current one (the body names it).
    WrongRoomKeysVersion {
        current_version: Option<String>,
    },
    GuestAccessForbidden,
    MissingParam,
    InvalidParam,
    TooLarge,
    Exclusive,
    WeakPassword,
    ThreepidDenied,
    BadAlias,
    /// A reaction identical to an earlier one by the same user.
    DuplicateAnnotation,
    /// Data the server manages and clients may not write (HTTP 405, errcode `M_BAD_JSON`).
    ServerManaged,
    /// The resource already exists (HTTP 409, errcode `M_UNKNOWN` as the spec's examples use).
    Conflict,
    /// The request needs (more) user-interactive authentication; the payload is the UIA body
    /// (`flows`, `params`, `session`, `completed`) that is returned with HTTP 401.
    UserInteractive(Box<serde_json::Value>),
    /// Another server's refusal passed through to the client with its status (4xx) and
    /// errcode, as Synapse passes a remote `make_join` refusal through.
    Remote {
        status: u16,
        errcode: String,
    },
    /// Server-side failure; details are logged, not shown.
    Internal,
    /// Media that already has content (HTTP 409, `M_CANNOT_OVERWRITE_MEDIA`).
    CannotOverwriteMedia,
    /// Media whose content has not been uploaded yet (HTTP 504, `M_NOT_YET_UPLOADED`).
    NotYetUploaded,
    /// Something the request needs is not available for now (HTTP 503, `M_UNKNOWN`): a
    /// disabled or suspended plugin's webhook.
    Unavailable,
}

impl ErrorKind {
    /// The `errcode` string the spec defines for this kind.
    pub fn errcode(&self) -> &str {
        match self {
            ErrorKind::Remote { errcode, .. } => errcode,
            ErrorKind::Forbidden => "M_FORBIDDEN",
            ErrorKind::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            ErrorKind::MissingToken => "M_MISSING_TOKEN",
            ErrorKind::BadJson | ErrorKind::ServerManaged => "M_BAD_JSON",
            ErrorKind::NotJson => "M_NOT_JSON",
            ErrorKind::NotFound => "M_NOT_FOUND",
            ErrorKind::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            ErrorKind::Unrecognized => "M_UNRECOGNIZED",
            ErrorKind::Unknown | ErrorKind::Internal | ErrorKind::Conflict | ErrorKind::Unavailable => {
                "M_UNKNOWN"
            }
            ErrorKind::Unauthorized | ErrorKind::MalformedAuthorization => "M_UNAUTHORIZED",
            ErrorKind::UserDeactivated => "M_USER_DEACTIVATED",
            ErrorKind::UserInUse => "M_USER_IN_USE",
            ErrorKind::InvalidUsername => "M_INVALID_USERNAME",
            ErrorKind::RoomInUse => "M_ROOM_IN_USE",
            ErrorKind::InvalidRoomState => "M_INVALID_ROOM_STATE",
            ErrorKind::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            ErrorKind::IncompatibleRoomVersion { .. } => "M_INCOMPATIBLE_ROOM_VERSION",
            ErrorKind::BadState => "M_BAD_STATE",
            ErrorKind::WrongRoomKeysVersion { .. } => "M_WRONG_ROOM_KEYS_VERSION",
            ErrorKind::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            ErrorKind::MissingParam => "M_MISSING_PARAM",
            ErrorKind::InvalidParam => "M_INVALID_PARAM",
            ErrorKind::TooLarge => "M_TOO_LARGE",
            ErrorKind::Exclusive => "M_EXCLUSIVE",
            ErrorKind::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            ErrorKind::NotYetUploaded => "M_NOT_YET_UPLOADED",
            ErrorKind::WeakPassword => "M_WEAK_PASSWORD",
            ErrorKind::ThreepidDenied => "M_THREEPID_DENIED",
            ErrorKind::BadAlias => "M_BAD_ALIAS",
            ErrorKind::DuplicateAnnotation => "M_DUPLICATE_ANNOTATION",
            ErrorKind::UserInteractive(_) => "M_FORBIDDEN",
        }
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn unrecognized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unrecognized, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }
    /// An internal error caused by `source` (its text becomes the message; it stays the source).
    pub fn internal_from(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { source: Some(std::sync::Arc::new(source)), ..Self::internal(String::new()) }
            .with_message_from_source()
    }
    fn with_message_from_source(mut self) -> Self {
        if let Some(source) = &self.source {
            self.message = source.to_string();
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.errcode(), self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::streams::HorizonError> for Error {
    fn from(err: crate::streams::HorizonError) -> Self {
        Error::internal_from(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk on fire")]
    struct Cause;

    #[test]
    fn an_internal_error_keeps_its_cause() {
        let err = Error::internal_from(Cause);
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(err.message, "disk on fire");
        let source = std::error::Error::source(&err).expect("the cause is kept");
        assert_eq!(source.to_string(), "disk on fire");
        assert!(std::error::Error::source(&Error::forbidden("no")).is_none());
    }
}
