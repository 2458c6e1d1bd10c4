//! The media repository: uploads and downloads byte for byte, the headers that keep media from
//! running script on our origin, authentication (new media is not served unauthenticated
//! unless the legacy switch was on when it was uploaded), the size limit and the quota,
//! asynchronous uploads (create, then one upload by the creator), durability across a
//! restart, plugins uploading and downloading through the `media` import, thumbnails of real
//! images (generated here), quarantine and deletion by admins, and a 100 MB file streamed
//! through the `lattice` binary with its memory watched.

use plugins::Grants;
use reqwest::Response;
use serde_json::{Value, json};

use crate::{
    harness::{TestServer, User},
    plugins::{eventually, guest, messages, quick, spec, wait_joined},
};

/// Uploads `data`; the answer's status and JSON.
pub(crate) async fn upload(
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

pub(crate) async fn download(server: &TestServer, token: Option<&str>, path: &str) -> Response {
    let mut request = reqwest::Client::new().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// `server/id` of an `mxc://` URI.
pub(crate) fn media_path(mxc: &str) -> String {
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

    // Bytes that only claim to be an image, and other media, have no thumbnail.
    let thumb =
        format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32&method=scale", media_path(&mxc));
    let answer = download(&server, Some(&alice.token), &thumb).await;
    assert_eq!(answer.status(), 400, "the spec's answer for content that cannot be thumbnailed");
    assert_eq!(answer.json::<Value>().await.unwrap()["errcode"], "M_UNKNOWN");
    let thumb = format!("{}?width=32&height=32", html.replace("/download/", "/thumbnail/"));
    assert_eq!(download(&server, Some(&alice.token), &thumb).await.status(), 400);
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

/// An image of `width`x`height` in `format`, made here (a gradient, so scaling has work to do).
pub(crate) fn image_bytes(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let pixels = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x * 255 / width) as u8, (y * 255 / height) as u8, 128, 255])
    });
    let image = match format {
        image::ImageFormat::Jpeg => {
            image::DynamicImage::ImageRgb8(image::DynamicImage::ImageRgba8(pixels).to_rgb8())
        }
        _ => image::DynamicImage::ImageRgba8(pixels),
    };
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A thumbnail request's status, content type and body.
async fn thumbnail(server: &TestServer, user: &User, mxc: &str, query: &str) -> (u16, String, Vec<u8>) {
    let path = format!("/_matrix/client/v1/media/thumbnail/{}?{query}", media_path(mxc));
    let answer = download(server, Some(&user.token), &path).await;
    let status = answer.status().as_u16();
    let kind =
        answer.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, kind, answer.bytes().await.unwrap().to_vec())
}

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).expect("a thumbnail decodes");
    (image.width(), image.height())
}

#[tokio::test]
async fn thumbnails_of_real_images_are_scaled_cropped_stored_once_and_never_upscaled() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let formats = [
        (image::ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
        (image::ImageFormat::Png, "image/png", "image/png"),
        (image::ImageFormat::Gif, "image/gif", "image/png"),
        (image::ImageFormat::WebP, "image/webp", "image/png"),
    ];
    for (format, uploaded_as, thumbnail_type) in formats {
        let original = image_bytes(1200, 600, format);
        let (code, body) =
            upload(&server, &alice, "/_matrix/media/v3/upload", uploaded_as, original.clone()).await;
        assert_eq!(code, 200, "{body}");
        let mxc = body["content_uri"].as_str().unwrap().to_owned();

        let (code, kind, cropped) = thumbnail(&server, &alice, &mxc, "width=30&height=30&method=crop").await;
        assert_eq!((code, kind.as_str()), (200, thumbnail_type), "{uploaded_as}");
        assert_eq!(dimensions(&cropped), (32, 32), "{uploaded_as}: the 32x32 crop");

        let (code, _, scaled) = thumbnail(&server, &alice, &mxc, "width=300&height=200&method=scale").await;
        assert_eq!(code, 200);
        assert_eq!(dimensions(&scaled), (320, 160), "{uploaded_as}: within 320x240, the aspect ratio kept");

        // Generated once and stored: recorded, and asking again writes nothing new.
        let (origin, id) =
            media_path(&mxc).split_once('/').map(|(o, i)| (o.to_owned(), i.to_owned())).unwrap();
        let stored = server.server.db.thumbnail(&origin, &id, 320, 240, "scale").await.unwrap();
        assert_eq!(stored.map(|t| t.size as usize), Some(scaled.len()));
        let files = walk_files(&server.server.config.data_dir.join("media"));
        let (_, _, again) = thumbnail(&server, &alice, &mxc, "width=300&height=200&method=scale").await;
        assert_eq!(again, scaled);
        assert_eq!(walk_files(&server.server.config.data_dir.join("media")), files);
        let (_, _, animated) =
            thumbnail(&server, &alice, &mxc, "width=300&height=200&method=scale&animated=false").await;
        assert_eq!(animated, scaled, "a static thumbnail when animation is not wanted");

        // Larger than every size: the original.
        let (code, kind, big) = thumbnail(&server, &alice, &mxc, "width=1000&height=1000").await;
        assert_eq!((code, kind.as_str()), (200, uploaded_as));
        assert_eq!(big, original);
    }

    // Never upscaled: a small image is its own thumbnail.
    let small = image_bytes(50, 40, image::ImageFormat::Png);
    let (_, body) = upload(&server, &alice, "/_matrix/media/v3/upload", "image/png", small.clone()).await;
    let mxc = body["content_uri"].as_str().unwrap().to_owned();
    let (code, _, answer) = thumbnail(&server, &alice, &mxc, "width=96&height=96&method=crop").await;
    assert_eq!((code, answer), (200, small));

    // Bad parameters are the client's error; thumbnails need authentication like downloads.
    for (query, errcode) in [
        ("height=32", "M_MISSING_PARAM"),
        ("width=0&height=32", "M_INVALID_PARAM"),
        ("width=32&height=-1", "M_INVALID_PARAM"),
        ("width=32&height=32&method=zoom", "M_INVALID_PARAM"),
        ("width=32&height=32&animated=maybe", "M_INVALID_PARAM"),
    ] {
        let path = format!("/_matrix/client/v1/media/thumbnail/{}?{query}", media_path(&mxc));
        let answer = download(&server, Some(&alice.token), &path).await;
        assert_eq!(answer.status(), 400, "{query}");
        assert_eq!(answer.json::<Value>().await.unwrap()["errcode"], errcode, "{query}");
    }
    let path = format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32", media_path(&mxc));
    assert_eq!(download(&server, None, &path).await.status(), 401);
}

