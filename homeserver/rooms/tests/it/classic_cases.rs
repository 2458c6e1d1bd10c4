//! The classic state-resolution cases of Synapse's test suite (`tests/state/test_v2.py`), as data:
//! the same events, edges and expected outcomes, signed by the fake servers and fed to the
//! remote path in topological order. The room is version 11 (state resolution v2.0, the rules
//! those cases were written for); the state at `END`, the message that merges the branches, must
//! hold the expected events.

use std::collections::HashMap;

use homeserver_rooms::remote::{Arrival, Verdict};
use ruma::RoomVersionId;
use serde_json::{Value, json};

use crate::dag_support::{Builder, Fixture, Observer};

const ALICE: &str = "@alice:a.test";
const BOB: &str = "@bob:b.test";
const CHARLIE: &str = "@charlie:c.test";
const EVELYN: &str = "@evelyn:c.test";
const ZARA: &str = "@zara:c.test";

/// One event of a case: label, sender, type, state key (None: a message), content.
type Event = (&'static str, &'static str, &'static str, Option<&'static str>, Value);

/// The room every case starts from: CREATE, IMA, IPOWER (alice 100), IJR (public), IMB, IMC,
/// IMZ, then zara's message START.
fn initial(b: &mut Builder) {
    let join = || json!({ "membership": "join" });
    b.event("CREATE", ALICE, "m.room.create", Some(""), json!({ "room_version": "11" }), &[], None)
        .event("IMA", ALICE, "m.room.member", Some(ALICE), join(), &["CREATE"], None)
        .event(
            "IPOWER",
            ALICE,
            "m.room.power_levels",
            Some(""),
            json!({ "users": { ALICE: 100 } }),
            &["IMA"],
            None,
        )
        .event(
            "IJR",
            ALICE,
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": "public" }),
            &["IPOWER"],
            None,
        )
        .event("IMB", BOB, "m.room.member", Some(BOB), join(), &["IJR"], None)
        .event("IMC", CHARLIE, "m.room.member", Some(CHARLIE), join(), &["IMB"], None)
        .event("IMZ", ZARA, "m.room.member", Some(ZARA), join(), &["IMC"], None)
        .event("START", ZARA, "m.room.message", None, json!({}), &["IMZ"], None);
}

/// Builds a case: `edges` are chains from the newest event back (`["END", "B", "A", "START"]`:
/// A follows START, B follows A, END follows B), as the Synapse tests write them.
fn build(events: Vec<Event>, edges: &[&[&str]]) -> Builder {
    let mut prevs: HashMap<&str, Vec<&str>> = HashMap::new();
    for chain in edges {
        for pair in chain.windows(2) {
            let list = prevs.entry(pair[0]).or_default();
            if !list.contains(&pair[1]) {
                list.push(pair[1]);
            }
        }
    }
    let mut b = Builder::new(RoomVersionId::V11);
    initial(&mut b);
    let end: Event = ("END", ZARA, "m.room.message", None, json!({}));
    for (label, sender, kind, key, content) in events.into_iter().chain([end]) {
        let before = prevs[label].clone();
        b.event(label, sender, kind, key, content, &before, None);
    }
    b
}

/// Delivers the case in creation order and checks the state at END.
async fn check(name: &str, built: Builder, expected: &[&str]) {
    let fixture = Fixture::load_or_write(name, built.fixture());
    let obs = Observer::new(&fixture).await;
    let verdicts = obs.deliver(&fixture, &fixture.labels(), Arrival::Live).await;
    assert!(matches!(verdicts["END"], Verdict::Accepted(_)), "{name}: END {:?}", verdicts["END"]);
    let state = obs.current_state(&fixture).await;
    for label in expected {
        let event = fixture.events.iter().find(|e| e.label == *label).unwrap();
        let key = (
            event.pdu["type"].as_str().unwrap().to_owned(),
            event.pdu["state_key"].as_str().unwrap().to_owned(),
        );
        assert_eq!(
            state.get(&key),
            Some(&event.event_id),
            "{name}: {label} holds {key:?}; verdicts {verdicts:?}"
        );
    }
}

fn power(users: Value) -> Value {
    json!({ "users": users })
}

