//! Federation between Lattice servers in this process, over HTTPS checked against a test CA:
//! verify keys fetched, stored and served as a notary; `X-Matrix` signed requests accepted and
//! forged ones refused; destinations the TLS roots or the SSRF guard do not allow unreachable.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use homeserver::config::Config;
use homeserver_core::{keys::ServerKey, time::now_millis};
use ruma::{
    OwnedServerName, ServerName, UserId,
    api::federation::{
        authentication::{XMatrix, XMatrixSigningInput},
        query::get_profile_information,
    },
};
use serde_json::{Value, json};

use crate::harness::TestServer;

/// A certificate authority and one certificate it signed for `localhost`, `127.0.0.1` and
/// `*.lattice.test` (the names DNS discovery tests publish).
pub(crate) struct TestCa {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

impl TestCa {
    pub(crate) fn create() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=Lattice test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        ca.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        openssl(&ca, dir.path());
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "tls.key", "-out", "tls.csr"]);
        openssl(&csr, dir.path());
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:*.lattice.test\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "tls.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "tls.crt",
            ],
            dir.path(),
        );
        let path = |name: &str| dir.path().join(name);
        TestCa { ca: path("ca.crt"), cert: path("tls.crt"), key: path("tls.key"), _dir: dir }
    }
}

/// A port for a server whose name must carry it before it binds. Chosen below the kernel's
/// ephemeral range (32768 and up, where `:0` binds and outgoing connections draw from), so no
/// other test takes it between the choice and the bind.
pub(crate) fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 12_000;
        let port = 20_000 + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server named `localhost:PORT` serving HTTPS on that port with the CA's certificate,
/// trusting the CA and allowed to reach loopback.
pub(crate) async fn federated(ca: &TestCa, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let port = free_port();
    let (cert, key, ca_file) =
        (ca.cert.display().to_string(), ca.key.display().to_string(), ca.ca.display().to_string());
    TestServer::start_with(move |c| {
        c.server_name = format!("localhost:{port}");
        c.listen.tls = format!("127.0.0.1:{port}");
        c.tls.certificate = cert;
        c.tls.private_key = key;
        c.federation.ca_file = ca_file;
        c.testing.allow_private_destinations = true;
        adjust(c);
    })
    .await
}

pub(crate) fn name_of(server: &TestServer) -> OwnedServerName {
    server.server.federation.key.server_name().to_owned()
}

pub(crate) fn key_of(server: &TestServer) -> &ServerKey {
    &server.server.federation.key
}

/// An HTTPS client for raw requests (the server's certificate is not what these tests check).
fn raw_https() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap()
}

/// Sends `GET path` to `to`, signed as `origin` with `key` for `destination`.
async fn signed_get(
    to: &TestServer,
    path: &str,
    signed_path: &str,
    key: &ServerKey,
    destination: &ServerName,
) -> (u16, Value) {
    let request = http::Request::builder().method("GET").uri(signed_path).body(Vec::<u8>::new()).unwrap();
    let input = XMatrixSigningInput::new(key.server_name().to_owned(), destination.to_owned(), key.pair());
    let header = XMatrix::sign_http_request(&request, input).unwrap();
    let value = http::HeaderValue::from(&header);
    let url = format!("{}{path}", to.tls_base.as_ref().unwrap());
    let response =
        raw_https().get(url).header("authorization", value.to_str().unwrap()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A signed `POST` of a JSON body.
async fn signed_post(to: &TestServer, path: &str, body: &Value, key: &ServerKey) -> (u16, Value) {
    signed_json(to, key, http::Method::POST, path, serde_json::to_vec(body).unwrap()).await
}

/// A request with a JSON body, signed by `key` for `to`.
async fn signed_json(
    to: &TestServer,
    key: &ServerKey,
    method: http::Method,
    path: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let request = http::Request::builder().method(method.clone()).uri(path).body(bytes.clone()).unwrap();
    let input = XMatrixSigningInput::new(key.server_name().to_owned(), name_of(to), key.pair());
    let header = http::HeaderValue::from(&XMatrix::sign_http_request(&request, input).unwrap());
    let url = format!("{}{path}", to.tls_base.as_ref().unwrap());
    let response = raw_https()
        .request(method, url)
        .header("authorization", header.to_str().unwrap())
        .header("content-type", "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn profile_path(user: &str) -> String {
    format!("/_matrix/federation/v1/query/profile?user_id={}", crate::harness::enc(user))
}

#[tokio::test]
async fn keys_are_fetched_stored_and_served_as_a_notary() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let keys = &a.server.federation.keys;
    let b_key = key_of(&b);
    let now = now_millis() as i64;
    let fetched = keys.verify_key(&name_of(&b), &b_key.key_id(), now).await.unwrap().expect("fetched");
    assert_eq!(fetched.encode(), b_key.public_key_base64());
    let stored = a.server.db.server_keys(name_of(&b).as_str()).await.unwrap();
    assert_eq!(stored.len(), 1, "kept in the database");
    assert!(stored[0].valid_until_ts > now, "valid for a while (the week cap is unit-tested)");
    assert!(keys.verify_key(&name_of(&b), "ed25519:nope", now).await.unwrap().is_none());
    assert!(
        keys.verify_key(&name_of(&b), &b_key.key_id(), now + 30 * 24 * 3600 * 1000).await.unwrap().is_none(),
        "not for signatures made after the key's validity"
    );

    // A relays B's keys, signed by B and by itself.
    let url = format!("{}/_matrix/key/v2/query/{}", a.tls_base.as_ref().unwrap(), name_of(&b));
    let answer: Value = raw_https().get(url).send().await.unwrap().json().await.unwrap();
    let relayed = &answer["server_keys"][0];
    assert_eq!(relayed["server_name"], name_of(&b).as_str());
    assert!(relayed["signatures"][name_of(&b).as_str()].is_object());
    assert!(relayed["signatures"][name_of(&a).as_str()].is_object());
    // The older form naming a key id answers the same.
    let url =
        format!("{}/_matrix/key/v2/query/{}/{}", a.tls_base.as_ref().unwrap(), name_of(&b), b_key.key_id());
    let answer: Value = raw_https().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["server_keys"][0]["server_name"], name_of(&b).as_str(), "{answer}");
    // The batch form, about A itself: its own document.
    let url = format!("{}/_matrix/key/v2/query", a.tls_base.as_ref().unwrap());
    let body = json!({ "server_keys": { name_of(&a).as_str(): {} } });
    let answer: Value = raw_https().post(url).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        answer["server_keys"][0]["verify_keys"][key_of(&a).key_id()]["key"],
        key_of(&a).public_key_base64()
    );
    // Asked for named keys of B: the responses holding them, none for a key B never had.
    let url = format!("{}/_matrix/key/v2/query", a.tls_base.as_ref().unwrap());
    for (key_id, expected) in [(b_key.key_id(), 1), ("ed25519:never".to_owned(), 0)] {
        let body = json!({ "server_keys": { name_of(&b).as_str(): { key_id.clone(): {} } } });
        let answer: Value = raw_https().post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(answer["server_keys"].as_array().unwrap().len(), expected, "{key_id}: {answer}");
    }
}

