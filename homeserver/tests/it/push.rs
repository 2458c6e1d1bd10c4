//! Push notifications: pushers set through `/pushers/set` and a test push gateway (a small HTTP
//! server here, answering `POST /_matrix/push/v1/notify` as Sygnal does) that records what it
//! accepted. Checked: exactly one notification per notifying event, in order, with the badge;
//! nothing for events that do not notify or were read meanwhile; the `event_id_only` format; a
//! gateway outage (and a server restart during it) retried with nothing lost or repeated;
//! rejected pushkeys removing the pusher; the pusher going with its device; the validation and
//! error answers of `/pushers/set`; private gateways refused unless allowed.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

const NOTIFY: &str = "/_matrix/push/v1/notify";

/// How the test gateway answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    /// 500 Internal Server Error: an outage.
    Fail,
    /// 200 with the pushkey in `rejected`.
    Reject,
}

#[derive(Clone)]
struct Gateway {
    url: String,
    state: Arc<Mutex<GatewayState>>,
}

struct GatewayState {
    mode: Mode,
    /// Accepted notifications of events.
    accepted: Vec<Value>,
    /// Accepted badge-only notifications (sent when the user read something).
    badges: Vec<Value>,
    attempts: usize,
}

impl Gateway {
    async fn start() -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{NOTIFY}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(GatewayState {
            mode: Mode::Accept,
            accepted: Vec::new(),
            badges: Vec::new(),
            attempts: 0,
        }));
        let app = Router::new().route(NOTIFY, post(notify)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Gateway { url, state }
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn accepted(&self) -> Vec<Value> {
        self.state.lock().unwrap().accepted.clone()
    }

    fn badges(&self) -> Vec<Value> {
        self.state.lock().unwrap().badges.clone()
    }

    fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }

    /// Waits until the gateway accepted `count` notifications, then a little longer to catch any
    /// extra one, and returns them.
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.accepted().len() < count {
            assert!(tokio::time::Instant::now() < deadline, "only {:#?}", self.accepted());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.accepted()
    }
}

async fn notify(
    State(state): State<Arc<Mutex<GatewayState>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut state = state.lock().unwrap();
    state.attempts += 1;
    match state.mode {
        Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
        Mode::Accept if body["notification"].get("event_id").is_none() => {
            state.badges.push(body);
            (StatusCode::OK, Json(json!({ "rejected": [] })))
        }
        Mode::Accept => {
            state.accepted.push(body);
            (StatusCode::OK, Json(json!({ "rejected": [] })))
        }
        Mode::Reject => {
            let key = body["notification"]["devices"][0]["pushkey"].clone();
            state.accepted.push(body);
            (StatusCode::OK, Json(json!({ "rejected": [key] })))
        }
    }
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.testing.allow_private_destinations = true).await
}

fn pusher_body(gateway: &Gateway, pushkey: &str, data: Value) -> Value {
    let mut data = data;
    data["url"] = json!(gateway.url);
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Bob's phone", "lang": "en",
        "data": data,
    })
}

async fn set_pusher(server: &TestServer, user: &User, body: Value) {
    let (status, res) = server.post("/_matrix/client/v3/pushers/set", Some(&user.token), body).await;
    assert_eq!(status, 200, "{res}");
}

async fn pushers(server: &TestServer, user: &User) -> Vec<Value> {
    let (status, res) = server.get("/_matrix/client/v3/pushers", Some(&user.token)).await;
    assert_eq!(status, 200, "{res}");
    res["pushers"].as_array().unwrap().clone()
}

