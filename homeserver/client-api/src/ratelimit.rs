//! Token-bucket rate limiting, per action and key (a user id or a client address).
//!
//! A `std::sync::Mutex` over a map of buckets: each check is a few arithmetic operations with no
//! `.await` under the lock. Buckets that have refilled completely are dropped on the next sweep, so
//! the map only holds currently active senders.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use homeserver_core::{Error, ErrorKind};

/// A limit: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Register,
    Login,
    Message,
    /// Any password check (login and user-interactive auth), per account and per address.
    PasswordCheck,
    RoomCreation,
    /// Display name and avatar changes (each sends a member event into every joined room).
    ProfileChange,
    Join,
    Invite,
    /// Unauthenticated lookups that cost the server work (public room directory, token
    /// validity, shared-secret nonces), per address.
    Anonymous,
}

/// Every limit the client API applies (Synapse's `rc_*` settings are the model); `None` means
/// unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimits {
    /// Per address.
    pub register: Option<RateLimit>,
    /// Per address.
    pub login: Option<RateLimit>,
    /// Per user: messages, state events, redactions, reports.
    pub message: Option<RateLimit>,
    /// Per account and per address, for every password check.
    pub password: Option<RateLimit>,
    /// Per user.
    pub room_creation: Option<RateLimit>,
    /// Per user.
    pub profile: Option<RateLimit>,
    /// Per user.
    pub join: Option<RateLimit>,
    /// Per inviting user.
    pub invite: Option<RateLimit>,
    /// Per address, for unauthenticated requests.
    pub anonymous: Option<RateLimit>,
}

impl RateLimits {
    /// The limit for an action.
    pub fn of(&self, action: Action) -> Option<RateLimit> {
        match action {
            Action::Register => self.register,
            Action::Login => self.login,
            Action::Message => self.message,
            Action::PasswordCheck => self.password,
            Action::RoomCreation => self.room_creation,
            Action::ProfileChange => self.profile,
            Action::Join => self.join,
            Action::Invite => self.invite,
            Action::Anonymous => self.anonymous,
        }
    }
}

/// The key of a per-address limit (requests without a known address share one bucket). An
/// IPv6 client is keyed by its /64: one host usually has a whole /64 to pick addresses from.
pub fn address_key(ip: Option<std::net::IpAddr>) -> String {
    match ip {
        Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_canonical().to_string(),
        None => String::new(),
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
    /// How long this bucket takes to refill completely (after that it can be forgotten).
    refill: Duration,
}

#[derive(Default)]
struct Buckets {
    map: HashMap<(Action, String), Bucket>,
    /// Map size after the last sweep; the next sweep happens when it has doubled.
    swept_at: usize,
}

pub struct RateLimiter {
    buckets: Mutex<Buckets>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        Self { buckets: Mutex::new(Buckets::default()) }
    }

    /// Takes one token for `(action, key)`; fails with `M_LIMIT_EXCEEDED` and the wait time.
    pub fn check(&self, limit: Option<RateLimit>, action: Action, key: &str) -> Result<(), Error> {
        let Some(limit) = limit else { return Ok(()) };
        if limit.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut guard = self.buckets.lock().expect("rate limiter poisoned");
        let buckets = &mut *guard;
        // Forget buckets that have refilled completely (by their own limit's time), when the map
        // has doubled since the last sweep: amortised O(1) per check.
        if buckets.map.len() > 1_024 && buckets.map.len() >= buckets.swept_at * 2 {
            buckets.map.retain(|_, b| now.duration_since(b.updated) < b.refill);
            buckets.swept_at = buckets.map.len();
        }
        let refill = Duration::from_secs_f64(f64::from(limit.burst) / limit.per_second);
        let bucket = buckets.map.entry((action, key.to_owned())).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            updated: now,
            refill,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / limit.per_second * 1000.0).ceil() as u64;
            Err(Error::new(ErrorKind::LimitExceeded { retry_after_ms: wait.max(1) }, "Too many requests"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_with_retry_hint() {
        let limiter = RateLimiter::new();
        let limit = Some(RateLimit { per_second: 1.0, burst: 2 });
        assert!(limiter.check(limit, Action::Login, "a").is_ok());
        assert!(limiter.check(limit, Action::Login, "a").is_ok());
        let err = limiter.check(limit, Action::Login, "a").unwrap_err();
        match err.kind {
            ErrorKind::LimitExceeded { retry_after_ms } => {
                assert!(retry_after_ms > 0 && retry_after_ms <= 1000)
            }
            other => panic!("{other:?}"),
        }
        // Other keys and actions have their own buckets; no limit means no limiting.
        assert!(limiter.check(limit, Action::Login, "b").is_ok());
        assert!(limiter.check(limit, Action::Message, "a").is_ok());
        for _ in 0..100 {
            assert!(limiter.check(None, Action::Login, "a").is_ok());
        }
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(Some(a)), address_key(Some(b)));
        assert_ne!(address_key(Some(a)), address_key(Some(other)));
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(Some(mapped)), "192.0.2.1");
    }

    #[test]
    fn sweeping_keeps_buckets_that_have_not_refilled() {
        let limiter = RateLimiter::new();
        let slow = Some(RateLimit { per_second: 0.001, burst: 1 });
        assert!(limiter.check(slow, Action::PasswordCheck, "victim").is_ok());
        // Many short-lived keys of a fast limit force sweeps.
        let fast = Some(RateLimit { per_second: 1000.0, burst: 1 });
        for i in 0..5_000 {
            let _ = limiter.check(fast, Action::Message, &format!("k{i}"));
        }
        assert!(limiter.check(slow, Action::PasswordCheck, "victim").is_err(), "the slow bucket survived");
    }
}
