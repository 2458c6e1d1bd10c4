//! What the bot says besides the model's answers, in one place: the conversation leaves these
//! out of the context it sends (see [`is_noise`]), so a failed or stopped answer is not taken
//! for something the assistant said.

/// The reply sent before the first chunk arrives, then edited into the answer.
pub const PLACEHOLDER: &str = "…";
/// The answer's text once a stop was honoured (the prompt was redacted, or `!ai stop`).
pub const STOPPED: &str = "(stopped)";
/// Every apology starts with this.
pub const SORRY: &str = "Sorry — ";
/// No answer within `.timeout_ms` / `answer_timeout_ms`.
pub const TIMEOUT: &str = "Sorry — the model service did not answer in time. Please try again later.";
/// A connection, TLS or DNS failure.
pub const UNREACHABLE: &str = "Sorry — the model service could not be reached. Please try again later.";
/// An `{"error": …}` body or event.
pub const SERVICE_ERROR: &str = "Sorry — the model service reported an error. Please try again later.";
/// A 2xx answer with nothing in it.
pub const EMPTY: &str = "Sorry — the model service sent an empty answer. Please try again later.";
/// The host refused the request (`grants.http_hosts`, or a destination it does not allow).
pub const DENIED: &str = "Sorry — this server does not allow me to reach the model service (an admin can check grants.http_hosts).";
/// The host's outbound request rate stayed exhausted.
pub const BUSY: &str = "Sorry — too many requests are going out right now. Please try again in a moment.";
/// Past `rate_per_user_per_minute` or `rate_per_room_per_minute`.
pub const RATE_LIMITED: &str = "You're sending requests too fast; please wait a minute.";
/// `!ai stop` with no answer being written.
pub const NOTHING_TO_STOP: &str = "Nothing to stop.";
/// `!ai model <name>`, `!ai prompt <text>` or `!ai reset` from a user below power level 50.
pub const NOT_MODERATOR: &str = "Only room moderators can change my settings here.";
/// `!ai model <name>` with a name that is too long or has other characters.
pub const BAD_MODEL: &str =
    "A model name is at most 100 characters: letters, digits and . _ : / - (the model is unchanged).";
/// `!ai prompt <text>` past 2,000 characters.
pub const PROMPT_TOO_LONG: &str =
    "A system prompt is at most 2,000 characters (the system prompt is unchanged).";
/// Appended to an answer that was cut short (time or size), before the reason.
pub const CUT_SHORT: &str = "\n\n(cut short: ";

/// The apology for an HTTP error status.
pub fn status_apology(status: u16) -> String {
    format!("{SORRY}the model service answered {status} ({}). Please try again later.", reason_phrase(status))
}

/// An answer cut short, with why (`"the answer took too long"`).
pub fn cut_short(text: &str, why: &str) -> String {
    format!("{text}{CUT_SHORT}{why})")
}

/// Whether one of the bot's texts is not an answer (a placeholder, an apology, a stop), or the
/// answer part of a cut-short one.
pub fn is_noise(text: &str) -> bool {
    let text = text.trim();
    text.is_empty() || text == PLACEHOLDER || text == STOPPED || text.starts_with(SORRY)
}

/// An answer without the cut-short note.
pub fn without_note(text: &str) -> &str {
    match text.rfind(CUT_SHORT) {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text,
    }
}

/// The standard reason phrase of a status code ("Unknown" for others).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apologies() {
        assert_eq!(
            status_apology(503),
            "Sorry — the model service answered 503 (Service Unavailable). Please try again later."
        );
        assert_eq!(
            status_apology(418),
            "Sorry — the model service answered 418 (Client Error). Please try again later."
        );
    }

    #[test]
    fn noise_is_not_an_answer() {
        for text in [PLACEHOLDER, STOPPED, TIMEOUT, EMPTY, "  ", &status_apology(500)] {
            assert!(is_noise(text), "{text}");
        }
        for text in ["4", "Sorry, I can't tell.", "(stopped) is what it said"] {
            assert!(!is_noise(text), "{text}");
        }
    }

    #[test]
    fn cut_short_answers_keep_their_text() {
        let cut = cut_short("Once upon a time", "the answer took too long");
        assert_eq!(cut, "Once upon a time\n\n(cut short: the answer took too long)");
        assert_eq!(without_note(&cut), "Once upon a time");
        assert_eq!(without_note("plain (text)"), "plain (text)");
    }
}
