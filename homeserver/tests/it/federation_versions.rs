//! Older room versions across Lattice servers: versions 1 to 5 federate end to end, version 1
//! and 2 events name their ids and reference their prev and auth events with hashes, and the
//! deprecated v1 `send_join`, `send_leave` and `invite` endpoints work (and check) as v2 does;
//! concurrent state changes converge under state resolution v1 (and v2); an id a server chose
//! cannot be reused for another event, nor name a server that did not sign it.

use federation::legacy::{EventRequest, InviteV1, SendJoinV1, SendLeaveV1};
use homeserver_core::keys::ServerKey;
use ruma::{
    RoomId, RoomVersionId, UserId,
    api::federation::membership::{prepare_join_event, prepare_leave_event},
};
use serde_json::{Value, json};

use crate::{
    federation::{
        TestCa, federated, message, name_of, pdu_and_id, remote_event, send_transaction, wait_for_body,
    },
    federation_membership::{status_of, wait_membership, wait_section},
    harness::enc,
};

#[tokio::test]
async fn rooms_of_versions_1_to_5_federate() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    for version in ["1", "2", "3", "4", "5"] {
        let body = json!({ "preset": "public_chat", "room_version": version, "name": format!("v{version}") });
        let room = b.create_room(&alice, body).await;
        let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
        let (status, body) = a.post(&join, Some(&ann.token), json!({})).await;
        assert_eq!(status, 200, "version {version}: {body}");
        let sent = b.send_text(&alice, &room, &format!("hello v{version}")).await;
        wait_for_body(&a, &ann, &room, &format!("hello v{version}")).await;
        let reply = a.send_text(&ann, &room, &format!("reply v{version}")).await;
        wait_for_body(&b, &alice, &room, &format!("reply v{version}")).await;
        // Versions 1 and 2 name events after the server that made them.
        let named = matches!(version, "1" | "2");
        assert_eq!(sent.ends_with(&format!(":{}", name_of(&b))), named, "{sent}");
        assert_eq!(reply.ends_with(&format!(":{}", name_of(&a))), named, "{reply}");
        // The room's state on A is the room's: its version and name.
        let (status, create) = a
            .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create/", enc(&room)), Some(&ann.token))
            .await;
        assert_eq!((status, create["room_version"].as_str()), (200, Some(version)), "{create}");
        let (status, name) = a
            .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)), Some(&ann.token))
            .await;
        assert_eq!((status, name["name"].as_str()), (200, Some(format!("v{version}").as_str())), "{name}");
    }
}

/// Signs a version 1 template as its server would: the server names the event.
fn sign_v1(key: &ServerKey, template: &Value, local: &str) -> (Value, ruma::OwnedEventId) {
    let id = ruma::EventId::parse(format!("${local}:{}", key.server_name())).unwrap();
    (resign_as(key, template.clone(), id.as_str()), id)
}

