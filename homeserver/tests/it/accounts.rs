//! Accounts: registration (UIA, tokens, inhibit_login), login, logout, whoami, devices,
//! password changes, deactivation and profiles.

use serde_json::{Value, json};

use crate::harness::{TestServer, enc};

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password }),
        )
        .await
}

#[tokio::test]
async fn registration_uses_user_interactive_auth() {
    let server = TestServer::start().await;
    // First request: the flows and a session.
    let (status, challenge) = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": "pw1" }))
        .await;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"][0]["stages"], json!(["m.login.dummy"]));
    let session = challenge["session"].as_str().unwrap();
    // Completing the dummy stage registers and logs in.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "Alice", "password": "pw1", "auth": { "type": "m.login.dummy", "session": session }, "initial_device_display_name": "laptop" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost", "usernames are lower-cased");
    let token = body["access_token"].as_str().unwrap();
    let (status, who) = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(who["user_id"], "@alice:localhost");
    assert_eq!(who["device_id"], body["device_id"]);
    let (_, devices) = server.get("/_matrix/client/v3/devices", Some(token)).await;
    assert_eq!(devices["devices"][0]["display_name"], "laptop");

    // inhibit_login registers without a session.
    let (status, body) = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "quiet", "password": "pw", "inhibit_login": true, "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_eq!(status, 200);
    assert!(body.get("access_token").is_none() && body.get("device_id").is_none(), "{body}");
    let (status, _) = login(&server, "quiet", "pw").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn registration_tokens_gate_registration() {
    let server = TestServer::start_with(|c| c.registration.tokens = vec!["letmein".into()]).await;
    let (status, challenge) = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": "pw" }))
        .await;
    assert_eq!(status, 401);
    assert_eq!(challenge["flows"][0]["stages"], json!(["m.login.registration_token"]));
    let session = challenge["session"].as_str().unwrap();
    // A dummy stage is not offered, and a wrong token fails.
    let (status, body) = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.dummy", "session": session } }))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "wrong", "session": session } }))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = server
        .post("/_matrix/client/v3/register", None, json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.registration_token", "token": "letmein", "session": session } }))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, validity) = server
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=letmein", None)
        .await;
    assert_eq!(validity["valid"], true);
    let (_, validity) =
        server.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=nope", None).await;
    assert_eq!(validity["valid"], false);
}

#[tokio::test]
async fn disabled_registration_is_forbidden() {
    let server = TestServer::start_with(|c| c.registration.enabled = false).await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "x", "password": "pw", "auth": {"type": "m.login.dummy"} }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
}

#[tokio::test]
async fn login_logout_and_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (_, flows) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(flows["flows"][0]["type"], "m.login.password");

    let (status, body) = login(&server, "alice", "wrong").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, body) = login(&server, "nobody", "x").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (status, body) =
        server.post("/_matrix/client/v3/login", None, json!({ "type": "m.login.magic" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNKNOWN")));

    // Full user ids and the legacy `user` field both work.
    let (status, second) = login(&server, "@alice:localhost", &alice.password).await;
    assert_eq!(status, 200);
    let (status, third) = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "alice", "password": alice.password, "device_id": "FIXED" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(third["device_id"], "FIXED");
    // Logging in again on the same device replaces its token, even one looked up a moment ago.
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_eq!(server.get(whoami, third["access_token"].as_str()).await.0, 200);
    let (status, again) = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "alice", "password": alice.password, "device_id": "FIXED" }))
        .await;
    assert_eq!((status, again["device_id"].as_str()), (200, Some("FIXED")));
    assert_eq!(server.get(whoami, third["access_token"].as_str()).await.0, 401);
    assert_eq!(server.get(whoami, again["access_token"].as_str()).await.0, 200);
    let third = again;
    let second_token = second["access_token"].as_str().unwrap();
    let (_, devices) = server.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 3);

    // Rename and read a device; unknown devices are 404.
    let (status, _) = server
        .put("/_matrix/client/v3/devices/FIXED", Some(&alice.token), json!({ "display_name": "phone" }))
        .await;
    assert_eq!(status, 200);
    let (_, device) = server.get("/_matrix/client/v3/devices/FIXED", Some(&alice.token)).await;
    assert_eq!(device["display_name"], "phone");
    let (status, _) = server.get("/_matrix/client/v3/devices/NOPE", Some(&alice.token)).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .put("/_matrix/client/v3/devices/NOPE", Some(&alice.token), json!({ "display_name": "x" }))
        .await;
    assert_eq!(status, 404);

    // Deleting a device needs the password (UIA) and kills its token.
    let (status, challenge) = server
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/devices/FIXED",
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401);
    let session = challenge["session"].as_str().unwrap();
    let (status, body) = server
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/devices/FIXED",
            Some(&alice.token),
            Some(json!({ "auth": { "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "bad", "session": session } })),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/devices/FIXED",
            Some(&alice.token),
            Some(json!({ "auth": { "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": alice.password, "session": session } })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", third["access_token"].as_str()).await;
    assert_eq!(status, 401);

    // Logout ends one session; logout/all ends every session.
    let (status, _) = server.post("/_matrix/client/v3/logout", Some(second_token), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(second_token)).await;
    assert_eq!(status, 401);
    let (_, fourth) = login(&server, "alice", &alice.password).await;
    let (status, _) = server.post("/_matrix/client/v3/logout/all", Some(&alice.token), json!({})).await;
    assert_eq!(status, 200);
    for token in [alice.token.as_str(), fourth["access_token"].as_str().unwrap()] {
        let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn password_change_and_deactivation() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.join(&alice, &room).await;
    let (_, other) = login(&server, "alice", &alice.password).await;
    // Used once, so its lookup is cached: revoking it below must still take effect at once.
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", other["access_token"].as_str()).await;
    assert_eq!(status, 200);

    let auth = |password: &str| json!({ "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": password });
    let (status, _) = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&alice.token),
            json!({ "new_password": "new-pw", "auth": auth("wrong") }),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&alice.token),
            json!({ "new_password": "new-pw", "auth": auth(&alice.password) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Other sessions are logged out, this one stays; the new password works, the old does not.
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", other["access_token"].as_str()).await;
    assert_eq!(status, 401);
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(login(&server, "alice", &alice.password).await.0, 403);
    assert_eq!(login(&server, "alice", "new-pw").await.0, 200);

    // A UIA session cannot be carried over to another operation.
    let (_, challenge) =
        server.post("/_matrix/client/v3/account/deactivate", Some(&alice.token), json!({})).await;
    let session = challenge["session"].as_str().unwrap();
    let mut stolen = auth("new-pw");
    stolen["session"] = json!(session);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&alice.token),
            json!({ "new_password": "x", "auth": stolen }),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    let mut ok = auth("new-pw");
    ok["session"] = json!(session);
    let (status, body) =
        server.post("/_matrix/client/v3/account/deactivate", Some(&alice.token), json!({ "auth": ok })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await;
    assert_eq!(status, 401);
    let (status, body) = login(&server, "alice", "new-pw").await;
    assert_eq!(status, 403, "{body}");
    // Deactivated users left their rooms, and their name stays taken.
    let (_, members) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), Some(&bob.token))
        .await;
    assert!(members["joined"].get("@alice:localhost").is_none(), "{members}");
    let (status, _) = server.get("/_matrix/client/v3/register/available?username=alice", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn profiles_propagate_to_member_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let me = enc(&alice.user_id);
    let (_, profile) = server.get(&format!("/_matrix/client/v3/profile/{me}"), None).await;
    assert_eq!(profile["displayname"], "alice", "the localpart is the initial display name");
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/profile/{me}/displayname"),
            Some(&alice.token),
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/profile/{me}/avatar_url"),
            Some(&alice.token),
            json!({ "avatar_url": "mxc://localhost/abc" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, name) = server.get(&format!("/_matrix/client/v3/profile/{me}/displayname"), None).await;
    assert_eq!(name["displayname"], "Alice A.");
    let (_, avatar) = server.get(&format!("/_matrix/client/v3/profile/{me}/avatar_url"), None).await;
    assert_eq!(avatar["avatar_url"], "mxc://localhost/abc");
    let (_, member) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{me}", enc(&room)), Some(&alice.token))
        .await;
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["avatar_url"], "mxc://localhost/abc");
    let (status, _) = server.get("/_matrix/client/v3/profile/%40nobody%3Alocalhost", None).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/profile/{me}/displayname"),
            Some(&alice.token),
            json!({ "displayname": "x".repeat(300) }),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn discovery_endpoints() {
    let server =
        TestServer::start_with(|c| c.well_known.client_base_url = "https://matrix.example".into()).await;
    let alice = server.register("alice").await;
    let (_, versions) = server.get("/_matrix/client/versions", None).await;
    assert!(versions["versions"].as_array().unwrap().iter().any(|v| v == "v1.10"));
    let (_, wk) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(wk["m.homeserver"]["base_url"], "https://matrix.example");
    let (_, caps) = server.get("/_matrix/client/v3/capabilities", Some(&alice.token)).await;
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    assert_eq!(caps["capabilities"]["m.room_versions"]["available"]["6"], "stable");
    let (status, _) = server.get("/_matrix/client/v3/capabilities", None).await;
    assert_eq!(status, 401);

    let plain = TestServer::start().await;
    let (status, body) = plain.get("/.well-known/matrix/client", None).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, key) = plain.get("/_matrix/key/v2/server", None).await;
    assert_eq!(status, 200);
    assert_eq!(key["server_name"], "localhost");
    assert!(key["signatures"]["localhost"].as_object().unwrap().len() == 1);
}

#[tokio::test]
async fn shared_secret_registration() {
    let server = TestServer::start_with(|c| c.registration.shared_secret = "reg_secret".into()).await;
    let path = "/_synapse/admin/v1/register";
    let (status, body) = server.get(path, None).await;
    assert_eq!(status, 200);
    let nonce = body["nonce"].as_str().unwrap().to_owned();
    let mac = crate::harness::shared_secret_mac("reg_secret", &nonce, "root", "pw", true);
    let (status, body) = server
        .post(
            path,
            None,
            json!({ "nonce": nonce, "username": "root", "password": "pw", "admin": true, "mac": mac }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@root:localhost");
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", body["access_token"].as_str()).await;
    assert_eq!(status, 200);

    // The nonce is single-use; a wrong MAC is refused; a taken name is M_USER_IN_USE.
    let (status, body) = server
        .post(path, None, json!({ "nonce": nonce, "username": "root2", "password": "pw", "mac": mac }))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNKNOWN")), "{body}");
    let nonce = server.get(path, None).await.1["nonce"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            path,
            None,
            json!({ "nonce": nonce, "username": "eve", "password": "pw", "mac": "00".repeat(20) }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let nonce = server.get(path, None).await.1["nonce"].as_str().unwrap().to_owned();
    let mac = crate::harness::shared_secret_mac("reg_secret", &nonce, "root", "x", false);
    let (status, body) = server
        .post(path, None, json!({ "nonce": nonce, "username": "root", "password": "x", "mac": mac }))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_USER_IN_USE")));

    // Without a configured secret the endpoint is off.
    let plain = TestServer::start().await;
    let (status, _) = plain.get(path, None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn exclusive_appservice_namespaces_are_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.yaml");
    std::fs::write(
        &file,
        "id: bridge\nurl: null\nas_token: as_t\nhs_token: hs_t\nsender_localpart: bridgebot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@bridge_.*:localhost'\n",
    )
    .unwrap();
    let path = file.to_str().unwrap().to_owned();
    let server = TestServer::start_with(|c| c.appservices.registration_files = vec![path]).await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "bridge_x", "password": "pw", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_EXCLUSIVE")), "{body}");
    server.register("bridgeless").await;
}

#[tokio::test]
async fn registration_remembers_parameters_and_is_idempotent() {
    let server = TestServer::start().await;
    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "remy", "password": "pw", "device_id": "XYZZY" }),
        )
        .await;
    assert_eq!(status, 401);
    let session = challenge["session"].as_str().unwrap();
    // The second request carries only the auth; the first request's parameters are used.
    let auth = json!({ "auth": { "type": "m.login.dummy", "session": session } });
    let (status, first) = server.post("/_matrix/client/v3/register", None, auth.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["user_id"].as_str(), first["device_id"].as_str()),
        (Some("@remy:localhost"), Some("XYZZY"))
    );
    // Retrying with the same session answers for the same account instead of failing.
    let (status, again) = server.post("/_matrix/client/v3/register", None, auth).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["user_id"], first["user_id"]);
    // The UIA table never holds a token.
    let stored = server.uia_dump().await.join("\n");
    assert!(stored.contains("remy"), "{stored}");
    assert!(!stored.contains(first["access_token"].as_str().unwrap()));
}

/// An OpenID token names its user to whoever holds it (`/openid/userinfo`, on any listener),
/// only for one's own account; unknown and missing tokens are 401s.
#[tokio::test]
async fn openid_tokens_name_their_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = |user: &str| format!("/_matrix/client/v3/user/{}/openid/request_token", enc(user));
    let (status, token) = server.post(&path(&alice.user_id), Some(&alice.token), json!({})).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["matrix_server_name"], "localhost");
    assert_eq!(token["token_type"], "Bearer");
    assert!(token["expires_in"].as_u64().is_some_and(|s| s > 60), "{token}");
    let userinfo = "/_matrix/federation/v1/openid/userinfo";
    let access = token["access_token"].as_str().unwrap();
    let (status, info) = server.get(&format!("{userinfo}?access_token={}", enc(access)), None).await;
    assert_eq!((status, info), (200, json!({ "sub": alice.user_id })));

    let (status, answer) = server.post(&path(&alice.user_id), Some(&bob.token), json!({})).await;
    assert_eq!((status, answer["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{answer}");
    let (status, answer) = server.get(&format!("{userinfo}?access_token=an%2Finvalid%2Ftoken"), None).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{answer}");
    // A client's access token is no OpenID token.
    let (status, _) = server.get(&format!("{userinfo}?access_token={}", enc(&alice.token)), None).await;
    assert_eq!(status, 401);
    let (status, answer) = server.get(userinfo, None).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{answer}");
}
