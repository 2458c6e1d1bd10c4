//! Media across servers: another server's media fetched over federation once (multipart,
//! signed), cached and served from the cache when its server is gone, thumbnailed locally,
//! never served unauthenticated; this server's media served to signed requests only; the
//! cache purged by age through the admin API and `lattice media purge-remote`.

use ruma::api::federation::authenticated_media::get_content;
use serde_json::{Value, json};

use crate::{
    federation::{TestCa, federated, name_of},
    harness::{TestServer, User},
    media::{download as get, image_bytes, media_path},
};

/// `server/id` of a new upload.
async fn upload(server: &TestServer, user: &User, content_type: &str, data: Vec<u8>) -> String {
    let (code, body) =
        crate::media::upload(server, user, "/_matrix/media/v3/upload?filename=photo.png", content_type, data)
            .await;
    assert_eq!(code, 200, "{body}");
    media_path(body["content_uri"].as_str().expect("uploaded"))
}

#[tokio::test]
async fn other_servers_media_is_fetched_once_cached_thumbnailed_and_purged() {
    let ca = TestCa::create();
    let mut a = federated(&ca, |_| {}).await;
    let b = federated(&ca, |c| c.registration.shared_secret = "reg_secret".into()).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let admin = b.register_admin("root").await;
    let photo = image_bytes(800, 400, image::ImageFormat::Png);
    let path = upload(&a, &alice, "image/png", photo.clone()).await;
    let (origin, media_id) = path.split_once('/').unwrap();
    assert_eq!(origin, name_of(&a).as_str());

    // Bob's server fetches it from Alice's and serves it as its own media is served.
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{path}")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "image/png");
    assert_eq!(answer.headers()["content-disposition"], "inline; filename=\"photo.png\"");
    assert_eq!(answer.bytes().await.unwrap().to_vec(), photo, "byte for byte");
    let thumbnail = get(
        &b,
        Some(&bob.token),
        &format!("/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32&method=crop"),
    )
    .await;
    assert_eq!(thumbnail.status(), 200);
    let thumbnail = image::load_from_memory(&thumbnail.bytes().await.unwrap()).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (32, 32));
    // Never without authentication, whatever the legacy switch says.
    assert_eq!(get(&b, None, &format!("/_matrix/media/v3/download/{path}")).await.status(), 404);
    let unknown =
        get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{origin}/nothing")).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["errcode"], "M_NOT_FOUND");

    // Alice's server answers signed requests with the two-part body, and nothing else.
    let request = get_content::v1::Request::new(media_id.to_owned());
    let answer = b.server.federation.client.send_streaming(&name_of(&a), request).await.unwrap();
    assert_eq!(answer.status(), 200);
    let kind = answer.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("multipart/mixed; boundary="), "{kind}");
    let body = answer.bytes().await.unwrap().to_vec();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Content-Type: application/json\r\n\r\n{}\r\n"), "the metadata part");
    assert!(body.windows(photo.len()).any(|w| w == photo.as_slice()), "the content part");
    let tls = a.tls_base.clone().unwrap();
    let unsigned = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{tls}/_matrix/federation/v1/media/download/{media_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    // Once cached, the media outlives its server's absence.
    a.stop().await;
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{path}")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().await.unwrap().to_vec(), photo);
    let gone = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{origin}/other")).await;
    assert_eq!(gone.status(), 502, "another of its media cannot be fetched now");

    // Purging the cache: `lattice media purge-remote`'s cut-off (older than a day) keeps it, the
    // admin API's now drops it.
    let mut config = b.server.config.clone();
    config.listen.client = b.base.trim_start_matches("http://").parse().unwrap();
    let said = homeserver::media_cli::purge_remote(&config, &admin.token, "1d").await.unwrap();
    assert_eq!(said, "purged 0 cached remote media fetched more than 1 days ago");
    let refused = homeserver::media_cli::purge_remote(&config, &bob.token, "1d").await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    let now = homeserver_core::time::now_millis() + 1;
    let (code, body) = b
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={now}"), Some(&bob.token), json!({}))
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = b
        .post(&format!("/_synapse/admin/v1/purge_media_cache?before_ts={now}"), Some(&admin.token), json!({}))
        .await;
    assert_eq!((code, body["deleted"].as_u64()), (200, Some(1)), "{body}");
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{path}")).await;
    assert_eq!(answer.status(), 502, "fetched again, and its server is down");
}

#[tokio::test]
async fn quarantined_media_is_served_to_no_server_and_outlives_purges() {
    let ca = TestCa::create();
    let a = federated(&ca, |c| c.registration.shared_secret = "reg_secret".into()).await;
    let b = federated(&ca, |c| c.registration.shared_secret = "reg_secret".into()).await;
    let alice = a.register("alice").await;
    let a_admin = a.register_admin("root").await;
    let bob = b.register("bob").await;
    let b_admin = b.register_admin("root").await;
    let hidden = upload(&a, &alice, "text/plain", b"hidden".to_vec()).await;
    let cached = upload(&a, &alice, "text/plain", b"cached".to_vec()).await;

    // Quarantined at its origin: no other server gets it.
    let (code, _) = a
        .post(&format!("/_synapse/admin/v1/media/quarantine/{hidden}"), Some(&a_admin.token), json!({}))
        .await;
    assert_eq!(code, 200);
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{hidden}")).await;
    assert_eq!(answer.status(), 404);

    // Quarantined in another server's cache: gone there (in any spelling of its server's
    // name), and a purge does not bring it back.
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{cached}")).await;
    assert_eq!(answer.bytes().await.unwrap().as_ref(), b"cached");
    let (code, _) = b
        .post(&format!("/_synapse/admin/v1/media/quarantine/{cached}"), Some(&b_admin.token), json!({}))
        .await;
    assert_eq!(code, 200);
    let shouted = cached.replace("localhost", "LOCALHOST");
    for path in [&cached, &shouted] {
        let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{path}")).await;
        assert_eq!(answer.status(), 404, "{path}");
    }
    let now = homeserver_core::time::now_millis() + 1;
    let (code, body) = b
        .post(
            &format!("/_synapse/admin/v1/purge_media_cache?before_ts={now}"),
            Some(&b_admin.token),
            json!({}),
        )
        .await;
    assert_eq!((code, body["deleted"].as_u64()), (200, Some(0)), "{body}");
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{cached}")).await;
    assert_eq!(answer.status(), 404, "still quarantined");

    // Media ids outside the spec's alphabet never reach another server.
    let origin = cached.split_once('/').unwrap().0;
    let answer = get(&b, Some(&bob.token), &format!("/_matrix/client/v1/media/download/{origin}/a.b")).await;
    assert_eq!(answer.status(), 404);
}
