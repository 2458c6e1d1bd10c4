//! A short-lived cache of access-token lookups, so an authenticated request (every `/sync`
//! long-poll wake-up, every send) does not pay a database round trip to learn who it is.
//!
//! Correctness rules:
//! - Every write in this process that can end a token's validity or change what a lookup returns
//!   (logout, device deletion, re-login on a device, password change logging others out,
//!   deactivation, admin flag changes) calls [`TokenCache::invalidate`] after it commits, which
//!   empties the cache: such writes are rare, so exactness beats cleverness.
//! - A lookup that raced such a write must not put its stale answer back: lookups note the
//!   cache's generation before they query and only store their answer if no invalidation has
//!   happened since.
//! - Another process writing the same database (the admin CLI, a second server process) cannot
//!   reach this cache, so entries also expire after [`TTL`]: a token revoked elsewhere stops
//!   working within that time.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::accounts::TokenOwner;

/// How long a looked-up token is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(2);
/// Beyond this many entries the cache starts over (it refills from the active tokens).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    entries: HashMap<String, (TokenOwner, Instant)>,
}

impl TokenCache {
    /// The cached owner of a token hash, if looked up less than [`TTL`] ago.
    pub fn get(&self, token_hash: &str) -> Option<TokenOwner> {
        let inner = self.inner.lock().expect("token cache poisoned");
        let (owner, at) = inner.entries.get(token_hash)?;
        (at.elapsed() < TTL).then(|| owner.clone())
    }

    /// The generation to pass to [`TokenCache::put`] for a lookup starting now.
    pub fn generation(&self) -> u64 {
        self.inner.lock().expect("token cache poisoned").generation
    }

    /// Stores a lookup's answer unless the cache was invalidated since `generation`.
    pub fn put(&self, generation: u64, token_hash: &str, owner: TokenOwner) {
        let mut inner = self.inner.lock().expect("token cache poisoned");
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(token_hash.to_owned(), (owner, Instant::now()));
    }

    /// Forgets every entry (after a write that revokes tokens or changes their owners).
    pub fn invalidate(&self) {
        let mut inner = self.inner.lock().expect("token cache poisoned");
        inner.generation += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> TokenOwner {
        TokenOwner {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            is_admin: false,
            deactivated: false,
            is_guest: false,
        }
    }

    #[test]
    fn a_lookup_racing_an_invalidation_is_not_stored() {
        let cache = TokenCache::default();
        let before = cache.generation();
        cache.invalidate();
        cache.put(before, "h", owner());
        assert!(cache.get("h").is_none());
        cache.put(cache.generation(), "h", owner());
        assert_eq!(cache.get("h").map(|o| o.user_id), Some("@a:x".to_owned()));
        cache.invalidate();
        assert!(cache.get("h").is_none());
    }
}
