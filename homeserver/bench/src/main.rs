//! `lattice-bench`: load and latency measurements against a running (or spawned) Lattice server.
//!
//! It measures, over real HTTP on loopback:
//! - message send throughput with 10 concurrent senders into one room, and into ten rooms;
//! - send → sync delivery latency (p50/p95/p99) at a paced rate, with receivers long-polling;
//! - initial sync time for a user with history in several rooms;
//! - the server's resident memory when idle and after the load (with `--server-bin` or `--pid`);
//! - send throughput into a 1,000-member room (push rules and unread counts for everyone) against
//!   a 2-member room; search latency over 100,000 messages; typing and receipt delivery latency
//!   (see [`chat`]);
//! - a 100 MB upload and download with the server's peak memory, and thumbnail generation
//!   (see [`media`]);
//! - `/keys/claim` and `/sendToDevice` latency for a user with 50 devices (see [`e2ee`]).
//!
//! While measuring it checks correctness: every message is delivered exactly once and in the
//! order its sender sent it. A violation fails the run.
//!
//! Typical use: `cargo run --release -p homeserver-bench -- --server-bin target/release/lattice`
//! (add `--database-url postgres://…` for PostgreSQL).

mod chat;
mod client;
mod e2ee;
mod media;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::json;

use crate::client::{SENDERS, Server, check_sequences, messages_in, percentile, throughput, verify_room};

