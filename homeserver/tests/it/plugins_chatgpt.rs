//! The ChatGPT bot (`plugins/examples/chatgpt-bot`) as an admin sets it up: the `lattice` binary
//! with the bot in `lattice.toml`, its API key in the environment, and an OpenAI-compatible
//! streaming test server as the model service. Checked: what the service receives (model,
//! system prompt, the conversation of the thread, the bearer token), that the room sees a
//! placeholder in a thread rooted at the prompt edited into the whole answer, that only
//! mentions, `!ai` and direct chats are answered, per-room settings, and a provider failure
//! answered politely.

use serde_json::{Value, json};

use crate::{
    plugin_binary::{Lattice, QUIET},
    plugins::{eventually, guest},
    upstream::Upstream,
};

const BOT: &str = "@chatgpt:localhost";

async fn start() -> Option<(Lattice, Upstream)> {
    let bot = guest("chatgpt_bot")?;
    let upstream = Upstream::start().await;
    let plugins = format!(
        "[plugins.chatgpt]\npath = \"{}\"\nconfig = {{ base_url = \"http://127.0.0.1:{port}/v1\", model = \"test-model\", \
         api_key = {{ env = \"OPENAI_API_KEY\" }}, system_prompt = \"Be brief.\" }}\n\
         [plugins.chatgpt.grants]\nhttp_hosts = [\"127.0.0.1:{port}\"]\n",
        bot.display(),
        port = upstream.port
    );
    let lattice = Lattice::start(&plugins, &[("OPENAI_API_KEY", "sk-test-openai")]).await;
    Some((lattice, upstream))
}

/// The bot's final text for the thread rooted at `root`: the newest edit of its reply.
async fn answer_in_thread(lattice: &Lattice, token: &str, room: &str, root: &str, text: &str) -> Value {
    eventually(60, &format!("the answer {text:?}"), || async {
        let events = lattice.messages(token, room).await;
        let reply = events.iter().find(|e| {
            e["sender"] == BOT
                && e["content"]["m.relates_to"]["rel_type"] == "m.thread"
                && e["content"]["m.relates_to"]["event_id"] == root
        })?;
        let edited = events.iter().any(|e| {
            e["sender"] == BOT
                && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == reply["event_id"]
                && e["content"]["m.new_content"]["body"] == text
        });
        edited.then(|| reply.clone())
    })
    .await
}

fn messages_sent(upstream: &Upstream, n: usize) -> Value {
    let seen = &upstream.seen()[n];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.authorization, "Bearer sk-test-openai");
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["stream"], true);
    body
}

#[tokio::test]
async fn the_chatgpt_bot_answers_in_threads_with_streamed_edits_and_keeps_the_thread_as_context() {
    let Some((lattice, upstream)) = start().await else { return };
    let alice = lattice.register("alice").await;
    let bob = lattice.register("bob").await;
    let room = lattice.create_room(&alice, json!({ "preset": "public_chat" })).await;
    lattice.join(&bob, &room).await;
    lattice.invite(&alice, &room, BOT).await;
    lattice.wait_joined(&alice, &room, BOT).await;

    // A group room: chat that neither mentions the bot nor starts with !ai is not its business.
    lattice.say(&alice, &room, "hello everyone").await;
    tokio::time::sleep(QUIET).await;
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    let prompt = lattice.say(&alice, &room, "!ai What is 2+2?").await;
    let reply = answer_in_thread(&lattice, &alice, &room, &prompt, "The answer is 4.").await;
    assert_eq!(reply["content"]["body"], "…", "a placeholder first, then edits");
    assert_eq!(reply["content"]["msgtype"], "m.notice", "bots answer with notices: {reply}");
    assert_eq!(reply["content"]["org.lattice.chatgpt.answer"], true, "{reply}");
    let body = messages_sent(&upstream, 0);
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"],
        json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "What is 2+2?" }])
    );

    // A follow-up in the thread needs no !ai: the thread is the conversation.
    let follow_up = json!({
        "msgtype": "m.text",
        "body": "And doubled?",
        "m.relates_to": { "rel_type": "m.thread", "event_id": prompt, "is_falling_back": true, "m.in_reply_to": { "event_id": prompt } },
    });
    lattice.send(&alice, &room, follow_up).await;
    eventually(60, "the follow-up answer", || async {
        lattice
            .messages(&alice, &room)
            .await
            .iter()
            .any(|e| e["content"]["m.new_content"]["body"] == "That makes 8.")
            .then_some(())
    })
    .await;
    let body = messages_sent(&upstream, 1);
    assert_eq!(
        body["messages"],
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "What is 2+2?" },
            { "role": "assistant", "content": "The answer is 4." },
            { "role": "user", "content": "And doubled?" },
        ])
    );

    // A per-room model (alice created the room: power 100); a provider failure is answered
    // politely, not retried.
    lattice.say(&alice, &room, "!ai model broken").await;
    let failing = lattice.say(&alice, &room, "!ai hi").await;
    let sorry = eventually(60, "the apology", || async {
        lattice.messages(&alice, &room).await.into_iter().find(|e| {
            e["sender"] == BOT
                && e["content"]["m.new_content"]["body"].as_str().is_some_and(|b| b.starts_with("Sorry"))
        })
    })
    .await;
    assert!(sorry["content"]["m.new_content"]["body"].as_str().unwrap().contains("503"), "{sorry}");
    let to_broken: Vec<Value> = upstream
        .seen()
        .iter()
        .map(|s| serde_json::from_str::<Value>(&s.body).unwrap())
        .filter(|b| b["model"] == "broken")
        .collect();
    assert_eq!(to_broken.len(), 1, "asked once for {failing}");
}

#[tokio::test]
async fn the_chatgpt_bot_answers_every_message_in_a_direct_chat() {
    let Some((lattice, upstream)) = start().await else { return };
    let alice = lattice.register("alice").await;
    let room = lattice.create_room(&alice, json!({ "is_direct": true, "invite": [BOT] })).await;
    lattice.wait_joined(&alice, &room, BOT).await;
    let prompt = lattice.say(&alice, &room, "hi there").await;
    let reply = answer_in_thread(&lattice, &alice, &room, &prompt, "Hello, world!").await;
    assert_eq!(reply["content"]["msgtype"], "m.notice", "{reply}");
    assert_eq!(messages_sent(&upstream, 0)["messages"][1], json!({ "role": "user", "content": "hi there" }));
}
