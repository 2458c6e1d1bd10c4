//! Friends, the Matrix way, over raw HTTP: direct chats, room tags (favourites), ignoring users,
//! the user directory.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestServer, User, bodies, enc};

fn tags_path(user: &User, room: &str, tag: Option<&str>) -> String {
    let base = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&user.user_id), enc(room));
    match tag {
        Some(tag) => format!("{base}/{}", enc(tag)),
        None => base,
    }
}

fn room_account_data<'a>(sync: &'a Value, room: &str, ty: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room]["account_data"]["events"].as_array()?.iter().find(|e| e["type"] == ty)
}

#[tokio::test]
async fn tags_pin_and_unpin_chats_and_reach_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();

    let (status, _) = server
        .put(&tags_path(&alice, &room, Some("m.favourite")), Some(&alice.token), json!({ "order": 0.25 }))
        .await;
    assert_eq!(status, 200);
    let (status, _) =
        server.put(&tags_path(&alice, &room, Some("u.work")), Some(&alice.token), json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = server.get(&tags_path(&alice, &room, None), Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["tags"], json!({ "m.favourite": { "order": 0.25 }, "u.work": {} }));

    let sync = server.sync(&alice, Some(&since), 0).await;
    let tag_event = room_account_data(&sync, &room, "m.tag").expect("m.tag in sync");
    assert_eq!(tag_event["content"]["tags"]["m.favourite"]["order"], 0.25);
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // Unpinning: the favourite goes, the other tag stays, sync sees the change.
    let (status, _) = server
        .request(Method::DELETE, &tags_path(&alice, &room, Some("m.favourite")), Some(&alice.token), None)
        .await;
    assert_eq!(status, 200);
    let sync = server.sync(&alice, Some(&since), 0).await;
    let tag_event = room_account_data(&sync, &room, "m.tag").expect("m.tag change in sync");
    assert_eq!(tag_event["content"]["tags"], json!({ "u.work": {} }));

    // Someone else's tags are neither readable nor writable; a bad order is rejected.
    let (status, body) = server.get(&tags_path(&alice, &room, None), Some(&bob.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) =
        server.put(&tags_path(&alice, &room, Some("m.lowpriority")), Some(&bob.token), json!({})).await;
    assert_eq!(status, 403);
    let (status, body) = server
        .put(&tags_path(&alice, &room, Some("m.lowpriority")), Some(&alice.token), json!({ "order": "high" }))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, body) = server
        .put(&tags_path(&alice, &room, Some("m.lowpriority")), Some(&alice.token), json!({ "order": 7 }))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, body) = server.get(&tags_path(&alice, &room, None), None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
}

#[tokio::test]
async fn direct_chats_and_per_user_room_names() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }),
        )
        .await;

    // Bob's invite says it is a direct chat.
    let sync = server.sync(&bob, None, 0).await;
    let invite_state = sync["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap();
    let own_member = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
        .expect("bob's invite in the stripped state");
    assert_eq!(own_member["content"]["is_direct"], true);

    // Clients record DMs in m.direct; it reaches every sync of the user.
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&bob.user_id));
    let (status, _) = server.put(&path, Some(&bob.token), json!({ alice.user_id.clone(): [room] })).await;
    assert_eq!(status, 200);
    server.join(&bob, &room).await;
    let sync = server.sync(&bob, None, 0).await;
    let direct = sync["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.direct");
    assert_eq!(direct.unwrap()["content"][&alice.user_id], json!([room]));

    // A per-user room name is room account data: private to the user who set it.
    let path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/u.room_name",
        enc(&bob.user_id),
        enc(&room)
    );
    let (status, _) = server.put(&path, Some(&bob.token), json!({ "name": "Alice ❤" })).await;
    assert_eq!(status, 200);
    let (_, body) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(body["name"], "Alice ❤");
    let sync = server.sync(&alice, None, 0).await;
    assert!(room_account_data(&sync, &room, "u.room_name").is_none());
    let (status, _) = server.get(&path, Some(&alice.token)).await;
    assert_eq!(status, 403);
}

async fn ignore(server: &TestServer, user: &User, ignored: &[&str]) -> (u16, Value) {
    let users: serde_json::Map<String, Value> = ignored.iter().map(|u| (u.to_string(), json!({}))).collect();
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&user.user_id));
    server.put(&path, Some(&user.token), json!({ "ignored_users": users })).await
}

