//! The contract is language-neutral: a plugin written in Python (`plugins/examples/python-greeter`,
//! built with componentize-py against the `bot` world, with no Lattice SDK) joins when invited,
//! answers its command in a thread and keeps a count in its key-value store.

use plugins::Grants;
use serde_json::json;

use crate::plugins::{eventually, hosting, messages, python_guest, wait_joined};

#[tokio::test]
async fn a_plugin_written_in_python_answers_its_command_in_a_thread() {
    let Some(greeter) = python_guest() else { return };
    // CPython wants more than the default 64 MiB.
    let grants = Grants { memory_mb: 256, ..Grants::default() };
    let server = hosting(vec![("greeter", greeter, json!({}), grants)]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@greeter:localhost").await;
    wait_joined(&server, &alice, &room, "@greeter:localhost").await;

    let first = server.send_text(&alice, &room, "!hello").await;
    server.send_text(&alice, &room, "!hello again").await;
    let answers = eventually(60, "two greetings", || async {
        let answers: Vec<_> = messages(&server, &alice, &room)
            .await
            .into_iter()
            .filter(|e| e["sender"] == "@greeter:localhost")
            .collect();
        (answers.len() == 2).then_some(answers)
    })
    .await;
    assert_eq!(answers[0]["content"]["body"], "hello, @alice:localhost! (1 greetings so far)");
    assert_eq!(answers[1]["content"]["body"], "hello, @alice:localhost! (2 greetings so far)");
    assert_eq!(answers[0]["content"]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(answers[0]["content"]["m.relates_to"]["event_id"], first.as_str());
}