#[tokio::test]
async fn signed_requests_are_answered_across_servers() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let bob = b.register("bob").await;
    let (status, _) = b
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            Some(&bob.token),
            json!({ "displayname": "Bob B" }),
        )
        .await;
    assert_eq!(status, 200);
    let user = UserId::parse(&bob.user_id).unwrap();
    let response = a
        .server
        .federation
        .client
        .send(&name_of(&b), get_profile_information::v1::Request::new(user))
        .await
        .expect("B answers A's signed request");
    assert_eq!(response.get("displayname"), Some(&json!("Bob B")));

    // A client of A asking for Bob's profile gets B's answer; an unknown user of B is not found.
    let ann = a.register("ann").await;
    let (status, body) =
        a.get(&format!("/_matrix/client/v3/profile/{}", bob.user_id), Some(&ann.token)).await;
    assert_eq!((status, body), (200, json!({ "displayname": "Bob B" })));
    let field = format!("/_matrix/client/v3/profile/{}/avatar_url", bob.user_id);
    assert_eq!(a.get(&field, Some(&ann.token)).await, (200, json!({})));
    let nobody = format!("/_matrix/client/v3/profile/@nobody:{}", name_of(&b));
    let (status, body) = a.get(&nobody, Some(&ann.token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
}

#[tokio::test]
async fn forged_and_misaddressed_requests_are_unauthorized() {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let bob = b.register("bob").await;
    let path = profile_path(&bob.user_id);
    let (a_name, b_name) = (name_of(&a), name_of(&b));

    let (status, _) = signed_get(&b, &path, &path, key_of(&a), &b_name).await;
    assert_eq!(status, 200, "the genuine request passes");

    let url = format!("{}{path}", b.tls_base.as_ref().unwrap());
    let unsigned = raw_https().get(&url).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");
    // A header that cannot be parsed (the origin is no server name) is a bad request.
    let malformed = raw_https()
        .get(&url)
        .header("Authorization", r#"X-Matrix origin="localhost:http",key="ed25519:1",sig="abc""#)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNAUTHORIZED");

    // A's name and key id, another secret key.
    let impostor = ServerKey::from_pkcs8(
        &a_name,
        &ServerKey::generate_pkcs8(),
        key_of(&a).key_id().trim_start_matches("ed25519:"),
    )
    .unwrap();
    let (status, body) = signed_get(&b, &path, &path, &impostor, &b_name).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{body}");
    // A key id A never published.
    let unknown = ServerKey::from_pkcs8(&a_name, &ServerKey::generate_pkcs8(), "forged").unwrap();
    assert_eq!(signed_get(&b, &path, &path, &unknown, &b_name).await.0, 401);
    // Signed for another destination, replayed to B.
    assert_eq!(signed_get(&b, &path, &path, key_of(&a), &a_name).await.0, 401);
    // Signed for one URI, sent with another.
    let other = profile_path("@someone:elsewhere");
    assert_eq!(signed_get(&b, &path, &other, key_of(&a), &b_name).await.0, 401);
    // A server claiming to be B itself.
    assert_eq!(signed_get(&b, &path, &path, key_of(&b), &b_name).await.0, 401);
}

#[tokio::test]
async fn untrusted_certificates_and_private_destinations_are_refused() {
    let ca = TestCa::create();
    let b = federated(&ca, |_| {}).await;
    let b_key = key_of(&b).key_id();
    let now = now_millis() as i64;
    // Without the test CA, B's certificate is not trusted: no key, so its requests would fail.
    let untrusting = federated(&ca, |c| c.federation.ca_file = String::new()).await;
    let keys = &untrusting.server.federation.keys;
    assert!(keys.verify_key(&name_of(&b), &b_key, now).await.unwrap().is_none());
    // Without `allow_private_destinations`, loopback is out of reach whatever the name says.
    let guarded = federated(&ca, |c| c.testing.allow_private_destinations = false).await;
    let keys = &guarded.server.federation.keys;
    assert!(keys.verify_key(&name_of(&b), &b_key, now).await.unwrap().is_none());
    let literal: OwnedServerName =
        format!("127.0.0.1:{}", b.tls_base.as_ref().unwrap().rsplit(':').next().unwrap()).try_into().unwrap();
    assert!(keys.verify_key(&literal, &b_key, now).await.unwrap().is_none());
}

/// Builds an event of `room` (on `on`) as server `key` would: on the room's current forward
/// extremities, with the auth events the room version's rules select from its current state.
pub(crate) async fn remote_event(
    on: &TestServer,
    key: &ServerKey,
    room: &str,
    template: homeserver_rooms::builder::EventTemplate,
) -> Value {
    let rooms = &on.server.app.rooms;
    let room_id = ruma::RoomId::parse(room).unwrap();
    let prev_events: Vec<ruma::OwnedEventId> = on
        .server
        .db
        .room_extremities(room)
        .await
        .unwrap()
        .into_iter()
        .map(|id| ruma::EventId::parse(id).unwrap())
        .collect();
    let mut depth = 0;
    for prev in &prev_events {
        depth = depth.max(rooms.cache().get(prev).await.unwrap().unwrap().depth);
    }
    let version = rooms.room_version(&room_id).await.unwrap().unwrap();
    let rules = homeserver_rooms::versions::rules(&version).unwrap();
    let content = serde_json::value::to_raw_value(&template.content).unwrap();
    let keys = homeserver_rooms::auth::auth_state_keys(
        &template.kind,
        &template.sender,
        template.state_key.as_deref(),
        &content,
        &rules.authorization,
    )
    .unwrap();
    let mut auth_events = Vec::new();
    for (kind, state_key) in keys {
        if let Some(pdu) = rooms.current_state_event(&room_id, &kind.to_string(), &state_key).await.unwrap() {
            auth_events.push(pdu.event_id.clone());
        }
    }
    let referenced: Vec<ruma::OwnedEventId> = prev_events.iter().chain(&auth_events).cloned().collect();
    let pdus = rooms.cache().get_many(&referenced).await.unwrap();
    let references = homeserver_rooms::event_format::hashes_of(pdus.values(), &rules);
    let placement = homeserver_rooms::builder::Placement {
        room_id: Some(&room_id),
        prev_events: &prev_events,
        auth_events: &auth_events,
        depth: depth + 1,
        origin_server_ts: now_millis(),
        references: &references,
    };
    let pdu = homeserver_rooms::builder::build_pdu(key, &rules, &template, &placement).unwrap();
    let mut value: Value = serde_json::from_str(&pdu.json).unwrap();
    value.as_object_mut().unwrap().insert("event_id_for_test".into(), json!(pdu.event_id));
    value
}

/// Splits off the event id `remote_event` noted, leaving the PDU as sent.
pub(crate) fn pdu_and_id(mut value: Value) -> (Value, String) {
    let id = value.as_object_mut().unwrap().remove("event_id_for_test").unwrap();
    (value, id.as_str().unwrap().to_owned())
}

/// `PUT /send/{txn}` to `to`, signed by `key`.
pub(crate) async fn send_transaction(
    to: &TestServer,
    key: &ServerKey,
    txn: &str,
    pdus: &[Value],
) -> (u16, Value) {
    send_transaction_with(to, key, txn, pdus, &[]).await
}

/// `PUT /send/{txn}` with EDUs too.
pub(crate) async fn send_transaction_with(
    to: &TestServer,
    key: &ServerKey,
    txn: &str,
    pdus: &[Value],
    edus: &[Value],
) -> (u16, Value) {
    let path = format!("/_matrix/federation/v1/send/{txn}");
    let body =
        json!({ "origin": key.server_name(), "origin_server_ts": now_millis(), "pdus": pdus, "edus": edus });
    signed_json(to, key, http::Method::PUT, &path, serde_json::to_vec(&body).unwrap()).await
}

/// Two federating servers, Alice on B with a public room, and Ann: a user name of A.
struct RoomOnB {
    ca: TestCa,
    a: TestServer,
    b: TestServer,
    alice: crate::harness::User,
    room: String,
    room_id: ruma::OwnedRoomId,
    ann: ruma::OwnedUserId,
}

async fn room_on_b() -> RoomOnB {
    let ca = TestCa::create();
    let (a, b) = (federated(&ca, |_| {}).await, federated(&ca, |_| {}).await);
    let alice = b.register("alice").await;
    let room = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let ann = UserId::parse(format!("@ann:{}", name_of(&a))).unwrap();
    RoomOnB { ca, a, b, alice, room, room_id, ann }
}

fn member(user: &UserId, membership: &str) -> homeserver_rooms::builder::EventTemplate {
    homeserver_rooms::builder::EventTemplate::state(
        "m.room.member",
        user.as_str(),
        user,
        json!({ "membership": membership }),
    )
}

pub(crate) fn message(user: &UserId, body: &str) -> homeserver_rooms::builder::EventTemplate {
    homeserver_rooms::builder::EventTemplate::new(
        "m.room.message",
        user,
        json!({ "msgtype": "m.text", "body": body }),
    )
}

#[tokio::test]
async fn an_event_whose_gap_the_origin_will_not_fill_is_refused() {
    let RoomOnB { a, b, room, ann, .. } = room_on_b().await;
    let a_key = key_of(&a).clone();
    let (join, _) = pdu_and_id(remote_event(&b, &a_key, &room, member(&ann, "join")).await);
    assert_eq!(send_transaction(&b, &a_key, "j1", &[join]).await.0, 200);
    // X is signed as A's but never sent, and A itself does not hold it; Y follows X.
    let (x, x_id) = pdu_and_id(remote_event(&b, &a_key, &room, message(&ann, "never sent")).await);
    let room_id = ruma::RoomId::parse(&room).unwrap();
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    let auth: Vec<ruma::OwnedEventId> = x["auth_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| ruma::EventId::parse(a.as_str().unwrap()).unwrap())
        .collect();
    let placement = homeserver_rooms::builder::Placement {
        room_id: Some(&room_id),
        prev_events: &[ruma::EventId::parse(&x_id).unwrap()],
        auth_events: &auth,
        depth: x["depth"].as_u64().unwrap() + 1,
        origin_server_ts: now_millis(),
        references: &Default::default(),
    };
    let y = homeserver_rooms::builder::build_pdu(&a_key, &rules, &message(&ann, "after the gap"), &placement)
        .unwrap();
    let (status, answer) =
        send_transaction(&b, &a_key, "gap", &[serde_json::from_str(&y.json).unwrap()]).await;
    assert_eq!(status, 200);
    assert!(answer["pdus"][y.event_id.as_str()]["error"].is_string(), "{answer}");
    assert!(b.server.db.dag_events(&[y.event_id.to_string()]).await.unwrap().is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_redaction_of_another_rooms_event_is_rejected() {
    let RoomOnB { a, b, alice, room, ann, .. } = room_on_b().await;
    let a_key = key_of(&a).clone();
    let other = b.create_room(&alice, json!({ "preset": "public_chat" })).await;
    for (i, r) in [&room, &other].into_iter().enumerate() {
        let (join, _) = pdu_and_id(remote_event(&b, &a_key, r, member(&ann, "join")).await);
        assert_eq!(send_transaction(&b, &a_key, &format!("j{i}"), &[join]).await.0, 200);
    }
    let (hello, hello_id) = pdu_and_id(remote_event(&b, &a_key, &room, message(&ann, "keep me")).await);
    assert_eq!(send_transaction(&b, &a_key, "m1", &[hello]).await.1["pdus"][&hello_id], json!({}));
    // Ann may redact her own message, but not from another room.
    let mut template = homeserver_rooms::builder::EventTemplate::new("m.room.redaction", &ann, json!({}));
    template.redacts = Some(ruma::EventId::parse(&hello_id).unwrap());
    let (redaction, redaction_id) = pdu_and_id(remote_event(&b, &a_key, &other, template).await);
    let (status, answer) = send_transaction(&b, &a_key, "r1", &[redaction]).await;
    assert_eq!((status, &answer["pdus"][&redaction_id]), (200, &json!({})), "{answer}");
    let stored = b.server.db.dag_events(std::slice::from_ref(&redaction_id)).await.unwrap();
    assert!(
        stored[0].rejected_reason.as_ref().is_some_and(|r| r.contains("another room")),
        "{:?}",
        stored[0]
    );
    let event = format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        crate::harness::enc(&room),
        crate::harness::enc(&hello_id)
    );
    let (status, original) = b.get(&event, Some(&alice.token)).await;
    assert_eq!((status, original["content"]["body"].as_str()), (200, Some("keep me")), "{original}");
}

#[tokio::test]
async fn transactions_place_remote_events_once_and_refuse_what_they_must() {
    let RoomOnB { a, b, alice, room, ann, .. } = room_on_b().await;
    let a_key = key_of(&a).clone();

    // Ann (on A) joins and speaks; B places both and Alice sees them.
    let (join, join_id) = pdu_and_id(remote_event(&b, &a_key, &room, member(&ann, "join")).await);
    let (status, answer) = send_transaction(&b, &a_key, "t1", &[join]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pdus"][&join_id], json!({}), "{answer}");
    let (hello, hello_id) = pdu_and_id(remote_event(&b, &a_key, &room, message(&ann, "hello from A")).await);
    let (_, answer) = send_transaction(&b, &a_key, "t2", std::slice::from_ref(&hello)).await;
    assert_eq!(answer["pdus"][&hello_id], json!({}), "{answer}");
    let sync = b.sync(&alice, None, 0).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert!(crate::harness::bodies(timeline).contains(&"hello from A".to_owned()), "{timeline}");

    // The same transaction id again, even with other content: the first answer, nothing new.
    let (other, other_id) = pdu_and_id(remote_event(&b, &a_key, &room, message(&ann, "not twice")).await);
    let (status, again) = send_transaction(&b, &a_key, "t2", &[hello, other]).await;
    assert_eq!((status, &again), (200, &answer));
    assert!(b.server.db.event(&other_id).await.unwrap().is_none(), "the repeat was not processed");
    let (_, messages) =
        b.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&alice.token)).await;
    let copies =
        messages["chunk"].as_array().unwrap().iter().filter(|e| e["event_id"] == hello_id.as_str()).count();
    assert_eq!(copies, 1);

    // Ann types (an EDU); a typing notice for a user of another server is ignored.
    let typing = |user: &str| json!({ "edu_type": "m.typing", "content": { "room_id": room, "user_id": user, "typing": true } });
    let (status, _) =
        send_transaction_with(&b, &a_key, "e1", &[], &[typing(ann.as_str()), typing(&alice.user_id)]).await;
    assert_eq!(status, 200);
    let sync = b.sync(&alice, None, 0).await;
    let ephemeral = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
    let typing_now = ephemeral.as_array().unwrap().iter().find(|e| e["type"] == "m.typing").expect("typing");
    assert_eq!(typing_now["content"]["user_ids"], json!([ann.as_str()]), "{ephemeral}");

    // A body that is not canonical JSON (a float) is bad JSON, whatever its signature (which
    // cannot even be made over it: this one is over another body).
    let path = "/_matrix/federation/v1/send/float";
    let signed = http::Request::builder().method("PUT").uri(path).body(b"{}".to_vec()).unwrap();
    let input = XMatrixSigningInput::new(a_key.server_name().to_owned(), name_of(&b), a_key.pair());
    let header = http::HeaderValue::from(&XMatrix::sign_http_request(&signed, input).unwrap());
    let response = raw_https()
        .put(format!("{}{path}", b.tls_base.as_ref().unwrap()))
        .header("authorization", header.to_str().unwrap())
        .header("content-type", "application/json")
        .body(r#"{"origin":"x","origin_server_ts":1,"pdus":[{"depth":1.5}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["errcode"], "M_BAD_JSON");

    // Too many PDUs for one transaction.
    let (status, body) = send_transaction(&b, &a_key, "t3", &vec![json!({}); 51]).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")));

    // Signed by a key A never published: dropped, with the reason.
    let impostor = ServerKey::from_pkcs8(&name_of(&a), &ServerKey::generate_pkcs8(), "forged").unwrap();
    let (forged, forged_id) = pdu_and_id(remote_event(&b, &impostor, &room, message(&ann, "forged")).await);
    let (_, answer) = send_transaction(&b, &a_key, "t4", &[forged]).await;
    assert!(answer["pdus"][&forged_id]["error"].is_string(), "{answer}");

    // A user of A who never joined may not speak: rejected by the auth rules — stored as
    // rejected (so the answer has no error, as Synapse's has not), never shown.
    let stranger = UserId::parse(format!("@stranger:{}", name_of(&a))).unwrap();
    let (intruder, intruder_id) =
        pdu_and_id(remote_event(&b, &a_key, &room, message(&stranger, "let me in")).await);
    let (_, answer) = send_transaction(&b, &a_key, "t5", &[intruder]).await;
    assert_eq!(answer["pdus"][&intruder_id], json!({}), "{answer}");
    let stored = b.server.db.dag_events(std::slice::from_ref(&intruder_id)).await.unwrap();
    assert!(stored[0].rejected_reason.as_ref().is_some_and(|r| r.contains("join")), "{:?}", stored[0].json);
    let sync = b.sync(&alice, None, 0).await;
    let bodies = crate::harness::bodies(&sync["rooms"]["join"][&room]["timeline"]["events"]);
    assert!(!bodies.iter().any(|b| b == "forged" || b == "let me in"), "{bodies:?}");

    // Once the room's ACL denies A, A's events are refused.
    let (status, _) = b
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/"),
            Some(&alice.token),
            json!({ "allow": ["*"], "deny": ["localhost"] }),
        )
        .await;
    assert_eq!(status, 200);
    let (late, late_id) = pdu_and_id(remote_event(&b, &a_key, &room, message(&ann, "after the ACL")).await);
    let (_, answer) = send_transaction(&b, &a_key, "t6", &[late]).await;
    assert!(answer["pdus"][&late_id]["error"].as_str().unwrap_or_default().contains("ACL"), "{answer}");
}

/// The id B gave an event it sent (found by its content and depth among B's events).
fn b_event_id(_b: &TestServer, pdu: &Value) -> String {
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
    object.remove("unsigned");
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap())
}

/// Every event of `room` on `on`, oldest first, as PDUs.
async fn room_pdus(on: &TestServer, room: &str) -> Vec<homeserver_rooms::remote::IncomingPdu> {
    let mut rows = on
        .server
        .db
        .room_events(
            room,
            homeserver_core::streams::StreamPos::new(i64::MAX),
            None,
            homeserver_storage::events::Direction::Backward,
            1000,
        )
        .await
        .unwrap();
    rows.reverse();
    rows.into_iter().map(|r| homeserver_rooms::remote::IncomingPdu::new(r.json)).collect()
}

#[tokio::test]
async fn a_gap_is_filled_from_the_origin_and_events_are_served_to_members_only() {
    let RoomOnB { ca, a, b, alice, room, room_id, ann } = room_on_b().await;
    let (a_key, b_key) = (key_of(&a).clone(), key_of(&b).clone());

    // A learns the room as it is (as a join would give it), then Ann joins on both sides.
    let rooms_a = &a.server.app.rooms;
    let live = homeserver_rooms::remote::Arrival::Live;
    // Whoever hands events to the room model fetches their keys first.
    let fetched =
        a.server.federation.keys.verify_key(&name_of(&b), &b_key.key_id(), now_millis() as i64).await;
    assert!(fetched.unwrap().is_some());
    let verdicts = rooms_a.receive_remote(&room_id, room_pdus(&b, &room).await, live).await.unwrap();
    assert!(verdicts.iter().all(|v| v.rejection().is_none()), "{verdicts:?}");
    let (join, join_id) = pdu_and_id(remote_event(&b, &a_key, &room, member(&ann, "join")).await);
    // No user of A is in the room yet: A takes no events of it from B.
    let early = b.send_text(&alice, &room, "too early").await;
    let early_pdu: Value =
        serde_json::from_str(&b.server.db.event(&early).await.unwrap().unwrap().json).unwrap();
    let (_, answer) = send_transaction(&a, &b_key, "g0", &[early_pdu]).await;
    assert!(answer["pdus"][&early]["error"].as_str().unwrap_or_default().contains("no user"), "{answer}");
    assert!(a.server.db.event(&early).await.unwrap().is_none());
    let (_, answer) = send_transaction(&b, &a_key, "j1", std::slice::from_ref(&join)).await;
    assert_eq!(answer["pdus"][&join_id], json!({}), "{answer}");
    let incoming = homeserver_rooms::remote::IncomingPdu::new(join.to_string());
    assert!(rooms_a.receive_remote(&room_id, vec![incoming], live).await.unwrap()[0].rejection().is_none());

    // Alice says three things; A hears only the last: it asks B for the gap.
    let m1 = b.send_text(&alice, &room, "one").await;
    let m2 = b.send_text(&alice, &room, "two").await;
    let m3 = b.send_text(&alice, &room, "three").await;
    let m3_pdu: Value = serde_json::from_str(&b.server.db.event(&m3).await.unwrap().unwrap().json).unwrap();
    let (status, answer) = send_transaction(&a, &b_key, "g1", &[m3_pdu]).await;
    assert_eq!((status, &answer["pdus"][&m3]), (200, &json!({})), "{answer}");
    for id in [&m1, &m2, &m3] {
        let row = a.server.db.event(id).await.unwrap().expect("placed on A");
        assert!(row.stream_pos.is_live() && !row.outlier, "{id} is in A's timeline");
    }

    // B serves its events to A (Ann is in the room), not to a server with no member there.
    let event = a
        .server
        .federation
        .client
        .send(
            &name_of(&b),
            ruma::api::federation::event::get_event::v1::Request::new(ruma::EventId::parse(&m1).unwrap()),
        )
        .await
        .expect("served to a member server");
    assert!(event.pdu.get().contains("\"one\""));
    let c = federated(&ca, |_| {}).await;
    let refused = c
        .server
        .federation
        .client
        .send(
            &name_of(&b),
            ruma::api::federation::event::get_event::v1::Request::new(ruma::EventId::parse(&m1).unwrap()),
        )
        .await;
    assert!(matches!(refused, Err(federation::FederationError::Status { status: 403, .. })), "{refused:?}");

    // get_missing_events honours its limit and minimum depth, oldest first.
    use ruma::api::federation::event::get_missing_events;
    let b_name = name_of(&b);
    let ask = |limit: u32, min_depth: u64| {
        let mut request = get_missing_events::v1::Request::new(
            room_id.clone(),
            vec![],
            vec![ruma::EventId::parse(&m3).unwrap()],
        );
        request.limit = limit.into();
        request.min_depth = min_depth.try_into().unwrap();
        a.server.federation.client.send(&b_name, request)
    };
    let two = ask(2, 0).await.expect("missing events");
    let ids: Vec<String> = two
        .events
        .iter()
        .map(|p| serde_json::from_str::<Value>(p.get()).unwrap())
        .map(|v| b_event_id(&b, &v))
        .collect();
    assert_eq!(ids, vec![m1.clone(), m2.clone()], "the two events before m3, oldest first");
    let m3_depth = serde_json::from_str::<Value>(&b.server.db.event(&m3).await.unwrap().unwrap().json)
        .unwrap()["depth"]
        .as_u64()
        .unwrap();
    assert!(ask(10, m3_depth).await.unwrap().events.is_empty(), "nothing below min_depth");
    // Every field may be left out, as Synapse's clients do: limit 10, depth 0, no events.
    let path = format!("/_matrix/federation/v1/get_missing_events/{}", crate::harness::enc(&room));
    let (status, body) = signed_post(&b, &path, &json!({ "latest_events": [m3] }), key_of(&a)).await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().expect("events");
    let ids: Vec<String> = events.iter().map(|v| b_event_id(&b, v)).collect();
    assert!(ids.len() <= 10 && ids.contains(&m1) && ids.contains(&m2), "{ids:?}");
    let (status, body) = signed_post(&b, &path, &json!({}), key_of(&a)).await;
    assert_eq!((status, &body["events"]), (200, &json!([])), "nothing asked, nothing answered");

    // The state before an event, and auth chains, for member servers only.
    use ruma::api::federation::{authorization::get_event_authorization, event::get_room_state_ids};
    let m3_id = ruma::EventId::parse(&m3).unwrap();
    let ids = a
        .server
        .federation
        .client
        .send(&name_of(&b), get_room_state_ids::v1::Request::new(m3_id.clone(), room_id.clone()))
        .await
        .expect("state ids");
    let state_on_b = b
        .server
        .app
        .rooms
        .state_at_group(b.server.db.event(&m3).await.unwrap().unwrap().state_before)
        .await
        .unwrap();
    let mut expected: Vec<String> = state_on_b.into_iter().map(|(_, _, id)| id).collect();
    let mut got: Vec<String> = ids.pdu_ids.iter().map(ToString::to_string).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert!(got.contains(&join_id), "Ann's join is in the state");
    assert!(!ids.auth_chain_ids.is_empty());
    let auth = a
        .server
        .federation
        .client
        .send(&name_of(&b), get_event_authorization::v1::Request::new(room_id.clone(), m3_id.clone()))
        .await
        .expect("auth chain");
    let auth_text: Vec<String> = auth.auth_chain.iter().map(|p| p.get().to_owned()).collect();
    assert!(auth_text.iter().any(|p| p.contains("m.room.power_levels")), "{auth_text:?}");
    let refused = c
        .server
        .federation
        .client
        .send(&name_of(&b), get_room_state_ids::v1::Request::new(m3_id, room_id))
        .await;
    assert!(matches!(refused, Err(federation::FederationError::Status { status: 403, .. })), "{refused:?}");
}

/// Signs a join template as its server would, returning the PDU and its event id.
pub(crate) fn sign_template(key: &ServerKey, template: &Value) -> (Value, ruma::OwnedEventId) {
    let rules = ruma::RoomVersionId::V12.rules().unwrap();
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(template.clone()).unwrap();
    ruma::signatures::hash_and_sign_event(
        key.server_name().as_str(),
        key.pair(),
        &mut object,
        &rules.redaction,
    )
    .unwrap();
    let id = ruma::EventId::parse(format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap()))
        .unwrap();
    (serde_json::to_value(object).unwrap(), id)
}

#[tokio::test]
async fn a_remote_user_joins_through_make_join_and_send_join() {
    use ruma::api::federation::membership::{create_join_event, prepare_join_event};
    let RoomOnB { a, b, alice, room, room_id, ann, .. } = room_on_b().await;
    let client = &a.server.federation.client;

    let mut ask = prepare_join_event::v1::Request::new(room_id.clone(), ann.clone());
    ask.ver = vec![ruma::RoomVersionId::V11];
    let refused = client.send(&name_of(&b), ask).await;
    assert!(
        matches!(&refused, Err(federation::FederationError::Status { status: 400, body }) if body.contains("M_INCOMPATIBLE_ROOM_VERSION") && body.contains("\"room_version\"")),
        "{refused:?}"
    );
    let bob_of_b = UserId::parse(format!("@bob:{}", name_of(&b))).unwrap();
    let mut ask = prepare_join_event::v1::Request::new(room_id.clone(), bob_of_b);
    ask.ver = vec![ruma::RoomVersionId::V12];
    assert!(client.send(&name_of(&b), ask).await.is_err(), "only for the requesting server's users");

    let mut ask = prepare_join_event::v1::Request::new(room_id.clone(), ann.clone());
    ask.ver = vec![ruma::RoomVersionId::V11, ruma::RoomVersionId::V12];
    let made = client.send(&name_of(&b), ask).await.expect("a template");
    assert_eq!(made.room_version, Some(ruma::RoomVersionId::V12));
    let template: Value = serde_json::from_str(made.event.get()).unwrap();
    assert_eq!(template["content"]["membership"], "join");
    let (signed, join_id) = sign_template(key_of(&a), &template);
    let pdu = serde_json::value::to_raw_value(&signed).unwrap();

    let wrong = create_join_event::v2::Request::new(
        room_id.clone(),
        ruma::EventId::parse("$wrong").unwrap(),
        pdu.clone(),
    );
    assert!(client.send(&name_of(&b), wrong).await.is_err(), "the path must name the event");
    let joined = client
        .send(&name_of(&b), create_join_event::v2::Request::new(room_id.clone(), join_id.clone(), pdu))
        .await
        .expect("joined");
    let state = &joined.room_state;
    assert!(!state.members_omitted);
    let texts: Vec<String> = state.state.iter().map(|p| p.get().to_owned()).collect();
    assert!(texts.iter().any(|t| t.contains("m.room.create")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains(&alice.user_id)), "Alice's membership is in the state");
    assert!(!state.auth_chain.is_empty());
    // Both lists run oldest first: each event's auth events (those listed) come before it.
    for list in [&state.auth_chain, &state.state] {
        let rules = made.room_version.clone().unwrap().rules().unwrap();
        let id_of = |json: &str| {
            let object: ruma::CanonicalJsonObject = serde_json::from_str(json).unwrap();
            homeserver_rooms::event_format::event_id_of(&object, &rules).unwrap().to_string()
        };
        let ids: Vec<String> = list.iter().map(|p| id_of(p.get())).collect();
        let events: Vec<Value> = list.iter().map(|p| serde_json::from_str(p.get()).unwrap()).collect();
        let position = |id: &str| ids.iter().position(|known| known == id);
        assert!(events.iter().any(|e| e["auth_events"].as_array().is_some_and(|a| !a.is_empty())));
        for (index, event) in events.iter().enumerate() {
            for auth in event["auth_events"].as_array().unwrap() {
                if let Some(at) = position(auth.as_str().unwrap()) {
                    assert!(at < index, "{} listed before its auth event {auth}", ids[index]);
                }
            }
        }
    }
    let servers = state.servers_in_room.clone().unwrap_or_default();
    assert!(
        servers.contains(&name_of(&a).to_string()) && servers.contains(&name_of(&b).to_string()),
        "{servers:?}"
    );
    let sync = b.sync(&alice, None, 0).await;
    let members = b.server.db.room_members(&room, "join").await.unwrap();
    assert!(members.contains(&ann.to_string()), "{members:?} {sync}");

    // An invite-only room gives no template to the uninvited.
    let private = b.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let mut ask = prepare_join_event::v1::Request::new(ruma::RoomId::parse(&private).unwrap(), ann.clone());
    ask.ver = vec![ruma::RoomVersionId::V12];
    let refused = client.send(&name_of(&b), ask).await;
    assert!(matches!(refused, Err(federation::FederationError::Status { status: 403, .. })), "{refused:?}");
}

#[tokio::test]
async fn a_local_user_joins_a_room_on_another_server_through_the_client_api() {
    let RoomOnB { a, b, alice, room, .. } = room_on_b().await;
    let ann = a.register("ann").await;
    let via = crate::harness::enc(name_of(&b).as_str());
    let path = format!("/_matrix/client/v3/join/{}?via={via}", crate::harness::enc(&room));
    let (status, body) = a.post(&path, Some(&ann.token), json!({})).await;
    assert_eq!((status, body["room_id"].as_str()), (200, Some(room.as_str())), "{body}");

    // B placed Ann's join; A holds the room with its state and shows it to Ann.
    assert!(b.server.db.room_members(&room, "join").await.unwrap().contains(&ann.user_id));
    let sync = a.sync(&ann, None, 0).await;
    let joined = &sync["rooms"]["join"][&room];
    let state: Vec<Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(joined["timeline"]["events"].as_array().unwrap())
        .cloned()
        .collect();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{joined}");
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()),
        "{joined}"
    );
    assert!(
        state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == ann.user_id.as_str()),
        "{joined}"
    );

    // Without a server to join through, an unknown room is not found.
    let unknown =
        format!("/_matrix/client/v3/join/{}", crate::harness::enc("!UnknownRoomWithoutAServerName"));
    let (status, body) = a.post(&unknown, Some(&ann.token), json!({})).await;
    assert_eq!(status, 404, "{body}");
}