#[tokio::test]
async fn ignored_users_disappear_everywhere_including_retroactively() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    let spam = server.send_text(&bob, &room, "spam before").await;
    server.send_text(&carol, &room, "hello from carol").await;

    // Ignoring oneself or a non-user is refused.
    let (status, body) = ignore(&server, &alice, &[&alice.user_id]).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, body) = ignore(&server, &alice, &["not-a-user"]).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")));

    let (status, _) = ignore(&server, &alice, &[&bob.user_id]).await;
    assert_eq!(status, 200);
    server.send_text(&bob, &room, "spam after").await;
    server.send_text(&carol, &room, "carol again").await;
    // Bob's state events still reach Alice: here his new display name (his member event).
    let name_path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(server.put(&name_path, Some(&bob.token), json!({ "displayname": "Robert" })).await.0, 200);

    // Sync (initial, so retroactive), /messages, /context and the legacy stream all hide bob.
    let sync = server.sync(&alice, None, 0).await;
    let timeline = bodies(&sync["rooms"]["join"][&room]["timeline"]["events"]);
    assert!(timeline.contains(&"carol again".to_owned()), "{timeline:?}");
    assert!(!timeline.iter().any(|b| b.starts_with("spam")), "{timeline:?}");
    let bobs_state = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(sync["rooms"]["join"][&room]["state"]["events"].as_array().unwrap())
        .any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["displayname"] == "Robert");
    assert!(bobs_state, "an ignored user's state events are still sent: {sync}");
    // His messages make no badge and no notification: only Carol's two count.
    let counts = &sync["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{counts}");
    let (_, list) = server.get("/_matrix/client/v3/notifications", Some(&alice.token)).await;
    let senders: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["event"]["sender"].as_str())
        .collect();
    assert!(!senders.is_empty() && senders.iter().all(|s| *s == carol.user_id), "{list}");
    let (_, page) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), Some(&alice.token))
        .await;
    let history = bodies(&page["chunk"]);
    assert!(history.contains(&"hello from carol".to_owned()));
    assert!(!history.iter().any(|b| b.starts_with("spam")), "{history:?}");
    let (_, context) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/context/{}?limit=10", enc(&room), enc(&spam)),
            Some(&alice.token),
        )
        .await;
    let around: Vec<String> =
        bodies(&context["events_before"]).into_iter().chain(bodies(&context["events_after"])).collect();
    assert!(around.contains(&"hello from carol".to_owned()), "{context}");
    assert!(!around.iter().any(|b| b.starts_with("spam")), "{around:?}");
    // Bob still sees everything: ignoring is one-sided.
    let (_, page) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), Some(&bob.token))
        .await;
    assert!(bodies(&page["chunk"]).contains(&"spam after".to_owned()));

    // An invite from an ignored user never shows up.
    let bobs_room = server.create_room(&bob, json!({})).await;
    server.invite(&bob, &bobs_room, &alice.user_id).await;
    let carols_room = server.create_room(&carol, json!({})).await;
    server.invite(&carol, &carols_room, &alice.user_id).await;
    let sync = server.sync(&alice, None, 0).await;
    let invites = sync["rooms"]["invite"].as_object().cloned().unwrap_or_default();
    assert!(invites.contains_key(&carols_room), "{invites:?}");
    assert!(!invites.contains_key(&bobs_room), "{invites:?}");

    // Un-ignoring brings bob back.
    let (status, _) = ignore(&server, &alice, &[]).await;
    assert_eq!(status, 200);
    let sync = server.sync(&alice, None, 0).await;
    let timeline = bodies(&sync["rooms"]["join"][&room]["timeline"]["events"]);
    assert!(timeline.contains(&"spam after".to_owned()), "{timeline:?}");
}

