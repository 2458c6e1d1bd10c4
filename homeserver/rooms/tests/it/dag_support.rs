//! Test support for remote events: three fake servers with fixed signing keys, a builder that
//! signs events as they would (prev and auth events chosen from a state the author names), fixture
//! files holding the signed DAGs, and a driver that delivers events in any order to the room
//! model, retrying what it reports missing.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use homeserver_core::{
    keys::ServerKey,
    streams::{EventStream, StreamPos},
};
use homeserver_rooms::{
    Rooms, RoomsConfig, ServerKeysHandle,
    auth::auth_state_keys,
    builder::{EventTemplate, Placement, build_pdu},
    pdu::Pdu,
    remote::{Arrival, IncomingPdu, KeyRing, Verdict},
};
use homeserver_storage::{Db, testing::TestDatabase};
use ruma::{
    OwnedEventId, OwnedRoomId, RoomVersionId, ServerName, UserId, events::StateEventType, serde::Base64,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// PKCS#8 documents of the fake servers' signing keys (fixed, so fixtures are reproducible).
const SERVER_KEYS: [(&str, &str); 3] = [
    ("a.test", "MC4CAQAwBQYDK2VwBCIEIAEBWSSn142rqzAc3jWkrYjesSZng4oD+tM9+MYr+Prb"),
    ("b.test", "MC4CAQAwBQYDK2VwBCIEIABBmh3ZA8oZV8ezZuJNrcvjsrAPYlTyCBNY/mnI5tYT"),
    ("c.test", "MC4CAQAwBQYDK2VwBCIEIA7PSsADuhV45JsF9S5ZhQfwvPntdvpuoi3NB1OTt0vt"),
];

pub fn server_key(server: &str) -> ServerKey {
    let (_, doc) = SERVER_KEYS.iter().find(|(name, _)| *name == server).expect("a fake server");
    let der = base64_decode(doc);
    let name: &ServerName = server.try_into().unwrap();
    ServerKey::from_pkcs8(name, &der, "1").expect("fixed key")
}

fn base64_decode(text: &str) -> Vec<u8> {
    Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(text).expect("base64").into_inner()
}

/// A signed DAG as stored in `tests/fixtures/*.json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Fixture {
    pub room_version: String,
    pub room_id: String,
    /// server -> (key id, public key)
    pub servers: BTreeMap<String, (String, String)>,
    /// In creation order: a label, the event id, the PDU as sent.
    pub events: Vec<FixtureEvent>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct FixtureEvent {
    pub label: String,
    pub event_id: String,
    pub pdu: Value,
}

impl Fixture {
    pub fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.json"))
    }

    /// The committed fixture, checked against what the builder produces now: regenerate with
    /// `LATTICE_WRITE_FIXTURES=1` after changing a scenario.
    pub fn load_or_write(name: &str, built: Fixture) -> Fixture {
        let path = Self::path(name);
        if std::env::var_os("LATTICE_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (LATTICE_WRITE_FIXTURES=1 writes it)", path.display()));
        let stored: Fixture = serde_json::from_str(&text).unwrap();
        assert_eq!(stored, built, "{name}.json is stale: rerun with LATTICE_WRITE_FIXTURES=1");
        stored
    }

    pub fn id(&self, label: &str) -> OwnedEventId {
        let ev = self.events.iter().find(|e| e.label == label).unwrap_or_else(|| panic!("no event {label}"));
        ev.event_id.as_str().try_into().unwrap()
    }

    pub fn pdu(&self, label: &str) -> IncomingPdu {
        let ev = self.events.iter().find(|e| e.label == label).unwrap_or_else(|| panic!("no event {label}"));
        IncomingPdu::new(ev.pdu.to_string())
    }

    pub fn labels(&self) -> Vec<String> {
        self.events.iter().map(|e| e.label.clone()).collect()
    }

    pub fn room(&self) -> OwnedRoomId {
        self.room_id.as_str().try_into().unwrap()
    }

    pub fn key_ring(&self) -> KeyRing {
        let ring = KeyRing::default();
        for (server, (key_id, key)) in &self.servers {
            ring.add(server, key_id, Base64::parse(key).unwrap());
        }
        ring
    }
}

type State = HashMap<(StateEventType, String), Arc<Pdu>>;

/// Builds a signed DAG the way the fake servers would.
pub struct Builder {
    version: RoomVersionId,
    room_id: Option<OwnedRoomId>,
    ts: u64,
    events: Vec<(String, Arc<Pdu>)>,
    /// The state after each event, as its author saw it.
    state_after: HashMap<String, State>,
}

impl Builder {
    pub fn new(version: RoomVersionId) -> Self {
        Self {
            version,
            room_id: None,
            ts: 1_700_000_000_000,
            events: Vec::new(),
            state_after: HashMap::new(),
        }
    }

