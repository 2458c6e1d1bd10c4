//! [`Kv`]: the plugin's own key-value store (kept across reloads and restarts, within the
//! `storage_mb` quota), with string and JSON values.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::bindings::lattice::plugin::kv as host;

/// A stored value and its version (which grows with every write; 0 means absent for
/// [`Kv::cas`]).
pub use host::Entry;

/// A handle on the store: an optional key prefix and an optional time-to-live for writes.
///
/// ```ignore
/// let kv = Kv::new();
/// kv.put_str("greeting", "hi")?;
/// let seen = Kv::prefixed("seen/");          // keys "seen/…"
/// let cache = Kv::new().ttl_ms(60_000);      // writes expire after a minute
/// ```
#[derive(Clone, Debug, Default)]
pub struct Kv {
    prefix: String,
    ttl_ms: Option<u64>,
}

impl Kv {
    /// The whole store, writes without expiry.
    pub fn new() -> Self {
        Kv::default()
    }

    /// Keys are given relative to `prefix` (it is prepended to every key, and stripped from the
    /// keys [`Kv::list`] returns).
    pub fn prefixed(prefix: impl Into<String>) -> Self {
        Kv { prefix: prefix.into(), ttl_ms: None }
    }

    /// Writes through this handle expire after `ttl_ms` milliseconds.
    pub fn ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value and its version.
    pub fn entry(&self, key: &str) -> Result<Option<Entry>> {
        host::get(&self.key(key))
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.entry(key)?.map(|e| e.value))
    }

    /// The value as UTF-8 text (`invalid` if it is not).
    pub fn get_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key)? {
            Some(bytes) => Ok(Some(String::from_utf8(bytes)?)),
            None => Ok(None),
        }
    }

    /// The value deserialized from JSON (`invalid` if it does not parse as `T`).
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores a value; returns its new version.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<u64> {
        host::put(&self.key(key), value, self.ttl_ms)
    }

    pub fn put_str(&self, key: &str, value: &str) -> Result<u64> {
        self.put(key, value.as_bytes())
    }

    /// Stores `value` serialized as JSON.
    pub fn put_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64> {
        self.put(key, &serde_json::to_vec(value)?)
    }

    /// Stores a value only if the key is at `expected_version` (0: absent). `Some(new version)`
    /// if it was stored, `None` if the key had moved on.
    pub fn cas(&self, key: &str, expected_version: u64, value: &[u8]) -> Result<Option<u64>> {
        host::cas(&self.key(key), expected_version, value, self.ttl_ms)
    }

    /// Read-modify-write with [`Kv::cas`], retried until no other write got in between.
    /// `f` gets the current value (`None`: absent) and returns the new one; returns what was
    /// stored.
    pub fn update(&self, key: &str, mut f: impl FnMut(Option<&[u8]>) -> Vec<u8>) -> Result<Vec<u8>> {
        loop {
            let current = self.entry(key)?;
            let version = current.as_ref().map_or(0, |e| e.version);
            let new = f(current.as_ref().map(|e| e.value.as_slice()));
            if self.cas(key, version, &new)?.is_some() {
                return Ok(new);
            }
        }
    }

    /// Adds `delta` to a counter stored as a decimal string (absent: 0) with [`Kv::update`];
    /// returns the new count. A value that is not a number counts as 0.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64> {
        let mut count = 0;
        self.update(key, |old| {
            let old = old.and_then(|b| std::str::from_utf8(b).ok()?.trim().parse::<u64>().ok());
            count = old.unwrap_or(0).saturating_add(delta);
            count.to_string().into_bytes()
        })?;
        Ok(count)
    }

    /// Whether there was a value to delete.
    pub fn delete(&self, key: &str) -> Result<bool> {
        host::delete(&self.key(key))
    }

    /// Keys starting with `prefix` (after the handle's own prefix), in order, after `after`; at
    /// most `limit` (the host allows up to 1000).
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>> {
        let after = after.map(|a| self.key(a));
        let keys = host::list(&self.key(prefix), after.as_deref(), limit)?;
        Ok(keys
            .into_iter()
            .map(|k| k.strip_prefix(self.prefix.as_str()).map(str::to_owned).unwrap_or(k))
            .collect())
    }
}
