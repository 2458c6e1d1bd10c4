//! `lattice-bench`: load and latency measurements against a running (or spawned) Lattice server.
//!
//! It measures, over real HTTP on loopback:
//! - message send throughput with 10 concurrent senders into one room, and into ten rooms;
//! - send → sync delivery latency (p50/p95/p99) at a paced rate, with receivers long-polling;
//! - initial sync time for a user with history in several rooms;
//! - the server's resident memory when idle and after the load (with `--server-bin` or `--pid`).
//!
//! While measuring it checks correctness: every message is delivered exactly once and in the
//! order its sender sent it. A violation fails the run.
//!
//! Typical use: `cargo run --release -p homeserver-bench -- --server-bin target/release/lattice`
//! (add `--database-url postgres://…` for PostgreSQL).

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(about = "Measure a Lattice server: throughput, delivery latency, initial sync, memory")]
struct Args {
    /// Base URL of a running server (started with rate limits off). Ignored with --server-bin.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// Start this `lattice` binary on a fresh data directory instead of using --url.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Database for the spawned server (default: SQLite in its data directory).
    #[arg(long)]
    database_url: Option<String>,
    /// PID of the server at --url, to report its memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Messages each of the 10 senders sends in the throughput runs.
    #[arg(long, default_value_t = 300)]
    messages_per_sender: usize,
    /// Paced rate for the latency run, messages per second.
    #[arg(long, default_value_t = 100)]
    latency_rate: u64,
    /// Duration of the latency run, seconds.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Long-polling receivers in the latency run.
    #[arg(long, default_value_t = 5)]
    receivers: usize,
}

const SENDERS: usize = 10;

