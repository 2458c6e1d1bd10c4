//! Out-of-band memberships: a local user's invite from another server, their rejection of it,
//! or their knock, for a room no user of this server is joined to (so this server holds no
//! current state of it, or only a stale one). The event is checked (format,
//! signatures, content hash) but cannot be authorised — there is no state to authorise it
//! against — so it is stored as an outlier, yet at a live stream position, and the user's
//! membership row is written directly, so their syncs show the invite (or its end). Once a
//! user of this server is in the room, memberships come from the room's state again.

use homeserver_core::Error;
use homeserver_storage::persist::OutOfBandMembership;
use ruma::{RoomVersionId, UserId, events::TimelineEventType};

use super::{Outcome, RoomActor};
use crate::{remote::check, versions};

/// Memberships an out-of-band event may give.
const OUT_OF_BAND: &[&str] = &["invite", "leave", "knock"];

impl RoomActor {
    /// Stores an out-of-band membership event of a local user: nothing when it is stored
    /// already, or when a user of this server is in the room (the event then comes through
    /// the room; decided here, in the room's order, so no join or leave slips in between).
    pub(super) async fn out_of_band(
        &mut self,
        json: &str,
        version: &RoomVersionId,
        unsigned_extra: Option<&str>,
        outcome: &mut Outcome,
    ) -> Result<(), Error> {
        let rules = versions::rules(version).ok_or_else(|| Error::internal("unsupported room version"))?;
        let checked = check::check_pdu(json, &self.room_id, &rules, &*self.shared.server_keys)
            .map_err(|reason| Error::forbidden(format!("The event is not valid: {reason}")))?;
        if checked.redacted {
            return Err(Error::forbidden("The event's content does not match its hash"));
        }
        let pdu = checked.pdu;
        let ours = self.shared.key.server_name();
        let target = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        let membership = pdu.content_str("membership").unwrap_or_default();
        let Some(target) =
            target.filter(|t| pdu.kind == TimelineEventType::RoomMember && t.server_name() == ours)
        else {
            return Err(Error::bad_json("Not a membership event of a user of this server"));
        };
        if !OUT_OF_BAND.contains(&membership.as_str()) {
            return Err(Error::bad_json("Not an invite, a knock or a leave"));
        }
        let local_joined = self.loaded.as_ref().is_some_and(|l| {
            l.memberships.iter().any(|(u, m)| m.as_str() == "join" && u.server_name() == ours)
        });
        if local_joined {
            return Ok(());
        }
        if self.batch_pdus.contains_key(&pdu.event_id)
            || !self.dag_info(std::slice::from_ref(&pdu.event_id)).await?.is_empty()
        {
            outcome.pdus.push(pdu);
            return Ok(());
        }
        let reservation = self.shared.stream.reserve(1).await?;
        let pos = reservation.first() as i64;
        outcome.reservations.push(reservation);
        let mut event = super::new_event(&pdu, pos, (0, 0));
        event.outlier = true;
        event.unsigned_extra = unsigned_extra.map(str::to_owned);
        outcome.plan.events.push(event);
        outcome.plan.out_of_band.push(OutOfBandMembership {
            user_id: target.to_string(),
            membership: membership.clone(),
            event_id: pdu.event_id.to_string(),
            stream_pos: pos,
        });
        if let Some(loaded) = self.loaded.as_mut() {
            // The actor's view of memberships mirrors the table.
            loaded.memberships.insert(target.clone(), membership);
        }
        self.batch_pdus.insert(pdu.event_id.clone(), pdu.clone());
        self.batch_log.push(super::remote::BatchEntry::Event(pdu.event_id.clone()));
        outcome.woken.push(target);
        outcome.pdus.push(pdu);
        Ok(())
    }
}
