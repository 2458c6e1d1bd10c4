//! Everyday chat features over raw HTTP: receipts and read markers, typing, unread counts and
//! push rules, the notification list.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{TestServer, enc};

fn r(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

fn joined<'a>(sync: &'a Value, room: &str) -> &'a Value {
    &sync["rooms"]["join"][room]
}

fn ephemeral<'a>(sync: &'a Value, room: &str, ty: &str) -> Option<&'a Value> {
    joined(sync, room)["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == ty)
}

#[tokio::test]
async fn receipts_reset_unread_counts_and_private_receipts_stay_private() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let bob_since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let mut last = String::new();
    for i in 0..3 {
        last = server.send_text(&alice, &room, &format!("unread {i}")).await;
    }
    let mention = server
        .put(
            &r(&room, "/send/m.room.message/mention"),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await
        .1["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sync = server.sync(&bob, Some(&bob_since), 0).await;
    let counts = &joined(&sync, &room)["unread_notifications"];
    assert_eq!(
        (counts["notification_count"].as_u64(), counts["highlight_count"].as_u64()),
        (Some(4), Some(1)),
        "{counts}"
    );
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // A private receipt on the third message: bob's counts drop, alice does not see it.
    let (status, _) = server
        .post(&r(&room, &format!("/receipt/m.read.private/{}", enc(&last))), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let sync = server.sync(&bob, Some(&since), 0).await;
    let counts = &joined(&sync, &room)["unread_notifications"];
    assert_eq!(
        (counts["notification_count"].as_u64(), counts["highlight_count"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        ephemeral(&sync, &room, "m.receipt").unwrap()["content"][&last]["m.read.private"][&bob.user_id]["ts"]
            .is_u64()
    );
    let alice_sync = server.sync(&alice, None, 0).await;
    let alice_receipts = ephemeral(&alice_sync, &room, "m.receipt");
    assert!(alice_receipts.is_none_or(|e| e["content"].get(&last).is_none()), "{alice_receipts:?}");

    // A public receipt on the mention: everything read, and alice sees it.
    let (status, _) = server
        .post(&r(&room, &format!("/receipt/m.read/{}", enc(&mention))), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let sync = server.sync(&bob, None, 0).await;
    let counts = &joined(&sync, &room)["unread_notifications"];
    assert_eq!(
        (counts["notification_count"].as_u64(), counts["highlight_count"].as_u64()),
        (Some(0), Some(0))
    );
    let alice_sync = server.sync(&alice, None, 0).await;
    assert!(
        ephemeral(&alice_sync, &room, "m.receipt").unwrap()["content"][&mention]["m.read"][&bob.user_id]
            .is_object()
    );

    // Receipts for unknown events, in rooms one is not in, or of unknown types are refused.
    let (status, _) = server.post(&r(&room, "/receipt/m.read/$nope"), Some(&bob.token), json!({})).await;
    assert_eq!(status, 404);
    let carol = server.register("carol").await;
    let (status, _) = server
        .post(&r(&room, &format!("/receipt/m.read/{}", enc(&mention))), Some(&carol.token), json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .post(&r(&room, &format!("/receipt/m.made.up/{}", enc(&mention))), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn read_markers_set_fully_read_and_receipts() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let event = server.send_text(&alice, &room, "marker").await;
    let (status, _) = server
        .post(&r(&room, "/read_markers"), Some(&bob.token), json!({ "m.fully_read": event, "m.read": event }))
        .await;
    assert_eq!(status, 200);
    let sync = server.sync(&bob, None, 0).await;
    let account = joined(&sync, &room)["account_data"]["events"].as_array().unwrap();
    assert!(
        account.iter().any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == event.as_str())
    );
    assert!(
        ephemeral(&sync, &room, "m.receipt").unwrap()["content"][&event]["m.read"][&bob.user_id].is_object()
    );
    let (status, res) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            Some(&bob.token),
            json!({ "event_id": event }),
        )
        .await;
    assert_eq!(
        (status, res["errcode"].as_str()),
        (405, Some("M_BAD_JSON")),
        "m.fully_read is managed by the server"
    );
    // The marker only moves forward, and takes no thread.
    let later = server.send_text(&alice, &room, "later").await;
    let (status, _) =
        server.post(&r(&room, "/read_markers"), Some(&bob.token), json!({ "m.fully_read": later })).await;
    assert_eq!(status, 200);
    let (status, _) =
        server.post(&r(&room, "/read_markers"), Some(&bob.token), json!({ "m.fully_read": event })).await;
    assert_eq!(status, 200);
    let marker = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
        enc(&bob.user_id),
        enc(&room)
    );
    assert_eq!(server.get(&marker, Some(&bob.token)).await.1["event_id"], later.as_str(), "not pulled back");
    let (status, res) = server
        .post(
            &r(&room, &format!("/receipt/m.fully_read/{}", enc(&later))),
            Some(&bob.token),
            json!({ "thread_id": "main" }),
        )
        .await;
    assert_eq!((status, res["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_long_polls_and_expires() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let url = server.url(&format!("/_matrix/client/v3/sync?timeout=10000&since={since}"));
    let (http, token) = (server.http.clone(), bob.token.clone());
    let poll = tokio::spawn(async move {
        let body: Value = http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        (Instant::now(), body)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let typing_path = r(&room, &format!("/typing/{}", enc(&alice.user_id)));
    let started = Instant::now();
    let (status, _) =
        server.put(&typing_path, Some(&alice.token), json!({ "typing": true, "timeout": 1500 })).await;
    assert_eq!(status, 200);
    let (woke, body) = poll.await.unwrap();
    assert!(woke.duration_since(started) < Duration::from_millis(500));
    let typing = ephemeral(&body, &room, "m.typing").expect("typing event");
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
    let since = body["next_batch"].as_str().unwrap().to_owned();

    // It expires on its own; the next sync says nobody is typing.
    let sync = server.sync(&bob, Some(&since), 5000).await;
    let typing = ephemeral(&sync, &room, "m.typing").expect("typing stopped");
    assert_eq!(typing["content"]["user_ids"], json!([]));

    let (status, _) =
        server.put(&typing_path, Some(&bob.token), json!({ "typing": true, "timeout": 100 })).await;
    assert_eq!(status, 403, "typing for someone else");
    let carol = server.register("carol").await;
    let (status, _) = server
        .put(
            &r(&room, &format!("/typing/{}", enc(&carol.user_id))),
            Some(&carol.token),
            json!({ "typing": true, "timeout": 100 }),
        )
        .await;
    assert_eq!(status, 403, "typing in a room one is not in");

    // No timeout: 30 seconds, as Synapse takes it; a body without `typing` is refused.
    let (status, body) = server.put(&typing_path, Some(&alice.token), json!({ "typing": true })).await;
    assert_eq!(status, 200, "{body}");
    let sync = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(
        ephemeral(&sync, &room, "m.typing").expect("typing")["content"]["user_ids"],
        json!([alice.user_id])
    );
    let (status, body) = server.put(&typing_path, Some(&alice.token), json!({ "timeout": 10 })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    assert_eq!(server.put(&typing_path, None, json!({ "typing": false })).await.0, 401);
}

#[tokio::test]
async fn push_rules_can_be_read_changed_and_mute_a_room() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let (status, all) = server.get("/_matrix/client/v3/pushrules/", Some(&bob.token)).await;
    assert_eq!(status, 200);
    assert!(all["global"]["override"].as_array().unwrap().iter().any(|r| r["rule_id"] == ".m.rule.master"));
    let (_, master) = server
        .get("/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", Some(&bob.token))
        .await;
    assert_eq!(master["enabled"], false);

    // A room rule without notify actions mutes the room.
    let path = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room));
    let (status, body) = server.put(&path, Some(&bob.token), json!({ "actions": [] })).await;
    assert_eq!(status, 200, "{body}");
    let (_, rule) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(rule["rule_id"], room.as_str());
    let initial = server.sync(&bob, None, 0).await;
    // The changed rules reach the client as account data.
    let stored = initial["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .cloned()
        .unwrap();
    assert!(
        stored["content"]["global"]["room"].as_array().unwrap().iter().any(|r| r["rule_id"] == room.as_str())
    );
    let since = initial["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "muted").await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 0);

    let (status, _) = server.request(reqwest::Method::DELETE, &path, Some(&bob.token), None).await;
    assert_eq!(status, 200);
    let (status, _) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.custom",
            Some(&bob.token),
            json!({ "actions": [] }),
        )
        .await;
    assert_eq!(status, 400, "rule ids starting with a dot are reserved");
    let (status, _) = server
        .put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            Some(&bob.token),
            json!({ "enabled": true }),
        )
        .await;
    assert_eq!(status, 200);
    // With the room rule gone, a message notifies; with the master rule on, nothing does.
    let since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "after master").await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 0, "master rule mutes");
    let (status, _) = server
        .put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            Some(&bob.token),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    server.send_text(&alice, &room, "audible").await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 1);
}

#[tokio::test]
async fn notifications_list_and_highlights() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    server.send_text(&alice, &room, "plain").await;
    server
        .put(
            &r(&room, "/send/m.room.message/hl"),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "ping", "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
    let (status, list) = server.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert_eq!(status, 200);
    let notes = list["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["event"]["content"]["body"], "ping", "newest first");
    assert_eq!(notes[0]["read"], false);
    assert_eq!(notes[0]["room_id"], room.as_str());
    let (_, only) = server.get("/_matrix/client/v3/notifications?only=highlight", Some(&bob.token)).await;
    assert_eq!(only["notifications"].as_array().unwrap().len(), 1);
    let (_, page) = server.get("/_matrix/client/v3/notifications?limit=1", Some(&bob.token)).await;
    let next = page["next_token"].as_str().unwrap();
    let (_, rest) =
        server.get(&format!("/_matrix/client/v3/notifications?limit=1&from={next}"), Some(&bob.token)).await;
    assert_eq!(rest["notifications"][0]["event"]["content"]["body"], "plain");
}

#[tokio::test]
async fn unread_counts_start_at_the_join_and_survive_profile_changes() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    server.invite(&alice, &room, &bob.user_id).await;
    // The invite notifies bob (it is in /notifications) ...
    let (_, notifications) = server.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert_eq!(notifications["notifications"].as_array().unwrap().len(), 1, "{notifications}");
    server.join(&bob, &room).await;
    // ... but once he joined, only what came after counts.
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 0);
    server.send_text(&alice, &room, "one").await;
    server.send_text(&alice, &room, "two").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(server.put(&path, Some(&bob.token), json!({ "displayname": "Robert" })).await.0, 200);
    let sync = server.sync(&bob, None, 0).await;
    assert_eq!(
        joined(&sync, &room)["unread_notifications"]["notification_count"],
        2,
        "a rename keeps the badge"
    );
}

#[tokio::test]
async fn one_message_many_outcomes_in_a_bigger_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let mut members = Vec::new();
    for name in ["plain1", "plain2", "muted", "mentioned", "named", "late"] {
        let user = server.register(name).await;
        if name != "late" {
            server.join(&user, &room).await;
        }
        members.push(user);
    }
    let [plain1, plain2, muted, mentioned, named, late] = &members[..] else { unreachable!() };
    let path = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room));
    assert_eq!(server.put(&path, Some(&muted.token), json!({ "actions": [] })).await.0, 200);
    // `named` watches for a keyword (a custom content rule), as one would for a nickname.
    let keyword = "/_matrix/client/v3/pushrules/global/content/nickname";
    let rule = json!({ "pattern": "zebedee", "actions": ["notify", { "set_tweak": "highlight" }] });
    assert_eq!(server.put(keyword, Some(&named.token), rule).await.0, 200);

    // One plain message, one mentioning `mentioned` (m.mentions), one with the keyword.
    server.send_text(&alice, &room, "hello everyone").await;
    let mention = json!({ "msgtype": "m.text", "body": "over to you", "m.mentions": { "user_ids": [mentioned.user_id] } });
    assert_eq!(server.put(&r(&room, "/send/m.room.message/m1"), Some(&alice.token), mention).await.0, 200);
    server.send_text(&alice, &room, "ask zebedee about it").await;
    server.join(late, &room).await;

    let counts = |sync: &Value| {
        let c = &joined(sync, &room)["unread_notifications"];
        (c["notification_count"].as_u64().unwrap_or(99), c["highlight_count"].as_u64().unwrap_or(99))
    };
    for (user, expected) in [
        (plain1, (3, 0)),
        (plain2, (3, 0)),
        (muted, (0, 0)),
        (mentioned, (3, 1)),
        (named, (3, 1)),
        (late, (0, 0)),
        (&alice, (0, 0)),
    ] {
        let sync = server.sync(user, None, 0).await;
        assert_eq!(counts(&sync), expected, "{}", user.user_id);
    }
    // The notification list agrees: plain members get all three, the muted one none.
    let (_, list) = server.get("/_matrix/client/v3/notifications", Some(&plain1.token)).await;
    assert_eq!(list["notifications"].as_array().unwrap().len(), 3, "{list}");
    let (_, list) =
        server.get("/_matrix/client/v3/notifications?only=highlight", Some(&mentioned.token)).await;
    assert_eq!(list["notifications"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = server.get("/_matrix/client/v3/notifications", Some(&muted.token)).await;
    assert!(list["notifications"].as_array().unwrap().is_empty(), "{list}");
}

#[tokio::test]
async fn threaded_receipts_clear_their_own_thread_and_recall_clears_the_badge() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let root = server.send_text(&alice, &room, "root").await;
    let mut replies = Vec::new();
    for i in 0..2 {
        let reply = json!({ "msgtype": "m.text", "body": format!("reply {i}"),
                            "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
        let (status, res) =
            server.put(&r(&room, &format!("/send/m.room.message/th{i}")), Some(&alice.token), reply).await;
        assert_eq!(status, 200, "{res}");
        replies.push(res["event_id"].as_str().unwrap().to_owned());
    }
    let main_msg = server.send_text(&alice, &room, "main timeline").await;
    let threaded_filter =
        enc(&json!({ "room": { "timeline": { "unread_thread_notifications": true } } }).to_string());
    let counts = |sync: &Value| {
        let room = joined(sync, &room);
        let main = &room["unread_notifications"]["notification_count"];
        let thread = &room["unread_thread_notifications"][&root]["notification_count"];
        (main.as_u64().unwrap_or(0), thread.as_u64().unwrap_or(0))
    };
    let threaded_sync = || async {
        server.get(&format!("/_matrix/client/v3/sync?filter={threaded_filter}"), Some(&bob.token)).await.1
    };
    assert_eq!(counts(&threaded_sync().await), (2, 2), "root and main message; two replies");

    // A receipt in the thread reads the thread up to there, and nothing in the main timeline.
    let path = r(&room, &format!("/receipt/m.read/{}", enc(&replies[0])));
    assert_eq!(server.post(&path, Some(&bob.token), json!({ "thread_id": root })).await.0, 200);
    assert_eq!(counts(&threaded_sync().await), (2, 1));
    // A `main` receipt reads the main timeline, not the thread.
    let path = r(&room, &format!("/receipt/m.read/{}", enc(&main_msg)));
    assert_eq!(server.post(&path, Some(&bob.token), json!({ "thread_id": "main" })).await.0, 200);
    assert_eq!(counts(&threaded_sync().await), (0, 1));
    // A client that does not split by thread sees the one unread reply in the room's count.
    assert_eq!(
        joined(&server.sync(&bob, None, 0).await, &room)["unread_notifications"]["notification_count"],
        1
    );
    let (_, list) = server.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    let unread: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["read"] == false)
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(unread, vec![replies[1].as_str()], "{list}");

    // Recalling the unread reply clears its badge.
    let (status, _) = server
        .put(&r(&room, &format!("/redact/{}/recall", enc(&replies[1]))), Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&threaded_sync().await), (0, 0));
    let (_, list) = server.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert!(
        list["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["event"]["event_id"] != replies[1].as_str())
    );
}

/// Rule ids are kept as sent (a room rule named like an alias, as Synapse keeps it), listed
/// per kind with a trailing slash, placed by `before`/`after`; such a rule never stops the
/// other rules from applying; malformed paths and bodies are 400s, unknown rules 404s.
#[tokio::test]
async fn push_rules_keep_free_form_ids_and_refuse_malformed_paths() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let rules = "/_matrix/client/v3/pushrules";
    let put = |path: String, body: Value| {
        let (server, token) = (&server, bob.token.clone());
        async move { server.put(&format!("{rules}{path}"), Some(&token), body).await }
    };
    for id in ["#a:example.com", "#b:example.com"] {
        let (status, body) =
            put(format!("/global/room/{}", enc(id)), json!({ "actions": ["dont_notify"] })).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = put(
        format!("/global/room/{}?after={}", enc("#c:example.com"), enc("#b:example.com")),
        json!({ "actions": [] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, list) = server.get(&format!("{rules}/global/room/"), Some(&bob.token)).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list.as_array().unwrap().iter().filter_map(|r| r["rule_id"].as_str()).collect();
    assert_eq!(ids, ["#b:example.com", "#c:example.com", "#a:example.com"], "{list}");
    let (status, rule) =
        server.get(&format!("{rules}/global/room/{}", enc("#a:example.com")), Some(&bob.token)).await;
    assert_eq!(
        (status, rule["enabled"].as_bool(), rule["default"].as_bool()),
        (200, Some(true), Some(false)),
        "{rule}"
    );
    let (status, actions) =
        server.get(&format!("{rules}/global/room/{}/actions", enc("#a:example.com")), Some(&bob.token)).await;
    assert_eq!((status, actions), (200, json!({ "actions": ["dont_notify"] })));

    // Rules that cannot apply to a room do not stop the others: a message still notifies.
    let since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "still heard").await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 1, "{sync}");

    // Malformed paths and bodies: 400; an unknown rule: 404; no trailing slash: 404.
    for (path, body) in [
        ("/".to_owned(), json!({})),
        ("/not_a_scope/room/x".into(), json!({ "actions": [] })),
        ("/global".into(), json!({})),
        ("/global/room".into(), json!({})),
        ("/global/room/".into(), json!({})),
        ("/global/not_a_template/foo".into(), json!({ "actions": [] })),
        (format!("/global/room/{}", enc("#fo\\o:example.com")), json!({ "actions": [] })),
        ("/global/override/my_id".into(), json!({ "actions": [] })),
        ("/global/underride/my_id".into(), json!({ "actions": [], "conditions": [{}] })),
        ("/global/content/my_id".into(), json!({ "actions": [] })),
        ("/global/room/x".into(), json!({})),
        ("/global/room/x".into(), json!({ "actions": ["not_an_action"] })),
        ("/global/override/.m.rule.master/not_an_attr".into(), json!({ "enabled": true })),
        ("/global/override/.m.rule.master/enabled".into(), json!({ "enabled": "not a boolean" })),
    ] {
        let (status, answer) = put(path.clone(), body).await;
        assert_eq!(status, 400, "PUT {path}: {answer}");
    }
    for path in [
        "/global",
        "/global/room",
        "/not_a_scope/",
        "/global/not_a_template/",
        "/global/override/.m.rule.master/x",
    ] {
        let (status, answer) = server.get(&format!("{rules}{path}"), Some(&bob.token)).await;
        assert_eq!(status, 400, "GET {path}: {answer}");
    }
    assert_eq!(server.get(&format!("{rules}/global/override/not_a_rule"), Some(&bob.token)).await.0, 404);
    assert_eq!(server.get(rules, Some(&bob.token)).await.0, 404);
    let missing_anchor = format!("/global/room/x?before={}", enc("#nowhere:example.com"));
    assert_eq!(put(missing_anchor, json!({ "actions": [] })).await.0, 404);
    assert_eq!(server.get(&format!("{rules}/global/room/"), None).await.0, 401);
}
