//! The benchmark's HTTP client: a spawned or running server, users, and the correctness checks
//! (every message once, in order) shared by all runs.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::Args;

pub const SENDERS: usize = 10;

pub struct Server {
    pub base: String,
    pub http: reqwest::Client,
    pid: Option<u32>,
    child: Option<Child>,
    _dir: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[derive(Clone)]
pub struct User {
    pub token: String,
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Server {
    pub async fn start(args: &Args) -> Result<Server> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let Some(bin) = &args.server_bin else {
            return Ok(Server { base: args.url.clone(), http, pid: args.pid, child: None, _dir: None });
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("lattice-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let bin = std::fs::canonicalize(bin).with_context(|| format!("finding {}", bin.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&dir)
            .env("LATTICE_LISTEN_CLIENT", format!("127.0.0.1:{port}"))
            .env("LATTICE_RATE_LIMITS_ENABLED", "false")
            .env("LATTICE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = &args.database_url {
            cmd.env("LATTICE_DATABASE_URL", url);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let base = format!("http://127.0.0.1:{port}");
        let server = Server { base, http, pid: Some(pid), child: Some(child), _dir: Some(dir) };
        for _ in 0..400 {
            if server.http.get(format!("{}/_matrix/client/versions", server.base)).send().await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("the server did not start")
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let res = req.send().await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }

    pub async fn register(&self, name: &str) -> Result<User> {
        let body =
            json!({ "username": name, "password": "bench-password", "auth": { "type": "m.login.dummy" } });
        let res = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body)).await?;
        Ok(User { token: res["access_token"].as_str().unwrap_or_default().to_owned() })
    }

    pub async fn create_room(&self, user: &User) -> Result<String> {
        let res = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&user.token),
                Some(json!({ "preset": "public_chat" })),
            )
            .await?;
        Ok(res["room_id"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn join(&self, user: &User, room: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/join", enc(room)),
            Some(&user.token),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    pub async fn send(&self, user: &User, room: &str, txn: &str, content: Value) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        self.call(reqwest::Method::PUT, &path, Some(&user.token), Some(content)).await?;
        Ok(())
    }

    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
        filter: &str,
    ) -> Result<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", enc(filter));
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        self.call(reqwest::Method::GET, &path, Some(&user.token), None).await
    }

    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Every (sender, seq) of the timeline events of `room` in a sync response, in order.
pub fn messages_in(sync: &Value, room: &str) -> Vec<(String, u64, Option<u128>)> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| {
                    let c = &e["content"];
                    Some((
                        c["sender_tag"].as_str()?.to_owned(),
                        c["seq"].as_u64()?,
                        c["sent_us"].as_u64().map(u128::from),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a room's whole timeline (by paging /messages backwards) and checks each sender's
/// sequence appears exactly once and in order.
pub async fn verify_room(
    server: &Server,
    user: &User,
    room: &str,
    expected: &HashMap<String, u64>,
) -> Result<()> {
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room));
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let page = server.call(reqwest::Method::GET, &path, Some(&user.token), None).await?;
        for e in page["chunk"].as_array().into_iter().flatten() {
            if let (Some(tag), Some(seq)) =
                (e["content"]["sender_tag"].as_str(), e["content"]["seq"].as_u64())
            {
                seen.push((tag.to_owned(), seq));
            }
        }
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    seen.reverse();
    check_sequences(&seen, expected)
}

pub fn check_sequences(seen: &[(String, u64)], expected: &HashMap<String, u64>) -> Result<()> {
    let mut next: HashMap<&str, u64> = HashMap::new();
    for (tag, seq) in seen {
        let want = next.entry(tag.as_str()).or_insert(0);
        ensure!(*seq == *want, "sender {tag}: got seq {seq}, expected {want} (duplicate, gap or reorder)");
        *want += 1;
    }
    for (tag, count) in expected {
        let got = next.get(tag.as_str()).copied().unwrap_or(0);
        ensure!(got == *count, "sender {tag}: {got} of {count} messages arrived");
    }
    Ok(())
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// 10 senders, each sending `n` messages back to back into `rooms[i % rooms.len()]`.
pub async fn throughput(
    server: &Arc<Server>,
    senders: &[User],
    rooms: &[String],
    n: usize,
    label: &str,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, user) in senders.iter().enumerate() {
        let (server, user, room) = (server.clone(), user.clone(), rooms[i % rooms.len()].clone());
        let tag = format!("{label}-{i}");
        tasks.push(tokio::spawn(async move {
            for seq in 0..n {
                let content = json!({ "msgtype": "m.text", "body": format!("{tag} {seq}"), "sender_tag": tag, "seq": seq });
                server.send(&user, &room, &format!("{tag}-{seq}"), content).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    Ok((senders.len() * n) as f64 / elapsed.as_secs_f64())
}
