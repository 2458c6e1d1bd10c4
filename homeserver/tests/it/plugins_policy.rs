//! Policy plugins (the `policy` world): the server asks a plugin granted `policy` about every
//! event its users send and waits for the answer. Checked with the `sleepy-policy` fixture: a
//! refusal reaches the client as `M_FORBIDDEN` and nothing is stored; a policy that sleeps is
//! cut off after `grants.policy_ms`, the event allowed, the failure reported and the plugin
//! suspended, while a client's send-and-sync latency stays within twice its normal.

use std::time::Duration;

use plugins::Grants;
use serde_json::json;

use crate::plugins::{eventually, guest, hosting, messages, plugin_status, send_latency};

fn policy_grants() -> Grants {
    Grants { policy: true, policy_ms: 100, ..Grants::default() }
}

#[tokio::test]
async fn a_policy_plugin_refuses_events_before_they_are_stored() {
    let Some(policy) = guest("sleepy_policy") else { return };
    let server = hosting(vec![("policy", policy, json!({ "deny_word": "spam" }), policy_grants())]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "hello").await;

    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", crate::harness::enc(&room));
    let (code, body) =
        server.put(&path, Some(&alice.token), json!({ "msgtype": "m.text", "body": "buy spam now" })).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(body["error"].as_str().unwrap().contains("spam"), "the policy's reason: {body}");
    // State events are asked about too.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", crate::harness::enc(&room));
    let (code, _) = server.put(&path, Some(&alice.token), json!({ "topic": "spam topic" })).await;
    assert_eq!(code, 403);

    let bodies: Vec<String> = messages(&server, &alice, &room)
        .await
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, ["hello"], "a refused event is never stored");
    let admin = server.register_admin("root").await;
    let status = plugin_status(&server, &admin, "policy").await;
    assert_eq!(status["counters"]["policy_denied"], 2, "{status}");
}

#[tokio::test]
async fn a_policy_that_sleeps_is_cut_off_and_suspended_while_clients_keep_their_latency() {
    let Some(policy) = guest("sleepy_policy") else { return };
    let server = hosting(vec![("sleepy", policy, json!({ "sleep_ms": 60_000 }), policy_grants())]).await;
    let admin = server.register_admin("root").await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;

    // Normal: the policy disabled (a disabled policy is not asked).
    let (code, _) =
        server.post("/_lattice/admin/v1/plugins/sleepy/disable", Some(&admin.token), json!({})).await;
    assert_eq!(code, 200);
    let baseline = send_latency(&server, &alice, &room, 15).await;
    let (code, _) =
        server.post("/_lattice/admin/v1/plugins/sleepy/enable", Some(&admin.token), json!({})).await;
    assert_eq!(code, 200);
    let loaded = send_latency(&server, &alice, &room, 15).await;
    assert!(
        loaded <= baseline * 2 + Duration::from_millis(25),
        "median send+sync latency {loaded:?} with a sleeping policy, {baseline:?} without"
    );
    let status = eventually(30, "the policy to be cut off", || async {
        let status = plugin_status(&server, &admin, "sleepy").await;
        (status["crashes"].as_u64().unwrap_or(0) >= 3).then_some(status)
    })
    .await;
    assert!(status["last_error"].as_str().unwrap().contains("timed out"), "{status}");
    assert!(status["counters"]["policy_failed_open"].as_u64().unwrap() >= 3, "{status}");
    // Every event was allowed (the server fails open) and stored.
    let stored = messages(&server, &alice, &room)
        .await
        .iter()
        .filter(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("latency ")))
        .count();
    assert_eq!(stored, 30);
}
