//! Repeated anonymous authentication failures, counted instead of written one by one.
//!
//! Every failed authentication (a bad or revoked key, a bad token, no credential) arms an
//! `auth.failed` record. Written one per request, an attacker who sprays guesses makes
//! the audit log (one chained, serial append each) carry its traffic. So, per client
//! network (an IPv4 address, or an IPv6 /64, as the rate limiter keys them) and error
//! code, within a window of [`REPEAT_WINDOW_MS`]:
//! * the first failure is written as it always was (`auth.failed`, with its request id,
//!   route and address), before its response leaves;
//! * the later ones are counted, not written;
//! * when the window is over, one `auth.failed.repeated` record carries the count
//!   (`resource` = `repeats:N`, `client_ip` = the network, the first failure's route,
//!   method and request id). It is written with the next request that records anything
//!   after the window ends, by the flusher every window, or at shutdown.
//!
//! Failures of an authenticated caller (a valid key refused for its scope, allowlist or
//! signature) are not counted: they name a key and are written each time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use strongroom_store::AuditRecord;

/// Outcome of a refused or failed action.
pub const FAILURE: &str = "failure";

/// How long a window of counted failures lasts.
pub const REPEAT_WINDOW_MS: i64 = 60_000;
/// Most (network, code) windows held at once. Past it, a failure from a new network is
/// written as itself (never dropped), so memory stays bounded whatever the attacker
/// sprays.
pub const MAX_WINDOWS: usize = 10_000;
/// The action of a record that carries a count.
pub const REPEATED_ACTION: &str = "auth.failed.repeated";

struct Window {
    started_ms: i64,
    first: AuditRecord,
    network: String,
    repeats: u64,
}

/// See the module docs. Held by the audit appender.
pub struct FailureCounter {
    windows: Mutex<HashMap<(String, String), Window>>,
    /// When the oldest window ends (`i64::MAX` while none is open): the hot path looks
    /// at this alone.
    next_due_ms: AtomicI64,
    max: usize,
}

impl Default for FailureCounter {
    fn default() -> Self {
        Self::with_max(MAX_WINDOWS)
    }
}

fn counted(r: &AuditRecord) -> bool {
    r.actor == "anonymous" && r.action == "auth.failed" && r.outcome == FAILURE
}

/// The network a failure is counted under (the rate limiter's keying).
fn network(client_ip: &str) -> String {
    client_ip.parse::<IpAddr>().map_or_else(
        |_| client_ip.to_owned(),
        crate::gateway::ratelimit::client_network,
    )
}

