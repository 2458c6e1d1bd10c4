//! Conversions into the host's [`Error`](crate::Error).

use crate::Error;

/// Malformed JSON (a stored value, a host answer) is reported as `invalid`.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// A stored value that should be text but is not UTF-8 is reported as `invalid`.
impl From<std::string::FromUtf8Error> for Error {
    fn from(e: std::string::FromUtf8Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl Error {
    /// The error as a sentence for people (a reply, a log line): the text the host gave, or
    /// `rate limited (retry after N ms)`.
    pub fn message(&self) -> String {
        match self {
            Error::Denied(m)
            | Error::NotFound(m)
            | Error::Quota(m)
            | Error::Invalid(m)
            | Error::Upstream(m)
            | Error::Internal(m) => m.clone(),
            Error::RateLimited(ms) => format!("rate limited (retry after {ms} ms)"),
        }
    }
}
