//! End-to-end encryption across two Lattice servers: a client's `/keys/query` and `/keys/claim`
//! for another server's users answered by that server (`/user/keys/query`, `/user/keys/claim`),
//! an unreachable server in `failures`, `/user/devices`; to-device messages and device-list
//! updates arriving as EDUs, each only from the sender's own server.

use ruma::api::federation::device::get_devices;
use serde_json::{Value, json};

use crate::{
    e2ee::{device_keys, keys, second_device, whoami_device},
    federation::{TestCa, federated, name_of, send_transaction_with},
    harness::{TestServer, User, enc},
};

/// Two servers; Ann on A and Bob on B in a room on B; Bob's device has keys and three
/// one-time keys, and a master key.
async fn setup() -> (TestCa, TestServer, TestServer, User, User, String, String) {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let ann = a.register("ann").await;
    let bob = b.register("bob").await;
    let room = b.create_room(&bob, json!({ "preset": "public_chat" })).await;
    let join = format!("/_matrix/client/v3/join/{}?via={}", enc(&room), enc(name_of(&b).as_str()));
    let (code, answer) = a.post(&join, Some(&ann.token), json!({})).await;
    assert_eq!(code, 200, "{answer}");
    let device = whoami_device(&b, &bob).await;
    let otks: serde_json::Map<String, Value> =
        (0..3).map(|i| (format!("signed_curve25519:k{i}"), json!({ "key": format!("otk{i}") }))).collect();
    let body = json!({ "device_keys": device_keys(&bob, &device), "one_time_keys": otks });
    assert_eq!(keys(&b, "upload", &bob, body).await.0, 200);
    let master =
        json!({ "user_id": bob.user_id, "usage": ["master"], "keys": { "ed25519:master": "master" } });
    let (code, answer) = b
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&bob.token),
            json!({ "master_key": master }),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    (ca, a, b, ann, bob, room, device)
}

#[tokio::test]
async fn keys_of_another_servers_users_are_queried_and_claimed_through_it() {
    let (_ca, a, b, ann, bob, _room, device) = setup().await;
    let query =
        json!({ "device_keys": { &bob.user_id: [], "@nobody:unreachable.invalid": [] }, "timeout": 5000 });
    let (code, answer) = keys(&a, "query", &ann, query).await;
    assert_eq!(code, 200, "{answer}");
    let theirs = &answer["device_keys"][&bob.user_id][&device];
    assert_eq!(theirs["keys"][format!("curve25519:{device}")], "curve", "{answer}");
    assert!(theirs.get("unsigned").is_none(), "device names stay on their server: {answer}");
    assert_eq!(answer["master_keys"][&bob.user_id]["keys"]["ed25519:master"], "master", "{answer}");
    assert!(answer["failures"].get("unreachable.invalid").is_some(), "{answer}");
    assert!(answer["failures"].get(name_of(&b).as_str()).is_none(), "{answer}");

    // Claims reach Bob's server: each hands out another key.
    let claim = json!({ "one_time_keys": { &bob.user_id: { &device: "signed_curve25519" } } });
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (code, answer) = keys(&a, "claim", &ann, claim.clone()).await;
        assert_eq!(code, 200, "{answer}");
        let key = answer["one_time_keys"][&bob.user_id][&device].as_object().cloned().unwrap_or_default();
        assert_eq!(key.len(), 1, "{answer}");
        seen.extend(key.keys().cloned());
    }
    assert_ne!(seen[0], seen[1], "a key is handed out once");
    let sync = b.sync(&bob, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 1, "Bob's server counts the claims");

    // `/user/devices` lists Bob's device with its keys.
    let request = get_devices::v1::Request::new(bob.user_id.parse().unwrap());
    let devices = a.server.federation.client.send(&name_of(&b), request).await.unwrap();
    assert_eq!(devices.devices.len(), 1);
    assert_eq!(devices.devices[0].device_id.as_str(), device);
    assert!(u64::from(devices.stream_id) > 0);
    assert!(devices.master_key.is_some());
}

