//! Account-data writes: per-user (and per-room) JSON documents that take a stream position so
//! `/sync` delivers them, with the ignore-list cache kept current.

use std::sync::Arc;

use homeserver_core::{Error, streams::EventStream, streams::watermarks::Mark};
use homeserver_storage::Db;
use ruma::UserId;

use crate::ignore::{IGNORE_LIST_TYPE, IgnoreLists, Ignored};

/// Writes account data and wakes the owner's syncs.
pub struct AccountData {
    db: Db,
    stream: Arc<EventStream>,
    ignore_lists: Arc<IgnoreLists>,
}

impl AccountData {
    pub fn new(db: Db, stream: Arc<EventStream>, ignore_lists: Arc<IgnoreLists>) -> Self {
        Self { db, stream, ignore_lists }
    }

    /// Stores a document (`room_id` empty: global).
    pub async fn put(
        &self,
        user: &UserId,
        room_id: &str,
        data_type: &str,
        content: &str,
    ) -> Result<(), Error> {
        self.update(user, room_id, data_type, |_| Ok(Some(content.to_owned()))).await.map(|_| ())
    }

    /// Changes one document atomically: `change` gets the stored content and returns the new one
    /// (`None`: unchanged). Concurrent changes of the same document are applied one after
    /// another, each to the result of the one before, so every acknowledged change is kept.
    /// Returns whether anything was written.
    pub async fn update(
        &self,
        user: &UserId,
        room_id: &str,
        data_type: &str,
        change: impl FnOnce(Option<&str>) -> Result<Option<String>, Error>,
    ) -> Result<bool, Error> {
        let reservation = self.stream.reserve(1).await?;
        let pos = reservation.first();
        let written = self
            .db
            .update_account_data(user.as_str(), room_id, data_type, pos as i64, change)
            .await
            .map_err(Error::from)??;
        let Some(content) = written else { return Ok(false) };
        self.stream.marks().advance(Mark::AccountData, user.as_str(), pos);
        if room_id.is_empty() && data_type == IGNORE_LIST_TYPE {
            self.ignore_lists.offer(user.as_str(), pos as i64, Ignored::parse(&content));
        }
        reservation.complete(vec![user.to_owned()]);
        Ok(true)
    }
}
