//! Metrics in the Prometheus text format (version 0.0.4), served on the separate admin
//! listener (`/metrics`, loopback by default).
//!
//! Hand-written rather than through `prometheus-client`: the set is small and fixed,
//! the exposition format is a few lines of text, and it spares a dependency tree on the
//! hot path; `tests/interop/metrics/parse.py` checks the output with the reference
//! Python parser. Labels are only bounded, non-sensitive values: method, route
//! template, status, key purpose and state, and a relay's operator-approved
//! destination host. Never a card id, key, client address or account.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Latency buckets, seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct RouteStats {
    requests: HashMap<(&'static str, u16), u64>,
    latency: HashMap<&'static str, Histogram>,
}

/// Counters and gauges the server and its workers update. Cheap to share (in AppState).
#[derive(Default)]
pub struct Metrics {
    /// Per route template: counts by (method, status) and latency by method. One lock
    /// and, after a route's first request, no allocation per request.
    routes: Mutex<HashMap<String, RouteStats>>,
    rate_limited: AtomicU64,
    webhook_queue_depth: AtomicI64,
    webhook_oldest_ms: AtomicI64,
    audit_head: AtomicI64,
    audit_checkpoint_ms: AtomicI64,
    audit_failures: AtomicU64,
    rewrapped: AtomicU64,
    /// Relays by (destination host, outcome). Hosts are operator-approved (at most 50
    /// per account), so the label set stays bounded.
    relays: Mutex<HashMap<String, Vec<(&'static str, u64)>>>,
    /// Risk assessments by (action, decision, stored): a bounded label set (a few dozen),
    /// found by a scan, so that counting one allocates nothing.
    assessments: Mutex<Vec<(String, String, bool, u64)>>,
    /// When the oldest active key of each purpose was made (the key-age check sets it).
    key_oldest_ms: Mutex<std::collections::BTreeMap<&'static str, i64>>,
    /// The Redis-backed features this node serves from its own memory while Redis is
    /// unreachable (docs/scale-out.md, "When Redis is lost").
    redis: Arc<RedisHealth>,
}

/// How long a node leaves Redis alone after a failure before it tries again: requests in
/// between go to the node's own memory at once instead of waiting for Redis to time out.
pub const REDIS_RETRY_MS: i64 = 2_000;

/// One Redis-backed feature's health on this node.
#[derive(Default)]
pub struct FeatureHealth {
    /// Until when (Unix ms) Redis is not tried.
    retry_at_ms: AtomicI64,
    /// 1 while the feature is served from this node's memory.
    degraded: AtomicU64,
    /// Operations served from memory because Redis failed.
    fallbacks: AtomicU64,
}

impl FeatureHealth {
    /// `redis`, unless Redis failed within [`REDIS_RETRY_MS`]; on its failure (or while it
    /// is left alone), `local`: this node's own state. The first fallback is logged as a
    /// warning, the recovery as information; the gauge and counter say the rest.
    pub async fn run<T, E: std::fmt::Debug>(
        &self,
        feature: &'static str,
        now_ms: i64,
        redis: impl std::future::Future<Output = Result<T, E>>,
        local: impl std::future::Future<Output = T>,
    ) -> T {
        if now_ms >= self.retry_at_ms.load(Ordering::Relaxed) {
            match redis.await {
                Ok(v) => {
                    if self.degraded.swap(0, Ordering::Relaxed) == 1 {
                        tracing::info!(feature, "redis reachable again: shared state in use");
                    }
                    return v;
                }
                Err(e) => {
                    self.retry_at_ms
                        .store(now_ms + REDIS_RETRY_MS, Ordering::Relaxed);
                    if self.degraded.swap(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            feature,
                            error = ?e,
                            "redis unreachable: this node uses its own state until it is back"
                        );
                    }
                }
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        local.await
    }
}

/// The Redis-backed features that degrade to a node's own state (rate limits, risk
/// velocity counters). Held CVCs fail closed instead, and idempotency records live in the
/// database: neither is here.
#[derive(Default)]
pub struct RedisHealth {
    /// Per-key, per-IP and the other rate limits.
    pub rate_limit: FeatureHealth,
    /// The risk engine's velocity counters.
    pub risk_velocity: FeatureHealth,
}

impl RedisHealth {
    fn features(&self) -> [(&'static str, &FeatureHealth); 2] {
        [
            ("rate_limit", &self.rate_limit),
            ("velocity", &self.risk_velocity),
        ]
    }
}

/// A method as a label: the standard ones, or `other`.
pub fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Counts a finished request (`route` is the template or `(unmatched)`).
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let m = method_label(method);
        let mut routes = lock(&self.routes);
        if !routes.contains_key(route) {
            routes.insert(route.to_owned(), RouteStats::default());
        }
        let Some(r) = routes.get_mut(route) else {
            return;
        };
        *r.requests.entry((m, status)).or_default() += 1;
        let h = r.latency.entry(m).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b
                && let Some(c) = h.buckets.get_mut(i)
            {
                *c += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Counts a request refused by a rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the webhook delivery queue's depth and the creation time (Unix ms) of its
    /// oldest entry (`None`: empty).
    pub fn webhook_queue(&self, depth: i64, oldest_ms: Option<i64>) {
        self.webhook_queue_depth.store(depth, Ordering::Relaxed);
        self.webhook_oldest_ms
            .store(oldest_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// Replaces the creation times of the oldest active key per purpose.
    pub fn key_oldest(&self, oldest: std::collections::BTreeMap<&'static str, i64>) {
        *lock(&self.key_oldest_ms) = oldest;
    }

    /// Records the audit chain head after an append.
    pub fn audit_head(&self, seq: i64) {
        self.audit_head.fetch_max(seq, Ordering::Relaxed);
    }

    /// Records the time of the latest checkpoint.
    pub fn audit_checkpoint(&self, time_ms: i64) {
        self.audit_checkpoint_ms
            .fetch_max(time_ms, Ordering::Relaxed);
    }

    /// Counts a request refused because its audit record could not be written.
    pub fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a relay to `host` that ended with `outcome` (`completed`, `failed`).
    pub fn relay(&self, host: &str, outcome: &'static str) {
        let mut relays = lock(&self.relays);
        // Looked up by `&str`: the host is copied only the first time it is seen.
        let outcomes = match relays.get_mut(host) {
            Some(o) => o,
            None => relays.entry(host.to_owned()).or_default(),
        };
        match outcomes.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => outcomes.push((outcome, 1)),
        }
    }

    /// Counts a risk assessment of `action` that decided `decision`, and whether its
    /// record was stored (an implicit one that found nothing is only counted).
    pub fn assessment(&self, action: &str, decision: &str, stored: bool) {
        let mut m = lock(&self.assessments);
        let found = m
            .iter_mut()
            .find(|(a, d, s, _)| *s == stored && a == action && d == decision);
        match found {
            Some((.., n)) => *n += 1,
            None => m.push((action.to_owned(), decision.to_owned(), stored, 1)),
        }
    }

    /// The Redis-backed features' health, shared with the rate limiter and the velocity
    /// counters.
    pub fn redis(&self) -> Arc<RedisHealth> {
        self.redis.clone()
    }

    /// Counts records moved by the re-wrap worker.
    pub fn rewrapped(&self, n: u64) {
        self.rewrapped.fetch_add(n, Ordering::Relaxed);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn age_secs(now_ms: i64, at_ms: i64) -> f64 {
    if at_ms <= 0 {
        return 0.0;
    }
    // Milliseconds to seconds; precision loss is irrelevant at these magnitudes.
    #[allow(clippy::cast_precision_loss)]
    let s = now_ms.saturating_sub(at_ms).max(0) as f64 / 1000.0;
    s
}

/// Renders every metric; reads data-key figures from the store.
pub async fn render(m: &Metrics, store: &strongroom_store::Store, now: i64) -> String {
    use strongroom_store::StatsStore;
    let mut out = String::with_capacity(8192);
    let w = &mut out;

    let _ = writeln!(
        w,
        "# HELP strongroom_http_requests_total HTTP requests by method, route template and status."
    );
    let _ = writeln!(w, "# TYPE strongroom_http_requests_total counter");
    {
        let mut rows: Vec<_> = lock(&m.routes)
            .iter()
            .flat_map(|(route, r)| {
                r.requests
                    .iter()
                    .map(move |((method, status), n)| ((*method, route.clone(), *status), *n))
            })
            .collect();
        rows.sort();
        for ((method, route, status), n) in rows {
            let _ = writeln!(
                w,
                "strongroom_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(&route)
            );
        }
    }

    let _ = writeln!(
        w,
        "# HELP strongroom_http_request_duration_seconds Request latency by method and route template."
    );
    let _ = writeln!(
        w,
        "# TYPE strongroom_http_request_duration_seconds histogram"
    );
    {
        let routes = lock(&m.routes);
        let mut keys: Vec<(&'static str, String)> = routes
            .iter()
            .flat_map(|(route, r)| r.latency.keys().map(move |m| (*m, route.clone())))
            .collect();
        keys.sort();
        for key in keys {
            let Some(h) = routes.get(&key.1).and_then(|r| r.latency.get(key.0)) else {
                continue;
            };
            let (method, route) = (key.0, escape(&key.1));
            for (b, c) in BUCKETS.iter().zip(h.buckets.iter()) {
                let _ = writeln!(
                    w,
                    "strongroom_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                w,
                "strongroom_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                w,
                "strongroom_http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                w,
                "strongroom_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\"}} {}",
                h.count
            );
        }
    }

    let _ = writeln!(
        w,
        "# HELP strongroom_relays_total Relays by destination host and outcome (completed: the destination answered)."
    );
    let _ = writeln!(w, "# TYPE strongroom_relays_total counter");
    {
        let mut rows: Vec<_> = lock(&m.relays)
            .iter()
            .flat_map(|(host, outcomes)| outcomes.iter().map(|(o, n)| (host.clone(), *o, *n)))
            .collect();
        rows.sort();
        for (host, outcome, n) in rows {
            let _ = writeln!(
                w,
                "strongroom_relays_total{{host=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&host)
            );
        }
    }

    let _ = writeln!(
        w,
        "# HELP strongroom_risk_assessments_total Risk assessments by action, decision and whether their record was stored."
    );
    let _ = writeln!(w, "# TYPE strongroom_risk_assessments_total counter");
    {
        let mut rows: Vec<_> = lock(&m.assessments)
            .iter()
            .map(|(a, d, s, n)| (a.clone(), d.clone(), *s, *n))
            .collect();
        rows.sort();
        for (action, decision, stored, n) in rows {
            let _ = writeln!(
                w,
                "strongroom_risk_assessments_total{{action=\"{}\",decision=\"{}\",stored=\"{stored}\"}} {n}",
                escape(&action),
                escape(&decision)
            );
        }
    }

    let _ = writeln!(
        w,
        "# HELP strongroom_redis_degraded 1 while this node serves a Redis-backed feature from its own memory (Redis unreachable)."
    );
    let _ = writeln!(w, "# TYPE strongroom_redis_degraded gauge");
    for (name, f) in m.redis.features() {
        let v = f.degraded.load(Ordering::Relaxed);
        let _ = writeln!(w, "strongroom_redis_degraded{{feature=\"{name}\"}} {v}");
    }
    let _ = writeln!(
        w,
        "# HELP strongroom_redis_fallbacks_total Operations served from this node's memory because Redis was unreachable."
    );
    let _ = writeln!(w, "# TYPE strongroom_redis_fallbacks_total counter");
    for (name, f) in m.redis.features() {
        let v = f.fallbacks.load(Ordering::Relaxed);
        let _ = writeln!(
            w,
            "strongroom_redis_fallbacks_total{{feature=\"{name}\"}} {v}"
        );
    }

    // The delivery backlog is read at scrape time: the outbox table is the truth, shared by
    // every node, so each node reports the same figure.
    if let Ok((depth, oldest)) = store.webhook_backlog().await {
        m.webhook_queue(depth, oldest);
    }
    let simple: [(&str, &str, &str, String); 7] = [
        (
            "strongroom_rate_limit_refusals_total",
            "counter",
            "Requests refused by a rate limit.",
            m.rate_limited.load(Ordering::Relaxed).to_string(),
        ),
        (
            "strongroom_webhook_queue_depth",
            "gauge",
            "Webhook deliveries waiting to be sent.",
            m.webhook_queue_depth.load(Ordering::Relaxed).to_string(),
        ),
        (
            "strongroom_webhook_queue_oldest_age_seconds",
            "gauge",
            "Age of the oldest waiting webhook delivery (0 when none).",
            age_secs(now, m.webhook_oldest_ms.load(Ordering::Relaxed)).to_string(),
        ),
        (
            "strongroom_audit_chain_length",
            "gauge",
            "Records in the audit hash chain (sequence number of its head).",
            m.audit_head.load(Ordering::Relaxed).to_string(),
        ),
        (
            "strongroom_audit_last_checkpoint_age_seconds",
            "gauge",
            "Seconds since the audit head was last signed into a checkpoint (0 before the first).",
            age_secs(now, m.audit_checkpoint_ms.load(Ordering::Relaxed)).to_string(),
        ),
        (
            "strongroom_audit_unavailable_total",
            "counter",
            "Requests refused because their audit record could not be committed.",
            m.audit_failures.load(Ordering::Relaxed).to_string(),
        ),
        (
            "strongroom_rewrap_records_total",
            "counter",
            "Records re-sealed under a newer data-key version by the re-wrap worker.",
            m.rewrapped.load(Ordering::Relaxed).to_string(),
        ),
    ];
    for (name, kind, help, value) in simple {
        let _ = writeln!(w, "# HELP {name} {help}");
        let _ = writeln!(w, "# TYPE {name} {kind}");
        let _ = writeln!(w, "{name} {value}");
    }

    let _ = writeln!(
        w,
        "# HELP strongroom_key_oldest_age_seconds Age of the oldest active key of each purpose (the key-age policy's purposes: root, cards, fingerprint, pin, jwt, api_key, webhook_secret), as of the last key-age check."
    );
    let _ = writeln!(w, "# TYPE strongroom_key_oldest_age_seconds gauge");
    let oldest = lock(&m.key_oldest_ms).clone();
    for (purpose, created) in oldest {
        let _ = writeln!(
            w,
            "strongroom_key_oldest_age_seconds{{purpose=\"{purpose}\"}} {}",
            age_secs(now, created)
        );
    }

    let _ = writeln!(
        w,
        "# HELP strongroom_data_key_versions Data-key versions across accounts, by purpose and state."
    );
    let _ = writeln!(w, "# TYPE strongroom_data_key_versions gauge");
    if let Ok(rows) = store.data_key_versions().await {
        for (purpose, st, n) in rows {
            let _ = writeln!(
                w,
                "strongroom_data_key_versions{{purpose=\"{}\",state=\"{}\"}} {n}",
                escape(&purpose),
                escape(&st)
            );
        }
    }
    let _ = writeln!(
        w,
        "# HELP strongroom_rewrap_pending_records Records still sealed under a data-key version older than their account's active one."
    );
    let _ = writeln!(w, "# TYPE strongroom_rewrap_pending_records gauge");
    if let Ok(rows) = store.rewrap_pending().await {
        for (purpose, n) in rows {
            let _ = writeln!(
                w,
                "strongroom_rewrap_pending_records{{purpose=\"{}\"}} {n}",
                escape(&purpose)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each label set counts on its own, and a repeated one adds to its count.
    #[test]
    fn relays_and_assessments_count_per_label_set() {
        let m = Metrics::default();
        for (host, outcome) in [
            ("a.example", "completed"),
            ("a.example", "completed"),
            ("a.example", "failed"),
            ("b.example", "completed"),
        ] {
            m.relay(host, outcome);
        }
        {
            let relays = lock(&m.relays);
            assert_eq!(relays.len(), 2);
            assert_eq!(relays["a.example"], vec![("completed", 2), ("failed", 1)]);
            assert_eq!(relays["b.example"], vec![("completed", 1)]);
        }
        for (action, decision, stored) in [
            ("relay", "review", true),
            ("relay", "review", true),
            ("relay", "review", false),
            ("relay", "allow", true),
            ("tokenize", "review", true),
        ] {
            m.assessment(action, decision, stored);
        }
        let mut rows = lock(&m.assessments).clone();
        rows.sort();
        let want = [
            ("relay", "allow", true, 1),
            ("relay", "review", false, 1),
            ("relay", "review", true, 2),
            ("tokenize", "review", true, 1),
        ];
        let got: Vec<_> = rows
            .iter()
            .map(|(a, d, s, n)| (a.as_str(), d.as_str(), *s, *n))
            .collect();
        assert_eq!(got, want);
    }
}
