//! The room model fed remote events, with no network: fixture DAGs signed by three fake
//! servers (`tests/fixtures/*.json`), delivered in shuffled orders, converge to the state the
//! spec defines; what must be rejected or soft-failed is; outliers, backfill and duplicates are
//! stored as they must be.

use homeserver_core::streams::StreamPos;
use homeserver_rooms::remote::{Arrival, IncomingPdu, Verdict};
use ruma::RoomVersionId;
use serde_json::json;

use crate::dag_support::{Builder, Fixture, Observer, power, shuffled};

/// Two branches change the topic and the power levels; carol's message merges them.
fn fork_merge(version: RoomVersionId) -> Builder {
    let mut b = Builder::room_with_members(version.clone());
    b.event(
        "x_topic",
        "@alice:a.test",
        "m.room.topic",
        Some(""),
        json!({"topic": "alice's"}),
        &["base"],
        None,
    )
    .event(
        "x_power",
        "@alice:a.test",
        "m.room.power_levels",
        Some(""),
        power(&version, &[("@bob:b.test", 100), ("@carol:c.test", 50)]),
        &["x_topic"],
        None,
    )
    .event("y_topic", "@bob:b.test", "m.room.topic", Some(""), json!({"topic": "bob's"}), &["base"], None)
    .event(
        "y_power",
        "@bob:b.test",
        "m.room.power_levels",
        Some(""),
        power(&version, &[("@bob:b.test", 100)]),
        &["y_topic"],
        None,
    )
    .event(
        "merge",
        "@carol:c.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "merged"}),
        &["x_power", "y_power"],
        Some("y_power"),
    );
    b
}

async fn converges(name: &str, built: Builder) {
    let fixture = Fixture::load_or_write(name, built.fixture());
    let labels = fixture.labels();
    let mut outcomes = Vec::new();
    for seed in 0..6u64 {
        let order = if seed == 0 { labels.clone() } else { shuffled(&labels, seed) };
        let obs = Observer::new(&fixture).await;
        let verdicts = obs.deliver(&fixture, &order, Arrival::Live).await;
        for (label, verdict) in &verdicts {
            assert!(matches!(verdict, Verdict::Accepted(_)), "{name} order {seed}: {label}: {verdict:?}");
        }
        let state = obs.current_state(&fixture).await;
        let extremities = obs.db.room_extremities(fixture.room().as_str()).await.unwrap();
        assert_eq!(
            extremities,
            vec![fixture.id("merge").to_string()],
            "{name} order {seed}: the merge is the only extremity"
        );
        outcomes.push((state, obs.memberships(&fixture).await, obs.timeline(&fixture).await.len()));
    }
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o, &outcomes[0], "{name}: order {i} converged elsewhere");
    }
    let (state, members, timeline) = &outcomes[0];
    // Same mainline position, so the later topic wins; the power levels sort by time too.
    assert_eq!(
        state[&("m.room.topic".to_owned(), String::new())],
        fixture.id("y_topic").to_string(),
        "{name}"
    );
    assert_eq!(
        state[&("m.room.power_levels".to_owned(), String::new())],
        fixture.id("y_power").to_string(),
        "{name}"
    );
    assert_eq!(members.get("@carol:c.test").map(String::as_str), Some("join"));
    assert_eq!(*timeline, fixture.events.len(), "{name}: every event is in the timeline");
}

#[tokio::test]
async fn forks_merge_to_the_same_state_in_any_order_v12() {
    converges("fork_merge_v12", fork_merge(RoomVersionId::V12)).await;
}

#[tokio::test]
async fn forks_merge_to_the_same_state_in_any_order_v11() {
    converges("fork_merge_v11", fork_merge(RoomVersionId::V11)).await;
}

/// Alice bans carol on one branch; carol talks on the other and after the ban.
fn ban_race() -> Builder {
    let mut b = Builder::room_with_members(RoomVersionId::V12);
    b.event(
        "ban",
        "@alice:a.test",
        "m.room.member",
        Some("@carol:c.test"),
        json!({"membership": "ban"}),
        &["base"],
        None,
    )
    .event(
        "carol_fork",
        "@carol:c.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "sneaky"}),
        &["base"],
        None,
    )
    .event(
        "carol_after",
        "@carol:c.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "banned"}),
        &["ban"],
        None,
    )
    .event(
        "merge",
        "@alice:a.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "bye"}),
        &["ban", "carol_fork"],
        Some("ban"),
    );
    b
}