fn bodies(notifications: &[Value]) -> Vec<String> {
    notifications
        .iter()
        .map(|n| n["notification"]["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn read_up_to(server: &TestServer, user: &User, room: &str, event_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event_id));
    let (status, res) = server.post(&path, Some(&user.token), json!({})).await;
    assert_eq!(status, 200, "{res}");
}

#[tokio::test]
async fn an_offline_users_gateway_gets_one_notification_per_notifying_event() {
    let server = server().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = server.pair().await;
    let before = server.send_text(&alice, &room, "before the pusher").await;
    set_pusher(&server, &bob, pusher_body(&gateway, "bobkey", json!({ "custom": "x" }))).await;
    let listed = pushers(&server, &bob).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["data"]["url"], gateway.url.as_str());
    assert_eq!(listed[0]["data"]["custom"], "x");
    assert_eq!(listed[0]["device_display_name"], "Bob's phone");

    // Three messages from alice notify bob; his own message and a topic change do not.
    server.send_text(&alice, &room, "one").await;
    server.send_text(&bob, &room, "bob's own").await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    let (status, _) = server.put(&path, Some(&alice.token), json!({ "topic": "new topic" })).await;
    assert_eq!(status, 200);
    server.send_text(&alice, &room, "two").await;
    let three = server.send_text(&alice, &room, "three").await;
    let got = gateway.wait_for(3).await;
    assert_eq!(bodies(&got), ["one", "two", "three"], "{got:#?}");
    let last = &got[2]["notification"];
    assert_eq!(last["event_id"], three.as_str());
    assert_eq!(last["room_id"], room.as_str());
    assert_eq!(last["sender"], alice.user_id.as_str());
    assert_eq!(last["type"], "m.room.message");
    assert_eq!(last["counts"]["unread"], 1, "one room with unread notifications");
    assert_eq!(last["devices"][0]["pushkey"], "bobkey");
    assert_eq!(last["devices"][0]["app_id"], "org.example.app");
    assert_eq!(last["devices"][0]["data"], json!({ "custom": "x" }), "the url stays with the server");
    assert!(last["devices"][0]["tweaks"].is_object());
    assert!(!got.iter().any(|n| n["notification"]["event_id"] == before.as_str()));

    // A second room: the badge counts rooms. Once bob read the first, it counts one again.
    let second = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &second).await;
    server.send_text(&alice, &second, "elsewhere").await;
    let got = gateway.wait_for(4).await;
    assert_eq!(got[3]["notification"]["counts"]["unread"], 2, "{:#?}", got[3]);
    read_up_to(&server, &bob, &room, &three).await;
    // Reading sends the new badge alone (no event), so the phone's badge follows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.badges().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no badge push after the receipt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let badge = &gateway.badges()[0]["notification"];
    assert_eq!(badge["counts"]["unread"], 1, "only the second room is unread: {badge}");
    assert_eq!(badge["devices"][0]["pushkey"], "bobkey");
    assert!(badge.get("content").is_none() && badge["id"] == "", "{badge}");
    server.send_text(&alice, &second, "elsewhere again").await;
    let got = gateway.wait_for(5).await;
    assert_eq!(bodies(&got)[4], "elsewhere again");
    assert_eq!(got[4]["notification"]["counts"]["unread"], 1, "{:#?}", got[4]);
    assert_eq!(got.len(), 5, "{got:#?}");

    // An invite notifies its target; pending invites count in the badge, as Synapse counts.
    let third = server.create_room(&alice, json!({ "preset": "private_chat", "name": "Third" })).await;
    server.invite(&alice, &third, &bob.user_id).await;
    let got = gateway.wait_for(6).await;
    let invite = &got[5]["notification"];
    assert_eq!(invite["type"], "m.room.member", "{invite}");
    assert_eq!(invite["user_is_target"], true);
    assert_eq!(invite["membership"], "invite");
    assert_eq!(invite["room_name"], "Third");
    assert_eq!(invite["counts"]["unread"], 2, "one unread room and one invite: {invite}");

    // A redacted room name is gone: it is not sent to the gateway.
    server.join(&bob, &third).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&third));
    let (status, res) = server.put(&path, Some(&alice.token), json!({ "name": "Secret plans" })).await;
    assert_eq!(status, 200, "{res}");
    let name_event = res["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&third), enc(&name_event));
    let (status, res) = server.put(&path, Some(&alice.token), json!({})).await;
    assert_eq!(status, 200, "{res}");
    server.send_text(&alice, &third, "after the redaction").await;
    let got = gateway.wait_for(7).await;
    assert_eq!(bodies(&got)[6], "after the redaction");
    assert!(got[6]["notification"].get("room_name").is_none(), "{:#?}", got[6]);
    assert!(!format!("{got:?}").contains("Secret plans"));
}

#[tokio::test]
async fn event_id_only_pushers_get_no_content() {
    let server = server().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = server.pair().await;
    set_pusher(&server, &bob, pusher_body(&gateway, "k", json!({ "format": "event_id_only" }))).await;
    let sent = server.send_text(&alice, &room, "secret words").await;
    let got = gateway.wait_for(1).await;
    let n = &got[0]["notification"];
    assert_eq!(n["event_id"], sent.as_str());
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["counts"]["unread"], 1);
    assert!(n.get("content").is_none() && n.get("sender").is_none(), "{n}");
    assert!(!got[0].to_string().contains("secret words"));
    assert_eq!(n["devices"][0]["data"], json!({ "format": "event_id_only" }));
}

