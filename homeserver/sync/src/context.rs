//! What one sync computation knows: who asks, with which filter, over which window.

use homeserver_core::{streams::StreamPos, token::StreamToken};
use homeserver_live::ignore::Ignored;
use homeserver_rooms::format::Viewer;
use ruma::{DeviceId, RoomId, UserId, events::room::member::MembershipState};

use crate::{Syncer, filter::FilterDefinition};

pub(crate) struct SyncContext<'a> {
    pub syncer: &'a Syncer,
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    pub filter: &'a FilterDefinition,
    /// The client's token, its position capped at `now`.
    pub since: Option<StreamToken>,
    /// The stream position this response covers up to.
    pub now: StreamPos,
    pub full_state: bool,
    /// Users whose events and invites this user ignores (`m.ignored_user_list`).
    pub ignored: Ignored,
}

impl SyncContext<'_> {
    /// The position of the client's token (0 for an initial sync).
    pub fn since_pos(&self) -> StreamPos {
        self.since.map_or(StreamPos::ZERO, |s| StreamPos::live(s.pos))
    }

    pub fn viewer(&self) -> Viewer<'_> {
        Viewer { user_id: self.user.as_str(), device_id: Some(self.device.as_str()) }
    }

    /// The user's membership in a room as of stream position `pos` (None if they had none).
    pub async fn membership_at(
        &self,
        room_id: &RoomId,
        pos: StreamPos,
    ) -> Result<Option<MembershipState>, homeserver_core::Error> {
        // The room's current state then, not the newest event's own (which may sit on a fork
        // that resolution set aside).
        let db = &self.syncer.db;
        let group = db.current_state_group_at(room_id.as_str(), pos).await?;
        let rooms = &self.syncer.rooms;
        let Some(event_id) = rooms.state_entry(group, "m.room.member", self.user.as_str()).await? else {
            return Ok(None);
        };
        let Ok(event_id) = ruma::EventId::parse(event_id) else { return Ok(None) };
        Ok(rooms
            .cache()
            .get(&event_id)
            .await?
            .and_then(|pdu| pdu.content_str("membership"))
            .map(MembershipState::from))
    }
}
