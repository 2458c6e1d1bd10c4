//! The `multipart/mixed` bodies of federation's media endpoints (spec: server-server
//! "Content repository"): exactly two parts, JSON metadata (`{}`) then the content (or a
//! `Location` header). Both directions stream: [`Encoder`] wraps a file's chunks, [`split`]
//! reads the metadata and the content part's headers (at most [`MAX_HEAD`] bytes), then hands
//! on the content as a stream that ends at the closing boundary — a 100 MB file never sits in
//! memory either way.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream::BoxStream};
use memchr::memmem;

/// Most bytes before the content starts (preamble, the metadata part, headers).
pub const MAX_HEAD: usize = 64 * 1024;

/// The framing around one piece of content.
pub struct Encoder {
    boundary: String,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder { boundary: homeserver_core::ids::random_string(32) }
    }

    /// The response's `Content-Type`.
    pub fn content_type(&self) -> String {
        format!("multipart/mixed; boundary={}", self.boundary)
    }

    /// Everything before the content: the metadata part and the content part's headers
    /// (`headers`: name and value pairs, already safe header values).
    pub fn head(&self, headers: &[(&str, &str)]) -> Bytes {
        let mut head = format!(
            "--{}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{}\r\n",
            self.boundary, self.boundary
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        Bytes::from(head)
    }

    /// Everything after the content.
    pub fn tail(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

/// Why a multipart body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("not multipart/mixed with a boundary")]
    NotMultipart,
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    #[error("the body failed: {0}")]
    Body(String),
}

/// The boundary of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.len() <= 70).then(|| value.to_owned())
    })
}

/// The content part: its headers (names lower-cased) and its bytes as they arrive.
pub struct ContentPart {
    pub headers: Vec<(String, String)>,
    pub body: BoxStream<'static, Result<Bytes, MultipartError>>,
}

impl ContentPart {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

type Source = BoxStream<'static, Result<Bytes, String>>;

/// Reads up to the content of a two-part body with `boundary`.
pub async fn split(mut source: Source, boundary: &str) -> Result<ContentPart, MultipartError> {
    let mut buf = BytesMut::new();
    let first = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    // The metadata part starts at the first boundary (a preamble before it is allowed).
    let start = fill_until(&mut source, &mut buf, first.as_bytes()).await?;
    let _ = buf.split_to(start + first.len());
    end_boundary_line(&mut source, &mut buf).await?;
    let metadata_end = fill_until(&mut source, &mut buf, delimiter.as_bytes()).await?;
    let _ = buf.split_to(metadata_end + delimiter.len());
    end_boundary_line(&mut source, &mut buf).await?;
    // The content part's headers (none: an empty line at once).
    let headers = match fill_until(&mut source, &mut buf, b"\r\n").await? {
        0 => {
            let _ = buf.split_to(2);
            Vec::new()
        }
        _ => {
            let headers_end = fill_until(&mut source, &mut buf, b"\r\n\r\n").await?;
            let head = buf.split_to(headers_end + 4);
            parse_headers(&head[..headers_end])?
        }
    };
    let body = content(source, buf, delimiter.into_bytes());
    Ok(ContentPart { headers, body })
}

/// Consumes the rest of a boundary line: a line break (another part follows; transport padding
/// before it is allowed), not `--` (the end).
async fn end_boundary_line(source: &mut Source, buf: &mut BytesMut) -> Result<(), MultipartError> {
    let line = fill_until(source, buf, b"\r\n").await?;
    if !buf[..line].iter().all(|b| *b == b' ' || *b == b'\t') {
        return Err(MultipartError::Malformed("a boundary line ends the body too early"));
    }
    let _ = buf.split_to(line + 2);
    Ok(())
}

/// Reads into `buf` until it holds `needle`; the needle's position. At most [`MAX_HEAD`].
/// Each byte is searched once however small the chunks (`scanned`: where a needle could
/// still begin).
async fn fill_until(source: &mut Source, buf: &mut BytesMut, needle: &[u8]) -> Result<usize, MultipartError> {
    let mut scanned = 0;
    loop {
        if let Some(at) = memmem::find(&buf[scanned..], needle) {
            return Ok(scanned + at);
        }
        scanned = buf.len().saturating_sub(needle.len() - 1);
        if buf.len() > MAX_HEAD {
            return Err(MultipartError::Malformed("the parts before the content are too long"));
        }
        match source.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(err)) => return Err(MultipartError::Body(err)),
            None => return Err(MultipartError::Malformed("the body ended early")),
        }
    }
}

fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, MultipartError> {
    let text = std::str::from_utf8(block).map_err(|_| MultipartError::Malformed("headers are not UTF-8"))?;
    text.split("\r\n")
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) =
                line.split_once(':').ok_or(MultipartError::Malformed("a header without a colon"))?;
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect()
}