#[tokio::test]
async fn a_message_racing_a_ban_is_soft_failed_and_one_after_it_rejected() {
    let fixture = Fixture::load_or_write("ban_race", ban_race().fixture());
    let obs = Observer::new(&fixture).await;
    let order: Vec<String> = [
        "create",
        "alice_join",
        "power",
        "join_rules",
        "bob_join",
        "base",
        "ban",
        "carol_fork",
        "carol_after",
        "merge",
    ]
    .map(String::from)
    .to_vec();
    let verdicts = obs.deliver(&fixture, &order, Arrival::Live).await;
    assert_eq!(
        verdicts["carol_fork"],
        Verdict::SoftFailed(fixture.id("carol_fork")),
        "passes at its place, not now"
    );
    assert!(matches!(&verdicts["carol_after"], Verdict::Rejected(id, _) if *id == fixture.id("carol_after")));
    assert_eq!(verdicts["merge"], Verdict::Accepted(fixture.id("merge")));
    let timeline = obs.timeline(&fixture).await;
    assert!(!timeline.contains(&"carol_fork".to_owned()), "soft-failed events are never shown: {timeline:?}");
    assert!(!timeline.contains(&"carol_after".to_owned()), "rejected events are never shown: {timeline:?}");
    assert_eq!(obs.memberships(&fixture).await["@carol:c.test"], "ban");
    let extremities = obs.db.room_extremities(fixture.room().as_str()).await.unwrap();
    assert_eq!(extremities, vec![fixture.id("merge").to_string()]);
    let rows = obs
        .db
        .dag_events(&[fixture.id("carol_fork").to_string(), fixture.id("carol_after").to_string()])
        .await
        .unwrap();
    assert!(rows.iter().all(|r| !r.stream_pos.is_live()), "outside the live stream: no sync reports them");
    assert!(rows.iter().any(|r| r.soft_failed) && rows.iter().any(|r| r.rejected_reason.is_some()));

    // Delivered before the ban, carol's message is an ordinary event; the state is the same.
    let early = Observer::new(&fixture).await;
    let order: Vec<String> = [
        "create",
        "alice_join",
        "power",
        "join_rules",
        "bob_join",
        "base",
        "carol_fork",
        "ban",
        "carol_after",
        "merge",
    ]
    .map(String::from)
    .to_vec();
    let verdicts = early.deliver(&fixture, &order, Arrival::Live).await;
    assert_eq!(verdicts["carol_fork"], Verdict::Accepted(fixture.id("carol_fork")));
    assert_eq!(early.current_state(&fixture).await, obs.current_state(&fixture).await);

    // Delivering everything again changes nothing.
    let again = obs.deliver(&fixture, &fixture.labels(), Arrival::Live).await;
    for (label, verdict) in again {
        assert!(matches!(verdict, Verdict::Duplicate(_)), "{label}: {verdict:?}");
    }
    assert_eq!(obs.timeline(&fixture).await, timeline);
}

/// Carol joins on one branch while alice makes the room invite-only on the other.
fn state_removed() -> Builder {
    let mut b = Builder::new(RoomVersionId::V12);
    b.event("create", "@alice:a.test", "m.room.create", Some(""), json!({"room_version": "12"}), &[], None)
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
            "join_rules",
            "@alice:a.test",
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
            &["alice_join"],
            None,
        )
        .event(
            "carol_join",
            "@carol:c.test",
            "m.room.member",
            Some("@carol:c.test"),
            json!({"membership": "join"}),
            &["join_rules"],
            None,
        )
        .event(
            "invite_only",
            "@alice:a.test",
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "invite"}),
            &["join_rules"],
            None,
        )
        .event(
            "merge",
            "@alice:a.test",
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": "hi"}),
            &["carol_join", "invite_only"],
            Some("invite_only"),
        );
    b
}

