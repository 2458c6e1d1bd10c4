//! Rooms over raw HTTP: creation options, membership, aliases, the directory, state, redaction,
//! and reading events (`/event`, `/members`, `/joined_members`, `/messages`, `/context`).

use serde_json::{Value, json};

use crate::harness::{TestServer, bodies, enc};

fn r(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

async fn state_content(server: &TestServer, token: &str, room: &str, ty: &str) -> Value {
    let (status, body) = server.get(&r(room, &format!("/state/{ty}")), Some(token)).await;
    assert_eq!(status, 200, "{ty}: {body}");
    body
}

#[tokio::test]
async fn create_room_options_become_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "visibility": "public",
                "room_alias_name": "town",
                "name": "Town square",
                "topic": "All welcome",
                "invite": [bob.user_id],
                "is_direct": true,
                "room_version": "10",
                "creation_content": { "m.federate": false },
                "initial_state": [{ "type": "org.example.custom", "state_key": "k", "content": { "v": 1 } }],
                "power_level_content_override": { "events_default": 10 },
            }),
        )
        .await;
    let t = &alice.token;
    assert_eq!(state_content(&server, t, &room, "m.room.create").await["room_version"], "10");
    assert_eq!(state_content(&server, t, &room, "m.room.create").await["m.federate"], false);
    assert_eq!(state_content(&server, t, &room, "m.room.join_rules").await["join_rule"], "public");
    assert_eq!(state_content(&server, t, &room, "m.room.name").await["name"], "Town square");
    assert_eq!(state_content(&server, t, &room, "m.room.topic").await["topic"], "All welcome");
    assert_eq!(state_content(&server, t, &room, "m.room.canonical_alias").await["alias"], "#town:localhost");
    assert_eq!(state_content(&server, t, &room, "m.room.power_levels").await["events_default"], 10);
    assert_eq!(state_content(&server, t, &room, "org.example.custom/k").await["v"], 1);
    let (_, invite) =
        server.get(&r(&room, &format!("/state/m.room.member/{}", enc(&bob.user_id))), Some(t)).await;
    assert_eq!((invite["membership"].as_str(), invite["is_direct"].as_bool()), (Some("invite"), Some(true)));

    let (_, alias) = server.get("/_matrix/client/v3/directory/room/%23town:localhost", None).await;
    assert_eq!(alias["room_id"], room.as_str());
    let (_, public) = server.get("/_matrix/client/v3/publicRooms", None).await;
    let entry = &public["chunk"][0];
    assert_eq!(
        (entry["room_id"].as_str(), entry["name"].as_str()),
        (Some(room.as_str()), Some("Town square"))
    );
    assert_eq!(entry["num_joined_members"], 1);
    assert_eq!(entry["canonical_alias"], "#town:localhost");

    // Defaults: a private room on the default version with invite-only join rules.
    let private = server.create_room(&alice, json!({})).await;
    assert_eq!(state_content(&server, t, &private, "m.room.create").await["room_version"], "12");
    assert_eq!(state_content(&server, t, &private, "m.room.join_rules").await["join_rule"], "invite");
    assert_eq!(
        state_content(&server, t, &private, "m.room.history_visibility").await["history_visibility"],
        "shared"
    );
    let (_, public) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(public["chunk"].as_array().unwrap().len(), 1, "private rooms are not listed");
}

