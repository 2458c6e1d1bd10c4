//! End-to-end encryption's server side over raw HTTP: device keys uploaded by their device only,
//! queried with display names, one-time keys claimed once each and then the fallback key,
//! counts in sync, keys gone with their device; to-device messages delivered to the addressed
//! device (or all of them), again until a later sync acknowledges them, once per transaction
//! id, at most 100 per sync with the rest in the next, waking a long-poll.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{TestServer, User};

/// `POST /_matrix/client/v3/keys/{endpoint}` as `user`: the status and the answer.
pub(crate) async fn keys(server: &TestServer, endpoint: &str, user: &User, body: Value) -> (u16, Value) {
    server.post(&format!("/_matrix/client/v3/keys/{endpoint}"), Some(&user.token), body).await
}

/// Logs in `user` again: a second device, its access token and device id.
pub(crate) async fn second_device(server: &TestServer, user: &User, device_id: &str) -> (User, String) {
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user.user_id },
        "password": user.password,
        "device_id": device_id,
        "initial_device_display_name": "second phone",
    });
    let (code, answer) = server.post("/_matrix/client/v3/login", None, body).await;
    assert_eq!(code, 200, "{answer}");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    (User { token, ..user.clone() }, device_id.to_owned())
}

pub(crate) async fn whoami_device(server: &TestServer, user: &User) -> String {
    let (_, body) = server.get("/_matrix/client/v3/account/whoami", Some(&user.token)).await;
    body["device_id"].as_str().unwrap().to_owned()
}

pub(crate) fn device_keys(user: &User, device: &str) -> Value {
    json!({
        "user_id": user.user_id,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "curve", format!("ed25519:{device}"): "ed" },
        "signatures": { user.user_id.clone(): { format!("ed25519:{device}"): "sig" } },
    })
}

#[tokio::test]
async fn keys_are_uploaded_by_their_device_queried_and_claimed_once_then_the_fallback() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = whoami_device(&server, &alice).await;
    let (phone, second) = second_device(&server, &alice, "PHONE").await;

    let otks: serde_json::Map<String, Value> =
        (0..3).map(|i| (format!("signed_curve25519:k{i}"), json!({ "key": format!("otk{i}") }))).collect();
    let body = json!({
        "device_keys": device_keys(&alice, &first),
        "one_time_keys": otks,
        "fallback_keys": { "signed_curve25519:fb": { "key": "fallback", "fallback": true } },
    });
    let (code, answer) = keys(&server, "upload", &alice, body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["one_time_key_counts"]["signed_curve25519"], 3);
    let (code, _) =
        keys(&server, "upload", &phone, json!({ "device_keys": device_keys(&alice, &second) })).await;
    assert_eq!(code, 200);
    // A device uploads its own keys only.
    let (code, answer) =
        keys(&server, "upload", &phone, json!({ "device_keys": device_keys(&alice, &first) })).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (code, _) =
        keys(&server, "upload", &bob, json!({ "device_keys": device_keys(&alice, &first) })).await;
    assert_eq!(code, 400, "nor another user's");
    // The spec's required fields (algorithms, keys, signatures) are checked.
    let mut partial = device_keys(&alice, &first);
    partial.as_object_mut().unwrap().remove("signatures");
    let (code, answer) = keys(&server, "upload", &alice, json!({ "device_keys": partial })).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{answer}");
    let sync = server.sync(&alice, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 3);
    assert_eq!(sync["device_unused_fallback_key_types"], json!(["signed_curve25519"]));

    // Bob sees both devices, the second with its display name.
    let (code, answer) =
        keys(&server, "query", &bob, json!({ "device_keys": { alice.user_id.clone(): [] } })).await;
    assert_eq!(code, 200, "{answer}");
    let devices = &answer["device_keys"][&alice.user_id];
    assert_eq!(devices[&first]["keys"][format!("ed25519:{first}")], "ed");
    assert_eq!(devices[&second]["unsigned"]["device_display_name"], "second phone");
    assert_eq!(devices[&first]["unsigned"], json!({}), "unsigned, without a name the device lacks");
    let (_, answer) =
        keys(&server, "query", &bob, json!({ "device_keys": { alice.user_id.clone(): [second.clone()] } }))
            .await;
    assert_eq!(
        answer["device_keys"][&alice.user_id].as_object().unwrap().len(),
        1,
        "only the device asked for"
    );

    // Each one-time key once, then the fallback key (again and again), never for the second device.
    let claim = json!({ "one_time_keys": { alice.user_id.clone(): { first.clone(): "signed_curve25519", second.clone(): "signed_curve25519" } } });
    let mut handed = Vec::new();
    for _ in 0..5 {
        let (code, answer) = keys(&server, "claim", &bob, claim.clone()).await;
        assert_eq!(code, 200, "{answer}");
        let keys = &answer["one_time_keys"][&alice.user_id];
        assert!(keys.get(&second).is_none(), "the second device has no one-time keys");
        let (id, key) =
            keys[&first].as_object().unwrap().iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
        handed.push((id, key["key"].as_str().unwrap().to_owned()));
    }
    let ids: Vec<&str> = handed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids[..3], ["signed_curve25519:k0", "signed_curve25519:k1", "signed_curve25519:k2"]);
    assert_eq!(ids[3..], ["signed_curve25519:fb", "signed_curve25519:fb"]);
    let sync = server.sync(&alice, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]), "the fallback key was used");

    // A deleted device's keys go with it.
    let (code, _) = server.post("/_matrix/client/v3/logout", Some(&phone.token), json!({})).await;
    assert_eq!(code, 200);
    let (_, answer) =
        keys(&server, "query", &bob, json!({ "device_keys": { alice.user_id.clone(): [] } })).await;
    assert!(answer["device_keys"][&alice.user_id].get(&second).is_none(), "{answer}");

    // Failure paths: no token, bad JSON.
    let (code, _) = server.post("/_matrix/client/v3/keys/query", None, json!({ "device_keys": {} })).await;
    assert_eq!(code, 401);
    let (code, answer) = keys(&server, "claim", &bob, json!({ "one_time_keys": 5 })).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")));
}