#[tokio::test]
async fn to_device_and_device_list_edus_are_taken_from_the_senders_server_only() {
    let (_ca, a, b, ann, bob, _room, device) = setup().await;
    let since = b.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let a_key = &a.server.federation.key;
    let message = |sender: &str, id: &str| {
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": "m.room.encrypted", "message_id": id,
            "messages": { &bob.user_id: { &device: { "ciphertext": format!("from {sender}") } } },
        } })
    };
    let forged = format!("@mallory:{}", name_of(&b));
    let edus = [
        message(&ann.user_id, "m1"),
        message(&ann.user_id, "m1"),
        message(&forged, "m2"),
        json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": ann.user_id, "device_id": "ANNPHONE", "stream_id": 1, "prev_id": [], "deleted": false,
        } }),
    ];
    let (code, answer) = send_transaction_with(&b, a_key, "edus1", &[], &edus).await;
    assert_eq!(code, 200, "{answer}");
    let sync = b.sync(&bob, Some(&since), 5000).await;
    let events = sync["to_device"]["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "once per message id, never from a forged sender: {sync:#}");
    assert_eq!(events[0]["sender"], ann.user_id.as_str());
    assert_eq!(events[0]["type"], "m.room.encrypted");
    assert_eq!(events[0]["content"]["ciphertext"], format!("from {}", ann.user_id));
    let changed = sync["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
    assert!(changed.iter().any(|u| u == ann.user_id.as_str()), "{sync:#}");
}

#[tokio::test]
async fn to_device_messages_and_device_list_changes_reach_the_other_server() {
    let (_ca, a, b, ann, bob, _room, device) = setup().await;
    let bob_since = b.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let ann_since = a.sync(&ann, None, 0).await["next_batch"].as_str().unwrap().to_owned();

    // Ann sends Bob's device (and all his devices) a message through her server.
    let body = json!({ "messages": { &bob.user_id: { &device: { "ciphertext": "for one" }, "*": { "ciphertext": "for all" } } } });
    for _ in 0..2 {
        // A retry with the same transaction id sends nothing again.
        let (code, answer) = a
            .put("/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", Some(&ann.token), body.clone())
            .await;
        assert_eq!(code, 200, "{answer}");
    }
    let mut got = Vec::new();
    let mut since = bob_since;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while got.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the to-device message never arrived");
        let sync = b.sync(&bob, Some(&since), 2000).await;
        got.extend(sync["to_device"]["events"].as_array().cloned().unwrap_or_default());
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    // One of the two (a device addressed by id and by `*` gets one message per request).
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["sender"], ann.user_id.as_str());
    assert_eq!(got[0]["type"], "m.room.encrypted");
    let sync = b.sync(&bob, Some(&since), 1000).await;
    assert!(sync["to_device"]["events"].as_array().is_none_or(Vec::is_empty), "delivered once: {sync:#}");

    // Bob's new device: Ann's server hears of it and her sync lists him.
    let (tablet, tablet_id) = second_device(&b, &bob, "TABLET").await;
    let (code, answer) =
        keys(&b, "upload", &tablet, json!({ "device_keys": device_keys(&bob, &tablet_id) })).await;
    assert_eq!(code, 200, "{answer}");
    // Each change Ann's server hears of lists Bob as changed; a client queries again then,
    // and once the key upload has arrived the answer has the new device's keys.
    let mut since = ann_since;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "Ann's server never heard of Bob's new keys");
        let sync = a.sync(&ann, Some(&since), 2000).await;
        since = sync["next_batch"].as_str().unwrap().to_owned();
        let changed = sync["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
        if !changed.iter().any(|u| u == bob.user_id.as_str()) {
            continue;
        }
        let (_, answer) = keys(&a, "query", &ann, json!({ "device_keys": { &bob.user_id: [] } })).await;
        if answer["device_keys"][&bob.user_id].get("TABLET").is_some() {
            break;
        }
    }
}

