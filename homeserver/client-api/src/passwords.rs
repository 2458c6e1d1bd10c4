//! Password hashing and checking: the one place passwords meet argon2.
//!
//! Every password check (login, and the `m.login.password` stage of user-interactive auth for
//! device deletion, password change, deactivation) goes through [`Passwords::check`], which first
//! takes a token from two rate limits — one per account, one per client address — so guessing
//! is slow whichever endpoint is used. Every hash and check then waits for a slot of a semaphore
//! sized to the machine's cores before running on the blocking pool: argon2id allocates about
//! 19 MiB per call, so memory stays bounded however many requests arrive at once.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use homeserver_core::Error;
use ruma::UserId;
use tokio::sync::Semaphore;

use crate::ratelimit::{Action, RateLimit, RateLimiter};

/// Hashing slots and the limits on password checks.
pub struct Passwords {
    slots: Arc<Semaphore>,
    limit: Option<RateLimit>,
}

impl Passwords {
    /// `limit` applies per account and per client address to every password check.
    pub fn new(limit: Option<RateLimit>) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self { slots: Arc::new(Semaphore::new(cores)), limit }
    }

    /// A hashing slot, owned so it can travel into the blocking task: it is released when the
    /// argon2 run ends, not when the request's future is dropped (a client that disconnects must
    /// not free a slot while its hash still runs).
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.slots.clone().acquire_owned().await.map_err(|_| Error::internal("password hashing stopped"))
    }

    /// Hashes a new password with argon2id.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            hash_blocking(&password)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    /// Whether `password` is `user`'s, given their stored hash. Refused with
    /// `M_LIMIT_EXCEEDED` when the account or the address has guessed too often.
    pub async fn check(
        &self,
        limiter: &RateLimiter,
        user: &UserId,
        client: Option<std::net::IpAddr>,
        password: String,
        hash: String,
    ) -> Result<bool, Error> {
        limiter.check(self.limit, Action::PasswordCheck, &format!("user {user}"))?;
        if let Some(ip) = client {
            limiter.check(self.limit, Action::PasswordCheck, &format!("address {ip}"))?;
        }
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let Ok(parsed) = PasswordHash::new(&hash) else { return false };
            Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))
    }
}

/// Hashes a password with argon2id on the blocking pool, without a slot: for the command line,
/// which hashes one password per process. The server uses [`Passwords::hash`].
pub async fn hash_password(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| Error::internal(e.to_string()))?
}

fn hash_blocking(password: &str) -> Result<String, Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_check_and_guessing_is_limited() {
        let passwords = Passwords::new(Some(RateLimit { per_second: 0.01, burst: 3 }));
        let limiter = RateLimiter::new();
        let user: ruma::OwnedUserId = "@alice:example.org".try_into().unwrap();
        let hash = passwords.hash("secret".into()).await.unwrap();
        let ip = Some("192.0.2.1".parse().unwrap());
        assert!(passwords.check(&limiter, &user, ip, "secret".into(), hash.clone()).await.unwrap());
        assert!(!passwords.check(&limiter, &user, ip, "wrong".into(), hash.clone()).await.unwrap());
        assert!(!passwords.check(&limiter, &user, None, "wrong".into(), hash.clone()).await.unwrap());
        // The account's budget is spent, from any address.
        let err = passwords.check(&limiter, &user, None, "secret".into(), hash.clone()).await.unwrap_err();
        assert!(matches!(err.kind, homeserver_core::ErrorKind::LimitExceeded { .. }));
        // An address that guessed at many accounts is limited too: it has one guess left.
        let other: ruma::OwnedUserId = "@bob:example.org".try_into().unwrap();
        assert!(!passwords.check(&limiter, &other, ip, "x".into(), hash.clone()).await.unwrap());
        let err = passwords.check(&limiter, &other, ip, "x".into(), hash).await.unwrap_err();
        assert!(matches!(err.kind, homeserver_core::ErrorKind::LimitExceeded { .. }));
    }
}
