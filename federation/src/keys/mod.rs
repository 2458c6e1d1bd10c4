//! Other servers' verify keys: the keys that check their requests' `X-Matrix` signatures and
//! their events' signatures.
//!
//! A key is looked up in memory, then in the database, then fetched: from the server itself
//! (`GET /_matrix/key/v2/server`), then from the configured notaries (`POST
//! /_matrix/key/v2/query`, none by default); [`response`] checks what comes back. A key is
//! usable for an event signed up to its `valid_until_ts` (an old key up to its `expired_ts`),
//! and for a request only if it is current and valid now. Fetched responses are stored whole, so
//! this server can serve them again as a notary. One fetch per server runs at a time; a server
//! that could not be reached is not asked again for a minute, one that answered without a key is
//! not asked for that key again for a minute, so a flood of requests naming it does not become a
//! flood of fetches, nor can made-up key ids cut a server off.

mod response;

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroUsize,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use homeserver_core::{Error, keys::ServerKey, time::now_millis};
use homeserver_rooms::remote::ServerKeys;
use homeserver_storage::{Db, server_keys::ServerKeyRow};
use lru::LruCache;
use ruma::{
    CanonicalJsonObject, OwnedServerName, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{get_remote_server_keys_batch, get_server_keys},
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::PublicKeySet,
};

pub use response::{MAX_KEY_VALIDITY_MS, accept_response};

use crate::client::FederationClient;

/// How long a server that could not be reached (or did not list a key) is left alone.
const FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// How long after fetching a server's keys it is not asked again, whatever key is wanted (so
/// made-up key ids cannot turn this server into an amplifier).
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Key fetches running at once, across all servers.
const CONCURRENT_FETCHES: usize = 16;
/// Key ids looked up per signing server of one event.
const MAX_KEYS_PER_SERVER: usize = 4;
/// Fetches from one server that notary requests may cause per [`NOTARY_WINDOW`]: enough for a
/// caller who wants keys valid longer than those stored to be answered afresh (as Synapse
/// does), too few for anyone to turn this notary into a flood of requests to that server.
const NOTARY_FETCHES: u32 = 10;
/// Notary-driven fetches per window across all servers, and at once: many made-up server
/// names cannot add up to a flood either, nor take the fetch slots events need.
const NOTARY_FETCHES_TOTAL: u32 = 120;
const NOTARY_CONCURRENT: usize = 4;
const NOTARY_WINDOW: Duration = Duration::from_secs(60);
/// Failures and fetch locks remembered.
const REMEMBERED: usize = 10_000;

/// Whether a notary window `(start, fetches)` has a fetch left of `limit`, starting a new window
/// when the old one is over.
fn has_room(window: &mut (Instant, u32), now: Instant, limit: u32) -> bool {
    if now.duration_since(window.0) >= NOTARY_WINDOW {
        *window = (now, 0);
    }
    window.1 < limit
}

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

/// Which signatures a key is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// An event signed at a time: old keys count until they expired.
    EventAt(i64),
    /// A request made now: only a current key, valid now.
    RequestNow,
}

impl Use {
    fn admits(self, key: &KnownKey) -> bool {
        match self {
            Use::EventAt(ts) => key.usable_at(ts),
            Use::RequestNow => key.expired_ts.is_none() && key.usable_at(now_millis() as i64),
        }
    }
}

/// What went wrong last time: the server could not be reached (`None`), or it answered without
/// this key.
type FailureKey = (OwnedServerName, Option<String>);

/// The key store of one server process.
pub struct KeyStore {
    db: Db,
    own: ServerKey,
    client: FederationClient,
    notaries: Vec<OwnedServerName>,
    /// Keys of servers that published some; a server with none gets no entry.
    known: RwLock<HashMap<OwnedServerName, HashMap<String, KnownKey>>>,
    failures: Mutex<LruCache<FailureKey, Instant>>,
    /// When each server's keys were last asked for.
    last_fetch: Mutex<LruCache<OwnedServerName, Instant>>,
    /// Per server: when the current notary window began, and the fetches made in it.
    notary_fetches: Mutex<LruCache<OwnedServerName, (Instant, u32)>>,
    /// The window of all notary-driven fetches, and the slots they run in.
    notary_total: Mutex<(Instant, u32)>,
    notary_slots: tokio::sync::Semaphore,
    /// One fetch per server at a time; callers arriving meanwhile wait and then read its result.
    /// An entry lives while someone holds it.
    fetching: Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
    fetch_slots: tokio::sync::Semaphore,
}

fn lru<K: std::hash::Hash + Eq, V>() -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(NonZeroUsize::new(REMEMBERED).expect("non-zero")))
}

