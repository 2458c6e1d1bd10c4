//! Device-list changes: when a user's devices change (keys uploaded or changed, a device
//! deleted), the change takes a stream position, and the users sharing a room with them are
//! woken so their syncs list the user in `device_lists.changed` (and clients re-query keys).

use std::sync::Arc;

use homeserver_core::{Error, streams::EventStream, streams::watermarks::Mark};
use homeserver_storage::Db;
use ruma::{OwnedUserId, UserId};

pub struct DeviceLists {
    db: Db,
    stream: Arc<EventStream>,
}

impl DeviceLists {
    pub fn new(db: Db, stream: Arc<EventStream>) -> Self {
        Self { db, stream }
    }

    /// Records that `user`'s device list changed and wakes the users who care.
    pub async fn changed(&self, user: &UserId) -> Result<(), Error> {
        let mates = self.db.room_mates(user.as_str()).await?;
        let reservation = self.stream.reserve(1).await?;
        let pos = reservation.first();
        self.db.record_device_list_change(user.as_str(), pos as i64).await?;
        self.stream.marks().advance(Mark::DeviceLists, "", pos);
        let mut wake: Vec<OwnedUserId> =
            mates.iter().filter_map(|m| UserId::parse(m.as_str()).ok()).collect();
        if !wake.iter().any(|u| u == user) {
            wake.push(user.to_owned());
        }
        reservation.complete(wake);
        Ok(())
    }
}
