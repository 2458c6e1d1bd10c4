//! The device's end-to-end encryption sections: `to_device` (messages waiting for this
//! device, at most [`PER_SYNC`] per response, oldest first, deleted once a later sync's token
//! shows they arrived — a client that retries with its old token gets them again, none is
//! lost), `device_one_time_keys_count`, `device_unused_fallback_key_types` and
//! `device_lists`.

use homeserver_core::{Error, streams::watermarks::Mark};
use homeserver_storage::events::MembershipRow;
use serde_json::{Map, Value, json};

use crate::context::SyncContext;

/// Most to-device messages in one response (the rest come with the next).
pub const PER_SYNC: i64 = 100;

/// The to-device events for this response, and the position they were delivered up to when
/// that is below the response's (`None`: everything up to it).
pub(crate) async fn to_device_section(ctx: &SyncContext<'_>) -> Result<(Vec<Value>, Option<u64>), Error> {
    let db = &ctx.syncer.db;
    let (user, device) = (ctx.user.as_str(), ctx.device.as_str());
    // Delivered before, up to here: the client's token proves they arrived.
    let acknowledged = ctx.since.map_or(0, |s| s.to_device_pos()) as i64;
    // A read first: most syncs have nothing to acknowledge, and a write per sync would
    // serialise them on the database's writer.
    if acknowledged > 0 && db.has_to_device_upto(user, device, acknowledged).await? {
        db.ack_to_device(user, device, acknowledged).await?;
    }
    let rows = db.to_device_for(user, device, acknowledged, ctx.now.get(), PER_SYNC + 1).await?;
    let more = rows.len() as i64 > PER_SYNC;
    let delivered: Vec<_> = rows.into_iter().take(PER_SYNC as usize).collect();
    let upto = match more {
        true => delivered.last().map(|r| r.pos as u64),
        false => None,
    };
    let events = delivered
        .into_iter()
        .map(|row| {
            let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
            json!({ "sender": row.sender, "type": row.event_type, "content": content })
        })
        .collect();
    Ok((events, upto))
}

/// `device_one_time_keys_count` (with `signed_curve25519` always present, as clients expect)
/// and `device_unused_fallback_key_types`.
pub(crate) async fn key_counts(ctx: &SyncContext<'_>) -> Result<(Value, Vec<String>), Error> {
    let db = &ctx.syncer.db;
    let (user, device) = (ctx.user.as_str(), ctx.device.as_str());
    let mut counts = Map::new();
    counts.insert("signed_curve25519".into(), json!(0));
    for (algorithm, n) in db.one_time_key_counts(user, device).await? {
        counts.insert(algorithm, json!(n));
    }
    let fallback = db.unused_fallback_algorithms(user, device).await?;
    Ok((Value::Object(counts), fallback))
}

/// `device_lists` for an incremental sync (see `Db::device_list_delta`), skipped when the
/// stream's watermarks show no device-list change and no membership change in the user's
/// rooms since the token (a message alone changes neither).
pub(crate) async fn device_lists(
    ctx: &SyncContext<'_>,
    memberships: &[MembershipRow],
) -> Result<(Vec<String>, Vec<String>), Error> {
    let Some(since) = ctx.since else { return Ok((Vec::new(), Vec::new())) };
    let marks = ctx.syncer.stream.marks();
    let devices_changed = marks.changed_after(Mark::DeviceLists, "", since.pos);
    let rooms_changed =
        memberships.iter().any(|m| marks.changed_after(Mark::Memberships, m.room_id.as_str(), since.pos));
    if !devices_changed && !rooms_changed {
        return Ok((Vec::new(), Vec::new()));
    }
    Ok(ctx.syncer.db.device_list_delta(ctx.user.as_str(), since.pos as i64, ctx.now.get()).await?)
}