    fn get(&self, label: &str) -> &Arc<Pdu> {
        &self.events.iter().find(|(l, _)| l == label).unwrap_or_else(|| panic!("no event {label}")).1
    }

    /// Adds an event after `prevs`; its auth events come from the state after `state_from`
    /// (the first prev when `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        label: &str,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prevs: &[&str],
        state_from: Option<&str>,
    ) -> &mut Self {
        let sender_id: &UserId = sender.try_into().unwrap();
        let rules = self.version.rules().unwrap();
        let before: State =
            state_from.or(prevs.first().copied()).map(|l| self.state_after[l].clone()).unwrap_or_default();
        let raw = serde_json::value::to_raw_value(&content).unwrap();
        let mut auth: Vec<OwnedEventId> = Vec::new();
        for k in auth_state_keys(kind, sender_id, state_key, &raw, &rules.authorization).unwrap() {
            if let Some(ev) = before.get(&k) {
                auth.push(ev.event_id.clone());
            }
        }
        if !rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = before.get(&(StateEventType::RoomCreate, String::new()))
            && !auth.contains(&create.event_id)
        {
            auth.insert(0, create.event_id.clone());
        }
        self.event_with_auth(label, sender, kind, state_key, content, prevs, &auth, before)
    }

    /// Adds an event with exactly these auth events.
    #[allow(clippy::too_many_arguments)]
    pub fn event_with_auth(
        &mut self,
        label: &str,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prevs: &[&str],
        auth: &[OwnedEventId],
        before: State,
    ) -> &mut Self {
        let sender_id: &UserId = sender.try_into().unwrap();
        let key = server_key(sender_id.server_name().as_str());
        let rules = self.version.rules().unwrap();
        let prev_ids: Vec<OwnedEventId> = prevs.iter().map(|l| self.get(l).event_id.clone()).collect();
        let depth = prevs.iter().map(|l| self.get(l).depth).max().map_or(1, |d| d + 1);
        let template = match state_key {
            Some(k) => EventTemplate::state(kind, k, sender_id, content),
            None => EventTemplate::new(kind, sender_id, content),
        };
        self.ts += 1000;
        if self.room_id.is_none() && !rules.authorization.room_create_event_id_as_room_id {
            self.room_id =
                Some(format!("!{}:a.test", self.version.as_str().replace('.', "_")).try_into().unwrap());
        }
        let pdu = build_pdu(
            &key,
            &rules,
            &template,
            &Placement {
                room_id: self.room_id.as_deref(),
                prev_events: &prev_ids,
                auth_events: auth,
                depth,
                origin_server_ts: self.ts,
                references: &Default::default(),
            },
        )
        .unwrap();
        if self.room_id.is_none() {
            self.room_id = Some(pdu.room_id.clone());
        }
        let pdu = Arc::new(pdu);
        let mut after = before;
        if let Some(k) = &pdu.state_key {
            after.insert((pdu.kind.to_string().into(), k.clone()), pdu.clone());
        }
        self.state_after.insert(label.to_owned(), after);
        self.events.push((label.to_owned(), pdu));
        self
    }

    /// The ids of the auth events `label`'s author would pick for a new event by `sender`.
    pub fn state_of(&self, label: &str) -> State {
        self.state_after[label].clone()
    }

    pub fn fixture(&self) -> Fixture {
        let servers = SERVER_KEYS
            .iter()
            .map(|(name, _)| {
                let key = server_key(name);
                ((*name).to_owned(), (key.key_id(), key.public_key_base64()))
            })
            .collect();
        Fixture {
            room_version: self.version.to_string(),
            room_id: self.room_id.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            servers,
            events: self
                .events
                .iter()
                .map(|(label, pdu)| FixtureEvent {
                    label: label.clone(),
                    event_id: pdu.event_id.to_string(),
                    pdu: serde_json::from_str(&pdu.json).unwrap(),
                })
                .collect(),
        }
    }

    /// create, alice's join, power levels (alice and bob 100), public join rules, bob's join,
    /// carol's join: the common start of the scenarios, labelled `base` at its end.
    pub fn room_with_members(version: RoomVersionId) -> Builder {
        let mut b = Builder::new(version.clone());
        let version = &version;
        let create = match *version {
            RoomVersionId::V12 => json!({ "room_version": "12" }),
            _ => json!({ "room_version": version.to_string(), "creator": "@alice:a.test" }),
        };
        b.event("create", "@alice:a.test", "m.room.create", Some(""), create, &[], None)
            .event(
                "alice_join",
                "@alice:a.test",
                "m.room.member",
                Some("@alice:a.test"),
                json!({"membership": "join"}),
                &["create"],
                None,
            )
            .event(
                "power",
                "@alice:a.test",
                "m.room.power_levels",
                Some(""),
                power(version, &[("@bob:b.test", 100)]),
                &["alice_join"],
                None,
            )
            .event(
                "join_rules",
                "@alice:a.test",
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
                &["power"],
                None,
            )
            .event(
                "bob_join",
                "@bob:b.test",
                "m.room.member",
                Some("@bob:b.test"),
                json!({"membership": "join"}),
                &["join_rules"],
                None,
            )
            .event(
                "base",
                "@carol:c.test",
                "m.room.member",
                Some("@carol:c.test"),
                json!({"membership": "join"}),
                &["bob_join"],
                None,
            );
        b
    }
}

