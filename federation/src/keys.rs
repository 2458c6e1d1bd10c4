//! Other servers' verify keys: the keys that check their requests' `X-Matrix` signatures and
//! their events' signatures.
//!
//! A key is looked up in memory, then in the database, then fetched: from the server itself
//! (`GET /_matrix/key/v2/server`), then from the configured notaries (`POST
//! /_matrix/key/v2/query`, none by default). A response is accepted only if it names the server
//! asked about and is signed by the keys it lists (a notary's copy also by the notary, with a key
//! we hold for it); its `valid_until_ts` is capped at seven days from now, as the spec asks, and
//! a key is usable for a signature made up to then (an old key up to its `expired_ts`). Fetched
//! responses are stored whole, so this server can serve them again as a notary. A server whose
//! keys could not be fetched is not asked again for a minute, so a flood of requests naming it
//! does not become a flood of fetches.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroUsize,
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use homeserver_core::{Error, keys::ServerKey, time::now_millis};
use homeserver_storage::{Db, server_keys::ServerKeyRow};
use lru::LruCache;
use ruma::{
    CanonicalJsonObject, OwnedServerName, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{ServerSigningKeys, get_remote_server_keys_batch, get_server_keys},
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet},
};

use crate::client::FederationClient;

/// How far ahead a fetched key may be trusted, whatever its server says.
const MAX_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a server whose keys could not be fetched is left alone.
const FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// Servers whose fetch failures are remembered.
const FAILURES_KEPT: usize = 10_000;

/// One verify key and how long it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownKey {
    key: String,
    valid_until_ts: i64,
    expired_ts: Option<i64>,
}

impl KnownKey {
    /// Whether a signature made at `ts` (ms) may be checked with this key.
    fn usable_at(&self, ts: i64) -> bool {
        match self.expired_ts {
            Some(expired) => ts < expired,
            None => ts <= self.valid_until_ts,
        }
    }
}

/// The key store of one server process.
pub struct KeyStore {
    db: Db,
    own: ServerKey,
    client: FederationClient,
    notaries: Vec<OwnedServerName>,
    known: RwLock<HashMap<OwnedServerName, HashMap<String, KnownKey>>>,
    failures: Mutex<LruCache<OwnedServerName, Instant>>,
}

impl KeyStore {
    pub fn new(db: Db, own: ServerKey, client: FederationClient, notaries: Vec<OwnedServerName>) -> Self {
        let failures = Mutex::new(LruCache::new(NonZeroUsize::new(FAILURES_KEPT).expect("non-zero")));
        Self { db, own, client, notaries, known: RwLock::new(HashMap::new()), failures }
    }