#[tokio::test]
async fn the_v1_membership_endpoints_join_leave_and_invite() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat", "room_version": "1" })).await;
    let room_id = RoomId::parse(&room).unwrap();
    let client = &a.server.federation.client;
    let key = &a.server.federation.key;
    let user = UserId::parse(&ann.user_id).unwrap();

    // A version 1 template references its prev and auth events with their hashes.
    let ask = prepare_join_event::v1::Request::new(room_id.clone(), user.clone());
    let made = client.send(&name_of(&b), ask).await.expect("a template");
    assert_eq!(made.room_version, Some(RoomVersionId::V1));
    let template: Value = serde_json::from_str(made.event.get()).unwrap();
    let prev = &template["prev_events"][0];
    assert!(prev[0].as_str().is_some_and(|id| id.ends_with(&format!(":{}", name_of(&b)))), "{template}");
    assert!(prev[1]["sha256"].as_str().is_some_and(|h| !h.is_empty()), "{template}");

    // A join whose path names another event is refused; the real one is answered [200, {...}].
    let (join, join_id) = sign_v1(key, &template, "join1");
    let pdu = serde_json::value::to_raw_value(&join).unwrap();
    let wrong = ruma::EventId::parse(format!("$other:{}", name_of(&a))).unwrap();
    let refused =
        client.send(&name_of(&b), EventRequest::<SendJoinV1>::new(room_id.clone(), wrong, pdu.clone())).await;
    assert_eq!(status_of(&refused), Some(400), "{:?}", refused.err());
    let answer = client
        .send(&name_of(&b), EventRequest::<SendJoinV1>::new(room_id.clone(), join_id, pdu))
        .await
        .expect("the v1 join is accepted")
        .0;
    let state = answer["state"].as_array().expect("state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{answer}");
    assert!(answer["auth_chain"].as_array().is_some_and(|c| !c.is_empty()), "{answer}");
    wait_membership(&b, &room, &ann.user_id, "join").await;

    // An unsigned leave is refused; a signed one through v1 takes effect.
    let ask = prepare_leave_event::v1::Request::new(room_id.clone(), user.clone());
    let made = client.send(&name_of(&b), ask).await.expect("a leave template");
    let template: Value = serde_json::from_str(made.event.get()).unwrap();
    let (mut leave, leave_id) = sign_v1(key, &template, "leave1");
    leave["signatures"] = json!({});
    let raw = serde_json::value::to_raw_value(&leave).unwrap();
    let unsigned =
        client.send(&name_of(&b), EventRequest::<SendLeaveV1>::new(room_id.clone(), leave_id, raw)).await;
    assert_eq!(status_of(&unsigned), Some(403), "{:?}", unsigned.ok().map(|a| a.0));
    let (leave, leave_id) = sign_v1(key, &template, "leave2");
    let raw = serde_json::value::to_raw_value(&leave).unwrap();
    let answer =
        client.send(&name_of(&b), EventRequest::<SendLeaveV1>::new(room_id.clone(), leave_id, raw)).await;
    assert_eq!(answer.expect("the v1 leave is accepted").0, json!({}));
    wait_membership(&b, &room, &ann.user_id, "leave").await;

    // A v1 invite (the event as the body, its room state in `unsigned`) is countersigned.
    let elsewhere = format!("!v1room:{}", name_of(&a));
    let invite = json!({
        "type": "m.room.member", "state_key": alice.user_id, "sender": ann.user_id,
        "room_id": elsewhere, "content": { "membership": "invite" },
        "origin_server_ts": homeserver_core::time::now_millis(),
        "prev_events": [], "auth_events": [], "depth": 3,
    });
    let (mut invite, invite_id) = sign_v1(key, &invite, "invite1");
    invite["unsigned"] = json!({ "invite_room_state": [
        { "type": "m.room.name", "state_key": "", "sender": ann.user_id, "content": { "name": "Old room" } },
    ] });
    let elsewhere_id = RoomId::parse(&elsewhere).unwrap();
    let raw = serde_json::value::to_raw_value(&invite).unwrap();
    let signed = client
        .send(&name_of(&b), EventRequest::<InviteV1>::new(elsewhere_id.clone(), invite_id, raw.clone()))
        .await
        .expect("the v1 invite is countersigned")
        .0;
    assert!(signed["event"]["signatures"].get(name_of(&b).as_str()).is_some(), "{signed}");
    let shown = wait_section(&b, &alice, "invite", &elsewhere).await;
    assert!(shown.to_string().contains("Old room"), "{shown}");
    // The same invite under another id is refused.
    let other = ruma::EventId::parse(format!("$invite2:{}", name_of(&a))).unwrap();
    let refused = client.send(&name_of(&b), EventRequest::<InviteV1>::new(elsewhere_id, other, raw)).await;
    assert_eq!(status_of(&refused), Some(400));
}

