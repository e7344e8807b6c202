//! Relay destinations (docs/relay.md, "Destinations"): the hosts an operator approved for
//! an account to send card data to, and the one answer the relay asks before it sends:
//! may this account, in this mode, send to this URL, and to which checked address.
//!
//! A destination is a host (lower-cased DNS name or IP literal), a port and a path
//! prefix, optionally with its own CA certificates and optionally for test mode only.
//! Every destination must be public (see [`egress`]): loopback is let through only for a
//! test-only destination or in a dev deployment; private, link-local and metadata
//! addresses never. The rule holds when the list is set and again at send time, when the
//! name is resolved and the connection is pinned to the address that was checked.

mod client;
pub mod inbound;
mod send;

pub use client::{Destination, RelayClients};
pub use send::{
    METHODS, RelayEventObject, RelayRequest, Relayed, escape_for, header_set_by_relay, relay,
};

use crate::service::egress;
use crate::service::{List, Result, ServiceError, object_name, secs};
use crate::state::AppState;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use strongroom_core::Mode;
use strongroom_store::{AuditScope, RelayDestinationRecord, RelayStore};
use utoipa::ToSchema;

/// The most destinations an account may have.
pub const MAX_DESTINATIONS: usize = 50;
/// The longest host (a DNS name's limit).
pub const HOST_MAX: usize = 253;
/// The longest path prefix.
pub const PATH_PREFIX_MAX: usize = 512;
/// The largest `ca_cert_pem`, in bytes.
pub const CA_CERT_MAX: usize = 16 * 1024;
/// The port a destination without one uses.
pub const DEFAULT_PORT: u16 = 443;

/// One destination as an operator gives it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    /// A DNS name (letters, digits, hyphens; lower-cased when stored) or an IP literal
    /// (IPv6 with or without brackets). No scheme, credentials, port or path.
    #[schema(min_length = 1, max_length = 255, pattern = "^[A-Za-z0-9.:\\[\\]-]+$")]
    pub host: String,
    /// 1–65535; default 443.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    /// The path every request to this destination must start with, at a segment
    /// boundary (`/v1` admits `/v1` and `/v1/…`, not `/v10`); default `/` (any path).
    /// Starts with `/`; no `?`, `#`, `%`, `\` or dot segments.
    #[schema(min_length = 1, max_length = 512, pattern = "^/[!-~]*$")]
    pub path_prefix: Option<String>,
    /// PEM `CERTIFICATE`s that anchor the destination's TLS chain instead of the system
    /// roots (a private CA). Certificates only: any other PEM section (a private key)
    /// is refused. At most 16 KiB.
    #[schema(min_length = 1, max_length = 16384)]
    pub ca_cert_pem: Option<String>,
    /// Usable in test mode only; such a destination may be a loopback address.
    pub test_only: Option<bool>,
}

object_name!(
    /// `relay_destination`.
    RelayDestinationObject = "relay_destination"
);

/// An approved relay destination.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RelayDestinationView {
    /// Always `relay_destination`.
    pub object: RelayDestinationObject,
    /// Lower-cased DNS name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: i64,
    /// Path prefix requests must start with (`/`: any path).
    pub path_prefix: String,
    /// The destination's own CA certificates (PEM), if any; otherwise the system roots
    /// verify it.
    pub ca_cert_pem: Option<String>,
    /// Usable in test mode only.
    pub test_only: bool,
    /// When the list holding it was set (Unix seconds).
    pub created_at: i64,
}

impl From<&RelayDestinationRecord> for RelayDestinationView {
    fn from(r: &RelayDestinationRecord) -> Self {
        Self {
            object: RelayDestinationObject::Value,
            host: r.host.clone(),
            port: r.port,
            path_prefix: r.path_prefix.clone(),
            ca_cert_pem: r.ca_cert_pem.clone(),
            test_only: r.test_only,
            created_at: secs(r.created_ms),
        }
    }
}

