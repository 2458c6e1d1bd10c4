//! `/sync`: initial and incremental syncs, sections, filters, lazy loading, long-poll wake-ups.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{TestServer, bodies, enc};

fn joined<'a>(sync: &'a Value, room: &str) -> &'a Value {
    &sync["rooms"]["join"][room]
}

#[tokio::test]
async fn initial_then_incremental() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "name": "Den", "topic": "chat" })).await;
    for i in 0..3 {
        server.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let first = server.sync(&alice, None, 0).await;
    let r = joined(&first, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), vec!["m0", "m1", "m2"]);
    // The state at the start of the timeline includes the room's name and the member.
    let state = r["state"]["events"].as_array().unwrap();
    let all: Vec<&Value> = state.iter().chain(r["timeline"]["events"].as_array().unwrap()).collect();
    assert!(all.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Den"));
    assert!(all.iter().any(|e| e["type"] == "m.room.create"));
    assert!(r["timeline"]["events"][0].get("room_id").is_none(), "sync events omit room_id");
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // Nothing new: an immediate incremental sync has no rooms.
    let empty = server.sync(&alice, Some(&since), 0).await;
    assert!(empty["rooms"]["join"].as_object().unwrap().is_empty(), "{empty}");

    server.send_text(&alice, &room, "m3").await;
    let next = server.sync(&alice, Some(&since), 0).await;
    let r = joined(&next, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), vec!["m3"]);
    assert_eq!(r["timeline"]["limited"], false);
    assert!(r["state"]["events"].as_array().unwrap().is_empty());
    // The sender's device sees its transaction id.
    assert!(r["timeline"]["events"][0]["unsigned"]["transaction_id"].is_string());
}

#[tokio::test]
async fn limited_timeline_has_prev_batch_and_state_delta() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room)),
            Some(&alice.token),
            json!({"topic": "new"}),
        )
        .await;
    for i in 0..15 {
        server.send_text(&alice, &room, &format!("n{i}")).await;
    }
    let filter = enc(&json!({ "room": { "timeline": { "limit": 5 } } }).to_string());
    let (_, sync) = server
        .get(&format!("/_matrix/client/v3/sync?since={since}&filter={filter}"), Some(&alice.token))
        .await;
    let r = joined(&sync, &room);
    assert_eq!(r["timeline"]["limited"], true);
    assert_eq!(bodies(&r["timeline"]["events"]), vec!["n10", "n11", "n12", "n13", "n14"]);
    let state = r["state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "new"), "{state:?}");
    assert!(state.iter().all(|e| e["type"] != "m.room.create"), "only the delta: {state:?}");

    // prev_batch continues backwards exactly where the timeline starts.
    let prev = r["timeline"]["prev_batch"].as_str().unwrap();
    let (_, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&from={prev}&limit=3", enc(&room)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(bodies(&page["chunk"]), vec!["n9", "n8", "n7"]);
}

#[tokio::test]
async fn invites_joins_and_leaves_appear_in_their_sections() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "name": "Secret" })).await;
    let bob_since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    server.invite(&alice, &room, &bob.user_id).await;

    let sync = server.sync(&bob, Some(&bob_since), 0).await;
    let invite = &sync["rooms"]["invite"][&room]["invite_state"]["events"];
    let events = invite.as_array().expect("invite section");
    assert!(events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Secret"));
    assert!(events.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == bob.user_id
        && e["content"]["membership"] == "invite"));
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    server.join(&bob, &room).await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    let r = joined(&sync, &room);
    let state = r["state"]["events"].as_array().unwrap();
    let everything: Vec<&Value> = state.iter().chain(r["timeline"]["events"].as_array().unwrap()).collect();
    assert!(
        everything.iter().any(|e| e["type"] == "m.room.create"),
        "a newly joined room comes with full state"
    );
    assert!(
        everything.iter().any(|e| e["type"] == "m.room.name"),
        "a newly joined room comes with full state"
    );
    assert_eq!(r["summary"]["m.joined_member_count"], 2);
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    server.send_text(&alice, &room, "before you go").await;
    let (status, _) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, 200);
    server.send_text(&alice, &room, "after you left").await;
    let sync = server.sync(&bob, Some(&since), 0).await;
    let left = &sync["rooms"]["leave"][&room];
    let timeline = bodies(&left["timeline"]["events"]);
    assert_eq!(timeline, vec!["before you go"], "nothing after the leave: {left}");
    assert!(sync["rooms"]["join"].get(&room).is_none());
}

