//! Everyday chat features through an unmodified Matrix client library (matrix-sdk), the way an
//! Element-style client uses them: a DM, unread counts cleared by a read receipt, typing, a
//! favourite, an edit, reactions (duplicates refused), a thread, a recalled message, ignoring
//! someone, and finding people in the user directory.

use std::time::Duration;

use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    room::{IncludeRelations, RelationsOptions},
    ruma::{
        OwnedEventId, OwnedRoomId, RoomId,
        api::client::receipt::create_receipt::v3::ReceiptType,
        events::{receipt::ReceiptThread, tag::TagName},
    },
    sync::SyncResponse,
};
use serde_json::{Value, json};

use crate::{harness::TestServer, sdk::register};

async fn sync(client: &Client) -> SyncResponse {
    client.sync_once(SyncSettings::new().timeout(Duration::from_millis(200))).await.expect("sync")
}

/// Syncs until `check` holds (a few seconds at most).
async fn sync_until(client: &Client, what: &str, mut check: impl FnMut(&SyncResponse) -> bool) {
    for _ in 0..25 {
        if check(&sync(client).await) {
            return;
        }
    }
    panic!("never saw: {what}");
}

async fn raw_event(room: &Room, id: &OwnedEventId) -> Value {
    let event = room.event(id, None).await.expect("event");
    serde_json::from_str(event.raw().json().get()).unwrap()
}

async fn send_json(room: &Room, ty: &str, content: Value) -> matrix_sdk::Result<OwnedEventId> {
    room.send_raw(ty, content).await.map(|r| r.response.event_id)
}