/// A destination's host, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    fn text(&self) -> String {
        match self {
            Self::Name(n) => n.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

/// Parses a host: an IP literal, or a DNS name of letter-digit-hyphen labels (lower-cased,
/// one trailing dot dropped). A name whose last label is numeric is refused: URL parsers
/// read such names (`1.2.3`, `0x7f.1`) as IPv4 addresses.
fn parse_host(raw: &str) -> Option<Host> {
    if raw.is_empty() || raw.len() > HOST_MAX + 2 {
        return None;
    }
    let unbracketed = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if let Some(v6) = unbracketed {
        return v6
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = raw.parse::<Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    if let Ok(ip) = raw.parse::<Ipv6Addr>() {
        return Some(Host::Ip(IpAddr::V6(ip)));
    }
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if name.is_empty() || name.len() > HOST_MAX {
        return None;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return None;
    }
    let last = labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        return None;
    }
    Some(Host::Name(name))
}

/// Checks a path prefix: starts with `/`, printable ASCII, at most [`PATH_PREFIX_MAX`],
/// and nothing a URL parser would rewrite or a server could read two ways (`?`, `#`,
/// `%`, `\`, `.` or `..` segments, `//`).
fn check_path_prefix(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= PATH_PREFIX_MAX
        && p.bytes().all(|b| (b'!'..=b'~').contains(&b))
        && !p.contains(['?', '#', '%', '\\'])
        && !p.contains("//")
        && !p.split('/').any(|s| s == "." || s == "..")
}

/// Checks `ca_cert_pem`: at most [`CA_CERT_MAX`], PEM `CERTIFICATE` sections only (at
/// least one), each a certificate that can anchor a chain.
fn check_ca(pem: &str) -> bool {
    if pem.is_empty() || pem.len() > CA_CERT_MAX {
        return false;
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0_usize;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section {
            Ok((SectionKind::Certificate, der)) => {
                if roots.add(CertificateDer::from(der)).is_err() {
                    return false;
                }
                n += 1;
            }
            _ => return false,
        }
    }
    // A section the PEM reader does not know (an encrypted key) is skipped by it, so
    // look for key labels too: nothing secret is ever stored as a CA.
    n > 0 && !pem.contains("PRIVATE KEY")
}

/// Whether the relay may connect to loopback for this approved destination.
pub fn loopback_for(state: &AppState, d: &RelayDestinationRecord) -> bool {
    loopback_ok(state, d.test_only)
}

/// Whether a destination may be a loopback address: when it is for test mode only, or
/// in a dev deployment (`strongroom dev`, the same switch that lets webhooks of test
/// mode reach loopback).
fn loopback_ok(state: &AppState, test_only: bool) -> bool {
    test_only || state.config().dev_mode
}

/// Where `host` points now, every address checked: an IP literal must be allowed; a name
/// must not be a local name (unless loopback is allowed) and every address it resolves to
/// must be allowed (`DestinationNotPublic`). `None`: a name that does not resolve now.
/// Registration accepts that (the name is checked again at every send); a send does not.
async fn checked_addrs(host: &Host, port: u16, loopback: bool) -> Result<Option<Vec<SocketAddr>>> {
    let addrs = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(n) if egress::is_local_name(n) && !loopback => {
            return Err(ServiceError::DestinationNotPublic);
        }
        Host::Name(n) => match egress::resolve(n, port).await {
            Some(addrs) => addrs,
            None => return Ok(None),
        },
    };
    if !egress::all_allowed(&addrs, loopback) {
        return Err(ServiceError::DestinationNotPublic);
    }
    Ok(Some(addrs))
}