#[tokio::test]
async fn trusted_private_chat_makes_invitees_creators_in_v12() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "trusted_private_chat", "invite": [bob.user_id] }))
        .await;
    let create = state_content(&server, &alice.token, &room, "m.room.create").await;
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    server.join(&bob, &room).await;
    // Bob, a creator, may change power levels.
    let (status, body) = server
        .put(
            &r(&room, "/state/m.room.power_levels"),
            Some(&bob.token),
            json!({ "users": {}, "state_default": 0 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn membership_lifecycle() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room =
        server.create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "hall" })).await;
    // Join by alias.
    let (status, joined) =
        server.post("/_matrix/client/v3/join/%23hall:localhost", Some(&bob.token), json!({})).await;
    assert_eq!((status, joined["room_id"].as_str()), (200, Some(room.as_str())));
    let (_, rooms) = server.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(rooms["joined_rooms"], json!([room]));
    // Joining twice is harmless.
    server.join(&bob, &room).await;

    // Kick, rejoin (public room), ban, unban.
    let (status, _) = server
        .post(&r(&room, "/kick"), Some(&alice.token), json!({ "user_id": bob.user_id, "reason": "out" }))
        .await;
    assert_eq!(status, 200);
    let (_, member) = server
        .get(&r(&room, &format!("/state/m.room.member/{}", enc(&bob.user_id))), Some(&alice.token))
        .await;
    assert_eq!((member["membership"].as_str(), member["reason"].as_str()), (Some("leave"), Some("out")));
    server.join(&bob, &room).await;
    let (status, _) =
        server.post(&r(&room, "/ban"), Some(&alice.token), json!({ "user_id": bob.user_id })).await;
    assert_eq!(status, 200);
    // A banned user reads no state, not even as of the ban (Synapse's rule; a user who left does).
    let own_member = r(&room, &format!("/state/m.room.member/{}", enc(&bob.user_id)));
    assert_eq!(server.get(&own_member, Some(&bob.token)).await.0, 403);
    assert_eq!(server.get(&r(&room, "/state"), Some(&bob.token)).await.0, 403);
    let (status, _) =
        server.post(&r(&room, "/unban"), Some(&alice.token), json!({ "user_id": bob.user_id })).await;
    assert_eq!(status, 200);
    let (status, _) =
        server.post(&r(&room, "/unban"), Some(&alice.token), json!({ "user_id": bob.user_id })).await;
    assert_eq!(status, 403, "not banned any more");
    // Kicking someone not in the room is refused.
    let (status, _) =
        server.post(&r(&room, "/kick"), Some(&alice.token), json!({ "user_id": bob.user_id })).await;
    assert_eq!(status, 403);

    // Forget only after leaving.
    server.join(&bob, &room).await;
    let (status, _) = server.post(&r(&room, "/forget"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 400);
    let (status, _) = server.post(&r(&room, "/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = server.post(&r(&room, "/forget"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) =
        server.post(&r(&room, "/leave"), Some(&server.register("carol").await.token), json!({})).await;
    assert_eq!(status, 403, "leaving a room one is not in");

    // Invites: reject by leaving.
    let private = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &private, &bob.user_id).await;
    let (status, _) = server.post(&r(&private, "/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = server.post(&r(&private, "/join"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 403, "the invite is gone");

    // An invite whose sender has left (the room has no member left) is still rejected here.
    let empty = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &empty, &bob.user_id).await;
    assert_eq!(server.post(&r(&empty, "/leave"), Some(&alice.token), json!({})).await.0, 200);
    let (status, body) = server.post(&r(&empty, "/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, rooms) = server.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert!(!rooms["joined_rooms"].as_array().unwrap().iter().any(|r| r == empty.as_str()));
    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&empty).is_none(), "the invite is gone: {sync}");
}

#[tokio::test]
async fn aliases_and_directory_listing() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "name": "Lounge" })).await;
    let alias_path = "/_matrix/client/v3/directory/room/%23lounge:localhost";
    let (status, _) = server.put(alias_path, Some(&alice.token), json!({ "room_id": room })).await;
    assert_eq!(status, 200);
    let (status, body) = server.put(alias_path, Some(&alice.token), json!({ "room_id": room })).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server
        .put(
            alias_path.replace("lounge", "elsewhere").replace("localhost", "other.org").as_str(),
            Some(&alice.token),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 400, "aliases of other servers cannot be created here");
    let (status, _) = server
        .put(
            "/_matrix/client/v3/directory/room/%23bob:localhost",
            Some(&bob.token),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 403, "bob is not in the room");
    let (_, aliases) = server.get(&r(&room, "/aliases"), Some(&alice.token)).await;
    assert_eq!(aliases["aliases"], json!(["#lounge:localhost"]));
    let (status, _) = server.get(&r(&room, "/aliases"), Some(&bob.token)).await;
    assert_eq!(status, 403);
    let (status, _) = server.request(reqwest::Method::DELETE, alias_path, Some(&bob.token), None).await;
    assert_eq!(status, 403);
    let (status, _) = server.request(reqwest::Method::DELETE, alias_path, Some(&alice.token), None).await;
    assert_eq!(status, 200);
    let (status, _) = server.get(alias_path, None).await;
    assert_eq!(status, 404);

    // Directory visibility.
    let list = format!("/_matrix/client/v3/directory/list/room/{}", enc(&room));
    let (_, vis) = server.get(&list, None).await;
    assert_eq!(vis["visibility"], "private");
    let (status, _) = server.put(&list, Some(&bob.token), json!({ "visibility": "public" })).await;
    assert_eq!(status, 403);
    let (status, _) = server.put(&list, Some(&alice.token), json!({ "visibility": "public" })).await;
    assert_eq!(status, 200);
    for i in 0..3 {
        server.create_room(&alice, json!({ "visibility": "public", "name": format!("Extra {i}") })).await;
    }
    let (_, found) = server
        .post(
            "/_matrix/client/v3/publicRooms",
            Some(&bob.token),
            json!({ "filter": { "generic_search_term": "loun" } }),
        )
        .await;
    assert_eq!(found["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(found["chunk"][0]["name"], "Lounge");
    let (_, page1) = server.get("/_matrix/client/v3/publicRooms?limit=3", None).await;
    assert_eq!(page1["chunk"].as_array().unwrap().len(), 3);
    assert_eq!(page1["total_room_count_estimate"], 4);
    let next = page1["next_batch"].as_str().unwrap_or_else(|| panic!("{page1}"));
    let (_, page2) = server.get(&format!("/_matrix/client/v3/publicRooms?limit=3&since={next}"), None).await;
    assert_eq!(page2["chunk"].as_array().unwrap().len(), 1);
    assert!(page2.get("next_batch").is_none());
}

#[tokio::test]
async fn state_endpoints() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    // Empty state keys work with and without the trailing slash.
    let (status, first) =
        server.put(&r(&room, "/state/m.room.topic"), Some(&alice.token), json!({ "topic": "a" })).await;
    assert_eq!(status, 200);
    let (status, again) =
        server.put(&r(&room, "/state/m.room.topic/"), Some(&alice.token), json!({ "topic": "a" })).await;
    assert_eq!(status, 200);
    assert_eq!(first["event_id"], again["event_id"], "identical state is not duplicated");
    let (status, body) = server.get(&r(&room, "/state/m.room.topic/"), Some(&alice.token)).await;
    assert_eq!((status, body["topic"].as_str()), (200, Some("a")));
    let (status, event) = server.get(&r(&room, "/state/m.room.topic?format=event"), Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (event["type"].as_str(), event["content"]["topic"].as_str()),
        (Some("m.room.topic"), Some("a"))
    );
    let (status, _) = server.get(&r(&room, "/state/m.room.nothing"), Some(&alice.token)).await;
    assert_eq!(status, 404);
    let (status, all) = server.get(&r(&room, "/state"), Some(&alice.token)).await;
    assert_eq!(status, 200);
    let types: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.topic"] {
        assert!(types.contains(&t), "{types:?}");
    }
    // Outsiders read nothing; a former member reads the state as of leaving.
    let (status, _) = server.get(&r(&room, "/state"), Some(&bob.token)).await;
    assert_eq!(status, 403);
    server.invite(&alice, &room, &bob.user_id).await;
    server.join(&bob, &room).await;
    server.post(&r(&room, "/leave"), Some(&bob.token), json!({})).await;
    server
        .put(&r(&room, "/state/m.room.topic"), Some(&alice.token), json!({ "topic": "after bob left" }))
        .await;
    let (status, topic) = server.get(&r(&room, "/state/m.room.topic"), Some(&bob.token)).await;
    assert_eq!((status, topic["topic"].as_str()), (200, Some("a")));
}