/// Joins Ann (of `a`) to a new room of `version` on `b` with the power to set its topic.
async fn shared_room(
    a: &crate::harness::TestServer,
    b: &crate::harness::TestServer,
    version: &str,
) -> (String, crate::harness::User, crate::harness::User) {
    let alice = b.register(&format!("alice{version}")).await;
    let ann = a.register(&format!("ann{version}")).await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat", "room_version": version })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);
    let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room));
    let (_, mut levels) = b.get(&levels_path, Some(&alice.token)).await;
    levels["users"][&ann.user_id] = json!(100);
    assert_eq!(b.put(&levels_path, Some(&alice.token), levels).await.0, 200);
    for _ in 0..100 {
        let (_, seen) = a.get(&levels_path, Some(&ann.token)).await;
        if seen["users"][&ann.user_id] == json!(100) {
            return (room, alice, ann);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("A never saw Ann's power level");
}

/// The room's current state on a server, as sorted (type, state key, event id) triples.
async fn state_of(server: &crate::harness::TestServer, room: &str) -> Vec<(String, String, String)> {
    let mut state = server.server.app.rooms.current_state_ids(&RoomId::parse(room).unwrap()).await.unwrap();
    state.sort();
    state
}

#[tokio::test]
async fn concurrent_state_changes_converge_under_both_resolution_algorithms() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    for version in ["1", "10"] {
        let (room, alice, ann) = shared_room(&a, &b, version).await;
        let ann_id = UserId::parse(&ann.user_id).unwrap();
        // A fork: a topic change of A's server built on B's current extremities, held back
        // while Alice changes the topic on B.
        let template = homeserver_rooms::builder::EventTemplate::state(
            "m.room.topic",
            "",
            &ann_id,
            json!({ "topic": "from A" }),
        );
        let (held, held_id) = pdu_and_id(remote_event(&b, &a.server.federation.key, &room, template).await);
        let topic_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room));
        assert_eq!(b.put(&topic_path, Some(&alice.token), json!({ "topic": "from B" })).await.0, 200);
        let (status, body) =
            send_transaction(&b, &a.server.federation.key, &format!("fork{version}"), &[held]).await;
        assert_eq!((status, &body["pdus"][&held_id]), (200, &json!({})), "{body}");
        // Alice's next message merges the fork; A fetches the held event through it.
        b.send_text(&alice, &room, &format!("merge v{version}")).await;
        wait_for_body(&a, &ann, &room, &format!("merge v{version}")).await;
        let on_b = state_of(&b, &room).await;
        let mut on_a = state_of(&a, &room).await;
        for _ in 0..50 {
            if on_a == on_b {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            on_a = state_of(&a, &room).await;
        }
        assert_eq!(on_a, on_b, "version {version}: the servers disagree on the room's state");
        let (_, topic) = a.get(&topic_path, Some(&ann.token)).await;
        assert!(["from A", "from B"].contains(&topic["topic"].as_str().unwrap_or_default()), "{topic}");
    }
}

/// Re-signs an event of a version 1 room as `key`'s server under the id `id`.
fn resign_as(key: &ServerKey, mut event: Value, id: &str) -> Value {
    let rules = RoomVersionId::V1.rules().unwrap();
    let object = event.as_object_mut().unwrap();
    object.remove("signatures");
    object.remove("hashes");
    object.insert("event_id".into(), json!(id));
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(event).unwrap();
    ruma::signatures::hash_and_sign_event(
        key.server_name().as_str(),
        key.pair(),
        &mut object,
        &rules.redaction,
    )
    .unwrap();
    serde_json::to_value(object).unwrap()
}

#[tokio::test]
async fn a_version_1_event_id_names_one_event_of_a_server_that_signed_it() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let (room, alice, ann) = shared_room(&a, &b, "1").await;
    let ann_id = UserId::parse(&ann.user_id).unwrap();
    let key = &a.server.federation.key;
    let (first, first_id) = pdu_and_id(remote_event(&b, key, &room, message(&ann_id, "first")).await);
    let (status, body) = send_transaction(&b, key, "reuse1", &[first]).await;
    assert_eq!((status, &body["pdus"][&first_id]), (200, &json!({})), "{body}");
    wait_for_body(&b, &alice, &room, "first").await;

    // Another event under the same id is dropped; the first stays what B holds and serves.
    let (second, _) = pdu_and_id(remote_event(&b, key, &room, message(&ann_id, "second")).await);
    let second = resign_as(key, second, &first_id);
    let (status, body) = send_transaction(&b, key, "reuse2", &[second]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&first_id]["error"].as_str().is_some_and(|e| e.contains("another event")), "{body}");
    let stored = b.server.db.event(&first_id).await.unwrap().unwrap();
    assert!(stored.json.contains("\"first\"") && !stored.json.contains("\"second\""), "{}", stored.json);

    // An id naming B, signed by A alone, is not A's to choose.
    let (third, _) = pdu_and_id(remote_event(&b, key, &room, message(&ann_id, "third")).await);
    let forged_id = format!("$forged:{}", name_of(&b));
    let third = resign_as(key, third, &forged_id);
    let (status, body) = send_transaction(&b, key, "forged1", &[third]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&forged_id]["error"].is_string(), "{body}");
    assert!(b.server.db.event(&forged_id).await.unwrap().is_none());
}