#[tokio::test]
async fn resolution_removes_a_state_key_and_the_membership_follows() {
    let fixture = Fixture::load_or_write("state_removed", state_removed().fixture());
    let obs = Observer::new(&fixture).await;
    for label in ["create", "alice_join", "join_rules", "carol_join"] {
        assert!(matches!(obs.one(&fixture, label, Arrival::Live).await, Verdict::Accepted(_)), "{label}");
    }
    assert_eq!(obs.memberships(&fixture).await.get("@carol:c.test").map(String::as_str), Some("join"));
    // The invite-only fork resolves before carol's join, which then fails: her key goes.
    assert!(matches!(obs.one(&fixture, "invite_only", Arrival::Live).await, Verdict::Accepted(_)));
    let state = obs.current_state(&fixture).await;
    assert!(!state.contains_key(&("m.room.member".to_owned(), "@carol:c.test".to_owned())), "{state:?}");
    assert_eq!(obs.memberships(&fixture).await.get("@carol:c.test"), None, "derived tables follow the state");
    assert!(matches!(obs.one(&fixture, "merge", Arrival::Live).await, Verdict::Accepted(_)));
    assert_eq!(obs.memberships(&fixture).await.get("@carol:c.test"), None);
    // The same end state in another order.
    let other = Observer::new(&fixture).await;
    other.deliver(&fixture, &shuffled(&fixture.labels(), 7), Arrival::Live).await;
    assert_eq!(other.current_state(&fixture).await, obs.current_state(&fixture).await);
}

/// Dave's join to an invite-only room is rejected; his message citing it as an auth event is
/// rejected too; bob's message after it (referencing it as a prev event) is fine.
fn rejected_auth() -> Builder {
    let mut b = Builder::room_with_members(RoomVersionId::V12);
    b.event(
        "invite_only",
        "@alice:a.test",
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": "invite"}),
        &["base"],
        None,
    )
    .event(
        "dave_join",
        "@dave:c.test",
        "m.room.member",
        Some("@dave:c.test"),
        json!({"membership": "join"}),
        &["invite_only"],
        None,
    );
    let mut state = b.state_of("dave_join");
    let auth: Vec<_> = [("m.room.power_levels", ""), ("m.room.member", "@dave:c.test")]
        .iter()
        .map(|(t, k)| state[&((*t).into(), (*k).to_owned())].event_id.clone())
        .collect();
    state.remove(&("m.room.member".into(), "@dave:c.test".to_owned()));
    b.event_with_auth(
        "dave_says",
        "@dave:c.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "x"}),
        &["dave_join"],
        &auth,
        state.clone(),
    )
    .event_with_auth(
        "bob_after",
        "@bob:b.test",
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": "ok"}),
        &["dave_says"],
        &[
            state[&("m.room.power_levels".into(), String::new())].event_id.clone(),
            state[&("m.room.member".into(), "@bob:b.test".to_owned())].event_id.clone(),
        ],
        state,
    );
    b
}

#[tokio::test]
async fn events_authorised_by_rejected_events_are_rejected_and_later_events_carry_on() {
    let fixture = Fixture::load_or_write("rejected_auth", rejected_auth().fixture());
    let obs = Observer::new(&fixture).await;
    let verdicts = obs.deliver(&fixture, &fixture.labels(), Arrival::Live).await;
    assert!(matches!(&verdicts["dave_join"], Verdict::Rejected(..)), "{:?}", verdicts["dave_join"]);
    match &verdicts["dave_says"] {
        Verdict::Rejected(_, reason) => assert!(reason.contains("rejected auth event"), "{reason}"),
        other => panic!("dave_says: {other:?}"),
    }
    assert_eq!(verdicts["bob_after"], Verdict::Accepted(fixture.id("bob_after")));
    assert!(
        !obs.current_state(&fixture)
            .await
            .contains_key(&("m.room.member".to_owned(), "@dave:c.test".to_owned()))
    );
    // Bob's message references a rejected event, so the invite-only change stays an extremity.
    let mut extremities = obs.db.room_extremities(fixture.room().as_str()).await.unwrap();
    extremities.sort();
    let mut expected = vec![fixture.id("bob_after").to_string(), fixture.id("invite_only").to_string()];
    expected.sort();
    assert_eq!(extremities, expected);
    // Rejected events stay known as rejected (never "missing" again).
    let again = obs.one(&fixture, "dave_says", Arrival::Live).await;
    assert!(matches!(again, Verdict::Duplicate(_)), "{again:?}");
}