#[tokio::test]
async fn ban_vs_pl() {
    let events: Vec<Event> = vec![
        ("PA", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("MA", ALICE, "m.room.member", Some(ALICE), json!({ "membership": "join" })),
        ("MB", ALICE, "m.room.member", Some(BOB), json!({ "membership": "ban" })),
        ("PB", BOB, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
    ];
    let edges: &[&[&str]] = &[&["END", "MB", "MA", "PA", "START"], &["END", "PB", "PA"]];
    check("synapse_ban_vs_pl", build(events, edges), &["PA", "MA", "MB"]).await;
}

#[tokio::test]
async fn join_rule_evasion() {
    let events: Vec<Event> = vec![
        ("JR", ALICE, "m.room.join_rules", Some(""), json!({ "join_rule": "private" })),
        ("ME", EVELYN, "m.room.member", Some(EVELYN), json!({ "membership": "join" })),
    ];
    let edges: &[&[&str]] = &[&["END", "JR", "START"], &["END", "ME", "START"]];
    check("synapse_join_rule_evasion", build(events, edges), &["JR"]).await;
}

#[tokio::test]
async fn offtopic_pl() {
    let events: Vec<Event> = vec![
        ("PA", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("PB", BOB, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50, CHARLIE: 50 }))),
        ("PC", CHARLIE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50, CHARLIE: 0 }))),
    ];
    let edges: &[&[&str]] = &[&["END", "PC", "PB", "PA", "START"], &["END", "PA"]];
    check("synapse_offtopic_pl", build(events, edges), &["PC"]).await;
}

#[tokio::test]
async fn topic_basic() {
    let events: Vec<Event> = vec![
        ("T1", ALICE, "m.room.topic", Some(""), json!({})),
        ("PA1", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T2", ALICE, "m.room.topic", Some(""), json!({})),
        ("PA2", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 0 }))),
        ("PB", BOB, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T3", BOB, "m.room.topic", Some(""), json!({})),
    ];
    let edges: &[&[&str]] = &[&["END", "PA2", "T2", "PA1", "T1", "START"], &["END", "T3", "PB", "PA1"]];
    check("synapse_topic_basic", build(events, edges), &["PA2", "T2"]).await;
}

#[tokio::test]
async fn topic_reset() {
    let events: Vec<Event> = vec![
        ("T1", ALICE, "m.room.topic", Some(""), json!({})),
        ("PA", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T2", BOB, "m.room.topic", Some(""), json!({})),
        ("MB", ALICE, "m.room.member", Some(BOB), json!({ "membership": "ban" })),
    ];
    let edges: &[&[&str]] = &[&["END", "MB", "T2", "PA", "T1", "START"], &["END", "T1"]];
    check("synapse_topic_reset", build(events, edges), &["T1", "MB", "PA"]).await;
}

#[tokio::test]
async fn topic() {
    let events: Vec<Event> = vec![
        ("T1", ALICE, "m.room.topic", Some(""), json!({})),
        ("PA1", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T2", ALICE, "m.room.topic", Some(""), json!({})),
        ("PA2", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 0 }))),
        ("PB", BOB, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T3", BOB, "m.room.topic", Some(""), json!({})),
        ("MZ1", ZARA, "m.room.message", None, json!({})),
        ("T4", ALICE, "m.room.topic", Some(""), json!({})),
    ];
    let edges: &[&[&str]] =
        &[&["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"], &["END", "MZ1", "T3", "PB", "PA1"]];
    check("synapse_topic", build(events, edges), &["T4", "PA2"]).await;
}

#[tokio::test]
async fn mainline_sort() {
    let events: Vec<Event> = vec![
        ("T1", ALICE, "m.room.topic", Some(""), json!({})),
        ("PA1", ALICE, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T2", ALICE, "m.room.topic", Some(""), json!({})),
        (
            "PA2",
            ALICE,
            "m.room.power_levels",
            Some(""),
            json!({ "users": { ALICE: 100, BOB: 50 }, "events": { "m.room.power_levels": 100 } }),
        ),
        ("PB", BOB, "m.room.power_levels", Some(""), power(json!({ ALICE: 100, BOB: 50 }))),
        ("T3", BOB, "m.room.topic", Some(""), json!({})),
        ("T4", ALICE, "m.room.topic", Some(""), json!({})),
    ];
    let edges: &[&[&str]] = &[&["END", "T3", "PA2", "T2", "PA1", "T1", "START"], &["END", "T4", "PB", "PA1"]];
    // T3 wins: the other topics point at older power levels (T4 was sent later, but mainline
    // order comes first).
    check("synapse_mainline_sort", build(events, edges), &["T3", "PA2"]).await;
}
