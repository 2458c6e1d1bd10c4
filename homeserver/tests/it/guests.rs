//! Guest access: guest accounts (off by default), the endpoints open to them, joining only
//! rooms that allow guests, leaving when a room stops allowing them, peeking at world-readable
//! rooms through `/events`, and upgrading a guest to a full account with the same id.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

async fn register_guest(server: &TestServer) -> User {
    let (status, body) = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, 200, "{body}");
    User {
        user_id: body["user_id"].as_str().unwrap().to_owned(),
        token: body["access_token"].as_str().unwrap().to_owned(),
        password: String::new(),
    }
}

async fn set_state(server: &TestServer, user: &User, room: &str, event_type: &str, content: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(room));
    let (status, body) = server.put(&path, Some(&user.token), content).await;
    assert_eq!(status, 200, "{body}");
}

fn join_path(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/join", enc(room))
}

#[tokio::test]
async fn guest_accounts_are_off_unless_configured() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_GUEST_ACCESS_FORBIDDEN")), "{body}");
}

#[tokio::test]
async fn guests_reach_only_what_the_spec_opens_to_them() {
    let server = TestServer::start_with(|c| {
        c.registration.allow_guest_access = true;
        c.registration.shared_secret = "reg_secret".into();
    })
    .await;
    let guest = register_guest(&server).await;
    let admin = server.register_admin("root").await;
    let (status, body) =
        server.get(&format!("/_synapse/admin/v2/users/{}", enc(&guest.user_id)), Some(&admin.token)).await;
    assert_eq!((status, body["is_guest"].as_bool()), (200, Some(true)), "{body}");
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    assert!(localpart.bytes().all(|b| b.is_ascii_digit()), "{}", guest.user_id);
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", Some(&guest.token)).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some(guest.user_id.as_str())));
    let (status, _) = server.get("/_matrix/client/v3/sync?timeout=0", Some(&guest.token)).await;
    assert_eq!(status, 200);

    // What guests may not do: create rooms, change their avatar, poll every room's events.
    let (status, body) = server.post("/_matrix/client/v3/createRoom", Some(&guest.token), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_GUEST_ACCESS_FORBIDDEN")), "{body}");
    let avatar = format!("/_matrix/client/v3/profile/{}/avatar_url", enc(&guest.user_id));
    let (status, _) = server.put(&avatar, Some(&guest.token), json!({ "avatar_url": "mxc://x/y" })).await;
    assert_eq!(status, 403);
    let (status, body) = server.get("/_matrix/client/v3/events?timeout=0", Some(&guest.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_GUEST_ACCESS_FORBIDDEN")), "{body}");
    // Where a token is optional, a guest's is served as anonymous rather than refused.
    for path in ["/_matrix/client/versions", "/_matrix/client/v3/publicRooms"] {
        let (status, body) = server.get(path, Some(&guest.token)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Their display name they may set.
    let name = format!("/_matrix/client/v3/profile/{}/displayname", enc(&guest.user_id));
    let (status, _) = server.put(&name, Some(&guest.token), json!({ "displayname": "creeper" })).await;
    assert_eq!(status, 200);

    // A numeric name is kept for guests; nobody registers one.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "12345", "password": "pw-numeric-secret", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_USERNAME")), "{body}");
}

#[tokio::test]
async fn guests_join_rooms_that_allow_them_and_leave_when_that_ends() {
    let server = TestServer::start_with(|c| c.registration.allow_guest_access = true).await;
    let alice = server.register("alice").await;
    let guest = register_guest(&server).await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;

    let (status, body) = server.post(&join_path(&room), Some(&guest.token), json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "no guest_access yet: {body}");
    set_state(&server, &alice, &room, "m.room.guest_access", json!({ "guest_access": "can_join" })).await;
    let (status, body) = server.post(&join_path(&room), Some(&guest.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let member =
        format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&guest.user_id));
    let (status, content) = server.get(&member, Some(&alice.token)).await;
    assert_eq!(
        (status, content["membership"].as_str(), content["kind"].as_str()),
        (200, Some("join"), Some("guest"))
    );
    server.send_text(&guest, &room, "hello as a guest").await;

    // The room stops allowing guests: the guest leaves it, by its own leave event.
    set_state(&server, &alice, &room, "m.room.guest_access", json!({ "guest_access": "forbidden" })).await;
    let mut membership = String::new();
    for _ in 0..50 {
        let (_, content) = server.get(&member, Some(&alice.token)).await;
        membership = content["membership"].as_str().unwrap_or_default().to_owned();
        if membership == "leave" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(membership, "leave");
    let (status, _) = server.post(&join_path(&room), Some(&guest.token), json!({})).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn guests_and_users_peek_at_world_readable_rooms_through_events() {
    let server = TestServer::start_with(|c| c.registration.allow_guest_access = true).await;
    let alice = server.register("alice").await;
    let guest = register_guest(&server).await;
    let open = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let closed = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    set_state(
        &server,
        &alice,
        &open,
        "m.room.history_visibility",
        json!({ "history_visibility": "world_readable" }),
    )
    .await;

    let (status, body) =
        server.get(&format!("/_matrix/client/v3/rooms/{}/initialSync", enc(&open)), Some(&guest.token)).await;
    assert_eq!(status, 200, "{body}");
    let from = body["messages"]["end"].as_str().unwrap().to_owned();
    server.send_text(&alice, &open, "for anyone to read").await;
    let path = format!("/_matrix/client/v3/events?room_id={}&from={}&timeout=5000", enc(&open), enc(&from));
    let (status, body) = server.get(&path, Some(&guest.token)).await;
    assert_eq!(status, 200, "{body}");
    let bodies: Vec<&str> =
        body["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, vec!["for anyone to read"], "{body}");
    // Polling on from the end finds nothing more (and does not spin).
    let end = body["end"].as_str().unwrap();
    let path = format!("/_matrix/client/v3/events?room_id={}&from={}&timeout=0", enc(&open), enc(end));
    let (status, body) = server.get(&path, Some(&guest.token)).await;
    assert_eq!((status, body["chunk"].as_array().map(Vec::len)), (200, Some(0)), "{body}");

    // A room that is not world-readable is refused at once.
    let path = format!("/_matrix/client/v3/events?room_id={}&timeout=0", enc(&closed));
    let (status, _) = server.get(&path, Some(&guest.token)).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_guest_upgrades_to_a_full_account_with_the_same_id() {
    let server = TestServer::start_with(|c| c.registration.allow_guest_access = true).await;
    let guest = register_guest(&server).await;
    let other = register_guest(&server).await;
    let localpart = guest.user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
    let upgrade = |token: &str| {
        json!({
            "username": localpart,
            "password": "SIR_Arthur_David",
            "guest_access_token": token,
            "auth": { "type": "m.login.dummy" },
        })
    };
    // Another guest's token does not upgrade this one.
    let (status, _) = server.post("/_matrix/client/v3/register", None, upgrade(&other.token)).await;
    assert_eq!(status, 403);
    let (status, body) = server.post("/_matrix/client/v3/register", None, upgrade(&guest.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"].as_str(), Some(guest.user_id.as_str()));
    // Now a full account, under the new token and the old one alike.
    for token in [body["access_token"].as_str().unwrap(), guest.token.as_str()] {
        let (status, body) = server.post("/_matrix/client/v3/createRoom", Some(token), json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    // Upgrading twice does not work.
    let (status, _) = server.post("/_matrix/client/v3/register", None, upgrade(&guest.token)).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_guest_accepts_another_servers_invite_only_where_guests_may_join() {
    use crate::federation::{TestCa, federated};
    use crate::federation_membership::{wait_membership, wait_section};
    let ca = TestCa::create();
    let a = federated(&ca, |c| c.registration.allow_guest_access = true).await;
    let b = federated(&ca, |_| {}).await;
    let guest = register_guest(&a).await;
    let rita = b.register("rita").await;
    for (guest_access, admitted) in [("can_join", true), ("forbidden", false)] {
        let room = b.create_room(&rita, json!({ "preset": "private_chat" })).await;
        set_state(&b, &rita, &room, "m.room.guest_access", json!({ "guest_access": guest_access })).await;
        b.invite(&rita, &room, &guest.user_id).await;
        wait_section(&a, &guest, "invite", &room).await;
        let (status, body) = a.post(&join_path(&room), Some(&guest.token), json!({})).await;
        if admitted {
            assert_eq!(status, 200, "{body}");
            wait_membership(&b, &room, &guest.user_id, "join").await;
        } else {
            assert_eq!((status, body["errcode"].as_str()), (403, Some("M_GUEST_ACCESS_FORBIDDEN")), "{body}");
        }
    }
}