/// Checks one destination and returns it as stored.
async fn check(
    state: &AppState,
    account_id: &str,
    d: &DestinationInput,
    now_ms: i64,
) -> Result<RelayDestinationRecord> {
    let host = parse_host(&d.host).ok_or(ServiceError::DestinationInvalid)?;
    let port = match d.port {
        None => DEFAULT_PORT,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(ServiceError::DestinationInvalid)?,
    };
    let path_prefix = d.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
    if !check_path_prefix(&path_prefix) {
        return Err(ServiceError::DestinationInvalid);
    }
    if d.ca_cert_pem.as_deref().is_some_and(|p| !check_ca(p)) {
        return Err(ServiceError::DestinationInvalid);
    }
    let test_only = d.test_only.unwrap_or(false);
    checked_addrs(&host, port, loopback_ok(state, test_only)).await?;
    Ok(RelayDestinationRecord {
        account_id: account_id.to_owned(),
        host: host.text(),
        port: i64::from(port),
        path_prefix,
        ca_cert_pem: d.ca_cert_pem.clone(),
        test_only,
        created_ms: now_ms,
    })
}

/// Replaces the account's destinations (an empty list removes them all) in one write,
/// audited with the operator's request scope. Every destination is checked first; one
/// refusal refuses the whole list and nothing is written. Two destinations with the same
/// host, port, path prefix and mode are refused as a duplicate (`DestinationInvalid`).
pub async fn set_destinations(
    state: &AppState,
    scope: &AuditScope,
    account_id: &str,
    destinations: &[DestinationInput],
) -> Result<List<RelayDestinationView>> {
    if destinations.len() > MAX_DESTINATIONS {
        return Err(ServiceError::TooManyDestinations);
    }
    state.accounts().get(account_id).await?;
    let now = state.now_ms();
    // Syntax first, for every entry, so a malformed list is refused without a lookup.
    for d in destinations {
        if parse_host(&d.host).is_none() {
            return Err(ServiceError::DestinationInvalid);
        }
    }
    let checks = destinations
        .iter()
        .map(|d| check(state, account_id, d, now));
    let records = futures_util::future::try_join_all(checks).await?;
    let mut seen = std::collections::HashSet::new();
    for r in &records {
        if !seen.insert((&r.host, r.port, &r.path_prefix, r.test_only)) {
            return Err(ServiceError::DestinationInvalid);
        }
    }
    state
        .store()
        .audited(scope)
        .set_relay_destinations(account_id, &records)
        .await?;
    state
        .relay_clients()
        .forget_destinations(state.cache_sync(), account_id);
    Ok(List::all(records.iter().map(Into::into).collect()))
}

/// The account's destinations, in the order they were set.
pub async fn destinations(
    state: &AppState,
    account_id: &str,
) -> Result<List<RelayDestinationView>> {
    state.accounts().get(account_id).await?;
    let list = state.store().relay_destinations(account_id).await?;
    Ok(List::all(list.iter().map(Into::into).collect()))
}

/// What the relay may send to: the destination that approved the URL, and the address
/// to connect to, checked now. The connection must go to `addr` (with `url`'s host for
/// SNI and certificate verification, against `destination.ca_cert_pem` if set, else the
/// system roots) and nowhere else.
#[derive(Debug, Clone)]
pub struct Approved {
    /// The approving destination.
    pub destination: std::sync::Arc<Destination>,
    /// The URL, parsed.
    pub url: url::Url,
    /// The checked address the connection is pinned to.
    pub addr: SocketAddr,
}

