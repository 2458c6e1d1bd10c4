//! Nothing lost: sync tokens from every stream stay valid across a restart (no later change is
//! skipped), and concurrent read-modify-write requests keep every acknowledged change.

use std::collections::HashSet;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

/// Everything one incremental sync returns for a room, as plain strings to search in.
fn room_section(sync: &Value, room: &str) -> String {
    sync["rooms"]["join"][room].to_string()
}

async fn receipt(server: &TestServer, user: &User, room: &str, event: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event));
    let (status, body) = server.post(&path, Some(&user.token), json!({})).await;
    assert_eq!(status, 200, "receipt: {body}");
}

async fn typing(server: &TestServer, user: &User, room: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(room), enc(&user.user_id));
    let (status, body) =
        server.put(&path, Some(&user.token), json!({ "typing": true, "timeout": 30000 })).await;
    assert_eq!(status, 200, "typing: {body}");
}

#[tokio::test]
async fn tokens_of_every_stream_survive_a_restart() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let first = server.send_text(&alice, &room, "before the restart").await;
    // Positions handed out last, before the restart, belong to streams other than room events:
    // receipts, account data, typing. A token covering them must not cover what comes after.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.before", enc(&bob.user_id)),
            Some(&bob.token),
            json!({ "n": 1 }),
        )
        .await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        receipt(&server, &bob, &room, &first).await;
    }
    // And positions handed out but never written: removing a tag that is not there reserves a
    // position, finds nothing to change and drops it. The token below covers them all.
    for _ in 0..3 {
        let path =
            format!("/_matrix/client/v3/user/{}/rooms/{}/tags/u.absent", enc(&bob.user_id), enc(&room));
        let (status, body) = server.request(reqwest::Method::DELETE, &path, Some(&bob.token), None).await;
        assert_eq!(status, 200, "{body}");
    }
    typing(&server, &alice, &room).await;
    let held = server.sync(&bob, None, 0).await["next_batch"].as_str().expect("token").to_owned();

    // Tokens are stored: the same clients carry on after the restart.
    let server = server.restart().await;
    let second = server.send_text(&alice, &room, "after the restart").await;
    typing(&server, &alice, &room).await;
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/org.example.after", enc(&bob.user_id)),
            Some(&bob.token),
            json!({ "n": 2 }),
        )
        .await;
    assert_eq!(status, 200);

    let sync = server.sync(&bob, Some(&held), 0).await;
    let section = room_section(&sync, &room);
    assert!(section.contains("after the restart"), "a message after the restart was skipped: {sync}");
    assert!(!section.contains("before the restart"), "the held token covers the old message: {sync}");
    assert!(section.contains(&alice.user_id) && section.contains("m.typing"), "typing after restart: {sync}");
    assert!(sync["account_data"].to_string().contains("org.example.after"), "account data: {sync}");
    assert!(!sync["account_data"].to_string().contains("org.example.before"), "{sync}");
    assert_ne!(first, second);
}

#[tokio::test]
async fn concurrent_read_marker_moves_keep_the_newest() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let mut events = Vec::new();
    for i in 0..12 {
        events.push(server.send_text(&alice, &room, &format!("message {i}")).await);
    }
    let newest = events.last().unwrap().clone();
    // Every marker at once, oldest last: the marker only moves forward, whatever the order.
    let moves = events.iter().rev().map(|event| {
        let path = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
        let body = json!({ "m.fully_read": event });
        let server = &server;
        let bob = &bob;
        async move { server.post(&path, Some(&bob.token), body).await }
    });
    for (status, body) in join_all(moves).await {
        assert_eq!(status, 200, "{body}");
    }
    let path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
        enc(&bob.user_id),
        enc(&room)
    );
    let (status, marker) = server.get(&path, Some(&bob.token)).await;
    assert_eq!((status, marker["event_id"].as_str()), (200, Some(newest.as_str())), "{marker}");
}

#[tokio::test]
async fn concurrent_filter_uploads_get_distinct_ids() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let uploads = (0..16).map(|i| {
        let path = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
        let server = &server;
        let alice = &alice;
        async move {
            server
                .post(&path, Some(&alice.token), json!({ "room": { "timeline": { "limit": i + 1 } } }))
                .await
        }
    });
    let mut ids = HashSet::new();
    for (status, body) in join_all(uploads).await {
        assert_eq!(status, 200, "{body}");
        ids.insert(body["filter_id"].as_str().expect("filter id").to_owned());
    }
    assert_eq!(ids.len(), 16, "{ids:?}");
    for id in ids {
        let path = format!("/_matrix/client/v3/user/{}/filter/{id}", enc(&alice.user_id));
        let (status, _) = server.get(&path, Some(&alice.token)).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn concurrent_push_rule_toggles_and_deletes_are_all_applied() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let rule = |i: usize| format!("/_matrix/client/v3/pushrules/global/content/word{i}");
    for i in 0..10 {
        let (status, body) = server
            .put(
                &rule(i),
                Some(&alice.token),
                json!({ "pattern": format!("word{i}"), "actions": ["notify"] }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // At once: disable the even rules, delete the odd ones.
    let changes = (0..10).map(|i| {
        let server = &server;
        let alice = &alice;
        let path = rule(i);
        async move {
            if i % 2 == 0 {
                server.put(&format!("{path}/enabled"), Some(&alice.token), json!({ "enabled": false })).await
            } else {
                server.request(reqwest::Method::DELETE, &path, Some(&alice.token), None).await
            }
        }
    });
    for (status, body) in join_all(changes).await {
        assert_eq!(status, 200, "{body}");
    }
    let (_, all) = server.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    let content = all["global"]["content"].as_array().expect("content rules").clone();
    for i in 0..10 {
        let found = content.iter().find(|r| r["rule_id"] == format!("word{i}"));
        match i % 2 {
            0 => assert_eq!(found.map(|r| r["enabled"].clone()), Some(json!(false)), "word{i}: {all}"),
            _ => assert!(found.is_none(), "word{i} was deleted: {all}"),
        }
    }
}

#[tokio::test]
async fn an_admin_change_that_is_refused_changes_nothing() {
    let server = TestServer::start_with(|c| c.registration.shared_secret = "reg_secret".into()).await;
    let root = server.register_admin("root").await;
    let path = format!("/_synapse/admin/v2/users/{}", enc(&root.user_id));
    // A new password and a self-demotion: the demotion is refused, so the password must not
    // have changed (nor the admin's sessions been logged out) before the refusal.
    let body = json!({ "password": "a-new-password", "admin": false, "displayname": "Changed" });
    let (status, error) = server.put(&path, Some(&root.token), body).await;
    assert_eq!(status, 400, "{error}");
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(&root.token)).await;
    assert_eq!(status, 200, "still logged in");
    let login = |password: &str| {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": root.user_id },
            "password": password })
    };
    let (status, _) = server.post("/_matrix/client/v3/login", None, login(&root.password)).await;
    assert_eq!(status, 200, "the old password still works");
    let (status, _) = server.post("/_matrix/client/v3/login", None, login("a-new-password")).await;
    assert_eq!(status, 403, "the new password was never set");
    let (_, user) = server.get(&path, Some(&root.token)).await;
    assert_ne!(user["displayname"], "Changed", "{user}");
}