#[tokio::test]
async fn an_outlier_is_stored_apart_and_later_takes_its_place() {
    let fixture = Fixture::load_or_write("fork_merge_v12", fork_merge(RoomVersionId::V12).fixture());
    let obs = Observer::new(&fixture).await;
    for label in ["create", "alice_join", "power", "join_rules"] {
        let verdict = obs.one(&fixture, label, Arrival::Live).await;
        assert!(matches!(verdict, Verdict::Accepted(_)), "{label}: {verdict:?}");
    }
    // Bob's join arrives first as the auth event of something else.
    assert_eq!(
        obs.one(&fixture, "bob_join", Arrival::Outlier).await,
        Verdict::Accepted(fixture.id("bob_join"))
    );
    assert!(!obs.timeline(&fixture).await.contains(&"bob_join".to_owned()));
    assert_eq!(obs.memberships(&fixture).await.get("@bob:b.test"), None, "an outlier changes no state");
    let row = obs.db.dag_events(&[fixture.id("bob_join").to_string()]).await.unwrap().remove(0);
    assert!(row.outlier && !row.stream_pos.is_live());
    assert!(matches!(obs.one(&fixture, "bob_join", Arrival::Outlier).await, Verdict::Duplicate(_)));
    // Then it arrives in the timeline.
    assert_eq!(obs.one(&fixture, "bob_join", Arrival::Live).await, Verdict::Accepted(fixture.id("bob_join")));
    let row = obs.db.dag_events(&[fixture.id("bob_join").to_string()]).await.unwrap().remove(0);
    assert!(!row.outlier && row.stream_pos.is_live(), "de-outliered into the live stream");
    assert_eq!(obs.memberships(&fixture).await.get("@bob:b.test").map(String::as_str), Some("join"));
    assert_eq!(obs.timeline(&fixture).await.last().map(String::as_str), Some("bob_join"));
}

