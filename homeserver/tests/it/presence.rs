//! Presence as room mates see it: set and read, delivered by sync, the long-poll that must not
//! make its user flap, going offline when syncing stops, idle users turning unavailable and
//! activity bringing them back; and presence switched off. Timers are shortened through the
//! `[presence]` config so the transitions happen within a test.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

fn status_path(user: &User) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(&user.user_id))
}

/// `user`'s presence event in a sync response, if it carries one.
fn presence_of<'a>(sync: &'a Value, user: &User) -> Option<&'a Value> {
    sync["presence"]["events"].as_array()?.iter().rev().find(|e| e["sender"] == user.user_id.as_str())
}

/// Long-polls as `viewer` until a sync carries `subject`'s presence in `state`; returns its
/// content. Fails after `within`.
async fn await_presence(
    server: &TestServer,
    viewer: &User,
    since: &mut String,
    subject: &User,
    state: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} never became {state}", subject.user_id);
        let path = format!(
            "/_matrix/client/v3/sync?timeout={}&since={since}&set_presence=offline",
            left.as_millis()
        );
        let (status, sync) = server.get(&path, Some(&viewer.token)).await;
        assert_eq!(status, 200, "{sync}");
        *since = sync["next_batch"].as_str().unwrap().to_owned();
        if let Some(p) = presence_of(&sync, subject)
            && p["content"]["presence"] == state
        {
            return p["content"].clone();
        }
    }
}

/// A sync that leaves the syncing user's own presence alone.
async fn quiet_sync(server: &TestServer, user: &User) -> String {
    let (status, sync) =
        server.get("/_matrix/client/v3/sync?timeout=0&set_presence=offline", Some(&user.token)).await;
    assert_eq!(status, 200, "{sync}");
    sync["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn presence_is_set_by_its_owner_and_comes_down_sync_to_room_mates() {
    let server = TestServer::start().await;
    let (alice, bob, _room) = server.pair().await;
    let mut since = quiet_sync(&server, &bob).await;
    let set = json!({ "presence": "unavailable", "status_msg": "afk" });
    assert_eq!(server.put(&status_path(&alice), Some(&alice.token), set).await.0, 200);
    let content =
        await_presence(&server, &bob, &mut since, &alice, "unavailable", Duration::from_secs(5)).await;
    assert_eq!(content["status_msg"], "afk");
    assert_eq!(content["currently_active"], false);
    assert!(content["last_active_ago"].as_u64().is_some(), "{content}");
    let (status, got) = server.get(&status_path(&alice), Some(&bob.token)).await;
    assert_eq!((status, got["presence"].as_str()), (200, Some("unavailable")));

    // A plain sync does not override a state the user chose; being active does.
    let sync = server.sync(&alice, None, 0).await;
    assert_eq!(presence_of(&sync, &alice).unwrap()["content"]["presence"], "unavailable");
    server.send_text(&alice, &_room, "back").await;
    let content = await_presence(&server, &bob, &mut since, &alice, "online", Duration::from_secs(5)).await;
    assert_eq!(content["currently_active"], true, "{content}");
    assert_eq!(content["status_msg"], "afk", "the status message stays");
}

#[tokio::test]
async fn users_newly_sharing_a_room_get_each_others_presence_unchanged() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let set = |msg: &str| json!({ "presence": "online", "status_msg": msg });
    assert_eq!(server.put(&status_path(&alice), Some(&alice.token), set("alice here")).await.0, 200);
    assert_eq!(server.put(&status_path(&carol), Some(&carol.token), set("carol here")).await.0, 200);
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    // Bob's token is from after Alice's and Carol's last change; then he joins Alice's room.
    let since = quiet_sync(&server, &bob).await;
    server.join(&bob, &room).await;
    let path = format!("/_matrix/client/v3/sync?timeout=0&since={since}&set_presence=offline");
    let (_, sync) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(presence_of(&sync, &alice).expect("alice's presence")["content"]["status_msg"], "alice here");
    assert!(presence_of(&sync, &carol).is_none(), "carol shares no room with bob: {sync}");
    // Then Carol joins: Bob's next sync carries her presence; the one after, nothing again.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    server.join(&carol, &room).await;
    let path = format!("/_matrix/client/v3/sync?timeout=0&since={since}&set_presence=offline");
    let (_, sync) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(presence_of(&sync, &carol).expect("carol's presence")["content"]["status_msg"], "carol here");
    assert!(presence_of(&sync, &alice).is_none(), "alice is no newcomer now: {sync}");
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/sync?timeout=0&since={since}&set_presence=offline");
    let (_, sync) = server.get(&path, Some(&bob.token)).await;
    assert!(presence_of(&sync, &carol).is_none(), "{sync}");
    // A newcomer never seen online is reported offline.
    let dave = server.register("dave").await;
    server.join(&dave, &room).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/sync?timeout=0&since={since}&set_presence=offline");
    let (_, sync) = server.get(&path, Some(&bob.token)).await;
    assert_eq!(presence_of(&sync, &dave).expect("dave's presence")["content"]["presence"], "offline");
}

