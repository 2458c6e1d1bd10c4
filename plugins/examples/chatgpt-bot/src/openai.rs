//! The OpenAI chat completions protocol, as far as the bot uses it: the URL, the streaming
//! request body, the server-sent chunks, and answers that come whole. Pure functions.

use lattice_plugin_sdk::serde_json::{self, Value, json};

use crate::conversation::Turn;

/// `{base_url}/chat/completions` (a trailing `/` of the base URL dropped).
pub fn completions_url(base_url: &str) -> String {
    format!("{}/chat/completions", base_url.trim_end_matches('/'))
}

/// The body of a streaming chat completion request.
pub fn request_body(model: &str, turns: &[Turn]) -> Value {
    json!({
        "model": model,
        "stream": true,
        "messages": turns.iter().map(Turn::to_json).collect::<Vec<_>>(),
    })
}

/// What one server-sent event of a streamed answer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// More text (`choices[0].delta.content`).
    Text(String),
    /// `[DONE]`: the answer is complete.
    Done,
    /// An `{"error": …}` event, with its message.
    Failed(String),
    /// Anything else (a role, a finish reason, usage, a keep-alive).
    Nothing,
}

/// Parses the `data` of one event.
pub fn parse_chunk(data: &str) -> Chunk {
    let data = data.trim();
    if data == "[DONE]" {
        return Chunk::Done;
    }
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return Chunk::Nothing;
    };
    if let Some(message) = error_message(&chunk) {
        return Chunk::Failed(message);
    }
    match chunk["choices"][0]["delta"]["content"].as_str() {
        Some(text) if !text.is_empty() => Chunk::Text(text.to_owned()),
        _ => Chunk::Nothing,
    }
}

/// The message of an `{"error": …}` object (`error.message`, or the error itself if it is a
/// string), if `value` is one.
pub fn error_message(value: &Value) -> Option<String> {
    let error = value.get("error").filter(|e| !e.is_null())?;
    Some(match (error["message"].as_str(), error.as_str()) {
        (Some(message), _) | (None, Some(message)) => message.to_owned(),
        _ => error.to_string(),
    })
}

/// A whole (non-streamed) answer: the text of `choices[0].message.content`, or the error's
/// message.
pub fn parse_whole(body: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(message) = error_message(&value) {
        return Err(message);
    }
    Ok(value["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            completions_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(completions_url("http://127.0.0.1:8080/v1/"), "http://127.0.0.1:8080/v1/chat/completions");
    }

    #[test]
    fn request() {
        let turns = [Turn::new("system", "Be brief."), Turn::new("user", "What is 2+2?")];
        assert_eq!(
            request_body("gpt-4o-mini", &turns),
            json!({
                "model": "gpt-4o-mini",
                "stream": true,
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": "What is 2+2?" },
                ],
            })
        );
    }

    #[test]
    fn chunks() {
        assert_eq!(parse_chunk(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#), Chunk::Text("Hel".into()));
        assert_eq!(
            parse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
            Chunk::Nothing
        );
        assert_eq!(parse_chunk(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#), Chunk::Nothing);
        assert_eq!(parse_chunk(r#"{"choices":[],"usage":{"total_tokens":9}}"#), Chunk::Nothing);
        assert_eq!(parse_chunk("[DONE]"), Chunk::Done);
        assert_eq!(parse_chunk("not json"), Chunk::Nothing);
        assert_eq!(
            parse_chunk(r#"{"error":{"message":"overloaded","type":"server_error"}}"#),
            Chunk::Failed("overloaded".into())
        );
        assert_eq!(parse_chunk(r#"{"error":"bad"}"#), Chunk::Failed("bad".into()));
        assert_eq!(
            parse_chunk(r#"{"error":null,"choices":[{"delta":{"content":"x"}}]}"#),
            Chunk::Text("x".into())
        );
    }

    #[test]
    fn whole_answers() {
        assert_eq!(
            parse_whole(r#"{"choices":[{"message":{"role":"assistant","content":"4"}}]}"#),
            Ok("4".into())
        );
        assert_eq!(parse_whole(r#"{"error":{"message":"no such model"}}"#), Err("no such model".into()));
        assert!(parse_whole("<html>").is_err());
    }
}
