//! Server-side search (`POST /search`) over raw HTTP: ranking and ordering, CJK text, pagination,
//! context, state and groupings, and never finding what the searcher may not see.

use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

async fn search(server: &TestServer, user: &User, criteria: Value) -> (u16, Value) {
    server
        .post(
            "/_matrix/client/v3/search",
            Some(&user.token),
            json!({ "search_categories": { "room_events": criteria } }),
        )
        .await
}

async fn search_ok(server: &TestServer, user: &User, criteria: Value) -> Value {
    let (status, body) = search(server, user, criteria).await;
    assert_eq!(status, 200, "{body}");
    body["search_categories"]["room_events"].clone()
}

fn bodies(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn finds_messages_in_any_script_ranked_or_recent() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Weekend plans" })).await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "hiking on saturday?").await;
    server.send_text(&bob, &room, "你好世界，周六去爬山").await;
    server.send_text(&alice, &room, "こんにちは、土曜日").await;
    server.send_text(&bob, &room, "Saturday works, saturday it is").await;
    server.send_text(&alice, &room, "unrelated").await;

    let found = search_ok(&server, &bob, json!({ "search_term": "你好" })).await;
    assert_eq!(bodies(&found), vec!["你好世界，周六去爬山"], "{found}");
    assert_eq!(found["count"], 1);
    let found = search_ok(&server, &bob, json!({ "search_term": "爬山" })).await;
    assert_eq!(bodies(&found).len(), 1);
    let found = search_ok(&server, &bob, json!({ "search_term": "土曜" })).await;
    assert_eq!(bodies(&found), vec!["こんにちは、土曜日"]);

    // Rank: the message saying "saturday" twice first; recent: newest first.
    let ranked = search_ok(&server, &bob, json!({ "search_term": "Saturday" })).await;
    assert_eq!(bodies(&ranked), vec!["Saturday works, saturday it is", "hiking on saturday?"], "{ranked}");
    assert!(ranked["results"][0]["rank"].as_f64().unwrap() >= ranked["results"][1]["rank"].as_f64().unwrap());
    assert_eq!(ranked["highlights"], json!(["saturday"]));
    let recent =
        search_ok(&server, &bob, json!({ "search_term": "saturday hiking", "order_by": "recent" })).await;
    assert_eq!(bodies(&recent), vec!["hiking on saturday?"]);
    assert_eq!(recent["results"][0]["result"]["room_id"], room.as_str());

    // Room names are searchable by key; a sender filter narrows results.
    let by_name =
        search_ok(&server, &bob, json!({ "search_term": "weekend", "keys": ["content.name"] })).await;
    assert_eq!(by_name["results"][0]["result"]["type"], "m.room.name");
    let none = search_ok(&server, &bob, json!({ "search_term": "weekend", "keys": ["content.body"] })).await;
    assert_eq!(none["count"], 0);
    let bobs = search_ok(
        &server,
        &bob,
        json!({ "search_term": "saturday", "filter": { "senders": [bob.user_id] } }),
    )
    .await;
    assert_eq!(bodies(&bobs), vec!["Saturday works, saturday it is"]);

    // Bad requests.
    let (status, body) = search(&server, &bob, json!({ "search_term": "x", "order_by": "loudest" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, body) =
        search(&server, &bob, json!({ "search_term": "x", "keys": ["content.secret"] })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = search(&server, &bob, json!({ "keys": ["content.body"] })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search?next_batch=bogus",
            Some(&bob.token),
            json!({ "search_categories": { "room_events": { "search_term": "x" } } }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, _) =
        server.post("/_matrix/client/v3/search", None, json!({ "search_categories": {} })).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn paginates_with_context_state_and_groups() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = server.create_room(&alice, json!({ "name": "first" })).await;
    let second = server.create_room(&alice, json!({ "name": "second" })).await;
    let displayname = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    server.put(&displayname, Some(&alice.token), json!({ "displayname": "Alice A." })).await;
    for i in 0..7 {
        let room = if i % 2 == 0 { &first } else { &second };
        server.send_text(&alice, room, &format!("report number {i}")).await;
        server.send_text(&alice, room, &format!("filler {i}")).await;
    }

    // Three pages of three, newest first, every hit exactly once.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let path = match &next {
            Some(token) => format!("/_matrix/client/v3/search?next_batch={}", enc(token)),
            None => "/_matrix/client/v3/search".to_owned(),
        };
        let criteria = json!({ "search_term": "report", "order_by": "recent", "filter": { "limit": 3 } });
        let (status, body) = server
            .post(&path, Some(&alice.token), json!({ "search_categories": { "room_events": criteria } }))
            .await;
        assert_eq!(status, 200, "{body}");
        let page = &body["search_categories"]["room_events"];
        assert_eq!(page["count"], 7);
        seen.extend(bodies(page));
        match page["next_batch"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("report number {i}")).collect();
    assert_eq!(seen, expected);

    let found = search_ok(
        &server,
        &alice,
        json!({
            "search_term": "report number 3",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        }),
    )
    .await;
    assert_eq!(bodies(&found)[0], "report number 3");
    let context = &found["results"][0]["context"];
    // The context is the result's own room: the second room holds the odd-numbered messages.
    assert_eq!(context["events_before"][0]["content"]["body"], "filler 1", "{context}");
    assert_eq!(context["events_after"][0]["content"]["body"], "filler 3");
    assert_eq!(context["profile_info"][&alice.user_id]["displayname"], "Alice A.");
    assert!(context["start"].is_string() && context["end"].is_string());
    let state = found["state"][&second].as_array().expect("state of the result's room");
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "second"));
    let groups = &found["groups"]["room_id"];
    assert!(
        groups[&second]["results"].as_array().unwrap().contains(&found["results"][0]["result"]["event_id"])
    );
    assert!(found["groups"]["sender"][&alice.user_id]["results"].is_array());
}

#[tokio::test]
async fn never_finds_what_the_searcher_may_not_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    // Members see history only from their join.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", enc(&room));
    let (status, _) = server.put(&path, Some(&alice.token), json!({ "history_visibility": "joined" })).await;
    assert_eq!(status, 200);
    server.send_text(&alice, &room, "secret pineapple before bob").await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "public pineapple after bob").await;
    let recalled = server.send_text(&alice, &room, "pineapple recalled").await;
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&recalled)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);

    assert_eq!(
        bodies(
            &search_ok(&server, &alice, json!({ "search_term": "pineapple", "order_by": "recent" })).await
        ),
        vec!["public pineapple after bob", "secret pineapple before bob"]
    );
    assert_eq!(
        bodies(&search_ok(&server, &bob, json!({ "search_term": "pineapple" })).await),
        vec!["public pineapple after bob"]
    );
    // Not a member: nothing.
    assert_eq!(search_ok(&server, &carol, json!({ "search_term": "pineapple" })).await["count"], 0);
    // After leaving, the room is out of bob's search.
    let (status, _) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(bodies(&search_ok(&server, &bob, json!({ "search_term": "pineapple" })).await).is_empty());
}