impl KeyStore {
    pub fn new(db: Db, own: ServerKey, client: FederationClient, notaries: Vec<OwnedServerName>) -> Self {
        Self {
            db,
            own,
            client,
            notaries,
            known: RwLock::new(HashMap::new()),
            failures: lru(),
            last_fetch: lru(),
            notary_fetches: lru(),
            notary_total: Mutex::new((Instant::now(), 0)),
            notary_slots: tokio::sync::Semaphore::new(NOTARY_CONCURRENT),
            fetching: Mutex::new(HashMap::new()),
            fetch_slots: tokio::sync::Semaphore::new(CONCURRENT_FETCHES),
        }
    }

    pub fn own_key(&self) -> &ServerKey {
        &self.own
    }

    /// The verify key `key_id` of `server` usable for an event signed at `ts` (ms) — old keys
    /// included until they expired — fetching it if needed; `None` if none can be found.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        ts: i64,
    ) -> Result<Option<Base64>, Error> {
        self.lookup(server, key_id, Use::EventAt(ts)).await
    }

    /// The current key `key_id` of `server`, valid now (for `X-Matrix` request signatures: an
    /// old key never authenticates a request).
    pub async fn request_key(&self, server: &ServerName, key_id: &str) -> Result<Option<Base64>, Error> {
        self.lookup(server, key_id, Use::RequestNow).await
    }

    async fn lookup(&self, server: &ServerName, key_id: &str, usage: Use) -> Result<Option<Base64>, Error> {
        if server == self.own.server_name() {
            let own = (key_id == self.own.key_id()).then(|| self.own.public_key_base64());
            return Ok(own.and_then(|k| Base64::parse(k).ok()));
        }
        if let Some(key) = self.remembered(server, key_id, usage).await? {
            return Ok(Some(key));
        }
        let lock = {
            let mut fetching = self.fetching.lock().expect("key store poisoned");
            fetching.entry(server.to_owned()).or_default().clone()
        };
        let result = {
            let _fetching = lock.lock().await;
            // Someone may have fetched while we waited.
            match self.in_memory(server, key_id, usage) {
                Some(key) => Some(key),
                None if self.recently_failed(server, key_id) || self.recently_fetched(server) => None,
                None => {
                    self.fetch(server, key_id, usage).await;
                    self.in_memory(server, key_id, usage)
                }
            }
        };
        let mut fetching = self.fetching.lock().expect("key store poisoned");
        if Arc::strong_count(&lock) == 2 {
            fetching.remove(server);
        }
        Ok(result)
    }

    fn recently_fetched(&self, server: &ServerName) -> bool {
        let mut last = self.last_fetch.lock().expect("key store poisoned");
        last.get(server).is_some_and(|at| at.elapsed() < REFETCH_AFTER)
    }

    fn in_memory(&self, server: &ServerName, key_id: &str, usage: Use) -> Option<Base64> {
        let known = self.known.read().expect("key store poisoned");
        let key = known.get(server)?.get(key_id)?;
        if usage.admits(key) { Base64::parse(&key.key).ok() } else { None }
    }

    /// A key from memory or, failing that, the database (which then fills memory).
    async fn remembered(
        &self,
        server: &ServerName,
        key_id: &str,
        usage: Use,
    ) -> Result<Option<Base64>, Error> {
        if let Some(key) = self.in_memory(server, key_id, usage) {
            return Ok(Some(key));
        }
        let loaded = self.known.read().expect("key store poisoned").contains_key(server);
        if !loaded {
            let rows = self.db.server_keys(server.as_str()).await?;
            self.remember(server, &rows);
        }
        Ok(self.in_memory(server, key_id, usage))
    }

    fn remember(&self, server: &ServerName, rows: &[ServerKeyRow]) {
        if rows.is_empty() {
            return;
        }
        let mut known = self.known.write().expect("key store poisoned");
        let keys = known.entry(server.to_owned()).or_default();
        for row in rows {
            let key = known_key(row);
            match keys.get_mut(&row.key_id) {
                // A key's validity only grows, but an expiry always applies (the earliest one).
                Some(old) if old.valid_until_ts > key.valid_until_ts => {
                    old.expired_ts = match (old.expired_ts, key.expired_ts) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                _ => {
                    keys.insert(row.key_id.clone(), key);
                }
            }
        }
    }

    fn recently_failed(&self, server: &ServerName, key_id: &str) -> bool {
        let mut failures = self.failures.lock().expect("key store poisoned");
        let recent = |at: &Instant| at.elapsed() < FAILURE_BACKOFF;
        failures.get(&(server.to_owned(), None)).is_some_and(recent)
            || failures.get(&(server.to_owned(), Some(key_id.to_owned()))).is_some_and(recent)
    }

    fn failed(&self, server: &ServerName, key_id: Option<&str>) {
        let key = (server.to_owned(), key_id.map(str::to_owned));
        self.failures.lock().expect("key store poisoned").put(key, Instant::now());
    }

    /// Fetches the server's keys directly, then from the notaries, until one answer holds a key
    /// `key_id` usable as wanted. Failures are logged and remembered, not returned: the caller
    /// only learns that the key is unknown. A server that answered without the key is left
    /// alone for that key only, so naming made-up keys cannot cut a server off.
    async fn fetch(&self, server: &ServerName, key_id: &str, usage: Use) {
        let usable =
            |rows: &[ServerKeyRow]| rows.iter().any(|r| r.key_id == key_id && usage.admits(&known_key(r)));
        let mut reached = false;
        match self.fetch_direct(server).await {
            Ok(rows) if usable(&rows) => return,
            Ok(_) => reached = true,
            Err(err) => tracing::info!(%server, error = %err, "could not fetch the server's keys"),
        }
        for notary in &self.notaries {
            match self.fetch_from_notary(notary, server, key_id).await {
                Ok(rows) if usable(&rows) => return,
                Ok(_) => reached = true,
                Err(err) => tracing::info!(%server, %notary, error = %err, "notary could not give the keys"),
            }
        }
        self.failed(server, if reached { Some(key_id) } else { None });
    }

    async fn fetch_direct(&self, server: &ServerName) -> Result<Vec<ServerKeyRow>, String> {
        let _slot = self.fetch_slots.acquire().await.map_err(|e| e.to_string())?;
        self.last_fetch.lock().expect("key store poisoned").put(server.to_owned(), Instant::now());
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
        // The notary's own current keys, to check its signature on what it relays: from the
        // store when known, fetched otherwise.
        let mut notary_keys = self.current_keys(notary);
        if notary_keys.is_empty() {
            let rows = self.db.server_keys(notary.as_str()).await.map_err(|e| e.to_string())?;
            self.remember(notary, &rows);
            notary_keys = self.current_keys(notary);
        }
        if notary_keys.is_empty() {
            self.fetch_direct(notary).await.map_err(|e| format!("notary keys: {e}"))?;
            notary_keys = self.current_keys(notary);
        }
        let key_id = OwnedServerSigningKeyId::try_from(key_id).map_err(|e| e.to_string())?;
        let criteria = BTreeMap::from([(key_id, get_remote_server_keys_batch::v2::QueryCriteria::default())]);
        let request =
            get_remote_server_keys_batch::v2::Request::new(BTreeMap::from([(server.to_owned(), criteria)]));
        let response = self.client.send_unsigned(notary, request).await.map_err(|e| e.to_string())?;
        let mut accepted = Vec::new();
        for raw in &response.server_keys {
            // A copy about another server than the one asked about is refused, not stored.
            accepted.extend(accept_response(server, raw, Some((notary, &notary_keys)))?);
        }
        self.store(server, &accepted).await?;
        Ok(accepted)
    }

    /// The current keys of a server held in memory, valid now.
    fn current_keys(&self, server: &ServerName) -> PublicKeySet {
        let known = self.known.read().expect("key store poisoned");
        known
            .get(server)
            .into_iter()
            .flatten()
            .filter(|(_, key)| Use::RequestNow.admits(key))
            .filter_map(|(id, key)| Some((id.clone(), Base64::parse(&key.key).ok()?)))
            .collect()
    }

    async fn store(&self, server: &ServerName, rows: &[ServerKeyRow]) -> Result<(), String> {
        self.db.store_server_keys(rows).await.map_err(|e| e.to_string())?;
        self.remember(server, rows);
        Ok(())
    }

    /// The stored key responses of `server` (for serving as a notary) that hold one of
    /// `key_ids` (any key when none are named), newest first.
    pub async fn stored_responses(
        &self,
        server: &ServerName,
        key_ids: &[String],
    ) -> Result<Vec<(i64, String)>, Error> {
        let rows = self.db.server_keys(server.as_str()).await?;
        let mut responses: Vec<(i64, String)> = rows
            .into_iter()
            .filter(|r| key_ids.is_empty() || key_ids.contains(&r.key_id))
            .map(|r| (r.valid_until_ts, r.response_json))
            .collect();
        responses.sort_by(|a, b| b.cmp(a));
        responses.dedup_by(|a, b| a.1 == b.1);
        Ok(responses)
    }

    /// Fetches `server`'s keys directly for a notary request that wants keys valid longer than
    /// those stored, within the server's notary budget. Errors only say why nothing new is
    /// known.
    pub async fn refresh(&self, server: &ServerName) -> Result<(), String> {
        let Ok(_slot) = self.notary_slots.try_acquire() else {
            return Err("as many notary fetches as may run are running".into());
        };
        if !self.notary_budget(server) {
            return Err("fetched often enough this minute".into());
        }
        let result = self.fetch_direct(server).await.map(|_| ());
        if result.is_err() {
            self.failed(server, None);
        }
        result
    }

    /// Whether one more notary-driven fetch from `server` fits its budget (and counts it).
    fn notary_budget(&self, server: &ServerName) -> bool {
        let now = Instant::now();
        let mut total = self.notary_total.lock().expect("key store poisoned");
        let mut fetches = self.notary_fetches.lock().expect("key store poisoned");
        let window = fetches.get_or_insert_mut(server.to_owned(), || (now, 0));
        if !has_room(window, now, NOTARY_FETCHES) || !has_room(&mut total, now, NOTARY_FETCHES_TOTAL) {
            return false;
        }
        window.1 += 1;
        total.1 += 1;
        true
    }

    /// The stored keys of `server`: key id and how long it is valid.
    pub async fn stored_validity(&self, server: &ServerName) -> Result<Vec<(String, i64)>, Error> {
        let rows = self.db.server_keys(server.as_str()).await?;
        Ok(rows.into_iter().map(|r| (r.key_id, r.valid_until_ts)).collect())
    }

    /// Makes sure the keys an event must be verified with are in memory (fetching them if
    /// needed), so the room model can check its signatures: only the servers whose signatures
    /// the spec requires (the sender's, and for restricted joins the authorising server's) —
    /// other signatures anyone may add on the way are ignored — and at most
    /// [`MAX_KEYS_PER_SERVER`] key ids of each.
    pub async fn prefetch_for_event(
        &self,
        pdu: &serde_json::Value,
        rules: &RoomVersionRules,
    ) -> Result<(), Error> {
        let signed_at = pdu.get("origin_server_ts").and_then(serde_json::Value::as_i64).unwrap_or(0);
        let Ok(object) = serde_json::from_value::<CanonicalJsonObject>(pdu.clone()) else { return Ok(()) };
        let Ok(servers) =
            ruma::signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
        else {
            return Ok(());
        };
        for server in servers {
            let key_ids: Vec<String> = pdu
                .get("signatures")
                .and_then(|s| s.get(server.as_str()))
                .and_then(serde_json::Value::as_object)
                .map(|keys| keys.keys().take(MAX_KEYS_PER_SERVER).cloned().collect())
                .unwrap_or_default();
            for key_id in key_ids {
                self.verify_key(&server, &key_id, signed_at).await?;
            }
        }
        Ok(())
    }
}

