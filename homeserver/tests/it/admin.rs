//! The Synapse-compatible admin API over raw HTTP: users (list, query, create, modify,
//! deactivate, reset password, whois), rooms (list, details, members, delete with block and
//! purge), event reports — and `M_FORBIDDEN` for everyone who is not an admin.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

async fn server_with_admin() -> (TestServer, User) {
    let server = TestServer::start_with(|c| c.registration.shared_secret = "reg_secret".into()).await;
    let admin = server.register_admin("root").await;
    (server, admin)
}

fn user_path(user: &str) -> String {
    format!("/_synapse/admin/v2/users/{}", enc(user))
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key].as_array().unwrap().iter().map(|u| u[field].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn non_admins_are_forbidden_everywhere() {
    let (server, _admin) = server_with_admin().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    for (method, path) in [
        (Method::GET, "/_synapse/admin/v2/users".to_owned()),
        (Method::GET, user_path(&alice.user_id)),
        (Method::PUT, user_path("@mallory:localhost")),
        (Method::POST, format!("/_synapse/admin/v1/deactivate/{}", enc(&alice.user_id))),
        (Method::POST, format!("/_synapse/admin/v1/reset_password/{}", enc(&alice.user_id))),
        (Method::GET, "/_synapse/admin/v1/rooms".to_owned()),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{}", enc(&room))),
        (Method::GET, format!("/_synapse/admin/v1/rooms/{}/members", enc(&room))),
        (Method::DELETE, format!("/_synapse/admin/v1/rooms/{}", enc(&room))),
        (Method::GET, "/_synapse/admin/v1/event_reports".to_owned()),
    ] {
        let (status, body) = server.request(method.clone(), &path, Some(&alice.token), Some(json!({}))).await;
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{method} {path}");
        let (status, body) = server.request(method.clone(), &path, None, Some(json!({}))).await;
        assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{method} {path}");
    }
    // The room survived alice's attempt.
    let (status, _) =
        server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), Some(&alice.token)).await;
    assert_eq!(status, 200);
    // The version is public, as in Synapse.
    let (status, body) = server.get("/_synapse/admin/v1/server_version", None).await;
    assert_eq!(status, 200);
    assert!(body["server_version"].as_str().unwrap().starts_with("Lattice"));
}

