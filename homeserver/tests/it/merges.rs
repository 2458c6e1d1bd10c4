//! Forks and merges seen by local clients: a remote server's events fork the room's DAG, state
//! resolution merges the forks, and `/sync` delivers the state the merge changed — including an
//! older state event the merge brings back, which no event in the sync's range carries.

use homeserver_core::keys::ServerKey;
use homeserver_rooms::{
    builder::{EventTemplate, Placement, build_pdu},
    remote::{Arrival, IncomingPdu, Verdict},
};
use ruma::{EventId, OwnedEventId, RoomId, ServerName, UserId, serde::Base64};
use serde_json::{Value, json};

use crate::harness::{TestServer, enc};

/// A server this test plays: its key is in the Lattice server's key ring.
struct RemoteServer {
    key: ServerKey,
}

impl RemoteServer {
    fn join(server: &TestServer, name: &str) -> RemoteServer {
        let name: &ServerName = name.try_into().unwrap();
        let key = ServerKey::from_pkcs8(name, &ServerKey::generate_pkcs8(), "1").unwrap();
        let public = Base64::parse(key.public_key_base64()).unwrap();
        server.server.app.rooms.key_ring().add(name.as_str(), &key.key_id(), public);
        RemoteServer { key }
    }

    /// Signs an event of `sender` after `prevs`, authorised by `auth`, and delivers it live.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        server: &TestServer,
        room: &RoomId,
        sender: &str,
        kind: &str,
        state_key: &str,
        content: Value,
        prevs: &[OwnedEventId],
        auth: &[OwnedEventId],
    ) -> Verdict {
        let rooms = &server.server.app.rooms;
        let sender: &UserId = sender.try_into().unwrap();
        let mut depth = 0;
        for prev in prevs {
            depth = depth.max(rooms.cache().get(prev).await.unwrap().unwrap().depth);
        }
        let rules = ruma::RoomVersionId::V12.rules().unwrap();
        let template = EventTemplate::state(kind, state_key, sender, content);
        let placement = Placement {
            room_id: Some(room),
            prev_events: prevs,
            auth_events: auth,
            depth: depth + 1,
            origin_server_ts: homeserver_core::time::now_millis(),
            references: &Default::default(),
        };
        let pdu = build_pdu(&self.key, &rules, &template, &placement).unwrap();
        let mut verdicts = rooms
            .receive_remote(room, vec![IncomingPdu::new(pdu.json.to_string())], Arrival::Live)
            .await
            .unwrap();
        verdicts.remove(0)
    }
}

async fn current(server: &TestServer, room: &RoomId, ty: &str, key: &str) -> OwnedEventId {
    let id = server.server.db.current_state_event_id(room.as_str(), ty, key).await.unwrap().unwrap();
    EventId::parse(id).unwrap()
}

async fn extremities(server: &TestServer, room: &RoomId) -> Vec<OwnedEventId> {
    let ids = server.server.db.room_extremities(room.as_str()).await.unwrap();
    ids.into_iter().map(|id| EventId::parse(id).unwrap()).collect()
}

fn accepted(verdict: Verdict) -> OwnedEventId {
    match verdict {
        Verdict::Accepted(id) => id,
        other => panic!("not accepted: {other:?}"),
    }
}

#[tokio::test]
async fn a_merge_that_brings_an_older_topic_back_is_delivered_by_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    let room_id = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "room_version": "12",
                "power_level_content_override": {
                    "users": { "@carol:localhost": 50, "@bob:b.test": 100 },
                    "state_default": 50
                }
            }),
        )
        .await;
    server.join(&carol, &room_id).await;
    let room: &RoomId = room_id.as_str().try_into().unwrap();
    let b = RemoteServer::join(&server, "b.test");

    // Bob (on b.test) joins and sets a topic.
    let power = current(&server, room, "m.room.power_levels", "").await;
    let rules = current(&server, room, "m.room.join_rules", "").await;
    let prevs = extremities(&server, room).await;
    let join = json!({ "membership": "join" });
    let verdict = b
        .send(
            &server,
            room,
            "@bob:b.test",
            "m.room.member",
            "@bob:b.test",
            join,
            &prevs,
            &[power.clone(), rules],
        )
        .await;
    let bob_join = accepted(verdict);
    let topic = json!({ "topic": "bob's topic" });
    let auth = [power.clone(), bob_join.clone()];
    let bob_topic = accepted(
        b.send(
            &server,
            room,
            "@bob:b.test",
            "m.room.topic",
            "",
            topic,
            std::slice::from_ref(&bob_join),
            &auth,
        )
        .await,
    );

    let first = server.sync(&carol, None, 0).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // Carol changes the topic here; the client sees it.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room_id)),
            Some(&carol.token),
            json!({ "topic": "carol's topic" }),
        )
        .await;
    assert_eq!(status, 200);
    let second = server.sync(&carol, Some(&since), 0).await;
    let since = second["next_batch"].as_str().unwrap().to_owned();
    assert_ne!(current(&server, room, "m.room.topic", "").await, bob_topic, "carol's topic is current");

    // Meanwhile, on a fork from before carol's topic, bob takes carol's power away.
    let (_, mut demote) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room_id)),
            Some(&alice.token),
        )
        .await;
    demote["users"]["@carol:localhost"] = json!(0);
    let auth = [power, bob_join];
    let demotion = accepted(
        b.send(
            &server,
            room,
            "@bob:b.test",
            "m.room.power_levels",
            "",
            demote,
            std::slice::from_ref(&bob_topic),
            &auth,
        )
        .await,
    );

    // Resolution: the demotion applies first, so carol's topic fails and bob's comes back.
    assert_eq!(current(&server, room, "m.room.topic", "").await, bob_topic);
    assert_eq!(current(&server, room, "m.room.power_levels", "").await, demotion);
    let third = server.sync(&carol, Some(&since), 0).await;
    let section = &third["rooms"]["join"][&room_id];
    let timeline: Vec<&str> = section["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, vec![demotion.as_str()], "{third}");
    let state: Vec<&str> = section["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert!(state.contains(&bob_topic.as_str()), "the older topic is delivered as state: {third}");
    let (_, topic) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room_id)), Some(&carol.token))
        .await;
    assert_eq!(topic["topic"], "bob's topic");
    // Alice's next message merges the forks: it names both extremities.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&room_id)),
            Some(&alice.token),
            json!({ "msgtype": "m.text", "body": "merged" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(extremities(&server, room).await.len(), 1, "the local event merged the forks");
}