#[tokio::test]
async fn to_device_messages_for_other_servers_are_bounded_and_split_into_small_edus() {
    let (_ca, a, b, ann, bob, _room, device) = setup().await;
    let since = b.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    // More than 100 servers in one request, or one message over 64 KiB, is refused.
    let many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("@u:s{i}.example"), json!({ "D": { "x": 1 } }))).collect();
    let (code, answer) = a
        .put("/_matrix/client/v3/sendToDevice/m.test/many", Some(&ann.token), json!({ "messages": many }))
        .await;
    assert_eq!((code, answer["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "{answer}");
    let huge = json!({ "messages": { &bob.user_id: { &device: { "blob": "x".repeat(70_000) } } } });
    let (code, answer) = a.put("/_matrix/client/v3/sendToDevice/m.test/huge", Some(&ann.token), huge).await;
    assert_eq!((code, answer["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "{answer}");

    // Two 40 KB messages to Bob go as two EDUs, and both arrive.
    let blob = "y".repeat(40_000);
    let body = json!({ "messages": { &bob.user_id: { &device: { "part": 1, "blob": blob }, "*": { "part": 2, "blob": blob } } } });
    let (code, answer) = a.put("/_matrix/client/v3/sendToDevice/m.test/split", Some(&ann.token), body).await;
    assert_eq!(code, 200, "{answer}");
    let mut parts = Vec::new();
    let mut since = since;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while parts.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "only {parts:?} arrived");
        let sync = b.sync(&bob, Some(&since), 2000).await;
        for event in sync["to_device"]["events"].as_array().cloned().unwrap_or_default() {
            assert_eq!(event["content"]["blob"].as_str().map(str::len), Some(40_000));
            parts.push(event["content"]["part"].as_u64().unwrap());
        }
        since = sync["next_batch"].as_str().unwrap().to_owned();
    }
    parts.sort();
    assert_eq!(parts, [1, 2]);
}

/// Ann's server caches Bob's device list once it has asked for it: an update that follows the
/// cached chain is applied in place, one that does not makes it fetch the list again, and while
/// Ann shares a room with Bob the cache answers even with Bob's server down; once she left,
/// it no longer does (nobody would tell her server of changes).
#[tokio::test]
async fn another_servers_device_lists_are_cached_and_kept_by_their_updates() {
    let (_ca, a, mut b, ann, bob, room, device) = setup().await;
    let query = json!({ "device_keys": { &bob.user_id: [] }, "timeout": 5000 });
    let (code, answer) = keys(&a, "query", &ann, query.clone()).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer["device_keys"][&bob.user_id].get(&device).is_some(), "{answer}");
    let db = &a.server.db;
    let end = db.remote_device_list_stream_id(&bob.user_id).await.unwrap().expect("cached after a query");

    // An update that follows the chain is applied as sent (Bob's server has no such device:
    // seeing it proves nothing was fetched).
    let b_key = &b.server.federation.key;
    let fake_keys = json!({ "user_id": bob.user_id, "device_id": "FAKE", "algorithms": [],
        "keys": { "ed25519:FAKE": "fake" }, "signatures": {} });
    let update = |stream: i64, prev: i64| {
        json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": bob.user_id, "device_id": "FAKE", "stream_id": stream, "prev_id": [prev],
            "keys": fake_keys, "device_display_name": "Fake phone",
        } })
    };
    let (code, answer) = send_transaction_with(&a, b_key, "dl1", &[], &[update(end + 1, end)]).await;
    assert_eq!(code, 200, "{answer}");
    let (_, answer) = keys(&a, "query", &ann, query.clone()).await;
    let fake = &answer["device_keys"][&bob.user_id]["FAKE"];
    assert_eq!(fake["keys"]["ed25519:FAKE"], "fake", "{answer}");
    assert_eq!(fake["unsigned"]["device_display_name"], "Fake phone", "{answer}");
    assert!(answer["device_keys"][&bob.user_id].get(&device).is_some(), "{answer}");

    // Bob's new device: his server's update follows its own chain, not the forged link, so
    // Ann's server sees a gap and fetches the list whole (no FAKE, the new device there).
    let (tablet, tablet_id) = second_device(&b, &bob, "TABLET").await;
    let (code, answer) =
        keys(&b, "upload", &tablet, json!({ "device_keys": device_keys(&bob, &tablet_id) })).await;
    assert_eq!(code, 200, "{answer}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the list was never fetched again");
        let (_, answer) = keys(&a, "query", &ann, query.clone()).await;
        let theirs = &answer["device_keys"][&bob.user_id];
        if theirs.get("FAKE").is_none() && theirs.get("TABLET").is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let newest = b.server.db.device_list_stream_id(&bob.user_id).await.unwrap();
    assert_eq!(db.remote_device_list_stream_id(&bob.user_id).await.unwrap(), Some(newest));

    // Bob's server goes down: the cache answers.
    b.stop().await;
    let (code, answer) = keys(&a, "query", &ann, query.clone()).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer["device_keys"][&bob.user_id].get("TABLET").is_some(), "{answer}");
    assert_eq!(answer["failures"], json!({}), "{answer}");

    // Ann leaves: no room shared, so the cache is not trusted and Bob's server is asked.
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    let (code, answer) = a.post(&leave, Some(&ann.token), json!({})).await;
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = keys(&a, "query", &ann, query).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer["failures"].get(name_of(&b).as_str()).is_some(), "{answer}");
}