/// Syncs `user` on `server` until a timeline event with `body` shows up in `room` (or panics).
pub(crate) async fn wait_for_body(server: &TestServer, user: &crate::harness::User, room: &str, body: &str) {
    let mut since: Option<String> = None;
    for _ in 0..40 {
        let sync = server.sync(user, since.as_deref(), 500).await;
        let timeline = &sync["rooms"]["join"][room]["timeline"]["events"];
        if crate::harness::bodies(timeline).iter().any(|b| b == body) {
            return;
        }
        since = sync["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{body:?} never reached {room} on {}", name_of(server));
}

#[tokio::test]
async fn messages_flow_both_ways_once_a_user_joined_over_federation() {
    let RoomOnB { a, b, alice, room, .. } = room_on_b().await;
    b.send_text(&alice, &room, "before Ann").await;
    let ann = a.register("ann").await;
    let via = crate::harness::enc(name_of(&b).as_str());
    let path = format!("/_matrix/client/v3/join/{}?via={via}", crate::harness::enc(&room));
    assert_eq!(a.post(&path, Some(&ann.token), json!({})).await.0, 200);

    b.send_text(&alice, &room, "hello Ann").await;
    wait_for_body(&a, &ann, &room, "hello Ann").await;
    a.send_text(&ann, &room, "hello Alice").await;
    wait_for_body(&b, &alice, &room, "hello Alice").await;

    // What was said before A was in the room was never queued for it; everything queued goes
    // (presence and receipts ride along, so the queue drains rather than being empty at once).
    let mut to_a = None;
    for _ in 0..50 {
        let destinations = b.server.db.destinations().await.unwrap();
        to_a = destinations.into_iter().find(|d| d.destination == name_of(&a).as_str());
        if to_a.as_ref().is_some_and(|d| d.queued == 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let to_a = to_a.expect("A is a destination");
    assert_eq!((to_a.queued, to_a.failures), (0, 0), "{to_a:?}");
    let sync = a.sync(&ann, None, 0).await;
    let bodies = crate::harness::bodies(&sync["rooms"]["join"][&room]["timeline"]["events"]);
    assert!(!bodies.contains(&"before Ann".to_owned()), "history is not pushed as new events: {bodies:?}");

    // A kick reaches the server it is about, though it no longer has a member in the room.
    let kick = format!("/_matrix/client/v3/rooms/{room}/kick");
    let (status, _) = b.post(&kick, Some(&alice.token), json!({ "user_id": ann.user_id })).await;
    assert_eq!(status, 200);
    let mut left = false;
    for _ in 0..50 {
        let membership = a.server.db.membership(&room, &ann.user_id).await.unwrap();
        if membership.is_some_and(|m| m.membership == ruma::events::room::member::MembershipState::Leave) {
            left = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(left, "A learnt that Ann was kicked");
}