async fn search(server: &TestServer, user: &User, term: &str, limit: u64) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/user_directory/search",
            Some(&user.token),
            json!({ "search_term": term, "limit": limit }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn found(body: &Value) -> Vec<String> {
    body["results"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect()
}

async fn set_displayname(server: &TestServer, user: &User, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&user.user_id));
    let (status, _) = server.put(&path, Some(&user.token), json!({ "displayname": name })).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn user_directory_finds_room_mates_and_public_room_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("friend-bob").await;
    let carol = server.register("friend-carol").await;
    let dave = server.register("friend-dave").await;
    // Bob shares a private room with alice; dave is in a public room; carol is nowhere.
    let private = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    server.invite(&alice, &private, &bob.user_id).await;
    server.join(&bob, &private).await;
    server.create_room(&dave, json!({ "preset": "public_chat" })).await;

    let body = search(&server, &alice, "friend", 10).await;
    assert_eq!(found(&body), vec![bob.user_id.clone(), dave.user_id.clone()], "{body}");
    assert_eq!(body["limited"], false);
    // Room mates come first and the limit is honoured.
    let body = search(&server, &alice, "FRIEND", 1).await;
    assert_eq!((found(&body), body["limited"].as_bool()), (vec![bob.user_id.clone()], Some(true)));

    // Display names are searchable and current after a change.
    set_displayname(&server, &carol, "Zhang Wei 张伟").await;
    set_displayname(&server, &bob, "Bobby Tables").await;
    let body = search(&server, &alice, "tables", 10).await;
    assert_eq!(found(&body), vec![bob.user_id.clone()]);
    assert_eq!(body["results"][0]["display_name"], "Bobby Tables");
    assert!(found(&search(&server, &alice, "张伟", 10).await).is_empty(), "carol shares nothing");

    // Membership changes count at once: carol joins the public room, bob leaves the private one.
    let (status, _) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&private)), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let public = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&carol, &public).await;
    let body = search(&server, &alice, "friend", 10).await;
    assert_eq!(found(&body), vec![carol.user_id.clone(), dave.user_id.clone()], "{body}");
    assert_eq!(found(&search(&server, &alice, "张伟", 10).await), vec![carol.user_id.clone()]);

    // Wildcards in the term are literal, and a missing token is refused.
    assert!(found(&search(&server, &alice, "%", 10).await).is_empty());
    let (status, _) = server
        .post("/_matrix/client/v3/user_directory/search", None, json!({ "search_term": "friend" }))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn user_directory_follows_a_rooms_join_rule_and_history_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("listed-bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    server.invite(&alice, &room, &bob.user_id).await;
    server.join(&bob, &room).await;
    let set = |event_type: &'static str, content: Value| {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(&room));
        let (server, token) = (&server, alice.token.clone());
        async move {
            let (status, body) = server.put(&path, Some(&token), content).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    // Carol shares nothing with bob: she finds him only while the room is listed, that is
    // public to join or readable by anyone.
    assert!(found(&search(&server, &carol, "listed", 10).await).is_empty());
    assert!(found(&search(&server, &bob, "listed", 10).await).is_empty(), "not even by himself");
    set("m.room.join_rules", json!({ "join_rule": "public" })).await;
    assert_eq!(found(&search(&server, &carol, "listed", 10).await), vec![bob.user_id.clone()]);
    assert_eq!(found(&search(&server, &bob, "listed", 10).await), vec![bob.user_id.clone()]);
    set("m.room.history_visibility", json!({ "history_visibility": "world_readable" })).await;
    set("m.room.join_rules", json!({ "join_rule": "invite" })).await;
    assert_eq!(
        found(&search(&server, &carol, "listed", 10).await),
        vec![bob.user_id.clone()],
        "world-readable"
    );
    set("m.room.history_visibility", json!({ "history_visibility": "shared" })).await;
    assert!(found(&search(&server, &carol, "listed", 10).await).is_empty());
    // A setting without a value lists nothing either.
    set("m.room.history_visibility", json!({ "history_visibility": "world_readable" })).await;
    set("m.room.history_visibility", json!({})).await;
    assert!(found(&search(&server, &carol, "listed", 10).await).is_empty());
}

#[tokio::test]
async fn user_directory_can_search_all_users() {
    let server = TestServer::start_with(|c| c.user_directory.search_all_users = true).await;
    let alice = server.register("alice").await;
    let loner = server.register("loner").await;
    assert_eq!(found(&search(&server, &alice, "lone", 10).await), vec![loner.user_id.clone()]);
    // Deactivated users are never found.
    let (status, _) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&loner.token),
            json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": loner.user_id }, "password": loner.password } }),
        )
        .await;
    assert_eq!(status, 200);
    assert!(found(&search(&server, &alice, "lone", 10).await).is_empty());
}
