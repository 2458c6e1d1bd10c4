//! Applying a [`PersistPlan`]: a batch of room events with everything they change, in one
//! transaction.
//!
//! The room pipeline decides *what* changes (events, their DAG edges, new state groups, the new
//! current state and forward extremities, membership, redactions, transaction ids, aliases); this
//! module only writes it. Either all of it commits or none of it does, so a crash at any moment
//! leaves the room exactly as it was before the batch or exactly as after it.

use sqlx::{Any, Transaction};

use crate::{Db, Result, conflict_or};

/// A room being created by this batch.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub room_version: String,
    pub creator: String,
    pub created_ts: i64,
    pub published: bool,
}

/// A client transaction id to remember for idempotency.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    pub user_id: String,
    pub device_id: String,
    pub scope: String,
    pub txn_id: String,
}

/// One event to persist.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub stream_pos: i64,
    pub event_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender: String,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU, exactly as it is signed.
    pub json: String,
    /// Server-computed `unsigned` additions for clients (e.g. `prev_content`), kept apart from the
    /// PDU so the PDU text stays byte-identical.
    pub unsigned_extra: Option<String>,
    pub state_before: i64,
    pub state_after: i64,
    pub redacts: Option<String>,
    pub txn: Option<TxnRecord>,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    /// For `m.room.member` events: the membership value.
    pub membership: Option<String>,
}

/// A new state group: the delta against `prev_group` (or a full snapshot when it is `None`).
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    pub group_id: i64,
    pub prev_group: Option<i64>,
    pub chain_len: i64,
    pub entries: Vec<(String, String, String)>,
}

/// Everything one batch changes in one room.
#[derive(Debug, Clone, Default)]
pub struct PersistPlan {
    pub room_id: String,
    pub new_room: Option<NewRoom>,
    pub events: Vec<NewEvent>,
    pub state_groups: Vec<NewStateGroup>,
    /// `(type, state_key, event_id)` rows that replace the current state for those keys.
    pub current_state: Vec<(String, String, String)>,
    /// The room's forward extremities after the batch (replaces the stored set).
    pub extremities: Option<Vec<String>>,
    /// Aliases to create with the batch, `(alias, creator)`; a taken alias aborts the batch.
    pub aliases: Vec<(String, String)>,
}

impl Db {
    /// Writes the whole plan in one transaction. A unique violation (a taken alias, a replayed
    /// transaction id, a duplicate event) surfaces as `StorageError::Conflict` and nothing is written.
    pub async fn persist(&self, plan: &PersistPlan) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        apply(&mut tx, plan).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn apply(tx: &mut Transaction<'_, Any>, plan: &PersistPlan) -> Result<()> {
    let room_id = plan.room_id.as_str();
    if let Some(room) = &plan.new_room {
        sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, published, created_ts) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(room_id)
        .bind(&room.room_version)
        .bind(&room.creator)
        .bind(room.published as i64)
        .bind(room.created_ts)
        .execute(&mut **tx)
        .await
        .map_err(conflict_or)?;
    }
    for (alias, creator) in &plan.aliases {
        sqlx::query("INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .bind(plan.events.first().map(|e| e.origin_server_ts).unwrap_or(0))
            .execute(&mut **tx)
            .await
            .map_err(conflict_or)?;
    }
    for group in &plan.state_groups {
        sqlx::query(
            "INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)",
        )
        .bind(group.group_id)
        .bind(room_id)
        .bind(group.prev_group)
        .bind(group.chain_len)
        .execute(&mut **tx)
        .await?;
        for (ty, key, id) in &group.entries {
            sqlx::query(
                "INSERT INTO state_group_entries (group_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(group.group_id)
            .bind(ty)
            .bind(key)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
    }
    for ev in &plan.events {
        insert_event(tx, room_id, ev).await?;
    }
    for (ty, key, id) in &plan.current_state {
        sqlx::query(
            "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
        )
        .bind(room_id)
        .bind(ty)
        .bind(key)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(extremities) = &plan.extremities {
        sqlx::query("DELETE FROM room_extremities WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut **tx)
            .await?;
        for id in extremities {
            sqlx::query("INSERT INTO room_extremities (room_id, event_id) VALUES ($1, $2)")
                .bind(room_id)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

async fn insert_event(tx: &mut Transaction<'_, Any>, room_id: &str, ev: &NewEvent) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (stream_pos, event_id, room_id, event_type, state_key, sender, depth, \
           origin_server_ts, json, unsigned_extra, state_before, state_after, redacts, txn_device, txn_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(ev.stream_pos)
    .bind(&ev.event_id)
    .bind(room_id)
    .bind(&ev.event_type)
    .bind(ev.state_key.as_deref())
    .bind(&ev.sender)
    .bind(ev.depth)
    .bind(ev.origin_server_ts)
    .bind(&ev.json)
    .bind(ev.unsigned_extra.as_deref())
    .bind(ev.state_before)
    .bind(ev.state_after)
    .bind(ev.redacts.as_deref())
    .bind(ev.txn.as_ref().map(|t| t.device_id.as_str()))
    .bind(ev.txn.as_ref().map(|t| t.txn_id.as_str()))
    .execute(&mut **tx)
    .await
    .map_err(conflict_or)?;
    for prev in &ev.prev_events {
        sqlx::query(
            "INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&ev.event_id)
        .bind(prev)
        .execute(&mut **tx)
        .await?;
    }
    for auth in &ev.auth_events {
        sqlx::query(
            "INSERT INTO event_auth (event_id, auth_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&ev.event_id)
        .bind(auth)
        .execute(&mut **tx)
        .await?;
    }
    if let (Some(membership), Some(user_id)) = (&ev.membership, &ev.state_key) {
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten) \
             VALUES ($1, $2, $3, $4, $5, 0) \
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, \
               event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(membership)
        .bind(&ev.event_id)
        .bind(ev.stream_pos)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(redacts) = &ev.redacts {
        sqlx::query(
            "UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND room_id = $3 AND redacted_by IS NULL",
        )
        .bind(&ev.event_id)
        .bind(redacts)
        .bind(room_id)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(txn) = &ev.txn {
        sqlx::query(
            "INSERT INTO txn_ids (user_id, device_id, scope, txn_id, event_id, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&txn.user_id)
        .bind(&txn.device_id)
        .bind(&txn.scope)
        .bind(&txn.txn_id)
        .bind(&ev.event_id)
        .bind(ev.origin_server_ts)
        .execute(&mut **tx)
        .await
        .map_err(conflict_or)?;
    }
    Ok(())
}
