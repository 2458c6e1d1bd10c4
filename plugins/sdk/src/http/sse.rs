//! Server-sent events (`text/event-stream`): a push parser with no I/O.
//!
//! [`SseParser`] follows the WHATWG event-stream rules: lines end with `\r\n`, `\n` or `\r` (also
//! when a chunk boundary falls between `\r` and `\n`); `:` starts a comment; `data` lines are
//! joined with `\n`; a blank line dispatches the event; an event without `data` is dropped; what
//! is pending when the stream ends is dropped. Bytes are decoded as UTF-8 per line (lossily), so
//! a character split between two chunks comes out whole.
//!
//! This file uses only `std`, so its tests run on the build machine: from `plugins/examples`,
//! `cargo test -p lattice-plugin-sdk --lib` (see `plugins/README.md`).

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, `"message"` when the event named none.
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
    /// The last `id` seen in the stream so far (it carries over to later events), if any.
    pub id: Option<String>,
}

/// Turns chunks of an event stream into [`SseEvent`]s; chunks may split lines (and characters)
/// anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting this one belongs to that line end.
    after_cr: bool,
    /// The first line was seen (a leading byte-order mark is skipped there).
    started: bool,
    event: String,
    /// The data buffer as the spec keeps it: every `data` value followed by `\n`.
    data: String,
    last_id: Option<String>,
    retry_ms: Option<u64>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut events);
            self.line = line;
            self.line.clear();
            let was_cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if was_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// Bytes held for events not yet complete (the unfinished line and the data so far): a
    /// caller reading an untrusted stream can stop when this grows too large.
    pub fn buffered_len(&self) -> usize {
        self.line.len() + self.data.len() + self.event.len()
    }

    /// The last `retry` field (the reconnection delay the server asks for), if any.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        let mut line = String::from_utf8_lossy(line);
        if !self.started {
            self.started = true;
            if let Some(stripped) = line.strip_prefix('\u{feff}') {
                line = stripped.to_owned().into();
            }
        }
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                self.last_id = (!value.is_empty()).then(|| value.to_owned());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        events.push(SseEvent {
            event: if event.is_empty() { "message".to_owned() } else { event },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{SseEvent, SseParser};

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.to_owned(), data: data.to_owned(), id: None }
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|c| parser.push(c)).collect()
    }

    /// Every way of cutting `input` in two, and byte by byte, gives the same events as one chunk.
    fn assert_split_invariant(input: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_chunks(&[input]), expected, "whole");
        for cut in 0..=input.len() {
            assert_eq!(parse_chunks(&[&input[..cut], &input[cut..]]), expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), expected, "byte by byte");
    }

    #[test]
    fn simple_event() {
        assert_split_invariant(b"data: hello\n\n", &[ev("message", "hello")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        assert_split_invariant(b"data: a\ndata: b\ndata:\ndata: c\n\n", &[ev("message", "a\nb\n\nc")]);
    }

    #[test]
    fn crlf_and_cr_line_ends() {
        let expected = [ev("message", "a\nb"), ev("message", "c")];
        assert_split_invariant(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n", &expected);
        assert_split_invariant(b"data: a\rdata: b\r\rdata: c\r\r", &expected);
        assert_split_invariant(b"data: a\r\ndata: b\n\rdata: c\n\r\n", &expected);
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        // Were the `\n` taken for a second line end, the blank line would come one line early.
        assert_eq!(
            parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
            [ev("message", "a\nb")]
        );
        // A `\r` at a chunk's end followed by a chunk starting with another `\r`: two line ends.
        assert_eq!(parse_chunks(&[b"data: a\r", b"\r"]), [ev("message", "a")]);
        // A lone `\r` before an empty chunk still waits for the next real byte.
        assert_eq!(parse_chunks(&[b"data: a\r", b"", b"\n", b"\n"]), [ev("message", "a")]);
    }

    #[test]
    fn comments_are_ignored() {
        assert_split_invariant(
            b": keep-alive\n\n:another\ndata: x\n: in the middle\ndata: y\n\n",
            &[ev("message", "x\ny")],
        );
    }

    #[test]
    fn event_names_ids_and_retry() {
        let mut parser = SseParser::new();
        let events = parser.push(b"event: update\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\nid\ndata: z\n\n");
        assert_eq!(
            events,
            [
                SseEvent { event: "update".into(), data: "x".into(), id: Some("7".into()) },
                SseEvent { event: "message".into(), data: "y".into(), id: Some("7".into()) },
                SseEvent { event: "message".into(), data: "z".into(), id: None },
            ]
        );
        assert_eq!(parser.retry_ms(), Some(1500));
    }

    #[test]
    fn field_value_spacing() {
        assert_split_invariant(
            b"data:x\n\ndata:  two spaces\n\ndata\n\ndata: a:b\n\n",
            &[ev("message", "x"), ev("message", " two spaces"), ev("message", ""), ev("message", "a:b")],
        );
    }

    #[test]
    fn events_without_data_are_dropped_and_reset_the_name() {
        assert_split_invariant(b"event: ping\n\ndata: after\n\n", &[ev("message", "after")]);
        assert_split_invariant(b"\n\n\n", &[]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_split_invariant(b"foo: bar\ndata: d\nData: no\n\n", &[ev("message", "d")]);
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data: partial\n"), []);
        assert_eq!(parser.push(b"data: more"), []);
        assert!(parser.buffered_len() > 0);
        assert_eq!(parser.push(b"\n\n"), [ev("message", "partial\nmore")]);
        assert_eq!(parser.buffered_len(), 0);
    }

    #[test]
    fn utf8_split_between_chunks() {
        assert_split_invariant("data: héllo → wörld\n\n".as_bytes(), &[ev("message", "héllo → wörld")]);
    }

    #[test]
    fn leading_byte_order_mark_is_skipped() {
        assert_split_invariant("\u{feff}data: x\n\n".as_bytes(), &[ev("message", "x")]);
    }

    #[test]
    fn openai_chat_completion_stream() {
        let stream = concat!(
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: [DONE]\n\n",
        );
        assert_split_invariant(
            stream.as_bytes(),
            &[
                ev("message", "{\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}"),
                ev("message", "{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"),
                ev("message", "{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}"),
                ev("message", "[DONE]"),
            ],
        );
    }
}
