//! Plugin HTTP end to end, as an admin runs it: the `lattice` binary with a `lattice.toml` that
//! grants the `http-probe` fixture one host (a test server on loopback, reachable because the
//! config's `[testing] allow_private_destinations` is on) and a secret from the environment.
//! Checked: the secret reaches the server as the bearer token and never the room; an
//! ungranted destination is refused without a request; a streamed answer ends as the final edit
//! of the placeholder; a plugin that makes requests without a grant does not load.

use plugins::Grants;
use serde_json::{Value, json};

use crate::{
    federation::free_port,
    plugin_binary::Lattice,
    plugins::{eventually, guest, spec},
    upstream::Upstream,
};

#[tokio::test]
async fn a_plugin_reaches_its_granted_host_with_the_secret_and_streams_an_answer() {
    let Some(probe) = guest("http_probe") else { return };
    let upstream = Upstream::start().await;
    let plugins = format!(
        "[plugins.probe]\npath = \"{}\"\nconfig = {{ api_key = {{ env = \"PROBE_API_KEY\" }} }}\n\
         [plugins.probe.grants]\nhttp_hosts = [\"127.0.0.1:{}\"]\n",
        probe.display(),
        upstream.port
    );
    let lattice = Lattice::start(&plugins, &[("PROBE_API_KEY", "sk-test-secret")]).await;
    let alice = lattice.register("alice").await;
    let room = lattice.create_room(&alice, json!({})).await;
    lattice.invite(&alice, &room, "@probe:localhost").await;
    lattice.wait_joined(&alice, &room, "@probe:localhost").await;
    let from_probe = |body_starts: &'static str| {
        let (lattice, alice, room) = (&lattice, alice.clone(), room.clone());
        move || {
            let (alice, room) = (alice.clone(), room.clone());
            async move {
                lattice.messages(&alice, &room).await.into_iter().find(|e| {
                    e["sender"] == "@probe:localhost"
                        && e["content"]["body"].as_str().is_some_and(|b| b.starts_with(body_starts))
                })
            }
        }
    };

    lattice.say(&alice, &room, &format!("!fetch http://127.0.0.1:{}/hello", upstream.port)).await;
    let reply = eventually(30, "the fetch reply", from_probe("status")).await;
    assert_eq!(reply["content"]["body"], "status 200: hello from upstream");
    assert_eq!(upstream.seen()[0].authorization, "Bearer sk-test-secret");

    // Another port of the same host was not granted: refused before any request is made.
    lattice.say(&alice, &room, &format!("!fetch http://127.0.0.1:{}/hello", free_port())).await;
    let refused = eventually(30, "the refusal", from_probe("error:")).await;
    assert!(refused["content"]["body"].as_str().unwrap().contains("did not allow"), "{refused}");
    assert_eq!(upstream.seen().len(), 1);

    lattice
        .say(&alice, &room, &format!("!stream http://127.0.0.1:{}/v1/chat/completions", upstream.port))
        .await;
    let final_edit = eventually(30, "the streamed answer", || async {
        lattice.messages(&alice, &room).await.into_iter().find(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.new_content"]["body"] == "Hello, world!"
        })
    })
    .await;
    assert_eq!(final_edit["sender"], "@probe:localhost");
    let seen = &upstream.seen()[1];
    assert_eq!(
        (seen.path.as_str(), seen.authorization.as_str()),
        ("/v1/chat/completions", "Bearer sk-test-secret")
    );
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!((body["model"].as_str(), body["stream"].as_bool()), (Some("m"), Some(true)));
    // The secret never reached the room.
    let everything = lattice.messages(&alice, &room).await;
    assert!(!serde_json::to_string(&everything).unwrap().contains("sk-test-secret"));
}

#[tokio::test]
async fn a_plugin_that_makes_requests_without_a_grant_does_not_load() {
    let Some(probe) = guest("http_probe") else { return };
    let database = homeserver_storage::testing::TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::harness::test_config(dir.path().to_owned(), &database.url);
    config.plugins.insert("probe".into(), spec(probe, json!({}), Grants::default()));
    let err = homeserver::Server::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("grants.http_hosts"), "{err}");
}