fn has_ephemeral(response: &SyncResponse, room: &RoomId, ty: &str, needle: &str) -> bool {
    response.rooms.joined.get(room).is_some_and(|r| {
        r.ephemeral.iter().any(|e| {
            let json = e.json().get();
            json.contains(&format!("\"type\":\"{ty}\"")) && json.contains(needle)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_style_session() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let bob_id = bob.user_id().unwrap().to_owned();
    let carol_id = carol.user_id().unwrap().to_owned();

    // Finding bob in the user directory once they share a room.
    let found = alice.search_users("bob", 10).await.expect("directory");
    assert!(found.results.is_empty(), "bob shares no room with alice yet");

    // A DM: alice opens it, bob sees the invite and joins.
    let dm = alice.create_dm(&bob_id).await.expect("create dm");
    let dm_id: OwnedRoomId = dm.room_id().to_owned();
    sync_until(&bob, "the DM invite", |r| r.rooms.invited.contains_key(&dm_id)).await;
    bob.join_room_by_id(&dm_id).await.expect("join dm");
    sync(&alice).await;
    assert!(dm.is_direct().await.unwrap(), "alice's client records the room as a DM");
    let found = alice.search_users("bob", 10).await.expect("directory");
    assert_eq!(found.results.iter().map(|u| u.user_id.clone()).collect::<Vec<_>>(), vec![bob_id.clone()]);

    // Unread badge: two messages for bob; his read receipt clears it.
    let first =
        send_json(&dm, "m.room.message", json!({ "msgtype": "m.text", "body": "lunch?" })).await.unwrap();
    let second =
        send_json(&dm, "m.room.message", json!({ "msgtype": "m.text", "body": "at noon" })).await.unwrap();
    let bob_dm = bob.get_room(&dm_id).expect("bob's dm");
    sync_until(&bob, "two unread", |_| bob_dm.unread_notification_counts().notification_count == 2).await;
    bob_dm.send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, second.clone()).await.unwrap();
    sync_until(&bob, "badge cleared", |_| bob_dm.unread_notification_counts().notification_count == 0).await;
    sync_until(&alice, "bob's receipt", |r| has_ephemeral(r, &dm_id, "m.receipt", bob_id.as_str())).await;

    // Typing.
    bob_dm.typing_notice(true).await.unwrap();
    sync_until(&alice, "bob typing", |r| has_ephemeral(r, &dm_id, "m.typing", bob_id.as_str())).await;

    // Pinning the chat.
    dm.set_is_favourite(true, Some(0.5)).await.unwrap();
    let mut pinned = false;
    for _ in 0..10 {
        sync(&alice).await;
        if dm.tags().await.unwrap().is_some_and(|t| t.contains_key(&TagName::Favorite)) {
            pinned = true;
            break;
        }
    }
    assert!(pinned, "the favourite tag reached alice's client");

    // An edit, bundled with the original.
    let edit = send_json(
        &dm,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "* lunch at 1?", "m.new_content": { "msgtype": "m.text", "body": "lunch at 1?" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": first } }),
    )
    .await
    .unwrap();
    let original = raw_event(&bob_dm, &first).await;
    assert_eq!(original["unsigned"]["m.relations"]["m.replace"]["event_id"], edit.as_str(), "{original}");

    // Reactions: one per key; a second identical one is refused.
    let reaction = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": first, "key": "👍" } });
    send_json(&bob_dm, "m.reaction", reaction.clone()).await.expect("first reaction");
    let err = send_json(&bob_dm, "m.reaction", reaction).await.expect_err("duplicate reaction");
    let api_error = err.as_client_api_error().expect("a Matrix error");
    assert_eq!(api_error.status_code.as_u16(), 400);
    assert!(format!("{api_error:?}").contains("kind: DuplicateAnnotation"), "{api_error:?}");
    let options =
        RelationsOptions { include_relations: IncludeRelations::AllRelations, ..Default::default() };
    let relations = bob_dm.relations(first.clone(), options).await.expect("relations");
    assert_eq!(relations.chunk.len(), 2, "the edit and the reaction");

    // A thread with a summary on its root.
    let reply = send_json(
        &bob_dm,
        "m.room.message",
        json!({ "msgtype": "m.text", "body": "sure", "m.relates_to": { "rel_type": "m.thread", "event_id": second } }),
    )
    .await
    .unwrap();
    let root = raw_event(&dm, &second).await;
    assert_eq!(root["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], reply.as_str());
    assert_eq!(root["unsigned"]["m.relations"]["m.thread"]["count"], 1);

    // Recalling a message.
    dm.redact(&edit, Some("typo"), None).await.expect("redact");
    let recalled = raw_event(&bob_dm, &edit).await;
    assert!(recalled["content"].as_object().unwrap().is_empty(), "{recalled}");
    assert!(recalled["unsigned"]["redacted_because"].is_object());

    // Ignoring carol: her messages in a shared room stop reaching alice.
    let group = alice
        .create_room(matrix_sdk::ruma::api::client::room::create_room::v3::Request::new())
        .await
        .expect("group");
    let group_id = group.room_id().to_owned();
    group.invite_user_by_id(&carol_id).await.unwrap();
    sync_until(&carol, "group invite", |r| r.rooms.invited.contains_key(&group_id)).await;
    carol.join_room_by_id(&group_id).await.unwrap();
    alice.account().ignore_user(&carol_id).await.expect("ignore");
    let carol_group = carol.get_room(&group_id).expect("carol's group");
    sync(&carol).await;
    send_json(&carol_group, "m.room.message", json!({ "msgtype": "m.text", "body": "spam spam" }))
        .await
        .unwrap();
    group.send_raw("m.room.message", json!({ "msgtype": "m.text", "body": "from alice" })).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let response = sync(&alice).await;
        if let Some(update) = response.rooms.joined.get(&group_id) {
            for event in &update.timeline.events {
                let json: Value = serde_json::from_str(event.raw().json().get()).unwrap();
                if let Some(body) = json["content"]["body"].as_str() {
                    seen.push(body.to_owned());
                }
            }
        }
        if seen.contains(&"from alice".to_owned()) {
            break;
        }
    }
    assert!(seen.contains(&"from alice".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"spam spam".to_owned()), "{seen:?}");
}