/// Sends a to-device message of `kind` to `to` (a device id or `*`) of `user`.
async fn send(server: &TestServer, from: &User, txn: &str, user: &str, to: &str, n: u64) -> u16 {
    let body = json!({ "messages": { user: { to: { "n": n } } } });
    server.put(&format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"), Some(&from.token), body).await.0
}

fn to_device(sync: &Value) -> Vec<u64> {
    sync["to_device"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn to_device_messages_arrive_until_acknowledged_once_per_transaction() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = whoami_device(&server, &alice).await;
    let (phone, _) = second_device(&server, &alice, "PHONE").await;
    let start = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let phone_start = server.sync(&phone, None, 0).await["next_batch"].as_str().unwrap().to_owned();

    assert_eq!(send(&server, &bob, "t1", &alice.user_id, &first, 1).await, 200);
    assert_eq!(send(&server, &bob, "t1", &alice.user_id, &first, 1).await, 200, "a replay answers the same");
    assert_eq!(send(&server, &bob, "t2", &alice.user_id, "*", 2).await, 200);
    let sync = server.sync(&alice, Some(&start), 0).await;
    assert_eq!(to_device(&sync), [1, 2], "once per transaction, in order");
    assert_eq!(sync["to_device"]["events"][0]["sender"], bob.user_id);
    assert_eq!(sync["to_device"]["events"][0]["type"], "m.test");
    let phone_sync = server.sync(&phone, Some(&phone_start), 0).await;
    assert_eq!(to_device(&phone_sync), [2], "`*` reaches every device");

    // Not acknowledged until a sync with the newer token: a retry gets them again.
    let again = server.sync(&alice, Some(&start), 0).await;
    assert_eq!(to_device(&again), [1, 2]);
    let next = again["next_batch"].as_str().unwrap().to_owned();
    let after = server.sync(&alice, Some(&next), 0).await;
    assert_eq!(to_device(&after), Vec::<u64>::new());
    assert!(
        server.sync(&alice, Some(&start), 0).await["to_device"]["events"].as_array().unwrap().is_empty(),
        "deleted once acknowledged"
    );

    // A long-poll wakes for a to-device message.
    let since = after["next_batch"].as_str().unwrap().to_owned();
    let waiting = {
        let (server, alice) = (&server, &alice);
        async move { server.sync(alice, Some(&since), 20_000).await }
    };
    let sending = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(&server, &bob, "t3", &alice.user_id, &first, 3).await
    };
    let started = std::time::Instant::now();
    let (woken, _) = tokio::join!(waiting, sending);
    assert_eq!(to_device(&woken), [3]);
    assert!(started.elapsed() < Duration::from_secs(10));

    // At most 100 per sync; the rest come with the next, nothing skipped.
    let since = woken["next_batch"].as_str().unwrap().to_owned();
    for n in 0..150 {
        assert_eq!(send(&server, &bob, &format!("bulk{n}"), &alice.user_id, &first, 100 + n).await, 200);
    }
    let first = server.sync(&alice, Some(&since), 0).await;
    assert_eq!(to_device(&first), (100..200).collect::<Vec<u64>>(), "the first 100");
    let split = first["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(split.split('_').count(), 3, "the token says how far they got: {split}");
    // A retry with the token from before the split gets the same 100 again.
    assert_eq!(to_device(&server.sync(&alice, Some(&since), 0).await), (100..200).collect::<Vec<u64>>());
    let rest = server.sync(&alice, Some(&split), 0).await;
    assert_eq!(to_device(&rest), (200..250).collect::<Vec<u64>>(), "then the other 50");
    let last = rest["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(last.split('_').count(), 2, "all delivered: {last}");
    let received: Vec<u64> = to_device(&first).into_iter().chain(to_device(&rest)).collect();
    assert_eq!(received, (100..250).collect::<Vec<u64>>());

    let (code, _) =
        server.put("/_matrix/client/v3/sendToDevice/m.test/t9", None, json!({ "messages": {} })).await;
    assert_eq!(code, 401);
}

/// Syncs `user` from `since` (long-polling up to 10 s) until `pick` finds something; that and
/// the next token.
async fn sync_until(
    server: &TestServer,
    user: &User,
    since: &str,
    pick: impl Fn(&Value) -> bool,
) -> (Value, String) {
    let mut since = since.to_owned();
    for _ in 0..20 {
        let sync = server.sync(user, Some(&since), 10_000).await;
        let next = sync["next_batch"].as_str().unwrap().to_owned();
        if pick(&sync) {
            return (sync, next);
        }
        since = next;
    }
    panic!("never found in {}'s syncs", user.user_id);
}

fn lists(sync: &Value, which: &str) -> Vec<String> {
    sync["device_lists"][which]
        .as_array()
        .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn room_mates_hear_of_device_list_changes_joins_and_leaves() {
    let server = TestServer::start().await;
    let (alice, bob, room) = server.pair().await;
    let carol = server.register("carol").await;
    let t0 = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let device = whoami_device(&server, &alice).await;

    // Alice's new keys: Bob's long-poll wakes with her in `changed`.
    let (code, _) =
        keys(&server, "upload", &alice, json!({ "device_keys": device_keys(&alice, &device) })).await;
    assert_eq!(code, 200);
    let (_, t1) = sync_until(&server, &bob, &t0, |s| lists(s, "changed").contains(&alice.user_id)).await;
    let (code, answer) =
        server.get(&format!("/_matrix/client/v3/keys/changes?from={t0}&to={t1}"), Some(&bob.token)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["changed"], json!([alice.user_id]));
    let (code, answer) =
        server.get("/_matrix/client/v3/keys/changes?from=nonsense&to=s1", Some(&bob.token)).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    // A new room mate's devices are news; one who leaves every shared room is `left`.
    server.invite(&alice, &room, &carol.user_id).await;
    server.join(&carol, &room).await;
    let (_, t2) = sync_until(&server, &bob, &t1, |s| lists(s, "changed").contains(&carol.user_id)).await;
    let (code, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", crate::harness::enc(&room)),
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, t3) = sync_until(&server, &bob, &t2, |s| lists(s, "left").contains(&carol.user_id)).await;

    // A new device (Alice's own syncs hear of it too), a renamed one and a deleted one
    // change the list.
    let alice_since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let (phone, _) = second_device(&server, &alice, "PHONE").await;
    let (_, t4) = sync_until(&server, &bob, &t3, |s| lists(s, "changed").contains(&alice.user_id)).await;
    sync_until(&server, &alice, &alice_since, |s| lists(s, "changed").contains(&alice.user_id)).await;
    let (code, _) = server
        .put("/_matrix/client/v3/devices/PHONE", Some(&alice.token), json!({ "display_name": "new name" }))
        .await;
    assert_eq!(code, 200);
    let (_, t5) = sync_until(&server, &bob, &t4, |s| lists(s, "changed").contains(&alice.user_id)).await;
    let (code, _) = server.post("/_matrix/client/v3/logout", Some(&phone.token), json!({})).await;
    assert_eq!(code, 200);
    sync_until(&server, &bob, &t5, |s| lists(s, "changed").contains(&alice.user_id)).await;
}

fn cross_key(user: &User, usage: &str, public: &str) -> Value {
    json!({
        "user_id": user.user_id,
        "usage": [usage],
        "keys": { format!("ed25519:{public}"): public },
    })
}

#[tokio::test]
async fn cross_signing_keys_are_set_once_freely_replaced_with_a_password_and_signed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = whoami_device(&server, &alice).await;
    let (code, _) =
        keys(&server, "upload", &alice, json!({ "device_keys": device_keys(&alice, &device) })).await;
    assert_eq!(code, 200);
    let upload = json!({
        "master_key": cross_key(&alice, "master", "MASTER"),
        "self_signing_key": cross_key(&alice, "self_signing", "SELF"),
        "user_signing_key": cross_key(&alice, "user_signing", "USER"),
    });
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let (code, answer) = server.post(path, Some(&alice.token), upload.clone()).await;
    assert_eq!(code, 200, "the first upload needs no password: {answer}");
    let (code, _) = server.post(path, Some(&alice.token), upload.clone()).await;
    assert_eq!(code, 200, "nor the same keys again");
    // Replacing them does.
    let replace = json!({ "master_key": cross_key(&alice, "master", "MASTER2") });
    let (code, answer) = server.post(path, Some(&alice.token), replace.clone()).await;
    assert_eq!(code, 401, "{answer}");
    let session = answer["session"].as_str().unwrap().to_owned();
    let mut authed = replace.clone();
    authed["auth"] = json!({ "type": "m.login.password", "session": session, "password": alice.password,
        "identifier": { "type": "m.id.user", "user": alice.user_id } });
    let (code, answer) = server.post(path, Some(&alice.token), authed).await;
    assert_eq!(code, 200, "{answer}");
    // Keys of another user, or without their usage, are refused.
    let (code, answer) =
        server.post(path, Some(&bob.token), json!({ "master_key": cross_key(&alice, "master", "X") })).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (code, _) = server
        .post(path, Some(&bob.token), json!({ "master_key": cross_key(&bob, "self_signing", "X") }))
        .await;
    assert_eq!(code, 400);

    // Alice signs her device with her self-signing key; Bob signs her master key with his
    // user-signing key; Bob cannot sign her device.
    let mut signed_device = device_keys(&alice, &device);
    signed_device["signatures"] = json!({ alice.user_id.clone(): { "ed25519:SELF": "cross-signature" } });
    let (code, answer) = keys(
        &server,
        "signatures/upload",
        &alice,
        json!({ alice.user_id.clone(): { device.clone(): signed_device } }),
    )
    .await;
    assert_eq!((code, &answer["failures"]), (200, &json!({})), "{answer}");
    let (code, _) = server
        .post(path, Some(&bob.token), json!({ "master_key": cross_key(&bob, "master", "BOBM"), "user_signing_key": cross_key(&bob, "user_signing", "BOBU") }))
        .await;
    assert_eq!(code, 200);
    let mut master = cross_key(&alice, "master", "MASTER2");
    master["signatures"] = json!({ bob.user_id.clone(): { "ed25519:BOBU": "bob-vouches" } });
    let mut forged = device_keys(&alice, &device);
    forged["signatures"] = json!({ bob.user_id.clone(): { "ed25519:BOBU": "forged" } });
    let (code, answer) = keys(
        &server,
        "signatures/upload",
        &bob,
        json!({ alice.user_id.clone(): { "MASTER2": master, device.clone(): forged } }),
    )
    .await;
    assert_eq!(code, 200);
    assert!(answer["failures"][&alice.user_id].get(&device).is_some(), "{answer}");
    assert!(answer["failures"][&alice.user_id].get("MASTER2").is_none(), "{answer}");

    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let (_, seen_by_bob) = keys(&server, "query", &bob, query.clone()).await;
    assert_eq!(seen_by_bob["master_keys"][&alice.user_id]["keys"]["ed25519:MASTER2"], "MASTER2");
    assert_eq!(
        seen_by_bob["master_keys"][&alice.user_id]["signatures"][&bob.user_id]["ed25519:BOBU"],
        "bob-vouches"
    );
    assert_eq!(seen_by_bob["self_signing_keys"][&alice.user_id]["keys"]["ed25519:SELF"], "SELF");
    assert!(
        seen_by_bob["user_signing_keys"].get(&alice.user_id).is_none(),
        "only its owner sees a user-signing key"
    );
    let signatures = &seen_by_bob["device_keys"][&alice.user_id][&device]["signatures"];
    assert_eq!(signatures[&alice.user_id]["ed25519:SELF"], "cross-signature");
    assert!(signatures.get(&bob.user_id).is_none());
    // A third user sees neither Bob's signature nor Alice's user-signing key.
    let carol = server.register("carol").await;
    let (_, seen_by_carol) = keys(&server, "query", &carol, query.clone()).await;
    assert!(
        seen_by_carol["master_keys"][&alice.user_id]["signatures"].get(&bob.user_id).is_none(),
        "{seen_by_carol}"
    );
    let (_, seen_by_alice) = keys(&server, "query", &alice, query).await;
    assert_eq!(seen_by_alice["user_signing_keys"][&alice.user_id]["keys"]["ed25519:USER"], "USER");
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_one_key_twice() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let device = whoami_device(&server, &alice).await;
    let otks: serde_json::Map<String, Value> =
        (0..5).map(|i| (format!("signed_curve25519:c{i}"), json!({ "key": format!("otk{i}") }))).collect();
    let (code, _) = keys(&server, "upload", &alice, json!({ "one_time_keys": otks })).await;
    assert_eq!(code, 200);
    let mut claimers = Vec::new();
    for i in 0..10 {
        claimers.push(server.register(&format!("claimer{i}")).await);
    }
    let claim =
        json!({ "one_time_keys": { alice.user_id.clone(): { device.clone(): "signed_curve25519" } } });
    let answers =
        futures::future::join_all(claimers.iter().map(|c| keys(&server, "claim", c, claim.clone()))).await;
    let mut handed: Vec<String> = answers
        .iter()
        .filter_map(|(_, a)| {
            a["one_time_keys"][&alice.user_id][&device].as_object().and_then(|k| k.keys().next().cloned())
        })
        .collect();
    assert_eq!(handed.len(), 5, "five keys, five claims answered: {answers:?}");
    handed.sort();
    handed.dedup();
    assert_eq!(handed.len(), 5, "each key once");
}

/// A new user-signing key (others never see it) is news to its owner's devices only; a new
/// master key is news to room mates too. The password stage in its pre-r0.4 form (`user`, no
/// `identifier`) is taken, as Synapse takes it.
#[tokio::test]
async fn a_user_signing_key_is_news_to_its_owner_only() {
    let server = TestServer::start().await;
    let (alice, bob, _room) = server.pair().await;
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let (code, _) = server
        .post(path, Some(&alice.token), json!({ "master_key": cross_key(&alice, "master", "M") }))
        .await;
    assert_eq!(code, 200);
    let bob_since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let alice_since = server.sync(&alice, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let legacy_auth =
        json!({ "type": "m.login.password", "user": alice.user_id, "password": alice.password });
    let upload = json!({ "user_signing_key": cross_key(&alice, "user_signing", "U"), "auth": legacy_auth });
    let (code, answer) = server.post(path, Some(&alice.token), upload).await;
    assert_eq!(code, 200, "{answer}");
    sync_until(&server, &alice, &alice_since, |s| lists(s, "changed").contains(&alice.user_id)).await;
    let sync = server.sync(&bob, Some(&bob_since), 1000).await;
    assert!(!lists(&sync, "changed").contains(&alice.user_id), "Bob is not told: {sync}");
    let bob_since = sync["next_batch"].as_str().unwrap().to_owned();

    let replace = json!({ "master_key": cross_key(&alice, "master", "M2"), "auth": {
        "type": "m.login.password", "user": alice.user_id, "password": alice.password } });
    let (code, answer) = server.post(path, Some(&alice.token), replace).await;
    assert_eq!(code, 200, "{answer}");
    sync_until(&server, &bob, &bob_since, |s| lists(s, "changed").contains(&alice.user_id)).await;
}
