//! WASM plugins end to end: real components built from `plugins/examples` (by
//! `.ci/plugin-guests`) hosted by a real server. The echo bot answers commands in threads and
//! keeps state in its store; hostile fixtures (an endless loop, a memory bomb, a panic on every
//! event, a send flood) are cut off, reported and suspended while clients keep their latency;
//! delivery survives a disabled plugin and a restart, in order and complete; a reload that fails
//! keeps the running version. The guests are skipped (with a message) when they have not been
//! built, unless `LATTICE_REQUIRE_PLUGINS` is set, as CI does.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use homeserver::config::Config;
use plugins::{Grants, HostSettings, PluginSpec};
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

/// A built guest component, or None (skip) when the guests cannot be built here. The guests are
/// built (or found up to date) once per test run by `.ci/plugin-guests`, which installs Debian's
/// WebAssembly toolchain if it is missing.
pub(crate) fn guest(name: &str) -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = BUILT.get_or_init(|| {
        let output = std::process::Command::new(root.join(".ci/plugin-guests"))
            .output()
            .map_err(|e| format!("cannot run .ci/plugin-guests: {e}"))?;
        match output.status.success() {
            true => Ok(()),
            false => Err(format!(".ci/plugin-guests failed: {}", String::from_utf8_lossy(&output.stderr))),
        }
    });
    let path = root.join("plugins/examples/target/wasm32-wasip2/release").join(format!("{name}.wasm"));
    match built {
        Ok(()) if path.exists() => Some(path),
        _ if std::env::var_os("LATTICE_REQUIRE_PLUGINS").is_some() => {
            panic!("{} is not built: {built:?}", path.display())
        }
        _ => {
            eprintln!("skipping: {} is not built: {built:?}", path.display());
            None
        }
    }
}

/// The Python example plugin, built by `.ci/plugin-python` (once per test process), or `None`
/// (the test skips) when it cannot be built outside CI.
pub(crate) fn python_guest() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = BUILT.get_or_init(|| {
        let output = std::process::Command::new(root.join(".ci/plugin-python"))
            .output()
            .map_err(|e| format!("cannot run .ci/plugin-python: {e}"))?;
        match output.status.success() {
            true => Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())),
            false => Err(format!(".ci/plugin-python failed: {}", String::from_utf8_lossy(&output.stderr))),
        }
    });
    match built {
        Ok(path) => Some(path.clone()),
        Err(err) if std::env::var_os("LATTICE_REQUIRE_PLUGINS").is_some() => panic!("{err}"),
        Err(err) => {
            eprintln!("skipping: {err}");
            None
        }
    }
}

pub(crate) fn spec(path: PathBuf, config: Value, grants: Grants) -> PluginSpec {
    PluginSpec { path, user: None, config: config.as_object().cloned().unwrap_or_default(), grants }
}

/// Short waits so failure paths finish quickly.
pub(crate) fn quick(config: &mut Config) {
    config.registration.shared_secret = "reg_secret".into();
    config.plugin_settings = HostSettings {
        retry_base: Duration::from_millis(50),
        max_attempts: 3,
        breaker_threshold: 3,
        breaker_window: Duration::from_secs(60),
        breaker_cooldown: Duration::from_secs(2),
        ..HostSettings::default()
    };
}

/// A server hosting the given plugins (id, component, config, grants), with short waits.
pub(crate) async fn hosting(plugins: Vec<(&str, PathBuf, Value, Grants)>) -> TestServer {
    TestServer::start_with(|c| {
        quick(c);
        for (id, path, config, grants) in plugins {
            c.plugins.insert(id.to_owned(), spec(path, config, grants));
        }
    })
    .await
}

/// Polls `check` until it returns Some, for at most `secs`.
pub(crate) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The room's recent messages, oldest first.
pub(crate) async fn messages(server: &TestServer, user: &User, room: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=200", enc(room));
    let (status, body) = server.get(&path, Some(&user.token)).await;
    assert_eq!(status, 200, "{body}");
    let mut events = body["chunk"].as_array().cloned().unwrap_or_default();
    events.reverse();
    events.into_iter().filter(|e| e["type"] == "m.room.message").collect()
}

pub(crate) async fn wait_joined(server: &TestServer, user: &User, room: &str, bot: &str) {
    eventually(20, &format!("{bot} to join"), || async {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
        let (_, body) = server.get(&path, Some(&user.token)).await;
        body["joined"].get(bot).map(|_| ())
    })
    .await
}

