//! Answering a prompt: rate limits, the thread as context, then a placeholder reply streamed
//! into the answer with edits, stopped on request, and apologies for what goes wrong.
//!
//! Failures of the model service are answered in the room and the call returns `Ok` (an `Err`
//! would have the host retry the delivery and ask the model again); only host-call failures a
//! retry can fix (`rate-limited`, `internal`) are returned. The whole answer stays within
//! `answer_timeout_ms` of the call's start, below the host's `wall_ms_per_call`: past it the
//! host would end the call and deliver the prompt again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lattice_plugin_sdk::http::{BodyReader, Request, Response, SseReader, Timed};
use lattice_plugin_sdk::serde_json::Value;
use lattice_plugin_sdk::{self as sdk, Delivery, Error, Event};

use crate::conversation::{self, Turn};
use crate::openai::{self, Chunk};
use crate::room::{self, Stop};
use crate::settings::{self, Config, Rate};
use crate::texts;

/// The host puts the configured secret `api_key` here; the plugin never sees it.
const AUTHORIZATION: &str = "Bearer {secret:api_key}";
/// The longest wait for connecting, the first byte, or between two chunks.
const REQUEST_TIMEOUT_MS: u64 = 60_000;
/// How often, while streaming, the bot looks for a stop request.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the typing notice is renewed.
const TYPING_EVERY: Duration = Duration::from_secs(20);
/// An answer longer than this is cut (the edit carries the text twice; events are ≤ 64 KiB).
const MAX_ANSWER_BYTES: usize = 28_000;
/// The most of a whole (non-streamed) body read, and of an error body logged.
const MAX_WHOLE_BYTES: usize = 1 << 20;
const ERROR_HEAD_BYTES: usize = 500;

/// How an answer ended.
#[derive(Debug)]
enum Outcome {
    /// The whole answer.
    Answer(String),
    /// The text so far, and why it ends there.
    Cut(String, &'static str),
    /// An apology.
    Failed(String),
    Stopped(Stop),
    /// The placeholder can no longer be edited.
    Gone,
}

/// Answers `prompt` (`text` is what it says to the model) in its thread.
pub fn answer(prompt: &Event, text: &str, started: Instant, delivery: Delivery) -> sdk::Result<()> {
    let config = Config::load();
    let room = prompt.room_id();
    let bot = sdk::whoami();
    // A redelivery of a prompt answered already (the answer, or an apology, was sent).
    if settings::was_answered(prompt.id())? {
        return Ok(());
    }
    // Counted once per prompt: a redelivery was counted by the first attempt.
    if delivery.attempt == 1 {
        match settings::count_prompt(&config, prompt.sender(), room, now_ms())? {
            Rate::Allowed => {}
            Rate::Refused { first } => {
                sdk::log::counter("rate_limited", 1);
                // Not returned: a redelivery skips the count and would ask the model.
                if first && let Err(e) = room::notice_in_thread(prompt, texts::RATE_LIMITED) {
                    sdk::warn!("warning about the rate: {}", e.message());
                }
                return Ok(());
            }
        }
    }
    sdk::log::counter("prompts", 1);
    let own = settings::room_settings(room)?;
    let model = own.model.unwrap_or_else(|| config.model.clone());
    let system_prompt = own.prompt.unwrap_or_else(|| config.system_prompt.clone());
    let root = prompt.thread_root().unwrap_or(prompt.id());
    let thread =
        room::settle(room::thread_messages(room, root, bot), "reading the thread")?.unwrap_or_default();
    let turns =
        conversation::build(&thread, bot, prompt.id(), text, &system_prompt, config.max_context_chars);

    room::typing(room, true);
    let placeholder = match room::settle(room::placeholder(prompt), "sending the placeholder") {
        Ok(Some(id)) => id,
        other => {
            room::typing(room, false);
            return other.map(|_| ());
        }
    };
    let deadline = started + Duration::from_millis(config.answer_timeout_ms);
    let answering = Answering { room, prompt, root, placeholder: &placeholder, deadline };
    let outcome = answering.run(&config.base_url, &model, &turns);
    let final_text = match outcome {
        Outcome::Answer(text) if text.trim().is_empty() => texts::EMPTY.to_owned(),
        Outcome::Answer(text) => text,
        Outcome::Cut(text, _) if text.trim().is_empty() => texts::TIMEOUT.to_owned(),
        Outcome::Cut(text, why) => texts::cut_short(&text, why),
        Outcome::Failed(apology) => apology,
        Outcome::Stopped(stop) => {
            sdk::log::counter("stopped", 1);
            // Not returned: a redelivery would ask the model again.
            if let Stop::Command(id) = &stop
                && let Err(e) = settings::record_stop(id)
            {
                sdk::warn!("recording the stop {id}: {}", e.message());
            }
            texts::STOPPED.to_owned()
        }
        Outcome::Gone => {
            room::typing(room, false);
            return Ok(());
        }
    };
    if texts::is_noise(&final_text) {
        sdk::log::counter("failures", 1);
    } else {
        sdk::log::counter("answers", 1);
    }
    finish(room, &placeholder, &final_text);
    // Not returned: a redelivery would ask the model again.
    if let Err(e) = settings::record_answered(prompt.id()) {
        sdk::warn!("recording the answer to {}: {}", prompt.id(), e.message());
    }
    room::typing(room, false);
    Ok(())
}

struct Answering<'a> {
    room: &'a str,
    prompt: &'a Event,
    root: &'a str,
    placeholder: &'a str,
    deadline: Instant,
}

