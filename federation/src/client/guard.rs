//! Outbound destinations other servers cannot steer us to: private, loopback, link-local and
//! other non-public addresses are refused unless `[testing] allow_private_destinations` is on.
//! The check runs on every address a name resolves to (the DNS resolver of the HTTP client) and
//! on IP literals before a request is made, so a server name, a `.well-known` delegation or a
//! DNS answer cannot reach the internal network (SSRF).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::client::dns::Dns;

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4-compatible (`::a.b.c.d`) addresses carry an IPv4 address the network may route.
    if s[..6].iter().all(|x| *x == 0) && !ip.is_loopback() && !ip.is_unspecified() {
        return is_public_v4(ip.to_ipv4().expect("six zero segments"));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0] == 0x2002 // 6to4: wraps any IPv4 address
        || (s[0] == 0x0064 && s[1] == 0xff9b)) // NAT64: wraps any IPv4 address
}

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
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["64:ff9b::a00:1", "2002:7f00:1::", "::127.0.0.1", "fec0::1", "192.0.0.8"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

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
