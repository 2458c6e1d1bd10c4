//! Device-list changes: when a user's devices change (a device created, renamed or deleted,
//! its keys uploaded or signed) or their cross-signing keys do, the change takes a stream
//! position, and the users sharing a room with them are woken so their syncs list the user in
//! `device_lists.changed` (and clients re-query keys). Each changed device takes its own
//! position: other servers are told of this server's users' changes one device at a time,
//! each naming the previous one (`prev_id`).

use std::sync::Arc;

use homeserver_core::{Error, streams::EventStream, streams::watermarks::Mark};
use homeserver_storage::Db;
use ruma::{OwnedUserId, UserId};

pub struct DeviceLists {
    db: Db,
    stream: Arc<EventStream>,
}

/// Most devices one change names (a user's devices are created by logins, which are rate
/// limited; this bounds one reservation).
const MAX_DEVICES_PER_CHANGE: usize = 10_000;

impl DeviceLists {
    pub fn new(db: Db, stream: Arc<EventStream>) -> Self {
        Self { db, stream }
    }

    /// Records that `user`'s devices `devices` changed (created, renamed, deleted, new keys or
    /// signatures) and wakes the users who care; nothing if `devices` is empty.
    pub async fn devices_changed(&self, user: &UserId, devices: &[String]) -> Result<(), Error> {
        let devices = &devices[..devices.len().min(MAX_DEVICES_PER_CHANGE)];
        let named: Vec<Option<&str>> = devices.iter().map(|d| Some(d.as_str())).collect();
        self.record(user, &named).await.map(|_| ())
    }

    /// Records a change of `user`'s keys that is not about one device: their cross-signing
    /// keys, or (for another server's user) whatever their server reported. Returns its
    /// position.
    pub async fn changed(&self, user: &UserId) -> Result<u64, Error> {
        self.record(user, &[None]).await
    }

    /// Records a change only `user`'s own devices hear of (a new user-signing key, a signature
    /// of another user's key: private trust decisions) and wakes only them.
    pub async fn changed_for_self(&self, user: &UserId) -> Result<(), Error> {
        let reservation = self.stream.reserve(1).await?;
        let pos = reservation.first();
        self.db.record_own_device_list_change(user.as_str(), pos as i64).await?;
        self.stream.marks().advance(Mark::DeviceLists, "", pos);
        reservation.complete(vec![user.to_owned()]);
        Ok(())
    }

    /// The stream's current position: a cache filled from what another server says now is
    /// complete from here.
    pub fn position(&self) -> u64 {
        self.stream.current()
    }

    async fn record(&self, user: &UserId, devices: &[Option<&str>]) -> Result<u64, Error> {
        if devices.is_empty() {
            return Ok(self.stream.current());
        }
        let mates = self.db.room_mates(user.as_str()).await?;
        let reservation = self.stream.reserve(devices.len() as u64).await?;
        let first = reservation.first();
        let changes: Vec<(Option<&str>, i64)> =
            devices.iter().enumerate().map(|(i, d)| (*d, (first + i as u64) as i64)).collect();
        self.db.record_device_list_changes(user.as_str(), &changes).await?;
        let last = first + devices.len() as u64 - 1;
        self.stream.marks().advance(Mark::DeviceLists, "", last);
        let mut wake: Vec<OwnedUserId> =
            mates.iter().filter_map(|m| UserId::parse(m.as_str()).ok()).collect();
        if !wake.iter().any(|u| u == user) {
            wake.push(user.to_owned());
        }
        reservation.complete(wake);
        Ok(last)
    }
}
