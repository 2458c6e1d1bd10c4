//! The in-memory event cache: parsed PDUs by event id, shared by the room pipeline (auth checks
//! look up the same few state events again and again) and by readers. It holds every event of
//! the DAG, rejected ones included (marked so): the room model must tell a rejected event from
//! one it has never seen. Readers reach it only through state entries, which never name one.
//!
//! A `std::sync::Mutex` around an LRU: lookups never hold it across an `.await`, and each
//! critical section is one map operation.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use homeserver_core::Error;
use homeserver_storage::{Db, events::EventRow};
use lru::LruCache;
use ruma::{EventId, OwnedEventId, RoomId};

use crate::pdu::Pdu;

pub struct EventCache {
    db: Db,
    lru: Mutex<LruCache<OwnedEventId, Arc<Pdu>>>,
}

/// Parses a stored row into a PDU (marked rejected if the row is).
pub fn pdu_from_row(row: &EventRow) -> Result<Pdu, Error> {
    let event_id = EventId::parse(&row.event_id).map_err(|e| Error::internal(e.to_string()))?;
    let room_id = RoomId::parse(&row.room_id).map_err(|e| Error::internal(e.to_string()))?;
    let mut pdu = Pdu::parse(event_id, Some(&room_id), Arc::from(row.json.as_str()))
        .map_err(|e| Error::internal(e.to_string()))?;
    pdu.rejected = row.rejected_reason.is_some();
    Ok(pdu)
}

impl EventCache {
    pub fn new(db: Db, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(16)).expect("non-zero");
        Self { db, lru: Mutex::new(LruCache::new(capacity)) }
    }

    pub fn insert(&self, pdu: Arc<Pdu>) {
        self.lru.lock().expect("cache poisoned").put(pdu.event_id.clone(), pdu);
    }

    fn cached(&self, id: &EventId) -> Option<Arc<Pdu>> {
        self.lru.lock().expect("cache poisoned").get(id).cloned()
    }

    pub async fn get(&self, id: &EventId) -> Result<Option<Arc<Pdu>>, Error> {
        if let Some(pdu) = self.cached(id) {
            return Ok(Some(pdu));
        }
        let rows = self.db.dag_events(&[id.to_string()]).await.map_err(Error::from)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let pdu = Arc::new(pdu_from_row(row)?);
        self.insert(pdu.clone());
        Ok(Some(pdu))
    }

    /// Several events at once: one query for whatever is not cached.
    pub async fn get_many(&self, ids: &[OwnedEventId]) -> Result<HashMap<OwnedEventId, Arc<Pdu>>, Error> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut lru = self.lru.lock().expect("cache poisoned");
            for id in ids {
                match lru.get(id) {
                    Some(pdu) => {
                        out.insert(id.clone(), pdu.clone());
                    }
                    None => missing.push(id.to_string()),
                }
            }
        }
        if !missing.is_empty() {
            for row in self.db.dag_events(&missing).await.map_err(Error::from)? {
                let pdu = Arc::new(pdu_from_row(&row)?);
                self.insert(pdu.clone());
                out.insert(pdu.event_id.clone(), pdu);
            }
        }
        Ok(out)
    }
}