impl FailureCounter {
    /// A counter holding at most `max` windows.
    pub fn with_max(max: usize) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            next_due_ms: AtomicI64::new(i64::MAX),
            max,
        }
    }

    /// What of `records` (one request's) must be written now: everything but the
    /// repeats of a failure already written in this window, plus the counts of the
    /// windows that have ended.
    pub fn absorb(&self, mut records: Vec<AuditRecord>, now_ms: i64) -> Vec<AuditRecord> {
        let any = records.iter().any(counted);
        if !any && now_ms < self.next_due_ms.load(Ordering::Relaxed) {
            return records;
        }
        let Ok(mut windows) = self.windows.lock() else {
            // Poisoned: write everything, as before counting existed.
            return records;
        };
        let mut out = Self::take_due(&mut windows, now_ms);
        records.retain(|r| {
            if !counted(r) {
                return true;
            }
            let net = network(&r.client_ip);
            if let Some(w) = windows.get_mut(&(net.clone(), r.code.clone())) {
                w.repeats = w.repeats.saturating_add(1);
                return false;
            }
            if windows.len() < self.max {
                windows.insert(
                    (net.clone(), r.code.clone()),
                    Window {
                        started_ms: now_ms,
                        first: r.clone(),
                        network: net,
                        repeats: 0,
                    },
                );
            }
            true
        });
        self.set_next_due(&windows);
        out.append(&mut records);
        out
    }

    /// The counts of the windows that ended by `now_ms` (all of them with `i64::MAX`),
    /// to append on their own.
    pub fn due(&self, now_ms: i64) -> Vec<AuditRecord> {
        if now_ms < self.next_due_ms.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let Ok(mut windows) = self.windows.lock() else {
            return Vec::new();
        };
        let out = Self::take_due(&mut windows, now_ms);
        self.set_next_due(&windows);
        out
    }

    fn take_due(windows: &mut HashMap<(String, String), Window>, now_ms: i64) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        windows.retain(|_, w| {
            if w.started_ms.saturating_add(REPEAT_WINDOW_MS) > now_ms {
                return true;
            }
            if w.repeats > 0 {
                let mut r = w.first.clone();
                r.action = REPEATED_ACTION.into();
                r.resource = format!("repeats:{}", w.repeats);
                r.client_ip = std::mem::take(&mut w.network);
                r.time_ms = now_ms;
                out.push(r);
            }
            false
        });
        out
    }

    fn set_next_due(&self, windows: &HashMap<(String, String), Window>) {
        let next = windows
            .values()
            .map(|w| w.started_ms.saturating_add(REPEAT_WINDOW_MS))
            .min()
            .unwrap_or(i64::MAX);
        self.next_due_ms.store(next, Ordering::Relaxed);
    }

    /// Windows open now.
    pub fn len(&self) -> usize {
        self.windows.lock().map_or(0, |w| w.len())
    }

    /// True when no window is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(ip: &str, code: &str, req: &str) -> AuditRecord {
        AuditRecord {
            request_id: req.into(),
            actor: "anonymous".into(),
            action: "auth.failed".into(),
            outcome: FAILURE.into(),
            code: code.into(),
            client_ip: ip.into(),
            route: "/v1/cards".into(),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn first_written_repeats_counted_then_one_record_with_the_count() {
        let c = FailureCounter::default();
        let t0 = 1_700_000_000_000;
        let first = c.absorb(vec![failure("2001:db8::1", "invalid_api_key", "req_1")], t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].action, "auth.failed");
        // The same /64 and code: counted, not written.
        for i in 0..41 {
            let ip = format!("2001:db8::{:x}", i + 2);
            assert!(
                c.absorb(vec![failure(&ip, "invalid_api_key", "req_n")], t0 + i)
                    .is_empty()
            );
        }
        // Another code, another network and other records are written.
        assert_eq!(
            c.absorb(vec![failure("2001:db8::1", "api_key_revoked", "r")], t0)
                .len(),
            1
        );
        assert_eq!(
            c.absorb(vec![failure("203.0.113.9", "invalid_api_key", "r")], t0)
                .len(),
            1
        );
        let mut signed_in = failure("2001:db8::1", "invalid_api_key", "r");
        signed_in.actor = "key_1".into();
        assert_eq!(c.absorb(vec![signed_in], t0).len(), 1);
        assert!(c.due(t0 + REPEAT_WINDOW_MS - 1).is_empty());

        // After the window: the count rides with the next request's records.
        let later = t0 + REPEAT_WINDOW_MS;
        let out = c.absorb(vec![failure("198.51.100.1", "invalid_api_key", "r")], later);
        let repeated: Vec<_> = out.iter().filter(|r| r.action == REPEATED_ACTION).collect();
        assert_eq!(repeated.len(), 1, "{out:?}");
        assert_eq!(repeated[0].resource, "repeats:41");
        assert_eq!(repeated[0].client_ip, "2001:db8::/64");
        assert_eq!(repeated[0].code, "invalid_api_key");
        assert_eq!(repeated[0].request_id, "req_1");
        // Windows without repeats end silently; the new failure opened its own.
        assert_eq!(out.len(), 2);
        assert_eq!(c.len(), 1);
        assert!(c.due(i64::MAX).is_empty());
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_a_new_network_past_the_bound_is_written() {
        let c = FailureCounter::with_max(8);
        for i in 0..100 {
            let ip = format!("192.0.2.{i}");
            assert_eq!(
                c.absorb(vec![failure(&ip, "invalid_api_key", "r")], 0)
                    .len(),
                1
            );
            assert!(c.len() <= 8);
        }
    }
}
