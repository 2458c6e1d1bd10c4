//! Edits, reactions, threads and references over raw HTTP: sending them, the bundled
//! aggregations in `unsigned.m.relations`, `/relations` with pagination and `recurse`,
//! `/threads`, and redaction removing relations.

use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc, rand_u64};

fn r(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

fn v1(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}{rest}", enc(room))
}

async fn send(server: &TestServer, user: &User, room: &str, ty: &str, content: Value) -> (u16, Value) {
    server.put(&r(room, &format!("/send/{ty}/t{}", rand_u64())), Some(&user.token), content).await
}

async fn send_ok(server: &TestServer, user: &User, room: &str, ty: &str, content: Value) -> String {
    let (status, body) = send(server, user, room, ty, content).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn edit(server: &TestServer, user: &User, room: &str, target: &str, body: &str) -> String {
    let content = json!({
        "msgtype": "m.text", "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": target },
    });
    send_ok(server, user, room, "m.room.message", content).await
}

async fn react(server: &TestServer, user: &User, room: &str, target: &str, key: &str) -> (u16, Value) {
    let content = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } });
    send(server, user, room, "m.reaction", content).await
}

async fn reply_in_thread(
    server: &TestServer,
    user: &User,
    room: &str,
    root: &str,
    body: &str,
) -> (u16, Value) {
    let content = json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                          "m.in_reply_to": { "event_id": root } },
    });
    send(server, user, room, "m.room.message", content).await
}

