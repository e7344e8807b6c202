//! The request loops. One worker per connection: each owns one [`Conn`] and sends one
//! request at a time, so `--concurrency N` means exactly N keep-alive connections
//! (HTTP/1.1) or N HTTP/2 connections with one stream each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

use crate::conn::{Conn, Target};
use crate::hist::Histogram;
use crate::pan::PanSlice;

/// Longest a single request may take; the loop itself stops at the deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
    /// POST /v1/relay to the bench's loopback echo processor, one card's number and
    /// expiry substituted into a JSON body (expects 200).
    Relay,
    /// The same body with the real values, straight to the echo processor over the
    /// bench's own TLS connections: what `relay` is measured against (expects 200).
    RelayDirect,
    /// POST /v1/terminals/{id}/cards: a new card's track 2 enciphered by an AES-DUKPT
    /// terminal (one per connection) under its next transaction's key (expects 201).
    P2pe,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::Tokenize => "tokenize",
            Self::Get => "get",
            Self::Mixed => "mixed",
            Self::Auth => "auth",
            Self::Relay => "relay",
            Self::RelayDirect => "relay-direct",
            Self::P2pe => "p2pe",
        }
    }

    /// Whether it needs the admin key (to import a BDK and register terminals).
    pub fn needs_admin(self) -> bool {
        self.relays() || self == Self::P2pe
    }

    /// Whether it needs the echo processor and a relayed card.
    pub fn relays(self) -> bool {
        matches!(self, Self::Relay | Self::RelayDirect)
    }
}

/// What the relay scenarios send.
#[derive(Clone)]
pub struct RelayPlan {
    /// The echo processor, reached straight (`relay-direct`).
    pub echo: Arc<Target>,
    /// The processor's path, for `relay-direct`.
    pub path: String,
    /// `POST /v1/relay`'s body: the destination and the body with expressions.
    pub relay_body: Bytes,
    /// The processor's body with the card's real values.
    pub direct_body: Bytes,
}

/// What every worker shares.
pub struct Shared {
    pub target: Arc<Target>,
    /// `Bearer <secret key>` (marked sensitive: HTTP/2 never indexes it).
    pub auth: HeaderValue,
    /// `Bearer <jwt>` from `POST /v1/auth/token` (`auth` scenario).
    pub bearer: HeaderValue,
    /// Card ids to read (`get`, `mixed`).
    pub ids: Vec<String>,
    pub get_ratio: f64,
    /// The relay scenarios' requests (when one of them runs).
    pub relay: Option<RelayPlan>,
    /// Requests completed so far in the current phase (for the progress line).
    pub ops: AtomicU64,
}

/// One connection's worth of state, moved into its task and handed back at the end.
pub struct Worker {
    pub conn: Conn,
    /// A connection to the echo processor (`relay-direct`).
    pub echo: Option<Conn>,
    pub pans: PanSlice,
    /// This connection's terminal (`p2pe`).
    pub terminal: Option<crate::p2pe::Terminal>,
    rng: u64,
}

impl Worker {
    pub fn new(conn: Conn, pans: PanSlice, seed: u64) -> Self {
        Self {
            conn,
            echo: None,
            pans,
            terminal: None,
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
    Relay,
    RelayDirect,
    P2pe(String),
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
    let target = &shared.target;
    while Instant::now() < deadline && max_ops.is_none_or(|m| t.ok + t.errors < m) {
        let op = match scenario {
            Scenario::Floor => Op::Floor,
            Scenario::Relay => Op::Relay,
            Scenario::RelayDirect => Op::RelayDirect,
            Scenario::Auth => Op::AuthGet(pick(&mut w, shared.ids.len())),
            Scenario::Get => Op::Get(pick(&mut w, shared.ids.len())),
            Scenario::P2pe => match w.pans.next_pan() {
                Some(p) => Op::P2pe(p),
                None => {
                    t.exhausted = true;
                    break;
                }
            },
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
        let card = |i: &usize| {
            let id = shared.ids.get(*i).map_or("", String::as_str);
            format!("/v1/cards/{id}")
        };
        let (req, expect) = match &op {
            Op::Floor => (
                target.request(Method::GET, "/healthz", None, None),
                StatusCode::OK,
            ),
            Op::Tokenize(pan) => (
                target.request(
                    Method::POST,
                    "/v1/cards",
                    Some(&shared.auth),
                    Some(Bytes::from(format!(
                        r#"{{"number":"{pan}","exp_month":12,"exp_year":2030}}"#
                    ))),
                ),
                StatusCode::CREATED,
            ),
            Op::Get(i) => (
                target.request(Method::GET, &card(i), Some(&shared.auth), None),
                StatusCode::OK,
            ),
            Op::P2pe(pan) => (
                match w.terminal.as_mut() {
                    Some(term) => term.next_body(pan).and_then(|body| {
                        target.request(Method::POST, &term.path, Some(&shared.auth), Some(body))
                    }),
                    None => Err("no terminal".to_string()),
                },
                StatusCode::CREATED,
            ),
            Op::AuthGet(i) => (
                target.request(Method::GET, &card(i), Some(&shared.bearer), None),
                StatusCode::OK,
            ),
            Op::Relay => (
                match &shared.relay {
                    Some(r) => target.request(
                        Method::POST,
                        "/v1/relay",
                        Some(&shared.auth),
                        Some(r.relay_body.clone()),
                    ),
                    None => Err("no relay plan".to_string()),
                },
                StatusCode::OK,
            ),
            Op::RelayDirect => (
                match &shared.relay {
                    Some(r) => {
                        r.echo
                            .request(Method::POST, &r.path, None, Some(r.direct_body.clone()))
                    }
                    None => Err("no relay plan".to_string()),
                },
                StatusCode::OK,
            ),
        };
        let conn = match (&op, &mut w.echo) {
            (Op::RelayDirect, Some(echo)) => echo,
            (Op::RelayDirect, None) => {
                t.error("no connection to the echo processor".to_string());
                break;
            }
            _ => &mut w.conn,
        };
        let start = Instant::now();
        let outcome = match req {
            Ok(req) => match tokio::time::timeout(REQUEST_TIMEOUT, conn.send(req)).await {
                Ok(Ok((status, body))) if status == expect => Ok(body),
                Ok(Ok((StatusCode::OK, _))) if expect == StatusCode::CREATED => Err(
                    "200 instead of 201: card already existed (use another --pan-offset)"
                        .to_string(),
                ),
                Ok(Ok((status, _))) => Err(format!("HTTP {status}")),
                Ok(Err(e)) => Err(e),
                Err(_) => {
                    // The request may still be in flight: never reuse that connection.
                    conn.reset();
                    Err("timeout".to_string())
                }
            },
            Err(e) => Err(e),
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
