//! [`ApiError`]: the one mapping from domain errors to Matrix HTTP error responses.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use homeserver_core::{Error, ErrorKind};
use serde_json::{Value, json};

/// A domain error on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError(Error::new(kind, message))
    }

    /// The HTTP status the spec pairs with this error.
    pub fn status(&self) -> StatusCode {
        match &self.0.kind {
            ErrorKind::Forbidden
            | ErrorKind::UserDeactivated
            | ErrorKind::GuestAccessForbidden
            | ErrorKind::WrongRoomKeysVersion { .. }
            | ErrorKind::ThreepidDenied => StatusCode::FORBIDDEN,
            ErrorKind::UnknownToken { .. }
            | ErrorKind::MissingToken
            | ErrorKind::Unauthorized
            | ErrorKind::UserInteractive(_) => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound | ErrorKind::Unrecognized => StatusCode::NOT_FOUND,
            ErrorKind::Remote { status, .. } => StatusCode::from_u16(*status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::BAD_GATEWAY),
            ErrorKind::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::CannotOverwriteMedia => StatusCode::CONFLICT,
            ErrorKind::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::ServerManaged => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadJson
            | ErrorKind::NotJson
            | ErrorKind::Unknown
            | ErrorKind::UserInUse
            | ErrorKind::InvalidUsername
            | ErrorKind::RoomInUse
            | ErrorKind::InvalidRoomState
            | ErrorKind::UnsupportedRoomVersion
            | ErrorKind::IncompatibleRoomVersion { .. }
            | ErrorKind::BadState
            | ErrorKind::MissingParam
            | ErrorKind::InvalidParam
            | ErrorKind::Exclusive
            | ErrorKind::WeakPassword
            | ErrorKind::BadAlias
            | ErrorKind::MalformedAuthorization
            | ErrorKind::DuplicateAnnotation => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let message = match self.0.kind {
            // Internal details stay in the log.
            ErrorKind::Internal => "Internal server error".to_owned(),
            _ => self.0.message.clone(),
        };
        match &self.0.kind {
            ErrorKind::UserInteractive(uia) => {
                let mut body = (**uia).clone();
                if !self.0.message.is_empty()
                    && let Some(obj) = body.as_object_mut()
                {
                    obj.insert("errcode".into(), json!("M_FORBIDDEN"));
                    obj.insert("error".into(), json!(message));
                }
                body
            }
            ErrorKind::LimitExceeded { retry_after_ms } => json!({
                "errcode": self.0.kind.errcode(),
                "error": message,
                "retry_after_ms": retry_after_ms,
            }),
            ErrorKind::WrongRoomKeysVersion { current_version } => json!({
                "errcode": self.0.kind.errcode(),
                "error": message,
                "current_version": current_version,
            }),
            ErrorKind::IncompatibleRoomVersion { room_version } => json!({
                "errcode": self.0.kind.errcode(),
                "error": message,
                "room_version": room_version,
            }),
            ErrorKind::UnknownToken { soft_logout } => json!({
                "errcode": self.0.kind.errcode(),
                "error": message,
                "soft_logout": soft_logout,
            }),
            kind => json!({ "errcode": kind.errcode(), "error": message }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The whole chain goes to the log (a storage error keeps the database's own error).
            let mut chain = Vec::new();
            let mut source = std::error::Error::source(&self.0);
            while let Some(cause) = source {
                chain.push(cause.to_string());
                source = cause.source();
            }
            tracing::error!(error = %self.0.message, causes = ?chain, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        if let ErrorKind::LimitExceeded { retry_after_ms } = self.0.kind
            && let Ok(value) = retry_after_ms.div_ceil(1000).to_string().parse()
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies_follow_the_spec() {
        let e = ApiError::new(ErrorKind::LimitExceeded { retry_after_ms: 1500 }, "slow down");
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["retry_after_ms"], 1500);
        let e = ApiError::new(ErrorKind::UnknownToken { soft_logout: true }, "bad");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(e.body()["soft_logout"], true);
        let e = ApiError::new(ErrorKind::Internal, "secret detail");
        assert_eq!(e.body()["error"], "Internal server error");
        assert_eq!(ApiError::new(ErrorKind::TooLarge, "x").status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::new(ErrorKind::NotJson, "x").body()["errcode"], "M_NOT_JSON");
    }
}
