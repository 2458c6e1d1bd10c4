//! Hardening over raw HTTP: rules that hold whichever endpoint a client picks. Redactions take
//! effect only with the power or on one's own events (`/send`, the state endpoint and
//! `createRoom`'s `initial_state` included); membership changes take the membership path from
//! the state endpoint and `initial_state` too (restricted and blocked rooms, profile fill-in,
//! server-only keys stripped, invitees must exist); a room cannot claim another room's alias;
//! concurrent account-data writes (push rules, tags) are all kept; filter globs are linear and
//! filter lists bounded; identical concurrent `createRoom`s make distinct rooms; lax clients may
//! omit empty bodies; malformed login bodies are `M_BAD_JSON`, not a dropped connection.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc, rand_u64};

fn r(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or_default()
}

/// The event as `GET /rooms/{roomId}/event/{eventId}` shows it to `user`.
async fn event(server: &TestServer, user: &User, room: &str, event_id: &str) -> Value {
    let (status, body) = server.get(&r(room, &format!("/event/{}", enc(event_id))), Some(&user.token)).await;
    assert_eq!(status, 200, "event {event_id}: {body}");
    body
}

/// Sends an `m.room.redaction` through `/send` (v12: `redacts` in the content).
async fn send_redaction(server: &TestServer, user: &User, room: &str, target: &str) -> (u16, Value) {
    let path = r(room, &format!("/send/m.room.redaction/rd{}", rand_u64()));
    server.put(&path, Some(&user.token), json!({ "redacts": target })).await
}

async fn put_state(
    server: &TestServer,
    user: &User,
    room: &str,
    ty: &str,
    key: &str,
    content: Value,
) -> (u16, Value) {
    server.put(&r(room, &format!("/state/{ty}/{}", enc(key))), Some(&user.token), content).await
}

async fn member_state(server: &TestServer, user: &User, room: &str, target: &str) -> (u16, Value) {
    server.get(&r(room, &format!("/state/m.room.member/{}", enc(target))), Some(&user.token)).await
}

/// The user ids `GET /rooms/{roomId}/joined_members` lists for `viewer`.
async fn joined_members(server: &TestServer, viewer: &User, room: &str) -> Vec<String> {
    let (status, body) = server.get(&r(room, "/joined_members"), Some(&viewer.token)).await;
    assert_eq!(status, 200, "joined_members: {body}");
    body["joined"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

async fn joined_rooms(server: &TestServer, user: &User) -> Vec<String> {
    let (status, body) = server.get("/_matrix/client/v3/joined_rooms", Some(&user.token)).await;
    assert_eq!(status, 200, "joined_rooms: {body}");
    serde_json::from_value(body["joined_rooms"].clone()).unwrap()
}

async fn create_status(server: &TestServer, user: &User, body: Value) -> (u16, Value) {
    server.post("/_matrix/client/v3/createRoom", Some(&user.token), body).await
}

#[tokio::test]
async fn redactions_need_the_redact_power_or_the_original_sender() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Anyone may send `m.room.redaction` events, also as state, so only the redaction rule itself
    // stands between Bob (power level 0, `redact` is 50) and Alice's messages.
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "power_level_content_override": { "events": { "m.room.redaction": 0 } },
            }),
        )
        .await;
    server.join(&bob, &room).await;
    let alices = server.send_text(&alice, &room, "alice's words").await;
    let bobs = server.send_text(&bob, &room, "bob's first").await;
    let bobs_second = server.send_text(&bob, &room, "bob's second").await;

    // Bob cannot redact Alice's message through /send...
    let (status, body) = send_redaction(&server, &bob, &room, &alices).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert_eq!(event(&server, &alice, &room, &alices).await["content"]["body"], "alice's words");
    // ...nor through the state endpoint.
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.redaction", "x", json!({ "redacts": alices })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert_eq!(event(&server, &alice, &room, &alices).await["content"]["body"], "alice's words");
    assert_eq!(event(&server, &bob, &room, &alices).await["content"]["body"], "alice's words");

    // His own message he may redact through /send.
    let (status, body) = send_redaction(&server, &bob, &room, &bobs).await;
    assert_eq!(status, 200, "{body}");
    let redacted = event(&server, &alice, &room, &bobs).await;
    assert!(redacted["content"].get("body").is_none(), "{redacted}");
    assert_eq!(redacted["unsigned"]["redacted_because"]["event_id"], body["event_id"]);

    // Alice, the creator, has the power to redact Bob's message through /send.
    let (status, body) = send_redaction(&server, &alice, &room, &bobs_second).await;
    assert_eq!(status, 200, "{body}");
    let redacted = event(&server, &bob, &room, &bobs_second).await;
    assert!(redacted["content"].get("body").is_none(), "{redacted}");
    assert_eq!(event(&server, &bob, &room, &alices).await["content"]["body"], "alice's words");
}

