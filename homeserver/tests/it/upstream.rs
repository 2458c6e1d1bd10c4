//! A test stand-in for an OpenAI-compatible chat completions API on loopback, recording what it
//! is sent: `GET /hello` answers a line; `POST /v1/chat/completions` streams its answer as
//! server-sent events (`data: {"choices":[{"delta":{"content":…}}]}` chunks 200 ms apart, then
//! `data: [DONE]`), the answer chosen by the last user message; the model `broken` gets a 503.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};
use futures::StreamExt;
use serde_json::{Value, json};

/// One request: path, `Authorization` header, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub path: String,
    pub authorization: String,
    pub body: String,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream { port: listener.local_addr().unwrap().port(), seen: Arc::default() };
        let app = Router::new()
            .route("/hello", get(hello))
            .route("/v1/chat/completions", post(chat))
            .with_state(upstream.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        upstream
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn record(&self, path: &str, headers: &HeaderMap, body: String) {
        let authorization =
            headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        self.seen.lock().unwrap().push(Seen { path: path.to_owned(), authorization, body });
    }
}

async fn hello(State(upstream): State<Upstream>, headers: HeaderMap) -> &'static str {
    upstream.record("/hello", &headers, String::new());
    "hello from upstream"
}

/// The canned answer to a conversation's last user message.
pub fn answer_to(question: &str) -> &'static str {
    match question {
        "What is 2+2?" => "The answer is 4.",
        "And doubled?" => "That makes 8.",
        _ => "Hello, world!",
    }
}

async fn chat(State(upstream): State<Upstream>, headers: HeaderMap, body: String) -> Response {
    upstream.record("/v1/chat/completions", &headers, body.clone());
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if request["model"] == "broken" {
        return Response::builder()
            .status(503)
            .body(Body::from("{\"error\":{\"message\":\"overloaded\"}}"))
            .unwrap();
    }
    let last_user = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let answer = answer_to(&last_user);
    let pieces: Vec<String> =
        answer.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let stream = futures::stream::iter(pieces.into_iter().map(Some).chain([None])).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, std::io::Error>(match piece {
            Some(text) => format!("data: {}\n\n", json!({ "choices": [{ "delta": { "content": text } }] })),
            None => "data: [DONE]\n\n".to_owned(),
        })
    });
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
}
