//! `kv` (the plugin's own store, within its quota) and `timers` (persisted, fired by the
//! dispatcher). Keys, values, list sizes and timer counts are bounded.

use homeserver_core::time::now_millis;
use homeserver_storage::plugins::KvWrite;

use super::to_wit;
use crate::{
    bindings::{kv, timers, types},
    instance::PluginState,
};

const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 1 << 20;
const MAX_LIST: u32 = 1000;
const MAX_TAG: usize = 256;
/// Longest a timer may be set ahead: a year.
const MAX_TIMER_MS: u64 = 365 * 24 * 3600 * 1000;

fn check_key(key: &str) -> Result<(), types::Error> {
    match key.len() {
        0 => Err(types::Error::Invalid("empty key".into())),
        n if n > MAX_KEY => Err(types::Error::Invalid(format!("keys are at most {MAX_KEY} bytes"))),
        _ => Ok(()),
    }
}

impl PluginState {
    async fn kv_write(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        write: KvWrite,
    ) -> Result<Option<u64>, types::Error> {
        self.rearm();
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(types::Error::Quota(format!("values are at most {MAX_VALUE} bytes")));
        }
        let ctx = self.ctx.clone();
        let db = &ctx.services.db;
        let now = now_millis() as i64;
        let quota = i64::from(ctx.grants.storage_mb) << 20;
        let used = db.kv_usage(&ctx.id, now).await.map_err(|e| to_wit(e.into()))?;
        if used + (key.len() + value.len()) as i64 > quota {
            // Expired entries still take room until dropped; drop them and look again.
            db.kv_expire(&ctx.id, now).await.map_err(|e| to_wit(e.into()))?;
            let used = db.kv_usage(&ctx.id, now).await.map_err(|e| to_wit(e.into()))?;
            if used + (key.len() + value.len()) as i64 > quota {
                return Err(types::Error::Quota(format!(
                    "storage quota of {} MiB reached",
                    ctx.grants.storage_mb
                )));
            }
        }
        let expires = ttl_ms.map(|ttl| now.saturating_add(ttl.min(i64::MAX as u64) as i64));
        let version =
            db.kv_put(&ctx.id, &key, &value, expires, write, now).await.map_err(|e| to_wit(e.into()))?;
        Ok(version.map(|v| v as u64))
    }
}

impl kv::Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<kv::Entry>, types::Error> {
        self.rearm();
        check_key(&key)?;
        let ctx = self.ctx.clone();
        let entry =
            ctx.services.db.kv_get(&ctx.id, &key, now_millis() as i64).await.map_err(|e| to_wit(e.into()))?;
        Ok(entry.map(|e| kv::Entry { value: e.value, version: e.version as u64 }))
    }

    async fn put(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<u64, types::Error> {
        let version = self.kv_write(key, value, ttl_ms, KvWrite::Always).await?;
        version.ok_or_else(|| types::Error::Internal("unconditional write refused".into()))
    }

    async fn cas(
        &mut self,
        key: String,
        expected_version: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, types::Error> {
        let expected =
            i64::try_from(expected_version).map_err(|_| types::Error::Invalid("version".into()))?;
        self.kv_write(key, value, ttl_ms, KvWrite::IfVersion(expected)).await
    }

    async fn delete(&mut self, key: String) -> Result<bool, types::Error> {
        self.rearm();
        check_key(&key)?;
        let ctx = self.ctx.clone();
        ctx.services.db.kv_delete(&ctx.id, &key, now_millis() as i64).await.map_err(|e| to_wit(e.into()))
    }

    async fn list(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, types::Error> {
        self.rearm();
        let ctx = self.ctx.clone();
        let limit = i64::from(limit.min(MAX_LIST));
        ctx.services
            .db
            .kv_list(&ctx.id, &prefix, after.as_deref(), limit, now_millis() as i64)
            .await
            .map_err(|e| to_wit(e.into()))
    }
}

impl timers::Host for PluginState {
    async fn set(&mut self, tag: String, after_ms: u64) -> Result<(), types::Error> {
        self.rearm();
        if tag.is_empty() || tag.len() > MAX_TAG {
            return Err(types::Error::Invalid(format!("timer tags are 1 to {MAX_TAG} bytes")));
        }
        let ctx = self.ctx.clone();
        let db = &ctx.services.db;
        let existing = db
            .plugin_timers(&ctx.id, i64::from(ctx.grants.max_timers) + 1)
            .await
            .map_err(|e| to_wit(e.into()))?;
        if existing.len() >= ctx.grants.max_timers as usize && !existing.iter().any(|(t, _)| *t == tag) {
            return Err(types::Error::Quota(format!("at most {} timers", ctx.grants.max_timers)));
        }
        let due = now_millis() as i64 + after_ms.min(MAX_TIMER_MS) as i64;
        db.set_plugin_timer(&ctx.id, &tag, due).await.map_err(|e| to_wit(e.into()))?;
        ctx.timers_changed.notify_one();
        Ok(())
    }

    async fn cancel(&mut self, tag: String) -> bool {
        self.rearm();
        let ctx = self.ctx.clone();
        ctx.services.db.remove_plugin_timer(&ctx.id, &tag, None).await.unwrap_or(false)
    }
}