#[tokio::test]
async fn a_long_poll_keeps_its_user_online_and_stopping_takes_them_offline() {
    let server = TestServer::start_with(|c| c.presence.offline_after_ms = 400).await;
    let (alice, bob, _room) = server.pair().await;
    let mut since = quiet_sync(&server, &bob).await;
    let alice_since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    await_presence(&server, &bob, &mut since, &alice, "online", Duration::from_secs(5)).await;

    // Alice long-polls for far longer than the offline countdown: she stays online throughout.
    let poll = {
        let (base, token) = (server.base.clone(), alice.token.clone());
        tokio::spawn(async move {
            let url = format!("{base}/_matrix/client/v3/sync?timeout=1500&since={alice_since}");
            reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, got) = server.get(&status_path(&alice), Some(&bob.token)).await;
    assert_eq!(got["presence"], "online", "a sync in flight keeps its user online: {got}");
    let (_, quiet) = server
        .get(
            &format!("/_matrix/client/v3/sync?timeout=0&since={since}&set_presence=offline"),
            Some(&bob.token),
        )
        .await;
    assert!(presence_of(&quiet, &alice).is_none(), "no flapping while she polls: {quiet}");
    assert_eq!(poll.await.unwrap(), 200);

    // Once her sync has ended, the countdown runs out and Bob's long-poll is woken with it.
    let started = Instant::now();
    await_presence(&server, &bob, &mut since, &alice, "offline", Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "offline only after the countdown");
}

#[tokio::test]
async fn idle_users_turn_unavailable_and_activity_brings_them_back() {
    let server = TestServer::start_with(|c| c.presence.idle_after_ms = 600).await;
    let (alice, bob, room) = server.pair().await;
    let mut since = quiet_sync(&server, &bob).await;
    server.sync(&alice, None, 0).await;
    let online = await_presence(&server, &bob, &mut since, &alice, "online", Duration::from_secs(5)).await;
    assert_eq!(online["currently_active"], true, "{online}");

    // Syncing is not activity: with an open but untouched client she goes idle.
    let keep_syncing = {
        let (base, token) = (server.base.clone(), alice.token.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                let url = format!("{base}/_matrix/client/v3/sync?timeout=0");
                reqwest::Client::new().get(url).bearer_auth(&token).send().await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let idle = await_presence(&server, &bob, &mut since, &alice, "unavailable", Duration::from_secs(5)).await;
    assert_eq!(idle["currently_active"], false, "{idle}");
    assert!(idle["last_active_ago"].as_u64().unwrap() >= 500, "{idle}");

    // A read receipt is activity.
    let event = server.send_text(&bob, &room, "are you there?").await;
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event));
    assert_eq!(server.post(&path, Some(&alice.token), json!({})).await.0, 200);
    let back = await_presence(&server, &bob, &mut since, &alice, "online", Duration::from_secs(5)).await;
    assert_eq!(back["currently_active"], true, "{back}");
    keep_syncing.abort();
}

#[tokio::test]
async fn presence_requests_are_checked() {
    let server = TestServer::start().await;
    let (alice, bob, _room) = server.pair().await;
    let carol = server.register("carol").await;
    let (status, res) =
        server.put(&status_path(&alice), Some(&bob.token), json!({ "presence": "online" })).await;
    assert_eq!((status, res["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only one's own presence");
    let (status, res) =
        server.put(&status_path(&alice), Some(&alice.token), json!({ "presence": "dancing" })).await;
    assert_eq!((status, res["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{res}");
    let (status, res) = server.get(&status_path(&alice), Some(&carol.token)).await;
    assert_eq!((status, res["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "no shared room: {res}");
    let ghost = "/_matrix/client/v3/presence/%40nobody%3Alocalhost/status";
    assert_eq!(server.get(ghost, Some(&alice.token)).await.0, 404);
}

#[tokio::test]
async fn presence_can_be_switched_off() {
    let server = TestServer::start_with(|c| c.presence.enabled = false).await;
    let (alice, bob, _room) = server.pair().await;
    let set = json!({ "presence": "unavailable", "status_msg": "afk" });
    assert_eq!(server.put(&status_path(&alice), Some(&alice.token), set).await.0, 200, "accepted");
    let (_, got) = server.get(&status_path(&alice), Some(&bob.token)).await;
    assert_eq!(got["presence"], "offline", "nothing is tracked: {got}");
    let sync = server.sync(&bob, None, 0).await;
    assert!(sync["presence"]["events"].as_array().unwrap().is_empty(), "{sync}");
}

#[tokio::test]
async fn polling_the_legacy_events_stream_shows_its_user_online() {
    let server = TestServer::start().await;
    let (alice, bob, _room) = server.pair().await;
    let mut since = quiet_sync(&server, &bob).await;
    let (status, body) = server.get("/_matrix/client/v3/events?timeout=0", Some(&alice.token)).await;
    assert_eq!(status, 200, "{body}");
    let content = await_presence(&server, &bob, &mut since, &alice, "online", Duration::from_secs(5)).await;
    assert_eq!(content["presence"], "online", "{content}");
}
