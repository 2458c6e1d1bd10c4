//! Which member events (by event id) each device has already been sent while lazy-loading
//! members, so incremental syncs do not repeat them (unless the filter asks for
//! `include_redundant_members`). Keyed by event id, a changed membership is always sent again.
//!
//! Kept in memory, as Synapse does: after a restart a client at worst receives a member event
//! again, which is harmless. A std mutex around an LRU of devices; each entry is a bounded set.

use std::{collections::HashSet, num::NonZeroUsize, sync::Mutex};

use lru::LruCache;

/// Devices remembered.
const DEVICES: usize = 10_000;
/// Members remembered per device before the set starts over.
const MEMBERS_PER_DEVICE: usize = 50_000;

type Key = (String, String);

pub struct LazyMemberCache {
    sent: Mutex<LruCache<Key, HashSet<(String, String)>>>,
}

impl Default for LazyMemberCache {
    fn default() -> Self {
        Self { sent: Mutex::new(LruCache::new(NonZeroUsize::new(DEVICES).expect("non-zero"))) }
    }
}

impl LazyMemberCache {
    /// Forgets what a device was sent (an initial sync starts from nothing).
    pub fn reset(&self, user: &str, device: &str) {
        self.sent.lock().expect("lazy cache poisoned").pop(&(user.to_owned(), device.to_owned()));
    }

    /// Whether the member event `event_id` of `room` was already sent to the device.
    pub fn was_sent(&self, user: &str, device: &str, room: &str, event_id: &str) -> bool {
        let mut sent = self.sent.lock().expect("lazy cache poisoned");
        sent.get(&(user.to_owned(), device.to_owned()))
            .is_some_and(|set| set.contains(&(room.to_owned(), event_id.to_owned())))
    }

    pub fn mark_sent(
        &self,
        user: &str,
        device: &str,
        room: &str,
        event_ids: impl IntoIterator<Item = String>,
    ) {
        let mut sent = self.sent.lock().expect("lazy cache poisoned");
        let key = (user.to_owned(), device.to_owned());
        if sent.get(&key).is_none() {
            sent.put(key.clone(), HashSet::new());
        }
        let set = sent.get_mut(&key).expect("just inserted");
        if set.len() > MEMBERS_PER_DEVICE {
            set.clear();
        }
        set.extend(event_ids.into_iter().map(|id| (room.to_owned(), id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_device_and_resets() {
        let cache = LazyMemberCache::default();
        cache.mark_sent("@a:x", "D1", "!r:x", ["$join".to_owned()]);
        assert!(cache.was_sent("@a:x", "D1", "!r:x", "$join"));
        assert!(!cache.was_sent("@a:x", "D1", "!r:x", "$rename"), "a changed membership is new");
        assert!(!cache.was_sent("@a:x", "D2", "!r:x", "$join"), "other devices know nothing");
        cache.reset("@a:x", "D1");
        assert!(!cache.was_sent("@a:x", "D1", "!r:x", "$join"));
    }
}
