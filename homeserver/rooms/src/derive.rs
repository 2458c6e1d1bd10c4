//! Rows derived from an event's content when it is persisted: its relation (`m.relates_to`) and
//! its searchable text.

use homeserver_core::text::index_text;
use homeserver_storage::persist::{RelationRow, SearchRow};
use serde_json::Value;

use crate::pdu::Pdu;

/// The relation an event declares, if it is one of the kinds Lattice aggregates.
pub fn relation(pdu: &Pdu, stream_pos: i64) -> Option<RelationRow> {
    if pdu.is_state() {
        return None;
    }
    let content = pdu.content_value();
    let relates_to = content.get("m.relates_to")?;
    let rel_type = relates_to.get("rel_type")?.as_str()?;
    if !matches!(rel_type, "m.replace" | "m.annotation" | "m.thread" | "m.reference") {
        return None;
    }
    let target = relates_to.get("event_id")?.as_str()?;
    let key = match rel_type {
        "m.annotation" => Some(relates_to.get("key")?.as_str()?.to_owned()),
        _ => None,
    };
    Some(RelationRow {
        event_id: pdu.event_id.to_string(),
        relates_to: target.to_owned(),
        rel_type: rel_type.to_owned(),
        event_type: pdu.kind.to_string(),
        sender: pdu.sender.to_string(),
        aggregation_key: key,
        stream_pos,
    })
}

/// The thread an event belongs to (its root), for thread-aware notifications.
pub fn thread_of(pdu: &Pdu) -> Option<String> {
    let content = pdu.content_value();
    let relates_to = content.get("m.relates_to")?;
    (relates_to.get("rel_type")?.as_str()? == "m.thread")
        .then(|| relates_to.get("event_id")?.as_str().map(str::to_owned))
        .flatten()
}

/// Searchable text: message bodies, room names and topics.
pub fn search_row(pdu: &Pdu, stream_pos: i64) -> Option<SearchRow> {
    let kind = pdu.kind.to_string();
    let (field, key) = match (kind.as_str(), pdu.state_key.as_deref()) {
        ("m.room.message", None) => ("body", "content.body"),
        ("m.room.name", Some("")) => ("name", "content.name"),
        ("m.room.topic", Some("")) => ("topic", "content.topic"),
        _ => return None,
    };
    let content = pdu.content_value();
    let text = content.get(field).and_then(Value::as_str)?;
    let tokens = index_text(text);
    (!tokens.is_empty()).then(|| SearchRow { stream_pos, key: key.to_owned(), text: tokens })
}