#[tokio::test]
async fn redaction_strips_content_everywhere() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let secret = server.send_text(&alice, &room, "oops, my password").await;
    let (status, redaction) = server
        .put(
            &r(&room, &format!("/redact/{}/rd1", enc(&secret))),
            Some(&alice.token),
            json!({ "reason": "typo" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, replay) = server
        .put(
            &r(&room, &format!("/redact/{}/rd1", enc(&secret))),
            Some(&alice.token),
            json!({ "reason": "typo" }),
        )
        .await;
    assert_eq!(replay["event_id"], redaction["event_id"]);
    let (_, event) = server.get(&r(&room, &format!("/event/{}", enc(&secret))), Some(&alice.token)).await;
    assert_eq!(event["content"], json!({}), "{event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction["event_id"]);
    assert_eq!(event["unsigned"]["redacted_by"], redaction["event_id"]);
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "typo");
    let (_, page) = server.get(&r(&room, "/messages?dir=b&limit=5"), Some(&alice.token)).await;
    let chunk = page["chunk"].as_array().unwrap();
    let redacted = chunk.iter().find(|e| e["event_id"] == secret.as_str()).unwrap();
    assert_eq!(redacted["content"], json!({}));
    let red = chunk.iter().find(|e| e["type"] == "m.room.redaction").unwrap();
    assert_eq!(red["redacts"], secret.as_str());
    let (status, _) = server.put(&r(&room, "/redact/$unknown/rd2"), Some(&alice.token), json!({})).await;
    assert_eq!(status, 404);

    // The older POST form without a transaction id (Synapse serves it; SyTest uses it).
    let second = server.send_text(&alice, &room, "another slip").await;
    let path = r(&room, &format!("/redact/{}", enc(&second)));
    let (status, posted) = server.post(&path, Some(&alice.token), json!({ "reason": "again" })).await;
    assert_eq!(status, 200, "{posted}");
    let (_, event) = server.get(&r(&room, &format!("/event/{}", enc(&second))), Some(&alice.token)).await;
    assert_eq!(event["unsigned"]["redacted_by"], posted["event_id"], "{event}");
    assert_eq!(server.post(&path, Some(&alice.token), json!({ "reason": 5 })).await.0, 400);
    let bob = server.register("bob").await;
    assert_eq!(server.post(&path, Some(&bob.token), json!({})).await.0, 403, "not a member");
    assert_eq!(server.post(&path, None, json!({})).await.0, 401);
}

#[tokio::test]
async fn reading_members_messages_and_context() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    let at_two = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    server.invite(&alice, &room, &carol.user_id).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(server.send_text(if i % 2 == 0 { &alice } else { &bob }, &room, &format!("msg {i}")).await);
    }

    let (_, members) = server.get(&r(&room, "/members"), Some(&alice.token)).await;
    assert_eq!(members["chunk"].as_array().unwrap().len(), 3);
    let (_, joined) = server.get(&r(&room, "/members?membership=join"), Some(&alice.token)).await;
    assert_eq!(joined["chunk"].as_array().unwrap().len(), 2);
    let (_, not_joined) = server.get(&r(&room, "/members?not_membership=join"), Some(&alice.token)).await;
    assert_eq!(not_joined["chunk"][0]["state_key"], carol.user_id.as_str());
    let (_, earlier) = server.get(&r(&room, &format!("/members?at={at_two}")), Some(&alice.token)).await;
    assert_eq!(earlier["chunk"].as_array().unwrap().len(), 2, "carol was not invited yet at that point");
    let (_, jm) = server.get(&r(&room, "/joined_members"), Some(&alice.token)).await;
    assert_eq!(jm["joined"]["@bob:localhost"]["display_name"], "bob");

    // Backwards and forwards pagination agree and stop at the ends.
    let (_, back) = server.get(&r(&room, "/messages?dir=b&limit=4"), Some(&alice.token)).await;
    assert_eq!(bodies(&back["chunk"]), vec!["msg 5", "msg 4", "msg 3", "msg 2"]);
    assert!(back["chunk"][0]["room_id"].is_string());
    let end = back["end"].as_str().unwrap();
    assert!(end.starts_with('t'), "pages hand out topological tokens: {end}");
    let (_, back2) =
        server.get(&r(&room, &format!("/messages?dir=b&limit=4&from={end}")), Some(&alice.token)).await;
    assert_eq!(bodies(&back2["chunk"]), vec!["msg 1", "msg 0"]);
    assert_eq!(back2["start"], end, "start echoes the token the page started from");
    // Forward from the same point returns what the backward page returned, oldest first.
    let (_, ahead) =
        server.get(&r(&room, &format!("/messages?dir=f&limit=10&from={end}")), Some(&alice.token)).await;
    assert_eq!(bodies(&ahead["chunk"]), vec!["msg 2", "msg 3", "msg 4", "msg 5"]);
    for bad in ["t1", "t-1_2", "tx_1", "s-1", "t1_2_3"] {
        let (status, body) =
            server.get(&r(&room, &format!("/messages?dir=b&from={bad}")), Some(&alice.token)).await;
        assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{bad}: {body}");
    }
    let (_, fwd) =
        server.get(&r(&room, &format!("/messages?dir=f&limit=3&from={at_two}")), Some(&alice.token)).await;
    let fwd_types: Vec<&str> =
        fwd["chunk"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(fwd_types, vec!["m.room.member", "m.room.message", "m.room.message"]);
    let filter = enc(&json!({ "senders": [bob.user_id] }).to_string());
    let (_, only_bob) =
        server.get(&r(&room, &format!("/messages?dir=b&limit=20&filter={filter}")), Some(&alice.token)).await;
    assert_eq!(bodies(&only_bob["chunk"]), vec!["msg 5", "msg 3", "msg 1"]);
    let lazy = enc(&json!({ "lazy_load_members": true }).to_string());
    let (_, with_members) =
        server.get(&r(&room, &format!("/messages?dir=b&limit=2&filter={lazy}")), Some(&alice.token)).await;
    let member_keys: Vec<&str> =
        with_members["state"].as_array().unwrap().iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(member_keys.len(), 2, "{with_members}");

    // Context around msg 2.
    let (_, ctx) =
        server.get(&r(&room, &format!("/context/{}?limit=4", enc(&ids[2]))), Some(&alice.token)).await;
    assert_eq!(ctx["event"]["content"]["body"], "msg 2");
    assert_eq!(bodies(&ctx["events_before"]), vec!["msg 1", "msg 0"]);
    assert_eq!(bodies(&ctx["events_after"]), vec!["msg 3", "msg 4"]);
    assert!(ctx["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    let (_, page) = server
        .get(
            &r(&room, &format!("/messages?dir=b&limit=1&from={}", ctx["start"].as_str().unwrap())),
            Some(&alice.token),
        )
        .await;
    assert_eq!(bodies(&page["chunk"]), Vec::<String>::new(), "the event before msg 0 is carol's invite");

    // An outsider reads nothing.
    let outsider = server.register("dave").await;
    let (status, _) = server.get(&r(&room, "/messages?dir=b"), Some(&outsider.token)).await;
    assert_eq!(status, 403);
    let (status, _) = server.get(&r(&room, &format!("/event/{}", enc(&ids[0]))), Some(&outsider.token)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn history_visibility_is_enforced() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server
        .put(
            &r(&room, "/state/m.room.history_visibility"),
            Some(&alice.token),
            json!({ "history_visibility": "joined" }),
        )
        .await;
    let hidden = server.send_text(&alice, &room, "before bob").await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "after bob").await;
    let (_, page) = server.get(&r(&room, "/messages?dir=b&limit=50"), Some(&bob.token)).await;
    let seen = bodies(&page["chunk"]);
    assert_eq!(seen, vec!["after bob"], "joined visibility hides earlier messages");
    let (status, _) = server.get(&r(&room, &format!("/event/{}", enc(&hidden))), Some(&bob.token)).await;
    assert_eq!(status, 404);
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(bodies(&sync["rooms"]["join"][&room]["timeline"]["events"]), vec!["after bob"]);

    // With shared visibility a new member sees everything; after leaving, nothing newer.
    let shared = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.send_text(&alice, &shared, "old news").await;
    server.join(&bob, &shared).await;
    let (_, page) = server.get(&r(&shared, "/messages?dir=b&limit=50"), Some(&bob.token)).await;
    assert!(bodies(&page["chunk"]).contains(&"old news".to_owned()));
    server.send_text(&alice, &shared, "while bob was here").await;
    server.post(&r(&shared, "/leave"), Some(&bob.token), json!({})).await;
    server.send_text(&alice, &shared, "secret after leave").await;
    let (_, page) = server.get(&r(&shared, "/messages?dir=b&limit=50"), Some(&bob.token)).await;
    assert!(!bodies(&page["chunk"]).contains(&"secret after leave".to_owned()));
    // Paging back from a token after the leave starts at the leave: a short page still
    // reaches what Bob saw (his leave, the last message before it).
    for n in 0..3 {
        server.send_text(&alice, &shared, &format!("later {n}")).await;
    }
    let now = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let path = r(&shared, &format!("/messages?dir=b&limit=2&from={now}"));
    let (_, page) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(bodies(&page["chunk"]), vec!["while bob was here"], "{page}");
}

#[tokio::test]
async fn legacy_initial_sync_and_event_stream() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "name": "Old school", "preset": "public_chat" })).await;
    server.send_text(&alice, &room, "first").await;
    let (status, init) = server.get("/_matrix/client/v3/initialSync?limit=5", Some(&alice.token)).await;
    assert_eq!(status, 200, "{init}");
    let entry = &init["rooms"][0];
    assert_eq!(
        (entry["room_id"].as_str(), entry["membership"].as_str()),
        (Some(room.as_str()), Some("join"))
    );
    assert_eq!(bodies(&entry["messages"]["chunk"]), vec!["first"]);
    assert!(entry["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.name"));

    let (status, room_init) = server.get(&r(&room, "/initialSync"), Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(room_init["membership"], "join");
    assert_eq!(bodies(&room_init["messages"]["chunk"]), vec!["first"]);
    let (status, _) = server.get(&r(&room, "/initialSync"), Some(&bob.token)).await;
    assert_eq!(status, 403, "not a member, not world readable");

    // The v1 event format, presence of the room's members (offline when never seen) and
    // receipts, globally and per room; a departed member gets neither presence nor receipts.
    server.join(&bob, &room).await;
    let first = server.send_text(&alice, &room, "read me").await;
    let receipt = r(&room, &format!("/receipt/m.read/{}", enc(&first)));
    assert_eq!(server.post(&receipt, Some(&bob.token), json!({})).await.0, 200);
    let (_, room_init) = server.get(&r(&room, "/initialSync"), Some(&bob.token)).await;
    let alice_member = room_init["state"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
        .expect("alice's member event");
    assert_eq!(alice_member["user_id"], alice.user_id.as_str(), "{alice_member}");
    let presence_users: Vec<&str> = room_init["presence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["content"]["user_id"].as_str())
        .collect();
    assert!(presence_users.contains(&alice.user_id.as_str()), "{room_init}");
    assert!(presence_users.contains(&bob.user_id.as_str()), "{room_init}");
    let receipts = &room_init["receipts"][0];
    assert_eq!(receipts["room_id"], room.as_str());
    assert!(receipts["content"][&first]["m.read"][&bob.user_id].is_object(), "{receipts}");
    let (_, init) = server.get("/_matrix/client/v3/initialSync", Some(&bob.token)).await;
    assert_eq!(init["presence"][0]["content"]["user_id"], bob.user_id.as_str(), "the user first");
    assert!(init["receipts"].as_array().unwrap().iter().any(|r| r["room_id"] == room.as_str()), "{init}");
    assert_eq!(server.post(&r(&room, "/leave"), Some(&bob.token), json!({})).await.0, 200);
    let (status, departed) = server.get(&r(&room, "/initialSync"), Some(&bob.token)).await;
    assert_eq!(status, 200, "{departed}");
    assert_eq!((departed["presence"].clone(), departed["receipts"].clone()), (json!([]), json!([])));
    let (_, now) = server.get("/_matrix/client/v3/initialSync?limit=0", Some(&alice.token)).await;
    let end = now["end"].as_str().unwrap().to_owned();

    // The event stream long-polls and wakes for new events.
    let url = server.url(&format!("/_matrix/client/v3/events?from={end}&timeout=5000"));
    let (http, token) = (server.http.clone(), alice.token.clone());
    let poll = tokio::spawn(async move {
        http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The legacy POST form without a transaction id.
    let (status, sent) = server
        .post(
            &r(&room, "/send/m.room.message"),
            Some(&alice.token),
            json!({ "body": "second", "msgtype": "m.text" }),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let stream = poll.await.unwrap();
    assert_eq!(bodies(&stream["chunk"]), vec!["second"]);
    assert_eq!(stream["chunk"][0]["room_id"], room.as_str());
    assert_eq!(stream["chunk"][0]["user_id"], alice.user_id.as_str(), "the v1 format");
    let (_, empty) = server
        .get(
            &format!("/_matrix/client/v3/events?from={}&timeout=0", stream["end"].as_str().unwrap()),
            Some(&alice.token),
        )
        .await;
    assert!(empty["chunk"].as_array().unwrap().is_empty());

    // `limit` cuts a page, and the next poll resumes after it; bad limits are refused at once.
    let from = stream["end"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "third").await;
    server.send_text(&alice, &room, "fourth").await;
    let events = |query: String| format!("/_matrix/client/v3/events?timeout=0&{query}");
    let (_, page) = server.get(&events(format!("from={from}&limit=1")), Some(&alice.token)).await;
    assert_eq!(bodies(&page["chunk"]), vec!["third"], "{page}");
    let next = page["end"].as_str().unwrap();
    let (_, page) = server.get(&events(format!("from={next}")), Some(&alice.token)).await;
    assert_eq!(bodies(&page["chunk"]), vec!["fourth"], "{page}");
    // Account data changes (tags here) come down the stream too, with their room.
    let next = page["end"].as_str().unwrap().to_owned();
    let tag = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/u.work", enc(&alice.user_id), enc(&room));
    assert_eq!(server.put(&tag, Some(&alice.token), json!({ "order": 0.5 })).await.0, 200);
    let (_, page) = server.get(&events(format!("from={next}")), Some(&alice.token)).await;
    let tags = page["chunk"].as_array().unwrap().iter().find(|e| e["type"] == "m.tag").expect("m.tag");
    assert_eq!(
        (tags["room_id"].as_str(), tags["content"]["tags"]["u.work"]["order"].as_f64()),
        (Some(room.as_str()), Some(0.5))
    );
    for bad in ["hello", "-1"] {
        let (status, body) = server.get(&events(format!("limit={bad}")), Some(&alice.token)).await;
        assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{bad}");
    }
    // A room the user was never in is refused, not long-polled.
    let private = server.create_room(&bob, json!({})).await;
    let (status, _) = server.get(&events(format!("room_id={}", enc(&private))), Some(&alice.token)).await;
    assert_eq!(status, 403);

    // A join body's extra keys end up in the member event.
    let (status, _) = server.post(&r(&room, "/join"), Some(&bob.token), json!({ "foo": "bar" })).await;
    assert_eq!(status, 200);
    let (_, member) =
        server.get(&r(&room, &format!("/state/m.room.member/{}", enc(&bob.user_id))), Some(&bob.token)).await;
    assert_eq!((member["foo"].as_str(), member["membership"].as_str()), (Some("bar"), Some("join")));
}

#[tokio::test]
async fn canonical_alias_must_point_to_the_room_and_follows_alias_deletion() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let other = server.create_room(&alice, json!({ "room_alias_name": "elsewhere" })).await;
    let state = r(&room, "/state/m.room.canonical_alias");
    let (status, body) =
        server.put(&state, Some(&alice.token), json!({ "alias": "#missing:localhost" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_ALIAS")));
    let (status, body) =
        server.put(&state, Some(&alice.token), json!({ "alias": "#elsewhere:localhost" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_ALIAS")), "points to {other}");
    let (status, _) = server.put(&state, Some(&alice.token), json!({ "alt_aliases": "nope" })).await;
    assert_eq!(status, 400);
    let (status, _) = server
        .put(
            "/_matrix/client/v3/directory/room/%23here:localhost",
            Some(&alice.token),
            json!({ "room_id": room }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(
            &state,
            Some(&alice.token),
            json!({ "alias": "#here:localhost", "alt_aliases": ["#here:localhost"] }),
        )
        .await;
    assert_eq!(status, 200);
    // Deleting the alias removes it from the canonical alias event.
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/directory/room/%23here:localhost",
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, canonical) = server.get(&state, Some(&alice.token)).await;
    assert!(canonical.get("alias").is_none(), "{canonical}");
    assert_eq!(canonical["alt_aliases"], json!([]));
}
