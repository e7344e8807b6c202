//! Allow and block lists: the in-memory form an account's live entries take for scoring, and
//! how a card use is matched against them. No I/O: the server loads the entries.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListName {
    /// Uses matching an entry are allowed unless suspended or block-listed.
    Allow,
    /// Uses matching an entry are refused.
    Block,
}

/// What an entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListTarget {
    /// A card fingerprint.
    Card(String),
    /// An address (a /32 or /128) or a network, its host bits cleared.
    Ip(IpNet),
    /// A keyed email digest.
    Email(String),
    /// A BIN prefix of 6 to 8 digits.
    Bin(String),
    /// A device id.
    Device(String),
}

/// The kind of a target, as reported in hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ListKind {
    /// A card fingerprint.
    Card,
    /// An address or network.
    Ip,
    /// An email digest.
    Email,
    /// A BIN prefix.
    Bin,
    /// A device id.
    Device,
}

impl ListKind {
    /// Its name, as entries and reasons spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Ip => "ip",
            Self::Email => "email",
            Self::Bin => "bin",
            Self::Device => "device",
        }
    }
}

impl ListTarget {
    /// The kind of this target.
    pub fn kind(&self) -> ListKind {
        match self {
            Self::Card(_) => ListKind::Card,
            Self::Ip(_) => ListKind::Ip,
            Self::Email(_) => ListKind::Email,
            Self::Bin(_) => ListKind::Bin,
            Self::Device(_) => ListKind::Device,
        }
    }
}

/// One live entry as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Which list.
    pub list: ListName,
    /// What it matches.
    pub target: ListTarget,
    /// When it stops matching, in ms since the epoch; `None`: never.
    pub expires_ms: Option<i64>,
}

/// The facts of a card use matched against the lists.
#[derive(Debug, Clone, Default)]
pub struct ListProbe<'a> {
    /// The card's fingerprint.
    pub fingerprint: Option<&'a str>,
    /// The card's BIN (its leading digits, at least as long as any listed prefix).
    pub bin: Option<&'a str>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The keyed email digest.
    pub email_digest: Option<&'a str>,
    /// The device id.
    pub device: Option<&'a str>,
}

/// How many live entries of each list a probe matched, and of which kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListHits {
    /// Block-list entries matched.
    pub block: u32,
    /// Allow-list entries matched.
    pub allow: u32,
    /// Kinds of the block-list entries matched, sorted, without repeats.
    pub block_kinds: Vec<ListKind>,
    /// Kinds of the allow-list entries matched, sorted, without repeats.
    pub allow_kinds: Vec<ListKind>,
}

/// One entry as indexed: which list, and when it stops matching.
type Listed = (ListName, Option<i64>);

/// An account's entries for one mode, indexed so that a match is a few hash lookups
/// whatever the lists' size (they are read on every assessment, tokenize included):
/// exact values by kind, BIN prefixes by prefix; networks are scanned, being few.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    cards: HashMap<String, Vec<Listed>>,
    emails: HashMap<String, Vec<Listed>>,
    devices: HashMap<String, Vec<Listed>>,
    bins: HashMap<String, Vec<Listed>>,
    nets: Vec<(IpNet, Listed)>,
}

/// Parses `addr` or `addr/prefix` (IPv4 or IPv6) into a network with its host bits
/// cleared; an IPv4-mapped IPv6 address counts as the IPv4 one.
pub fn parse_network(s: &str) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(net.trunc())
}

/// Whether `net` holds `ip`, across the IPv4-mapped IPv6 form either way.
fn contains(net: &IpNet, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpNet::V6(n), IpAddr::V4(v4)) => n.contains(&v4.to_ipv6_mapped()),
        _ => net.contains(&ip),
    }
}

impl Lists {
    /// Lists holding `entries`.
    pub fn new(entries: Vec<ListEntry>) -> Self {
        let mut l = Self::default();
        for e in entries {
            let listed = (e.list, e.expires_ms);
            let (map, value) = match e.target {
                ListTarget::Ip(net) => {
                    l.nets.push((net, listed));
                    continue;
                }
                ListTarget::Card(v) => (&mut l.cards, v),
                ListTarget::Email(v) => (&mut l.emails, v),
                ListTarget::Device(v) => (&mut l.devices, v),
                ListTarget::Bin(v) => (&mut l.bins, v),
            };
            map.entry(value).or_default().push(listed);
        }
        l
    }

