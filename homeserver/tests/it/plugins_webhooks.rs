//! Webhooks: requests to `/_lattice/plugins/<id>/…` reach a plugin granted `webhooks`
//! (`plugins/examples/webhook-notify`), which authenticates the caller itself. Checked: a
//! notification posted into a room, the plugin's refusals passed on, the headers that keep an
//! answer from running script on the server's origin, and the server's own refusals — a plugin
//! not granted webhooks or unknown, an oversize body, a disabled plugin.

use plugins::Grants;
use serde_json::{Value, json};

use crate::plugins::{eventually, guest, hosting, messages, wait_joined};

const HOOK: &str = "/_lattice/plugins/notify/notify";

#[tokio::test]
async fn a_webhook_posts_into_a_room_and_is_refused_without_the_token_or_the_grant() {
    let (Some(notify), Some(echo)) = (guest("webhook_notify"), guest("echo_bot")) else { return };
    let grants = Grants { webhooks: true, ..Grants::default() };
    let server = hosting(vec![
        ("notify", notify, json!({ "token": "hook-secret" }), grants),
        ("echo", echo, json!({}), Grants::default()),
    ])
    .await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@notify:localhost").await;
    wait_joined(&server, &alice, &room, "@notify:localhost").await;

    let http = reqwest::Client::new();
    let url = |path: &str| server.url(path);
    let post =
        |path: &str, token: &str, body: Value| http.post(url(path)).bearer_auth(token).json(&body).send();
    let answer = post(HOOK, "hook-secret", json!({ "room": room, "text": "build 42 passed" })).await.unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["content-security-policy"], "sandbox");
    assert_eq!(answer.headers()["x-content-type-options"], "nosniff");
    let body: Value = answer.json().await.unwrap();
    let event_id = body["event_id"].as_str().expect("the event id").to_owned();
    let notice = eventually(30, "the notice", || async {
        messages(&server, &alice, &room).await.into_iter().find(|e| e["event_id"] == event_id.as_str())
    })
    .await;
    assert_eq!(notice["sender"], "@notify:localhost");
    assert_eq!(notice["content"], json!({ "msgtype": "m.notice", "body": "build 42 passed" }));

    // The plugin's own refusals: a wrong token, a room it is not in, another path.
    let answer = post(HOOK, "guess", json!({ "room": room, "text": "x" })).await.unwrap();
    assert_eq!(answer.status(), 401);
    let elsewhere = server.create_room(&alice, json!({})).await;
    let answer = post(HOOK, "hook-secret", json!({ "room": elsewhere, "text": "x" })).await.unwrap();
    assert_eq!(answer.status(), 403);
    let answer = http.get(url("/_lattice/plugins/notify/other")).send().await.unwrap();
    assert_eq!(answer.status(), 404);

    // The server's: no grant, no plugin, an oversize body, a disabled plugin.
    for path in ["/_lattice/plugins/echo/notify", "/_lattice/plugins/nobody/notify"] {
        let answer = post(path, "hook-secret", json!({})).await.unwrap();
        assert_eq!(answer.status(), 404, "{path}");
        assert_eq!(answer.json::<Value>().await.unwrap()["errcode"], "M_NOT_FOUND");
    }
    let huge =
        http.post(url(HOOK)).bearer_auth("hook-secret").body(vec![b'x'; 2 << 20]).send().await.unwrap();
    assert_eq!(huge.status(), 413);
    let (code, _) =
        server.post("/_lattice/admin/v1/plugins/notify/disable", Some(&admin.token), json!({})).await;
    assert_eq!(code, 200);
    let answer = post(HOOK, "hook-secret", json!({ "room": room, "text": "x" })).await.unwrap();
    assert_eq!(answer.status(), 503);
}