    /// The verify key `key_id` of `server` usable for a signature made at `ts` (ms), fetching it
    /// if it is not known; `None` if no such key can be found.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        ts: i64,
    ) -> Result<Option<Base64>, Error> {
        if server == self.own.server_name() {
            let own = (key_id == self.own.key_id()).then(|| self.own.public_key_base64());
            return Ok(own.and_then(|k| Base64::parse(k).ok()));
        }
        if let Some(key) = self.remembered(server, key_id, ts).await? {
            return Ok(Some(key));
        }
        if self.recently_failed(server) {
            return Ok(None);
        }
        self.fetch(server, key_id, ts).await;
        self.remembered(server, key_id, ts).await
    }

    /// The key set of `server` usable at `ts`, for checking a signed object (an event).
    pub async fn key_set(
        &self,
        server: &ServerName,
        key_ids: &[String],
        ts: i64,
    ) -> Result<PublicKeySet, Error> {
        let mut set = PublicKeySet::new();
        for key_id in key_ids {
            if let Some(key) = self.verify_key(server, key_id, ts).await? {
                set.insert(key_id.clone(), key);
            }
        }
        Ok(set)
    }

    /// A key from memory or, failing that, the database (which then fills memory).
    async fn remembered(&self, server: &ServerName, key_id: &str, ts: i64) -> Result<Option<Base64>, Error> {
        let in_memory = {
            let known = self.known.read().expect("key store poisoned");
            known.get(server).map(|keys| keys.get(key_id).cloned())
        };
        let key = match in_memory {
            Some(key) => key,
            None => {
                let rows = self.db.server_keys(server.as_str()).await?;
                self.remember(server, &rows);
                rows.into_iter().find(|r| r.key_id == key_id).map(|r| known_key(&r))
            }
        };
        Ok(key.filter(|k| k.usable_at(ts)).and_then(|k| Base64::parse(k.key).ok()))
    }

    fn remember(&self, server: &ServerName, rows: &[ServerKeyRow]) {
        let mut known = self.known.write().expect("key store poisoned");
        let keys = known.entry(server.to_owned()).or_default();
        for row in rows {
            let key = known_key(row);
            match keys.get(&row.key_id) {
                Some(old) if old.valid_until_ts > key.valid_until_ts => {}
                _ => {
                    keys.insert(row.key_id.clone(), key);
                }
            }
        }
    }

    fn recently_failed(&self, server: &ServerName) -> bool {
        let mut failures = self.failures.lock().expect("key store poisoned");
        failures.get(server).is_some_and(|at| at.elapsed() < FAILURE_BACKOFF)
    }

    /// Fetches the server's keys directly, then from the notaries, until one answer holds a key
    /// `key_id` usable at `ts`. Failures are logged and remembered, not returned: the caller
    /// only learns that the key is unknown.
    async fn fetch(&self, server: &ServerName, key_id: &str, ts: i64) {
        let usable =
            |rows: &[ServerKeyRow]| rows.iter().any(|r| r.key_id == key_id && known_key(r).usable_at(ts));
        match self.fetch_direct(server).await {
            Ok(rows) if usable(&rows) => return,
            Ok(_) => tracing::debug!(%server, key_id, "the server does not list the key"),
            Err(err) => tracing::info!(%server, error = %err, "could not fetch the server's keys"),
        }
        for notary in &self.notaries {
            match self.fetch_from_notary(notary, server, key_id).await {
                Ok(rows) if usable(&rows) => return,
                Ok(_) => {}
                Err(err) => tracing::info!(%server, %notary, error = %err, "notary could not give the keys"),
            }
        }
        self.failures.lock().expect("key store poisoned").put(server.to_owned(), Instant::now());
    }

    async fn fetch_direct(&self, server: &ServerName) -> Result<Vec<ServerKeyRow>, String> {
        let response = self
            .client
            .send_unsigned(server, get_server_keys::v2::Request::new())
            .await
            .map_err(|e| e.to_string())?;
        let rows = accept_response(server, &response.server_key, None)?;
        self.store(server, &rows).await?;
        Ok(rows)
    }

    async fn fetch_from_notary(
        &self,
        notary: &ServerName,
        server: &ServerName,
        key_id: &str,
    ) -> Result<Vec<ServerKeyRow>, String> {
        // The notary's own keys, to check its signature on what it relays.
        let notary_keys: PublicKeySet = match self.fetch_direct(notary).await {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| Some((r.key_id.clone(), Base64::parse(&r.public_key).ok()?)))
                .collect(),
            Err(err) => return Err(format!("notary keys: {err}")),
        };
        let key_id = OwnedServerSigningKeyId::try_from(key_id).map_err(|e| e.to_string())?;
        let criteria = BTreeMap::from([(key_id, get_remote_server_keys_batch::v2::QueryCriteria::default())]);
        let request =
            get_remote_server_keys_batch::v2::Request::new(BTreeMap::from([(server.to_owned(), criteria)]));
        let response = self.client.send_unsigned(notary, request).await.map_err(|e| e.to_string())?;
        let mut accepted = Vec::new();
        for raw in &response.server_keys {
            accepted.extend(accept_response(server, raw, Some((notary, &notary_keys)))?);
        }
        self.store(server, &accepted).await?;
        Ok(accepted)
    }

    async fn store(&self, server: &ServerName, rows: &[ServerKeyRow]) -> Result<(), String> {
        self.db.store_server_keys(rows).await.map_err(|e| e.to_string())?;
        self.remember(server, rows);
        Ok(())
    }

    /// The stored key responses of `server` (for serving as a notary), newest first.
    pub async fn stored_responses(&self, server: &ServerName) -> Result<Vec<(i64, String)>, Error> {
        let rows = self.db.server_keys(server.as_str()).await?;
        let mut responses: Vec<(i64, String)> =
            rows.into_iter().map(|r| (r.valid_until_ts, r.response_json)).collect();
        responses.sort_by(|a, b| b.cmp(a));
        responses.dedup_by(|a, b| a.1 == b.1);
        Ok(responses)
    }

    /// Fetches `server`'s keys directly (for serving as a notary when nothing stored is valid
    /// long enough); errors only say why nothing new is known.
    pub async fn refresh(&self, server: &ServerName) -> Result<(), String> {
        if self.recently_failed(server) {
            return Err("recently unreachable".into());
        }
        let result = self.fetch_direct(server).await.map(|_| ());
        if result.is_err() {
            self.failures.lock().expect("key store poisoned").put(server.to_owned(), Instant::now());
        }
        result
    }

    pub fn own_key(&self) -> &ServerKey {
        &self.own
    }
}

