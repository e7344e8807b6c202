//! The client's address: the socket peer, unless the peer is a trusted proxy; then the
//! right-most `X-Forwarded-For` entry that is not a trusted proxy. An untrusted peer's
//! `X-Forwarded-For` is ignored, so spoofing it changes nothing.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The address a request's controls apply to. Put in the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// An `X-Forwarded-For` entry: a bare address, `[v6]` or `[v6]:port` / `v4:port`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// See the module docs.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        match v.to_str() {
            Ok(s) => entries.extend(s.split(',')),
            // An unreadable header from a trusted proxy: trust none of it.
            Err(_) => return peer,
        }
    }
    let mut client = peer;
    for e in entries.iter().rev() {
        match parse_entry(e) {
            Some(ip) => {
                client = ip.to_canonical();
                if !trusted(client, proxies) {
                    return client;
                }
            }
            // Garbage: stop at the last address a trusted hop vouched for.
            None => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(xff: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in xff {
            m.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_xff_says() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h(&["1.2.3.4"]), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h(&["1.2.3.4"]), &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_entry() {
        let proxies: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        // The client forged the left-most entry; the right-most untrusted one counts.
        let hs = h(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &hs, &proxies), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h(&["[2001:db9::1]:443"]), &proxies),
            ip("2001:db9::1")
        );
        // All entries trusted: the left-most.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h(&["10.2.2.2, 10.3.3.3"]), &proxies),
            ip("10.2.2.2")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.1"), &h(&[]), &proxies), ip("10.0.0.1"));
        // Garbage stops the walk at the last vouched-for address.
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                &h(&["1.1.1.1, nonsense, 10.9.9.9"]),
                &proxies
            ),
            ip("10.9.9.9")
        );
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h(&["192.0.2.1"]), &proxies),
            ip("192.0.2.1")
        );
    }
}
