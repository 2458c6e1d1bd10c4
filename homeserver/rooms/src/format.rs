//! The client event format: what `/sync`, `/messages`, `/event` and friends return for a PDU.
//!
//! Built from the stored PDU text: the federation-only fields are dropped, `event_id` (and
//! `room_id` where the endpoint wants it) added, the room version's redaction algorithm applied if
//! the event was redacted, and `unsigned` filled with `age`, `prev_content`, `redacted_because`
//! (and, as Synapse adds, `redacted_by`)
//! and — for the device that sent it — `transaction_id`; with a viewer, the bundled aggregations
//! (`unsigned.m.relations`) of edits, threads and references.

use std::collections::HashMap;

use homeserver_core::{Error, time::now_millis};
use homeserver_storage::events::EventRow;
use ruma::{CanonicalJsonObject, RoomId, room_version_rules::RoomVersionRules};
use serde_json::{Map, Value, json};

use crate::Rooms;

/// Who is looking, for `unsigned.transaction_id`.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
}

/// Whether the `room_id` key is included (sync omits it, most other endpoints include it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomIdField {
    Include,
    Omit,
}

const CLIENT_FIELDS: [&str; 5] = ["content", "origin_server_ts", "sender", "state_key", "type"];

/// Formats one event. `redaction` is the event that redacted it, if any.
pub fn client_event(
    row: &EventRow,
    rules: &RoomVersionRules,
    redaction: Option<&Value>,
    viewer: Option<Viewer<'_>>,
    room_id: RoomIdField,
    now: u64,
) -> Value {
    let pdu: Map<String, Value> = match redaction {
        Some(_) => match serde_json::from_str::<CanonicalJsonObject>(&row.json) {
            Ok(mut obj) => {
                let _ = ruma::canonical_json::redact_in_place(&mut obj, &rules.redaction, None);
                serde_json::to_value(obj).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default()
            }
            Err(_) => Map::new(),
        },
        None => serde_json::from_str(&row.json).unwrap_or_default(),
    };
    let mut out = Map::with_capacity(8);
    for field in CLIENT_FIELDS {
        if let Some(v) = pdu.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    out.insert("event_id".into(), json!(row.event_id));
    if room_id == RoomIdField::Include {
        out.insert("room_id".into(), json!(row.room_id));
    }
    if row.event_type == "m.room.redaction" {
        // Clients of every room version find the target at the top level.
        let redacts = pdu
            .get("redacts")
            .cloned()
            .or_else(|| pdu.get("content").and_then(|c| c.get("redacts")).cloned());
        if let Some(redacts) = redacts {
            out.insert("redacts".into(), redacts);
        }
    }
    let mut unsigned: Map<String, Value> =
        row.unsigned_extra.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    unsigned.insert("age".into(), json!(now.saturating_sub(row.origin_server_ts.max(0) as u64)));
    if let (Some(viewer), Some(device), Some(txn)) = (viewer, &row.txn_device, &row.txn_id)
        && viewer.user_id == row.sender
        && viewer.device_id == Some(device.as_str())
    {
        unsigned.insert("transaction_id".into(), json!(txn));
    }
    if let Some(redaction) = redaction {
        unsigned.insert("redacted_because".into(), redaction.clone());
        // Synapse's clients (and SyTest) also read the redaction's id on its own.
        if let Some(id) = redaction.get("event_id") {
            unsigned.insert("redacted_by".into(), id.clone());
        }
    }
    out.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(out)
}

impl Rooms {
    /// Formats events for a client, loading the redaction events they need in one query, with
    /// the bundled aggregations (`unsigned.m.relations`: latest edit, thread summary,
    /// references) when a viewer is given.
    pub async fn client_events(
        &self,
        rows: &[EventRow],
        viewer: Option<Viewer<'_>>,
        room_id: RoomIdField,
    ) -> Result<Vec<Value>, Error> {
        let mut out = self.format_rows(rows, viewer, room_id).await?;
        if let Some(viewer) = viewer {
            self.bundle_aggregations(rows, &mut out, viewer, room_id).await?;
        }
        Ok(out)
    }

    /// Adds `unsigned.m.relations` to the formatted `out[i]` of each `rows[i]` that has any.
    /// Redacted events and state events carry none.
    async fn bundle_aggregations(
        &self,
        rows: &[EventRow],
        out: &mut [Value],
        viewer: Viewer<'_>,
        room_id: RoomIdField,
    ) -> Result<(), Error> {
        let targets: Vec<String> = rows
            .iter()
            .filter(|r| r.state_key.is_none() && r.redacted_by.is_none())
            .map(|r| r.event_id.clone())
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let found = |a: &homeserver_storage::relations::Aggregations| {
            !(a.threads.is_empty() && a.edits.is_empty() && a.references.is_empty())
        };
        let everything = homeserver_storage::visibility::VisibleSet::default();
        let mut aggs =
            self.db().aggregations(&targets, viewer.user_id, &everything).await.map_err(Error::from)?;
        if !found(&aggs) {
            return Ok(());
        }
        // Replies, edits and references the viewer may not see (posted after they left, or
        // before they could see history) must not show through a summary: where the viewer does
        // not see all of a room, the aggregations are taken again over what they see.
        let user = ruma::UserId::parse(viewer.user_id).map_err(|e| Error::internal(e.to_string()))?;
        let visible = self.visible_set(&user, rows.iter().map(|r| r.room_id.as_str())).await?;
        if !visible.is_everything() {
            aggs = self.db().aggregations(&targets, viewer.user_id, &visible).await.map_err(Error::from)?;
            if !found(&aggs) {
                return Ok(());
            }
        }
        let positions: Vec<i64> =
            aggs.threads.iter().map(|t| t.latest_pos).chain(aggs.edits.iter().map(|e| e.1)).collect();
        let related = self.db().events_at(&positions).await.map_err(Error::from)?;
        let formatted = self.format_rows(&related, Some(viewer), room_id).await?;
        let by_pos: HashMap<i64, &Value> =
            related.iter().map(|r| r.stream_pos.get()).zip(formatted.iter()).collect();
        let mut bundles: HashMap<&str, Map<String, Value>> = HashMap::new();
        for thread in &aggs.threads {
            let Some(latest) = by_pos.get(&thread.latest_pos) else { continue };
            let root_sender = rows.iter().find(|r| r.event_id == thread.root_id).map(|r| r.sender.as_str());
            bundles.entry(thread.root_id.as_str()).or_default().insert(
                "m.thread".into(),
                json!({
                    "latest_event": latest,
                    "count": thread.count,
                    "current_user_participated": thread.viewer_replied || root_sender == Some(viewer.user_id),
                }),
            );
        }
        for (target, pos) in &aggs.edits {
            if let Some(edit) = by_pos.get(pos) {
                bundles.entry(target.as_str()).or_default().insert("m.replace".into(), (*edit).clone());
            }
        }
        let mut references: HashMap<&str, Vec<Value>> = HashMap::new();
        for (target, id) in &aggs.references {
            references.entry(target.as_str()).or_default().push(json!({ "event_id": id }));
        }
        for (target, chunk) in references {
            bundles.entry(target).or_default().insert("m.reference".into(), json!({ "chunk": chunk }));
        }
        for (row, value) in rows.iter().zip(out.iter_mut()) {
            if let Some(bundle) = bundles.remove(row.event_id.as_str())
                && let Some(unsigned) = value.get_mut("unsigned").and_then(Value::as_object_mut)
            {
                unsigned.insert("m.relations".into(), Value::Object(bundle));
            }
        }
        Ok(())
    }

    /// Formats events without aggregations.
    async fn format_rows(
        &self,
        rows: &[EventRow],
        viewer: Option<Viewer<'_>>,
        room_id: RoomIdField,
    ) -> Result<Vec<Value>, Error> {
        let now = now_millis();
        let redaction_ids: Vec<String> = rows.iter().filter_map(|r| r.redacted_by.clone()).collect();
        let mut redactions: HashMap<String, Value> = HashMap::new();
        if !redaction_ids.is_empty() {
            for red in self.db().events(&redaction_ids).await.map_err(Error::from)? {
                let rules = self.rules_for(&red.room_id).await?;
                let formatted = client_event(&red, &rules, None, None, RoomIdField::Include, now);
                redactions.insert(red.event_id.clone(), formatted);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut rules_cache: HashMap<String, RoomVersionRules> = HashMap::new();
        for row in rows {
            if !rules_cache.contains_key(&row.room_id) {
                rules_cache.insert(row.room_id.clone(), self.rules_for(&row.room_id).await?);
            }
            let rules = &rules_cache[&row.room_id];
            let redaction = row.redacted_by.as_ref().and_then(|id| redactions.get(id));
            out.push(client_event(row, rules, redaction, viewer, room_id, now));
        }
        Ok(out)
    }

    /// The rules redactions are applied by. An out-of-band invite's room may be unknown here:
    /// its events are never redacted here, so any version's rules format them.
    async fn rules_for(&self, room_id: &str) -> Result<RoomVersionRules, Error> {
        let room_id = RoomId::parse(room_id).map_err(|e| Error::internal(e.to_string()))?;
        match self.room_version(&room_id).await? {
            Some(_) => self.room_rules(&room_id).await,
            None => Ok(RoomVersionRules::V11),
        }
    }

    /// One formatted event.
    pub async fn client_event(
        &self,
        row: &EventRow,
        viewer: Option<Viewer<'_>>,
        room_id: RoomIdField,
    ) -> Result<Value, Error> {
        Ok(self.client_events(std::slice::from_ref(row), viewer, room_id).await?.remove(0))
    }
}