fn known_key(row: &ServerKeyRow) -> KnownKey {
    KnownKey { key: row.public_key.clone(), valid_until_ts: row.valid_until_ts, expired_ts: row.expired_ts }
}

/// Checks a key response for `server` and turns it into rows: it must name the server, be signed
/// by the keys it lists (and, from a notary, by the notary too).
fn accept_response(
    server: &ServerName,
    raw: &Raw<ServerSigningKeys>,
    notary: Option<(&ServerName, &PublicKeySet)>,
) -> Result<Vec<ServerKeyRow>, String> {
    let keys: ServerSigningKeys = raw.deserialize().map_err(|e| format!("malformed key response: {e}"))?;
    if keys.server_name != server {
        return Err(format!("the response is about {}, not {server}", keys.server_name));
    }
    let object: CanonicalJsonObject =
        serde_json::from_str(raw.json().get()).map_err(|e| format!("malformed key response: {e}"))?;
    let own: PublicKeySet = keys.verify_keys.iter().map(|(id, k)| (id.to_string(), k.key.clone())).collect();
    if own.is_empty() {
        return Err("the response lists no verify key".into());
    }
    let mut map = PublicKeyMap::from([(server.to_string(), own)]);
    if let Some((notary, notary_keys)) = notary {
        map.insert(notary.to_string(), notary_keys.clone());
    }
    ruma::signatures::verify_json(&map, &object)
        .map_err(|e| format!("bad signature on key response: {e}"))?;
    let now = now_millis() as i64;
    let cap = now + MAX_KEY_VALIDITY.as_millis() as i64;
    let valid_until = u64::from(keys.valid_until_ts.get()) as i64;
    let response_json = raw.json().get().to_owned();
    let row = |key_id: &OwnedServerSigningKeyId, key: &Base64, expired: Option<i64>| ServerKeyRow {
        server_name: server.to_string(),
        key_id: key_id.to_string(),
        public_key: key.encode(),
        valid_until_ts: valid_until.min(cap),
        expired_ts: expired,
        fetched_ts: now,
        response_json: response_json.clone(),
    };
    let mut rows: Vec<ServerKeyRow> = keys.verify_keys.iter().map(|(id, k)| row(id, &k.key, None)).collect();
    for (id, old) in &keys.old_verify_keys {
        rows.push(row(id, &old.key, Some(u64::from(old.expired_ts.get()) as i64)));
    }
    Ok(rows)
}
