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
