//! Storage of the federated room model: state groups that remove keys, state deltas that
//! derived tables follow, topological pages, events outside the timeline, and the migration
//! that introduced them carrying existing rooms over. Runs on both engines.

use sqlx::Connection;

use homeserver_core::streams::StreamPos;
use ruma::events::room::member::MembershipState;

use crate::{
    Db, Engine, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS,
    events::{Bound, Direction, TopoPos},
    persist::{MembershipUpdate, NewEvent, NewRoom, NewStateGroup, PersistPlan, StateChange},
    testing::TestDatabase,
};

async fn fresh() -> (TestDatabase, Db) {
    let tdb = TestDatabase::create().await;
    let db = Db::connect(&tdb.url).await.expect("connect");
    (tdb, db)
}

fn event(pos: i64, depth: i64, id: &str, ty: &str, key: Option<&str>, group: i64) -> NewEvent {
    NewEvent {
        stream_pos: pos,
        event_id: id.into(),
        event_type: ty.into(),
        state_key: key.map(Into::into),
        sender: "@a:x".into(),
        depth,
        origin_server_ts: 1000 + depth,
        json: format!(r#"{{"type":"{ty}"}}"#),
        unsigned_extra: None,
        state_before: group,
        state_after: group,
        redacts: None,
        txn: None,
        prev_events: vec![],
        auth_events: vec![],
        outlier: false,
        soft_failed: false,
        rejected_reason: None,
        replaces_outlier: false,
    }
}

fn member(user: &str, id: Option<&str>, membership: &str, pos: i64) -> StateChange {
    StateChange {
        event_type: "m.room.member".into(),
        state_key: user.into(),
        event_id: id.map(Into::into),
        membership: id.map(|_| MembershipUpdate {
            membership: membership.into(),
            stream_pos: pos,
            displayname: None,
            avatar_url: None,
        }),
    }
}

fn group(id: i64, prev: Option<i64>, entries: &[(&str, Option<&str>)], parents: &[i64]) -> NewStateGroup {
    NewStateGroup {
        group_id: id,
        prev_group: prev,
        chain_len: prev.map_or(0, |_| 1),
        entries: entries
            .iter()
            .map(|(user, ev)| ("m.room.member".to_owned(), (*user).to_owned(), ev.map(str::to_owned)))
            .collect(),
        parents: parents.to_vec(),
    }
}

fn room() -> Option<NewRoom> {
    Some(NewRoom { room_version: "12".into(), creator: "@a:x".into(), created_ts: 1, published: false })
}

#[tokio::test]
async fn a_resolved_state_can_remove_a_key_and_the_derived_tables_follow() {
    let (_t, db) = fresh().await;
    let plan = PersistPlan {
        room_id: "!r:x".into(),
        new_room: room(),
        events: vec![
            event(1, 1, "$a", "m.room.member", Some("@a:x"), 1),
            event(2, 2, "$b", "m.room.member", Some("@b:x"), 2),
        ],
        state_groups: vec![
            group(1, None, &[("@a:x", Some("$a"))], &[]),
            group(2, Some(1), &[("@b:x", Some("$b"))], &[]),
        ],
        state_delta: vec![member("@a:x", Some("$a"), "join", 1), member("@b:x", Some("$b"), "join", 2)],
        current_state_group: Some(2),
        state_history: vec![(2, 2)],
        ..Default::default()
    };
    db.persist(&plan).await.unwrap();
    assert_eq!(db.current_state_group_at("!r:x", StreamPos::new(1)).await.unwrap(), 0);
    assert_eq!(db.current_state_group_at("!r:x", StreamPos::new(2)).await.unwrap(), 2);
    assert_eq!(db.membership("!r:x", "@b:x").await.unwrap().unwrap().membership, MembershipState::Join);

    // Resolution drops @b's membership: a group that removes the key, merged from two parents.
    let merge = PersistPlan {
        room_id: "!r:x".into(),
        events: vec![event(3, 3, "$m", "m.room.message", None, 3)],
        state_groups: vec![group(3, Some(2), &[("@b:x", None)], &[2, 1])],
        state_delta: vec![member("@b:x", None, "", 3)],
        current_state_group: Some(3),
        state_history: vec![(3, 3)],
        ..Default::default()
    };
    db.persist(&merge).await.unwrap();
    assert_eq!(db.state_group(3).await.unwrap(), vec![("m.room.member".into(), "@a:x".into(), "$a".into())]);
    assert_eq!(db.state_group_entry(3, "m.room.member", "@b:x").await.unwrap(), None);
    assert_eq!(db.state_group_entry(2, "m.room.member", "@b:x").await.unwrap().as_deref(), Some("$b"));
    assert_eq!(db.current_state_event_id("!r:x", "m.room.member", "@b:x").await.unwrap(), None);
    assert!(db.membership("!r:x", "@b:x").await.unwrap().is_none(), "the membership row follows the state");
    assert_eq!(db.room("!r:x").await.unwrap().unwrap().current_state_group, 3);
    assert_eq!(
        db.current_state_group_at("!r:x", StreamPos::new(2)).await.unwrap(),
        2,
        "the history keeps earlier states"
    );
    assert_eq!(db.current_state_group_at("!r:x", StreamPos::new(9)).await.unwrap(), 3);
    assert_eq!(db.max_state_group().await.unwrap(), 3);
    let parents: Vec<i64> = sqlx::query_scalar(
        "SELECT parent_group FROM state_group_parents WHERE group_id = 3 ORDER BY parent_group",
    )
    .fetch_all(db.reader())
    .await
    .unwrap();
    assert_eq!(parents, vec![1, 2]);
}

#[tokio::test]
async fn pages_follow_topological_order_and_backfill_sorts_before_history() {
    let (_t, db) = fresh().await;
    // Live events at depths 10..12; then history fetched later (negative positions, lower depth),
    // and a late event at depth 11 that arrived after everything (a fork).
    let mut events = vec![
        event(1, 10, "$d10", "m.room.message", None, 0),
        event(2, 11, "$d11", "m.room.message", None, 0),
        event(3, 12, "$d12", "m.room.message", None, 0),
        event(-1, 9, "$old9", "m.room.message", None, 0),
        event(-2, 8, "$old8", "m.room.message", None, 0),
        event(4, 11, "$late11", "m.room.message", None, 0),
    ];
    let mut outlier = event(-3, 5, "$outlier", "m.room.message", None, 0);
    outlier.outlier = true;
    let mut soft = event(-4, 12, "$soft", "m.room.message", None, 0);
    soft.soft_failed = true;
    let mut rejected = event(-5, 12, "$rejected", "m.room.message", None, 0);
    rejected.rejected_reason = Some("auth".into());
    events.extend([outlier, soft, rejected]);
    let plan = PersistPlan { room_id: "!r:x".into(), new_room: room(), events, ..Default::default() };
    db.persist(&plan).await.unwrap();
    let ids = |rows: Vec<crate::events::EventRow>| rows.into_iter().map(|r| r.event_id).collect::<Vec<_>>();

    let back =
        db.room_page("!r:x", Bound::Stream(StreamPos::new(4)), None, Direction::Backward, 10).await.unwrap();
    assert_eq!(ids(back.clone()), ["$d12", "$late11", "$d11", "$d10", "$old9", "$old8"]);
    // Continuing from a page's last event never repeats or skips one.
    let first =
        db.room_page("!r:x", Bound::Stream(StreamPos::new(4)), None, Direction::Backward, 3).await.unwrap();
    let next = Bound::Topo(first.last().unwrap().topo_before());
    let rest = db.room_page("!r:x", next, None, Direction::Backward, 10).await.unwrap();
    assert_eq!([ids(first), ids(rest)].concat(), ids(back));
    // Forward from a point, up to another.
    let fwd = db
        .room_page(
            "!r:x",
            Bound::Topo(TopoPos { depth: 9, stream_pos: StreamPos::new(-1) }),
            Some(Bound::Topo(TopoPos { depth: 11, stream_pos: StreamPos::new(4) })),
            Direction::Forward,
            10,
        )
        .await
        .unwrap();
    assert_eq!(ids(fwd), ["$d10", "$d11", "$late11"]);
    // A sync token covers what arrived by then, whatever its depth: the late fork is not in it.
    let at3 =
        db.room_page("!r:x", Bound::Stream(StreamPos::new(3)), None, Direction::Backward, 10).await.unwrap();
    assert_eq!(ids(at3), ["$d12", "$d11", "$d10", "$old9", "$old8"]);

    // The live stream (sync) holds neither backfilled history nor events outside the timeline.
    let stream =
        db.room_events("!r:x", StreamPos::new(i64::MAX), None, Direction::Backward, 10).await.unwrap();
    assert_eq!(ids(stream), ["$late11", "$d12", "$d11", "$d10"]);
    // By id: outliers and soft-failed events exist; rejected ones only for the room model.
    let all: Vec<String> = ["$outlier", "$soft", "$rejected"].map(String::from).to_vec();
    let mut seen = ids(db.events(&all).await.unwrap());
    seen.sort();
    assert_eq!(seen, ["$outlier", "$soft"]);
    let dag = db.dag_events(&all).await.unwrap();
    let rejected = dag.iter().find(|r| r.event_id == "$rejected").expect("the room model sees it");
    assert_eq!(rejected.rejected_reason.as_deref(), Some("auth"));
    assert!(dag.iter().any(|r| r.event_id == "$outlier" && r.outlier));
    assert!(dag.iter().any(|r| r.event_id == "$soft" && r.soft_failed));
    assert_eq!(db.min_event_pos().await.unwrap(), -5);
}

#[tokio::test]
async fn backward_extremities_open_and_close() {
    let (_t, db) = fresh().await;
    let opened = PersistPlan {
        room_id: "!r:x".into(),
        new_room: room(),
        backward_extremities_opened: vec!["$gap1".into(), "$gap2".into()],
        ..Default::default()
    };
    db.persist(&opened).await.unwrap();
    let closed = PersistPlan {
        room_id: "!r:x".into(),
        backward_extremities_closed: vec!["$gap1".into()],
        ..Default::default()
    };
    db.persist(&closed).await.unwrap();
    let left: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM room_backward_extremities WHERE room_id = '!r:x'")
            .fetch_all(db.reader())
            .await
            .unwrap();
    assert_eq!(left, ["$gap2"]);
}

/// Rows a database at migration 14 holds, written with that version's columns.
const BEFORE_0015: &[&str] = &[
    "INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ('!r:x', '12', '@a:x', 0, 1)",
    "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, depth, origin_server_ts, \
     json, state_before, state_after) VALUES \
     (5, '$create', '!r:x', 'm.room.create', '', '@a:x', 1, 1, '{}', 0, 5), \
     (6, '$join', '!r:x', 'm.room.member', '@a:x', '@a:x', 2, 2, '{}', 5, 6), \
     (7, '$msg', '!r:x', 'm.room.message', NULL, '@a:x', 3, 3, '{}', 6, 6)",
    "INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES (5, '!r:x', NULL, 0), (6, '!r:x', 5, 1)",
    "INSERT INTO state_group_entries (group_id, event_type, state_key, event_id) VALUES \
     (5, 'm.room.create', '', '$create'), (6, 'm.room.member', '@a:x', '$join')",
];

#[tokio::test]
async fn the_migration_carries_existing_rooms_over() {
    let tdb = TestDatabase::create().await;
    sqlx::any::install_default_drivers();
    {
        let mut conn = sqlx::AnyConnection::connect(&tdb.url).await.unwrap();
        let migrator = if tdb.is_postgres() { &POSTGRES_MIGRATIONS } else { &SQLITE_MIGRATIONS };
        migrator.run_to(14, &mut conn).await.unwrap();
        for sql in BEFORE_0015 {
            sqlx::query(*sql).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
    }
    let db = Db::connect(&tdb.url).await.unwrap();
    assert_eq!(db.engine() == Engine::Postgres, tdb.is_postgres());
    let room = db.room("!r:x").await.unwrap().unwrap();
    assert_eq!(room.current_state_group, 6, "the current state group is the newest event's");
    let mut state = db.state_group(6).await.unwrap();
    state.sort();
    assert_eq!(
        state,
        vec![
            ("m.room.create".into(), "".into(), "$create".into()),
            ("m.room.member".into(), "@a:x".into(), "$join".into())
        ],
        "state group entries survive the table's rebuild"
    );
    let msg = db.event("$msg").await.unwrap().unwrap();
    assert!(!msg.outlier && !msg.soft_failed && msg.rejected_reason.is_none());
    // New state groups continue above the old ids (which were stream positions).
    assert_eq!(db.max_state_group().await.unwrap(), 6);
}
