//! Server-side key backup over raw HTTP: versions created, read (current and by number, with
//! `count` and `etag`), updated and deleted; keys stored only in the current version, replaced
//! only by better ones, read and deleted per version, room and session; users see only theirs.

use serde_json::{Value, json};

use crate::harness::{TestServer, enc};

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn key(verified: bool, index: u64, data: &str) -> Value {
    json!({
        "first_message_index": index,
        "forwarded_count": 0,
        "is_verified": verified,
        "session_data": { "ephemeral": data, "ciphertext": data, "mac": data },
    })
}

#[tokio::test]
async fn backups_keep_the_best_key_per_session_in_the_current_version() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let v3 = "/_matrix/client/v3/room_keys";
    let room = "!room:localhost";
    let session_path = |version: &str| format!("{v3}/keys/{}/sess1?version={version}", enc(room));

    let (code, answer) = server.get(&format!("{v3}/version"), Some(&alice.token)).await;
    assert_eq!((code, answer["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let body = json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": "pk1", "signatures": {} } });
    let (code, answer) = server.post(&format!("{v3}/version"), Some(&alice.token), body).await;
    assert_eq!((code, answer["version"].as_str()), (200, Some("1")), "{answer}");
    let (_, info) = server.get(&format!("{v3}/version"), Some(&alice.token)).await;
    assert_eq!(
        (info["count"].as_i64(), info["etag"].as_str(), info["version"].as_str()),
        (Some(0), Some("0"), Some("1"))
    );
    assert_eq!(info["auth_data"]["public_key"], "pk1");
    assert_eq!(server.get(&format!("{v3}/version"), Some(&bob.token)).await.0, 404, "Bob has none");

    // Stored; a worse key changes nothing; a better one replaces it.
    let (code, answer) = server.put(&session_path("1"), Some(&alice.token), key(false, 5, "first")).await;
    assert_eq!(
        (code, answer["count"].as_i64(), answer["etag"].as_str()),
        (200, Some(1), Some("1")),
        "{answer}"
    );
    let (_, answer) = server.put(&session_path("1"), Some(&alice.token), key(false, 7, "worse")).await;
    assert_eq!(answer["etag"], "1", "nothing changed");
    let (_, stored) = server.get(&session_path("1"), Some(&alice.token)).await;
    assert_eq!(stored["session_data"]["ciphertext"], "first");
    let (_, answer) = server.put(&session_path("1"), Some(&alice.token), key(true, 9, "verified")).await;
    assert_eq!(answer["etag"], "2");
    let all = json!({ "rooms": { room: { "sessions": { "sess2": key(false, 0, "second") } } } });
    let (_, answer) = server.put(&format!("{v3}/keys?version=1"), Some(&alice.token), all).await;
    assert_eq!((answer["count"].as_i64(), answer["etag"].as_str()), (Some(2), Some("3")));

    // Only the current version takes keys; the error names it.
    let (code, answer) = server.put(&session_path("2"), Some(&alice.token), key(false, 0, "x")).await;
    assert_eq!(
        (code, answer["errcode"].as_str(), answer["current_version"].as_str()),
        (403, Some("M_WRONG_ROOM_KEYS_VERSION"), Some("1"))
    );
    let body = json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": "pk2" } });
    let (_, answer) = server.post(&format!("{v3}/version"), Some(&alice.token), body).await;
    assert_eq!(answer["version"], "2");
    let (code, answer) = server.put(&session_path("1"), Some(&alice.token), key(true, 0, "late")).await;
    assert_eq!((code, answer["current_version"].as_str()), (403, Some("2")));

    // Reading version 1 still works: everything, a room, a session.
    let (_, everything) = server.get(&format!("{v3}/keys?version=1"), Some(&alice.token)).await;
    assert_eq!(everything["rooms"][room]["sessions"]["sess1"]["session_data"]["ciphertext"], "verified");
    assert_eq!(everything["rooms"][room]["sessions"]["sess2"]["first_message_index"], 0);
    let (_, room_keys) = server.get(&format!("{v3}/keys/{}?version=1", enc(room)), Some(&alice.token)).await;
    assert_eq!(room_keys["sessions"].as_object().unwrap().len(), 2);
    let (code, _) =
        server.get(&format!("{v3}/keys/{}/nothing?version=1", enc(room)), Some(&alice.token)).await;
    assert_eq!(code, 404);
    assert_eq!(server.get(&format!("{v3}/keys?version=1"), Some(&bob.token)).await.0, 404, "not Bob's");

    // Deleting a session's key, then the version.
    let answer = reqwest::Client::new()
        .delete(server.url(&session_path("1")))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    let answer: Value = answer.json().await.unwrap();
    assert_eq!((answer["count"].as_i64(), answer["etag"].as_str()), (Some(1), Some("4")), "{answer}");

    // The algorithm of a version is fixed; its auth_data may change.
    let (code, _) = server
        .put(&format!("{v3}/version/1"), Some(&alice.token), json!({ "algorithm": "other", "auth_data": {} }))
        .await;
    assert_eq!(code, 400);
    let (code, _) = server
        .put(
            &format!("{v3}/version/1"),
            Some(&alice.token),
            json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": "pk1b" } }),
        )
        .await;
    assert_eq!(code, 200);
    let (_, info) = server.get(&format!("{v3}/version/1"), Some(&alice.token)).await;
    assert_eq!(info["auth_data"]["public_key"], "pk1b");
    let deleted = reqwest::Client::new()
        .delete(server.url(&format!("{v3}/version/2")))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (_, info) = server.get(&format!("{v3}/version"), Some(&alice.token)).await;
    assert_eq!(info["version"], "1", "the newest left is current again");
    assert_eq!(server.get(&format!("{v3}/version/2"), Some(&alice.token)).await.0, 404);

    // Malformed keys are the client's error.
    let (code, answer) =
        server.put(&session_path("1"), Some(&alice.token), json!({ "first_message_index": 1 })).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    // Without auth_data, a version is the client's error; an opaque one (older clients) is kept.
    let (code, answer) =
        server.post(&format!("{v3}/version"), Some(&alice.token), json!({ "algorithm": ALGORITHM })).await;
    assert_eq!((code, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{answer}");
    let (code, answer) = server
        .post(
            &format!("{v3}/version"),
            Some(&alice.token),
            json!({ "algorithm": ALGORITHM, "auth_data": "opaque" }),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let (_, info) = server.get(&format!("{v3}/version"), Some(&alice.token)).await;
    assert_eq!(info["auth_data"], "opaque", "{info}");
    // Its keys' session_data is the algorithm's too: kept as sent.
    let current = info["version"].as_str().unwrap().to_owned();
    let key = json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "blob" });
    let (code, answer) = server.put(&session_path(&current), Some(&alice.token), key).await;
    assert_eq!(code, 200, "{answer}");
    let (_, stored) = server.get(&session_path(&current), Some(&alice.token)).await;
    assert_eq!(stored["session_data"], "blob", "{stored}");
}
