//! EDUs of inbound transactions. Typing notices go to the same `homeserver_live::typing::Typing`
//! a local `PUT /typing` feeds, for a user of the origin who is joined to a room whose ACL admits
//! the origin; a remote typing notice lasts 30 seconds unless renewed or stopped (servers resend
//! while their user types). Other EDU types are accepted and not processed yet.

use std::time::Duration;

use homeserver_core::Error;
use ruma::{
    ServerName,
    api::federation::transactions::edu::{Edu, TypingContent},
    serde::Raw,
};
use tokio::time::Instant;

use crate::FederationState;

/// How long a remote typing notice lasts.
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// Applies the EDUs a transaction carried; malformed or unauthorised ones are skipped.
pub(crate) async fn receive_edus(
    state: &FederationState,
    origin: &ServerName,
    edus: &[Raw<Edu>],
) -> Result<(), Error> {
    for raw in edus {
        match raw.deserialize() {
            Ok(Edu::Typing(typing)) => typing_notice(state, origin, &typing).await?,
            Ok(_) => {}
            Err(err) => tracing::debug!(%origin, error = %err, "skipping a malformed EDU"),
        }
    }
    Ok(())
}

async fn typing_notice(
    state: &FederationState,
    origin: &ServerName,
    typing: &TypingContent,
) -> Result<(), Error> {
    let (room_id, user) = (&typing.room_id, &typing.user_id);
    if user.server_name() != origin
        || state.rooms.room_version(room_id).await?.is_none()
        || !state.rooms.server_allowed(room_id, origin).await?
        || !state.rooms.is_joined(room_id, user).await?
    {
        return Ok(());
    }
    let until = typing.typing.then(|| Instant::now() + REMOTE_TYPING);
    let members = state.rooms.joined_members(room_id).await?;
    // Only local members have syncs to wake.
    let local = members.into_iter().filter(|m| m.server_name() == state.key.server_name()).collect();
    state.live.typing.set(room_id, user, until, local);
    Ok(())
}
