//! The presence section: presence of the user and the people they share rooms with, changed
//! since the token (nothing is read when the tracker says nothing changed).

use homeserver_core::Error;
use homeserver_live::presence::presence_event;
use serde_json::Value;

use crate::context::SyncContext;

pub(crate) async fn presence_section(ctx: &SyncContext<'_>) -> Result<Vec<Value>, Error> {
    let since = ctx.since_pos();
    let presence = &ctx.syncer.live.presence;
    if !presence.enabled
        || !ctx.filter.presence.allows("m.presence", "")
        || !presence.changed_since(since.get())
    {
        return Ok(Vec::new());
    }
    let now = homeserver_core::time::now_millis() as i64;
    let user = ctx.user.as_str();
    Ok(ctx
        .syncer
        .db
        .presence_of_room_mates(user, since.get(), ctx.now.get())
        .await?
        .iter()
        .filter(|p| !ctx.ignored.contains(&p.user_id))
        .filter(|p| ctx.filter.presence.allows("m.presence", &p.user_id))
        .map(|p| presence_event(p, now))
        .collect())
}
