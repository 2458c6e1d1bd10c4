//! Group features over raw HTTP: knocking, restricted joins through a space, room upgrades, the
//! space hierarchy, jump-to-date, announcements (pinned events) and content reports.

use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

fn r(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

fn v1(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}{rest}", enc(room))
}

async fn state(server: &TestServer, user: &User, room: &str, ty: &str, key: &str) -> (u16, Value) {
    server.get(&r(room, &format!("/state/{ty}/{}", enc(key))), Some(&user.token)).await
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

async fn join_status(server: &TestServer, user: &User, room: &str) -> (u16, Value) {
    server.post(&r(room, "/join"), Some(&user.token), json!({})).await
}

#[tokio::test]
async fn knocking_asks_to_join_and_an_invite_lets_in() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "room_version": "10", "name": "Book club",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
            }),
        )
        .await;

    // Bob cannot simply join; he knocks (with a reason) and sees the knock in his sync.
    assert_eq!(join_status(&server, &bob, &room).await.0, 403);
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            Some(&bob.token),
            json!({ "reason": "I love books" }),
        )
        .await;
    assert_eq!((status, body["room_id"].as_str()), (200, Some(room.as_str())), "{body}");
    let sync = server.sync(&bob, None, 0).await;
    let knock_state =
        sync["rooms"]["knock"][&room]["knock_state"]["events"].as_array().expect("knock section");
    assert!(knock_state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Book club"));
    let own = knock_state.iter().find(|e| e["type"] == "m.room.member").expect("own knock");
    assert_eq!(
        (own["content"]["membership"].as_str(), own["content"]["reason"].as_str()),
        (Some("knock"), Some("I love books"))
    );

    // Alice sees the knock and lets bob in with an invite.
    let (_, member) = state(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "knock");
    server.invite(&alice, &room, &bob.user_id).await;
    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_some(), "{}", sync["rooms"]);
    assert!(sync["rooms"]["knock"].get(&room).is_none());
    assert_eq!(join_status(&server, &bob, &room).await.0, 200);

    // Carol's knock is turned down: she sees the room under leave.
    let since = server.sync(&carol, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let (status, _) =
        server.post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), Some(&carol.token), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post(&r(&room, "/kick"), Some(&alice.token), json!({ "user_id": carol.user_id, "reason": "full" }))
        .await;
    assert_eq!(status, 200);
    let sync = server.sync(&carol, Some(&since), 0).await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{}", sync["rooms"]);

    // Knocking where the rules do not allow it, or when already in, is refused.
    let private = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let (status, body) = server
        .post(&format!("/_matrix/client/v3/knock/{}", enc(&private)), Some(&carol.token), json!({}))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) =
        server.post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), Some(&bob.token), json!({})).await;
    assert_eq!(status, 403);
    let (status, body) =
        server.post("/_matrix/client/v3/knock/%21nope%3Alocalhost", Some(&carol.token), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_the_space() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = server
        .create_room(&alice, json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }))
        .await;
    server.invite(&alice, &space, &bob.user_id).await;
    server.join(&bob, &space).await;
    let room = server
        .create_room(
            &alice,
            json!({
                "room_version": "10",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": {
                    "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }],
            }),
        )
        .await;

    let (status, body) = join_status(&server, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    let (_, member) = state(&server, &bob, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());

    let (status, body) = join_status(&server, &carol, &room).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
}

async fn upgrade(server: &TestServer, room: &str, user: &User, version: &str) -> (u16, Value) {
    server.post(&r(room, "/upgrade"), Some(&user.token), json!({ "new_version": version })).await
}

