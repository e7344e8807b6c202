//! Where the vault may connect to on a client's behalf: the address rules shared by
//! webhook deliveries and relay destinations. A destination that is, or resolves to, a
//! loopback, private, link-local (cloud metadata included), shared, reserved, multicast
//! or documentation address is not public; only loopback is ever let through, and only
//! where the caller says so (dev and test deployments, test-only destinations).

use std::net::{IpAddr, SocketAddr};

/// Whether an address is a public unicast destination (not loopback, private,
/// link-local (cloud metadata included), shared, reserved, multicast or documentation).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let first = seg.first().copied().unwrap_or(0);
            // NAT64 (64:ff9b::/96) embeds an IPv4 address.
            if first == 0x64 && seg.get(1) == Some(&0xff9b) {
                let o = v6.octets();
                let v4 = std::net::Ipv4Addr::new(
                    o.get(12).copied().unwrap_or(0),
                    o.get(13).copied().unwrap_or(0),
                    o.get(14).copied().unwrap_or(0),
                    o.get(15).copied().unwrap_or(0),
                );
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && seg.get(1) == Some(&0x0db8))
                || first == 0)
        }
    }
}

/// Whether an address may be connected to: public, or loopback where `loopback` allows
/// it. An IPv4-mapped loopback counts as loopback.
pub fn allowed(ip: IpAddr, loopback: bool) -> bool {
    is_public(ip) || (loopback && ip.to_canonical().is_loopback())
}

/// Whether a URL host is loopback by its form (`127.0.0.0/8`, `::1`, `localhost`).
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

/// Whether a DNS name is reserved for the local host (RFC 6761: `localhost` and every
/// name under it), whatever a resolver answers for it.
pub fn is_local_name(name: &str) -> bool {
    let d = name.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost" || d.ends_with(".localhost")
}

/// Resolves a name now. `None` if it does not resolve (or resolves to nothing).
pub async fn resolve(name: &str, port: u16) -> Option<Vec<SocketAddr>> {
    match tokio::net::lookup_host((name, port)).await {
        Ok(addrs) => Some(addrs.collect::<Vec<_>>()).filter(|a| !a.is_empty()),
        Err(_) => None,
    }
}

/// Whether every address is allowed (see [`allowed`]). Any other answer refuses the
/// whole name: a resolver that mixes public and private answers (DNS rebinding) must
/// not get the private one connected to.
pub fn all_allowed(addrs: &[SocketAddr], loopback: bool) -> bool {
    addrs.iter().all(|a| allowed(a.ip(), loopback))
}

/// The resolver of the vault's outbound HTTP clients (webhook deliveries, the relay):
/// resolves when a connection is opened and hands reqwest only allowed addresses (see
/// [`all_allowed`]), so every connection goes to an address checked when it was made.
/// reqwest does not ask a resolver about IP literals: callers check those themselves.
pub struct CheckedResolver {
    /// Whether loopback is allowed (dev deployments, test-only destinations).
    pub loopback: bool,
}

/// The error a [`CheckedResolver`] gives for a refused name (found in a reqwest
/// error's sources to classify the failure).
#[derive(Debug)]
pub struct RefusedAddress;

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("destination address not allowed")
    }
}

impl std::error::Error for RefusedAddress {}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let loopback = self.loopback;
        Box::pin(async move {
            let refused = || Box::new(RefusedAddress) as Box<dyn std::error::Error + Send + Sync>;
            if is_local_name(&host) && !loopback {
                return Err(refused());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // Any refused answer refuses the whole name (DNS rebinding).
            if addrs.is_empty() || !all_allowed(&addrs, loopback) {
                return Err(refused());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_where_allowed() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let private: IpAddr = "10.1.2.3".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        assert!(!allowed(lo, false) && allowed(lo, true));
        assert!(!allowed(mapped, false) && allowed(mapped, true));
        for ip in [private, metadata] {
            assert!(!allowed(ip, false) && !allowed(ip, true), "{ip}");
        }
        assert!(allowed(public, false));
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert!(!all_allowed(
            &[a("93.184.216.34:443"), a("10.0.0.1:443")],
            true
        ));
        assert!(all_allowed(
            &[a("93.184.216.34:443"), a("127.0.0.1:443")],
            true
        ));
    }

    #[test]
    fn local_names() {
        for n in ["localhost", "LOCALHOST.", "a.localhost", "x.y.localhost"] {
            assert!(is_local_name(n), "{n}");
        }
        for n in ["localhost.example", "mylocalhost", "example.com"] {
            assert!(!is_local_name(n), "{n}");
        }
    }
}