#[tokio::test]
async fn create_room_initial_state_cannot_redact_an_event_of_another_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let message = server.send_text(&alice, &room, "keep me").await;

    let (status, body) = create_status(
        &server,
        &alice,
        json!({
            "initial_state": [{ "type": "m.room.redaction", "state_key": "", "content": { "redacts": message } }],
        }),
    )
    .await;
    assert_eq!(event(&server, &alice, &room, &message).await["content"]["body"], "keep me", "{body}");
    assert!((400..500).contains(&status), "createRoom redacting elsewhere: {status} {body}");
    assert_eq!(joined_rooms(&server, &alice).await, vec![room]);
}

#[tokio::test]
async fn state_endpoint_join_to_a_restricted_room_needs_the_allowed_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let space = server
        .create_room(&alice, json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }))
        .await;
    let room = server
        .create_room(
            &alice,
            json!({
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": {
                    "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }],
            }),
        )
        .await;

    // Bob is not in the space: naming Alice as the one who vouches does not let him in.
    let (status, body) = put_state(
        &server,
        &bob,
        &room,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "join", "join_authorised_via_users_server": alice.user_id }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert_eq!(joined_members(&server, &alice, &room).await, vec![alice.user_id.clone()]);
    assert!(joined_rooms(&server, &bob).await.is_empty());
}

#[tokio::test]
async fn state_endpoint_join_to_a_blocked_room_is_refused() {
    let server = TestServer::start_with(|c| c.registration.shared_secret = "reg_secret".into()).await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let (status, body) = server
        .request(
            Method::DELETE,
            &format!("/_synapse/admin/v1/rooms/{}", enc(&room)),
            Some(&admin.token),
            Some(json!({ "block": true, "purge": false })),
        )
        .await;
    assert_eq!(status, 200, "block: {body}");

    let (status, body) =
        put_state(&server, &bob, &room, "m.room.member", &bob.user_id, json!({ "membership": "join" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert!(joined_rooms(&server, &bob).await.is_empty());
    let (status, members) =
        server.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&room)), Some(&admin.token)).await;
    assert_eq!((status, &members["members"]), (200, &json!([])), "{members}");
}

