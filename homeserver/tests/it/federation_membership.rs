//! Membership across Lattice servers: invites both ways (countersigned by the invitee's server,
//! shown with the room's stripped state, joined without `via`), rejections through the room's
//! server, leaves, and the invites a server refuses (forged, tampered, misaddressed, unknown
//! invitee, no create event in a version 12 invite's room state).

use std::time::Duration;

use ruma::{
    OwnedServerName, RoomVersionId,
    api::federation::membership::{RawStrippedState, create_invite},
};
use serde_json::{Value, json};

use crate::{
    federation::{TestCa, federated, name_of, sign_template, wait_for_body},
    harness::{TestServer, User, enc},
};

/// Polls `server`'s view of `user`'s membership of `room` until it is `expected`.
pub(crate) async fn wait_membership(server: &TestServer, room: &str, user: &str, expected: &str) {
    for _ in 0..60 {
        let membership = server.server.db.membership(room, user).await.unwrap();
        if membership.as_ref().is_some_and(|m| m.membership.as_str() == expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} never got membership {expected} of {room} on {}", name_of(server));
}

/// Syncs until the room shows up in the given section (`invite`, `join`, `leave`).
pub(crate) async fn wait_section(server: &TestServer, user: &User, section: &str, room: &str) -> Value {
    wait_section_since(server, user, section, room, None).await
}

/// [`wait_section`] from a sync token.
async fn wait_section_since(
    server: &TestServer,
    user: &User,
    section: &str,
    room: &str,
    mut since: Option<String>,
) -> Value {
    for _ in 0..40 {
        let sync = server.sync(user, since.as_deref(), 500).await;
        let entry = &sync["rooms"][section][room];
        if !entry.is_null() {
            return entry.clone();
        }
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{room} never reached the {section} section of {} on {}", user.user_id, name_of(server));
}

fn invite_path(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/invite", enc(room))
}

#[tokio::test]
async fn invites_cross_servers_both_ways_and_are_joined_or_rejected() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let amy = a.register("amy").await;
    let bob = b.register("bob").await;

    // Alice on B invites Ann on A: A countersigned it, Ann sees it with the room's name, and
    // joins with no via (through the inviter's server).
    let room = b.create_room(&alice, json!({ "preset": "private_chat", "name": "B's room" })).await;
    let (status, body) =
        b.post(&invite_path(&room), Some(&alice.token), json!({ "user_id": ann.user_id })).await;
    assert_eq!(status, 200, "{body}");
    let invite_event = b.server.db.membership(&room, &ann.user_id).await.unwrap().expect("invite on B");
    let stored = b.server.db.event(invite_event.event_id.as_str()).await.unwrap().unwrap();
    let signatures: Value = serde_json::from_str::<Value>(&stored.json).unwrap()["signatures"].clone();
    assert!(signatures.get(name_of(&a).as_str()).is_some(), "A countersigned: {signatures}");
    let invited = wait_section(&a, &ann, "invite", &room).await;
    let events = invited["invite_state"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "B's room"),
        "{invited}"
    );
    assert!(events.iter().any(|e| e["type"] == "m.room.create"), "{invited}");
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == ann.user_id),
        "{invited}"
    );
    let join = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    let (status, body) = a.post(&join, Some(&ann.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_membership(&b, &room, &ann.user_id, "join").await;
    b.send_text(&alice, &room, "welcome Ann").await;
    wait_for_body(&a, &ann, &room, "welcome Ann").await;

    // Amy rejects her invite: B hears of it through make_leave/send_leave, Amy's sync moves the
    // room out of her invites.
    let (status, _) =
        b.post(&invite_path(&room), Some(&alice.token), json!({ "user_id": amy.user_id })).await;
    assert_eq!(status, 200);
    wait_section(&a, &amy, "invite", &room).await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    let (status, body) = a.post(&leave, Some(&amy.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_membership(&b, &room, &amy.user_id, "leave").await;
    // A holds the room's state now (Ann is in it), so Amy's leave is in it too.
    wait_membership(&a, &room, &amy.user_id, "leave").await;

    // Inviting someone A does not know looks like any invite from B (A does not reveal who
    // exists, as Synapse does not); A stores nothing for nobody.
    let ghost = format!("@ghost:{}", name_of(&a));
    let (status, body) = b.post(&invite_path(&room), Some(&alice.token), json!({ "user_id": ghost })).await;
    assert_eq!(status, 200, "{body}");
    wait_membership(&b, &room, &ghost, "invite").await;
    assert!(a.server.db.user(&ghost).await.unwrap().is_none());

    // The other way: Ann on A invites Bob on B into a room on A; Bob joins through A.
    let room_a = a.create_room(&ann, json!({ "preset": "private_chat", "name": "A's room" })).await;
    let (status, body) =
        a.post(&invite_path(&room_a), Some(&ann.token), json!({ "user_id": bob.user_id })).await;
    assert_eq!(status, 200, "{body}");
    wait_section(&b, &bob, "invite", &room_a).await;
    // createRoom's invite list reaches other servers' users too (countersigned after creation).
    let body = json!({ "preset": "trusted_private_chat", "invite": [bob.user_id], "is_direct": true });
    let direct = a.create_room(&ann, body).await;
    let invited = wait_section(&b, &bob, "invite", &direct).await;
    let events = invited["invite_state"]["events"].as_array().unwrap();
    let own = events.iter().find(|e| e["state_key"] == bob.user_id.as_str());
    assert_eq!(own.map(|e| e["content"]["is_direct"].clone()), Some(json!(true)), "{invited}");
    let join_a = format!("/_matrix/client/v3/rooms/{}/join", enc(&room_a));
    let (status, body) = b.post(&join_a, Some(&bob.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_membership(&a, &room_a, &bob.user_id, "join").await;

    // Leaving over federation: Ann leaves B's room, Bob leaves A's.
    let (status, _) = a.post(&leave, Some(&ann.token), json!({})).await;
    assert_eq!(status, 200);
    wait_membership(&b, &room, &ann.user_id, "leave").await;
    let leave_a = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_a));
    let (status, _) = b.post(&leave_a, Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    wait_membership(&a, &room_a, &bob.user_id, "leave").await;
}

#[tokio::test]
async fn a_rejection_with_no_server_reachable_still_clears_the_invite() {
    let ca = TestCa::create();
    let (a, mut b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let (status, _) =
        b.post(&invite_path(&room), Some(&alice.token), json!({ "user_id": ann.user_id })).await;
    assert_eq!(status, 200);
    wait_section(&a, &ann, "invite", &room).await;
    let since = a.sync(&ann, None, 0).await["next_batch"].as_str().map(str::to_owned);
    b.stop().await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    let (status, body) = a.post(&leave, Some(&ann.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let left = wait_section_since(&a, &ann, "leave", &room, since).await;
    let timeline = left["timeline"]["events"].as_array().unwrap();
    assert!(
        timeline.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"),
        "{left}"
    );
    let membership = a.server.db.membership(&room, &ann.user_id).await.unwrap().unwrap();
    assert_eq!(membership.membership.as_str(), "leave");
}

/// An invite of `invitee` by `sender` into a version 12 room of `b`, signed by `b`'s key.
fn forged_invite(b: &TestServer, room: &str, sender: &str, invitee: &str) -> (Value, ruma::OwnedEventId) {
    let template = json!({
        "type": "m.room.member",
        "state_key": invitee,
        "sender": sender,
        "room_id": room,
        "content": { "membership": "invite" },
        "origin_server_ts": homeserver_core::time::now_millis(),
        "prev_events": [],
        "auth_events": [],
        "depth": 5,
    });
    sign_template(&b.server.federation.key, &template)
}

async fn send_invite(
    from: &TestServer,
    to: &OwnedServerName,
    room: &str,
    id: &ruma::EventId,
    event: &Value,
    room_state: Vec<RawStrippedState>,
) -> Result<Value, federation::FederationError> {
    let request = create_invite::v2::Request::new(
        ruma::RoomId::parse(room).unwrap(),
        id.to_owned(),
        RoomVersionId::V12,
        serde_json::value::to_raw_value(event).unwrap(),
        room_state,
    );
    let answer = from.server.federation.client.send(to, request).await?;
    Ok(serde_json::from_str(answer.event.get()).unwrap())
}

pub(crate) fn status_of<T>(result: &Result<T, federation::FederationError>) -> Option<u16> {
    match result {
        Err(federation::FederationError::Status { status, .. }) => Some(*status),
        _ => None,
    }
}

#[tokio::test]
async fn invites_a_server_must_refuse() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let room_state: Vec<String> = b
        .server
        .app
        .rooms
        .stripped_state_pdus(&room_id)
        .await
        .unwrap()
        .iter()
        .map(|p| p.json.to_string())
        .collect();
    let state = || -> Vec<RawStrippedState> {
        room_state
            .iter()
            .map(|j| RawStrippedState::Pdu(serde_json::value::RawValue::from_string(j.clone()).unwrap()))
            .collect()
    };
    let to = name_of(&a);

    // A well-formed invite is countersigned and shown to Ann.
    let (event, id) = forged_invite(&b, &room, &alice.user_id, &ann.user_id);
    let signed = send_invite(&b, &to, &room, &id, &event, state()).await.expect("A countersigns");
    assert!(signed["signatures"].get(to.as_str()).is_some(), "{signed}");
    wait_section(&a, &ann, "invite", &room).await;

    // The inviter must belong to the requesting server.
    let (event, id) = forged_invite(&b, &room, &format!("@mallory:{to}"), &ann.user_id);
    assert_eq!(status_of(&send_invite(&b, &to, &room, &id, &event, state()).await), Some(403));
    // The path names the event.
    let (event, _) = forged_invite(&b, &room, &alice.user_id, &ann.user_id);
    let (_, other_id) = forged_invite(&b, &room, &alice.user_id, &format!("@amy:{to}"));
    assert_eq!(status_of(&send_invite(&b, &to, &room, &other_id, &event, state()).await), Some(400));
    // Content changed after signing: the hash does not match.
    let (mut event, id) = forged_invite(&b, &room, &alice.user_id, &ann.user_id);
    event["content"]["displayname"] = json!("changed");
    assert_eq!(status_of(&send_invite(&b, &to, &room, &id, &event, state()).await), Some(403));
    // An invitee who does not exist gets the same answer (existence is not revealed), and
    // nothing is stored; one of another server is refused.
    let ghost = format!("@ghost:{to}");
    let (event, id) = forged_invite(&b, &room, &alice.user_id, &ghost);
    let signed = send_invite(&b, &to, &room, &id, &event, state()).await.expect("answered like any invite");
    assert!(signed["signatures"].get(to.as_str()).is_some(), "{signed}");
    assert!(a.server.db.membership(&room, &ghost).await.unwrap().is_none());
    let (event, id) = forged_invite(&b, &room, &alice.user_id, &format!("@bob:{}", name_of(&b)));
    assert_eq!(status_of(&send_invite(&b, &to, &room, &id, &event, state()).await), Some(400));
    // A version 12 invite's room state must hold the create event, as valid PDUs of the room.
    let (event, id) = forged_invite(&b, &room, &alice.user_id, &format!("@amy:{to}"));
    a.register("amy").await;
    let without_create: Vec<RawStrippedState> = state()
        .into_iter()
        .filter(|e| !matches!(e, RawStrippedState::Pdu(p) if p.get().contains("\"m.room.create\"")))
        .collect();
    assert_eq!(status_of(&send_invite(&b, &to, &room, &id, &event, without_create).await), Some(400));
    assert!(a.server.db.membership(&room, &format!("@amy:{to}")).await.unwrap().is_none());
}

/// Syncs until the room's ephemeral events hold one `check` accepts.
async fn wait_ephemeral(
    server: &TestServer,
    user: &User,
    room: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let mut since: Option<String> = None;
    for _ in 0..40 {
        let sync = server.sync(user, since.as_deref(), 500).await;
        let events =
            sync["rooms"]["join"][room]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(&check) {
            return;
        }
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{what} never reached {} on {}", user.user_id, name_of(server));
}

#[tokio::test]
async fn three_servers_share_forwarded_joins_typing_and_receipts() {
    let ca = TestCa::create();
    let (a, b, c) =
        (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let cat = c.register("cat").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let via = |server: &TestServer| {
        format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(server).as_str()))
    };
    assert_eq!(a.post(&via(&b), Some(&ann.token), json!({})).await.0, 200);
    wait_membership(&b, &room, &ann.user_id, "join").await;

    // Cat joins through B only: B forwards her join to A.
    assert_eq!(c.post(&via(&b), Some(&cat.token), json!({})).await.0, 200);
    wait_membership(&a, &room, &cat.user_id, "join").await;
    // C learnt the servers in the room from the join: its messages reach A directly.
    c.send_text(&cat, &room, "hello from C").await;
    wait_for_body(&a, &ann, &room, "hello from C").await;
    wait_for_body(&b, &alice, &room, "hello from C").await;

    // Typing on A shows on B and C.
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&ann.user_id));
    let (status, _) = a.put(&typing, Some(&ann.token), json!({ "typing": true, "timeout": 20000 })).await;
    assert_eq!(status, 200);
    let ann_types = |e: &Value| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u == ann.user_id.as_str()))
    };
    wait_ephemeral(&b, &alice, &room, "Ann typing", ann_types).await;
    wait_ephemeral(&c, &cat, &room, "Ann typing", ann_types).await;

    // Alice's receipt on B reaches A; a private one does not leave B.
    let message = b.send_text(&alice, &room, "read this").await;
    wait_for_body(&a, &ann, &room, "read this").await;
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message));
    assert_eq!(b.post(&receipt, Some(&alice.token), json!({})).await.0, 200);
    let alice_read =
        |e: &Value| e["type"] == "m.receipt" && !e["content"][&message]["m.read"][&alice.user_id].is_null();
    wait_ephemeral(&a, &ann, &room, "Alice's receipt", alice_read).await;
    let later = b.send_text(&alice, &room, "read privately").await;
    wait_for_body(&a, &ann, &room, "read privately").await;
    let private = format!("/_matrix/client/v3/rooms/{}/receipt/m.read.private/{}", enc(&room), enc(&later));
    assert_eq!(b.post(&private, Some(&alice.token), json!({})).await.0, 200);
    // Routing follows the stream: once a later message reached A, the private receipt would have.
    b.send_text(&alice, &room, "after the private receipt").await;
    wait_for_body(&a, &ann, &room, "after the private receipt").await;
    let receipts = a.server.db.user_receipts(&room, &alice.user_id).await.unwrap();
    assert!(receipts.iter().all(|r| r.receipt_type == "m.read" && r.event_id == message), "{receipts:?}");
}

