//! `dag_bench`: what the remote-event path costs in a large room.
//!
//! Builds a room of 10,000 state events (5,000 members of a fake server plus 5,000 other state
//! entries) through the remote path, then measures:
//! - accepting one remote message that extends the room (no resolution needed), per message;
//! - accepting an event that forks the room, so the current state must be resolved from two
//!   branches of 10,000 state events each (power levels on one, the topic on the other), and the
//!   event that merges them again.
//!
//! Run: `cargo run --release -p homeserver-rooms --example dag_bench` (SQLite in a temporary
//! file; `LATTICE_TEST_DATABASE_URL=postgres://…` for PostgreSQL). Sizes: `DAG_BENCH_MEMBERS`,
//! `DAG_BENCH_EXTRA_STATE`, `DAG_BENCH_MESSAGES`, `DAG_BENCH_FORKS`.

use std::{collections::HashMap, time::Instant};

use homeserver_core::{keys::ServerKey, streams::EventStream};
use homeserver_rooms::{
    Rooms, RoomsConfig,
    auth::auth_state_keys,
    builder::{EventTemplate, Placement, build_pdu},
    remote::{Arrival, IncomingPdu, Verdict},
};
use homeserver_storage::{Db, testing::TestDatabase};
use ruma::{
    OwnedEventId, OwnedRoomId, RoomVersionId, ServerName, UserId, events::StateEventType, serde::Base64,
};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Process CPU time (user + system, all threads), from /proc, in milliseconds.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks of 10 ms).
    (ticks(11) + ticks(12)) * 10.0
}

/// Signs events for the fake servers and keeps the room's (linear) state for auth events.
struct Room {
    rules: ruma::room_version_rules::RoomVersionRules,
    keys: HashMap<String, ServerKey>,
    room_id: Option<OwnedRoomId>,
    state: HashMap<(StateEventType, String), OwnedEventId>,
    depths: HashMap<OwnedEventId, u64>,
    head: Vec<OwnedEventId>,
    ts: u64,
}