pub(crate) async fn plugin_status(server: &TestServer, admin: &User, id: &str) -> Value {
    let (status, body) = server.get(&format!("/_lattice/admin/v1/plugins/{id}"), Some(&admin.token)).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_echo_bot_answers_commands_in_threads_and_keeps_its_count() {
    let Some(echo) = guest("echo_bot") else { return };
    let server = hosting(vec![("echo", echo, json!({ "greeting": "hi" }), Grants::default())]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@echo:localhost").await;
    wait_joined(&server, &alice, &room, "@echo:localhost").await;

    let prompt = server.send_text(&alice, &room, "!echo hello there").await;
    let reply = eventually(20, "the echo", || async {
        messages(&server, &alice, &room).await.into_iter().find(|e| e["sender"] == "@echo:localhost")
    })
    .await;
    assert_eq!(reply["content"]["body"], "hi: hello there");
    assert_eq!(reply["content"]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(
        reply["content"]["m.relates_to"]["event_id"],
        prompt.as_str(),
        "a thread rooted at the prompt"
    );

    server.send_text(&alice, &room, "just chatting").await;
    server.send_text(&alice, &room, "!echo count").await;
    eventually(20, "the count", || async {
        let bot: Vec<Value> = messages(&server, &alice, &room)
            .await
            .into_iter()
            .filter(|e| e["sender"] == "@echo:localhost")
            .collect();
        bot.iter().any(|e| e["content"]["body"] == "count: 1").then_some(())
    })
    .await;
    // The plain message went to on-event, which recorded it in the plugin's store.
    let db = &server.server.db;
    let keys = db.kv_list("echo", "seen/", None, 100, 0).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let seen = db.kv_get("echo", &keys[0], 0).await.unwrap().unwrap();
    assert_eq!(seen.value, b"just chatting");

    let admin = server.register_admin("root").await;
    let status = plugin_status(&server, &admin, "echo").await;
    assert_eq!(status["state"], "running");
    assert_eq!(status["version"], "1.0.0");
    assert!(status["delivered"].as_u64().unwrap() >= 3, "{status}");
}

#[tokio::test]
async fn hostile_plugins_are_cut_off_reported_and_suspended_while_clients_keep_their_latency() {
    let (Some(spin), Some(bomb), Some(panicker)) = (guest("spin"), guest("memory_bomb"), guest("panicker"))
    else {
        return;
    };
    let tight = Grants { cpu_ms_per_call: 50, memory_mb: 16, ..Grants::default() };
    let server = hosting(vec![
        ("spin", spin, json!({}), tight.clone()),
        ("bomb", bomb, json!({}), tight.clone()),
        ("panicker", panicker, json!({}), tight.clone()),
    ])
    .await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;

    // Baseline: send-and-sync latency with no plugin in the room.
    let baseline = send_latency(&server, &alice, &room, 15).await;
    for bot in ["@spin:localhost", "@bomb:localhost", "@panicker:localhost"] {
        server.invite(&alice, &room, bot).await;
        wait_joined(&server, &alice, &room, bot).await;
    }
    let loaded = send_latency(&server, &alice, &room, 15).await;
    assert!(
        loaded <= baseline * 2 + Duration::from_millis(25),
        "median send+sync latency {loaded:?} with hostile plugins, {baseline:?} without"
    );
    for (id, reason) in [("spin", "CPU budget"), ("bomb", "memory"), ("panicker", "boom")] {
        let status = eventually(30, &format!("{id} to be cut off"), || async {
            let status = plugin_status(&server, &admin, id).await;
            (status["crashes"].as_u64().unwrap_or(0) >= 3).then_some(status)
        })
        .await;
        let error = status["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(error.to_lowercase().contains(&reason.to_lowercase()), "{id}: {error}");
        assert!(["suspended", "running"].contains(&status["state"].as_str().unwrap()), "{status}");
        let (code, logs) =
            server.get(&format!("/_lattice/admin/v1/plugins/{id}/logs"), Some(&admin.token)).await;
        assert_eq!(code, 200);
        assert!(logs["lines"].as_array().unwrap().iter().any(|l| l["level"] == "error"), "{logs}");
    }
    // The breaker opened for at least one of them (three crashes within the window).
    let states: Vec<String> =
        futures::future::join_all(["spin", "bomb", "panicker"].map(|id| plugin_status(&server, &admin, id)))
            .await
            .iter()
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .collect();
    assert!(states.iter().any(|s| s == "suspended"), "{states:?}");
    // A message a plugin could not take after every attempt is a dead letter, with why.
    let letters = eventually(30, "a dead letter", || async {
        let (_, body) =
            server.get("/_lattice/admin/v1/plugins/panicker/dead_letters", Some(&admin.token)).await;
        body["dead_letters"].as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await;
    assert_eq!(letters[0]["attempts"], 3);
    assert!(letters[0]["error"].as_str().unwrap().contains("boom"), "{letters:?}");
    assert_eq!(letters[0]["room_id"], room.as_str());
    let (code, body) = server
        .post("/_lattice/admin/v1/plugins/panicker/dead_letters/replay", Some(&admin.token), json!({}))
        .await;
    assert_eq!(code, 200);
    assert!(body["replayed"].as_u64().unwrap() >= 1, "{body}");
    // Nothing the clients sent was lost.
    let bodies: Vec<String> = messages(&server, &alice, &room)
        .await
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies.iter().filter(|b| b.starts_with("latency ")).count(), 30);
}

/// The median of sending a message and seeing it in an incremental sync.
pub(crate) async fn send_latency(server: &TestServer, user: &User, room: &str, rounds: usize) -> Duration {
    let mut since = server.sync(user, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let mut times = Vec::new();
    for i in 0..rounds {
        let started = Instant::now();
        server.send_text(user, room, &format!("latency {i}")).await;
        let sync = server.sync(user, Some(&since), 5_000).await;
        times.push(started.elapsed());
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn a_disabled_plugin_gets_every_event_in_order_after_a_restart() {
    let Some(echo) = guest("echo_bot") else { return };
    let server = hosting(vec![("echo", echo, json!({}), Grants::default())]).await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@echo:localhost").await;
    wait_joined(&server, &alice, &room, "@echo:localhost").await;
    let (code, body) =
        server.post("/_lattice/admin/v1/plugins/echo/disable", Some(&admin.token), json!({})).await;
    assert_eq!((code, body["state"].as_str()), (200, Some("disabled")));

    const N: usize = 1000;
    for i in 0..N / 2 {
        server.send_text(&alice, &room, &format!("m{i}")).await;
    }
    // Disabled survives a restart, and so does what it has not been given yet.
    let server = server.restart().await;
    assert_eq!(plugin_status(&server, &admin, "echo").await["state"], "disabled");
    for i in N / 2..N {
        server.send_text(&alice, &room, &format!("m{i}")).await;
    }
    assert!(server.server.db.kv_list("echo", "seen/", None, 10, 0).await.unwrap().is_empty());
    let (code, _) =
        server.post("/_lattice/admin/v1/plugins/echo/enable", Some(&admin.token), json!({})).await;
    assert_eq!(code, 200);
    let db = &server.server.db;
    let keys = eventually(120, "every event delivered", || async {
        let keys = db.kv_list("echo", "seen/", None, 1000, 0).await.unwrap();
        (keys.len() == N).then_some(keys)
    })
    .await;
    let mut bodies = Vec::new();
    for key in &keys {
        bodies.push(String::from_utf8(db.kv_get("echo", key, 0).await.unwrap().unwrap().value).unwrap());
    }
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected, "delivered once each, in the order sent");
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_running_version() {
    let (Some(echo), Some(bad)) = (guest("echo_bot"), guest("bad_init")) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::copy(&echo, &path).unwrap();
    let server = hosting(vec![("echo", path.clone(), json!({}), Grants::default())]).await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let before = plugin_status(&server, &admin, "echo").await["sha256"].clone();

    std::fs::copy(&bad, &path).unwrap();
    let (code, body) =
        server.post("/_lattice/admin/v1/plugins/echo/reload", Some(&admin.token), json!({})).await;
    assert_eq!((code, body["errcode"].as_str()), (400, Some("M_BAD_STATE")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("refusing to start"), "{body}");
    assert_eq!(plugin_status(&server, &admin, "echo").await["sha256"], before, "the old version serves");
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@echo:localhost").await;
    wait_joined(&server, &alice, &room, "@echo:localhost").await;

    std::fs::copy(&echo, &path).unwrap();
    let (code, _) =
        server.post("/_lattice/admin/v1/plugins/echo/reload", Some(&admin.token), json!({})).await;
    assert_eq!(code, 200);
    server.send_text(&alice, &room, "!echo still here").await;
    eventually(20, "the echo after reload", || async {
        let found = messages(&server, &alice, &room)
            .await
            .into_iter()
            .any(|e| e["content"]["body"] == "echo: still here");
        found.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_flooding_plugin_is_held_to_its_send_rate() {
    let Some(flood) = guest("flood") else { return };
    let grants = Grants { sends_per_second: 5, ..Grants::default() };
    let server = hosting(vec![("flood", flood, json!({}), grants)]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@flood:localhost").await;
    wait_joined(&server, &alice, &room, "@flood:localhost").await;
    let started = Instant::now();
    server.send_text(&alice, &room, "go").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent =
        messages(&server, &alice, &room).await.iter().filter(|e| e["sender"] == "@flood:localhost").count();
    let allowed = 10 + (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(sent >= 5 && sent <= allowed, "{sent} sent, at most {allowed} allowed");
}

#[tokio::test]
async fn the_plugin_admin_api_is_for_admins_only() {
    let Some(echo) = guest("echo_bot") else { return };
    let server = hosting(vec![("echo", echo, json!({}), Grants::default())]).await;
    let alice = server.register("alice").await;
    let admin = server.register_admin("root").await;
    let (code, body) = server.get("/_lattice/admin/v1/plugins", Some(&alice.token)).await;
    assert_eq!((code, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (code, _) =
        server.post("/_lattice/admin/v1/plugins/echo/disable", Some(&alice.token), json!({})).await;
    assert_eq!(code, 403);
    let (code, _) = server.get("/_lattice/admin/v1/plugins", None).await;
    assert_eq!(code, 401);
    let (code, body) = server.get("/_lattice/admin/v1/plugins", Some(&admin.token)).await;
    assert_eq!(code, 200);
    assert_eq!(body["plugins"][0]["id"], "echo");
    assert_eq!(body["plugins"][0]["user_id"], "@echo:localhost");
    let (code, body) = server.get("/_lattice/admin/v1/plugins/nope", Some(&admin.token)).await;
    assert_eq!((code, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (code, body) = server
        .post("/_lattice/admin/v1/plugins/echo/dead_letters/replay", Some(&admin.token), json!(5))
        .await;
    assert_eq!((code, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
}

#[tokio::test]
async fn a_plugin_with_a_bad_configuration_stops_the_server_from_starting() {
    let Some(echo) = guest("echo_bot") else { return };
    let database = homeserver_storage::testing::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::harness::test_config(dir.path().to_owned(), &database.url);
    config.plugins.insert("echo".into(), spec(echo.clone(), json!({ "greting": "typo" }), Grants::default()));
    let err = homeserver::Server::build(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("unknown key `greting`"), "{err}");
    config.plugins.insert("echo".into(), spec(dir.path().join("missing.wasm"), json!({}), Grants::default()));
    let err = homeserver::Server::build(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("cannot read"), "{err}");
    // A bot name that is a person's account is refused, not taken over.
    let db = homeserver_storage::Db::connect(&database.url).await.unwrap();
    db.create_user("@alice:localhost", Some("hash"), true, None, 0).await.unwrap();
    let mut takeover = spec(echo.clone(), json!({}), Grants::default());
    takeover.user = Some("alice".into());
    config.plugins.insert("echo".into(), takeover);
    let err = homeserver::Server::build(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("not this plugin's bot"), "{err}");
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    config.plugins.insert("echo".into(), spec(dir.path().join("junk.wasm"), json!({}), Grants::default()));
    let err = homeserver::Server::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("not a valid component"), "{err}");
}

#[tokio::test]
async fn the_plugin_command_manages_the_running_server() {
    let Some(echo) = guest("echo_bot") else { return };
    let server = hosting(vec![("echo", echo, json!({}), Grants::default())]).await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let cli = |token: String, args: &'static [&'static str]| {
        let (address, dir) = (address.clone(), dir.path().to_owned());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_lattice"))
                .current_dir(dir)
                .env("LATTICE_LISTEN_CLIENT", address)
                .env("LATTICE_ADMIN_TOKEN", token)
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = cli(admin.token.clone(), &["plugin", "list"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.lines().any(|l| l.starts_with("echo") && l.contains("running") && l.contains("1.0.0")),
        "{text}"
    );

    let out = cli(admin.token.clone(), &["plugin", "disable", "echo"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo: disabled"), "{out:?}");
    assert_eq!(plugin_status(&server, &admin, "echo").await["state"], "disabled");
    let out = cli(admin.token.clone(), &["plugin", "logs", "echo"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("disabled"), "{out:?}");
    let out = cli(admin.token.clone(), &["plugin", "enable", "echo"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo: running"), "{out:?}");
    let out = cli(admin.token.clone(), &["plugin", "dead-letters", "echo", "--replay"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaying 0"), "{out:?}");

    let out = cli(alice.token.clone(), &["plugin", "list"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("M_FORBIDDEN"), "{out:?}");
    let out = cli(admin.token.clone(), &["plugin", "reload", "nope"]).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("M_NOT_FOUND"), "{out:?}");
}

#[tokio::test]
async fn reloads_under_load_lose_and_repeat_nothing() {
    let Some(echo) = guest("echo_bot") else { return };
    let server =
        hosting(vec![("echo", echo, json!({}), Grants { sends_per_second: 1000, ..Grants::default() })])
            .await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@echo:localhost").await;
    wait_joined(&server, &alice, &room, "@echo:localhost").await;
    const N: usize = 150;
    let sending = async {
        for i in 0..N {
            server.send_text(&alice, &room, &format!("!echo n{i}")).await;
        }
    };
    let reloading = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (code, body) =
                server.post("/_lattice/admin/v1/plugins/echo/reload", Some(&admin.token), json!({})).await;
            assert_eq!(code, 200, "{body}");
        }
    };
    tokio::join!(sending, reloading);
    // Every command counted once (the count is a compare-and-set counter in the plugin's
    // store), and answered once.
    let db = &server.server.db;
    eventually(60, "every command counted", || async {
        let count = db.kv_get("echo", "count", 0).await.unwrap().map(|e| String::from_utf8(e.value).unwrap());
        (count.as_deref() == Some(&N.to_string())).then_some(())
    })
    .await;
    // The bot counts a command before it answers it: wait for the last answer too, then a
    // moment for any duplicate.
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(&room));
    let answers = || async {
        let (_, page) = server.get(&path, Some(&alice.token)).await;
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["sender"] == "@echo:localhost" && e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    eventually(60, "every command answered", || async { (answers().await.len() >= N).then_some(()) }).await;
    tokio::time::sleep(crate::plugin_binary::QUIET).await;
    let mut answers = answers().await;
    let total = answers.len();
    answers.sort();
    answers.dedup();
    assert_eq!((total, answers.len()), (N, N), "one answer per command, none twice");
    let status = plugin_status(&server, &admin, "echo").await;
    assert_eq!(status["crashes"], 0, "{status}");
}

#[tokio::test]
async fn a_plugin_limited_to_its_rooms_sees_and_joins_no_other() {
    let Some(echo) = guest("echo_bot") else { return };
    let server = TestServer::start_with(quick).await;
    let alice = server.register("alice").await;
    let allowed = server.create_room(&alice, json!({ "room_alias_name": "allowed" })).await;
    let other = server.create_room(&alice, json!({})).await;
    let grants = Grants { rooms: vec!["#allowed:localhost".into()], ..Grants::default() };
    let server = server
        .restart_with(|c| {
            c.plugins.insert("echo".into(), spec(echo, json!({}), grants));
        })
        .await;
    server.invite(&alice, &other, "@echo:localhost").await;
    server.invite(&alice, &allowed, "@echo:localhost").await;
    wait_joined(&server, &alice, &allowed, "@echo:localhost").await;
    server.send_text(&alice, &allowed, "!echo hi").await;
    eventually(30, "the echo", || async {
        messages(&server, &alice, &allowed)
            .await
            .iter()
            .any(|e| e["content"]["body"] == "echo: hi")
            .then_some(())
    })
    .await;
    tokio::time::sleep(crate::plugin_binary::QUIET).await;
    let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&other));
    let (_, members) = server.get(&path, Some(&alice.token)).await;
    assert!(members["joined"].get("@echo:localhost").is_none(), "the bot stayed out: {members}");
}