#[tokio::test]
async fn a_late_joiner_backfills_history_in_order_as_clients_page_back() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat", "name": "old room" })).await;
    let history: Vec<String> = (0..25).map(|i| format!("history {i}")).collect();
    for body in &history {
        b.send_text(&alice, &room, body).await;
    }
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);

    // Page back ten at a time: each short page fetches more history from B.
    let mut seen: Vec<String> = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10", enc(&room));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = a.get(&path, Some(&ann.token)).await;
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().unwrap();
        seen.extend(crate::harness::bodies(&page["chunk"]));
        if chunk.iter().any(|e| e["type"] == "m.room.create") || page["end"].is_null() {
            break;
        }
        from = page["end"].as_str().map(str::to_owned);
    }
    seen.reverse();
    let messages: Vec<String> = seen.into_iter().filter(|b| b.starts_with("history")).collect();
    assert_eq!(messages, history, "all of the history, oldest first");

    // Backfilled history is not news: a sync does not show it in the timeline.
    let sync = a.sync(&ann, None, 0).await;
    let timeline = crate::harness::bodies(&sync["rooms"]["join"][&room]["timeline"]["events"]);
    assert!(!timeline.iter().any(|b| b == "history 0"), "{timeline:?}");
}

#[tokio::test]
async fn rooms_are_found_through_other_servers_directories_and_joined_by_alias() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let body = json!({ "preset": "public_chat", "name": "The lobby", "room_alias_name": "lobby", "visibility": "public" });
    let room = b.create_room(&alice, body).await;
    let alias = format!("#lobby:{}", name_of(&b));

    // A client of A resolves B's alias through B.
    let (status, found) =
        a.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), Some(&ann.token)).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["room_id"], json!(room));
    assert_eq!(found["servers"][0], json!(name_of(&b).as_str()));
    let unknown = format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#nowhere:{}", name_of(&b))));
    let (status, body) = a.get(&unknown, Some(&ann.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");

    // B's public rooms, listed for A's client (GET and the filtered POST).
    let (status, page) = a
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={}", enc(name_of(&b).as_str())),
            Some(&ann.token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == json!(room) && r["name"] == "The lobby"),
        "{page}"
    );
    let path = format!("/_matrix/client/v3/publicRooms?server={}", enc(name_of(&b).as_str()));
    let (status, page) = a
        .post(&path, Some(&ann.token), json!({ "filter": { "generic_search_term": "nothing like it" } }))
        .await;
    assert_eq!((status, page["chunk"].as_array().map(Vec::len)), (200, Some(0)), "{page}");

    // Joining by the alias goes through B.
    let (status, body) =
        a.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&ann.token), json!({})).await;
    assert_eq!((status, body["room_id"].as_str()), (200, Some(room.as_str())), "{body}");
    wait_membership(&b, &room, &ann.user_id, "join").await;
}

