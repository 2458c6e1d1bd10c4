//! WebSocket connections the host keeps for a plugin (`net` with `websocket` framing), through
//! the `ws-probe` fixture against a WebSocket server in the test: the request target and text
//! messages both ways; a destination that is not granted refused; a loopback destination
//! unreachable unless the server allows private destinations.

use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use plugins::Grants;
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
};

use crate::{
    federation::free_port,
    harness::{TestServer, User, enc},
    plugins::{eventually, guest, messages, quick, spec, wait_joined},
};

/// A WebSocket server that answers each text message with it in upper case; the request
/// targets it was asked for.
async fn shouting_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // The callback's signature is tungstenite's, large error type included.
                #[allow(clippy::result_large_err)]
                let record = |request: &Request, response: Response| {
                    seen.lock().unwrap().push(request.uri().to_string());
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, record).await else { return };
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        let _ = socket.send(Message::text(text.to_uppercase())).await;
                    }
                }
            });
        }
    });
    (port, paths)
}

async fn probe_server(port: u16, allow_private: bool) -> Option<TestServer> {
    let probe = guest("ws_probe")?;
    let grants = Grants { net: vec![format!("127.0.0.1:{port}")], ..Grants::default() };
    Some(
        TestServer::start_with(|c| {
            quick(c);
            c.testing.allow_private_destinations = allow_private;
            c.plugins.insert("ws".into(), spec(probe, json!({}), grants));
        })
        .await,
    )
}

/// Alice and a room of hers the probe joined.
async fn probe_room(server: &TestServer) -> (User, String) {
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, "@ws:localhost").await;
    wait_joined(server, &alice, &room, "@ws:localhost").await;
    (alice, room)
}

async fn notice(server: &TestServer, user: &User, room: &str, starts: &str) -> String {
    eventually(30, &format!("a notice starting {starts:?}"), || async {
        messages(server, user, room).await.into_iter().find_map(|e| {
            let body = e["content"]["body"].as_str()?;
            (e["sender"] == "@ws:localhost" && body.starts_with(starts)).then(|| body.to_owned())
        })
    })
    .await
}

#[tokio::test]
async fn a_plugin_talks_over_a_websocket_the_host_keeps() {
    let (port, paths) = shouting_server().await;
    let Some(server) = probe_server(port, true).await else { return };
    let (alice, room) = probe_room(&server).await;

    server.send_text(&alice, &room, &format!("!ws 127.0.0.1:{port} /chat?v=1 hello there")).await;
    assert_eq!(notice(&server, &alice, &room, "ws: ").await, "ws: HELLO THERE");
    assert_eq!(paths.lock().unwrap().as_slice(), ["/chat?v=1"]);

    // Only granted destinations.
    server.send_text(&alice, &room, "!ws 127.0.0.1:1 / nope").await;
    let refused = notice(&server, &alice, &room, "error: ").await;
    assert!(refused.contains("Denied") && refused.contains("not granted"), "{refused}");
}

#[tokio::test]
async fn a_loopback_websocket_is_out_of_reach_without_allow_private_destinations() {
    let (port, paths) = shouting_server().await;
    let Some(server) = probe_server(port, false).await else { return };
    let (alice, room) = probe_room(&server).await;
    server.send_text(&alice, &room, &format!("!ws 127.0.0.1:{port} / hello")).await;
    let closed = notice(&server, &alice, &room, "closed: ").await;
    assert!(closed.contains("no address plugins may reach"), "{closed}");
    assert!(paths.lock().unwrap().is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn a_bridge_hears_typing_and_receipts_in_its_rooms() {
    let (port, _) = shouting_server().await;
    let Some(server) = probe_server(port, true).await else { return };
    let (alice, room) = probe_room(&server).await;
    let said = server.send_text(&alice, &room, "hello").await;

    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc("@alice:localhost"));
    let (code, _) = server.put(&path, Some(&alice.token), json!({ "typing": true, "timeout": 30000 })).await;
    assert_eq!(code, 200);
    assert_eq!(notice(&server, &alice, &room, "typing: ").await, "typing: @alice:localhost");

    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&said));
    let (code, _) = server.post(&path, Some(&alice.token), json!({})).await;
    assert_eq!(code, 200);
    let receipt = notice(&server, &alice, &room, "receipt: ").await;
    let content: serde_json::Value = serde_json::from_str(receipt.trim_start_matches("receipt: ")).unwrap();
    assert!(content[&said]["m.read"]["@alice:localhost"]["ts"].is_u64(), "{content}");
}
