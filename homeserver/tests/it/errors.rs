//! Every error the foundation promises, with its HTTP status and `errcode`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestServer, enc};

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn bad_json_and_not_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&room));

    // Not JSON at all.
    let res =
        server.http.put(server.url(&path)).bearer_auth(&alice.token).body("{not json").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(errcode(&res.json().await.unwrap()), "M_NOT_JSON");

    // JSON, but not an object where one is required.
    let (status, body) = server.put(&path, Some(&alice.token), json!(["a", "list"])).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");

    // JSON of the wrong shape for the endpoint.
    let (status, body) =
        server.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({ "invite": 5 })).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");

    // Floats are not canonical JSON: refused rather than signed into an event.
    // (The path is built anew: the random room id may itself contain "t1".)
    let float_path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t2", enc(&room));
    let (status, body) = server.put(&float_path, Some(&alice.token), json!({ "x": 1.5 })).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{body}");

    // Nothing was half-written: no message event exists.
    let (_, messages) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), Some(&alice.token))
        .await;
    assert!(messages["chunk"].as_array().unwrap().iter().all(|e| e["type"] != "m.room.message"));
}

#[tokio::test]
async fn missing_and_unknown_tokens() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", Some("not-a-token")).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(body["soft_logout"], false);
    // The deprecated query parameter works too, and is checked the same way.
    let (status, body) = server.get("/_matrix/client/v3/account/whoami?access_token=nope", None).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
}

#[tokio::test]
async fn forbidden_actions() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let state = |ty: &str| format!("/_matrix/client/v3/rooms/{}/state/{ty}", enc(&room));

    // Not in the room: cannot send.
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/x", enc(&room)),
            Some(&bob.token),
            json!({"body": "hi"}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // A non-admin member cannot change power levels.
    server.join(&bob, &room).await;
    let (status, body) = server
        .put(
            &state("m.room.power_levels"),
            Some(&bob.token),
            json!({ "users": { bob.user_id.clone(): 100 } }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert!(body["error"].as_str().unwrap().len() > 5, "the reason is given: {body}");

    // A banned user cannot rejoin.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            Some(&alice.token),
            json!({ "user_id": bob.user_id, "reason": "spam" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob.token), json!({}))
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // Bob cannot kick Alice, nor redact her events.
    let msg = server.send_text(&alice, &room, "mine").await;
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&msg)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);

    // Nobody changes someone else's profile.
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)),
            Some(&bob.token),
            json!({"displayname": "x"}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
}

#[tokio::test]
async fn not_found_and_unrecognized() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (status, body) = server
        .put(
            "/_matrix/client/v3/rooms/!nowhere:localhost/send/m.room.message/1",
            Some(&alice.token),
            json!({"body": "x"}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) =
        server.post("/_matrix/client/v3/join/!nowhere:localhost", Some(&alice.token), json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = server.get("/_matrix/client/v3/directory/room/%23missing:localhost", None).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let room = server.create_room(&alice, json!({})).await;
    let (status, body) =
        server.get(&format!("/_matrix/client/v3/rooms/{}/event/$nope", enc(&room)), Some(&alice.token)).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    let (status, body) = server.get("/_matrix/client/v3/no/such/endpoint", None).await;
    assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"));
    let (status, body) = server.request(Method::DELETE, "/_matrix/client/versions", None, None).await;
    assert_eq!((status, errcode(&body)), (405, "M_UNRECOGNIZED"));
}

#[tokio::test]
async fn oversize_event_is_too_large() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let body = json!({ "msgtype": "m.text", "body": "x".repeat(65_536) });
    let (status, res) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/big", enc(&room)),
            Some(&alice.token),
            body,
        )
        .await;
    assert_eq!((status, errcode(&res)), (413, "M_TOO_LARGE"), "{res}");
    // Just under the limit is fine.
    let body = json!({ "msgtype": "m.text", "body": "x".repeat(60_000) });
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/ok", enc(&room)),
            Some(&alice.token),
            body,
        )
        .await;
    assert_eq!(status, 200);
    // A request body far beyond any event is refused before parsing.
    let huge = format!("{{\"body\":\"{}\"}}", "y".repeat(2 * 1024 * 1024));
    let res = server
        .http
        .put(server.url(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/huge", enc(&room))))
        .bearer_auth(&alice.token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn registration_errors() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"} }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
    for bad in ["bad name", "ümlaut", "_reserved", "a:b"] {
        let (status, body) = server
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({ "username": bad, "password": "pw", "auth": {"type": "m.login.dummy"} }),
            )
            .await;
        assert_eq!((status, errcode(&body)), (400, "M_INVALID_USERNAME"), "{bad}: {body}");
    }
    let (status, body) = server.get("/_matrix/client/v3/register/available?username=alice", None).await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
    let (status, body) = server.get("/_matrix/client/v3/register/available?username=carol", None).await;
    assert_eq!((status, body["available"].clone()), (200, json!(true)));
    let (status, body) = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_GUEST_ACCESS_FORBIDDEN"));
}

#[tokio::test]
async fn alias_in_use_leaves_no_room_behind() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.create_room(&alice, json!({ "room_alias_name": "lobby" })).await;
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({ "room_alias_name": "lobby" }))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_ROOM_IN_USE"));
    let (_, joined) = server.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 1);
    let (status, body) = server
        .post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({ "room_version": "13" }))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_UNSUPPORTED_ROOM_VERSION"));
}