#[tokio::test]
async fn other_servers_users_are_found_in_the_directory_while_a_room_is_shared() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let rita = b.register("rita").await;
    let ann = a.register("ann").await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&rita.user_id));
    let (status, _) = b.put(&path, Some(&rita.token), json!({ "displayname": "Rita Remote" })).await;
    assert_eq!(status, 200);
    let room = b.create_room(&rita, json!({ "preset": "public_chat" })).await;
    let search = |term: &'static str| {
        let (a, token) = (&a, ann.token.clone());
        async move {
            let (status, body) = a
                .post(
                    "/_matrix/client/v3/user_directory/search",
                    Some(&token),
                    json!({ "search_term": term }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["results"].as_array().unwrap().clone()
        }
    };
    assert!(search("rita").await.is_empty(), "A knows nothing of rita yet");

    // Once A is in the room, its users find rita by the name her membership event carries.
    let join = format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(name_of(&b).as_str()));
    let (status, body) = a.post(&join, Some(&ann.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let results = search("remote").await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        (results[0]["user_id"].as_str(), results[0]["display_name"].as_str()),
        (Some(rita.user_id.as_str()), Some("Rita Remote"))
    );

    // Redacting her member event takes its name out of A's directory; her id still finds her.
    let state = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}?format=event",
        enc(&room),
        enc(&rita.user_id)
    );
    let (_, member) = b.get(&state, Some(&rita.token)).await;
    let member_id = member["event_id"].as_str().unwrap().to_owned();
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&member_id));
    let (status, body) = b.put(&redact, Some(&rita.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let mut gone = false;
    for _ in 0..50 {
        if search("remote").await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the redacted name still finds rita");
    assert_eq!(search("rita").await.len(), 1);

    // When A's last user leaves, A no longer follows the room, and rita is not found.
    let (status, _) =
        a.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&ann.token), json!({})).await;
    assert_eq!(status, 200);
    assert!(search("rita").await.is_empty());
}

