//! The plugin benchmark: a real server (SQLite in a temporary directory, no listener) hosting the
//! `noop` guest from `plugins/examples` (run `.ci/plugin-guests` first). It measures
//! - the cold start of a plugin: compiling the component (first start) and loading the
//!   compiled one from the cache (every later start);
//! - the per-call cost of a no-op `on-event` through the host's guarded call path;
//! - delivery throughput: events/s from the stream to the plugin, for events that were
//!   waiting while it was disabled;
//! - the memory an idle plugin instance adds (resident size with 21 plugins against 1).
//!
//! `cargo run --release -p homeserver --example plugin_bench [-- EVENTS]`

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use homeserver::{Server, config::Config};
use plugins::{Grants, PluginSpec};
use ruma::{RoomId, UserId};
use serde_json::json;

fn noop_wasm() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/examples/target/wasm32-wasip2/release/noop.wasm");
    assert!(path.exists(), "{} is missing: run .ci/plugin-guests", path.display());
    path
}

fn config(dir: &std::path::Path, plugins: usize) -> Config {
    let mut config =
        Config { server_name: "localhost".into(), data_dir: dir.to_owned(), ..Default::default() };
    config.rate_limits.enabled = false;
    for i in 0..plugins {
        let spec = PluginSpec {
            path: noop_wasm(),
            user: None,
            config: Default::default(),
            grants: Grants::default(),
        };
        config.plugins.insert(format!("noop{i}"), spec);
    }
    config
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn timed_build(config: Config) -> (Server, Duration) {
    let started = Instant::now();
    let server = Server::build(config).await.expect("server builds");
    (server, started.elapsed())
}

#[tokio::main]
async fn main() {
    let events: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();

    // Cold start: compile, then from the cache, against a server without plugins on the same
    // (already migrated) database; the median of five starts each.
    let median_start = |plugins: usize, clear_cache: bool| {
        let dir = dir.path().to_owned();
        async move {
            let mut times = Vec::new();
            for _ in 0..5 {
                if clear_cache {
                    let _ = std::fs::remove_dir_all(dir.join("plugin-cache"));
                }
                let (server, took) = timed_build(config(&dir, plugins)).await;
                server.db.close().await;
                drop(server);
                times.push(took);
            }
            times.sort();
            times[2]
        }
    };
    let (migrated, _) = timed_build(config(dir.path(), 0)).await;
    migrated.db.close().await;
    drop(migrated);
    let bare_time = median_start(0, false).await;
    let compile_time = median_start(1, true).await;
    let cached_time = median_start(1, false).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("server start without plugins:        {:>8.1} ms", ms(bare_time));
    println!("  + 1 plugin, compiling:             {:>8.1} ms", ms(compile_time.saturating_sub(bare_time)));
    println!("  + 1 plugin, compiled (cache):      {:>8.1} ms", ms(cached_time.saturating_sub(bare_time)));
    let (server, _) = timed_build(config(dir.path(), 1)).await;

    // Per-call cost.
    let host = server.plugins.clone().expect("plugins");
    host.measure_calls("noop0", 1_000).await.unwrap();
    let calls = 100_000;
    let took = host.measure_calls("noop0", calls).await.unwrap();
    println!("no-op on-event, per call:            {:>8.2} µs", took.as_secs_f64() * 1e6 / f64::from(calls));

    // Delivery throughput: events queued while the plugin is disabled, then delivered.
    let server = std::sync::Arc::new(server);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listeners = server.bind().await.unwrap();
    let serving = server.clone();
    let task = tokio::spawn(async move {
        serving
            .serve(listeners, async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    let rooms = &server.app.rooms;
    let alice = UserId::parse("@alice:localhost").unwrap();
    server.db.create_user(alice.as_str(), None, false, None, 0).await.unwrap();
    let body = json!({ "preset": "public_chat" }).to_string();
    let request =
        homeserver_rooms::create::CreateRoom::from_client_body(alice.clone(), body.as_bytes()).unwrap();
    let room: ruma::OwnedRoomId = rooms.create_room(request, Default::default()).await.unwrap();
    let bot = UserId::parse("@noop0:localhost").unwrap();
    rooms.join(&RoomId::parse(room.as_str()).unwrap(), &bot, Default::default()).await.unwrap();
    host.set_enabled("noop0", false).await.unwrap();
    let sent = Instant::now();
    for i in 0..events {
        let content = json!({ "msgtype": "m.text", "body": format!("message {i}") });
        rooms.send_message(&room, &alice, "m.room.message", content, None).await.unwrap();
    }
    let send_time = sent.elapsed();
    let before = host.status("noop0").await.unwrap().delivered;
    let started = Instant::now();
    host.set_enabled("noop0", true).await.unwrap();
    loop {
        let delivered = host.status("noop0").await.unwrap().delivered - before;
        if delivered as usize >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!("events sent (room pipeline):         {:>8.0} /s", events as f64 / send_time.as_secs_f64());
    println!(
        "events delivered to the plugin:      {:>8.0} /s ({events} events)",
        events as f64 / took.as_secs_f64()
    );
    let _ = stop_tx.send(());
    let _ = task.await;
    drop(host);
    drop(server);

    // Memory per idle instance: what a server with 21 plugins adds over one with 1, each
    // plugin instantiated and initialised.
    let growth = |plugins: usize| async move {
        let dir = tempfile::tempdir().unwrap();
        let before = rss_kib();
        let server = Server::build(config(dir.path(), plugins)).await.unwrap();
        let grown = rss_kib().saturating_sub(before);
        (server, dir, grown)
    };
    let (one, _d1, grown_one) = growth(1).await;
    let (many, _d21, grown_many) = growth(21).await;
    println!(
        "resident memory per idle instance:   {:>8.0} KiB",
        grown_many.saturating_sub(grown_one) as f64 / 20.0
    );
    drop((one, many));
}
