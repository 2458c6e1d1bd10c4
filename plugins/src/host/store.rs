//! `kv` (the plugin's own store, within its quota) and `timers` (persisted, fired by the
//! dispatcher). Keys, values, list sizes and timer counts are bounded, writes take tokens from
//! the plugin's write bucket (so a loop of writes cannot monopolise the database), and the work
//! runs on the server's runtime.

use std::sync::Arc;

use homeserver_core::time::now_millis;
use homeserver_storage::plugins::KvWrite;

use super::storage;
use crate::{
    bindings::{kv, timers, types},
    context::PluginCtx,
    instance::PluginState,
};

type R<T> = Result<T, types::Error>;

const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 1 << 20;
const MAX_LIST: u32 = 1000;
const MAX_TAG: usize = 256;
/// Longest a timer may be set ahead: a year.
const MAX_TIMER_MS: u64 = 365 * 24 * 3600 * 1000;

fn check_key(key: &str) -> R<()> {
    match key.len() {
        0 => Err(types::Error::Invalid("empty key".into())),
        n if n > MAX_KEY => Err(types::Error::Invalid(format!("keys are at most {MAX_KEY} bytes"))),
        _ => Ok(()),
    }
}

impl PluginCtx {
    async fn kv_write(
        self: Arc<Self>,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        write: KvWrite,
    ) -> R<Option<u64>> {
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(types::Error::Quota(format!("values are at most {MAX_VALUE} bytes")));
        }
        self.take(|b| &mut b.writes, 1.0)?;
        let db = &self.services.db;
        let now = now_millis() as i64;
        let quota = i64::from(self.grants.storage_mb) << 20;
        let adds = (key.len() + value.len()) as i64;
        if db.kv_usage(&self.id, now).await.map_err(storage)? + adds > quota {
            // Expired entries still take room until dropped; drop them and look again.
            db.kv_expire(&self.id, now).await.map_err(storage)?;
            if db.kv_usage(&self.id, now).await.map_err(storage)? + adds > quota {
                return Err(types::Error::Quota(format!(
                    "storage quota of {} MiB reached",
                    self.grants.storage_mb
                )));
            }
        }
        let expires = ttl_ms.map(|ttl| now.saturating_add(ttl.min(i64::MAX as u64) as i64));
        let version = db.kv_put(&self.id, &key, &value, expires, write, now).await.map_err(storage)?;
        Ok(version.map(|v| v as u64))
    }

    async fn kv_get(self: Arc<Self>, key: String) -> R<Option<kv::Entry>> {
        check_key(&key)?;
        let entry = self.services.db.kv_get(&self.id, &key, now_millis() as i64).await.map_err(storage)?;
        Ok(entry.map(|e| kv::Entry { value: e.value, version: e.version as u64 }))
    }

    async fn kv_delete(self: Arc<Self>, key: String) -> R<bool> {
        check_key(&key)?;
        self.take(|b| &mut b.writes, 1.0)?;
        self.services.db.kv_delete(&self.id, &key, now_millis() as i64).await.map_err(storage)
    }

    async fn kv_list(self: Arc<Self>, prefix: String, after: Option<String>, limit: u32) -> R<Vec<String>> {
        let limit = i64::from(limit.min(MAX_LIST));
        let now = now_millis() as i64;
        self.services.db.kv_list(&self.id, &prefix, after.as_deref(), limit, now).await.map_err(storage)
    }

    async fn timer_set(self: Arc<Self>, tag: String, after_ms: u64) -> R<()> {
        if tag.is_empty() || tag.len() > MAX_TAG {
            return Err(types::Error::Invalid(format!("timer tags are 1 to {MAX_TAG} bytes")));
        }
        self.take(|b| &mut b.writes, 1.0)?;
        let db = &self.services.db;
        let max = self.grants.max_timers;
        let existing = db.plugin_timers(&self.id, i64::from(max) + 1).await.map_err(storage)?;
        if existing.len() >= max as usize && !existing.iter().any(|(t, _)| *t == tag) {
            return Err(types::Error::Quota(format!("at most {max} timers")));
        }
        let due = now_millis() as i64 + after_ms.min(MAX_TIMER_MS) as i64;
        db.set_plugin_timer(&self.id, &tag, due).await.map_err(storage)?;
        self.timers_changed.notify_one();
        Ok(())
    }

    async fn timer_cancel(self: Arc<Self>, tag: String) -> R<bool> {
        self.services.db.remove_plugin_timer(&self.id, &tag, None).await.map_err(storage)
    }
}

impl kv::Host for PluginState {
    async fn get(&mut self, key: String) -> R<Option<kv::Entry>> {
        on_main!(self, kv_get(key))
    }

    async fn put(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> R<u64> {
        let version = on_main!(self, kv_write(key, value, ttl_ms, KvWrite::Always))?;
        version.ok_or_else(|| types::Error::Internal("unconditional write refused".into()))
    }

    async fn cas(
        &mut self,
        key: String,
        expected_version: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> R<Option<u64>> {
        let expected =
            i64::try_from(expected_version).map_err(|_| types::Error::Invalid("version".into()))?;
        on_main!(self, kv_write(key, value, ttl_ms, KvWrite::IfVersion(expected)))
    }

    async fn delete(&mut self, key: String) -> R<bool> {
        on_main!(self, kv_delete(key))
    }

    async fn list(&mut self, prefix: String, after: Option<String>, limit: u32) -> R<Vec<String>> {
        on_main!(self, kv_list(prefix, after, limit))
    }
}

impl timers::Host for PluginState {
    async fn set(&mut self, tag: String, after_ms: u64) -> R<()> {
        on_main!(self, timer_set(tag, after_ms))
    }

    async fn cancel(&mut self, tag: String) -> bool {
        on_main!(self, timer_cancel(tag)).unwrap_or(false)
    }
}
