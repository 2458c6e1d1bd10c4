//! `TestServer`: a real Lattice server in this process, on 127.0.0.1 with an ephemeral port.

use std::{path::PathBuf, sync::Arc, time::Duration};

use homeserver::{Server, config::Config};
use homeserver_storage::testing::TestDatabase;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestServer {
    pub base: String,
    /// `https://…` when the server was configured with an HTTPS listener.
    pub tls_base: Option<String>,
    pub http: reqwest::Client,
    config: Config,
    database: Option<TestDatabase>,
    _data_dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The running server's components (for tests that act as another server would).
    pub server: Arc<Server>,
}

/// A registered user with a token.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub password: String,
}

pub fn test_config(data_dir: PathBuf, database_url: &str) -> Config {
    let mut config = Config { server_name: "localhost".into(), data_dir, ..Default::default() };
    config.database.url = database_url.to_owned();
    config.listen.client = "127.0.0.1:0".parse().unwrap();
    config.rate_limits.enabled = false;
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let database = TestDatabase::create().await;
        let data_dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(data_dir.path().to_owned(), &database.url);
        adjust(&mut config);
        Self::launch(config, Some(database), data_dir).await
    }

    async fn launch(
        config: Config,
        database: Option<TestDatabase>,
        data_dir: Arc<tempfile::TempDir>,
    ) -> TestServer {
        let server = Arc::new(Server::build(config.clone()).await.expect("server builds"));
        let listeners = server.bind().await.expect("bind");
        let addr = listeners.client.local_addr().unwrap();
        let tls_base = listeners.tls.as_ref().map(|(l, _)| format!("https://{}", l.local_addr().unwrap()));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = server.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listeners, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            base: format!("http://{addr}"),
            tls_base,
            http: reqwest::Client::new(),
            config,
            database,
            _data_dir: data_dir,
            stop: Some(stop),
            task: Some(task),
            server,
        }
    }

    /// Stops the server gracefully (waits until it has closed the database).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task).await.expect("server stops").unwrap();
        }
    }

    /// Stops and starts again on the same database and data directory (a new port).
    pub async fn restart(self) -> TestServer {
        self.restart_with(|_| {}).await
    }

    /// Restarts with the configuration changed.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        self.stop().await;
        let database = self.database.take();
        let data_dir = self._data_dir.clone();
        let mut config = self.config.clone();
        config.listen.client = "127.0.0.1:0".parse().unwrap();
        adjust(&mut config);
        Self::launch(config, database, data_dir).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw request; returns status and JSON body (Null if the body is not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.body(body.to_string()).header("content-type", "application/json");
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, token, Some(body)).await
    }

    /// The stored UIA session rows (`client_dict` and `result`), for checks on what is persisted.
    pub async fn uia_dump(&self) -> Vec<String> {
        let db = homeserver_storage::Db::connect(self.database_url()).await.unwrap();
        let mut out = Vec::new();
        for id in db.uia_session_ids().await.unwrap() {
            if let Some(s) = db.uia_session(&id).await.unwrap() {
                out.push(format!("{:?} {:?}", s.client_dict, s.result));
            }
        }
        db.close().await;
        out
    }

    pub fn database_url(&self) -> &str {
        &self.database.as_ref().expect("database").url
    }

    /// Registers a user through the UIA dummy flow.
    pub async fn register(&self, name: &str) -> User {
        let password = format!("pw-{name}-secret");
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({ "username": name, "password": password, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_eq!(status, 200, "register {name}: {body}");
        User {
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            password,
        }
    }

    /// Registers a server admin through shared-secret registration (the server must have been
    /// started with `registration.shared_secret = "reg_secret"`).
    pub async fn register_admin(&self, name: &str) -> User {
        let path = "/_synapse/admin/v1/register";
        let nonce = self.get(path, None).await.1["nonce"].as_str().expect("nonce").to_owned();
        let password = format!("pw-{name}-secret");
        let mac = shared_secret_mac("reg_secret", &nonce, name, &password, true);
        let body =
            json!({ "nonce": nonce, "username": name, "password": password, "admin": true, "mac": mac });
        let (status, body) = self.post(path, None, body).await;
        assert_eq!(status, 200, "register admin {name}: {body}");
        User {
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            password,
        }
    }

    pub async fn create_room(&self, user: &User, body: Value) -> String {
        let (status, res) = self.post("/_matrix/client/v3/createRoom", Some(&user.token), body).await;
        assert_eq!(status, 200, "createRoom: {res}");
        res["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn join(&self, user: &User, room_id: &str) {
        let (status, res) = self
            .post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)), Some(&user.token), json!({}))
            .await;
        assert_eq!(status, 200, "join: {res}");
    }

    pub async fn invite(&self, user: &User, room_id: &str, target: &str) {
        let (status, res) = self
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id)),
                Some(&user.token),
                json!({ "user_id": target }),
            )
            .await;
        assert_eq!(status, 200, "invite: {res}");
    }

    /// Alice and Bob, both joined to a public room Alice created.
    pub async fn pair(&self) -> (User, User, String) {
        let alice = self.register("alice").await;
        let bob = self.register("bob").await;
        let room = self.create_room(&alice, json!({ "preset": "public_chat" })).await;
        self.join(&bob, &room).await;
        (alice, bob, room)
    }

    /// Sends a text message; returns the event id.
    pub async fn send_text(&self, user: &User, room_id: &str, body: &str) -> String {
        let txn = format!("t{}", rand_u64());
        let (status, res) = self
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room_id)),
                Some(&user.token),
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        assert_eq!(status, 200, "send: {res}");
        res["event_id"].as_str().unwrap().to_owned()
    }

    /// A sync with optional `since` and `timeout`.
    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let (status, body) = self.get(&path, Some(&user.token)).await;
        assert_eq!(status, 200, "sync: {body}");
        body
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Percent-encodes a path segment.
/// The HMAC Synapse's shared-secret registration expects.
pub fn shared_secret_mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(
        format!("{nonce}\0{user}\0{password}\0{}", if admin { "admin" } else { "notadmin" }).as_bytes(),
    );
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

/// The bodies of `m.room.message` events in a list of events.
pub fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
