//! Synapse's shared-secret registration, `GET/POST /_synapse/admin/v1/register`, which admin
//! tools and SyTest use to create accounts without user-interactive auth.
//!
//! The client first fetches a nonce, then posts the account with
//! `mac = hex(HMAC-SHA1(secret, nonce \0 username \0 password \0 "admin"|"notadmin" [\0 user_type]))`.
//! Nonces are single-use and expire after a minute. The endpoint is off unless
//! `registration.shared_secret` is set.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::get};
use hmac::{Hmac, Mac};
use homeserver_core::{Error, ErrorKind, ids::random_string, time::now_millis};
use homeserver_http::ApiError;
use homeserver_storage::{StorageError, accounts::NewUser};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    App,
    account::{PreparedLogin, validate_localpart},
    ratelimit::{Action, address_key},
};

const NONCE_LIFETIME: Duration = Duration::from_secs(60);

/// Outstanding nonces. A std mutex: every use is a map insert or remove.
#[derive(Default)]
pub struct Nonces(Mutex<HashMap<String, Instant>>);

/// The most nonces outstanding at once; when full, the oldest is dropped (its client can fetch
/// another).
const MAX_NONCES: usize = 1_000;

impl Nonces {
    fn issue(&self) -> String {
        let nonce = random_string(32);
        let mut map = self.0.lock().expect("nonces poisoned");
        let now = Instant::now();
        map.retain(|_, issued| now.duration_since(*issued) < NONCE_LIFETIME);
        if map.len() >= MAX_NONCES
            && let Some(oldest) = map.iter().min_by_key(|(_, issued)| **issued).map(|(n, _)| n.clone())
        {
            map.remove(&oldest);
        }
        map.insert(nonce.clone(), now);
        nonce
    }

    /// Consumes a nonce; false if it is unknown, used or expired.
    fn take(&self, nonce: &str) -> bool {
        let mut map = self.0.lock().expect("nonces poisoned");
        matches!(map.remove(nonce), Some(issued) if issued.elapsed() < NONCE_LIFETIME)
    }
}

pub fn routes(router: Router<App>) -> Router<App> {
    router.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

fn secret(app: &App) -> Result<&str, Error> {
    app.config
        .registration_shared_secret
        .as_deref()
        .ok_or_else(|| Error::new(ErrorKind::Unknown, "Shared secret registration is not enabled"))
}

/// `GET /_synapse/admin/v1/register`
async fn nonce(
    State(app): State<App>,
    parts: axum::http::request::Parts,
) -> Result<axum::Json<Value>, ApiError> {
    secret(&app)?;
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    app.limit(Action::Anonymous, &address_key(peer))?;
    Ok(axum::Json(json!({ "nonce": app.nonces.issue() })))
}

#[derive(Deserialize)]
struct Body {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
    user_type: Option<String>,
    mac: String,
}

fn expected_mac(secret: &str, body: &Body) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body.nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body.username.as_bytes());
    mac.update(b"\0");
    mac.update(body.password.as_bytes());
    mac.update(b"\0");
    mac.update(if body.admin { b"admin" as &[u8] } else { b"notadmin" });
    if let Some(user_type) = &body.user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    mac.finalize().into_bytes().to_vec()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `POST /_synapse/admin/v1/register`
async fn register(State(app): State<App>, body: Bytes) -> Result<axum::Json<Value>, ApiError> {
    let secret = secret(&app)?;
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        if serde_json::from_slice::<Value>(&body).is_err() {
            Error::new(ErrorKind::NotJson, "request body is not valid JSON")
        } else {
            Error::bad_json(e.to_string())
        }
    })?;
    if !app.nonces.take(&body.nonce) {
        return Err(Error::new(ErrorKind::Unknown, "unrecognised nonce").into());
    }
    let provided = decode_hex(&body.mac).ok_or_else(|| Error::forbidden("HMAC incorrect"))?;
    let expected = expected_mac(secret, &body);
    // Constant-time comparison: no early exit on the first differing byte.
    if provided.len() != expected.len()
        || provided.iter().zip(&expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0
    {
        return Err(Error::forbidden("HMAC incorrect").into());
    }
    let localpart = body.username.to_lowercase();
    let user_id = validate_localpart(&app, &localpart)?;
    crate::account::refuse_claimed(&app, &user_id)?;
    let hash = app.passwords.hash(body.password.clone()).await?;
    let displayname = body.displayname.clone().unwrap_or_else(|| localpart.clone());
    // The account and its first login commit together.
    let login = PreparedLogin::new(None, None);
    let user = NewUser {
        user_id: user_id.as_str(),
        password_hash: Some(&hash),
        is_admin: body.admin,
        displayname: Some(&displayname),
        avatar_url: None,
        now: now_millis() as i64,
    };
    match app.db.register_user(user, None, Some(login.rows(&user_id))).await {
        Ok(()) => {}
        Err(StorageError::Conflict) => {
            return Err(Error::new(ErrorKind::UserInUse, "User ID already taken").into());
        }
        Err(e) => return Err(Error::from(e).into()),
    }
    Ok(axum::Json(json!({
        "user_id": user_id,
        "access_token": login.token,
        "device_id": login.device_id,
        "home_server": app.server_name(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_matches_synapse_reference() {
        // hmac.new(b"secret", b"abc\0alice\0pw\0notadmin", hashlib.sha1).hexdigest()
        let body = Body {
            nonce: "abc".into(),
            username: "alice".into(),
            password: "pw".into(),
            admin: false,
            displayname: None,
            user_type: None,
            mac: String::new(),
        };
        let mac = expected_mac("secret", &body);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "42e32623fe124933c326f9d2d67ff7c617915a10");
        assert_eq!(decode_hex(&hex).unwrap(), mac);
        assert!(decode_hex("zz").is_none());
    }

    #[test]
    fn nonces_are_single_use() {
        let nonces = Nonces::default();
        let n = nonces.issue();
        assert!(nonces.take(&n));
        assert!(!nonces.take(&n));
        assert!(!nonces.take("unknown"));
    }
}