#[tokio::test]
async fn upgrading_a_room_carries_it_over_and_tombstones_the_old_one() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let old = server
        .create_room(
            &alice,
            json!({
                "room_version": "10", "preset": "public_chat", "visibility": "public",
                "name": "Team", "topic": "Announcements here", "room_alias_name": "team",
                "power_level_content_override": { "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 } },
            }),
        )
        .await;
    for user in [&bob, &dave] {
        server.join(user, &old).await;
    }
    let notice = server.send_text(&alice, &old, "Read the rules").await;
    assert_eq!(
        put_state(&server, &alice, &old, "m.room.pinned_events", "", json!({ "pinned": [notice] })).await.0,
        200
    );
    assert_eq!(
        server.post(&r(&old, "/ban"), Some(&alice.token), json!({ "user_id": carol.user_id })).await.0,
        200
    );

    // Bob's own view of the room: a favourite, muted, and his DM list names it.
    let bob_room_data = |room: &str, ty: &str| {
        format!("/_matrix/client/v3/user/{}/rooms/{}/{ty}", enc(&bob.user_id), enc(room))
    };
    let favourite = json!({ "order": 0.5 });
    assert_eq!(
        server.put(&bob_room_data(&old, "tags/m.favourite"), Some(&bob.token), favourite).await.0,
        200
    );
    let mute = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&old));
    assert_eq!(server.put(&mute, Some(&bob.token), json!({ "actions": [] })).await.0, 200);
    let direct = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&bob.user_id));
    let dm = json!({ alice.user_id.clone(): [old.clone()] });
    assert_eq!(server.put(&direct, Some(&bob.token), dm).await.0, 200);

    // Only someone allowed to send the tombstone may upgrade, and only to a known version.
    let (status, body) = upgrade(&server, &old, &bob, "11").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    for unknown in ["999", "my_bad_version"] {
        let (status, body) = upgrade(&server, &old, &alice, unknown).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_UNSUPPORTED_ROOM_VERSION")),
            "{unknown}"
        );
    }
    let (status, _) =
        server.post(&r(&old, "/upgrade"), None, json!({ "new_version": "my_bad_version" })).await;
    assert_eq!(status, 401, "no token: 401 before the body is judged");

    let (status, body) = upgrade(&server, &old, &alice, "11").await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();

    // The new room: predecessor, settings, pins, bans and power levels carried over.
    let (_, create) = state(&server, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["room_version"], "11");
    assert_eq!(state(&server, &alice, &new, "m.room.name", "").await.1["name"], "Team");
    assert_eq!(state(&server, &alice, &new, "m.room.topic", "").await.1["topic"], "Announcements here");
    assert_eq!(state(&server, &alice, &new, "m.room.join_rules", "").await.1["join_rule"], "public");
    // The old room set no guest access; the new one has Synapse's upgrade default.
    assert_eq!(state(&server, &alice, &new, "m.room.guest_access", "").await.1["guest_access"], "can_join");
    assert_eq!(state(&server, &alice, &new, "m.room.pinned_events", "").await.1["pinned"], json!([notice]));
    assert_eq!(state(&server, &alice, &new, "m.room.member", &carol.user_id).await.1["membership"], "ban");
    let (_, power) = state(&server, &alice, &new, "m.room.power_levels", "").await;
    assert_eq!(power["users"][&bob.user_id], 50);
    assert_eq!(power["users"][&alice.user_id], 100);

    // The old room: tombstone, chat restricted to moderators, alias and listing moved.
    let (_, tombstone) = state(&server, &alice, &old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    // The new room's predecessor names the tombstone, the old room's last word (as Synapse).
    let (_, old_state) = server.get(&r(&old, "/state"), Some(&alice.token)).await;
    let tombstone_id = old_state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.tombstone")
        .map(|e| e["event_id"].clone())
        .unwrap();
    assert_eq!(create["predecessor"]["event_id"], tombstone_id);
    let (status, _) = server
        .put(
            &r(&old, "/send/m.room.message/late"),
            Some(&dave.token),
            json!({ "msgtype": "m.text", "body": "hi" }),
        )
        .await;
    assert_eq!(status, 403, "ordinary members can no longer talk in the old room");
    let (_, alias) = server.get("/_matrix/client/v3/directory/room/%23team%3Alocalhost", None).await;
    assert_eq!(alias["room_id"], new.as_str());
    let (_, canonical) = state(&server, &alice, &new, "m.room.canonical_alias", "").await;
    assert_eq!(canonical["alias"], "#team:localhost");
    let (_, old_visibility) =
        server.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&old)), None).await;
    let (_, new_visibility) =
        server.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&new)), None).await;
    assert_eq!(
        (old_visibility["visibility"].as_str(), new_visibility["visibility"].as_str()),
        (Some("private"), Some("public"))
    );

    // Members follow the tombstone; bob can still moderate in the new room.
    server.join(&bob, &new).await;
    let (status, _) =
        put_state(&server, &bob, &new, "m.room.topic", "", json!({ "topic": "new topic" })).await;
    assert_eq!(status, 200);
    // His favourite, mute and DM came along.
    let (_, tags) = server.get(&bob_room_data(&new, "tags"), Some(&bob.token)).await;
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5, "{tags}");
    let (status, rule) = server
        .get(&format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&new)), Some(&bob.token))
        .await;
    assert_eq!((status, rule["actions"].clone()), (200, json!([])), "{rule}");
    let (_, dms) = server.get(&direct, Some(&bob.token)).await;
    assert_eq!(dms[&alice.user_id], json!([old, new]), "{dms}");
}

