//! The core flow with an unmodified Matrix client library (matrix-sdk).

use std::time::Duration;

use matrix_sdk::{
    Client,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, RoomId, UserId,
        api::client::{
            account::register::v3::Request as RegistrationRequest,
            room::create_room::v3::Request as CreateRoomRequest, uiaa,
        },
        events::room::message::RoomMessageEventContent,
    },
};

use crate::harness::TestServer;

async fn client(server: &TestServer) -> Client {
    Client::builder().homeserver_url(&server.base).build().await.expect("client")
}

pub(crate) async fn register(server: &TestServer, name: &str) -> Client {
    let client = client(server).await;
    let mut request = RegistrationRequest::new();
    request.username = Some(name.to_owned());
    request.password = Some(format!("{name}-password"));
    // First attempt: the server answers with the UIA flows and a session.
    let err = client.matrix_auth().register(request.clone()).await.expect_err("UIA challenge");
    let info = err.as_uiaa_response().expect("a UIA response").clone();
    assert!(info.flows.iter().any(|f| f.stages.iter().any(|s| s.as_str() == "m.login.dummy")));
    let mut dummy = uiaa::Dummy::new();
    dummy.session = info.session.clone();
    request.auth = Some(uiaa::AuthData::Dummy(dummy));
    client.matrix_auth().register(request).await.expect("registration");
    assert!(client.user_id().is_some(), "logged in after registering");
    client
}

fn message_bodies(events: &[matrix_sdk::deserialized_responses::TimelineEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|ev| {
            let json: serde_json::Value = serde_json::from_str(ev.raw().json().get()).ok()?;
            (json["type"] == "m.room.message").then(|| json["content"]["body"].as_str().map(str::to_owned))?
        })
        .collect()
}

/// Syncs `client` until `room` shows all of `want` (in order), collecting message bodies.
async fn sync_until(client: &Client, room: &RoomId, want: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let response =
            client.sync_once(SyncSettings::new().timeout(Duration::from_secs(5))).await.expect("sync");
        if let Some(update) = response.rooms.joined.get(room) {
            seen.extend(message_bodies(&update.timeline.events));
        }
        if seen.len() >= want.len() {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_through_a_real_client_library() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();
    assert_eq!(bob_id.as_str(), "@bob:localhost");

    // Alice creates a private room and invites Bob.
    let mut create = CreateRoomRequest::new();
    create.name = Some("Tea".to_owned());
    let room = alice.create_room(create).await.expect("create room");
    let room_id: OwnedRoomId = room.room_id().to_owned();
    room.invite_user_by_id(&bob_id).await.expect("invite");

    // Bob sees the invite through sync and joins.
    let mut invited = false;
    for _ in 0..10 {
        let response = bob.sync_once(SyncSettings::new().timeout(Duration::from_secs(5))).await.unwrap();
        if response.rooms.invited.contains_key(&room_id) {
            invited = true;
            break;
        }
    }
    assert!(invited, "bob never saw the invite");
    bob.join_room_by_id(&room_id).await.expect("join");
    alice.sync_once(SyncSettings::new()).await.unwrap();

    // They exchange messages; each arrives in order through the other's sync.
    let alice_room = alice.get_room(&room_id).expect("alice knows the room");
    let mut sent = Vec::new();
    for i in 0..5 {
        let text = format!("hello bob {i}");
        alice_room.send(RoomMessageEventContent::text_plain(&text)).await.expect("send");
        sent.push(text);
    }
    let received = sync_until(&bob, &room_id, &sent).await;
    assert_eq!(received, sent, "bob receives alice's messages once, in order");

    let bob_room = bob.get_room(&room_id).expect("bob knows the room");
    bob_room.send(RoomMessageEventContent::text_plain("hi alice")).await.expect("reply");
    let received = sync_until(&alice, &room_id, &["hi alice".to_owned()]).await;
    assert!(received.contains(&"hi alice".to_owned()), "{received:?}");

    // A fresh login (new device, empty client state) paginates the whole history back.
    let again = client(&server).await;
    again.matrix_auth().login_username(&bob_id, "bob-password").send().await.expect("login");
    again.sync_once(SyncSettings::new()).await.unwrap();
    let room = again.get_room(&room_id).expect("room after fresh login");
    let mut history = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let options = MessagesOptions::backward().from(from.as_deref());
        let page = room.messages(options).await.expect("messages");
        let mut bodies = message_bodies_from(&page.chunk);
        history.append(&mut bodies);
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    history.reverse();
    let mut expected = sent.clone();
    expected.push("hi alice".to_owned());
    assert_eq!(history, expected, "history after a fresh login");
    assert!(UserId::parse("@alice:localhost").is_ok());
}

fn message_bodies_from(events: &[matrix_sdk::deserialized_responses::TimelineEvent]) -> Vec<String> {
    message_bodies(events)
}
