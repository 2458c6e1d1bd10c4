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

/// A certificate authority and one certificate it signed for `localhost` and `127.0.0.1`.
struct TestCa {
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
    fn create() -> TestCa {
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
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server named `localhost:PORT` serving HTTPS on that port with the CA's certificate,
/// trusting the CA and allowed to reach loopback.
async fn federated(ca: &TestCa, adjust: impl FnOnce(&mut Config)) -> TestServer {
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

fn name_of(server: &TestServer) -> OwnedServerName {
    server.server.federation.key.server_name().to_owned()
}

fn key_of(server: &TestServer) -> &ServerKey {
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
    assert!(stored[0].valid_until_ts <= now + 7 * 24 * 3600 * 1000 + 60_000, "validity capped at a week");
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
    // The batch form, about A itself: its own document.
    let url = format!("{}/_matrix/key/v2/query", a.tls_base.as_ref().unwrap());
    let body = json!({ "server_keys": { name_of(&a).as_str(): {} } });
    let answer: Value = raw_https().post(url).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        answer["server_keys"][0]["verify_keys"][key_of(&a).key_id()]["key"],
        key_of(&a).public_key_base64()
    );
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
