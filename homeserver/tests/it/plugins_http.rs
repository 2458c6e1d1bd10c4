//! Plugin HTTP end to end, as an admin runs it: the `lattice` binary with a `lattice.toml` that
//! grants the `http-probe` fixture one host (a test server on loopback, reachable because the
//! config's `[testing] allow_private_destinations` is on) and a secret from the environment.
//! The test server streams server-sent events the way an OpenAI-compatible chat completions API
//! does. Checked: the secret reaches the server as the bearer token and never the room; an
//! ungranted destination is refused without a request; a streamed answer ends as the final edit
//! of the placeholder; a plugin that makes requests without a grant does not load.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::HeaderMap,
    routing::{get, post},
};
use futures::StreamExt;
use plugins::Grants;
use serde_json::{Value, json};

use crate::{
    federation::free_port,
    harness::enc,
    plugins::{eventually, guest, spec},
};

/// What the test server saw: (path, authorization header, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

async fn upstream() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    async fn hello(State(seen): State<(Seen,)>, headers: HeaderMap) -> &'static str {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        seen.0.lock().unwrap().push(("/hello".into(), auth, String::new()));
        "hello from upstream"
    }
    async fn chat(State(seen): State<(Seen,)>, headers: HeaderMap, body: String) -> axum::response::Response {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        seen.0.lock().unwrap().push(("/v1/chat/completions".into(), auth, body));
        let pieces = ["Hel", "lo, ", "wor", "ld!"];
        let stream =
            futures::stream::iter(pieces.into_iter().map(Some).chain([None])).then(|piece| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let line = match piece {
                    Some(text) => {
                        format!("data: {}\n\n", json!({ "choices": [{ "delta": { "content": text } }] }))
                    }
                    None => "data: [DONE]\n\n".to_owned(),
                };
                Ok::<_, std::io::Error>(line)
            });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap()
    }
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/v1/chat/completions", post(chat))
        .with_state((seen.clone(),));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_plugin_reaches_its_granted_host_with_the_secret_and_streams_an_answer() {
    let Some(probe) = guest("http_probe") else { return };
    let (upstream_port, seen) = upstream().await;
    let database = homeserver_storage::testing::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        r#"server_name = "localhost"
[listen]
client = "127.0.0.1:{port}"
[database]
url = "{db}"
[rate_limits]
enabled = false
[testing]
allow_private_destinations = true
[plugins.probe]
path = "{path}"
config = {{ api_key = {{ env = "PROBE_API_KEY" }} }}
[plugins.probe.grants]
http_hosts = ["127.0.0.1:{upstream_port}"]
"#,
        db = database.url,
        path = probe.display(),
    );
    std::fs::write(dir.path().join("lattice.toml"), config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .current_dir(dir.path())
        .args(["--config", "lattice.toml"])
        .env("PROBE_API_KEY", "sk-test-secret")
        .env("LATTICE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(60, "the server to start", || async {
        http.get(format!("{base}/_matrix/client/versions")).send().await.ok().map(|_| ())
    })
    .await;
    let call = |method: reqwest::Method, path: String, token: Option<String>, body: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut req = http.request(method, format!("{base}{path}")).json(&body);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let res = req.send().await.unwrap();
            res.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let registered = call(
        reqwest::Method::POST,
        "/_matrix/client/v3/register".into(),
        None,
        json!({ "username": "alice", "password": "pw-alice-secret", "auth": { "type": "m.login.dummy" } }),
    )
    .await;
    let token = registered["access_token"].as_str().expect("registered").to_owned();
    let room =
        call(reqwest::Method::POST, "/_matrix/client/v3/createRoom".into(), Some(token.clone()), json!({}))
            .await["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
    call(
        reqwest::Method::POST,
        format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        Some(token.clone()),
        json!({ "user_id": "@probe:localhost" }),
    )
    .await;
    let messages = || {
        let (room, token) = (room.clone(), token.clone());
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room));
            let body = call(reqwest::Method::GET, path, Some(token), Value::Null).await;
            body["chunk"].as_array().cloned().unwrap_or_default()
        }
    };
    eventually(30, "the probe to join", || async {
        messages()
            .await
            .iter()
            .any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == "@probe:localhost"
                    && e["content"]["membership"] == "join"
            })
            .then_some(())
    })
    .await;
    let mut txn = 0;
    let mut say = |body: String| {
        txn += 1;
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t{txn}", enc(&room));
        call(reqwest::Method::PUT, path, Some(token.clone()), json!({ "msgtype": "m.text", "body": body }))
    };

    say(format!("!fetch http://127.0.0.1:{upstream_port}/hello")).await;
    let reply = eventually(30, "the fetch reply", || async {
        messages()
            .await
            .into_iter()
            .find(|e| e["sender"] == "@probe:localhost" && e["type"] == "m.room.message")
    })
    .await;
    assert_eq!(reply["content"]["body"], "status 200: hello from upstream");
    assert_eq!(
        seen.lock().unwrap()[0],
        ("/hello".to_owned(), "Bearer sk-test-secret".to_owned(), String::new())
    );

    // Another port of the same host was not granted: refused before any request is made.
    say(format!("!fetch http://127.0.0.1:{}/hello", free_port())).await;
    let refused = eventually(30, "the refusal", || async {
        messages().await.into_iter().find(|e| {
            e["sender"] == "@probe:localhost"
                && e["content"]["body"].as_str().is_some_and(|b| b.starts_with("error:"))
        })
    })
    .await;
    assert!(refused["content"]["body"].as_str().unwrap().contains("did not allow"), "{refused}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    say(format!("!stream http://127.0.0.1:{upstream_port}/v1/chat/completions")).await;
    let final_text = eventually(30, "the streamed answer", || async {
        let events = messages().await;
        events.into_iter().find(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.new_content"]["body"] == "Hello, world!"
        })
    })
    .await;
    assert_eq!(final_text["sender"], "@probe:localhost");
    let (path, auth, body) = seen.lock().unwrap()[1].clone();
    assert_eq!((path.as_str(), auth.as_str()), ("/v1/chat/completions", "Bearer sk-test-secret"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((body["model"].as_str(), body["stream"].as_bool()), (Some("m"), Some(true)));
    // The secret never reached the room.
    let everything = messages().await;
    assert!(!serde_json::to_string(&everything).unwrap().contains("sk-test-secret"));
}

#[tokio::test]
async fn a_plugin_that_makes_requests_without_a_grant_does_not_load() {
    let Some(probe) = guest("http_probe") else { return };
    let database = homeserver_storage::testing::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::harness::test_config(dir.path().to_owned(), &database.url);
    config.plugins.insert("probe".into(), spec(probe, json!({}), Grants::default()));
    let err = homeserver::Server::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("grants.http_hosts"), "{err}");
}