#[tokio::test]
async fn rate_limits_answer_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.message_burst = 3;
        c.rate_limits.message_per_second = 0.5;
        c.rate_limits.register_burst = 100;
        c.rate_limits.register_per_second = 100.0;
    })
    .await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let mut limited = None;
    for i in 0..10 {
        let (status, body) = server
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/r{i}", enc(&room)),
                Some(&alice.token),
                json!({"body": "x"}),
            )
            .await;
        if status == 429 {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("rate limited within 10 messages");
    assert_eq!(errcode(&body), "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    // Reports draw on the same budget: a flood of them is refused too.
    let bob = server.register("bob").await;
    let path = format!("/_matrix/client/v3/users/{}/report", enc(&alice.user_id));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(server.post(&path, Some(&bob.token), json!({ "reason": "flood" })).await.0);
    }
    assert!(statuses.starts_with(&[200]) && statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn replayed_txn_id_gives_the_same_event_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/same-txn", enc(&room));
    let (s1, first) =
        server.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "once"})).await;
    let (s2, second) =
        server.put(&path, Some(&alice.token), json!({"msgtype": "m.text", "body": "once"})).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["event_id"], second["event_id"]);
    // Concurrent replays also collapse into one event.
    let racing = path.replace("same-txn", "racing");
    let futures: Vec<_> =
        (0..5).map(|_| server.put(&racing, Some(&alice.token), json!({"body": "race"}))).collect();
    let results = futures::future::join_all(futures).await;
    let ids: std::collections::HashSet<String> =
        results.iter().map(|(_, b)| b["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "{results:?}");

    let (_, page) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), Some(&alice.token))
        .await;
    let bodies = crate::harness::bodies(&page["chunk"]);
    assert_eq!(bodies.iter().filter(|b| *b == "once").count(), 1);
    assert_eq!(bodies.iter().filter(|b| *b == "race").count(), 1);
    // The sending device sees its transaction id.
    let mine = page["chunk"].as_array().unwrap().iter().find(|e| e["content"]["body"] == "once").unwrap();
    assert_eq!(mine["unsigned"]["transaction_id"], "same-txn");

    // Another device of the same user reusing the txn id makes a new event.
    let (_, login) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password}),
        )
        .await;
    let other = login["access_token"].as_str().unwrap();
    let (_, third) = server.put(&path, Some(other), json!({"msgtype": "m.text", "body": "once"})).await;
    assert_ne!(third["event_id"], first["event_id"]);
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let server = TestServer::start().await;
    let res = server
        .http
        .request(Method::OPTIONS, server.url("/_matrix/client/v3/sync"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn invalid_utf8_is_not_json_and_uia_for_someone_else_is_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let res = server
        .http
        .post(server.url("/_matrix/client/v3/createRoom"))
        .bearer_auth(&alice.token)
        .body(b"{\"name\": \"\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(errcode(&res.json().await.unwrap()), "M_NOT_JSON");

    let (status, body) = server
        .request(
            Method::DELETE,
            &format!("/_matrix/client/v3/devices/{}", "ANY"),
            Some(&alice.token),
            Some(json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": bob.user_id }, "password": bob.password } })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}
