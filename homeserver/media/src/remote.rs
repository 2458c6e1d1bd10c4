//! Media of other servers: what the repository needs from federation ([`RemoteMedia`],
//! implemented by the federation crate and plugged in at start-up, so this crate does not
//! depend on it) and what it gets back.

use bytes::Bytes;
use futures::{future::BoxFuture, stream::BoxStream};
use ruma::ServerName;

/// Why another server's media could not be fetched.
#[derive(Debug)]
pub enum RemoteError {
    /// The other server does not have it.
    NotFound,
    /// Its content is not uploaded yet.
    NotYetUploaded,
    /// It could not be reached, or answered with something unusable.
    Unavailable(String),
}

/// Another server's media as it arrives.
pub struct RemoteContent {
    pub content_type: Option<String>,
    /// The file name its `Content-Disposition` gave.
    pub filename: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, String>>,
}

/// Fetches media from the server that holds it.
pub trait RemoteMedia: Send + Sync {
    fn download<'a>(
        &'a self,
        origin: &'a ServerName,
        media_id: &'a str,
    ) -> BoxFuture<'a, Result<RemoteContent, RemoteError>>;
}

/// The file name in a `Content-Disposition` value (`filename*=utf-8''…` preferred), if any.
pub fn disposition_filename(disposition: &str) -> Option<String> {
    let mut plain = None;
    for param in disposition.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else { continue };
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let value = value.trim();
                let encoded = value.strip_prefix("utf-8''").or_else(|| value.strip_prefix("UTF-8''"))?;
                return percent_decode(encoded);
            }
            "filename" => plain = Some(value.trim().trim_matches('"').to_owned()),
            _ => {}
        }
    }
    plain
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_read_from_dispositions() {
        assert_eq!(disposition_filename("inline; filename=\"cat.png\""), Some("cat.png".into()));
        assert_eq!(
            disposition_filename("attachment; filename=x.txt; filename*=utf-8''%C3%A9t%C3%A9.txt"),
            Some("été.txt".into())
        );
        assert_eq!(disposition_filename("inline"), None);
    }
}
