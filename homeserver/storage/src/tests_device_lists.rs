//! Device lists across servers in storage: the prev_id chain of a user's device changes,
//! catch-up compaction keeping each user's newest changes, and the remote list cache (applied
//! only along its chain, usable only while a room is shared since it was last brought up to
//! date). Run on SQLite and (with `LATTICE_TEST_DATABASE_URL`) on PostgreSQL.

use homeserver_core::streams::StreamPos;

use crate::{
    remote_devices::{RemoteDevice, RemoteDeviceList, RemoteDeviceUpdate},
    tests::fresh,
};

#[tokio::test]
async fn device_changes_chain_per_user_and_compaction_keeps_each_users_newest() {
    let (_tdb, db) = fresh().await;
    let (ann, bob) = ("@ann:here", "@bob:here");
    db.record_device_list_changes(ann, &[(Some("A1"), 10), (Some("A2"), 11)]).await.unwrap();
    db.record_device_list_changes(bob, &[(Some("B1"), 12)]).await.unwrap();
    db.record_device_list_changes(ann, &[(None, 13)]).await.unwrap();
    db.record_device_list_changes(ann, &[(Some("A1"), 14)]).await.unwrap();
    let changes = db.device_list_changes_at(&[10, 11, 12, 13, 14]).await.unwrap();
    let seen: Vec<(&str, Option<&str>, i64, Option<i64>)> =
        changes.iter().map(|c| (c.user_id.as_str(), c.device_id.as_deref(), c.pos, c.prev)).collect();
    assert_eq!(
        seen,
        [
            (ann, Some("A1"), 10, None),
            (ann, Some("A2"), 11, Some(10)),
            (bob, Some("B1"), 12, None),
            // A cross-signing change is not a link of the device chain.
            (ann, None, 13, Some(11)),
            (ann, Some("A1"), 14, Some(11)),
        ]
    );
    assert_eq!(db.device_list_stream_id(ann).await.unwrap(), 14);

    let owed: Vec<(String, StreamPos)> =
        (10..=14).map(|p| ("remote.example".to_owned(), StreamPos::new(p))).collect();
    db.route(&owed, StreamPos::new(14)).await.unwrap();
    db.compact_outbox("remote.example", 0).await.unwrap();
    let kept: Vec<i64> = db.outbox("remote.example", 10).await.unwrap().iter().map(|p| p.get()).collect();
    // Ann's newest device change and newest cross-signing change, Bob's only change.
    assert_eq!(kept, [12, 13, 14]);
}

fn device(id: &str, keys: &str) -> RemoteDevice {
    RemoteDevice { device_id: id.into(), display_name: None, keys: Some(keys.into()) }
}

#[tokio::test]
async fn a_remote_list_changes_only_along_its_chain() {
    let (_tdb, db) = fresh().await;
    let carl = "@carl:there";
    let update = |device: &str, stream_id: i64, deleted: bool| RemoteDeviceUpdate {
        device_id: device.into(),
        stream_id,
        deleted,
        display_name: Some("phone".into()),
        keys: (!deleted).then(|| format!("{{\"k\":{stream_id}}}")),
    };
    assert!(!db.apply_remote_device_update(carl, 0, &update("C1", 1, false)).await.unwrap(), "not cached");
    let list = RemoteDeviceList { stream_id: 7, devices: vec![device("C1", "{}")], ..Default::default() };
    assert!(db.replace_remote_device_list(carl, &list, 5).await.unwrap());
    assert_eq!(db.remote_device_list_stream_id(carl).await.unwrap(), Some(7));
    // Not after 7: refused, nothing changes.
    assert!(!db.apply_remote_device_update(carl, 6, &update("C2", 8, false)).await.unwrap());
    assert!(db.apply_remote_device_update(carl, 7, &update("C2", 8, false)).await.unwrap());
    assert!(db.apply_remote_device_update(carl, 8, &update("C1", 9, true)).await.unwrap());
    assert_eq!(db.remote_device_list_stream_id(carl).await.unwrap(), Some(9));
    // A fetched list older than the cache does not replace it.
    assert!(!db.replace_remote_device_list(carl, &list, 6).await.unwrap());
    assert_eq!(db.remote_device_list_stream_id(carl).await.unwrap(), Some(9));
    db.set_remote_cross_signing_keys(carl, Some("{\"m\":1}"), None).await.unwrap();
    assert!(!db.set_remote_cross_signing_keys("@nobody:there", Some("{}"), None).await.unwrap());
    db.forget_remote_device_list(carl).await.unwrap();
    assert_eq!(db.remote_device_list_stream_id(carl).await.unwrap(), None);
}
