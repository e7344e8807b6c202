//! The request loops. One worker per connection: each owns a `reqwest::Client` whose pool
//! keeps at most one idle connection, and sends one request at a time, so `--concurrency N`
//! means exactly N keep-alive connections (HTTP/1.1) or N HTTP/2 connections with one
//! stream each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reqwest::{Client, StatusCode};

use crate::hist::Histogram;
use crate::pan::PanSlice;

/// Longest a single request may take; the loop itself stops at the deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// GET /healthz: the TLS + HTTP stack alone, no store.
    Floor,
    /// POST /v1/cards with a new PAN each time (expects 201).
    Tokenize,
    /// GET /v1/cards/{id} of preloaded cards, masked (expects 200).
    Get,
    /// `--mix-get-ratio` gets, the rest tokenizations.
    Mixed,
    /// GET /v1/cards/{id} of preloaded cards authenticated with a bearer JWT from
    /// `POST /v1/auth/token` instead of the API key (expects 200).
    Auth,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::Tokenize => "tokenize",
            Self::Get => "get",
            Self::Mixed => "mixed",
            Self::Auth => "auth",
        }
    }
}

/// A client that trusts only `ca_cert` (PEM).
pub fn client(ca_cert: &str, http2: bool) -> Result<Client> {
    let pem = std::fs::read(ca_cert).with_context(|| format!("reading CA cert {ca_cert}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).context("parsing CA cert")?;
    let b = Client::builder()
        .tls_certs_only(certs)
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .no_proxy();
    let b = if http2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().context("building HTTP client")
}

/// What every worker shares.
pub struct Shared {
    pub base: String,
    pub auth: String,
    /// `Bearer <jwt>` from `POST /v1/auth/token` (`auth` scenario).
    pub bearer: String,
    /// Card ids to read (`get`, `mixed`).
    pub ids: Vec<String>,
    pub get_ratio: f64,
    /// Requests completed so far in the current phase (for the progress line).
    pub ops: AtomicU64,
}

/// One connection's worth of state, moved into its task and handed back at the end.
pub struct Worker {
    pub client: Client,
    pub pans: PanSlice,
    rng: u64,
}

impl Worker {
    pub fn new(client: Client, pans: PanSlice, seed: u64) -> Self {
        Self {
            client,
            pans,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// xorshift64*: plenty for picking cards.
    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// What one worker measured.
#[derive(Default)]
pub struct Tally {
    pub hist: Histogram,
    pub ok: u64,
    pub errors: u64,
    /// The first few distinct failure descriptions.
    pub error_kinds: Vec<String>,
    /// Card ids created (kept only when asked, for the preload).
    pub created: Vec<String>,
    /// The worker ran out of PANs in its slice and stopped early.
    pub exhausted: bool,
}

impl Tally {
    fn error(&mut self, kind: String) {
        self.errors += 1;
        if self.error_kinds.len() < 5 && !self.error_kinds.contains(&kind) {
            self.error_kinds.push(kind);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.hist.merge(&other.hist);
        self.ok += other.ok;
        self.errors += other.errors;
        for k in other.error_kinds {
            if self.error_kinds.len() < 5 && !self.error_kinds.contains(&k) {
                self.error_kinds.push(k);
            }
        }
        self.created.extend(other.created);
        self.exhausted |= other.exhausted;
    }
}

enum Op {
    Floor,
    Tokenize(String),
    Get(usize),
    AuthGet(usize),
}

/// Sends requests of `scenario` until `deadline` or `max_ops` (or, with `keep_ids`, until the worker's
/// PAN slice is used up: the preload). Every request is bounded by `REQUEST_TIMEOUT`.
pub async fn run(
    mut w: Worker,
    shared: Arc<Shared>,
    scenario: Scenario,
    deadline: Instant,
    keep_ids: bool,
    max_ops: Option<u64>,
) -> (Worker, Tally) {
    let mut t = Tally::default();
    let cards = format!("{}/v1/cards", shared.base);
    let health = format!("{}/healthz", shared.base);
    while Instant::now() < deadline && max_ops.is_none_or(|m| t.ok + t.errors < m) {
        let op = match scenario {
            Scenario::Floor => Op::Floor,
            Scenario::Auth => Op::AuthGet(pick(&mut w, shared.ids.len())),
            Scenario::Get => Op::Get(pick(&mut w, shared.ids.len())),
            Scenario::Tokenize => match w.pans.next_pan() {
                Some(p) => Op::Tokenize(p),
                None => {
                    t.exhausted = true;
                    break;
                }
            },
            Scenario::Mixed => {
                let r = (w.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if r < shared.get_ratio && !shared.ids.is_empty() {
                    Op::Get(pick(&mut w, shared.ids.len()))
                } else {
                    match w.pans.next_pan() {
                        Some(p) => Op::Tokenize(p),
                        None => {
                            t.exhausted = true;
                            break;
                        }
                    }
                }
            }
        };
        let (req, expect) = match &op {
            Op::Floor => (w.client.get(&health), StatusCode::OK),
            Op::Tokenize(pan) => (
                w.client
                    .post(&cards)
                    .header("authorization", &shared.auth)
                    .header("content-type", "application/json")
                    .body(format!(
                        r#"{{"number":"{pan}","exp_month":12,"exp_year":2030}}"#
                    )),
                StatusCode::CREATED,
            ),
            Op::Get(i) => {
                let id = shared.ids.get(*i).map_or("", String::as_str);
                (
                    w.client
                        .get(format!("{cards}/{id}"))
                        .header("authorization", &shared.auth),
                    StatusCode::OK,
                )
            }
            Op::AuthGet(i) => {
                let id = shared.ids.get(*i).map_or("", String::as_str);
                (
                    w.client
                        .get(format!("{cards}/{id}"))
                        .header("authorization", &shared.bearer),
                    StatusCode::OK,
                )
            }
        };
        let start = Instant::now();
        let res = req.send().await;
        let outcome = match res {
            Ok(r) => {
                let status = r.status();
                match r.bytes().await {
                    Ok(body) if status == expect => Ok(body),
                    Ok(_) if status == StatusCode::OK && expect == StatusCode::CREATED => Err(
                        "200 instead of 201: card already existed (use another --pan-offset)"
                            .to_string(),
                    ),
                    Ok(_) => Err(format!("HTTP {status}")),
                    Err(e) => Err(format!("reading body: {e}")),
                }
            }
            Err(e) => Err(describe(&e)),
        };
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        shared.ops.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(body) => {
                t.ok += 1;
                t.hist.record(micros);
                if keep_ids
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Some(id) = v.get("id").and_then(|v| v.as_str())
                {
                    t.created.push(id.to_string());
                }
            }
            Err(kind) => t.error(kind),
        }
    }
    (w, t)
}

fn pick(w: &mut Worker, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    usize::try_from(w.next_u64() % n as u64).unwrap_or(0)
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    // The source chain says why (TLS, reset, ...); it never holds a card number.
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// Established TCP connections from this machine to `port` on loopback (both families),
/// counted from `/proc/net/tcp{,6}`: proof that there really are N connections.
pub fn established_to(port: u16) -> Option<usize> {
    let want = format!(":{port:04X}");
    let mut n = 0;
    let mut any = false;
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        any = true;
        n += text
            .lines()
            .skip(1)
            .filter(|l| {
                let mut it = l.split_whitespace();
                let (_, _local, remote, st) = (it.next(), it.next(), it.next(), it.next());
                st == Some("01") && remote.is_some_and(|r| r.ends_with(&want))
            })
            .count();
    }
    any.then_some(n)
}