async fn get_event(server: &TestServer, user: &User, room: &str, id: &str) -> Value {
    let (status, body) = server.get(&r(room, &format!("/event/{}", enc(id))), Some(&user.token)).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn edits_bundle_the_latest_valid_replacement() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let original = server.send_text(&alice, &room, "helo").await;
    edit(&server, &alice, &room, &original, "hello").await;
    let latest = edit(&server, &alice, &room, &original, "hello!").await;
    // Only the original sender may edit: bob's "edit" is not the replacement.
    edit(&server, &bob, &room, &original, "hacked").await;

    let event = get_event(&server, &bob, &room, &original).await;
    let replace = &event["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], latest.as_str(), "{event}");
    assert_eq!(replace["content"]["m.new_content"]["body"], "hello!");
    // The original content is served unchanged; clients apply the edit.
    assert_eq!(event["content"]["body"], "helo");

    // The same bundle comes through /sync and /messages.
    let sync = server.sync(&bob, None, 0).await;
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    let synced = timeline.iter().find(|e| e["event_id"] == original.as_str()).expect("original in timeline");
    assert_eq!(synced["unsigned"]["m.relations"]["m.replace"]["event_id"], latest.as_str());
    let (_, page) = server.get(&r(&room, "/messages?dir=b&limit=20"), Some(&bob.token)).await;
    let paged =
        page["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == original.as_str()).unwrap();
    assert_eq!(paged["unsigned"]["m.relations"]["m.replace"]["event_id"], latest.as_str());

    // Redacting the latest edit falls back to the one before it.
    let (status, _) =
        server.put(&r(&room, &format!("/redact/{}/red1", enc(&latest))), Some(&alice.token), json!({})).await;
    assert_eq!(status, 200);
    let event = get_event(&server, &bob, &room, &original).await;
    assert_eq!(event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"], "hello");
    // A redacted event carries no aggregations.
    let (status, _) = server
        .put(&r(&room, &format!("/redact/{}/red2", enc(&original))), Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let event = get_event(&server, &bob, &room, &original).await;
    assert!(event["unsigned"].get("m.relations").is_none(), "{event}");
}

#[tokio::test]
async fn reactions_are_one_per_user_and_key_and_listed_by_relations() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let message = server.send_text(&alice, &room, "lunch?").await;
    let (status, thumbs) = react(&server, &bob, &room, &message, "👍").await;
    assert_eq!(status, 200);
    let (status, body) = react(&server, &bob, &room, &message, "👍").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_DUPLICATE_ANNOTATION")), "{body}");
    assert_eq!(react(&server, &alice, &room, &message, "👍").await.0, 200);
    assert_eq!(react(&server, &bob, &room, &message, "🍕").await.0, 200);
    // The same key in an annotation of another event type is a different annotation.
    let vote = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": message, "key": "👍" } });
    assert_eq!(send(&server, &bob, &room, "org.example.vote", vote.clone()).await.0, 200);
    let (status, body) = send(&server, &bob, &room, "org.example.vote", vote).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_DUPLICATE_ANNOTATION")), "{body}");

    let (status, body) =
        server.get(&v1(&room, &format!("/relations/{}", enc(&message))), Some(&bob.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"].as_array().unwrap().len(), 4);
    let (_, body) = server
        .get(&v1(&room, &format!("/relations/{}/m.annotation/m.reaction", enc(&message))), Some(&bob.token))
        .await;
    assert_eq!(body["chunk"].as_array().unwrap().len(), 3);
    assert!(
        body["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "m.reaction" && e["room_id"] == room.as_str())
    );
    let (_, body) =
        server.get(&v1(&room, &format!("/relations/{}/m.replace", enc(&message))), Some(&bob.token)).await;
    assert!(body["chunk"].as_array().unwrap().is_empty());

    // Taking a reaction back (redacting it) removes it, and the key can be used again.
    let thumbs = thumbs["event_id"].as_str().unwrap();
    let (status, _) =
        server.put(&r(&room, &format!("/redact/{}/undo", enc(thumbs))), Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    let (_, body) = server.get(&v1(&room, &format!("/relations/{}", enc(&message))), Some(&bob.token)).await;
    assert!(!ids(&body["chunk"]).contains(&thumbs.to_owned()));
    assert_eq!(body["chunk"].as_array().unwrap().len(), 3);
    assert_eq!(react(&server, &bob, &room, &message, "👍").await.0, 200);

    // Relations must stay in their room.
    let other = server.create_room(&bob, json!({})).await;
    let (status, body) = react(&server, &bob, &other, &message, "👀").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
}

#[tokio::test]
async fn relations_paginate_both_ways_and_recurse() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let root = server.send_text(&alice, &room, "root").await;
    let mut replies = Vec::new();
    for i in 0..5 {
        let (status, body) = reply_in_thread(&server, &bob, &room, &root, &format!("reply {i}")).await;
        assert_eq!(status, 200, "{body}");
        replies.push(body["event_id"].as_str().unwrap().to_owned());
    }

    // Newest first, two at a time, no repeats, no gaps.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..5 {
        let mut path = format!("/relations/{}/m.thread?limit=2", enc(&root));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = server.get(&v1(&room, &path), Some(&alice.token)).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = replies.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    // Oldest first.
    let (_, page) = server
        .get(&v1(&room, &format!("/relations/{}?dir=f&limit=10", enc(&root))), Some(&alice.token))
        .await;
    assert_eq!(ids(&page["chunk"]), replies);
    assert!(page.get("next_batch").is_none());

    // A reaction to a reply is found from the root only with recurse.
    let (status, reaction) = react(&server, &alice, &room, &replies[0], "❤").await;
    assert_eq!(status, 200);
    let reaction = reaction["event_id"].as_str().unwrap().to_owned();
    let (_, flat) =
        server.get(&v1(&room, &format!("/relations/{}?limit=50", enc(&root))), Some(&alice.token)).await;
    assert!(!ids(&flat["chunk"]).contains(&reaction));
    let (_, deep) = server
        .get(&v1(&room, &format!("/relations/{}?limit=50&recurse=true", enc(&root))), Some(&alice.token))
        .await;
    assert!(ids(&deep["chunk"]).contains(&reaction), "{deep}");
    assert_eq!(deep["recursion_depth"], 3);

    // Unknown events, other rooms' events and bad tokens.
    let (status, body) = server.get(&v1(&room, "/relations/$nope"), Some(&alice.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let private = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let secret = server.send_text(&alice, &private, "secret").await;
    let (status, _) =
        server.get(&v1(&private, &format!("/relations/{}", enc(&secret))), Some(&bob.token)).await;
    assert_eq!(status, 404);
    let (status, body) =
        server.get(&v1(&room, &format!("/relations/{}?from=garbage", enc(&root))), Some(&alice.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
}

#[tokio::test]
async fn threads_have_summaries_and_are_listed() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let carol = server.register("carol").await;
    server.join(&carol, &room).await;
    let first_root = server.send_text(&alice, &room, "first topic").await;
    let second_root = server.send_text(&bob, &room, "second topic").await;
    reply_in_thread(&server, &bob, &room, &first_root, "on first").await;
    reply_in_thread(&server, &bob, &room, &second_root, "on second").await;
    let (_, last) = reply_in_thread(&server, &bob, &room, &first_root, "first again").await;
    let last = last["event_id"].as_str().unwrap().to_owned();

    // The root's bundled thread summary.
    let root = get_event(&server, &alice, &room, &first_root).await;
    let summary = &root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 2, "{root}");
    assert_eq!(summary["latest_event"]["event_id"], last.as_str());
    assert_eq!(summary["current_user_participated"], true, "alice started the thread");
    let as_carol = get_event(&server, &carol, &room, &first_root).await;
    assert_eq!(as_carol["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], false);

    // Threads by latest activity; "participated" only those the user is in.
    let (status, list) = server.get(&v1(&room, "/threads"), Some(&carol.token)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list["chunk"]), vec![first_root.clone(), second_root.clone()]);
    assert_eq!(list["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let (_, page) = server.get(&v1(&room, "/threads?limit=1"), Some(&carol.token)).await;
    assert_eq!(ids(&page["chunk"]), vec![first_root.clone()]);
    let next = page["next_batch"].as_str().expect("a next page").to_owned();
    let (_, page) =
        server.get(&v1(&room, &format!("/threads?limit=1&from={}", enc(&next))), Some(&carol.token)).await;
    assert_eq!(ids(&page["chunk"]), vec![second_root.clone()]);
    let (_, mine) = server.get(&v1(&room, "/threads?include=participated"), Some(&alice.token)).await;
    assert_eq!(ids(&mine["chunk"]), vec![first_root.clone()]);
    let (_, none) = server.get(&v1(&room, "/threads?include=participated"), Some(&carol.token)).await;
    assert!(ids(&none["chunk"]).is_empty());

    // No thread from inside a thread; outsiders of a private room cannot list its threads.
    let (status, body) = reply_in_thread(&server, &alice, &room, &last, "nested").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    let private = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let (status, _) = server.get(&v1(&private, "/threads"), Some(&carol.token)).await;
    assert_eq!(status, 403);

    // Redacting the latest reply moves the summary back to the previous one.
    let (status, _) =
        server.put(&r(&room, &format!("/redact/{}/red", enc(&last))), Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    let root = get_event(&server, &alice, &room, &first_root).await;
    let summary = &root["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(
        (summary["count"].as_u64(), summary["latest_event"]["content"]["body"].as_str()),
        (Some(1), Some("on first"))
    );
    // A recalled root takes its thread out of the list.
    let (status, _) = server
        .put(&r(&room, &format!("/redact/{}/red2", enc(&second_root))), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, list) = server.get(&v1(&room, "/threads"), Some(&carol.token)).await;
    assert_eq!(ids(&list["chunk"]), vec![first_root.clone()], "{list}");
}

#[tokio::test]
async fn references_are_bundled() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let poll = server.send_text(&alice, &room, "poll: tea or coffee?").await;
    let vote = send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "tea", "m.relates_to": { "rel_type": "m.reference", "event_id": poll } }),
    )
    .await;
    let event = get_event(&server, &alice, &room, &poll).await;
    assert_eq!(event["unsigned"]["m.relations"]["m.reference"], json!({ "chunk": [{ "event_id": vote }] }));
}