/// Power levels giving `users` their levels, and alice (the creator) 100 — in v12 rooms the
/// creator's power is implicit and may not be listed.
pub fn power(version: &RoomVersionId, users: &[(&str, i64)]) -> Value {
    let mut map = serde_json::Map::new();
    if *version != RoomVersionId::V12 {
        map.insert("@alice:a.test".into(), json!(100));
    }
    for (user, level) in users {
        map.insert((*user).into(), json!(level));
    }
    json!({ "users": map })
}

/// A room model observing the fake servers' room (this server is `test.local`).
pub struct Observer {
    pub _tdb: TestDatabase,
    pub db: Db,
    pub rooms: Rooms,
}

impl Observer {
    pub async fn new(fixture: &Fixture) -> Observer {
        let tdb = TestDatabase::create().await;
        let db = Db::connect(&tdb.url).await.unwrap();
        let server: &ServerName = "test.local".try_into().unwrap();
        let key = ServerKey::from_pkcs8(server, &ServerKey::generate_pkcs8(), "k1").unwrap();
        let stream = EventStream::new(db.max_stream_pos().await.unwrap() as u64);
        let config = RoomsConfig {
            server_keys: Some(ServerKeysHandle(Arc::new(fixture.key_ring()))),
            ..Default::default()
        };
        let rooms = Rooms::new(db.clone(), key, stream, config);
        Observer { _tdb: tdb, db, rooms }
    }

    /// Delivers the labelled events one by one in `order`, putting back those the room model
    /// reports missing events for, until nothing moves. The verdicts by label.
    /// The room's create event goes first: a room this server does not know is founded by it.
    pub async fn deliver(
        &self,
        fixture: &Fixture,
        order: &[String],
        arrival: Arrival,
    ) -> HashMap<String, Verdict> {
        let mut pending: Vec<String> = order.to_vec();
        if let Some(i) = pending.iter().position(|l| l == "create") {
            let create = pending.remove(i);
            pending.insert(0, create);
        }
        let mut verdicts = HashMap::new();
        loop {
            let mut progressed = false;
            let mut still = Vec::new();
            for label in pending {
                let verdict = self.one(fixture, &label, arrival).await;
                if std::env::var_os("LATTICE_DAG_TRACE").is_some() {
                    eprintln!("{label}: {verdict:?}");
                }
                if matches!(verdict, Verdict::Missing(..)) {
                    still.push(label);
                } else {
                    verdicts.insert(label, verdict);
                    progressed = true;
                }
            }
            pending = still;
            if pending.is_empty() || !progressed {
                break;
            }
        }
        assert!(pending.is_empty(), "never placed: {pending:?}");
        verdicts
    }

    pub async fn one(&self, fixture: &Fixture, label: &str, arrival: Arrival) -> Verdict {
        let mut verdicts =
            self.rooms.receive_remote(&fixture.room(), vec![fixture.pdu(label)], arrival).await.unwrap();
        assert_eq!(verdicts.len(), 1);
        verdicts.remove(0)
    }

    /// The room's current state as `(type, state key) -> event id`, sorted.
    pub async fn current_state(&self, fixture: &Fixture) -> BTreeMap<(String, String), String> {
        self.db
            .current_state(fixture.room().as_str())
            .await
            .unwrap()
            .into_iter()
            .map(|(t, k, id)| ((t, k), id))
            .collect()
    }

    pub async fn memberships(&self, fixture: &Fixture) -> BTreeMap<String, String> {
        self.db.room_memberships(fixture.room().as_str()).await.unwrap().into_iter().collect()
    }

    /// The room's timeline, oldest first, as labels.
    pub async fn timeline(&self, fixture: &Fixture) -> Vec<String> {
        use homeserver_storage::events::{Bound, Direction};
        let rows = self
            .db
            .room_page(
                fixture.room().as_str(),
                Bound::Stream(StreamPos::new(i64::MAX)),
                None,
                Direction::Backward,
                10_000,
            )
            .await
            .unwrap();
        let label_of: HashMap<&str, &str> =
            fixture.events.iter().map(|e| (e.event_id.as_str(), e.label.as_str())).collect();
        rows.iter()
            .rev()
            .map(|r| label_of.get(r.event_id.as_str()).copied().unwrap_or("?").to_owned())
            .collect()
    }
}

/// A deterministic shuffle (xorshift) of `items`.
pub fn shuffled(items: &[String], seed: u64) -> Vec<String> {
    let mut out = items.to_vec();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}
