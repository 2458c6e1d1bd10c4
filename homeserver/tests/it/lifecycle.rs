//! Restarts, crashes, shutdown and the `lattice` binary's command line.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use homeserver_storage::testing::TestDatabase;
use serde_json::{Value, json};

use crate::{
    federation::free_port,
    harness::{TestServer, bodies, enc},
};

#[tokio::test]
async fn restart_keeps_accounts_rooms_and_history() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "name": "Durable", "room_alias_name": "durable" })).await;
    for i in 0..5 {
        server.send_text(&alice, &room, &format!("before {i}")).await;
    }
    let txn_path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/keep-me", enc(&room));
    let (_, original) = server.put(&txn_path, Some(&alice.token), json!({ "body": "txn" })).await;
    let key_before = server.get("/_matrix/key/v2/server", None).await.1["verify_keys"].clone();

    let server = server.restart().await;
    // Tokens, rooms, aliases, history, transaction ids and the signing key survive.
    let (status, who) = server.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await;
    assert_eq!((status, who["user_id"].as_str()), (200, Some("@alice:localhost")));
    let (_, alias) = server.get("/_matrix/client/v3/directory/room/%23durable:localhost", None).await;
    assert_eq!(alias["room_id"], room.as_str());
    let (_, replay) = server.put(&txn_path, Some(&alice.token), json!({ "body": "txn" })).await;
    assert_eq!(replay["event_id"], original["event_id"]);
    assert_eq!(server.get("/_matrix/key/v2/server", None).await.1["verify_keys"], key_before);

    // The room continues: new events chain onto the old ones and sync shows all in order.
    server.send_text(&alice, &room, "after").await;
    let (_, page) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&room)), Some(&alice.token))
        .await;
    let mut seen = bodies(&page["chunk"]);
    seen.reverse();
    assert_eq!(seen, vec!["before 0", "before 1", "before 2", "before 3", "before 4", "txn", "after"]);
    let sync = server.sync(&alice, None, 0).await;
    assert_eq!(
        sync["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().last().unwrap()["content"]["body"],
        "after"
    );
}

#[tokio::test]
async fn shutdown_answers_long_polls_at_once() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let url = server.url(&format!("/_matrix/client/v3/sync?timeout=30000&since={since}"));
    let http = server.http.clone();
    let token = alice.token.clone();
    let poll =
        tokio::spawn(
            async move { http.get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()) },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await;
    let status = poll.await.unwrap().expect("in-flight request completed");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited {:?}", started.elapsed());
}

/// A free loopback port (bound and released; the child binds it right after).
struct Binary {
    child: Child,
    base: String,
}