    /// Matches `probe` against the entries live at `now_ms`.
    pub fn hits(&self, now_ms: i64, probe: &ListProbe<'_>) -> ListHits {
        let mut hits = ListHits::default();
        let mut count = |kind: ListKind, listed: &[Listed]| {
            for (list, expires_ms) in listed {
                if expires_ms.is_some_and(|x| x <= now_ms) {
                    continue;
                }
                let (n, kinds) = match list {
                    ListName::Block => (&mut hits.block, &mut hits.block_kinds),
                    ListName::Allow => (&mut hits.allow, &mut hits.allow_kinds),
                };
                *n += 1;
                kinds.push(kind);
            }
        };
        count(ListKind::Card, exact(&self.cards, probe.fingerprint));
        for (net, listed) in &self.nets {
            if probe.ip.is_some_and(|ip| contains(net, ip)) {
                count(ListKind::Ip, std::slice::from_ref(listed));
            }
        }
        count(ListKind::Email, exact(&self.emails, probe.email_digest));
        if let Some(bin) = probe.bin {
            // Every prefix of the card's leading digits that is listed.
            for end in 1..=bin.len() {
                count(ListKind::Bin, exact(&self.bins, bin.get(..end)));
            }
        }
        count(ListKind::Device, exact(&self.devices, probe.device));
        for k in [&mut hits.block_kinds, &mut hits.allow_kinds] {
            k.sort();
            k.dedup();
        }
        hits
    }
}

/// The entries listed for exactly `v` in `map` (none for an absent value).
fn exact<'m>(map: &'m HashMap<String, Vec<Listed>>, v: Option<&str>) -> &'m [Listed] {
    v.and_then(|v| map.get(v)).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(list: ListName, s: &str, expires_ms: Option<i64>) -> ListEntry {
        ListEntry {
            list,
            target: ListTarget::Ip(parse_network(s).unwrap()),
            expires_ms,
        }
    }

    #[test]
    fn cidr_containment_v4_and_v6() {
        let l = Lists::new(vec![
            entry(ListName::Block, "10.1.2.3/16", None),
            entry(ListName::Allow, "2001:db8::1/32", None),
        ]);
        let p = |ip: &str| ListProbe {
            ip: Some(ip.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(l.hits(0, &p("10.1.200.7")).block, 1);
        assert_eq!(l.hits(0, &p("10.2.0.1")).block, 0);
        assert_eq!(l.hits(0, &p("::ffff:10.1.0.9")).block, 1);
        let h = l.hits(0, &p("2001:db8:ffff::2"));
        assert_eq!((h.allow, h.allow_kinds), (1, vec![ListKind::Ip]));
        assert_eq!(
            parse_network("10.1.2.3/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert!(parse_network("10.0.0.0/33").is_none());
        assert!(parse_network("10.0.0.0/").is_none());
        assert!(parse_network("nope").is_none());
        assert_eq!(
            parse_network("2001:db8::7").unwrap().to_string(),
            "2001:db8::7/128"
        );
    }

    #[test]
    fn expiry_checked_at_lookup_and_bin_by_prefix() {
        let l = Lists::new(vec![
            ListEntry {
                list: ListName::Block,
                target: ListTarget::Bin("424242".into()),
                expires_ms: Some(1_000),
            },
            ListEntry {
                list: ListName::Block,
                target: ListTarget::Card("fp".into()),
                expires_ms: None,
            },
        ]);
        let p = ListProbe {
            bin: Some("42424242"),
            fingerprint: Some("fp"),
            ..Default::default()
        };
        let h = l.hits(999, &p);
        assert_eq!(
            (h.block, h.block_kinds),
            (2, vec![ListKind::Card, ListKind::Bin])
        );
        let h = l.hits(1_000, &p);
        assert_eq!((h.block, h.block_kinds), (1, vec![ListKind::Card]));
        let other = ListProbe {
            bin: Some("42424"),
            ..Default::default()
        };
        assert_eq!(l.hits(0, &other), ListHits::default());
    }
}
