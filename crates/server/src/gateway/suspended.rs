//! The account's active suspensions as the gateway and the card services check them
//! (docs/risk.md, "Suspensions"): loaded per account through the gateway's cache, and
//! compared with the clock at every use, so a suspension ends at its `expires_at`
//! exactly, whatever the cache holds.

use crate::error::{ApiError, codes};
use ipnet::IpNet;
use std::net::IpAddr;
use strongroom_core::Mode;
use strongroom_store::SuspensionRecord;

/// What one suspension refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Every request of the account, both modes.
    Account,
    /// Requests with this API key (`key_…`).
    Key(String),
    /// Requests from this network (a single address is a /32 or /128).
    Net(IpNet),
    /// This card number, by its fingerprint as the card object shows it.
    Card(String),
    /// This email, by its keyed digest.
    Email(String),
    /// This device id.
    Device(String),
}

impl Subject {
    /// The subject of a stored suspension; `None` for a row this version cannot read.
    pub fn of(kind: &str, target: &str) -> Option<Self> {
        Some(match kind {
            "account" => Self::Account,
            "api_key" => Self::Key(target.to_owned()),
            "ip" => Self::Net(parse_net(target)?),
            "card" => Self::Card(target.to_owned()),
            "email" => Self::Email(target.to_owned()),
            "device" => Self::Device(target.to_owned()),
            _ => return None,
        })
    }
}

/// An address or a network.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

#[derive(Debug, Clone)]
struct Entry {
    mode: Mode,
    subject: Subject,
    expires_ms: i64,
}

/// An account's active suspensions.
#[derive(Debug, Clone, Default)]
pub struct Active {
    entries: Vec<Entry>,
}

/// Seconds from `now_ms` to `until_ms`, at least one.
fn secs_until(until_ms: i64, now_ms: i64) -> u64 {
    let ms = u64::try_from(until_ms.saturating_sub(now_ms)).unwrap_or(0);
    ms.div_ceil(1000).max(1)
}

impl Active {
    /// From the account's active rows.
    pub fn new(records: &[SuspensionRecord]) -> Self {
        let entries = records
            .iter()
            .filter_map(|r| {
                Some(Entry {
                    mode: r.mode,
                    subject: Subject::of(&r.target_kind, &r.target)?,
                    expires_ms: r.expires_ms,
                })
            })
            .collect();
        Self { entries }
    }

    /// The latest end of a live suspension in `mode` whose subject `hit` accepts (an
    /// account's suspension holds in both modes).
    fn until(&self, mode: Mode, now_ms: i64, hit: impl Fn(&Subject) -> bool) -> Option<i64> {
        self.entries
            .iter()
            .filter(|e| e.expires_ms > now_ms)
            .filter(|e| e.mode == mode || e.subject == Subject::Account)
            .filter(|e| hit(&e.subject))
            .map(|e| e.expires_ms)
            .max()
    }

    /// Whether a request by this key, in this mode, from `ip` is refused: the account
    /// and the key say so in their code; an address only in a generic one.
    pub fn refusal(&self, mode: Mode, key_id: &str, ip: IpAddr, now_ms: i64) -> Option<ApiError> {
        let at = |until| secs_until(until, now_ms);
        if let Some(u) = self.until(mode, now_ms, |s| *s == Subject::Account) {
            return Some(codes::ACCOUNT_SUSPENDED.retry_after(at(u)));
        }
        if let Some(u) = self.until(
            mode,
            now_ms,
            |s| matches!(s, Subject::Key(k) if k == key_id),
        ) {
            return Some(codes::API_KEY_SUSPENDED.retry_after(at(u)));
        }
        let ip = canonical(ip);
        self.until(
            mode,
            now_ms,
            |s| matches!(s, Subject::Net(n) if n.contains(&ip)),
        )
        .map(|u| codes::SUSPENDED.retry_after(at(u)))
    }

    /// Seconds until the card whose fingerprints (under each usable key version, as the
    /// card object spells them) are `fingerprints` may be used again, if it is suspended.
    pub fn card(&self, mode: Mode, fingerprints: &[String], now_ms: i64) -> Option<u64> {
        self.until(
            mode,
            now_ms,
            |s| matches!(s, Subject::Card(f) if fingerprints.contains(f)),
        )
        .map(|u| secs_until(u, now_ms))
    }

    /// Whether any of these subjects (a card fingerprint, an address, an email digest,
    /// a device id; the ones known) is suspended in `mode` at `now_ms`: a risk
    /// assessment's view, which names the shopper's address rather than the caller's.
    pub fn any_of(
        &self,
        mode: Mode,
        now_ms: i64,
        card: Option<&str>,
        ip: Option<IpAddr>,
        email: Option<&str>,
        device: Option<&str>,
    ) -> bool {
        let ip = ip.map(canonical);
        self.until(mode, now_ms, |s| match s {
            Subject::Card(f) => card == Some(f.as_str()),
            Subject::Net(n) => ip.is_some_and(|ip| n.contains(&ip)),
            Subject::Email(d) => email == Some(d.as_str()),
            Subject::Device(d) => device == Some(d.as_str()),
            Subject::Account | Subject::Key(_) => false,
        })
        .is_some()
    }

    /// Whether nothing is suspended (the common case: callers skip work).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, target: &str, mode: Mode, expires_ms: i64) -> SuspensionRecord {
        SuspensionRecord {
            id: "susp_x".into(),
            account_id: "acct_x".into(),
            mode,
            target_kind: kind.into(),
            target: target.into(),
            reason: "r".into(),
            created_by: "key:key_x".into(),
            created_ms: 0,
            expires_ms,
            lifted_ms: None,
            lifted_by: None,
        }
    }

    #[test]
    fn each_subject_refuses_what_it_names_until_its_end() {
        let a = Active::new(&[
            rec("ip", "203.0.113.0/24", Mode::Test, 10_000),
            rec("api_key", "key_b", Mode::Live, 5_000),
            rec("card", "fp1", Mode::Test, 2_500),
        ]);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let e = a.refusal(Mode::Test, "key_a", ip, 1_000).unwrap();
        assert_eq!((e.code, e.retry_after), ("suspended", Some(9)));
        // Mapped IPv4 is the same address; another network or mode is not.
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert!(a.refusal(Mode::Test, "key_a", mapped, 1_000).is_some());
        assert!(a.refusal(Mode::Test, "key_a", other, 1_000).is_none());
        assert!(a.refusal(Mode::Live, "key_a", ip, 1_000).is_none());
        assert_eq!(
            a.refusal(Mode::Live, "key_b", other, 1_000).unwrap().code,
            "api_key_suspended"
        );
        // At its end it refuses nothing.
        assert!(a.refusal(Mode::Test, "key_a", ip, 10_000).is_none());
        assert_eq!(
            a.card(Mode::Test, &["fp0".into(), "fp1".into()], 1_000),
            Some(2)
        );
        assert_eq!(a.card(Mode::Test, &["fp1".into()], 2_500), None);
    }

    #[test]
    fn an_account_suspension_holds_in_both_modes() {
        let a = Active::new(&[rec("account", "acct_x", Mode::Live, 61_000)]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for mode in [Mode::Test, Mode::Live] {
            let e = a.refusal(mode, "key_a", ip, 1_000).unwrap();
            assert_eq!((e.code, e.retry_after), ("account_suspended", Some(60)));
        }
    }
}
