//! The IRC bridge (`plugins/examples/irc-bridge`) as an admin sets it up: the `lattice` binary
//! with the bridge in `lattice.toml` and a real IRC server (ngircd) on loopback, with people on
//! both sides. Checked: the portal room `#irc_test`, messages, actions and notices both ways,
//! a Matrix user appearing on IRC under their own nick, IRC joins, parts and nick changes as
//! puppets, long messages split into IRC lines, edits as corrected lines, no echo, the exclusive
//! namespace refused to clients, and the bridge surviving an IRC server restart and a plugin
//! reload (its connections are the host's, so a reload does not drop them).

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    harness::enc,
    ircd::{IrcClient, Ircd},
    plugin_binary::Lattice,
    plugins::{eventually, guest},
};

const PORTAL: &str = "#irc_test:localhost";

async fn start() -> Option<(Lattice, Ircd)> {
    let bridge = guest("irc_bridge")?;
    let ircd = Ircd::start().await?;
    let plugins = format!(
        "[plugins.irc]\npath = \"{}\"\n\
         config = {{ server = \"127.0.0.1:{port}\", channels = [\"#test\"] }}\n\
         [plugins.irc.grants]\nnet = [\"127.0.0.1:{port}\"]\nsends_per_second = 50\n\
         namespaces = {{ users = [{{ regex = \"@irc_.*:localhost\", exclusive = true }}], \
         aliases = [{{ regex = \"#irc_.*:localhost\", exclusive = true }}] }}\n",
        bridge.display(),
        port = ircd.port
    );
    let lattice = Lattice::start(&plugins, &[]).await;
    Some((lattice, ircd))
}

/// The portal room, once the bridge made it.
async fn portal(lattice: &Lattice, token: &str) -> String {
    eventually(60, "the portal room", || async {
        let path = format!("/_matrix/client/v3/directory/room/{}", enc(PORTAL));
        let answer = lattice.call(reqwest::Method::GET, &path, Some(token), Value::Null).await;
        answer["room_id"].as_str().map(str::to_owned)
    })
    .await
}

/// Waits for a message event in the room matching `wanted`.
async fn matrix_sees(
    lattice: &Lattice,
    token: &str,
    room: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    eventually(60, what, || async { lattice.messages(token, room).await.into_iter().find(|e| wanted(e)) })
        .await
}

async fn joined_members(lattice: &Lattice, token: &str, room: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room));
    lattice.call(reqwest::Method::GET, &path, Some(token), Value::Null).await["joined"].clone()
}

async fn wait_membership(lattice: &Lattice, token: &str, room: &str, user: &str, joined: bool) {
    eventually(60, &format!("{user} joined={joined}"), || async {
        (joined_members(lattice, token, room).await.get(user).is_some() == joined).then_some(())
    })
    .await
}

