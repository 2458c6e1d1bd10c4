//! Outbound federation across outages: a server that goes down and comes back receives what it
//! missed, in order, once; the admin API shows each destination's queue and backoff and resets
//! it; `lattice federation` lists destinations; a destination that makes a request ends its own
//! backoff, and a restarted server makes one to each peer it reached recently.

use std::time::Duration;

use homeserver::config::Config;
use serde_json::{Value, json};

use crate::{
    federation::{TestCa, federated, name_of, wait_for_body},
    harness::{TestServer, User, enc},
};

#[tokio::test]
async fn a_server_that_comes_back_receives_what_it_missed_and_admins_see_the_backoff() {
    let ca = TestCa::create();
    let a = federated(&ca, |_| {}).await;
    let b = federated(&ca, |c| c.registration.shared_secret = "reg_secret".into()).await;
    let alice = b.register_admin("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);
    b.send_text(&alice, &room, "before the outage").await;
    wait_for_body(&a, &ann, &room, "before the outage").await;

    // A goes down; B keeps what A is owed and backs off.
    let a_name = name_of(&a).to_string();
    let a = {
        let mut a = a;
        a.stop().await;
        a
    };
    let missed: Vec<String> = (0..5).map(|i| format!("missed {i}")).collect();
    for body in &missed {
        b.send_text(&alice, &room, body).await;
    }
    let path = format!("/_synapse/admin/v1/federation/destinations/{}", enc(&a_name));
    let mut status_of_a = Value::Null;
    for _ in 0..50 {
        let (status, body) = b.get(&path, Some(&alice.token)).await;
        assert_eq!(status, 200, "{body}");
        if body["failures"].as_i64().unwrap_or(0) >= 1 && body["queued"].as_i64().unwrap_or(0) >= 5 {
            status_of_a = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(status_of_a["queued"].as_i64().unwrap_or(0) >= 5, "{status_of_a}");
    assert!(status_of_a["retry_interval"].as_i64().unwrap_or(0) > 0, "{status_of_a}");
    assert!(status_of_a["failure_ts"].as_i64().is_some(), "{status_of_a}");
    let (status, list) = b.get("/_synapse/admin/v1/federation/destinations", Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert!(
        list["destinations"].as_array().unwrap().iter().any(|d| d["destination"] == a_name.as_str()),
        "{list}"
    );
    // `lattice federation list` reads the same table.
    let table = homeserver::admin::destinations_table(&b.server).await.unwrap();
    assert!(table.lines().any(|l| l.starts_with(&a_name)), "{table}");
    // Only admins see it.
    let bob = b.register("bob").await;
    assert_eq!(b.get(&path, Some(&bob.token)).await.0, 403);

    // A comes back; an admin's reset sends at once rather than after the backoff.
    let a = a.restart().await;
    let reset = format!("{path}/reset_connection");
    let (status, body) = b.post(&reset, Some(&alice.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let unknown = "/_synapse/admin/v1/federation/destinations/nowhere.example/reset_connection";
    assert_eq!(b.post(unknown, Some(&alice.token), json!({})).await.0, 404);
    for body in &missed {
        wait_for_body(&a, &ann, &room, body).await;
    }
    // Everything in order, once.
    let (status, page) = a
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), Some(&ann.token))
        .await;
    assert_eq!(status, 200);
    let mut bodies = crate::harness::bodies(&page["chunk"]);
    bodies.reverse();
    let expected: Vec<String> =
        std::iter::once("before the outage".to_owned()).chain(missed.clone()).collect();
    let received: Vec<String> = bodies.into_iter().filter(|b| expected.contains(b)).collect();
    assert_eq!(received, expected);
    let mut after = Value::Null;
    for _ in 0..50 {
        after = b.get(&path, Some(&alice.token)).await.1;
        if after["queued"].as_i64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((after["queued"].as_i64(), after["failures"].as_i64()), (Some(0), Some(0)), "{after}");
    assert!(after["failure_ts"].is_null(), "{after}");
}

#[tokio::test]
async fn presence_crosses_servers_and_remote_users_run_no_local_timers() {
    let ca = TestCa::create();
    let a = federated(&ca, |_| {}).await;
    // B's own timers are short: a local user would go offline within a second.
    let b = federated(&ca, |c| c.presence.offline_after_ms = 300).await;
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);

    let status = format!("/_matrix/client/v3/presence/{}/status", enc(&ann.user_id));
    let set = json!({ "presence": "online", "status_msg": "on A" });
    assert_eq!(a.put(&status, Some(&ann.token), set).await.0, 200);
    let mut seen = Value::Null;
    for _ in 0..50 {
        let (code, body) = b.get(&status, Some(&alice.token)).await;
        if code == 200 && body["status_msg"] == "on A" {
            seen = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["presence"], "online", "{seen}");
    // Long past B's own offline timeout, Ann is still as A said.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, later) = b.get(&status, Some(&alice.token)).await;
    assert_eq!(later["presence"], "online", "{later}");

    // Alice's presence reaches A.
    let alice_status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let set = json!({ "presence": "unavailable", "status_msg": "on B" });
    assert_eq!(b.put(&alice_status, Some(&alice.token), set).await.0, 200);
    let mut seen = Value::Null;
    for _ in 0..50 {
        let (code, body) = a.get(&alice_status, Some(&ann.token)).await;
        if code == 200 && body["status_msg"] == "on B" {
            seen = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["presence"], "unavailable", "{seen}");
}

#[tokio::test]
async fn a_long_outage_is_caught_up_with_the_gap_filled_and_nothing_lost() {
    let ca = TestCa::create();
    let a = federated(&ca, |_| {}).await;
    // B replays at most 50 positions after an outage (the least a cap can be): the rest A must
    // fetch itself, more than one get_missing_events brings.
    let b = federated(&ca, |c| {
        c.registration.shared_secret = "reg_secret".into();
        c.federation.catch_up_cap = 10;
    })
    .await;
    let alice = b.register_admin("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);
    b.send_text(&alice, &room, "before").await;
    wait_for_body(&a, &ann, &room, "before").await;

    let a_name = name_of(&a).to_string();
    let a = {
        let mut a = a;
        a.stop().await;
        a
    };
    let missed: Vec<String> = (0..150).map(|i| format!("missed {i:03}")).collect();
    let mut ids = Vec::new();
    for body in &missed {
        ids.push(b.send_text(&alice, &room, body).await);
    }
    let path = format!("/_synapse/admin/v1/federation/destinations/{}", enc(&a_name));
    for _ in 0..100 {
        let (_, body) = b.get(&path, Some(&alice.token)).await;
        if body["failures"].as_i64().unwrap_or(0) >= 1 && body["queued"].as_i64().unwrap_or(0) >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = a.restart().await;
    assert_eq!(b.post(&format!("{path}/reset_connection"), Some(&alice.token), json!({})).await.0, 200);
    wait_for_body(&a, &ann, &room, "missed 149").await;
    // B sent only the newest fifty; A filled what it could of the gap and holds the rest as a
    // gap in its DAG, until a client pages back.
    let mut held = 0;
    for id in &ids {
        held += usize::from(a.server.db.event(id).await.unwrap().is_some_and(|row| !row.outlier));
    }
    assert!(held < ids.len(), "the catch-up was capped: {held} of {} held", ids.len());

    // Everything is there, in order, once: what the gap fill placed and what paging back
    // backfills.
    let mut seen: Vec<String> = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..40 {
        let mut page_path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&room));
        if let Some(from) = &from {
            page_path.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = a.get(&page_path, Some(&ann.token)).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(crate::harness::bodies(&page["chunk"]));
        let done = page["chunk"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create");
        if done || page["end"].is_null() {
            break;
        }
        from = page["end"].as_str().map(str::to_owned);
    }
    seen.reverse();
    let received: Vec<String> = seen.into_iter().filter(|b| b.starts_with("missed")).collect();
    assert_eq!(received, missed);
}

/// Ann of A joined Alice's public room on B (and, if `a_speaks_first`, sent B a message, so B
/// is a destination A reached); then A stopped and B, owing A a message, failed twice: its next
/// try is ten seconds away.
struct Outage {
    a: TestServer,
    b: TestServer,
    alice: User,
    ann: User,
    room: String,
    /// B's admin API path for destination A.
    status_path: String,
}

async fn b_backed_off_from_a(
    ca: &TestCa,
    adjust_a: impl FnOnce(&mut Config),
    a_speaks_first: bool,
) -> Outage {
    let mut a = federated(ca, adjust_a).await;
    let b = federated(ca, |c| c.registration.shared_secret = "reg_secret".into()).await;
    let alice = b.register_admin("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);
    if a_speaks_first {
        a.send_text(&ann, &room, "from A").await;
        wait_for_body(&b, &alice, &room, "from A").await;
    }
    let status_path = format!("/_synapse/admin/v1/federation/destinations/{}", enc(name_of(&a).as_str()));
    a.stop().await;
    b.send_text(&alice, &room, "while A was down").await;
    let mut failures = 0;
    for _ in 0..200 {
        failures = b.get(&status_path, Some(&alice.token)).await.1["failures"].as_i64().unwrap_or(0);
        if failures >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures >= 2, "B backed off twice");
    Outage { a, b, alice, ann, room, status_path }
}

#[tokio::test]
async fn a_destination_in_backoff_is_retried_as_soon_as_it_makes_a_request() {
    let ca = TestCa::create();
    let Outage { a, b: _b, alice, ann, room, .. } = b_backed_off_from_a(&ca, |_| {}, false).await;
    // A comes back and asks B something: B hears from A and delivers at once.
    let a = a.restart().await;
    let asked = std::time::Instant::now();
    let profile = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    assert_eq!(a.get(&profile, Some(&ann.token)).await.0, 200);
    wait_for_body(&a, &ann, &room, "while A was down").await;
    assert!(asked.elapsed() < Duration::from_secs(5), "delivered after {:?}", asked.elapsed());
}

#[tokio::test]
async fn a_restarted_server_tells_its_peers_it_is_back() {
    let ca = TestCa::create();
    // No presence on A: nothing but the announcement may reach B after A's restart.
    let outage = b_backed_off_from_a(&ca, |c| c.presence.enabled = false, true).await;
    let Outage { a, b, alice, status_path, .. } = outage;
    // A only starts; its empty transaction ends B's backoff, and B delivers at once. B's own
    // account of the destination is read, so nothing is asked of A meanwhile.
    let _a = a.restart().await;
    let started = std::time::Instant::now();
    loop {
        let (status, body) = b.get(&status_path, Some(&alice.token)).await;
        assert_eq!(status, 200, "{body}");
        if body["queued"].as_i64() == Some(0) && body["failures"].as_i64() == Some(0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still owed after 5 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `on` for `user`'s presence status message as `viewer` sees it until it is `expected`.
async fn wait_status(
    on: &crate::harness::TestServer,
    viewer: &crate::harness::User,
    user: &str,
    expected: &str,
) {
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(user));
    for _ in 0..50 {
        let (code, body) = on.get(&path, Some(&viewer.token)).await;
        if code == 200 && body["status_msg"] == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user}'s status never became {expected:?} on {}", name_of(on));
}

#[tokio::test]
async fn a_join_brings_both_servers_the_other_users_presence() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    // Both set their presence before they share any room: nobody else is told then.
    let set = |status: &str| json!({ "presence": "online", "status_msg": status });
    let alice_status = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let ann_status = format!("/_matrix/client/v3/presence/{}/status", enc(&ann.user_id));
    assert_eq!(b.put(&alice_status, Some(&alice.token), set("alice before")).await.0, 200);
    assert_eq!(a.put(&ann_status, Some(&ann.token), set("ann before")).await.0, 200);
    // The join itself brings each side the other's, with no change of presence after it.
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);
    wait_status(&a, &ann, &alice.user_id, "alice before").await;
    wait_status(&b, &alice, &ann.user_id, "ann before").await;
}