#[tokio::test]
async fn lazy_loading_members_and_filters() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let mut others = Vec::new();
    for name in ["b1", "b2", "b3", "b4"] {
        let u = server.register(name).await;
        server.join(&u, &room).await;
        others.push(u);
    }
    for i in 0..12 {
        server.send_text(&alice, &room, &format!("x{i}")).await;
    }
    server.send_text(&others[0], &room, "from b1").await;
    let filter = json!({ "room": { "timeline": { "limit": 3 }, "state": { "lazy_load_members": true } } });
    let (status, created) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            Some(&alice.token),
            filter.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let filter_id = created["filter_id"].as_str().unwrap();
    let (_, stored) = server
        .get(
            &format!("/_matrix/client/v3/user/{}/filter/{filter_id}", enc(&alice.user_id)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(stored, filter);
    let (_, sync) =
        server.get(&format!("/_matrix/client/v3/sync?filter={filter_id}"), Some(&alice.token)).await;
    let r = joined(&sync, &room);
    let members: Vec<&str> = r["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert!(members.contains(&"@b1:localhost"), "{members:?}");
    assert!(members.contains(&"@alice:localhost"), "{members:?}");
    assert!(!members.contains(&"@b3:localhost"), "b3 sent nothing in the timeline: {members:?}");
    assert_eq!(r["summary"]["m.joined_member_count"], 5);

    // A type filter keeps only what it names.
    let filter = enc(&json!({ "room": { "timeline": { "types": ["m.room.member"] } } }).to_string());
    let (_, sync) = server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), Some(&alice.token)).await;
    let events = joined(&sync, &room)["timeline"]["events"].as_array().unwrap().clone();
    assert!(!events.is_empty() && events.iter().all(|e| e["type"] == "m.room.member"));

    // Someone else's filter is not readable; malformed filters are refused.
    let bob = &others[1];
    let (status, _) = server
        .get(&format!("/_matrix/client/v3/user/{}/filter/{filter_id}", enc(&alice.user_id)), Some(&bob.token))
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&bob.user_id)),
            Some(&bob.token),
            json!({ "room": { "timeline": { "limit": "lots" } } }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
}

