//! Content validation of local events: what the client API promises beyond the auth rules.
//!
//! The room pipeline runs [`local_event`] on every event one of our users sends, whichever
//! endpoint it came from (`/send`, the state endpoint, `createRoom`'s `initial_state`, upgrades),
//! so a rule here cannot be skipped by choosing another endpoint. Remote events are judged by
//! the auth rules alone: these checks are ours, not the room version's.
//!
//! - Event types and state keys are at most 255 bytes (as Synapse enforces).
//! - `m.room.canonical_alias`: `alias` and `alt_aliases` are valid aliases, and those of this
//!   server that the event adds (not already in the current canonical-alias event) exist and
//!   point to this room (`M_BAD_ALIAS`), counting the aliases a room being created claims in the
//!   same transaction. Like Synapse, aliases already listed are not checked again, so removing
//!   one alias never fails because another went stale.

use homeserver_core::{Error, ErrorKind};
use homeserver_storage::Db;
use ruma::{RoomAliasId, RoomId, ServerName};
use serde_json::Value;

use crate::builder::EventTemplate;

/// The longest event type and state key a local event may have.
pub const MAX_ID_BYTES: usize = 255;

/// Where a local event is checked: the database for aliases, and the aliases a room being
/// created claims in the same transaction (`(alias, creator)`).
pub struct Context<'a> {
    pub db: &'a Db,
    pub server_name: &'a ServerName,
    pub room_id: &'a RoomId,
    pub claimed_aliases: &'a [(String, String)],
    /// The aliases the room's current canonical-alias event lists.
    pub current_aliases: &'a [String],
}

/// Validates one local event before it is built.
pub async fn local_event(ctx: &Context<'_>, template: &EventTemplate) -> Result<(), Error> {
    if template.kind.len() > MAX_ID_BYTES {
        return Err(Error::bad_json(format!("event type is longer than {MAX_ID_BYTES} bytes")));
    }
    if template.state_key.as_ref().is_some_and(|k| k.len() > MAX_ID_BYTES) {
        return Err(Error::bad_json(format!("state key is longer than {MAX_ID_BYTES} bytes")));
    }
    if template.kind == "m.room.canonical_alias" && template.state_key.as_deref() == Some("") {
        canonical_alias(ctx, &template.content).await?;
    }
    Ok(())
}

/// The aliases of an `m.room.canonical_alias` event must be valid and, for this server's
/// aliases it adds, point to the room (spec: `M_BAD_ALIAS`).
async fn canonical_alias(ctx: &Context<'_>, content: &Value) -> Result<(), Error> {
    let bad = |msg: String| Error::new(ErrorKind::BadAlias, msg);
    let mut aliases: Vec<&Value> = content.get("alias").into_iter().filter(|a| !a.is_null()).collect();
    match content.get("alt_aliases") {
        None | Some(Value::Null) => {}
        Some(Value::Array(alt)) => aliases.extend(alt),
        Some(_) => return Err(Error::invalid_param("alt_aliases must be a list")),
    }
    for alias in aliases {
        let alias = alias.as_str().ok_or_else(|| Error::invalid_param("aliases must be strings"))?;
        let parsed =
            RoomAliasId::parse(alias).map_err(|_| Error::invalid_param(format!("invalid alias {alias}")))?;
        if parsed.server_name() != ctx.server_name
            || ctx.claimed_aliases.iter().any(|(a, _)| a == alias)
            || ctx.current_aliases.iter().any(|a| a == alias)
        {
            continue;
        }
        match ctx.db.alias(alias).await.map_err(Error::from)? {
            Some(record) if record.room_id == ctx.room_id.as_str() => {}
            Some(_) => return Err(bad(format!("{alias} points to another room"))),
            None => return Err(bad(format!("{alias} does not exist"))),
        }
    }
    Ok(())
}

/// The aliases (`alias` and `alt_aliases`) a canonical-alias event's content lists.
pub fn listed_aliases(content: &Value) -> Vec<String> {
    let alt = content.get("alt_aliases").and_then(Value::as_array).into_iter().flatten();
    content.get("alias").into_iter().chain(alt).filter_map(Value::as_str).map(str::to_owned).collect()
}