#[derive(Parser, Clone)]
#[command(about = "Measure a Lattice server: throughput, delivery latency, initial sync, memory")]
pub struct Args {
    /// Base URL of a running server (started with rate limits off). Ignored with --server-bin.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    pub url: String,
    /// Start this `lattice` binary on a fresh data directory instead of using --url.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Database for the spawned server (default: SQLite in its data directory).
    #[arg(long)]
    pub database_url: Option<String>,
    /// PID of the server at --url, to report its memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Messages each of the 10 senders sends in the throughput runs.
    #[arg(long, default_value_t = 300)]
    pub messages_per_sender: usize,
    /// Paced rate for the latency run, messages per second.
    #[arg(long, default_value_t = 100)]
    pub latency_rate: u64,
    /// Duration of the latency run, seconds.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Long-polling receivers in the latency run.
    #[arg(long, default_value_t = 5)]
    pub receivers: usize,
    /// Which runs to do, comma-separated: core (throughput, latency, initial sync, memory),
    /// big-room, search, ephemeral, media, e2ee.
    #[arg(long, default_value = "core,big-room,search,ephemeral,media,e2ee", value_delimiter = ',')]
    pub runs: Vec<String>,
    /// Size of the media run's file, in MB.
    #[arg(long, default_value_t = 100)]
    pub media_megabytes: usize,
    /// Members of the big room.
    #[arg(long, default_value_t = 1000)]
    pub big_room_members: usize,
    /// Messages each of the 10 concurrent sends sends in the big-room run.
    #[arg(long, default_value_t = 100)]
    pub big_room_messages: usize,
    /// History size for the search run.
    #[arg(long, default_value_t = 100_000)]
    pub search_messages: usize,
    /// Typing notices and receipts sent in the ephemeral run.
    #[arg(long, default_value_t = 40)]
    pub ephemeral_updates: usize,
    /// Devices of the user whose keys are claimed and who is sent to-device messages.
    #[arg(long, default_value_t = 50)]
    pub e2ee_devices: usize,
    /// Claims and to-device requests measured in the e2ee run.
    #[arg(long, default_value_t = 40)]
    pub e2ee_rounds: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    // Built together with the server, reqwest carries a TLS backend without a crypto provider
    // (the server brings its own, ring): install ring as the process default for this client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let server = Arc::new(Server::start(&args).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_kib();
    let run = std::process::id();
    println!("Lattice benchmark against {}", server.base);

    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    let wants = |name: &str| args.runs.iter().any(|r| r == name);
    if wants("core") {
        core_runs(&server, &args, run, idle_rss).await?;
    }
    if wants("big-room") {
        let big = chat::big_room(&server, run, args.big_room_members, args.big_room_messages).await?;
        println!("| send throughput, 2-member room, 10 concurrent sends | {:.0} msg/s |", big.two_members);
        println!(
            "| send throughput, {}-member room (push rules + unread counts for all), 10 concurrent sends | {:.0} msg/s ({:.2}× the 2-member room) |",
            big.members,
            big.many_members,
            big.two_members / big.many_members
        );
    }
    if wants("search") {
        let search = chat::search(&server, run, args.search_messages).await?;
        println!(
            "| filling the search history ({} messages, 10 rooms) | {:.0} msg/s |",
            search.messages, search.fill_rate
        );
        for (term, order, hits, p50, p95) in &search.queries {
            println!(
                "| search `{term}` order {order} over {} messages, {hits} hits (p50 / p95) | {p50:.1} / {p95:.1} ms |",
                search.messages
            );
        }
    }
    if wants("ephemeral") {
        let e = chat::ephemeral(&server, run, args.receivers, args.ephemeral_updates).await?;
        println!(
            "| typing notice → {} long-polling members (p50 / p95) | {:.2} / {:.2} ms |",
            e.receivers, e.typing.0, e.typing.1
        );
        println!(
            "| read receipt → {} long-polling members (p50 / p95) | {:.2} / {:.2} ms |",
            e.receivers, e.receipts.0, e.receipts.1
        );
    }
    if wants("media") {
        let m = media::media(&server, run, args.media_megabytes).await?;
        println!("| upload of a {:.0} MB file | {:.0} MB/s |", m.megabytes, m.upload_mb_s);
        println!(
            "| download of the {:.0} MB file (checked byte for byte) | {:.0} MB/s |",
            m.megabytes, m.download_mb_s
        );
        if let (Some(before), Some(peak)) = (m.rss_before_kib, m.rss_peak_kib) {
            println!(
                "| server RSS before the transfers / peak during them (sampled every 5 ms) | {:.1} / {:.1} MB |",
                before as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
        println!(
            "| thumbnail 320x240 of a 4000x3000 JPEG: generated / stored | {:.0} / {:.1} ms |",
            m.thumbnail_first_ms, m.thumbnail_stored_ms
        );
    }
    if wants("e2ee") {
        let e = e2ee::e2ee(&server, run, args.e2ee_devices, args.e2ee_rounds).await?;
        println!(
            "| `/keys/claim` of a one-time key from each of {} devices, one request (p50 / p95 of {}) | {:.2} / {:.2} ms |",
            e.devices, e.rounds, e.claim.0, e.claim.1
        );
        println!(
            "| `/sendToDevice` of one 1 KB message to each of {} devices, one request (p50 / p95 of {}) | {:.2} / {:.2} ms |",
            e.devices, e.rounds, e.send.0, e.send.1
        );
    }
    if let Some(rss) = server.rss_kib() {
        println!("| server RSS at the end | {:.1} MB |", rss as f64 / 1024.0);
    }
    println!("\nEvery message was delivered exactly once and in order; every check passed.");
    Ok(())
}

/// Throughput (1 and 10 rooms), delivery latency, initial sync and memory.
async fn core_runs(server: &Arc<Server>, args: &Args, run: u32, idle_rss: Option<u64>) -> Result<()> {
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
    let one = throughput(server, &senders, std::slice::from_ref(&one_room), n, "one").await?;
    let expected: HashMap<String, u64> = (0..SENDERS).map(|i| (format!("one-{i}"), n as u64)).collect();
    verify_room(server, &reader, &one_room, &expected).await.context("one-room run")?;

    // Throughput into ten rooms (one per sender).
    let mut rooms = Vec::new();
    for s in &senders {
        let room = server.create_room(s).await?;
        server.join(&reader, &room).await?;
        rooms.push(room);
    }
    let ten = throughput(server, &senders, &rooms, n, "ten").await?;
    for (i, room) in rooms.iter().enumerate() {
        let expected = HashMap::from([(format!("ten-{i}"), n as u64)]);
        verify_room(server, &reader, room, &expected).await.context("ten-room run")?;
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
    Ok(())
}
