//! The media repository: uploads and downloads byte for byte, the headers that keep media from
//! running script on our origin, authentication (new media is not served unauthenticated
//! unless the legacy switch was on when it was uploaded), the size limit and the quota,
//! asynchronous uploads (create, then one upload by the creator), durability across a
//! restart, and plugins uploading and downloading through the `media` import.

use plugins::Grants;
use reqwest::Response;
use serde_json::{Value, json};

use crate::{
    harness::{TestServer, User},
    plugins::{eventually, guest, messages, quick, spec, wait_joined},
};

/// Uploads `data`; the answer's status and JSON.
async fn upload(
    server: &TestServer,
    user: &User,
    path: &str,
    content_type: &str,
    data: Vec<u8>,
) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .request(
            if path.contains("/upload/") { reqwest::Method::PUT } else { reqwest::Method::POST },
            server.url(path),
        )
        .bearer_auth(&user.token)
        .header("content-type", content_type)
        .body(data)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn download(server: &TestServer, token: Option<&str>, path: &str) -> Response {
    let mut request = reqwest::Client::new().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// `server/id` of an `mxc://` URI.
fn media_path(mxc: &str) -> String {
    mxc.strip_prefix("mxc://").expect("an mxc uri").to_owned()
}

fn sample(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn uploads_come_back_byte_for_byte_with_safe_headers_and_only_authenticated() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let data = sample(300_000);
    let (code, body) =
        upload(&server, &alice, "/_matrix/media/v3/upload?filename=cat.png", "image/png", data.clone()).await;
    assert_eq!(code, 200, "{body}");
    let mxc = body["content_uri"].as_str().unwrap().to_owned();
    assert!(mxc.starts_with("mxc://localhost/"), "{mxc}");
    let path = format!("/_matrix/client/v1/media/download/{}", media_path(&mxc));

    let answer = download(&server, Some(&alice.token), &path).await;
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-disposition"], "inline; filename=\"cat.png\"");
    assert!(headers["content-security-policy"].to_str().unwrap().starts_with("sandbox"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(answer.bytes().await.unwrap().to_vec(), data, "byte for byte");
    let renamed = download(&server, Some(&alice.token), &format!("{path}/other.png")).await;
    assert_eq!(renamed.headers()["content-disposition"], "inline; filename=\"other.png\"");

    // HTML is never shown inline.
    let (_, body) = upload(
        &server,
        &alice,
        "/_matrix/media/v3/upload?filename=x.html",
        "text/html",
        b"<script>".to_vec(),
    )
    .await;
    let html =
        format!("/_matrix/client/v1/media/download/{}", media_path(body["content_uri"].as_str().unwrap()));
    let answer = download(&server, Some(&alice.token), &html).await;
    assert_eq!(answer.headers()["content-disposition"], "attachment; filename=\"x.html\"");

    // Until thumbnails are generated, an image is its own thumbnail; other media has none.
    let thumb =
        format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32&method=scale", media_path(&mxc));
    let answer = download(&server, Some(&alice.token), &thumb).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().await.unwrap().to_vec(), data);
    let thumb = html.replace("/download/", "/thumbnail/");
    assert_eq!(download(&server, Some(&alice.token), &thumb).await.status(), 404);
    // Clients learn that authenticated media is served; older ones upload on the r0 path.
    let (_, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions["unstable_features"]["org.matrix.msc3916.stable"], true);
    let (code, body) =
        upload(&server, &alice, "/_matrix/media/r0/upload", "text/plain", b"old".to_vec()).await;
    assert_eq!(code, 200, "{body}");

    // No token, no media; the legacy endpoint does not serve new media.
    let answer = download(&server, None, &path).await;
    assert_eq!(answer.status(), 401);
    let legacy = format!("/_matrix/media/v3/download/{}", media_path(&mxc));
    let answer = download(&server, None, &legacy).await;
    assert_eq!(answer.status(), 404);
    assert_eq!(answer.json::<Value>().await.unwrap()["errcode"], "M_NOT_FOUND");
    let answer =
        download(&server, Some(&alice.token), "/_matrix/client/v1/media/download/localhost/nothing").await;
    assert_eq!(answer.status(), 404);

    // Committed means durable: the media outlives a restart.
    let server = server.restart().await;
    let answer = download(&server, Some(&alice.token), &path).await;
    assert_eq!(answer.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn the_size_limit_and_the_quota_hold_and_legacy_media_is_served_when_switched_on() {
    let server = TestServer::start_with(|c| {
        c.media.max_upload_bytes = 1_000;
        c.media.user_quota_bytes = 1_500;
        c.media.legacy_unauthenticated_download = true;
    })
    .await;
    let alice = server.register("alice").await;
    let (code, body) = server.get("/_matrix/client/v1/media/config", Some(&alice.token)).await;
    assert_eq!((code, &body["m.upload.size"]), (200, &json!(1_000)));

    let (code, body) =
        upload(&server, &alice, "/_matrix/media/v3/upload", "application/octet-stream", sample(2_000)).await;
    assert_eq!((code, body["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "{body}");
    let (code, body) = upload(&server, &alice, "/_matrix/media/v3/upload", "text/plain", sample(1_000)).await;
    assert_eq!(code, 200, "{body}");
    let mxc = body["content_uri"].as_str().unwrap().to_owned();
    let (code, body) = upload(&server, &alice, "/_matrix/media/v3/upload", "text/plain", sample(1_000)).await;
    assert_eq!((code, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "over the quota: {body}");

    let legacy = format!("/_matrix/media/v3/download/{}", media_path(&mxc));
    let answer = download(&server, None, &legacy).await;
    assert_eq!(answer.status(), 200, "uploaded while the legacy switch was on");
    assert_eq!(answer.bytes().await.unwrap().to_vec(), sample(1_000));
}

#[tokio::test]
async fn an_asynchronous_upload_is_filled_once_by_its_creator() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (code, body) = server.post("/_matrix/media/v1/create", Some(&alice.token), json!({})).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["unused_expires_at"].as_u64().unwrap() > 0);
    let id = media_path(body["content_uri"].as_str().unwrap());
    let get = format!("/_matrix/client/v1/media/download/{id}");
    let answer = download(&server, Some(&alice.token), &get).await;
    assert_eq!(answer.status(), 504);
    assert_eq!(answer.json::<Value>().await.unwrap()["errcode"], "M_NOT_YET_UPLOADED");

    let put = format!("/_matrix/media/v3/upload/{id}?filename=later.bin");
    let (code, body) = upload(&server, &bob, &put, "application/octet-stream", sample(10)).await;
    assert_eq!((code, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let (code, body) = upload(&server, &alice, &put, "application/octet-stream", sample(10)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = upload(&server, &alice, &put, "application/octet-stream", sample(20)).await;
    assert_eq!((code, body["errcode"].as_str()), (409, Some("M_CANNOT_OVERWRITE_MEDIA")), "{body}");
    let answer = download(&server, Some(&alice.token), &get).await;
    assert_eq!(answer.headers()["content-disposition"], "attachment; filename=\"later.bin\"");
    assert_eq!(answer.bytes().await.unwrap().to_vec(), sample(10));
    let (code, _) =
        upload(&server, &alice, "/_matrix/media/v3/upload/localhost/unknown", "text/plain", sample(1)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn plugins_upload_and_download_through_the_media_import() {
    let Some(probe) = guest("media_probe") else { return };
    let server = TestServer::start_with(|c| {
        quick(c);
        c.plugins.insert("media".into(), spec(probe, json!({}), Grants::default()));
    })
    .await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@media:localhost").await;
    wait_joined(&server, &alice, &room, "@media:localhost").await;
    let said = |prefix: &'static str| {
        let (server, alice, room) = (&server, &alice, room.clone());
        move || {
            let room = room.clone();
            async move {
                messages(server, alice, &room).await.into_iter().find_map(|e| {
                    let body = e["content"]["body"].as_str()?;
                    body.starts_with(prefix).then(|| body.to_owned())
                })
            }
        }
    };

    server.send_text(&alice, &room, "!media put hello from the bot").await;
    let put = eventually(30, "the bot's upload", said("put: ")).await;
    let mxc = put.trim_start_matches("put: ");
    let answer = download(
        &server,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/download/{}", media_path(mxc)),
    )
    .await;
    assert_eq!(answer.headers()["content-type"], "text/plain");
    assert_eq!(answer.text().await.unwrap(), "hello from the bot");
    let file = messages(&server, &alice, &room)
        .await
        .into_iter()
        .find(|e| e["content"]["msgtype"] == "m.file")
        .unwrap();
    assert_eq!(file["content"]["url"], mxc);

    let (_, body) = upload(
        &server,
        &alice,
        "/_matrix/media/v3/upload?filename=a.txt",
        "text/plain",
        b"from alice".to_vec(),
    )
    .await;
    let theirs = body["content_uri"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, &format!("!media get {theirs}")).await;
    assert_eq!(eventually(30, "the bot's download", said("get: ")).await, "get: text/plain a.txt from alice");
    server.send_text(&alice, &room, "!media get mxc://localhost/nothing").await;
    let missing = eventually(30, "a missing file", said("error: ")).await;
    assert!(missing.contains("NotFound"), "{missing}");
}