#[tokio::test]
async fn a_gateway_outage_is_retried_across_a_restart_and_nothing_is_lost() {
    let server = server().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = server.pair().await;
    set_pusher(&server, &bob, pusher_body(&gateway, "k", json!({}))).await;
    gateway.set_mode(Mode::Fail);
    for body in ["a", "b", "c"] {
        server.send_text(&alice, &room, body).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.attempts() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the sender never retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The server restarts during the outage; what was owed is still owed.
    let server = server.restart().await;
    server.send_text(&alice, &room, "d").await;
    gateway.set_mode(Mode::Accept);
    let got = gateway.wait_for(4).await;
    assert_eq!(bodies(&got), ["a", "b", "c", "d"], "{got:#?}");
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let server = server().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = server.pair().await;
    set_pusher(&server, &bob, pusher_body(&gateway, "stale", json!({}))).await;
    gateway.set_mode(Mode::Reject);
    server.send_text(&alice, &room, "first").await;
    gateway.wait_for(1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pushers(&server, &bob).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the rejected pusher stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.set_mode(Mode::Accept);
    server.send_text(&alice, &room, "second").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(gateway.accepted().len(), 1, "nothing goes to a removed pusher");
}

#[tokio::test]
async fn pushers_set_validates_replaces_deletes_and_goes_with_the_device() {
    let server = server().await;
    let gateway = Gateway::start().await;
    let (alice, bob, _room) = server.pair().await;
    let set = "/_matrix/client/v3/pushers/set";
    let call = |user: &User, body: Value| {
        let token = user.token.clone();
        let server = &server;
        async move { server.post(set, Some(&token), body).await }
    };

    let mut no_url = pusher_body(&gateway, "k", json!({}));
    no_url["data"] = json!({});
    let (status, res) = call(&bob, no_url).await;
    assert_eq!(status, 400, "{res}");
    let mut bad_path = pusher_body(&gateway, "k", json!({}));
    bad_path["data"]["url"] = json!("https://push.example/elsewhere");
    let (status, res) = call(&bob, bad_path).await;
    assert_eq!((status, res["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{res}");
    let mut email = pusher_body(&gateway, "k", json!({}));
    email["kind"] = json!("email");
    let (status, res) = call(&bob, email).await;
    assert_eq!((status, res["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{res}");
    let mut long_key = pusher_body(&gateway, "k", json!({}));
    long_key["pushkey"] = json!("k".repeat(513));
    let (status, res) = call(&bob, long_key).await;
    assert_eq!((status, res["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{res}");
    let (status, res) = server.post(set, None, pusher_body(&gateway, "k", json!({}))).await;
    assert_eq!((status, res["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{res}");
    let res = server
        .http
        .post(server.url(set))
        .bearer_auth(&bob.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["errcode"], "M_NOT_JSON", "{res}");
    assert!(pushers(&server, &bob).await.is_empty(), "nothing was stored by a refused request");

    // Setting it again updates it; another user taking the pushkey takes it over unless appending.
    set_pusher(&server, &bob, pusher_body(&gateway, "shared", json!({}))).await;
    let mut renamed = pusher_body(&gateway, "shared", json!({}));
    renamed["device_display_name"] = json!("Renamed");
    set_pusher(&server, &bob, renamed).await;
    let listed = pushers(&server, &bob).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["device_display_name"], "Renamed");
    let mut appended = pusher_body(&gateway, "shared", json!({}));
    appended["append"] = json!(true);
    set_pusher(&server, &alice, appended).await;
    assert_eq!((pushers(&server, &alice).await.len(), pushers(&server, &bob).await.len()), (1, 1));
    set_pusher(&server, &alice, pusher_body(&gateway, "shared", json!({}))).await;
    assert!(pushers(&server, &bob).await.is_empty(), "without append the pushkey moved to alice");

    // kind: null deletes.
    let delete = json!({ "kind": null, "app_id": "org.example.app", "pushkey": "shared" });
    let (status, res) = call(&alice, delete).await;
    assert_eq!(status, 200, "{res}");
    assert!(pushers(&server, &alice).await.is_empty());

    // Logging the device out takes its pushers with it, even one another session edited since.
    set_pusher(&server, &bob, pusher_body(&gateway, "phone", json!({}))).await;
    let (status, res) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": bob.password }),
        )
        .await;
    assert_eq!(status, 200, "{res}");
    let laptop = User { token: res["access_token"].as_str().unwrap().to_owned(), ..bob.clone() };
    let mut edited = pusher_body(&gateway, "phone", json!({}));
    edited["device_display_name"] = json!("Edited on the laptop");
    set_pusher(&server, &laptop, edited).await;
    assert_eq!(pushers(&server, &laptop).await.len(), 1);
    let (status, _) = server.post("/_matrix/client/v3/logout", Some(&bob.token), json!({})).await;
    assert_eq!(status, 200);
    assert!(pushers(&server, &laptop).await.is_empty(), "the pusher went with the phone");
}

#[tokio::test]
async fn private_gateways_are_refused_unless_allowed() {
    let server = TestServer::start().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = server.pair().await;
    set_pusher(&server, &bob, pusher_body(&gateway, "k", json!({}))).await;
    server.send_text(&alice, &room, "to a loopback gateway").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gateway.attempts(), 0, "a loopback gateway was reached without the testing switch");
}
