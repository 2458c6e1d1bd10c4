//! The `lattice` binary run as an admin runs it, for plugin tests that need the server's own
//! environment (secrets in environment variables): a `lattice.toml` written for the test, a
//! database of the test's own, raw client-server calls, and the process killed at the end.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use homeserver_storage::testing::TestDatabase;
use serde_json::{Value, json};

use crate::{federation::free_port, harness::enc, plugins::eventually};

pub struct Lattice {
    pub base: String,
    http: reqwest::Client,
    child: Child,
    _dir: tempfile::TempDir,
    _database: TestDatabase,
}

impl Drop for Lattice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lattice {
    /// Starts the binary with `plugins_toml` appended to a loopback test configuration (with
    /// `[testing] allow_private_destinations`, so plugins may reach test servers on loopback)
    /// and the given environment.
    pub async fn start(plugins_toml: &str, env: &[(&str, &str)]) -> Lattice {
        let database = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "server_name = \"localhost\"\n[listen]\nclient = \"127.0.0.1:{port}\"\n[database]\nurl = \"{}\"\n\
             [rate_limits]\nenabled = false\n[testing]\nallow_private_destinations = true\n{plugins_toml}",
            database.url
        );
        std::fs::write(dir.path().join("lattice.toml"), config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lattice"));
        command
            .current_dir(dir.path())
            .args(["--config", "lattice.toml"])
            .env("LATTICE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let lattice = Lattice {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
            _dir: dir,
            _database: database,
        };
        eventually(60, "the server to start", || async {
            lattice.http.get(lattice.url("/_matrix/client/versions")).send().await.ok().map(|_| ())
        })
        .await;
        lattice
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A request; the JSON answer (Null if there is none).
    pub async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut req = self.http.request(method, self.url(path));
        if !body.is_null() {
            req = req.json(&body);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap().json::<Value>().await.unwrap_or(Value::Null)
    }

    /// Registers a user; their access token.
    pub async fn register(&self, name: &str) -> String {
        let body = json!({ "username": name, "password": format!("pw-{name}-secret"), "auth": { "type": "m.login.dummy" } });
        let answer = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, body).await;
        answer["access_token"].as_str().expect("registered").to_owned()
    }

    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let answer =
            self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(token), body).await;
        answer["room_id"].as_str().expect("room created").to_owned()
    }

    pub async fn invite(&self, token: &str, room: &str, user: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
        self.call(reqwest::Method::POST, &path, Some(token), json!({ "user_id": user })).await;
    }

    pub async fn join(&self, token: &str, room: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room));
        self.call(reqwest::Method::POST, &path, Some(token), json!({})).await;
    }

    /// Sends a message event with this content; its event id.
    pub async fn send(&self, token: &str, room: &str, content: Value) -> String {
        let txn = crate::harness::rand_u64();
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t{txn}", enc(room));
        let answer = self.call(reqwest::Method::PUT, &path, Some(token), content).await;
        answer["event_id"].as_str().expect("sent").to_owned()
    }

    pub async fn say(&self, token: &str, room: &str, body: &str) -> String {
        self.send(token, room, json!({ "msgtype": "m.text", "body": body })).await
    }

    /// The room's latest events, oldest first.
    pub async fn messages(&self, token: &str, room: &str) -> Vec<Value> {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200", enc(room));
        let answer = self.call(reqwest::Method::GET, &path, Some(token), Value::Null).await;
        let mut events = answer["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// Reloads every plugin, as `kill -HUP` does.
    pub fn reload_plugins(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits until `user` is joined to the room.
    pub async fn wait_joined(&self, token: &str, room: &str, user: &str) {
        eventually(30, &format!("{user} to join"), || async {
            let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
            let answer = self.call(reqwest::Method::GET, &path, Some(token), Value::Null).await;
            answer["joined"].get(user).map(|_| ())
        })
        .await
    }
}

/// Waits this long for something that must not happen.
pub const QUIET: Duration = Duration::from_secs(2);