#[tokio::test]
async fn knocks_cross_servers_and_are_let_in_or_withdrawn() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let amy = a.register("amy").await;
    let knock_rule =
        json!([{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }]);
    let body = json!({ "preset": "private_chat", "name": "Knock first", "initial_state": knock_rule });
    let room = b.create_room(&alice, body).await;
    let knock = format!("/_matrix/client/v3/knock/{}?via={}", enc(&room), enc(name_of(&b).as_str()));

    // Ann knocks through B; B holds her knock, her sync shows the room knocked on.
    let (status, body) = a.post(&knock, Some(&ann.token), json!({ "reason": "let me in" })).await;
    assert_eq!((status, body["room_id"].as_str()), (200, Some(room.as_str())), "{body}");
    wait_membership(&b, &room, &ann.user_id, "knock").await;
    let knocked = wait_section(&a, &ann, "knock", &room).await;
    let events = knocked["knock_state"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock first"),
        "{knocked}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["state_key"] == ann.user_id.as_str() && e["content"]["reason"] == "let me in"),
        "{knocked}"
    );

    // Alice lets her in with an invite; Ann joins through the inviter's server.
    let (status, _) =
        b.post(&invite_path(&room), Some(&alice.token), json!({ "user_id": ann.user_id })).await;
    assert_eq!(status, 200);
    wait_section(&a, &ann, "invite", &room).await;
    let join = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    assert_eq!(a.post(&join, Some(&ann.token), json!({})).await.0, 200);
    wait_membership(&b, &room, &ann.user_id, "join").await;

    // A knock of a room A holds (Ann is in it) is an ordinary event; Amy withdraws hers.
    assert_eq!(a.post(&knock, Some(&amy.token), json!({})).await.0, 200);
    wait_membership(&b, &room, &amy.user_id, "knock").await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(a.post(&leave, Some(&amy.token), json!({})).await.0, 200);
    wait_membership(&b, &room, &amy.user_id, "leave").await;

    // A room that does not allow knocking refuses one from another server.
    let closed = b.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let knock_closed = format!("/_matrix/client/v3/knock/{}?via={}", enc(&closed), enc(name_of(&b).as_str()));
    let (status, body) = a.post(&knock_closed, Some(&amy.token), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
}