struct Server {
    base: String,
    http: reqwest::Client,
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
struct User {
    token: String,
}

fn enc(s: &str) -> String {
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
    async fn start(args: &Args) -> Result<Server> {
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

    async fn call(
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

    async fn register(&self, name: &str) -> Result<User> {
        let body =
            json!({ "username": name, "password": "bench-password", "auth": { "type": "m.login.dummy" } });
        let res = self.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, Some(body)).await?;
        Ok(User { token: res["access_token"].as_str().unwrap_or_default().to_owned() })
    }

    async fn create_room(&self, user: &User) -> Result<String> {
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

    async fn join(&self, user: &User, room: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/join", enc(room)),
            Some(&user.token),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    async fn send(&self, user: &User, room: &str, txn: &str, content: Value) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        self.call(reqwest::Method::PUT, &path, Some(&user.token), Some(content)).await?;
        Ok(())
    }

    async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64, filter: &str) -> Result<Value> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", enc(filter));
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        self.call(reqwest::Method::GET, &path, Some(&user.token), None).await
    }

    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Every (sender, seq) of the timeline events of `room` in a sync response, in order.
fn messages_in(sync: &Value, room: &str) -> Vec<(String, u64, Option<u128>)> {
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
async fn verify_room(
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

fn check_sequences(seen: &[(String, u64)], expected: &HashMap<String, u64>) -> Result<()> {
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// 10 senders, each sending `n` messages back to back into `rooms[i % rooms.len()]`.
async fn throughput(
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

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let server = Arc::new(Server::start(&args).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kib();
    let run = std::process::id();
    println!("Lattice benchmark against {}", server.base);

    // Users: 10 senders, receivers for the latency run, one reader.
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(server.register(&format!("bench{run}s{i}")).await?);
    }
    let reader = server.register(&format!("bench{run}reader")).await?;

    // Throughput into one room.
    let one_room = server.create_room(&senders[0]).await?;
    for u in senders.iter().skip(1).chain([&reader]) {
        server.join(u, &one_room).await?;
    }
    let n = args.messages_per_sender;
    let one = throughput(&server, &senders, std::slice::from_ref(&one_room), n, "one").await?;
    let expected: HashMap<String, u64> = (0..SENDERS).map(|i| (format!("one-{i}"), n as u64)).collect();
    verify_room(&server, &reader, &one_room, &expected).await.context("one-room run")?;

    // Throughput into ten rooms (one per sender).
    let mut rooms = Vec::new();
    for s in &senders {
        let room = server.create_room(s).await?;
        server.join(&reader, &room).await?;
        rooms.push(room);
    }
    let ten = throughput(&server, &senders, &rooms, n, "ten").await?;
    for (i, room) in rooms.iter().enumerate() {
        let expected = HashMap::from([(format!("ten-{i}"), n as u64)]);
        verify_room(&server, &reader, room, &expected).await.context("ten-room run")?;
    }

    // Delivery latency at a paced rate, receivers long-polling.
    let latency_room = server.create_room(&senders[0]).await?;
    let mut receivers = Vec::new();
    for i in 0..args.receivers {
        let r = server.register(&format!("bench{run}r{i}")).await?;
        server.join(&r, &latency_room).await?;
        receivers.push(r);
    }
    let filter = json!({ "room": { "rooms": [latency_room], "timeline": { "limit": 1000 } }, "presence": { "types": [] } }).to_string();
    let epoch = Instant::now();
    let total = (args.latency_rate * args.latency_seconds) as usize;
    let mut receiver_tasks = Vec::new();
    for r in &receivers {
        let (server, r, room, filter) = (server.clone(), r.clone(), latency_room.clone(), filter.clone());
        let since =
            server.sync(&r, None, 0, &filter).await?["next_batch"].as_str().unwrap_or_default().to_owned();
        receiver_tasks.push(tokio::spawn(async move {
            let mut since = since;
            let mut latencies = Vec::with_capacity(total);
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let sync = server.sync(&r, Some(&since), 30_000, &filter).await?;
                let arrived = epoch.elapsed().as_micros();
                for (tag, seq, sent) in messages_in(&sync, &room) {
                    if let Some(sent) = sent {
                        latencies.push((arrived.saturating_sub(sent)) as f64 / 1000.0);
                    }
                    seen.push((tag, seq));
                }
                since = sync["next_batch"].as_str().unwrap_or_default().to_owned();
            }
            check_sequences(&seen, &HashMap::from([("lat".to_owned(), total as u64)]))?;
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let interval = Duration::from_micros(1_000_000 / args.latency_rate.max(1));
    let mut ticker = tokio::time::interval(interval);
    let sender = senders[0].clone();
    for seq in 0..total {
        ticker.tick().await;
        let (server, sender, room) = (server.clone(), sender.clone(), latency_room.clone());
        let sent_us = epoch.elapsed().as_micros() as u64;
        // Sends are issued in order; the receivers check the order they arrive in.
        let content = json!({ "msgtype": "m.text", "body": format!("lat {seq}"), "sender_tag": "lat", "seq": seq, "sent_us": sent_us });
        server.send(&sender, &room, &format!("lat-{run}-{seq}"), content).await?;
    }
    let mut latencies = Vec::new();
    for t in receiver_tasks {
        latencies.extend(
            tokio::time::timeout(Duration::from_secs(60), t).await.context("receivers timed out")???,
        );
    }
    latencies.sort_by(|a, b| a.total_cmp(b));

    // Initial sync of the reader (11 rooms with history).
    let mut initial = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let sync = server.sync(&reader, None, 0, "{}").await?;
        initial.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            sync["rooms"]["join"].as_object().map(|o| o.len()).unwrap_or(0) >= 11,
            "initial sync misses rooms"
        );
    }
    initial.sort_by(|a, b| a.total_cmp(b));
    let loaded_rss = server.rss_kib();

    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!("| send throughput, 1 room, {SENDERS} senders × {n} msgs | {one:.0} msg/s |");
    println!("| send throughput, 10 rooms, {SENDERS} senders × {n} msgs | {ten:.0} msg/s |");
    println!(
        "| delivery latency at {} msg/s, {} long-polling receivers (p50 / p95 / p99) | {:.2} / {:.2} / {:.2} ms |",
        args.latency_rate,
        receivers.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99)
    );
    println!(
        "| initial sync, 11 rooms, {} events (median of 5) | {:.1} ms |",
        SENDERS * n * 2 + total,
        initial[initial.len() / 2]
    );
    match (idle_rss, loaded_rss) {
        (Some(idle), Some(loaded)) => {
            println!(
                "| server RSS idle / after the load | {:.1} / {:.1} MB |",
                idle as f64 / 1024.0,
                loaded as f64 / 1024.0
            )
        }
        _ => println!("| server RSS | unknown (pass --server-bin or --pid) |"),
    }
    println!("\nEvery message was delivered exactly once and in order.");
    Ok(())
}