/// Whether a destination admits a URL path: `/` admits all; a prefix ending in `/`
/// admits what starts with it; another admits itself and what continues it after a `/`.
fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// May `account_id`, with a key of `mode`, send to `raw_url`? The URL must be `https`,
/// without credentials or fragment, and match an approved destination of the account
/// for the mode (host, port, path prefix; test-only destinations serve test mode
/// only); otherwise `DestinationNotApproved`. The host is then resolved now and every
/// address checked as at registration (`DestinationNotPublic`; a name that does not
/// resolve: `DestinationUnreachable`), and the first address is returned to connect to,
/// so that what was checked is what is connected to.
pub async fn approve(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    raw_url: &str,
) -> Result<Approved> {
    let url = url::Url::parse(raw_url).map_err(|_| ServiceError::DestinationNotApproved)?;
    if url.scheme() != "https"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(ServiceError::DestinationNotApproved);
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => Host::Name(d.trim_end_matches('.').to_ascii_lowercase()),
        Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
        None => return Err(ServiceError::DestinationNotApproved),
    };
    let port = url.port_or_known_default().unwrap_or(DEFAULT_PORT);
    let host_text = host.text();
    let store = state.store();
    let list = state
        .relay_clients()
        .destinations(state.cache_sync(), account_id, state.now_ms(), async {
            Ok(store.relay_destinations(account_id).await?)
        })
        .await?;
    let destination = list
        .iter()
        .find(|d| {
            d.host == host_text
                && d.port == i64::from(port)
                && (mode == Mode::Test || !d.test_only)
                && path_matches(&d.path_prefix, url.path())
        })
        .cloned()
        .ok_or(ServiceError::DestinationNotApproved)?;
    let loopback = loopback_ok(state, destination.test_only);
    let addrs = checked_addrs(&host, port, loopback)
        .await?
        .ok_or(ServiceError::DestinationUnreachable)?;
    let addr = *addrs.first().ok_or(ServiceError::DestinationUnreachable)?;
    Ok(Approved {
        destination,
        url,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let name = |s: &str| Some(Host::Name(s.to_owned()));
        assert_eq!(
            parse_host("API.Processor.example."),
            name("api.processor.example")
        );
        assert_eq!(parse_host("a-b.c0"), name("a-b.c0"));
        assert_eq!(parse_host("[::1]"), Some(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            parse_host("2001:db8::1"),
            Some(Host::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            parse_host("10.0.0.1"),
            Some(Host::Ip("10.0.0.1".parse().unwrap()))
        );
        for bad in [
            "",
            "https://x.example",
            "user@x.example",
            "x.example:443",
            "x.example/path",
            "-x.example",
            "x-.example",
            "x..example",
            ".",
            "1.2.3",
            "0x7f.1",
            "x.example/",
            "x_y.example",
            "[10.0.0.1]",
            "ex ample.com",
            "exämple.com",
        ] {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
        let long = format!("{}.example", "a.".repeat(124));
        assert!(long.len() > HOST_MAX);
        assert_eq!(parse_host(&long), None);
        let label = format!("{}.example", "a".repeat(64));
        assert_eq!(parse_host(&label), None);
    }

    #[test]
    fn path_prefixes() {
        for ok in ["/", "/v1", "/v1/", "/v1/payments", "/a-b_c~d"] {
            assert!(check_path_prefix(ok), "{ok}");
        }
        let long = format!("/{}", "a".repeat(PATH_PREFIX_MAX));
        for bad in [
            "", "v1", "/v1?x", "/v1#x", "/a%2e", "/a/../b", "/a/./b", "/..", "//x", "/a b",
            "/a\\b", &long,
        ] {
            assert!(!check_path_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn path_matching_respects_segments() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/v1", "/v1"));
        assert!(path_matches("/v1", "/v1/charges"));
        assert!(!path_matches("/v1", "/v10"));
        assert!(!path_matches("/v1", "/"));
        assert!(path_matches("/v1/", "/v1/charges"));
        assert!(!path_matches("/v1/", "/v1"));
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn ca_certificates() {
        let one = ca_pem();
        assert!(check_ca(&one));
        assert!(check_ca(&format!("{one}{}", ca_pem())));
        assert!(!check_ca(""));
        assert!(!check_ca("not a certificate"));
        assert!(!check_ca(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ));
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(!check_ca(&format!("{one}{key}")));
        assert!(!check_ca(&format!("{one}{}", " ".repeat(CA_CERT_MAX))));
    }
}