impl Room {
    fn event(
        &mut self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> (OwnedEventId, String) {
        let prevs = self.head.clone();
        self.event_after(&prevs, sender, kind, state_key, content, true)
    }

    /// An event after `prevs`; `advance`: it becomes the head and (if state) enters the state.
    fn event_after(
        &mut self,
        prevs: &[OwnedEventId],
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        advance: bool,
    ) -> (OwnedEventId, String) {
        let sender_id: &UserId = sender.try_into().unwrap();
        let raw = serde_json::value::to_raw_value(&content).unwrap();
        let auth: Vec<OwnedEventId> =
            auth_state_keys(kind, sender_id, state_key, &raw, &self.rules.authorization)
                .unwrap()
                .into_iter()
                .filter_map(|k| self.state.get(&k).cloned())
                .collect();
        let template = match state_key {
            Some(k) => EventTemplate::state(kind, k, sender_id, content),
            None => EventTemplate::new(kind, sender_id, content),
        };
        let depth = prevs.iter().filter_map(|p| self.depths.get(p)).max().map_or(1, |d| d + 1);
        self.ts += 1;
        let key = &self.keys[sender_id.server_name().as_str()];
        let placement = Placement {
            room_id: self.room_id.as_deref(),
            prev_events: prevs,
            auth_events: &auth,
            depth,
            origin_server_ts: self.ts,
            references: &Default::default(),
        };
        let pdu = build_pdu(key, &self.rules, &template, &placement).unwrap();
        self.room_id.get_or_insert_with(|| pdu.room_id.clone());
        self.depths.insert(pdu.event_id.clone(), depth);
        if advance {
            self.head = vec![pdu.event_id.clone()];
            if let Some(k) = state_key {
                self.state.insert((kind.into(), k.to_owned()), pdu.event_id.clone());
            }
        }
        (pdu.event_id.clone(), pdu.json.to_string())
    }
}

async fn deliver(rooms: &Rooms, room: &Room, pdus: Vec<String>) {
    let incoming = pdus.into_iter().map(IncomingPdu::new).collect();
    let verdicts =
        rooms.receive_remote(room.room_id.as_ref().unwrap(), incoming, Arrival::Live).await.unwrap();
    for verdict in verdicts {
        assert!(matches!(verdict, Verdict::Accepted(_)), "{verdict:?}");
    }
}

#[tokio::main]
async fn main() {
    let members = env_usize("DAG_BENCH_MEMBERS", 5_000);
    let extra = env_usize("DAG_BENCH_EXTRA_STATE", 5_000);
    let messages = env_usize("DAG_BENCH_MESSAGES", 500);
    let forks = env_usize("DAG_BENCH_FORKS", 10);

    let tdb = TestDatabase::create().await;
    let db = Db::connect(&tdb.url).await.unwrap();
    let local: &ServerName = "bench.local".try_into().unwrap();
    let local_key = ServerKey::from_pkcs8(local, &ServerKey::generate_pkcs8(), "k").unwrap();
    let stream = EventStream::new(db.max_stream_pos().await.unwrap() as u64);
    let rooms = Rooms::new(db.clone(), local_key, stream, RoomsConfig::default());
    let mut keys = HashMap::new();
    for name in ["a.test", "b.test"] {
        let server: &ServerName = name.try_into().unwrap();
        let key = ServerKey::from_pkcs8(server, &ServerKey::generate_pkcs8(), "1").unwrap();
        rooms.key_ring().add(name, &key.key_id(), Base64::parse(key.public_key_base64()).unwrap());
        keys.insert(name.to_owned(), key);
    }
    let mut room = Room {
        rules: RoomVersionId::V12.rules().unwrap(),
        keys,
        room_id: None,
        state: HashMap::new(),
        depths: HashMap::new(),
        head: Vec::new(),
        ts: 1_700_000_000_000,
    };

    // The room: creator alice on a.test, an admin and `members` members on b.test.
    let started = Instant::now();
    let alice = "@alice:a.test";
    let (_, create) = room.event(alice, "m.room.create", Some(""), json!({ "room_version": "12" }));
    deliver(&rooms, &room, vec![create]).await;
    let mut setup = Vec::new();
    setup.push(room.event(alice, "m.room.member", Some(alice), json!({ "membership": "join" })).1);
    let power = json!({ "users": { "@admin:b.test": 100 } });
    setup.push(room.event(alice, "m.room.power_levels", Some(""), power).1);
    setup.push(room.event(alice, "m.room.join_rules", Some(""), json!({ "join_rule": "public" })).1);
    setup.push(
        room.event("@admin:b.test", "m.room.member", Some("@admin:b.test"), json!({ "membership": "join" }))
            .1,
    );
    deliver(&rooms, &room, setup).await;
    let mut batch = Vec::new();
    for i in 0..members {
        let user = format!("@u{i}:b.test");
        batch.push(room.event(&user, "m.room.member", Some(&user), json!({ "membership": "join" })).1);
        if batch.len() == 100 {
            deliver(&rooms, &room, std::mem::take(&mut batch)).await;
        }
    }
    for i in 0..extra {
        let key = format!("k{i}");
        batch.push(room.event(alice, "org.lattice.bench", Some(&key), json!({ "i": i })).1);
        if batch.len() == 100 {
            deliver(&rooms, &room, std::mem::take(&mut batch)).await;
        }
    }
    deliver(&rooms, &room, batch).await;
    // As autovacuum would after such a load: the planner needs the tables' sizes.
    db.analyze().await.unwrap();
    let state_events = room.state.len();
    println!(
        "room: {state_events} state events ({members} members) built in {:.1} s through the remote path",
        started.elapsed().as_secs_f64()
    );

    // One remote message at a time, each its own command and commit.
    let pdus: Vec<String> = (0..messages)
        .map(|i| {
            room.event(
                "@u1:b.test",
                "m.room.message",
                None,
                json!({ "msgtype": "m.text", "body": format!("m{i}") }),
            )
            .1
        })
        .collect();
    let (cpu, wall) = (cpu_ms(), Instant::now());
    for pdu in pdus {
        deliver(&rooms, &room, vec![pdu]).await;
    }
    let per_wall = wall.elapsed().as_secs_f64() * 1000.0 / messages as f64;
    let per_cpu = (cpu_ms() - cpu) / messages as f64;
    println!(
        "remote message, no resolution, one per commit: {per_cpu:.3} ms CPU, {per_wall:.3} ms wall per message"
    );
    // As federation delivers them: transactions of up to 50 events, one commit each.
    let pdus: Vec<String> = (0..messages)
        .map(|i| {
            room.event(
                "@u2:b.test",
                "m.room.message",
                None,
                json!({ "msgtype": "m.text", "body": format!("n{i}") }),
            )
            .1
        })
        .collect();
    let (cpu, wall) = (cpu_ms(), Instant::now());
    for chunk in pdus.chunks(50) {
        deliver(&rooms, &room, chunk.to_vec()).await;
    }
    let per_wall = wall.elapsed().as_secs_f64() * 1000.0 / messages as f64;
    let per_cpu = (cpu_ms() - cpu) / messages as f64;
    println!(
        "remote message, no resolution, 50 per transaction: {per_cpu:.3} ms CPU, {per_wall:.3} ms wall per message"
    );

    // Forks: the admin changes the power levels on one branch while alice sets the topic on
    // the other; the second branch's event makes the room resolve both; a message merges them.
    let mut fork_wall = Vec::new();
    let mut fork_cpu = Vec::new();
    let mut merge_wall = Vec::new();
    for i in 0..forks {
        let base = room.head.clone();
        let levels = json!({ "users": { "@admin:b.test": 100, "@u1:b.test": i % 50 } });
        let (a, pdu_a) =
            room.event_after(&base, "@admin:b.test", "m.room.power_levels", Some(""), levels, false);
        let (b, pdu_b) = room.event_after(
            &base,
            alice,
            "m.room.topic",
            Some(""),
            json!({ "topic": format!("t{i}") }),
            false,
        );
        deliver(&rooms, &room, vec![pdu_a]).await;
        let (cpu, wall) = (cpu_ms(), Instant::now());
        deliver(&rooms, &room, vec![pdu_b]).await;
        fork_wall.push(wall.elapsed().as_secs_f64() * 1000.0);
        fork_cpu.push(cpu_ms() - cpu);
        room.state.insert((StateEventType::RoomPowerLevels, String::new()), a.clone());
        room.state.insert((StateEventType::RoomTopic, String::new()), b.clone());
        let body = json!({ "msgtype": "m.text", "body": "merge" });
        let (merge_id, merge) = room.event_after(&[a, b], "@u1:b.test", "m.room.message", None, body, false);
        let wall = Instant::now();
        deliver(&rooms, &room, vec![merge]).await;
        merge_wall.push(wall.elapsed().as_secs_f64() * 1000.0);
        room.head = vec![merge_id];
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "fork of two branches of {state_events} state events: resolution {:.1} ms wall (median of {forks}), {:.1} ms CPU; merge event {:.1} ms",
        median(&mut fork_wall),
        median(&mut fork_cpu),
        median(&mut merge_wall)
    );
    drop(rooms);
    drop(tdb);
}