/// The content's bytes: everything up to `delimiter`, holding back what could be its start.
fn content(
    source: Source,
    buf: BytesMut,
    delimiter: Vec<u8>,
) -> BoxStream<'static, Result<Bytes, MultipartError>> {
    struct State {
        source: Source,
        buf: BytesMut,
        delimiter: Vec<u8>,
        /// Where in `buf` the delimiter could still begin (each byte is searched once).
        scanned: usize,
        done: bool,
    }
    let state = State { source, buf, delimiter, scanned: 0, done: false };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(at) = memmem::find(&s.buf[s.scanned..], &s.delimiter) {
                // The closing delimiter (`--` after it), not a third part's.
                let end = s.scanned + at + s.delimiter.len();
                while s.buf.len() < end + 2 {
                    match s.source.next().await {
                        Some(Ok(chunk)) => s.buf.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                s.done = true;
                if s.buf.get(end..end + 2) != Some(b"--") {
                    return Some((Err(MultipartError::Malformed("more than two parts")), s));
                }
                let last = s.buf.split_to(s.scanned + at).freeze();
                return Some((Ok(last), s));
            }
            // All but what could be the delimiter's beginning is content.
            let safe = s.buf.len().saturating_sub(s.delimiter.len() - 1);
            s.scanned = safe;
            if safe >= 64 * 1024 {
                let chunk = s.buf.split_to(safe).freeze();
                s.scanned = 0;
                return Some((Ok(chunk), s));
            }
            match s.source.next().await {
                Some(Ok(chunk)) => s.buf.extend_from_slice(&chunk),
                Some(Err(err)) => {
                    s.done = true;
                    return Some((Err(MultipartError::Body(err)), s));
                }
                None => {
                    s.done = true;
                    return Some((Err(MultipartError::Malformed("no closing boundary")), s));
                }
            }
        }
    })
    .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(c) if c.is_empty())))
    .boxed()
}

/// A stream of byte chunks from any stream of results.
pub fn source<E: std::fmt::Display>(stream: impl Stream<Item = Result<Bytes, E>> + Send + 'static) -> Source {
    stream.map(|chunk| chunk.map_err(|e| e.to_string())).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(part: ContentPart) -> Result<Vec<u8>, MultipartError> {
        let mut body = part.body;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// `bytes` cut into chunks of `size`.
    fn chunked(bytes: Vec<u8>, size: usize) -> Source {
        let chunks: Vec<Result<Bytes, String>> =
            bytes.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn encoded_bodies_split_back_into_headers_and_content_at_any_chunking() {
        let encoder = Encoder::new();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut body =
            encoder.head(&[("Content-Type", "image/png"), ("Content-Disposition", "inline")]).to_vec();
        body.extend_from_slice(&content);
        body.extend_from_slice(&encoder.tail());
        let boundary = boundary_of(&encoder.content_type()).unwrap();
        for size in [1, 7, 4096, 1 << 20] {
            let part = split(chunked(body.clone(), size), &boundary).await.unwrap();
            assert_eq!(part.header("content-type"), Some("image/png"));
            assert_eq!(collect(part).await.unwrap(), content, "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn truncated_and_malformed_bodies_are_errors() {
        let encoder = Encoder::new();
        let boundary = boundary_of(&encoder.content_type()).unwrap();
        let mut body = encoder.head(&[("Content-Type", "text/plain")]).to_vec();
        body.extend_from_slice(b"cut short");
        let part = split(chunked(body, 5), &boundary).await.unwrap();
        assert!(collect(part).await.is_err(), "no closing boundary");
        let junk = chunked(vec![b'x'; MAX_HEAD * 2], 1024);
        assert!(split(junk, &boundary).await.is_err());
        // A third part after the content is not the answer the spec describes.
        let mut three = encoder.head(&[("Content-Type", "text/plain")]).to_vec();
        three.extend_from_slice(
            format!("content\r\n--{boundary}\r\n\r\nmore\r\n--{boundary}--\r\n").as_bytes(),
        );
        let part = split(chunked(three, 3), &boundary).await.unwrap();
        assert!(collect(part).await.is_err(), "three parts");
        // A content part without headers, and padding after a boundary, are well-formed.
        let body = format!("--{boundary}  \r\n\r\n{{}}\r\n--{boundary} \r\n\r\nbytes\r\n--{boundary}--");
        let part = split(chunked(body.into_bytes(), 2), &boundary).await.unwrap();
        assert!(part.headers.is_empty());
        assert_eq!(collect(part).await.unwrap(), b"bytes");
        assert_eq!(boundary_of("multipart/mixed; boundary=\"abc\""), Some("abc".into()));
        assert_eq!(boundary_of("application/json"), None);
    }
}
