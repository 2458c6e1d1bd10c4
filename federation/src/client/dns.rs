//! DNS for federation: one caching resolver (the system's nameservers, or `[federation]
//! nameservers`) answers the SRV lookups of server discovery and every address lookup of the
//! HTTPS clients. An SRV answer becomes a *route*: discovery asks for `https://<name>:<port>`,
//! so TLS checks the certificate against the server name as the spec requires, and the route
//! sends the connection to the SRV target's addresses. Routes are keyed by host alone (the
//! HTTP client's resolver never sees the port), so only the client for SRV-found URLs follows
//! them; `.well-known` fetches and names with an explicit port use a client that does not, and
//! reach the host's own addresses whatever SRV lookups other server names caused.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroUsize,
    sync::Mutex,
    time::Instant,
};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::{RData, rdata::SRV},
};
use lru::LruCache;
use rand::Rng as _;

use crate::client::FederationError;

/// The SRV services a Matrix server may be published under, in the order the spec asks for them
/// (`_matrix._tcp` is deprecated but still in use).
const SERVICES: [&str; 2] = ["_matrix-fed._tcp", "_matrix._tcp"];
/// Hosts whose SRV route is remembered at once.
const ROUTES: usize = 10_000;

/// Where an SRV record says a server's federation API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub host: String,
    pub port: u16,
}

/// The federation client's resolver, with the SRV routes discovery chose.
pub struct Dns {
    resolver: TokioResolver,
    /// host named in a URL → (SRV target host whose addresses it connects to, expiry).
    routes: Mutex<LruCache<String, (String, Instant)>>,
}

impl Dns {
    /// A resolver that asks `nameservers` (address and port), or the system's when none are given.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, FederationError> {
        let configured = |servers: Vec<NameServerConfig>| {
            let config = ResolverConfig::from_parts(None, vec![], servers);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        let builder = if nameservers.is_empty() {
            // A machine without resolver settings still reaches IP literals, `localhost` and
            // its hosts file; it should not keep the server from starting.
            TokioResolver::builder(TokioRuntimeProvider::default()).unwrap_or_else(|err| {
                tracing::warn!(%err, "no system DNS configuration; federation resolves no names");
                configured(vec![])
            })
        } else {
            configured(nameservers.iter().map(|addr| nameserver(*addr)).collect())
        };
        let resolver = builder.build().map_err(|e| FederationError::Config(format!("DNS resolver: {e}")))?;
        let routes = Mutex::new(LruCache::new(NonZeroUsize::new(ROUTES).expect("non-zero")));
        Ok(Self { resolver, routes })
    }

    /// The SRV target of `host` (`_matrix-fed._tcp`, then `_matrix._tcp`), remembered as the
    /// route for `host` for as long as the record may be cached. None when neither exists or
    /// the service is published as unavailable (target `.`).
    pub async fn srv(&self, host: &str) -> Option<SrvTarget> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        for service in SERVICES {
            let Ok(lookup) = self.resolver.srv_lookup(format!("{service}.{host}.")).await else {
                continue;
            };
            let records: Vec<&SRV> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(srv),
                    _ => None,
                })
                .collect();
            let Some(chosen) = choose(&records) else { continue };
            let target = chosen.target.to_ascii();
            let target = target.trim_end_matches('.');
            if target.is_empty() {
                break;
            }
            let route = (target.to_ascii_lowercase(), lookup.valid_until());
            self.routes.lock().expect("routes poisoned").put(host, route.clone());
            return Some(SrvTarget { host: route.0, port: chosen.port });
        }
        // No record (any more), or the service published as unavailable: no route either.
        self.routes.lock().expect("routes poisoned").pop(&host);
        None
    }

    /// The addresses a connection to `host` goes to: with `follow_routes`, those of its SRV
    /// target while the route is fresh; otherwise its own A and AAAA records.
    pub async fn addresses(&self, host: &str, follow_routes: bool) -> Result<Vec<IpAddr>, FederationError> {
        let routed = if !follow_routes {
            None
        } else {
            let mut routes = self.routes.lock().expect("routes poisoned");
            match routes.get(&host.to_ascii_lowercase()) {
                Some((target, until)) if *until > Instant::now() => Some(target.clone()),
                _ => None,
            }
        };
        let name = routed.as_deref().unwrap_or(host);
        let lookup = self
            .resolver
            .lookup_ip(format!("{}.", name.trim_end_matches('.')))
            .await
            .map_err(|e| FederationError::Discovery(format!("{name}: {e}")))?;
        Ok(lookup.iter().collect())
    }
}

/// A nameserver asked over UDP, and over TCP for long answers.
fn nameserver(addr: SocketAddr) -> NameServerConfig {
    let connection = |mut config: ConnectionConfig| {
        config.port = addr.port();
        config
    };
    NameServerConfig::new(
        addr.ip(),
        true,
        vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())],
    )
}

/// RFC 2782's choice: the lowest priority, then at random in proportion to weight (records of
/// weight 0 only get a chance when all of that priority have weight 0).
fn choose<'a>(records: &[&'a SRV]) -> Option<&'a SRV> {
    let best = records.iter().map(|r| r.priority).min()?;
    let candidates: Vec<&SRV> = records.iter().copied().filter(|r| r.priority == best).collect();
    let total: u32 = candidates.iter().map(|r| u32::from(r.weight)).sum();
    if total == 0 {
        return candidates.first().copied();
    }
    let mut pick = rand::rng().random_range(0..total);
    for candidate in &candidates {
        let weight = u32::from(candidate.weight);
        if pick < weight {
            return Some(candidate);
        }
        pick -= weight;
    }
    candidates.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::Name;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SRV {
        SRV::new(priority, weight, port, Name::from_ascii(target).unwrap())
    }

    #[test]
    fn the_lowest_priority_wins_and_weights_share_it() {
        let (low, high, heavy) = (srv(20, 100, 1, "a."), srv(10, 0, 2, "b."), srv(10, 1000, 3, "c."));
        assert!(choose(&[]).is_none());
        assert_eq!(choose(&[&low, &high]).unwrap().port, 2);
        let mut ports = std::collections::HashSet::new();
        for _ in 0..200 {
            ports.insert(choose(&[&low, &high, &heavy]).unwrap().port);
        }
        // Weight 0 next to weight 1000 is (almost) never picked; the other priority never is.
        assert!(ports.contains(&3) && !ports.contains(&1), "{ports:?}");
    }
}