#[tokio::test]
async fn restricted_rooms_admit_other_servers_users_a_resident_vouches_for() {
    use ruma::api::federation::membership::{create_join_event, prepare_join_event};
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let ann = a.register("ann").await;
    let amy = a.register("amy").await;
    let space = b
        .create_room(&alice, json!({ "preset": "public_chat", "creation_content": { "type": "m.space" } }))
        .await;
    let rule = json!([{ "type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] } }]);
    let room = b.create_room(&alice, json!({ "preset": "private_chat", "initial_state": rule })).await;
    let via = |r: &str| format!("/_matrix/client/v3/join/{}?via={}", enc(r), enc(name_of(&b).as_str()));

    // Ann is in the space: B's Alice vouches for her join, and B countersigns it.
    assert_eq!(a.post(&via(&space), Some(&ann.token), json!({})).await.0, 200);
    wait_membership(&b, &space, &ann.user_id, "join").await;
    let (status, body) = a.post(&via(&room), Some(&ann.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_membership(&b, &room, &ann.user_id, "join").await;
    let member = b.server.db.membership(&room, &ann.user_id).await.unwrap().unwrap();
    let join = b.server.db.event(member.event_id.as_str()).await.unwrap().unwrap();
    let join: Value = serde_json::from_str(&join.json).unwrap();
    assert_eq!(join["content"]["join_authorised_via_users_server"], json!(alice.user_id));
    assert!(join["signatures"].get(name_of(&b).as_str()).is_some(), "B countersigned: {join}");

    // Amy is not in the space: no template, no join.
    let (status, body) = a.post(&via(&room), Some(&amy.token), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // A join naming Alice as its voucher, forged for Amy from a template made for someone
    // else, is not countersigned.
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let client = &a.server.federation.client;
    let cat = a.register("cat").await;
    assert_eq!(a.post(&via(&space), Some(&cat.token), json!({})).await.0, 200);
    wait_membership(&b, &space, &cat.user_id, "join").await;
    let mut ask =
        prepare_join_event::v1::Request::new(room_id.clone(), ruma::UserId::parse(&cat.user_id).unwrap());
    ask.ver = vec![ruma::RoomVersionId::V12];
    let made = client.send(&name_of(&b), ask).await.expect("a template for Cat");
    let mut template: Value = serde_json::from_str(made.event.get()).unwrap();
    assert_eq!(template["content"]["join_authorised_via_users_server"], json!(alice.user_id));
    template["sender"] = json!(amy.user_id);
    template["state_key"] = json!(amy.user_id);
    let (signed, join_id) = sign_template(&a.server.federation.key, &template);
    let pdu = serde_json::value::to_raw_value(&signed).unwrap();
    let forged = client.send(&name_of(&b), create_join_event::v2::Request::new(room_id, join_id, pdu)).await;
    assert!(matches!(forged, Err(federation::FederationError::Status { status: 403, .. })), "{forged:?}");
    assert!(b.server.db.membership(&room, &amy.user_id).await.unwrap().is_none());
}