#[tokio::test]
async fn matrix_and_irc_users_chat_in_the_portal_room() {
    let Some((lattice, ircd)) = start().await else { return };
    let mut bob = IrcClient::connect(ircd.port, "bob").await;
    bob.join("#test").await;
    let alice = lattice.register("alice").await;
    let room = portal(&lattice, &alice).await;
    let path = format!("/_matrix/client/v3/join/{}", enc(PORTAL));
    let joined = lattice.call(reqwest::Method::POST, &path, Some(&alice), json!({})).await;
    assert_eq!(joined["room_id"], room.as_str(), "the portal is public to join: {joined}");

    // Alice appears on IRC as herself, under the nick template.
    bob.expect(60, "alice[m] joining", |l| l.command == "JOIN" && l.nick == "alice[m]").await;
    lattice.say(&alice, &room, "hello from matrix").await;
    let line = bob.expect(30, "alice's message", |l| l.command == "PRIVMSG" && l.nick == "alice[m]").await;
    assert_eq!(line.params, ["#test", "hello from matrix"]);
    lattice.send(&alice, &room, json!({ "msgtype": "m.emote", "body": "waves" })).await;
    let line = bob.expect(30, "alice's action", |l| l.command == "PRIVMSG" && l.nick == "alice[m]").await;
    assert_eq!(line.text(), "\u{1}ACTION waves\u{1}");

    // Bob's words reach the room from his puppet, which joined the portal (once the bridge's own
    // connection, which relays what IRC says, is in the channel: IRC keeps no history).
    bob.wait_for_nick("#test", "lattice", 60).await;
    bob.say("#test", "hi from irc").await;
    let seen =
        matrix_sees(&lattice, &alice, &room, "bob's message", |e| e["content"]["body"] == "hi from irc")
            .await;
    assert_eq!(seen["sender"], "@irc_bob:localhost");
    assert_eq!(seen["content"]["msgtype"], "m.text");
    wait_membership(&lattice, &alice, &room, "@irc_bob:localhost", true).await;
    bob.say("#test", "\u{1}ACTION dances\u{1}").await;
    let seen =
        matrix_sees(&lattice, &alice, &room, "bob's action", |e| e["content"]["body"] == "dances").await;
    assert_eq!(seen["content"]["msgtype"], "m.emote");
    bob.send("NOTICE #test :a notice").await;
    let seen =
        matrix_sees(&lattice, &alice, &room, "bob's notice", |e| e["content"]["body"] == "a notice").await;
    assert_eq!(seen["content"]["msgtype"], "m.notice");

    // What alice said came back to the room once only: no echo of her own IRC lines.
    let events = lattice.messages(&alice, &room).await;
    let hellos = events.iter().filter(|e| e["content"]["body"] == "hello from matrix").count();
    assert_eq!(hellos, 1, "{events:#?}");

    // A long message becomes several IRC lines that add up to it; an edit a corrected line.
    let long: String = (0..120).map(|i| format!("word{i} ")).collect::<String>().trim_end().to_owned();
    let original = lattice.say(&alice, &room, &long).await;
    let mut received = Vec::new();
    while received.join(" ").len() < long.len() {
        let line = bob
            .expect(30, "the long message's lines", |l| l.command == "PRIVMSG" && l.nick == "alice[m]")
            .await;
        assert!(line.text().len() <= 450, "each line fits IRC's limit: {}", line.text().len());
        received.push(line.text().to_owned());
    }
    assert!(received.len() >= 2, "{received:?}");
    assert_eq!(
        received.join(" ").split_whitespace().collect::<Vec<_>>(),
        long.split_whitespace().collect::<Vec<_>>()
    );
    let edit = json!({
        "msgtype": "m.text", "body": "* fixed text",
        "m.new_content": { "msgtype": "m.text", "body": "fixed text" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    });
    lattice.send(&alice, &room, edit).await;
    let line = bob.expect(30, "the corrected line", |l| l.command == "PRIVMSG" && l.nick == "alice[m]").await;
    assert!(line.text().contains("fixed text"), "{line:?}");

    // IRC joins, nick changes and parts are the puppets' memberships.
    let mut carol = IrcClient::connect(ircd.port, "carol").await;
    carol.join("#test").await;
    wait_membership(&lattice, &alice, &room, "@irc_carol:localhost", true).await;
    carol.send("NICK caroline").await;
    wait_membership(&lattice, &alice, &room, "@irc_caroline:localhost", true).await;
    wait_membership(&lattice, &alice, &room, "@irc_carol:localhost", false).await;
    carol.send("PART #test :bye").await;
    wait_membership(&lattice, &alice, &room, "@irc_caroline:localhost", false).await;

    // The namespaces are the bridge's: clients can neither register puppets nor take aliases.
    let body = json!({ "username": "irc_mallory", "password": "pw-mallory-secret", "auth": { "type": "m.login.dummy" } });
    let refused = lattice.call(reqwest::Method::POST, "/_matrix/client/v3/register", None, body).await;
    assert_eq!(refused["errcode"], "M_EXCLUSIVE", "{refused}");
    let path = "/_matrix/client/v3/register/available?username=irc_mallory";
    let refused = lattice.call(reqwest::Method::GET, path, None, Value::Null).await;
    assert_eq!(refused["errcode"], "M_EXCLUSIVE", "{refused}");
    let body = json!({ "room_alias_name": "irc_other" });
    let refused =
        lattice.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&alice), body).await;
    assert_eq!(refused["errcode"], "M_EXCLUSIVE", "{refused}");
    // Nor can a client act as a puppet by inviting itself into one's shoes: bob's puppet has no
    // password, so it cannot log in.
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "irc_bob" }, "password": "" });
    let refused = lattice.call(reqwest::Method::POST, "/_matrix/client/v3/login", None, body).await;
    assert_eq!(refused["errcode"], "M_FORBIDDEN", "{refused}");
}

#[tokio::test]
async fn the_bridge_survives_an_irc_server_restart_and_a_plugin_reload() {
    let Some((lattice, mut ircd)) = start().await else { return };
    let alice = lattice.register("alice").await;
    let room = portal(&lattice, &alice).await;
    lattice.join(&alice, &room).await;
    let mut bob = IrcClient::connect(ircd.port, "bob").await;
    bob.join("#test").await;
    // alice[m] may have joined before bob: ask for the channel's names.
    bob.wait_for_nick("#test", "alice[m]", 60).await;

    // A reload keeps the connections: nobody on IRC sees alice[m] quit, and chat goes on.
    lattice.reload_plugins();
    let lines = bob.collect(Duration::from_secs(3)).await;
    assert!(!lines.iter().any(|l| l.command == "QUIT" || l.command == "PART"), "{lines:?}");
    lattice.say(&alice, &room, "after the reload").await;
    let line = bob
        .expect(30, "a message after the reload", |l| l.command == "PRIVMSG" && l.nick == "alice[m]")
        .await;
    assert_eq!(line.text(), "after the reload");

    // The IRC server restarts: everybody is cut off; the bridge reconnects and rejoins.
    ircd.restart().await;
    let mut bob = IrcClient::connect(ircd.port, "bob").await;
    bob.join("#test").await;
    bob.wait_for_nick("#test", "alice[m]", 120).await;
    // IRC keeps no history: what bob says reaches Matrix only once the bridge's own connection,
    // which reconnects on its own backoff, is back in the channel.
    bob.wait_for_nick("#test", "lattice", 120).await;
    lattice.say(&alice, &room, "after the restart").await;
    let line = bob
        .expect(60, "a message after the restart", |l| l.command == "PRIVMSG" && l.nick == "alice[m]")
        .await;
    assert_eq!(line.text(), "after the restart");
    bob.say("#test", "irc is back").await;
    let seen = matrix_sees(&lattice, &alice, &room, "bob after the restart", |e| {
        e["content"]["body"] == "irc is back"
    })
    .await;
    assert_eq!(seen["sender"], "@irc_bob:localhost");
}