impl Answering<'_> {
    fn run(&self, base_url: &str, model: &str, turns: &[Turn]) -> Outcome {
        let url = openai::completions_url(base_url);
        let response = match self.send(&url, &openai::request_body(model, turns)) {
            Ok(response) => response,
            Err(e) => {
                sdk::warn!("asking {url}: {}", e.message());
                return Outcome::Failed(apology(&e));
            }
        };
        let status = response.status();
        if !response.is_success() {
            let head = read_until(response.body_reader(), ERROR_HEAD_BYTES, self.deadline);
            sdk::warn!("{url} answered {status}: {}", String::from_utf8_lossy(&head));
            return Outcome::Failed(texts::status_apology(status));
        }
        if response.header("content-type").is_some_and(|t| t.trim_start().starts_with("application/json")) {
            return self.whole(response);
        }
        self.stream(response.sse())
    }

    /// Sends the request, waiting out the host's outbound rate a few times.
    fn send(&self, url: &str, body: &Value) -> sdk::Result<Response> {
        let mut waits = 0;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let timeout_ms =
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX).clamp(1_000, REQUEST_TIMEOUT_MS);
            let sent = Request::post(url)
                .header("Authorization", AUTHORIZATION)
                .header("Accept", "text/event-stream")
                .json(body)
                .timeout_ms(timeout_ms)
                .send();
            match sent {
                Err(Error::RateLimited(ms)) if waits < 3 && Duration::from_millis(ms.into()) < left => {
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(ms.into()));
                }
                other => return other,
            }
        }
    }

    /// A service that answered with a whole completion (it ignored `"stream": true`).
    fn whole(&self, response: Response) -> Outcome {
        let body = read_until(response.body_reader(), MAX_WHOLE_BYTES, self.deadline);
        match openai::parse_whole(&String::from_utf8_lossy(&body)) {
            Ok(text) if text.len() > MAX_ANSWER_BYTES => {
                Outcome::Cut(truncated(text, MAX_ANSWER_BYTES), "the answer is too long for one message")
            }
            Ok(text) => Outcome::Answer(text),
            Err(message) => {
                sdk::warn!("the model service's answer: {message}");
                Outcome::Failed(texts::SERVICE_ERROR.to_owned())
            }
        }
    }

    /// Reads the server-sent chunks into the placeholder, looking for a stop request about
    /// once a second.
    fn stream(&self, mut events: SseReader) -> Outcome {
        let mut text = String::new();
        let mut next_check = Instant::now() + CHECK_EVERY;
        let mut next_typing = Instant::now() + TYPING_EVERY;
        loop {
            if Instant::now() >= self.deadline {
                return Outcome::Cut(text, "the answer took too long");
            }
            match events.next_event_until(next_check.min(self.deadline)) {
                Err(e) => {
                    sdk::warn!("reading the answer: {}", e.message());
                    if text.is_empty() {
                        return Outcome::Failed(apology(&e));
                    }
                    let why = if is_timeout(&e) {
                        "the model service stopped answering"
                    } else {
                        "the connection to the model service failed"
                    };
                    return Outcome::Cut(text, why);
                }
                Ok(Timed::TimedOut) => {}
                Ok(Timed::Ready(None)) => return Outcome::Answer(text),
                Ok(Timed::Ready(Some(event))) => match openai::parse_chunk(&event.data) {
                    Chunk::Done => return Outcome::Answer(text),
                    Chunk::Nothing => {}
                    Chunk::Failed(message) => {
                        sdk::warn!("the model service's stream: {message}");
                        if text.is_empty() {
                            return Outcome::Failed(texts::SERVICE_ERROR.to_owned());
                        }
                        return Outcome::Cut(text, "the model service reported an error");
                    }
                    Chunk::Text(piece) => {
                        text.push_str(&piece);
                        if text.len() > MAX_ANSWER_BYTES {
                            return Outcome::Cut(
                                truncated(text, MAX_ANSWER_BYTES),
                                "the answer is too long for one message",
                            );
                        }
                        // The host sends at most one edit a second per message, always the last.
                        match room::edit_answer(self.room, self.placeholder, &text) {
                            Ok(_) => {}
                            Err(Error::NotFound(_)) => return Outcome::Gone,
                            Err(e) => sdk::debug!("editing the answer: {}", e.message()),
                        }
                    }
                },
            }
            let now = Instant::now();
            if now >= next_check {
                if let Some(stop) = room::stop_requested(self.room, self.prompt, self.root) {
                    return Outcome::Stopped(stop);
                }
                if now >= next_typing {
                    room::typing(self.room, true);
                    next_typing = now + TYPING_EVERY;
                }
                next_check = Instant::now() + CHECK_EVERY;
            }
        }
    }
}