#[tokio::test]
async fn account_data_reaches_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let user = enc(&alice.user_id);
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{user}/account_data/org.example.pref"),
            Some(&alice.token),
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{user}/rooms/{}/account_data/m.tag.like", enc(&room)),
            Some(&alice.token),
            json!({"v": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = server
        .get(&format!("/_matrix/client/v3/user/{user}/account_data/org.example.pref"), Some(&alice.token))
        .await;
    assert_eq!(got, json!({"theme": "dark"}));
    let sync = server.sync(&alice, Some(&since), 0).await;
    let global = sync["account_data"]["events"].as_array().unwrap();
    assert!(global.iter().any(|e| e["type"] == "org.example.pref" && e["content"]["theme"] == "dark"));
    let per_room = joined(&sync, &room)["account_data"]["events"].as_array().unwrap();
    assert!(per_room.iter().any(|e| e["type"] == "m.tag.like"));
    let (status, _) = server
        .get(&format!("/_matrix/client/v3/user/{user}/account_data/missing.type"), Some(&alice.token))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_within_milliseconds_of_a_send() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    let mut since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();

    let mut latencies = Vec::new();
    for i in 0..10 {
        let poll = {
            let since = since.clone();
            let server_url = server.url(&format!("/_matrix/client/v3/sync?timeout=10000&since={since}"));
            let http = server.http.clone();
            let token = bob.token.clone();
            tokio::spawn(async move {
                let res = http.get(server_url).bearer_auth(token).send().await.unwrap();
                let body: Value = res.json().await.unwrap();
                (Instant::now(), body)
            })
        };
        // Let the long-poll reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent_at = Instant::now();
        server.send_text(&alice, &room, &format!("ping {i}")).await;
        let (woke_at, body) =
            tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woken").unwrap();
        assert_eq!(bodies(&joined(&body, &room)["timeline"]["events"]), vec![format!("ping {i}")]);
        latencies.push(woke_at.duration_since(sent_at));
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    latencies.sort();
    // The send's own round trip is included; the wake-up itself is sub-millisecond. A generous
    // bound keeps this meaningful without being a benchmark (the benchmark measures the numbers).
    assert!(latencies[latencies.len() / 2] < Duration::from_millis(250), "{latencies:?}");

    // With nothing to deliver, a long-poll waits for its timeout.
    let started = Instant::now();
    let quiet = server.sync(&bob, Some(&since), 300).await;
    assert!(started.elapsed() >= Duration::from_millis(280));
    assert!(quiet["rooms"]["join"].as_object().unwrap().is_empty());
}

#[tokio::test]
async fn full_state_and_set_presence_are_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "name": "Full" })).await;
    let since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "one more").await;
    let (status, sync) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&full_state=true&set_presence=offline"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{sync}");
    let r = joined(&sync, &room);
    assert_eq!(bodies(&r["timeline"]["events"]), vec!["one more"], "the timeline still starts at since");
    let state = r["state"]["events"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "full state despite since: {state:?}");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
    let (status, body) = server.get("/_matrix/client/v3/sync?since=garbage", Some(&alice.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
}

#[tokio::test]
async fn profile_changes_are_not_new_joins_and_lazy_members_are_sent_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Lazy" })).await;
    server.join(&bob, &room).await;
    let filter = enc(&json!({ "room": { "state": { "lazy_load_members": true } } }).to_string());
    let (_, first) =
        server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), Some(&alice.token)).await;
    let mut since = first["next_batch"].as_str().unwrap().to_owned();

    // A display-name change is a member event in the timeline, not a fresh full-state room.
    server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id)),
            Some(&alice.token),
            json!({ "displayname": "Alicia" }),
        )
        .await;
    let (_, sync) = server
        .get(&format!("/_matrix/client/v3/sync?filter={filter}&since={since}"), Some(&alice.token))
        .await;
    let r = joined(&sync, &room);
    assert!(r["state"]["events"].as_array().unwrap().iter().all(|e| e["type"] != "m.room.create"), "{r}");
    assert_eq!(r["timeline"]["limited"], false);
    since = sync["next_batch"].as_str().unwrap().to_owned();

    // Bob speaks twice in separate syncs: his member event comes once.
    let mut member_counts = Vec::new();
    for text in ["one", "two"] {
        server.send_text(&bob, &room, text).await;
        let (_, sync) = server
            .get(&format!("/_matrix/client/v3/sync?filter={filter}&since={since}"), Some(&alice.token))
            .await;
        let state = joined(&sync, &room)["state"]["events"].as_array().unwrap().clone();
        member_counts.push(state.iter().filter(|e| e["state_key"] == bob.user_id.as_str()).count());
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    // Bob's join was already in alice's first (initial) sync timeline or state.
    assert_eq!(member_counts, vec![0, 0], "bob's membership is not re-sent");
    // With include_redundant_members it is.
    let redundant = enc(
        &json!({ "room": { "state": { "lazy_load_members": true, "include_redundant_members": true } } })
            .to_string(),
    );
    server.send_text(&bob, &room, "three").await;
    let (_, sync) = server
        .get(&format!("/_matrix/client/v3/sync?filter={redundant}&since={since}"), Some(&alice.token))
        .await;
    let state = joined(&sync, &room)["state"]["events"].as_array().unwrap().clone();
    assert!(state.iter().any(|e| e["state_key"] == bob.user_id.as_str()), "{state:?}");
    // Limit 0: no events, but the room's timeline says it is limited.
    let zero = enc(&json!({ "room": { "timeline": { "limit": 0 } } }).to_string());
    let (_, sync) = server.get(&format!("/_matrix/client/v3/sync?filter={zero}"), Some(&alice.token)).await;
    let r = joined(&sync, &room);
    assert!(r["timeline"]["events"].as_array().unwrap().is_empty());
    assert_eq!(r["timeline"]["limited"], true);
    assert!(r["timeline"]["prev_batch"].is_string());
}

