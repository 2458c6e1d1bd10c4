//! Storage behaviour, run on SQLite and (with `LATTICE_TEST_DATABASE_URL`) on PostgreSQL.

use homeserver_core::streams::StreamPos;
use ruma::events::room::member::MembershipState;

use crate::{
    Db, StorageError,
    accounts::NewLogin,
    events::Direction,
    persist::{MembershipUpdate, NewEvent, NewRoom, NewStateGroup, PersistPlan, StateChange, TxnRecord},
    testing::TestDatabase,
};

/// A fresh database on the engine under test (shared by the storage test modules).
pub(crate) async fn fresh() -> (TestDatabase, Db) {
    let tdb = TestDatabase::create().await;
    let db = Db::connect(&tdb.url).await.expect("connect");
    (tdb, db)
}

fn event(pos: i64, id: &str, ty: &str, key: Option<&str>, before: i64, after: i64) -> NewEvent {
    NewEvent {
        stream_pos: pos,
        event_id: id.into(),
        event_type: ty.into(),
        state_key: key.map(Into::into),
        sender: "@a:x".into(),
        depth: pos,
        origin_server_ts: 1000 + pos,
        json: format!(r#"{{"type":"{ty}"}}"#),
        unsigned_extra: None,
        state_before: before,
        state_after: after,
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

/// A change of the current state to `id` (`None`: removal); member keys join at `pos`.
fn change(ty: &str, key: &str, id: Option<&str>, pos: i64) -> StateChange {
    StateChange {
        event_type: ty.into(),
        state_key: key.into(),
        event_id: id.map(Into::into),
        membership: (ty == "m.room.member" && id.is_some()).then(|| MembershipUpdate {
            membership: "join".into(),
            stream_pos: pos,
            displayname: None,
            avatar_url: None,
        }),
    }
}

fn entry(ty: &str, key: &str, id: Option<&str>) -> (String, String, Option<String>) {
    (ty.into(), key.into(), id.map(Into::into))
}

#[tokio::test]
async fn sqlite_commits_survive_power_loss_by_default() {
    let (_t, db) = fresh().await;
    if db.engine() != crate::Engine::Sqlite {
        return; // PostgreSQL's commits are durable by its own defaults.
    }
    // 2 = FULL: every commit is fsynced before it returns, on the writer and the readers alike.
    let writer: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(db.writer()).await.unwrap();
    let reader: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(db.reader()).await.unwrap();
    assert_eq!((writer, reader), (2, 2));
    let tdb = TestDatabase::create().await;
    let normal = crate::DbOptions { sqlite_synchronous: crate::Synchronous::Normal };
    let db = Db::connect_with(&tdb.url, normal).await.unwrap();
    let writer: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(db.writer()).await.unwrap();
    assert_eq!(writer, 1, "NORMAL when configured");
}

#[tokio::test]
async fn a_password_change_and_its_logouts_are_one_write() {
    let (_t, db) = fresh().await;
    db.create_user("@alice:x", Some("old"), false, None, 1).await.unwrap();
    for (device, hash) in [("KEEP", "t-keep"), ("OTHER", "t-other")] {
        let login = NewLogin {
            user_id: "@alice:x",
            device_id: device,
            display_name: None,
            token_hash: hash,
            now: 2,
            ip: None,
            user_agent: None,
        };
        db.create_login(login).await.unwrap();
    }
    let logout = crate::accounts::Logout::AllDevicesExcept(Some("KEEP"));
    assert!(db.set_password("@alice:x", "new", logout).await.unwrap());
    assert_eq!(db.user("@alice:x").await.unwrap().unwrap().password_hash.as_deref(), Some("new"));
    assert!(db.token_owner("t-keep").await.unwrap().is_some());
    assert!(db.token_owner("t-other").await.unwrap().is_none());
    assert!(!db.set_password("@nobody:x", "new", logout).await.unwrap());
    // A registration whose UIA session another request already completed writes nothing.
    db.create_uia_session("s1", None, "POST /register", None, 3).await.unwrap();
    let user = |id| crate::accounts::NewUser {
        user_id: id,
        password_hash: None,
        is_admin: false,
        displayname: None,
        avatar_url: None,
        now: 4,
    };
    db.register_user(user("@bob:x"), Some("s1"), None).await.unwrap();
    let login = NewLogin {
        user_id: "@carol:x",
        device_id: "D",
        display_name: None,
        token_hash: "t-carol",
        now: 5,
        ip: None,
        user_agent: None,
    };
    let second = db.register_user(user("@carol:x"), Some("s1"), Some(login)).await;
    assert!(matches!(second, Err(StorageError::Conflict)), "{second:?}");
    assert!(db.user("@carol:x").await.unwrap().is_none(), "no half-registered account");
    assert!(db.token_owner("t-carol").await.unwrap().is_none());
    assert_eq!(db.uia_session("s1").await.unwrap().unwrap().result.as_deref(), Some("@bob:x"));
}

#[tokio::test]
async fn users_tokens_and_devices() {
    let (_t, db) = fresh().await;
    db.create_user("@alice:x", Some("hash"), false, None, 1).await.unwrap();
    assert!(matches!(db.create_user("@alice:x", None, false, None, 2).await, Err(StorageError::Conflict)));
    db.create_login(NewLogin {
        user_id: "@alice:x",
        device_id: "DEV",
        display_name: Some("phone"),
        token_hash: "h1",
        now: 5,
        ip: Some("192.0.2.7"),
        user_agent: Some("probe/1.0"),
    })
    .await
    .unwrap();
    let owner = db.token_owner("h1").await.unwrap().unwrap();
    assert_eq!((owner.user_id.as_str(), owner.device_id.as_str()), ("@alice:x", "DEV"));
    assert!(!owner.is_admin);

    // A second login on the same device replaces its token.
    db.create_login(NewLogin {
        user_id: "@alice:x",
        device_id: "DEV",
        display_name: None,
        token_hash: "h2",
        now: 6,
        ip: None,
        user_agent: None,
    })
    .await
    .unwrap();
    assert!(db.token_owner("h1").await.unwrap().is_none());
    let device = &db.devices("@alice:x").await.unwrap()[0];
    assert_eq!(device.display_name.as_deref(), Some("phone"));
    assert_eq!(device.last_seen_ip.as_deref(), Some("192.0.2.7"), "kept when the new login has none");
    assert_eq!(device.last_seen_user_agent.as_deref(), Some("probe/1.0"));

    assert!(db.deactivate_user("@alice:x").await.unwrap());
    assert!(db.token_owner("h2").await.unwrap().is_none());
    let user = db.user("@alice:x").await.unwrap().unwrap();
    assert!(user.deactivated && user.password_hash.is_none());
}

#[tokio::test]
async fn persist_is_atomic_and_state_groups_resolve_through_deltas() {
    let (_t, db) = fresh().await;
    let create = event(1, "$create", "m.room.create", Some(""), 0, 1);
    let mut join = event(2, "$join", "m.room.member", Some("@a:x"), 1, 2);
    join.txn = Some(TxnRecord {
        user_id: "@a:x".into(),
        device_id: "D".into(),
        scope: "send".into(),
        txn_id: "t1".into(),
    });
    let msg = event(3, "$msg", "m.room.message", None, 2, 2);
    let plan = PersistPlan {
        room_id: "!r:x".into(),
        new_room: Some(NewRoom {
            room_version: "12".into(),
            creator: "@a:x".into(),
            created_ts: 1,
            published: false,
        }),
        events: vec![create, join, msg],
        state_groups: vec![
            NewStateGroup {
                group_id: 1,
                prev_group: None,
                chain_len: 0,
                entries: vec![entry("m.room.create", "", Some("$create"))],
                parents: vec![],
            },
            NewStateGroup {
                group_id: 2,
                prev_group: Some(1),
                chain_len: 1,
                entries: vec![entry("m.room.member", "@a:x", Some("$join"))],
                parents: vec![],
            },
        ],
        state_delta: vec![
            change("m.room.create", "", Some("$create"), 1),
            change("m.room.member", "@a:x", Some("$join"), 2),
        ],
        current_state_group: Some(2),
        extremities: Some(vec!["$msg".into()]),
        aliases: vec![("#a:x".into(), "@a:x".into())],
        ..Default::default()
    };
    db.persist(&plan).await.unwrap();

    let mut state = db.state_group(2).await.unwrap();
    state.sort();
    assert_eq!(
        state,
        vec![
            ("m.room.create".into(), "".into(), "$create".into()),
            ("m.room.member".into(), "@a:x".into(), "$join".into()),
        ]
    );
    assert_eq!(db.membership("!r:x", "@a:x").await.unwrap().unwrap().membership, MembershipState::Join);
    assert_eq!(db.room_extremities("!r:x").await.unwrap(), vec!["$msg".to_string()]);
    assert_eq!(db.txn_event("@a:x", "D", "send", "t1").await.unwrap().as_deref(), Some("$join"));
    assert_eq!(db.max_stream_pos().await.unwrap(), 3);

    let back = db.room_events("!r:x", StreamPos::new(3), None, Direction::Backward, 2).await.unwrap();
    assert_eq!(back.iter().map(|e| e.stream_pos.get()).collect::<Vec<_>>(), vec![3, 2]);
    let fwd = db
        .room_events("!r:x", StreamPos::new(1), Some(StreamPos::new(3)), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(fwd.iter().map(|e| e.stream_pos.get()).collect::<Vec<_>>(), vec![2, 3]);

    // A batch that reuses the alias fails as a whole: its event is not stored.
    let plan2 = PersistPlan {
        room_id: "!r:x".into(),
        events: vec![event(4, "$msg2", "m.room.message", None, 2, 2)],
        aliases: vec![("#a:x".into(), "@a:x".into())],
        ..Default::default()
    };
    assert!(matches!(db.persist(&plan2).await, Err(StorageError::AliasTaken)));
    assert!(db.event("$msg2").await.unwrap().is_none());
    assert_eq!(db.max_stream_pos().await.unwrap(), 3);
    assert_eq!(db.room("!r:x").await.unwrap().unwrap().current_state_group, 2);
    // A duplicate event is a conflict of its own, not a taken alias.
    let dup = PersistPlan {
        room_id: "!r:x".into(),
        events: vec![event(5, "$msg", "m.room.message", None, 2, 2)],
        ..Default::default()
    };
    assert!(matches!(db.persist(&dup).await, Err(StorageError::Conflict)));
}

#[tokio::test]
async fn account_data_and_filters() {
    let (_t, db) = fresh().await;
    let set = |room: &'static str, ty: &'static str, content: &'static str, pos: i64| {
        let db = db.clone();
        async move {
            db.update_account_data("@a:x", room, ty, pos, |_| Ok::<_, ()>(Some(content.to_owned())))
                .await
                .unwrap()
                .unwrap()
        }
    };
    set("", "m.direct", "{}", 5).await;
    set("!r:x", "m.tag", "{\"a\":1}", 7).await;
    set("", "m.direct", "{\"b\":2}", 9).await;
    // A change sees what is stored; a refused or empty change writes nothing.
    let seen = db
        .update_account_data("@a:x", "", "m.direct", 11, |old| {
            Err::<Option<String>, _>(old.map(str::to_owned))
        })
        .await
        .unwrap();
    assert_eq!(seen, Err(Some("{\"b\":2}".to_owned())));
    let untouched = db.update_account_data("@a:x", "", "m.direct", 12, |_| Ok::<_, ()>(None)).await.unwrap();
    assert_eq!(untouched, Ok(None));
    // An update committed after a later-allocated one keeps the higher position.
    set("", "m.direct", "{\"c\":3}", 8).await;
    let rows = db.account_data_since("@a:x", 8, 100).await.unwrap();
    assert_eq!(rows.iter().find(|r| r.data_type == "m.direct").map(|r| r.stream_pos), Some(9));
    let since = db.account_data_since("@a:x", 6, 100).await.unwrap();
    assert_eq!(since.len(), 2);
    assert_eq!(since[1].content, "{\"c\":3}");
    assert_eq!(db.create_filter("@a:x", "{}").await.unwrap(), 0);
    assert_eq!(db.create_filter("@a:x", "{\"x\":1}").await.unwrap(), 1);
    assert_eq!(db.filter("@a:x", 1).await.unwrap().as_deref(), Some("{\"x\":1}"));
    assert!(db.filter("@b:x", 1).await.unwrap().is_none());
}

#[tokio::test]
async fn unreachable_database_is_a_connect_error_naming_the_url() {
    let err = match Db::connect("postgres://nobody:secret@127.0.0.1:1/none").await {
        Err(e) => e,
        Ok(_) => panic!("connected to a closed port"),
    };
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("secret"), "password leaked: {text}");
    assert!(matches!(Db::connect("mysql://x").await, Err(StorageError::UnsupportedUrl(_))));
}

#[tokio::test]
async fn search_pages_through_rank_windows_and_filters_rooms() {
    use crate::{
        persist::SearchRow,
        search::{RANK_WINDOW, SearchOrder, SearchQuery},
        visibility::{PositionRange, VisibleSet},
    };
    let (_t, db) = fresh().await;
    // 1,500 hits in one room (every fifth with the word twice: better ranked), one elsewhere.
    let hits = RANK_WINDOW + 500;
    for (room, range) in [("!a:x", 1..=hits), ("!b:x", hits + 1..=hits + 1)] {
        let plan = PersistPlan {
            room_id: room.into(),
            events: range
                .clone()
                .map(|pos| event(pos, &format!("$e{pos}"), "m.room.message", None, 0, 0))
                .collect(),
            search: range
                .map(|pos| SearchRow {
                    stream_pos: pos,
                    key: "content.body".into(),
                    text: if pos % 5 == 0 { "coffee coffee".into() } else { format!("coffee and item{pos}") },
                })
                .collect(),
            ..Default::default()
        };
        db.persist(&plan).await.unwrap();
    }
    let rooms = vec!["!a:x".to_owned()];
    let keys = vec!["content.body".to_owned()];
    let tokens = vec!["coffee".to_owned()];
    let everything = VisibleSet::default();
    let query =
        |order| SearchQuery { rooms: &rooms, keys: &keys, tokens: &tokens, order, visible: &everything };

    let (page, count) = db.search_events(&query(SearchOrder::Recent), 10, 0, true).await.unwrap();
    assert_eq!(count, Some(hits), "only the listed room counts");
    assert_eq!(
        page.iter().map(|h| h.stream_pos).collect::<Vec<_>>(),
        (hits - 9..=hits).rev().collect::<Vec<_>>()
    );

    // Ranked: within the newest window the doubled word wins; a page stops at the window's end
    // and the next offset continues in the older window, so every hit is reachable once.
    let (page, _) = db.search_events(&query(SearchOrder::Rank), 10, 0, false).await.unwrap();
    assert!(page.iter().all(|h| h.stream_pos % 5 == 0 && h.stream_pos > hits - RANK_WINDOW), "{page:?}");
    assert!(page.windows(2).all(|w| w[0].rank >= w[1].rank));
    let (tail, _) = db.search_events(&query(SearchOrder::Rank), 50, RANK_WINDOW - 5, false).await.unwrap();
    assert_eq!(tail.len(), 5, "a page does not span two windows");
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let (page, _) = db.search_events(&query(SearchOrder::Rank), 100, offset, false).await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as i64;
        for hit in page {
            assert!(seen.insert(hit.stream_pos), "hit {} twice", hit.stream_pos);
        }
    }
    assert_eq!(seen.len() as i64, hits);

    // Only what the searcher may see is returned and counted: here positions 101..=200.
    let visible = VisibleSet {
        restricted: vec!["!a:x".into()],
        ranges: vec![PositionRange { room_id: "!a:x".into(), from: 101, to: 200 }],
    };
    let limited = SearchQuery { visible: &visible, ..query(SearchOrder::Recent) };
    let (page, count) = db.search_events(&limited, 10, 0, true).await.unwrap();
    assert_eq!(count, Some(100));
    assert_eq!(page.first().map(|h| h.stream_pos), Some(200));
    let nothing = VisibleSet { restricted: vec!["!a:x".into()], ranges: Vec::new() };
    let (page, count) = db
        .search_events(&SearchQuery { visible: &nothing, ..query(SearchOrder::Rank) }, 10, 0, true)
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(count, Some(0));
}

#[tokio::test]
async fn a_key_keeps_its_longest_validity_but_an_expiry_always_applies() {
    let (_tdb, db) = fresh().await;
    let row = |valid_until_ts: i64, expired_ts: Option<i64>| crate::server_keys::ServerKeyRow {
        server_name: "b.example".into(),
        key_id: "ed25519:k".into(),
        public_key: "AAAA".into(),
        valid_until_ts,
        expired_ts,
        fetched_ts: 1,
        response_json: "{}".into(),
    };
    db.store_server_keys(&[row(100, None)]).await.unwrap();
    db.store_server_keys(&[row(50, None)]).await.unwrap();
    assert_eq!(
        db.server_keys("b.example").await.unwrap()[0].valid_until_ts,
        100,
        "a shorter copy never wins"
    );
    db.store_server_keys(&[row(50, Some(10))]).await.unwrap();
    let stored = &db.server_keys("b.example").await.unwrap()[0];
    assert_eq!((stored.valid_until_ts, stored.expired_ts), (100, Some(10)), "but its expiry applies");
    db.store_server_keys(&[row(50, Some(20))]).await.unwrap();
    assert_eq!(
        db.server_keys("b.example").await.unwrap()[0].expired_ts,
        Some(10),
        "the earliest expiry stands"
    );
}
