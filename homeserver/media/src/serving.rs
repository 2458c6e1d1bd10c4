//! How stored media is served: its content type only if it is a well-formed MIME type, and
//! `inline` only for types a browser cannot run script from (everything else is an
//! `attachment`); the routes add `Content-Security-Policy: sandbox` and `nosniff` besides.

/// Types shown inline (as Synapse allows): text without markup, images, audio, video.
const INLINE: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Longest content type kept.
const MAX_CONTENT_TYPE: usize = 255;

/// The content type to store: a `type/subtype` (parameters kept) of printable ASCII, or
/// `application/octet-stream`.
pub fn content_type(given: Option<&str>) -> String {
    let fallback = "application/octet-stream".to_owned();
    let Some(given) = given.map(str::trim).filter(|t| !t.is_empty() && t.len() <= MAX_CONTENT_TYPE) else {
        return fallback;
    };
    let essence = given.split(';').next().unwrap_or_default().trim();
    let token =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c));
    match essence.split_once('/') {
        Some((kind, sub))
            // No commas or quotes: browsers read a comma-separated list and take the last type.
            if token(kind)
                && token(sub)
                && given.chars().all(|c| (c.is_ascii_graphic() || c == ' ') && c != ',' && c != '"') =>
        {
            given.to_owned()
        }
        _ => fallback,
    }
}

/// Whether content of this type may be shown inline.
pub fn is_inline(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    INLINE.contains(&essence.as_str())
}

/// The `Content-Disposition` value: `inline` or `attachment`, with the file name (RFC 6266:
/// ASCII names quoted, others as `filename*` in UTF-8, percent-encoded).
pub fn disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline(content_type) { "inline" } else { "attachment" };
    let Some(name) = filename.filter(|n| !n.is_empty()) else { return kind.to_owned() };
    if name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{kind}; filename=\"{quoted}\"")
    } else {
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{kind}; filename*=utf-8''{encoded}")
    }
}

/// A file name worth keeping: at most 255 bytes, no path separators or control characters.
pub fn filename(given: Option<&str>) -> Option<String> {
    let name = given?.trim();
    // Bidirectional controls can disguise an extension ("invoice\u{202e}fdp.exe").
    let bidi =
        |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_control() || bidi(c) || c == '/' || c == '\\')
    {
        return None;
    }
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harmless_types_are_inline_and_names_are_quoted() {
        assert_eq!(content_type(Some("image/png")), "image/png");
        assert_eq!(content_type(Some("text/plain; charset=utf-8")), "text/plain; charset=utf-8");
        assert_eq!(content_type(Some("not a type")), "application/octet-stream");
        assert_eq!(content_type(Some("text/html\r\nX-Evil: 1")), "application/octet-stream");
        assert_eq!(content_type(None), "application/octet-stream");
        assert_eq!(content_type(Some("text/plain; a=b, text/html")), "application/octet-stream");
        assert_eq!(disposition("image/png", Some("cat.png")), "inline; filename=\"cat.png\"");
        assert_eq!(disposition("text/html", Some("page.html")), "attachment; filename=\"page.html\"");
        assert_eq!(disposition("image/svg+xml", None), "attachment", "SVG can carry script");
        assert_eq!(disposition("text/plain", Some("a\"b")), "inline; filename=\"a\\\"b\"");
        assert_eq!(disposition("text/plain", Some("été.txt")), "inline; filename*=utf-8''%C3%A9t%C3%A9.txt");
        assert_eq!(filename(Some("../etc/passwd")), None);
        assert_eq!(filename(Some("invoice\u{202e}fdp.exe")), None);
        assert_eq!(filename(Some("notes.txt")), Some("notes.txt".into()));
    }
}