#[tokio::test]
async fn upgrading_to_v12_makes_the_upgrader_a_creator() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = server
        .create_room(&alice, json!({ "room_version": "10", "preset": "public_chat", "power_level_content_override": { "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 100 } } }))
        .await;
    server.join(&bob, &old).await;
    let (status, body) = server
        .post(
            &r(&old, "/upgrade"),
            Some(&alice.token),
            json!({ "new_version": "12", "additional_creators": [bob.user_id] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    let (_, create) = state(&server, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let (_, power) = state(&server, &alice, &new, "m.room.power_levels", "").await;
    // Creators hold infinite power in v12 and are not listed.
    assert!(
        power["users"].get(&alice.user_id).is_none() && power["users"].get(&bob.user_id).is_none(),
        "{power}"
    );
}

#[tokio::test]
async fn space_hierarchy_lists_what_the_user_may_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let space = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "name": "Company", "creation_content": { "type": "m.space" } }),
        )
        .await;
    server.invite(&alice, &space, &bob.user_id).await;
    server.join(&bob, &space).await;
    let public = server.create_room(&alice, json!({ "preset": "public_chat", "name": "General" })).await;
    let secret = server.create_room(&alice, json!({ "preset": "private_chat", "name": "Board" })).await;
    let members_only = server
        .create_room(
            &alice,
            json!({ "room_version": "10", "name": "Staff", "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }] }),
        )
        .await;
    let subspace = server
        .create_room(&alice, json!({ "preset": "public_chat", "name": "Engineering", "creation_content": { "type": "m.space" } }))
        .await;
    let nested = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Rust" })).await;
    let child = |order: &str, suggested: bool| json!({ "via": ["localhost"], "order": order, "suggested": suggested });
    put_state(&server, &alice, &space, "m.space.child", &public, child("a", true)).await;
    put_state(&server, &alice, &space, "m.space.child", &secret, child("b", false)).await;
    put_state(&server, &alice, &space, "m.space.child", &members_only, child("c", true)).await;
    put_state(&server, &alice, &space, "m.space.child", &subspace, child("d", false)).await;
    put_state(&server, &alice, &subspace, "m.space.child", &nested, child("a", false)).await;
    // A child link without `via` is a removed link.
    put_state(&server, &alice, &space, "m.space.child", "!gone:localhost", json!({})).await;
    // An ordinary room has no children, whatever `m.space.child` events it holds.
    put_state(&server, &alice, &public, "m.space.child", &secret, child("a", true)).await;

    let names = |body: &Value| -> Vec<String> {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let (status, body) = server.get(&v1(&space, "/hierarchy"), Some(&bob.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body), vec!["Company", "General", "Staff", "Engineering", "Rust"]);
    let root = &body["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["children_state"].as_array().unwrap().len(), 4, "{root}");
    let staff = body["rooms"].as_array().unwrap().iter().find(|r| r["name"] == "Staff").unwrap();
    assert_eq!(staff["join_rule"], "restricted");
    assert_eq!(staff["allowed_room_ids"], json!([space]));
    let general = body["rooms"].as_array().unwrap().iter().find(|r| r["name"] == "General").unwrap();
    assert_eq!(general["children_state"], json!([]), "not a space: {general}");

    let (_, body) = server.get(&v1(&space, "/hierarchy?suggested_only=true"), Some(&bob.token)).await;
    assert_eq!(names(&body), vec!["Company", "General", "Staff"]);
    let (_, body) = server.get(&v1(&space, "/hierarchy?max_depth=1"), Some(&bob.token)).await;
    assert_eq!(names(&body), vec!["Company", "General", "Staff", "Engineering"]);
    let (_, first) = server.get(&v1(&space, "/hierarchy?limit=2"), Some(&bob.token)).await;
    assert_eq!(names(&first), vec!["Company", "General"]);
    let next = first["next_batch"].as_str().expect("more pages");
    let (_, second) =
        server.get(&v1(&space, &format!("/hierarchy?limit=2&from={next}")), Some(&bob.token)).await;
    assert_eq!(names(&second), vec!["Staff", "Engineering"]);

    // Outsiders cannot walk a private space; alice (in everything) sees the board room too.
    let (status, _) = server.get(&v1(&space, "/hierarchy"), Some(&carol.token)).await;
    assert_eq!(status, 403);
    let (_, body) = server.get(&v1(&space, "/hierarchy"), Some(&alice.token)).await;
    assert!(names(&body).contains(&"Board".to_owned()));
}

#[tokio::test]
async fn jump_to_date_finds_the_nearest_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    server.send_text(&alice, &room, "morning").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let middle = homeserver_core::time::now_millis();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let evening = server.send_text(&alice, &room, "evening").await;

    let (status, body) =
        server.get(&v1(&room, &format!("/timestamp_to_event?ts={middle}&dir=f")), Some(&alice.token)).await;
    assert_eq!((status, body["event_id"].as_str()), (200, Some(evening.as_str())), "{body}");
    assert!(body["origin_server_ts"].as_u64().unwrap() >= middle);
    let (_, body) =
        server.get(&v1(&room, &format!("/timestamp_to_event?ts={middle}&dir=b")), Some(&alice.token)).await;
    let (_, event) = server
        .get(&r(&room, &format!("/event/{}", enc(body["event_id"].as_str().unwrap()))), Some(&alice.token))
        .await;
    assert_eq!(event["content"]["body"], "morning");

    let (status, body) = server
        .get(&v1(&room, &format!("/timestamp_to_event?ts={}&dir=f", middle * 2)), Some(&alice.token))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, _) =
        server.get(&v1(&room, &format!("/timestamp_to_event?ts={middle}&dir=f")), Some(&bob.token)).await;
    assert_eq!(status, 403);
    let (status, _) = server.get(&v1(&room, "/timestamp_to_event?ts=abc&dir=f"), Some(&alice.token)).await;
    assert_eq!(status, 400);

    // Events the user may not see are stepped over: Bob joins a room whose history is for
    // members since they joined; jumping forward from after the room's creation steps over 60
    // messages he may not see and lands on his invite.
    let joined_only = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "initial_state": [{ "type": "m.room.history_visibility",
                    "state_key": "", "content": { "history_visibility": "joined" } }] }),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let after_creation = homeserver_core::time::now_millis();
    for i in 0..60 {
        server.send_text(&alice, &joined_only, &format!("before bob {i}")).await;
    }
    server.invite(&alice, &joined_only, &bob.user_id).await;
    server.join(&bob, &joined_only).await;
    let (status, body) = server
        .get(&v1(&joined_only, &format!("/timestamp_to_event?ts={after_creation}&dir=f")), Some(&bob.token))
        .await;
    assert_eq!(status, 200, "{body}");
    let path = r(&joined_only, &format!("/event/{}", enc(body["event_id"].as_str().unwrap())));
    let (_, event) = server.get(&path, Some(&bob.token)).await;
    assert!(event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str(), "{event}");
    assert_eq!(event["content"]["membership"], "invite");
}

#[tokio::test]
async fn announcements_are_pinned_by_moderators_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room =
        server.create_room(&alice, json!({ "preset": "public_chat", "topic": "Office closed Friday" })).await;
    server.join(&bob, &room).await;
    let notice = server.send_text(&alice, &room, "Office closed Friday").await;
    let (status, _) =
        put_state(&server, &alice, &room, "m.room.pinned_events", "", json!({ "pinned": [notice] })).await;
    assert_eq!(status, 200);
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.pinned_events", "", json!({ "pinned": [] })).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, _) = put_state(&server, &bob, &room, "m.room.topic", "", json!({ "topic": "party" })).await;
    assert_eq!(status, 403);
    let sync = server.sync(&bob, None, 0).await;
    let state_events: Vec<&Value> = sync["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(sync["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap())
        .collect();
    assert!(
        state_events
            .iter()
            .any(|e| e["type"] == "m.room.pinned_events" && e["content"]["pinned"] == json!([notice]))
    );
}

#[tokio::test]
async fn content_reports_are_filed_and_checked() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    let spam = server.send_text(&alice, &room, "buy now").await;

    let report = |room: &str, event: &str| r(room, &format!("/report/{}", enc(event)));
    let (status, body) = server
        .post(&report(&room, &spam), Some(&bob.token), json!({ "reason": "spam", "score": -100 }))
        .await;
    assert_eq!((status, body), (200, json!({})));
    // Not joined, unknown event, out-of-range score, overlong reason.
    let (status, body) =
        server.post(&report(&room, &spam), Some(&carol.token), json!({ "reason": "spam" })).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, _) = server.post(&report(&room, "$nope"), Some(&bob.token), json!({ "reason": "x" })).await;
    assert_eq!(status, 404);
    let (status, body) = server.post(&report(&room, &spam), Some(&bob.token), json!({ "score": 5 })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, _) =
        server.post(&report(&room, &spam), Some(&bob.token), json!({ "reason": "x".repeat(5000) })).await;
    assert_eq!(status, 400);

    let (status, _) =
        server.post(&r(&room, "/report"), Some(&carol.token), json!({ "reason": "bad room" })).await;
    assert_eq!(status, 200);
    let (status, _) =
        server.post(&r("!nope:localhost", "/report"), Some(&carol.token), json!({ "reason": "?" })).await;
    assert_eq!(status, 404);
    let user_report = |user: &str| format!("/_matrix/client/v3/users/{}/report", enc(user));
    let (status, _) =
        server.post(&user_report(&alice.user_id), Some(&carol.token), json!({ "reason": "rude" })).await;
    assert_eq!(status, 200);
    let (status, _) =
        server.post(&user_report("@ghost:localhost"), Some(&carol.token), json!({ "reason": "?" })).await;
    assert_eq!(status, 404);
    let (status, _) = server.post(&user_report(&alice.user_id), None, json!({ "reason": "rude" })).await;
    assert_eq!(status, 401);
}