#[tokio::test]
async fn invalid_events_are_dropped_and_missing_ones_reported() {
    let fixture = Fixture::load_or_write("fork_merge_v12", fork_merge(RoomVersionId::V12).fixture());
    let obs = Observer::new(&fixture).await;
    assert!(matches!(obs.one(&fixture, "create", Arrival::Live).await, Verdict::Accepted(_)));
    // Prev and auth events unknown: reported, nothing stored.
    match obs.one(&fixture, "base", Arrival::Live).await {
        Verdict::Missing(id, missing) => {
            assert_eq!(id, fixture.id("base"));
            assert!(!missing.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(obs.db.dag_events(&[fixture.id("base").to_string()]).await.unwrap().is_empty());
    // A forged signature, a different room, garbage, an oversized event: dropped.
    let mut forged: serde_json::Value = serde_json::from_str(&fixture.pdu("alice_join").json).unwrap();
    forged["sender"] = json!("@mallory:a.test");
    let mut oversized: serde_json::Value = serde_json::from_str(&fixture.pdu("alice_join").json).unwrap();
    oversized["content"]["padding"] = json!("x".repeat(70_000));
    for bad in [forged.to_string(), "{".to_owned(), "[]".to_owned(), oversized.to_string()] {
        let verdicts = obs
            .rooms
            .receive_remote(&fixture.room(), vec![IncomingPdu::new(bad)], Arrival::Live)
            .await
            .unwrap();
        assert!(matches!(verdicts[0], Verdict::Dropped(_)), "{:?}", verdicts[0]);
    }
    // A tampered content hash: the event is redacted, then placed.
    let mut tampered: serde_json::Value = serde_json::from_str(&fixture.pdu("alice_join").json).unwrap();
    tampered["content"]["displayname"] = json!("not what was signed");
    let verdicts = obs
        .rooms
        .receive_remote(&fixture.room(), vec![IncomingPdu::new(tampered.to_string())], Arrival::Live)
        .await
        .unwrap();
    assert!(matches!(verdicts[0], Verdict::Accepted(_)), "{:?}", verdicts[0]);
    let stored = obs.db.dag_events(&[fixture.id("alice_join").to_string()]).await.unwrap();
    assert_eq!(stored.len(), 1, "the redacted form keeps the event id");
    assert!(!stored[0].json.contains("not what was signed"));
}

/// 10 events of setup, 500 older messages, 10 newer ones; the server joins at the newer ones
/// and fetches the history later.
#[tokio::test]
async fn backfilled_history_sorts_before_what_the_room_shows_and_is_never_new_in_sync() {
    let mut b = Builder::room_with_members(RoomVersionId::V12);
    let mut prev = "base".to_owned();
    for i in 0..511 {
        let label = format!("m{i}");
        let body = json!({"msgtype": "m.text", "body": format!("message {i}")});
        b.event(&label, "@bob:b.test", "m.room.message", None, body, &[prev.as_str()], None);
        prev = label;
    }
    let fixture = b.fixture();
    let obs = Observer::new(&fixture).await;
    let setup =
        ["create", "alice_join", "power", "join_rules", "bob_join", "base"].map(String::from).to_vec();
    obs.deliver(&fixture, &setup, Arrival::Live).await;
    // The newest ten arrive live; the first of them names a prev event this server lacks, so
    // the caller supplies the state before it (as a join over federation would).
    let state: Vec<_> =
        obs.current_state(&fixture).await.into_values().map(|id| id.as_str().try_into().unwrap()).collect();
    let mut gap = fixture.pdu("m500");
    gap.state_before = Some(state);
    let verdicts = obs.rooms.receive_remote(&fixture.room(), vec![gap], Arrival::Live).await.unwrap();
    assert_eq!(verdicts[0], Verdict::Accepted(fixture.id("m500")));
    let newer: Vec<String> = (501..510).map(|i| format!("m{i}")).collect();
    obs.deliver(&fixture, &newer, Arrival::Live).await;
    let backward: Vec<String> = backward_extremities(&obs, &fixture).await;
    assert_eq!(backward, vec![fixture.id("m499").to_string()], "backfill continues from the gap");
    let token = obs.rooms.stream().current() as i64;

    // The history, oldest first as a backfill batch is applied.
    let older: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    let verdicts = obs.deliver(&fixture, &older, Arrival::Backfill).await;
    assert!(verdicts.values().all(|v| matches!(v, Verdict::Accepted(_))));
    let timeline = obs.timeline(&fixture).await;
    let expected: Vec<String> = setup.iter().cloned().chain((0..510).map(|i| format!("m{i}"))).collect();
    assert_eq!(timeline, expected, "topological order: history before the gap, then what came live");
    let since = obs
        .db
        .room_events(
            fixture.room().as_str(),
            StreamPos::new(token),
            None,
            homeserver_storage::events::Direction::Forward,
            1000,
        )
        .await
        .unwrap();
    assert!(since.is_empty(), "an incremental sync sees nothing new: {}", since.len());
    assert!(backward_extremities(&obs, &fixture).await.is_empty(), "the gap is closed");
    // Backfill leaves the live edge alone: the setup's last event stays a forward extremity
    // (history that names it does not retire it — a backfill response must not be able to drop
    // a fork from the current state); the next local event merges it away.
    let extremities = |obs: &Observer| {
        let room = fixture.room();
        let db = obs.db.clone();
        async move {
            let mut ids = db.room_extremities(room.as_str()).await.unwrap();
            ids.sort();
            ids
        }
    };
    let mut expected = vec![fixture.id("base").to_string(), fixture.id("m509").to_string()];
    expected.sort();
    assert_eq!(extremities(&obs).await, expected);
    assert!(matches!(obs.one(&fixture, "m510", Arrival::Live).await, Verdict::Accepted(_)));
    let mut expected = vec![fixture.id("base").to_string(), fixture.id("m510").to_string()];
    expected.sort();
    assert_eq!(extremities(&obs).await, expected);
    let members = obs.memberships(&fixture).await;
    assert_eq!(members.len(), 3, "{members:?}");
}

async fn backward_extremities(obs: &Observer, fixture: &Fixture) -> Vec<String> {
    obs.db.backward_extremities(fixture.room().as_str()).await.unwrap()
}

#[tokio::test]
async fn supplied_state_must_be_one_event_per_key_of_this_room() {
    let fixture = Fixture::load_or_write("fork_merge_v12", fork_merge(RoomVersionId::V12).fixture());
    let obs = Observer::new(&fixture).await;
    let setup =
        ["create", "alice_join", "power", "join_rules", "bob_join", "base"].map(String::from).to_vec();
    obs.deliver(&fixture, &setup, Arrival::Live).await;
    // Alice's power change follows her topic, which this server lacks; the state offered for
    // it names one key twice.
    let mut event = fixture.pdu("x_power");
    event.state_before = Some(vec![fixture.id("create"), fixture.id("power"), fixture.id("power")]);
    let verdicts = obs.rooms.receive_remote(&fixture.room(), vec![event], Arrival::Live).await.unwrap();
    assert!(
        matches!(&verdicts[0], Verdict::Dropped(reason) if reason.contains("two state events")),
        "{verdicts:?}"
    );
    // State naming events this server lacks: reported missing.
    let mut event = fixture.pdu("x_power");
    event.state_before = Some(vec![fixture.id("create"), fixture.id("x_topic")]);
    let verdicts = obs.rooms.receive_remote(&fixture.room(), vec![event], Arrival::Live).await.unwrap();
    assert_eq!(verdicts[0], Verdict::Missing(fixture.id("x_power"), vec![fixture.id("x_topic")]));
    assert!(obs.db.dag_events(&[fixture.id("x_power").to_string()]).await.unwrap().is_empty());
}

#[tokio::test]
async fn capping_the_forward_extremities_keeps_every_fork_in_the_current_state() {
    let mut b = Builder::room_with_members(RoomVersionId::V12);
    for i in 0..55 {
        let key = format!("k{i}");
        b.event(
            &format!("f{i}"),
            "@bob:b.test",
            "org.lattice.fork",
            Some(&key),
            json!({ "i": i }),
            &["base"],
            None,
        );
    }
    let fixture = b.fixture();
    let obs = Observer::new(&fixture).await;
    let verdicts = obs.deliver(&fixture, &fixture.labels(), Arrival::Live).await;
    assert!(verdicts.values().all(|v| matches!(v, Verdict::Accepted(_))), "{verdicts:?}");
    assert_eq!(obs.db.room_extremities(fixture.room().as_str()).await.unwrap().len(), 50);
    let state = obs.current_state(&fixture).await;
    for i in 0..55 {
        let key = ("org.lattice.fork".to_owned(), format!("k{i}"));
        assert_eq!(state.get(&key), Some(&fixture.id(&format!("f{i}")).to_string()), "fork {i} kept");
    }
}

#[tokio::test]
async fn a_backfill_batch_keeps_its_order_and_an_older_batch_sorts_before_it() {
    let mut b = Builder::room_with_members(RoomVersionId::V12);
    for label in ["h1", "h2", "h3"] {
        let body = json!({ "msgtype": "m.text", "body": label });
        b.event(label, "@bob:b.test", "m.room.message", None, body, &["base"], None);
    }
    let fixture = b.fixture();
    let obs = Observer::new(&fixture).await;
    let setup =
        ["create", "alice_join", "power", "join_rules", "bob_join", "base"].map(String::from).to_vec();
    obs.deliver(&fixture, &setup, Arrival::Live).await;
    // Three events of equal depth: h1 and h2 come in one backfill response, h3 in a later one
    // (history fetched further back sorts before what was fetched earlier).
    let batch = vec![fixture.pdu("h1"), fixture.pdu("h2")];
    let verdicts = obs.rooms.receive_remote(&fixture.room(), batch, Arrival::Backfill).await.unwrap();
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Accepted(_))), "{verdicts:?}");
    assert!(matches!(obs.one(&fixture, "h3", Arrival::Backfill).await, Verdict::Accepted(_)));
    let timeline = obs.timeline(&fixture).await;
    assert_eq!(&timeline[timeline.len() - 3..], ["h3", "h1", "h2"], "{timeline:?}");
}