fn lattice(dir: &std::path::Path, database_url: &str, port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lattice"));
    cmd.current_dir(dir)
        .env("LATTICE_DATABASE_URL", database_url)
        .env("LATTICE_LISTEN_CLIENT", format!("127.0.0.1:{port}"))
        .env("LATTICE_RATE_LIMITS_ENABLED", "false")
        .env("LATTICE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn spawn_binary(dir: &std::path::Path, database_url: &str) -> Binary {
    let port = free_port();
    let mut child = lattice(dir, database_url, port).spawn().expect("spawn lattice");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/_matrix/client/versions")).send().await.is_ok() {
            return Binary { child, base };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("lattice did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_traffic_leaves_a_consistent_database() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bin = spawn_binary(dir.path(), &db.url).await;
    let http = reqwest::Client::new();
    let reg: Value = http
        .post(format!("{}/_matrix/client/v3/register", bin.base))
        .body(
            json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.dummy" } }).to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = reg["access_token"].as_str().unwrap().to_owned();
    let created: Value = http
        .post(format!("{}/_matrix/client/v3/createRoom", bin.base))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room_id"].as_str().unwrap().to_owned();

    // Four senders write as fast as they can; the process is killed while they do.
    let mut senders = Vec::new();
    for s in 0..4 {
        let (http, base, token, room) = (http.clone(), bin.base.clone(), token.clone(), room.clone());
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..10_000 {
                let url =
                    format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/s{s}-{i}", enc(&room));
                match http
                    .put(url)
                    .bearer_auth(&token)
                    .body(json!({ "body": format!("s{s}-{i}") }).to_string())
                    .send()
                    .await
                {
                    Ok(res) if res.status() == 200 => acknowledged.push(format!("s{s}-{i}")),
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    bin.child.kill().unwrap(); // SIGKILL
    bin.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for s in senders {
        acknowledged.extend(s.await.unwrap());
    }
    assert!(!acknowledged.is_empty(), "some sends completed before the kill");

    // It starts again on the same database, and every acknowledged message is there, once.
    let mut bin = spawn_binary(dir.path(), &db.url).await;
    let mut stored = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut url =
            format!("{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", bin.base, enc(&room));
        if let Some(from) = &from {
            url.push_str(&format!("&from={from}"));
        }
        let page: Value = http.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        stored.extend(bodies(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no duplicates");
    for body in &acknowledged {
        assert!(unique.contains(body), "acknowledged message {body} was lost");
    }
    // And the room still accepts events.
    let res = http
        .put(format!("{}/_matrix/client/v3/rooms/{}/send/m.room.message/after-crash", bin.base, enc(&room)))
        .bearer_auth(&token)
        .body(json!({ "body": "after crash" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    bin.child.kill().unwrap();
    bin.child.wait().unwrap();
}

fn run_cli(dir: &std::path::Path, database_url: &str, args: &[&str]) -> std::process::Output {
    lattice(dir, database_url, free_port())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run lattice")
}

#[tokio::test]
async fn cli_config_errors_exit_with_status_two() {
    let dir = tempfile::tempdir().unwrap();
    let example = run_cli(dir.path(), "", &["generate-config"]);
    assert!(example.status.success());
    let text = String::from_utf8(example.stdout).unwrap();
    assert!(text.contains("server_name = \"localhost\"") && text.contains("[database]"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[database]\nurll = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .current_dir(dir.path())
        .args(["--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("urll") && err.trim().lines().count() == 1, "{err}");

    let out = run_cli(dir.path(), "postgres://nobody@127.0.0.1:1/none", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("127.0.0.1:1") && !err.contains("panicked"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .current_dir(dir.path())
        .env("LATTICE_SYNC_MAX_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("LATTICE_SYNC_MAX_TIMEOUT_MS"));
}

async fn login_token(http: &reqwest::Client, base: &str, user: &str, password: &str) -> Option<String> {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let res =
        http.post(format!("{base}/_matrix/client/v3/login")).body(body.to_string()).send().await.unwrap();
    if res.status() != 200 {
        return None;
    }
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_user_commands_act_on_the_database() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(dir.path(), &db.url, &["user", "create", "root", "--admin", "--password", "s3cret"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_cli(dir.path(), &db.url, &["user", "create", "root"]);
    assert_eq!(out.status.code(), Some(1), "duplicate user");
    // The federation commands read the same database (no destinations yet).
    let out = run_cli(dir.path(), &db.url, &["federation", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no federation destinations");
    let out = run_cli(dir.path(), &db.url, &["federation", "reset", "nowhere.example"]);
    assert_eq!(out.status.code(), Some(1), "unknown destination");
    let out = run_cli(dir.path(), &db.url, &["user", "create", "gen"]);
    let printed = String::from_utf8(out.stdout).unwrap();
    let generated = printed.trim().rsplit(' ').next().unwrap().to_owned();

    let mut bin = spawn_binary(dir.path(), &db.url).await;
    let http = reqwest::Client::new();
    assert!(login_token(&http, &bin.base, "root", "s3cret").await.is_some());
    let gen_token = login_token(&http, &bin.base, "gen", &generated).await.expect("generated password works");

    let out =
        run_cli(dir.path(), &db.url, &["user", "reset-password", "@root:localhost", "--password", "n3w"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(login_token(&http, &bin.base, "root", "s3cret").await.is_none());
    assert!(login_token(&http, &bin.base, "root", "n3w").await.is_some());

    // gen is in a room when deactivated from the command line while the server runs.
    let created: Value = http
        .post(format!("{}/_matrix/client/v3/createRoom", bin.base))
        .bearer_auth(&gen_token)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = created["room_id"].as_str().unwrap().to_owned();
    let out = run_cli(dir.path(), &db.url, &["user", "deactivate", "gen"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(login_token(&http, &bin.base, "gen", &generated).await.is_none());
    // The running server learns of it when its token cache entry expires (within
    // `token_cache::TTL`; changes made through the server itself apply at once).
    let deadline = std::time::Instant::now() + homeserver_storage::token_cache::TTL * 3;
    loop {
        let res = http
            .get(format!("{}/_matrix/client/v3/account/whoami", bin.base))
            .bearer_auth(&gen_token)
            .send()
            .await
            .unwrap();
        if res.status() == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the running server never saw the deactivation");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = run_cli(dir.path(), &db.url, &["user", "deactivate", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    bin.child.kill().unwrap();
    bin.child.wait().unwrap();

    // At its next start the server makes gen leave the room.
    let mut bin = spawn_binary(dir.path(), &db.url).await;
    let check = homeserver_storage::Db::connect(&db.url).await.unwrap();
    let membership = check.membership(&room, "@gen:localhost").await.unwrap().unwrap();
    assert_eq!(membership.membership, ruma::events::room::member::MembershipState::Leave);
    check.close().await;
    bin.child.kill().unwrap();
    bin.child.wait().unwrap();
}

#[tokio::test]
async fn https_listener_serves_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let (cert_path, key_path) = (cert.display().to_string(), key.display().to_string());
    let server = TestServer::start_with(move |c| {
        c.listen.tls = "127.0.0.1:0".into();
        c.tls.certificate = cert_path;
        c.tls.private_key = key_path;
    })
    .await;
    let tls_base = server.tls_base.clone().expect("https listener");
    let https = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let versions: Value =
        https.get(format!("{tls_base}/_matrix/client/versions")).send().await.unwrap().json().await.unwrap();
    assert!(versions["versions"].is_array());
    let key: Value =
        https.get(format!("{tls_base}/_matrix/key/v2/server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(key["server_name"], "localhost");
    // A plain-HTTP request to the HTTPS port gets no answer.
    assert!(
        reqwest::get(format!("{}/_matrix/client/versions", tls_base.replace("https", "http"))).await.is_err()
    );

    // Testing switches are refused on a public address; TLS without a certificate is refused.
    let mut config = crate::harness::test_config(dir.path().to_owned(), "sqlite://x?mode=rwc");
    config.testing.insecure_federation_tls = true;
    config.listen.client = "0.0.0.0:0".parse().unwrap();
    config.registration.tokens = vec!["t".into()];
    assert!(config.validate().unwrap_err().to_string().contains("testing"));
    let mut config = crate::harness::test_config(dir.path().to_owned(), "sqlite://x?mode=rwc");
    config.listen.tls = "127.0.0.1:0".into();
    assert!(config.validate().unwrap_err().to_string().contains("listen.tls"));
}