/// Member keys in a sync's state section.
fn state_members(room: &Value) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = room["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    members
}

#[tokio::test]
async fn a_gappy_lazy_loading_sync_still_shows_who_joined_and_left_in_the_gap() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (bob, carol, dave) =
        (server.register("bob").await, server.register("carol").await, server.register("dave").await);
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    for i in 0..5 {
        server.send_text(&bob, &room, &format!("b{i}")).await;
    }
    let filter =
        enc(&json!({ "room": { "timeline": { "limit": 5 }, "state": { "lazy_load_members": true } } })
            .to_string());
    let sync_from = |since: Option<String>| {
        let (server, token, filter) = (&server, alice.token.clone(), filter.clone());
        async move {
            let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
            let (status, sync) =
                server.get(&format!("/_matrix/client/v3/sync?filter={filter}{since}"), Some(&token)).await;
            assert_eq!(status, 200, "{sync}");
            sync
        }
    };
    let first = sync_from(None).await;
    let members = state_members(joined(&first, &room));
    assert_eq!(members, vec![(alice.user_id.clone(), "join".into()), (bob.user_id.clone(), "join".into())]);

    // Dave joins silently, then carol fills more than a timeline: the gap holds dave's join.
    server.join(&dave, &room).await;
    for i in 0..10 {
        server.send_text(&carol, &room, &format!("c{i}")).await;
    }
    let second = sync_from(first["next_batch"].as_str().map(str::to_owned)).await;
    let r = joined(&second, &room);
    assert_eq!(r["timeline"]["limited"], true);
    let expected =
        vec![(carol.user_id.clone(), "join".to_owned()), (dave.user_id.clone(), "join".to_owned())];
    let mut expected = expected;
    expected.sort();
    assert_eq!(state_members(r), expected, "carol speaks in the timeline, dave joined in the gap");

    // Dave leaves in the next gap: his leave comes, carol's membership is not sent again.
    let (status, _) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&dave.token), json!({}))
        .await;
    assert_eq!(status, 200);
    for i in 0..10 {
        server.send_text(&carol, &room, &format!("d{i}")).await;
    }
    let third = sync_from(second["next_batch"].as_str().map(str::to_owned)).await;
    assert_eq!(state_members(joined(&third, &room)), vec![(dave.user_id.clone(), "leave".into())]);
}

#[tokio::test]
async fn current_state_set_while_a_user_could_not_see_it_appears_in_their_timeline() {
    let server = TestServer::start().await;
    let (creator, syncer, invitee) =
        (server.register("creator").await, server.register("syncer").await, server.register("invitee").await);
    let room = server.create_room(&creator, json!({ "preset": "public_chat" })).await;
    server.join(&syncer, &room).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", enc(&room));
    let (status, _) =
        server.put(&path, Some(&creator.token), json!({ "history_visibility": "joined" })).await;
    assert_eq!(status, 200);
    server.invite(&creator, &room, &invitee.user_id).await;
    let (_, first) = server.get("/_matrix/client/v3/sync", Some(&syncer.token)).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // The syncer leaves; the invitee joins and messages follow, none of it visible to the
    // syncer under `joined` history; the syncer comes back.
    let (status, _) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&syncer.token), json!({}))
        .await;
    assert_eq!(status, 200);
    server.join(&invitee, &room).await;
    for i in 0..30 {
        server.send_text(&creator, &room, &format!("unseen {i}")).await;
    }
    server.join(&syncer, &room).await;
    let (status, sync) =
        server.get(&format!("/_matrix/client/v3/sync?since={since}"), Some(&syncer.token)).await;
    assert_eq!(status, 200);
    let events = joined(&sync, &room)["timeline"]["events"].as_array().unwrap().clone();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == invitee.user_id.as_str()),
        "the invitee's join is current state: {events:?}"
    );
    assert!(
        events.iter().all(|e| e["content"]["body"].as_str().is_none_or(|b| !b.starts_with("unseen"))),
        "messages sent while away stay hidden: {events:?}"
    );
}