#[tokio::test]
async fn admins_quarantine_and_delete_media_and_shared_content_outlives_one_deletion() {
    let server = TestServer::start_with(|c| c.registration.shared_secret = "reg_secret".into()).await;
    let alice = server.register("alice").await;
    let admin = server.register_admin("root").await;
    let data = sample(10_000);
    let (_, first) = upload(&server, &alice, "/_matrix/media/v3/upload", "text/plain", data.clone()).await;
    let (_, second) = upload(&server, &alice, "/_matrix/media/v3/upload", "text/plain", data.clone()).await;
    let (first, second) = (
        media_path(first["content_uri"].as_str().unwrap()),
        media_path(second["content_uri"].as_str().unwrap()),
    );
    let get = |path: String| {
        let token = alice.token.clone();
        let server = &server;
        async move { download(server, Some(&token), &format!("/_matrix/client/v1/media/download/{path}")).await }
    };

    // Only admins; a quarantine hides the media until lifted.
    let (code, body) = server
        .post(&format!("/_synapse/admin/v1/media/quarantine/{first}"), Some(&alice.token), json!({}))
        .await;
    assert_eq!((code, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (code, _) = server
        .post(&format!("/_synapse/admin/v1/media/quarantine/{first}"), Some(&admin.token), json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(get(first.clone()).await.status(), 404);
    let thumbnail = download(
        &server,
        Some(&alice.token),
        &format!("/_matrix/client/v1/media/thumbnail/{first}?width=32&height=32"),
    )
    .await;
    assert_eq!(thumbnail.status(), 404, "nor its thumbnails");
    assert_eq!(get(second.clone()).await.status(), 200, "other media with the same bytes is not quarantined");
    let (code, _) = server
        .post(&format!("/_synapse/admin/v1/media/unquarantine/{first}"), Some(&admin.token), json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(get(first.clone()).await.status(), 200);

    // Deleting one of two media with the same bytes keeps the other's content.
    let delete = |path: String, token: String| {
        let server = &server;
        async move {
            let answer = reqwest::Client::new()
                .delete(server.url(&format!("/_synapse/admin/v1/media/{path}")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (answer.status().as_u16(), answer.json::<Value>().await.unwrap())
        }
    };
    let (code, _) = delete(first.clone(), alice.token.clone()).await;
    assert_eq!(code, 403);
    let (code, body) = delete(first.clone(), admin.token.clone()).await;
    assert_eq!((code, body["total"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(get(first.clone()).await.status(), 404);
    let answer = get(second.clone()).await;
    assert_eq!(answer.bytes().await.unwrap().to_vec(), data);
    let (code, _) = delete(first.clone(), admin.token.clone()).await;
    assert_eq!(code, 404, "already gone");
    // The last media using the content takes its file with it.
    let files = || walk_files(&server.server.config.data_dir.join("media"));
    let before = files();
    let (code, _) = delete(second.clone(), admin.token.clone()).await;
    assert_eq!(code, 200);
    assert_eq!(files(), before - 1, "the content file is removed");
    let (code, body) = server
        .post("/_synapse/admin/v1/media/quarantine/localhost/unknown", Some(&admin.token), json!({}))
        .await;
    assert_eq!((code, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
}

/// Regular files under `dir` (the temporary directory excluded).
fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type().unwrap().is_dir() {
            true if e.file_name() == "tmp" => 0,
            true => walk_files(&e.path()),
            false => 1,
        })
        .sum()
}

#[tokio::test]
async fn a_100_mb_upload_and_download_stream_through_the_server_in_bounded_memory() {
    let lattice = crate::plugin_binary::Lattice::start("", &[]).await;
    let token = lattice.register("alice").await;
    let data: Vec<u8> = (0..100_000_000usize).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let baseline = lattice.rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (lattice_pid_status, peak, sampling) =
            (format!("/proc/{}/status", lattice.pid()), peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(&lattice_pid_status)
                    && let Some(kib) = status
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let http = reqwest::Client::new();
    let answer = http
        .post(lattice.url("/_matrix/media/v3/upload"))
        .bearer_auth(&token)
        .header("content-type", "video/mp4")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mxc = answer.json::<Value>().await.unwrap()["content_uri"].as_str().unwrap().to_owned();
    let mut answer = http
        .get(lattice.url(&format!("/_matrix/client/v1/media/download/{}", media_path(&mxc))))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mut offset = 0;
    while let Some(chunk) = answer.chunk().await.unwrap() {
        assert!(data[offset..offset + chunk.len()] == chunk[..], "the download differs at {offset}");
        offset += chunk.len();
    }
    assert_eq!(offset, data.len());
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();
    let grew_mib = (peak.load(std::sync::atomic::Ordering::Relaxed) - baseline) / 1024;
    assert!(grew_mib < 40, "the server's memory grew by {grew_mib} MiB for a 100 MB file");
}
