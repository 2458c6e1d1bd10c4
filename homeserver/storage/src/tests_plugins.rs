//! Plugins' stored state on both engines: the key-value store's versions, compare-and-set,
//! expiry, prefix listing with awkward keys and usage; cursors that never move back; timers;
//! dead letters taken for replay.

use homeserver_core::streams::StreamPos;

use crate::{
    plugins::{DeadLetterRow, KvWrite},
    tests::fresh,
};

#[tokio::test]
async fn kv_versions_compare_and_set_and_expiry() {
    let (_t, db) = fresh().await;
    assert_eq!(db.kv_put("p", "k", b"one", None, KvWrite::IfVersion(0), 100).await.unwrap(), Some(1));
    assert_eq!(db.kv_put("p", "k", b"two", None, KvWrite::IfVersion(0), 100).await.unwrap(), None, "exists");
    assert_eq!(db.kv_put("p", "k", b"two", None, KvWrite::IfVersion(1), 100).await.unwrap(), Some(2));
    assert_eq!(db.kv_put("p", "k", b"x", None, KvWrite::IfVersion(1), 100).await.unwrap(), None, "stale");
    let entry = db.kv_get("p", "k", 100).await.unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.version), (&b"two"[..], 2));
    assert!(db.kv_get("other", "k", 100).await.unwrap().is_none(), "plugins do not share keys");

    // Expired values are absent: get, cas against 0, and the version still grows.
    db.kv_put("p", "t", b"short", Some(150), KvWrite::Always, 100).await.unwrap();
    assert!(db.kv_get("p", "t", 149).await.unwrap().is_some());
    assert!(db.kv_get("p", "t", 150).await.unwrap().is_none());
    assert_eq!(db.kv_put("p", "t", b"again", None, KvWrite::IfVersion(0), 200).await.unwrap(), Some(2));
    assert!(db.kv_delete("p", "t", 200).await.unwrap());
    assert!(!db.kv_delete("p", "t", 200).await.unwrap());
    assert_eq!(db.kv_usage("p", 200).await.unwrap(), 4, "one key `k` with `two`");
    db.kv_put("p", "gone", b"zz", Some(10), KvWrite::Always, 0).await.unwrap();
    assert_eq!(db.kv_expire("p", 200).await.unwrap(), 1);
}

#[tokio::test]
async fn kv_lists_by_prefix_in_order_with_awkward_keys() {
    let (_t, db) = fresh().await;
    for key in ["a%1", "a_2", "a3", "ab", "b1", "a", "a\u{00e9}"] {
        db.kv_put("p", key, b"v", None, KvWrite::Always, 0).await.unwrap();
    }
    let all_a = db.kv_list("p", "a", None, 100, 0).await.unwrap();
    assert_eq!(all_a, ["a", "a%1", "a3", "a_2", "ab", "a\u{00e9}"]);
    let percent = db.kv_list("p", "a%", None, 100, 0).await.unwrap();
    assert_eq!(percent, ["a%1"], "% is not a wildcard");
    let page = db.kv_list("p", "a", Some("a3"), 2, 0).await.unwrap();
    assert_eq!(page, ["a_2", "ab"]);
}

#[tokio::test]
async fn cursors_timers_and_dead_letters() {
    let (_t, db) = fresh().await;
    let state = db.plugin_state("p", StreamPos::new(10)).await.unwrap();
    assert_eq!((state.stream_pos, state.version, state.disabled), (StreamPos::new(10), None, false));
    db.set_plugin_cursor("p", StreamPos::new(20)).await.unwrap();
    db.set_plugin_cursor("p", StreamPos::new(15)).await.unwrap();
    db.set_plugin_version("p", "1.0.0").await.unwrap();
    db.set_plugin_disabled("p", true).await.unwrap();
    let state = db.plugin_state("p", StreamPos::new(99)).await.unwrap();
    assert_eq!(state.stream_pos, StreamPos::new(20), "never backwards, and not reset by a later start");
    assert_eq!((state.version.as_deref(), state.disabled), (Some("1.0.0"), true));

    db.set_plugin_timer("p", "b", 500).await.unwrap();
    db.set_plugin_timer("p", "a", 300).await.unwrap();
    db.set_plugin_timer("p", "a", 700).await.unwrap();
    assert_eq!(db.plugin_timers("p", 10).await.unwrap(), [("b".to_owned(), 500), ("a".to_owned(), 700)]);
    assert!(!db.remove_plugin_timer("p", "a", Some(300)).await.unwrap(), "moved since");
    assert!(db.remove_plugin_timer("p", "a", None).await.unwrap());
    assert_eq!(db.plugin_timer_count("p").await.unwrap(), 1);

    for pos in [5, 3] {
        let letter = DeadLetterRow {
            stream_pos: StreamPos::new(pos),
            event_id: format!("$e{pos}"),
            room_id: "!r:x".into(),
            attempts: 5,
            error: "boom".into(),
            failed_ts: 1,
        };
        db.add_dead_letter("p", &letter).await.unwrap();
    }
    let letters = db.dead_letters("p", 10).await.unwrap();
    assert_eq!(letters.iter().map(|l| l.stream_pos.get()).collect::<Vec<_>>(), [3, 5]);
    assert_eq!(db.dead_letter_count("p").await.unwrap(), 2);
    assert!(db.remove_dead_letter("p", StreamPos::new(5)).await.unwrap());
    assert!(!db.remove_dead_letter("p", StreamPos::new(5)).await.unwrap());
    assert_eq!(db.dead_letters("p", 10).await.unwrap()[0].event_id, "$e3");
}

#[tokio::test]
async fn a_bot_account_is_only_ever_its_plugins() {
    let (_t, db) = fresh().await;
    db.create_user("@alice:x", Some("hash"), false, None, 0).await.unwrap();
    assert!(!db.ensure_plugin_user("@alice:x", "echo", "alice", 0).await.unwrap(), "a person's account");
    assert!(db.ensure_plugin_user("@echo:x", "echo", "echo", 0).await.unwrap());
    assert!(db.ensure_plugin_user("@echo:x", "echo", "echo", 0).await.unwrap(), "found again");
    assert!(!db.ensure_plugin_user("@echo:x", "other", "echo", 0).await.unwrap(), "another plugin's");
}
