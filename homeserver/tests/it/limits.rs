//! Rate limits with the default settings, at the one place each effect has: whichever endpoint
//! reaches it, the same budget is spent.

use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

async fn limited_server() -> TestServer {
    TestServer::start_with(|config| config.rate_limits.enabled = true).await
}

fn is_limited(status: u16, body: &Value) -> bool {
    status == 429 && body["errcode"] == "M_LIMIT_EXCEEDED" && body["retry_after_ms"].as_u64().is_some()
}

async fn login(server: &TestServer, user: &User, password: &str) -> (u16, Value) {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": password });
    server.post("/_matrix/client/v3/login", None, body).await
}

#[tokio::test]
async fn password_guesses_share_one_budget_across_login_and_reauthentication() {
    let server = limited_server().await;
    let alice = server.register("alice").await;
    // Five checks are allowed at once (two wrong logins, then re-authentication attempts)...
    for _ in 0..2 {
        let (status, body) = login(&server, &alice, "wrong").await;
        assert_eq!(status, 403, "{body}");
    }
    let (_, devices) = server.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    let device = devices["devices"][0]["device_id"].as_str().expect("device").to_owned();
    let reauth = |password: &str| {
        json!({ "devices": [device], "auth": { "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": alice.user_id }, "password": password } })
    };
    for _ in 0..3 {
        let (status, body) =
            server.post("/_matrix/client/v3/delete_devices", Some(&alice.token), reauth("wrong")).await;
        assert_eq!(status, 401, "a wrong password is a fresh challenge: {body}");
    }
    // ...then every further check is refused before any hashing, even with the right password,
    // through either endpoint.
    let (status, body) =
        server.post("/_matrix/client/v3/delete_devices", Some(&alice.token), reauth(&alice.password)).await;
    assert!(is_limited(status, &body), "{status} {body}");
    let (status, body) = login(&server, &alice, &alice.password).await;
    assert!(is_limited(status, &body), "{status} {body}");
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await;
    assert_eq!(status, 200, "the device was not deleted");
}

#[tokio::test]
async fn joins_through_the_state_endpoint_spend_the_join_budget() {
    let server = limited_server().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for _ in 0..6 {
        rooms.push(server.create_room(&alice, json!({ "preset": "public_chat" })).await);
    }
    // The join budget is ten at once; joining through `/join` and through a member state event
    // draws on the same one.
    let mut outcomes = Vec::new();
    for room in rooms.iter().cycle().take(12) {
        let path =
            format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(&bob.user_id));
        // Leave again so every request is a real join.
        outcomes.push(server.put(&path, Some(&bob.token), json!({ "membership": "join" })).await);
        let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(room));
        server.post(&leave, Some(&bob.token), json!({})).await;
    }
    let refused = outcomes.iter().filter(|(status, body)| is_limited(*status, body)).count();
    assert!(refused >= 1, "twelve joins in a row were all allowed: {outcomes:?}");
    let path = format!("/_matrix/client/v3/join/{}", enc(&rooms[0]));
    let (status, body) = server.post(&path, Some(&bob.token), json!({})).await;
    assert!(is_limited(status, &body), "{status} {body}");
}

#[tokio::test]
async fn room_creation_and_anonymous_directory_reads_are_limited() {
    let server = limited_server().await;
    let alice = server.register("alice").await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, body) =
            server.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({})).await;
        statuses.push((status, is_limited(status, &body)));
    }
    assert!(statuses.iter().take(10).all(|(s, _)| *s == 200), "{statuses:?}");
    assert!(statuses.iter().skip(10).all(|(_, limited)| *limited), "{statuses:?}");

    let mut anonymous = Vec::new();
    for _ in 0..22 {
        let (status, body) = server.get("/_matrix/client/v3/publicRooms", None).await;
        anonymous.push(is_limited(status, &body));
    }
    assert!(!anonymous[0] && anonymous[21], "{anonymous:?}");
}

#[tokio::test]
async fn public_room_pages_are_capped() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for _ in 0..105 {
        server.create_room(&alice, json!({ "visibility": "public", "preset": "public_chat" })).await;
    }
    for path in ["/_matrix/client/v3/publicRooms", "/_matrix/client/v3/publicRooms?limit=100000"] {
        let (status, body) = server.get(path, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["chunk"].as_array().map(Vec::len), Some(100), "{path}");
        assert_eq!(body["total_room_count_estimate"], 105);
        let next = body["next_batch"].as_str().expect("a next page");
        let (_, rest) = server.get(&format!("/_matrix/client/v3/publicRooms?since={next}"), None).await;
        assert_eq!(rest["chunk"].as_array().map(Vec::len), Some(5), "{rest}");
    }
}