#[tokio::test]
async fn state_endpoint_join_fills_in_the_profile_and_drops_server_only_keys() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id)),
            Some(&bob.token),
            json!({ "displayname": "Bobby Tables" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;

    let (status, body) = put_state(
        &server,
        &bob,
        &room,
        "m.room.member",
        &bob.user_id,
        json!({ "membership": "join", "join_authorised_via_users_server": alice.user_id }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let event_id = body["event_id"].as_str().expect("event id").to_owned();
    assert!(joined_members(&server, &alice, &room).await.contains(&bob.user_id));
    let (_, member) = member_state(&server, &alice, &room, &bob.user_id).await;
    assert_eq!(member["membership"], "join", "{member}");
    assert_eq!(member["displayname"], "Bobby Tables", "profile filled in: {member}");
    assert!(member.get("join_authorised_via_users_server").is_none(), "stripped: {member}");
    let stored = event(&server, &alice, &room, &event_id).await;
    assert_eq!(stored["content"]["displayname"], "Bobby Tables", "{stored}");
    assert!(stored["content"].get("join_authorised_via_users_server").is_none(), "{stored}");
}

#[tokio::test]
async fn state_endpoint_kicks_but_does_not_move_others_at_will() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;

    // Alice kicks Carol by setting her membership to leave.
    let (status, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        &carol.user_id,
        json!({ "membership": "leave", "reason": "spam" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = member_state(&server, &alice, &room, &carol.user_id).await;
    assert_eq!((member["membership"].as_str(), member["reason"].as_str()), (Some("leave"), Some("spam")));
    assert!(!joined_members(&server, &alice, &room).await.contains(&carol.user_id));

    // Bob (power level 0) cannot join Carol back in.
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.member", &carol.user_id, json!({ "membership": "join" }))
            .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert!(!joined_members(&server, &alice, &room).await.contains(&carol.user_id));
    assert!(joined_rooms(&server, &carol).await.is_empty());

    // Nor can anyone "kick" someone who never was in the room.
    let (status, body) =
        put_state(&server, &alice, &room, "m.room.member", &dave.user_id, json!({ "membership": "leave" }))
            .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, _) = member_state(&server, &alice, &room, &dave.user_id).await;
    assert_eq!(status, 404, "no member event for dave");
}

#[tokio::test]
async fn invitees_must_exist_and_initial_state_cannot_join_others() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;

    let (status, body) =
        server.post(&r(&room, "/invite"), Some(&alice.token), json!({ "user_id": "@ghost:localhost" })).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, _) = member_state(&server, &alice, &room, "@ghost:localhost").await;
    assert_eq!(status, 404, "no invite was sent to the ghost");

    let rooms_before = joined_rooms(&server, &alice).await;
    let (status, body) = create_status(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{ "type": "m.room.member", "state_key": bob.user_id, "content": { "membership": "join" } }],
        }),
    )
    .await;
    assert!((400..500).contains(&status), "createRoom joining bob: {status} {body}");
    assert!(joined_rooms(&server, &bob).await.is_empty(), "bob was joined to a room he never asked for");
    assert_eq!(joined_rooms(&server, &alice).await, rooms_before);
}

#[tokio::test]
async fn create_room_cannot_claim_another_rooms_alias() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let theirs = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "visibility": "public", "room_alias_name": "theirs", "name": "Theirs" }),
        )
        .await;

    for content in [json!({ "alias": "#theirs:localhost" }), json!({ "alt_aliases": ["#theirs:localhost"] })]
    {
        let (status, body) = create_status(
            &server,
            &bob,
            json!({
                "preset": "public_chat", "visibility": "public", "name": "Impostor",
                "initial_state": [{ "type": "m.room.canonical_alias", "state_key": "", "content": content }],
            }),
        )
        .await;
        assert_eq!((status, errcode(&body)), (400, "M_BAD_ALIAS"), "{content}: {body}");
    }
    let (status, resolved) = server.get("/_matrix/client/v3/directory/room/%23theirs:localhost", None).await;
    assert_eq!((status, resolved["room_id"].as_str()), (200, Some(theirs.as_str())), "{resolved}");
    let (status, public) = server.get("/_matrix/client/v3/publicRooms", Some(&bob.token)).await;
    assert_eq!(status, 200, "{public}");
    let chunk = public["chunk"].as_array().expect("chunk");
    for entry in chunk {
        if entry["canonical_alias"] == "#theirs:localhost" {
            assert_eq!(entry["room_id"], theirs.as_str(), "alias shown for another room: {public}");
        }
        assert_ne!(entry["name"], "Impostor", "{public}");
    }
    assert!(joined_rooms(&server, &bob).await.is_empty());

    // A room's own alias is still its canonical alias, also when initial_state names it.
    let mine = server.create_room(&bob, json!({ "room_alias_name": "mine" })).await;
    let (status, alias) = server.get(&r(&mine, "/state/m.room.canonical_alias"), Some(&bob.token)).await;
    assert_eq!((status, alias["alias"].as_str()), (200, Some("#mine:localhost")), "{alias}");
    let also_mine = server
        .create_room(
            &bob,
            json!({
                "room_alias_name": "also-mine",
                "initial_state": [{ "type": "m.room.canonical_alias", "state_key": "",
                    "content": { "alias": "#also-mine:localhost" } }],
            }),
        )
        .await;
    let (status, alias) = server.get(&r(&also_mine, "/state/m.room.canonical_alias"), Some(&bob.token)).await;
    assert_eq!((status, alias["alias"].as_str()), (200, Some("#also-mine:localhost")), "{alias}");
}