#[tokio::test]
async fn admins_manage_users() {
    let (server, admin) = server_with_admin().await;
    let t = Some(admin.token.as_str());
    let mut anna_token = String::new();
    for name in ["anna", "bert", "carl"] {
        let user = server.register(name).await;
        if name == "anna" {
            anna_token = user.token;
        }
    }
    // Anna is no admin yet (and her token's lookup is now cached).
    assert_eq!(server.get("/_synapse/admin/v2/users", Some(&anna_token)).await.0, 403);

    // Create with PUT (201), then log in with the password the admin set.
    let (status, created) = server
        .put(
            &user_path("@dora:localhost"),
            t,
            json!({ "password": "dora-pw-1", "displayname": "Dora", "admin": false }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["name"].as_str(), created["displayname"].as_str()),
        (Some("@dora:localhost"), Some("Dora"))
    );
    let login = |user: &str, password: &str| json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
    let (status, dora) = server.post("/_matrix/client/v3/login", None, login("dora", "dora-pw-1")).await;
    assert_eq!(status, 200);
    let dora_token = dora["access_token"].as_str().unwrap().to_owned();

    // List: paged, filtered, ordered.
    let (status, list) = server.get("/_synapse/admin/v2/users?limit=2", t).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 5);
    assert_eq!(names(&list, "users", "name"), vec!["@anna:localhost", "@bert:localhost"]);
    assert_eq!(list["next_token"], "2");
    let (_, rest) = server.get("/_synapse/admin/v2/users?from=2&limit=10", t).await;
    assert_eq!(names(&rest, "users", "name"), vec!["@carl:localhost", "@dora:localhost", "@root:localhost"]);
    assert!(rest.get("next_token").is_none());
    let (_, found) = server.get("/_synapse/admin/v2/users?name=dor", t).await;
    assert_eq!(names(&found, "users", "name"), vec!["@dora:localhost"]);
    let (_, admins) = server.get("/_synapse/admin/v2/users?admins=true", t).await;
    assert_eq!(names(&admins, "users", "name"), vec!["@root:localhost"]);
    let (_, backwards) = server.get("/_synapse/admin/v2/users?dir=b&limit=1", t).await;
    assert_eq!(names(&backwards, "users", "name"), vec!["@root:localhost"]);
    let (status, body) = server.get("/_synapse/admin/v2/users?limit=-1", t).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (status, _) = server.get("/_synapse/admin/v2/users?order_by=shoe_size", t).await;
    assert_eq!(status, 400);

    // Query and modify: promote, rename (propagated), reset the password (logs out).
    let (status, anna) = server.get(&user_path("@anna:localhost"), t).await;
    assert_eq!(
        (status, anna["admin"].as_bool(), anna["deactivated"].as_bool()),
        (200, Some(false), Some(false))
    );
    let (status, _) = server.get(&user_path("@nobody:localhost"), t).await;
    assert_eq!(status, 404);
    let (status, changed) = server
        .put(&user_path("@anna:localhost"), t, json!({ "admin": true, "displayname": "Anna K." }))
        .await;
    assert_eq!(
        (status, changed["admin"].as_bool(), changed["displayname"].as_str()),
        (200, Some(true), Some("Anna K."))
    );
    // The promotion applies to her existing session at once.
    assert_eq!(server.get("/_synapse/admin/v2/users", Some(&anna_token)).await.0, 200);
    let (status, _) = server
        .post(
            &format!("/_synapse/admin/v1/reset_password/{}", enc("@dora:localhost")),
            t,
            json!({ "new_password": "dora-pw-2" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", Some(&dora_token)).await;
    assert_eq!(status, 401, "a password reset logs the devices out");
    assert_eq!(server.post("/_matrix/client/v3/login", None, login("dora", "dora-pw-1")).await.0, 403);
    let (status, dora) = server.post("/_matrix/client/v3/login", None, login("dora", "dora-pw-2")).await;
    assert_eq!(status, 200);

    // whois: the admin sees dora's device; dora may ask about herself, not others.
    let whois = |user: &str| format!("/_matrix/client/v3/admin/whois/{}", enc(user));
    let (status, info) = server.get(&whois("@dora:localhost"), t).await;
    assert_eq!(status, 200);
    assert!(info["devices"].get(dora["device_id"].as_str().unwrap()).is_some(), "{info}");
    assert_eq!(server.get(&whois("@dora:localhost"), dora["access_token"].as_str()).await.0, 200);
    assert_eq!(server.get(&whois("@anna:localhost"), dora["access_token"].as_str()).await.0, 403);

    // Deactivate: gone from the default list, cannot log in; reactivating needs a password.
    let (status, body) = server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{}", enc("@bert:localhost")),
            t,
            json!({ "erase": false }),
        )
        .await;
    assert_eq!((status, body["id_server_unbind_result"].as_str()), (200, Some("success")));
    assert_eq!(server.post("/_matrix/client/v3/login", None, login("bert", "pw-bert-secret")).await.0, 403);
    let (_, list) = server.get("/_synapse/admin/v2/users", t).await;
    assert!(!names(&list, "users", "name").contains(&"@bert:localhost".to_owned()));
    let (_, list) = server.get("/_synapse/admin/v2/users?deactivated=true", t).await;
    assert!(names(&list, "users", "name").contains(&"@bert:localhost".to_owned()));
    let (status, _) = server.put(&user_path("@bert:localhost"), t, json!({ "deactivated": false })).await;
    assert_eq!(status, 400);
    let (status, bert) = server
        .put(&user_path("@bert:localhost"), t, json!({ "deactivated": false, "password": "back-again" }))
        .await;
    assert_eq!((status, bert["deactivated"].as_bool()), (200, Some(false)));
    assert_eq!(server.post("/_matrix/client/v3/login", None, login("bert", "back-again")).await.0, 200);

    // Bad input.
    let (status, _) = server.put(&user_path("not-a-user"), t, json!({})).await;
    assert_eq!(status, 400);
    let (status, _) = server.put(&user_path("@remote:elsewhere.example"), t, json!({})).await;
    assert_eq!(status, 400);
    let (status, body) = server.request(Method::PUT, &user_path("@erin:localhost"), t, None).await;
    assert_eq!(status, 201, "an empty body creates a password-less user: {body}");
}

#[tokio::test]
async fn admins_inspect_and_delete_rooms() {
    let (server, admin) = server_with_admin().await;
    let t = Some(admin.token.as_str());
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let doomed = server
        .create_room(&alice, json!({ "preset": "public_chat", "visibility": "public", "name": "Spam Central", "room_alias_name": "spam" }))
        .await;
    server.join(&bob, &doomed).await;
    let spam = server.send_text(&alice, &doomed, "buy now").await;
    let kept = server.create_room(&bob, json!({ "name": "Book club" })).await;

    // List, search, order.
    let (status, list) = server.get("/_synapse/admin/v1/rooms", t).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_rooms"], 2);
    assert_eq!(names(&list, "rooms", "name"), vec!["Book club", "Spam Central"]);
    let (_, by_members) = server.get("/_synapse/admin/v1/rooms?order_by=joined_members", t).await;
    assert_eq!(names(&by_members, "rooms", "name"), vec!["Spam Central", "Book club"]);
    let (_, found) = server.get("/_synapse/admin/v1/rooms?search_term=spam", t).await;
    assert_eq!(names(&found, "rooms", "room_id"), vec![doomed.clone()]);
    let room = &found["rooms"][0];
    assert_eq!((room["joined_members"].as_i64(), room["public"].as_bool()), (Some(2), Some(true)));
    assert_eq!(room["canonical_alias"], "#spam:localhost");
    let (status, details) = server.get(&format!("/_synapse/admin/v1/rooms/{}", enc(&doomed)), t).await;
    assert_eq!(
        (status, details["name"].as_str(), details["creator"].as_str()),
        (200, Some("Spam Central"), Some(alice.user_id.as_str()))
    );
    let (_, members) = server.get(&format!("/_synapse/admin/v1/rooms/{}/members", enc(&doomed)), t).await;
    assert_eq!(members["total"], 2);
    assert_eq!(server.get("/_synapse/admin/v1/rooms/%21nope%3Alocalhost", t).await.0, 404);

    // A report to look at.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&doomed), enc(&spam)),
            Some(&bob.token),
            json!({ "reason": "spam" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, reports) = server.get("/_synapse/admin/v1/event_reports", t).await;
    assert_eq!(reports["total"], 1);
    assert_eq!(
        (reports["event_reports"][0]["event_id"].as_str(), reports["event_reports"][0]["user_id"].as_str()),
        (Some(spam.as_str()), Some(bob.user_id.as_str()))
    );

    // Delete with block and purge.
    let bob_since = server.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let (status, deleted) = server
        .request(
            Method::DELETE,
            &format!("/_synapse/admin/v1/rooms/{}", enc(&doomed)),
            t,
            Some(json!({ "block": true, "purge": true })),
        )
        .await;
    assert_eq!(status, 200, "{deleted}");
    let mut kicked = names(
        &json!({ "k": deleted["kicked_users"].as_array().unwrap().iter().map(|u| json!({ "n": u })).collect::<Vec<_>>() }),
        "k",
        "n",
    );
    kicked.sort();
    assert_eq!(kicked, vec![alice.user_id.clone(), bob.user_id.clone()]);
    assert_eq!(deleted["local_aliases"], json!(["#spam:localhost"]));
    assert_eq!(deleted["new_room_id"], Value::Null);

    // Gone: from the lists, the directory, the alias, the members' rooms; rejoining is refused.
    let (_, list) = server.get("/_synapse/admin/v1/rooms", t).await;
    assert_eq!(names(&list, "rooms", "name"), vec!["Book club"]);
    assert_eq!(server.get("/_matrix/client/v3/directory/room/%23spam%3Alocalhost", None).await.0, 404);
    let (_, joined) = server.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(joined["joined_rooms"], json!([kept]));
    let (status, _) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&doomed), enc(&spam)), Some(&alice.token))
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&doomed)), Some(&bob.token), json!({}))
        .await;
    assert!(status == 403 || status == 404, "{status} {body}");
    let sync = server.sync(&bob, Some(&bob_since), 0).await;
    assert!(sync["rooms"]["join"].get(&doomed).is_none());
    let (status, _) = server
        .request(Method::DELETE, &format!("/_synapse/admin/v1/rooms/{}", enc(&doomed)), t, Some(json!({})))
        .await;
    assert_eq!(status, 404);

    // Blocking a room id nobody has created yet works too, and a bad body is M_NOT_JSON.
    let (status, _) = server
        .request(
            Method::DELETE,
            "/_synapse/admin/v1/rooms/%21future%3Alocalhost",
            t,
            Some(json!({ "block": true })),
        )
        .await;
    assert_eq!(status, 200);
    let res = server
        .http
        .delete(server.url(&format!("/_synapse/admin/v1/rooms/{}", enc(&kept))))
        .bearer_auth(&admin.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["errcode"], "M_NOT_JSON");
}

#[tokio::test]
async fn whois_shows_where_a_device_logged_in_from() {
    let (server, admin) = server_with_admin().await;
    let alice = server.register("alice").await;
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice.user_id },
        "password": alice.password, "device_id": "PHONE" });
    let res = server
        .http
        .post(server.url("/_matrix/client/v3/login"))
        .header("user-agent", "Lattice-Test/1.0")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, whois) =
        server.get(&format!("/_synapse/admin/v1/whois/{}", enc(&alice.user_id)), Some(&admin.token)).await;
    assert_eq!(status, 200, "{whois}");
    let connection = &whois["devices"]["PHONE"]["sessions"][0]["connections"][0];
    assert_eq!(connection["user_agent"], "Lattice-Test/1.0", "{whois}");
    assert_eq!(connection["ip"], "127.0.0.1", "{whois}");
    assert!(connection["last_seen"].is_u64(), "{whois}");
}
