//! Requests to push gateways. A pusher's URL is whatever a client set, so it is a request a user
//! can steer: private, loopback and other internal addresses are refused (on the literal and
//! on every address a name resolves to, through `homeserver_core::net`) unless the server's
//! `[testing] allow_private_destinations` allows them, as Synapse's default IP block list does.
//! TLS is the server's outbound TLS (see [`GatewayPolicy`]). No redirects, no proxy from the
//! environment, bounded time and answer size.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

/// Longest wait for a gateway's answer (a gateway answers at once: it queues for the phone
/// services itself), so a slow one holds a delivery turn only briefly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest gateway answer read (a `rejected` list of one pushkey is tiny).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// What a gateway made of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; the pushkeys it says are no longer valid.
    Delivered { rejected: Vec<String> },
    /// Refused for good (a 4xx other than 408 and 429, or an address push gateways may not
    /// be reached at, as status 0): retrying cannot help.
    Refused(u16),
    /// Could not be delivered now (unreachable, timed out, 5xx, 408, 429): try again later.
    Retry(String),
}

/// The HTTP client for push gateways.
#[derive(Clone)]
pub struct Gateways {
    client: reqwest::Client,
    allow_private: bool,
}

/// Which gateways may be reached, and how they are trusted: the server's outbound TLS (the
/// public roots, plus the configured test CA, or — only with `[testing]
/// insecure_federation_tls` — any certificate) and its `[testing] allow_private_destinations`.
pub struct GatewayPolicy {
    pub allow_private: bool,
    pub tls: rustls::ClientConfig,
}

impl Gateways {
    pub fn new(policy: GatewayPolicy) -> Self {
        let GatewayPolicy { allow_private, tls } = policy;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(PublicOnly { allow_private }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a client with preconfigured TLS builds");
        Gateways { client, allow_private }
    }

    /// Posts `body` to the gateway at `url`.
    pub async fn notify(&self, url: &str, body: &Value) -> Outcome {
        let Ok(parsed) = url::Url::parse(url) else { return Outcome::Refused(0) };
        let literal_ok = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => self.allow_private || homeserver_core::net::is_public(ip.into()),
            Some(url::Host::Ipv6(ip)) => self.allow_private || homeserver_core::net::is_public(ip.into()),
            Some(url::Host::Domain(_)) => true,
            None => false,
        };
        if !literal_ok {
            // Never reachable: retrying for a day would only hold the pusher's queue up.
            return Outcome::Refused(0);
        }
        let response = match self.client.post(parsed).json(body).send().await {
            Ok(response) => response,
            Err(err) => return Outcome::Retry(err.to_string()),
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            408 | 429 | 500.. => return Outcome::Retry(format!("the gateway answered {status}")),
            _ => return Outcome::Refused(status),
        }
        let body = read_limited(response).await;
        let rejected = body
            .get("rejected")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        Outcome::Delivered { rejected }
    }
}

/// The answer's JSON, or null past [`MAX_ANSWER_BYTES`] or when it is not JSON.
async fn read_limited(mut response: reqwest::Response) -> Value {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Value::Null;
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Resolves gateway names, keeping only public addresses (unless allowed).
struct PublicOnly {
    allow_private: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let addrs: Vec<SocketAddr> =
                found.filter(|a| allow_private || homeserver_core::net::is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(
                    format!("{} has no address push gateways may be reached at", name.as_str()).into()
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