#[tokio::test]
async fn concurrent_push_rule_writes_are_all_kept() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let puts = (0..20).map(|i| {
        let body = json!({
            "actions": ["dont_notify"],
            "conditions": [{ "kind": "event_match", "key": "content.body", "pattern": format!("x{i}") }],
        });
        let path = format!("/_matrix/client/v3/pushrules/global/override/rule{i}");
        let server = &server;
        let token = alice.token.clone();
        async move { server.put(&path, Some(&token), body).await }
    });
    let results = futures::future::join_all(puts).await;
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "rule{i}: {body}");
    }
    let (status, rules) = server.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    assert_eq!(status, 200, "{rules}");
    let ids: Vec<&str> = rules["global"]["override"]
        .as_array()
        .expect("override rules")
        .iter()
        .filter_map(|rule| rule["rule_id"].as_str())
        .collect();
    let missing: Vec<String> =
        (0..20).map(|i| format!("rule{i}")).filter(|id| !ids.contains(&id.as_str())).collect();
    assert!(missing.is_empty(), "lost push rules {missing:?}; have {ids:?}");
}

#[tokio::test]
async fn concurrent_tag_writes_are_all_kept() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let tags = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let puts = (0..20).map(|i| {
        let path = format!("{tags}/u.tag{i}");
        let server = &server;
        let token = alice.token.clone();
        async move { server.put(&path, Some(&token), json!({ "order": 0.5 })).await }
    });
    let results = futures::future::join_all(puts).await;
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "u.tag{i}: {body}");
    }
    let (status, body) = server.get(&tags, Some(&alice.token)).await;
    assert_eq!(status, 200, "{body}");
    let have = body["tags"].as_object().expect("tags");
    let missing: Vec<String> =
        (0..20).map(|i| format!("u.tag{i}")).filter(|tag| !have.contains_key(tag)).collect();
    assert!(missing.is_empty(), "lost tags {missing:?}; have {body}");
}

/// Runs on several threads so that a matcher stuck in a handler cannot stop the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_type_globs_are_answered_quickly() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    // A backtracking matcher tries every way to place 30 `a`s among these 27: 2^27 attempts.
    let pattern = format!("{}*b", "*a".repeat(30));
    let no_match = "a".repeat(27);
    let matching = format!("{}b", "a".repeat(30));
    for ty in [&no_match, &matching] {
        let (status, body) = server
            .put(&r(&room, &format!("/send/{ty}/t{}", rand_u64())), Some(&alice.token), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let types_of = |events: &Value| -> Vec<String> {
        events
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };

    let filter = json!({ "room": { "timeline": { "types": [pattern], "limit": 50 } } });
    let path = format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter.to_string()));
    let started = Instant::now();
    let (status, sync) = tokio::time::timeout(Duration::from_secs(10), server.get(&path, Some(&alice.token)))
        .await
        .expect("/sync with a pathological filter answers within 10 s");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(status, 200, "{sync}");
    assert_eq!(types_of(&sync["rooms"]["join"][&room]["timeline"]["events"]), vec![matching.clone()]);

    let filter = json!({ "types": [pattern] });
    let path = r(&room, &format!("/messages?dir=b&limit=50&filter={}", enc(&filter.to_string())));
    let started = Instant::now();
    let (status, page) = tokio::time::timeout(Duration::from_secs(10), server.get(&path, Some(&alice.token)))
        .await
        .expect("/messages with a pathological filter answers within 10 s");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(status, 200, "{page}");
    assert_eq!(types_of(&page["chunk"]), vec![matching]);
}

#[tokio::test]
async fn filter_lists_and_patterns_are_bounded() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let upload = format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id));
    let with_types = |types: Vec<String>| json!({ "room": { "timeline": { "types": types } } });

    let many: Vec<String> = (0..101).map(|i| format!("org.example.t{i}")).collect();
    let (status, body) = server.post(&upload, Some(&alice.token), with_types(many.clone())).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "101 types: {body}");
    let (status, body) = server.post(&upload, Some(&alice.token), with_types(many[..100].to_vec())).await;
    assert_eq!(status, 200, "100 types: {body}");

    let long = format!("org.example.{}", "x".repeat(256 - "org.example.".len()));
    assert_eq!(long.len(), 256);
    let (status, body) = server.post(&upload, Some(&alice.token), with_types(vec![long.clone()])).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "256-byte pattern: {body}");
    let (status, body) =
        server.post(&upload, Some(&alice.token), with_types(vec![long[1..].to_owned()])).await;
    assert_eq!(status, 200, "255-byte pattern: {body}");

    // Inline filters are held to the same bounds.
    let inline = with_types(many).to_string();
    let (status, body) = server
        .get(&format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&inline)), Some(&alice.token))
        .await;
    assert_eq!(status, 400, "inline filter with 101 types: {body}");
}