/// What the room model sees: the keys held in memory, usable at the signature's time. Callers
/// fetch first ([`KeyStore::prefetch_for_event`]), so the actor never waits on the network.
impl ServerKeys for KeyStore {
    fn keys(&self, server: &str, signed_at: i64) -> Option<PublicKeySet> {
        if server == self.own.server_name().as_str() {
            let own = Base64::parse(self.own.public_key_base64()).ok()?;
            return Some(PublicKeySet::from([(self.own.key_id(), own)]));
        }
        let name = <&ServerName>::try_from(server).ok()?;
        let known = self.known.read().expect("key store poisoned");
        let set: PublicKeySet = known
            .get(name)?
            .iter()
            .filter(|(_, key)| key.usable_at(signed_at))
            .filter_map(|(id, key)| Some((id.clone(), Base64::parse(&key.key).ok()?)))
            .collect();
        (!set.is_empty()).then_some(set)
    }
}

fn known_key(row: &ServerKeyRow) -> KnownKey {
    KnownKey { key: row.public_key.clone(), valid_until_ts: row.valid_until_ts, expired_ts: row.expired_ts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_sign_events_until_they_expired_and_never_requests() {
        let now = now_millis() as i64;
        let current = KnownKey { key: String::new(), valid_until_ts: now + 60_000, expired_ts: None };
        let old =
            KnownKey { key: String::new(), valid_until_ts: now + 60_000, expired_ts: Some(now - 1_000) };
        assert!(Use::RequestNow.admits(&current));
        assert!(!Use::RequestNow.admits(&old), "an old key never authenticates a request");
        assert!(Use::EventAt(now - 5_000).admits(&old), "events signed before it expired");
        assert!(!Use::EventAt(now).admits(&old));
        assert!(!Use::EventAt(now + 120_000).admits(&current), "not past its validity");
        let lapsed = KnownKey { key: String::new(), valid_until_ts: now - 1, expired_ts: None };
        assert!(!Use::RequestNow.admits(&lapsed));
    }

    #[test]
    fn notary_fetches_are_budgeted_per_window() {
        let start = Instant::now();
        let mut window = (start, 0);
        for _ in 0..NOTARY_FETCHES {
            assert!(has_room(&mut window, start, NOTARY_FETCHES));
            window.1 += 1;
        }
        assert!(!has_room(&mut window, start + Duration::from_secs(1), NOTARY_FETCHES), "spent");
        assert!(has_room(&mut window, start + NOTARY_WINDOW, NOTARY_FETCHES), "a new window");
        assert_eq!(window.1, 0);
    }
}
