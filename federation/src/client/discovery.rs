//! Server discovery: from a server name to the base URL its federation API answers on, as the
//! spec's resolution steps say — an IP literal or an explicit port is used as is; otherwise
//! `https://<host>/.well-known/matrix/server` may delegate to another host (cached for what its
//! `Cache-Control` says, 24 hours by default, at most 48; a failed lookup for an hour); a host
//! without a port (delegated or not) is looked up as an SRV record, `_matrix-fed._tcp` then
//! `_matrix._tcp` (see [`Dns`] for how the connection reaches the target while TLS checks the
//! server's own name); otherwise port 8448.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lru::LruCache;
use ruma::ServerName;
use serde::Deserialize;

use crate::client::{FederationError, dns::Dns, guard::url_allowed};

const DEFAULT_PORT: u16 = 8448;
/// Longest `.well-known` response read.
const MAX_WELL_KNOWN_BYTES: usize = 50 * 1024;
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CACHE: Duration = Duration::from_secs(24 * 3600);
const MAX_CACHE: Duration = Duration::from_secs(48 * 3600);
const FAILURE_CACHE: Duration = Duration::from_secs(3600);
const CACHED_NAMES: usize = 10_000;

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

/// Where a server's federation API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port`.
    pub base: String,
    /// Found through an SRV record: the connection must follow [`Dns`]'s route for the host.
    pub routed: bool,
}

/// Resolves server names to base URLs, caching `.well-known` answers.
pub struct Discovery {
    allow_private: bool,
    dns: Arc<Dns>,
    /// host → (delegated `host[:port]`, or None when there is no delegation; expiry).
    well_known: Mutex<LruCache<String, (Option<String>, Instant)>>,
}

impl Discovery {
    pub fn new(allow_private: bool, dns: Arc<Dns>) -> Self {
        let cache = LruCache::new(NonZeroUsize::new(CACHED_NAMES).expect("non-zero"));
        Self { allow_private, dns, well_known: Mutex::new(cache) }
    }

    /// Where a server's federation API answers. `direct` is the client that does not follow
    /// SRV routes: `.well-known` is fetched with it.
    pub async fn endpoint(
        &self,
        direct: &reqwest::Client,
        server: &ServerName,
    ) -> Result<Endpoint, FederationError> {
        let host = server.host();
        if is_address(host) || server.port().is_some() {
            return self.checked(server.as_str(), host, server.port().unwrap_or(DEFAULT_PORT), false);
        }
        // A delegation that is not a valid server name counts as none, as the spec says.
        let delegated = self
            .delegation(direct, host)
            .await
            .and_then(|d| <&ServerName>::try_from(d.as_str()).ok().map(ToOwned::to_owned));
        let name = delegated.as_deref().unwrap_or(server);
        if is_address(name.host()) || name.port().is_some() {
            return self.checked(name.as_str(), name.host(), name.port().unwrap_or(DEFAULT_PORT), false);
        }
        match self.dns.srv(name.host()).await {
            Some(target) => self.checked(name.as_str(), name.host(), target.port, true),
            None => self.checked(name.as_str(), name.host(), DEFAULT_PORT, false),
        }
    }

    /// `https://host:port`, refused if the host is (in any spelling) an address the guard
    /// forbids.
    fn checked(
        &self,
        server: &str,
        host: &str,
        port: u16,
        routed: bool,
    ) -> Result<Endpoint, FederationError> {
        let base = format!("https://{host}:{port}");
        let url = url::Url::parse(&base).map_err(|e| FederationError::Discovery(format!("{server}: {e}")))?;
        if !url_allowed(&url, self.allow_private) {
            return Err(FederationError::Refused(format!("{server} is not a public address")));
        }
        Ok(Endpoint { base, routed })
    }

    /// The host a server name delegates to, from the cache or its `.well-known` document.
    async fn delegation(&self, http: &reqwest::Client, host: &str) -> Option<String> {
        if let Some((delegated, until)) = self.well_known.lock().expect("discovery poisoned").get(host)
            && *until > Instant::now()
        {
            return delegated.clone();
        }
        let (delegated, lifetime) = match fetch_well_known(http, host).await {
            Some((delegated, lifetime)) => (Some(delegated), lifetime),
            None => (None, FAILURE_CACHE),
        };
        let until = Instant::now() + lifetime;
        self.well_known.lock().expect("discovery poisoned").put(host.to_owned(), (delegated.clone(), until));
        delegated
    }
}

/// Whether a host is an address rather than a name, in any spelling the URL parser accepts.
fn is_address(host: &str) -> bool {
    matches!(
        url::Url::parse(&format!("https://{host}/")).ok().and_then(|u| u.host().map(|h| h.to_owned())),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
    )
}

async fn fetch_well_known(http: &reqwest::Client, host: &str) -> Option<(String, Duration)> {
    let url = format!("https://{host}/.well-known/matrix/server");
    let response = http.get(url).timeout(WELL_KNOWN_TIMEOUT).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let lifetime = cache_lifetime(response.headers().get(http::header::CACHE_CONTROL));
    let body = crate::client::read_limited(response, MAX_WELL_KNOWN_BYTES).await.ok()?;
    let doc: WellKnown = serde_json::from_slice(&body).ok()?;
    Some((doc.server, lifetime))
}

/// How long a `.well-known` answer may be kept, from its `Cache-Control` header.
fn cache_lifetime(header: Option<&http::HeaderValue>) -> Duration {
    let max_age = header.and_then(|v| v.to_str().ok()).and_then(|v| {
        v.split(',').find_map(|d| d.trim().strip_prefix("max-age=").and_then(|s| s.parse::<u64>().ok()))
    });
    max_age.map_or(DEFAULT_CACHE, Duration::from_secs).min(MAX_CACHE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_explicit_ports_need_no_lookup() {
        let tls = crate::client::tls::client_config(None, false).unwrap();
        let http = reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap();
        let dns = Arc::new(Dns::new(&[]).unwrap());
        let open = Discovery::new(true, dns.clone());
        let name = |s: &str| <&ServerName>::try_from(s).unwrap().to_owned();
        assert_eq!(
            open.endpoint(&http, &name("127.0.0.1:8481")).await.unwrap().base,
            "https://127.0.0.1:8481"
        );
        assert_eq!(open.endpoint(&http, &name("[::1]")).await.unwrap().base, "https://[::1]:8448");
        assert_eq!(
            open.endpoint(&http, &name("example.test:443")).await.unwrap(),
            Endpoint { base: "https://example.test:443".into(), routed: false }
        );
        let guarded = Discovery::new(false, dns);
        assert!(matches!(
            guarded.endpoint(&http, &name("127.0.0.1:8481")).await,
            Err(FederationError::Refused(_))
        ));
        assert!(matches!(guarded.endpoint(&http, &name("10.0.0.1")).await, Err(FederationError::Refused(_))));
        for sneaky in ["2130706433", "127.1", "0x7f.1"] {
            assert!(
                matches!(guarded.endpoint(&http, &name(sneaky)).await, Err(FederationError::Refused(_))),
                "{sneaky}"
            );
        }
    }

    #[test]
    fn cache_lifetimes_are_bounded() {
        let header = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(cache_lifetime(None), DEFAULT_CACHE);
        assert_eq!(cache_lifetime(Some(&header("public, max-age=600"))), Duration::from_secs(600));
        assert_eq!(cache_lifetime(Some(&header("max-age=9999999"))), MAX_CACHE);
    }
}