#[tokio::test]
async fn concurrent_identical_create_room_requests_make_distinct_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut all = std::collections::HashSet::new();
    // A v12 room id is the hash of the create event: identical requests in the same millisecond
    // name the same room unless the server makes them differ. A few rounds make a clash likely.
    for _ in 0..3 {
        let creates = (0..5).map(|_| create_status(&server, &alice, json!({})));
        let results = futures::future::join_all(creates).await;
        let mut ids = std::collections::HashSet::new();
        for (status, body) in &results {
            assert_eq!(*status, 200, "createRoom: {body}");
            ids.insert(body["room_id"].as_str().expect("room id").to_owned());
        }
        assert_eq!(ids.len(), 5, "{results:?}");
        all.extend(ids);
    }
    assert_eq!(all.len(), 15);
    let mut joined = joined_rooms(&server, &alice).await;
    let mut expected: Vec<String> = all.into_iter().collect();
    joined.sort();
    expected.sort();
    assert_eq!(joined, expected);
}

/// A POST without any body or content type, the token in the query string (as matrix-nio does).
async fn bare_post(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    server.request(Method::POST, &format!("{path}{sep}access_token={token}"), None, None).await
}

#[tokio::test]
async fn bodyless_posts_of_lax_clients_are_read_as_empty_objects() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;

    let (status, body) =
        bare_post(&server, &format!("/_matrix/client/v3/join/{}", enc(&room)), &bob.token).await;
    assert_eq!((status, body["room_id"].as_str()), (200, Some(room.as_str())), "join: {body}");
    assert_eq!(joined_rooms(&server, &bob).await, vec![room.clone()]);

    let (status, body) = bare_post(&server, &r(&room, "/leave"), &bob.token).await;
    assert_eq!(status, 200, "leave: {body}");
    assert!(joined_rooms(&server, &bob).await.is_empty());

    let (status, body) = bare_post(&server, &r(&room, "/forget"), &bob.token).await;
    assert_eq!(status, 200, "forget: {body}");

    let (status, body) = bare_post(&server, "/_matrix/client/v3/logout", &bob.token).await;
    assert_eq!(status, 200, "logout: {body}");
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", Some(&bob.token)).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{body}");
}

#[tokio::test]
async fn malformed_login_bodies_are_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let login = "/_matrix/client/v3/login";
    for body in [json!({}), json!({ "type": 5 }), json!({ "identifier": { "user": "alice" } })] {
        let (status, res) = server.post(login, None, body.clone()).await;
        assert_eq!((status, errcode(&res)), (400, "M_BAD_JSON"), "{body}: {res}");
    }
    let (status, res) = server.request(Method::POST, login, None, None).await;
    assert_eq!(status, 400, "no body: {res}");
    assert!(res["errcode"].is_string(), "a JSON error: {res}");

    // The server still answers, a well-formed login included.
    let (status, _) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    let (status, res) = server
        .post(
            login,
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": alice.password }),
        )
        .await;
    assert_eq!((status, res["user_id"].as_str()), (200, Some(alice.user_id.as_str())), "{res}");
}

#[tokio::test]
async fn nul_characters_are_refused_before_they_reach_a_text_column() {
    // PostgreSQL cannot store U+0000 in text: without this, the same request answered 200 on
    // SQLite and 500 on PostgreSQL.
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.nul%00type/t1", enc(&room)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t2", enc(&room)),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "a\u{0}b" }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)),
            Some(&alice.token),
            json!({ "displayname": "nul\u{0}name" }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    let (status, _) = server.get("/_matrix/client/v3/sync?timeout=0&since=s1%00", Some(&alice.token)).await;
    assert_eq!(status, 400);
    // The text "\u0000" (an escaped backslash) is not a NUL and is fine.
    let (status, body) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t3", enc(&room)),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "literally \\u0000" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
