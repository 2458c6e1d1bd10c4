//! Outbound destinations other servers cannot steer us to: private, loopback, link-local and
//! other non-public addresses are refused unless `[testing] allow_private_destinations` is on.
//! The check runs on every address a name resolves to (the DNS resolver of the HTTP client) and
//! on IP literals before a request is made, so a server name, a `.well-known` delegation or a
//! DNS answer cannot reach the internal network (SSRF).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::client::dns::Dns;

pub use homeserver_core::net::is_public;

/// Whether a URL may be requested: https, and a host that is a name (checked again when it
/// resolves) or an allowed address. The host is read as the URL parser normalises it, so
/// numeric spellings such as `2130706433` or `0x7f.1` are caught as the addresses they are.
pub fn url_allowed(url: &url::Url, allow_private: bool) -> bool {
    if url.scheme() != "https" {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => allow_private || is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => allow_private || is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// Redirects are followed (at most five) only to URLs [`url_allowed`] accepts.
pub fn redirect_policy(allow_private: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else if url_allowed(attempt.url(), allow_private) {
            attempt.follow()
        } else {
            attempt.error("redirect to a destination federation may not reach")
        }
    })
}

/// Resolves names for a federation client through [`Dns`] (following SRV routes if
/// `follow_routes`), dropping addresses that are not allowed.
#[derive(Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
    pub follow_routes: bool,
    pub dns: Arc<Dns>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = this
                .dns
                .addresses(&host, this.follow_routes)
                .await?
                .into_iter()
                .filter(|ip| this.allow_private || is_public(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address federation may reach").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_host_spellings_are_caught_as_addresses() {
        for url in [
            "https://2130706433:8448/",
            "https://127.1/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://[::ffff:7f00:1]/",
            "http://example.com/",
        ] {
            assert!(!url_allowed(&url::Url::parse(url).unwrap(), false), "{url}");
        }
        assert!(url_allowed(&url::Url::parse("https://example.com:8448/").unwrap(), false));
        assert!(url_allowed(&url::Url::parse("https://127.0.0.1:8448/").unwrap(), true));
    }
}