/// Edits the placeholder into its final text, once more after a `rate-limited`.
fn finish(room: &str, placeholder: &str, text: &str) {
    for attempt in 1..=2 {
        match room::edit_answer(room, placeholder, text) {
            Ok(_) => return,
            Err(Error::RateLimited(ms)) if attempt == 1 => {
                std::thread::sleep(Duration::from_millis(u64::from(ms).min(2_000)));
            }
            Err(e) => {
                sdk::error!("the final edit of {placeholder}: {}", e.message());
                return;
            }
        }
    }
}

/// Up to `max` bytes of a body, read until its end or `deadline` (a failure ends it too).
fn read_until(mut body: BodyReader, max: usize, deadline: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match body.next_chunk_until(deadline) {
            Ok(Timed::Ready(Some(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(max);
    out
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// The SDK reports timeouts (connecting, first byte, between chunks, DNS) as `upstream` errors
/// saying "timed out".
fn is_timeout(error: &Error) -> bool {
    matches!(error, Error::Upstream(m) if m.contains("timed out"))
}

/// What the room is told about a failed request.
fn apology(error: &Error) -> String {
    match error {
        Error::Denied(_) => texts::DENIED,
        Error::RateLimited(_) => texts::BUSY,
        e if is_timeout(e) => texts::TIMEOUT,
        _ => texts::UNREACHABLE,
    }
    .to_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apologies_for_request_failures() {
        assert_eq!(apology(&Error::Upstream("the response timed out".into())), texts::TIMEOUT);
        assert_eq!(apology(&Error::Upstream("connection refused".into())), texts::UNREACHABLE);
        assert_eq!(apology(&Error::Denied("no".into())), texts::DENIED);
        assert_eq!(apology(&Error::RateLimited(500)), texts::BUSY);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncated("héllo".to_owned(), 2), "h");
        assert_eq!(truncated("héllo".to_owned(), 3), "hé");
        assert_eq!(truncated("hi".to_owned(), 10), "hi");
    }
}
