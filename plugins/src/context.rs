//! A plugin's own state, shared by its instances and kept across reloads: identity, grants, the
//! checked configuration, its rate buckets, log ring and counters, the edit coalescer — and
//! [`PluginCtx::on_main`], the hop every host import takes from the plugin runtime to the
//! server's: room actors, database connections and timers a plugin's call sets off must live
//! on the server's runtime, never on the thread guest code runs on.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use homeserver_core::time::now_millis;
use ruma::OwnedUserId;
use serde::Serialize;
use tokio::sync::Notify;

use crate::{bindings::types, coalesce::Coalescer, manager::Services, spec::CheckedConfig, spec::Grants};

/// Log lines kept per plugin for the admin.
const MAX_LOG_LINES: usize = 500;

/// One line a plugin logged (or the host logged about it).
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub ts: u64,
    pub level: String,
    pub message: String,
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    pub(crate) fn new(rate: f64, burst: f64) -> Bucket {
        Bucket { tokens: burst, last: Instant::now(), rate, burst }
    }

    /// Takes `n` tokens, or says how many milliseconds until they are there.
    pub(crate) fn take(&mut self, n: f64, now: Instant) -> Result<(), u32> {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        Err((((n - self.tokens) / self.rate) * 1000.0).ceil().min(f64::from(u32::MAX)) as u32)
    }
}

/// What a plugin may do how often. Events are the grant's `sends_per_second`; the rest are the
/// host's own bounds, so no kind of call can flood the database or the log.
pub(crate) struct Buckets {
    /// Every call that produces a room event (a room creation: one per invitee and state event).
    pub events: Bucket,
    /// Typing notices and receipts.
    pub ephemeral: Bucket,
    /// Profile changes (each one is a member event in every room of the user).
    pub profile: Bucket,
    /// Key-value and timer writes.
    pub writes: Bucket,
    /// Log lines (beyond it, lines are dropped and counted).
    pub logs: Bucket,
    /// Outbound HTTP requests.
    pub http: Bucket,
    /// Lines sent on connections (`net.send`).
    pub net: Bucket,
    /// Puppet accounts created or renamed.
    pub puppets: Bucket,
    /// Webhook requests answered.
    pub webhooks: Bucket,
    /// Connections opened.
    pub net_opens: Bucket,
}

impl Buckets {
    pub(crate) fn new(grants: &Grants) -> Buckets {
        let sends = f64::from(grants.sends_per_second);
        let lines = f64::from(grants.net_lines_per_second);
        Buckets {
            events: Bucket::new(sends, sends * 2.0),
            ephemeral: Bucket::new(5.0, 10.0),
            profile: Bucket::new(1.0 / 60.0, 2.0),
            writes: Bucket::new(100.0, 200.0),
            logs: Bucket::new(50.0, 100.0),
            http: Bucket::new(2.0, 20.0),
            net: Bucket::new(lines, lines * 4.0),
            puppets: Bucket::new(10.0, 100.0),
            webhooks: Bucket::new(20.0, 50.0),
            net_opens: Bucket::new(5.0, 20.0),
        }
    }
}

pub(crate) struct PluginCtx {
    pub id: String,
    pub user: OwnedUserId,
    pub services: Services,
    pub grants: Grants,
    pub config: Mutex<CheckedConfig>,
    pub buckets: Mutex<Buckets>,
    pub logs: Mutex<VecDeque<LogLine>>,
    pub dropped_logs: AtomicU64,
    pub counters: Mutex<BTreeMap<String, u64>>,
    pub edits: Coalescer,
    /// Woken when the plugin's timers change.
    pub timers_changed: Notify,
    /// The server's runtime.
    pub main: tokio::runtime::Handle,
    /// Outbound HTTP, when the plugin is granted hosts.
    pub egress: Option<crate::http::Egress>,
    /// The connections the host keeps for the plugin.
    pub net: crate::net::NetConns,
    /// The user and alias namespaces the plugin owns (`grants.namespaces`).
    pub claim: appservices::Claim,
    /// The rooms the plugin may be in and act in (`grants.rooms`, aliases resolved at start);
    /// `None`: any.
    pub scope: Option<std::collections::HashSet<ruma::OwnedRoomId>>,
    /// Puppets known to be the plugin's accounts (checked once, then remembered).
    pub puppets: Mutex<std::collections::HashSet<String>>,
}

impl PluginCtx {
    /// Writes to the server's log and the plugin's own.
    pub(crate) fn log(&self, level: &str, message: impl Into<String>) {
        let message = message.into();
        match level {
            "error" => tracing::error!(plugin = %self.id, "{message}"),
            "warn" => tracing::warn!(plugin = %self.id, "{message}"),
            "info" => tracing::info!(plugin = %self.id, "{message}"),
            _ => tracing::debug!(plugin = %self.id, "{message}"),
        }
        let mut logs = self.logs.lock().expect("plugin logs poisoned");
        if logs.len() >= MAX_LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(LogLine { ts: now_millis(), level: level.to_owned(), message });
    }

    /// A line the guest logged, unless it logs faster than its bucket allows.
    pub(crate) fn guest_log(&self, level: &str, message: String) {
        if self.take(|b| &mut b.logs, 1.0).is_err() {
            self.dropped_logs.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.log(level, message);
    }

    /// Adds to one of the plugin's counters (the host's own, beside those the plugin keeps).
    pub(crate) fn count(&self, name: &str, delta: u64) {
        let mut counters = self.counters.lock().expect("counters poisoned");
        let value = counters.entry(name.to_owned()).or_default();
        *value = value.saturating_add(delta);
    }

    /// Takes `n` tokens from one of the plugin's buckets, or `rate-limited`.
    pub(crate) fn take(
        &self,
        bucket: impl FnOnce(&mut Buckets) -> &mut Bucket,
        n: f64,
    ) -> Result<(), types::Error> {
        let mut buckets = self.buckets.lock().expect("buckets poisoned");
        bucket(&mut buckets).take(n, Instant::now()).map_err(types::Error::RateLimited)
    }

    /// Runs `work` on the server's runtime and waits for it.
    pub(crate) async fn on_main<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, types::Error>> + Send + 'static,
    ) -> Result<T, types::Error> {
        match self.main.spawn(work).await {
            Ok(result) => result,
            Err(err) => Err(types::Error::Internal(format!("host task failed: {err}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(2.0, 4.0);
        for _ in 0..4 {
            assert!(bucket.take(1.0, t0).is_ok());
        }
        assert_eq!(bucket.take(1.0, t0), Err(500));
        assert!(bucket.take(1.0, t0 + Duration::from_millis(500)).is_ok());
        assert!(bucket.take(3.0, t0 + Duration::from_secs(100)).is_ok(), "refilled to the burst");
        assert!(bucket.take(2.0, t0 + Duration::from_secs(100)).is_err(), "not beyond it");
    }
}
