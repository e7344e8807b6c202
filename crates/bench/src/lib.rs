//! `strongroom-bench`: a load generator for Strongroom that a user runs on their own
//! hardware, as `strongroom bench …` or as its own `strongroom-bench` binary. See
//! BENCHMARKS.md at the repository root for the commands and the figures.

mod conn;
pub mod echo;
mod hist;
mod load;
mod p2pe;
mod pan;
mod procfs;
mod relay;
mod risk;
mod spawn;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use http::HeaderValue;
use serde::Serialize;

use load::{Scenario, Shared, Tally, Worker};

/// The names of the server's writer thread (`strongroom_store`): SQLite's or PostgreSQL's.
const WRITER_THREADS: [&str; 2] = ["sqlite-writer", "pg-writer"];

/// Load generator for a Strongroom vault: tokenize / get / mixed throughput and latency,
/// each quoted against the "floor" (GET /healthz over the same TLS and HTTP stack).
///
/// Either --spawn (a fresh release server on a temporary data dir, loopback only) or
/// --target URL --key KEY (a running deployment; server CPU and RSS are then null).
///
/// With --spawn, --database-url postgres://… runs the spawned server on PostgreSQL (a
/// fresh schema `bench_<pid>` in that database) instead of its embedded SQLite.
#[derive(Parser, Debug)]
#[command(name = "strongroom-bench", version)]
struct Args {
    /// Start a fresh `strongroom dev` server as a child process (killed at the end).
    #[arg(long, conflicts_with = "target")]
    spawn: bool,
    /// The `strongroom` binary for --spawn [default: `strongroom` beside this executable].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Keep the spawned server's temporary data dir (logs, database) after the run, and with
    /// --database-url its PostgreSQL schema.
    #[arg(long)]
    keep_data_dir: bool,
    /// PostgreSQL URL for the spawned server (a fresh schema `bench_<pid>` is used).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Base URL of a running deployment (instead of --spawn).
    #[arg(long, value_name = "URL", requires = "key")]
    target: Option<String>,
    /// Base URLs of several nodes of one deployment (`strongroom cluster up`): the
    /// connections are spread over them in turn (instead of --target).
    #[arg(long, value_name = "URL,URL…", value_delimiter = ',', conflicts_with_all = ["spawn", "target"], requires = "key")]
    targets: Vec<String>,
    /// Secret API key (sk_test_…) for --target.
    #[arg(long, env = "STRONGROOM_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// CA certificate (PEM) to trust for --target.
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<String>,
    /// Admin key (sk_admin_…) for the relay scenarios with --target: the bench adds its
    /// echo processor to --account's relay destinations, and puts them back at the end.
    #[arg(long, env = "STRONGROOM_BENCH_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// The account of --key, for the relay scenarios with --target.
    #[arg(long, value_name = "ACCOUNT_ID")]
    account: Option<String>,
    /// Scenarios to run, in order: floor, tokenize, get, mixed, auth (get with a bearer
    /// JWT from POST /v1/auth/token instead of the key), relay (POST /v1/relay to a
    /// loopback echo processor the bench runs, one card substituted), relay-direct (the
    /// same request straight to the echo processor), p2pe (a new card's track 2 enciphered
    /// by an AES-DUKPT terminal, deciphered and tokenized: compare with tokenize).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "floor,tokenize,get,mixed"
    )]
    scenario: Vec<Scenario>,
    /// Connections (one request in flight on each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured time per scenario, e.g. 20s, 1m, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Cards to create before measuring (read by get and mixed).
    #[arg(long, default_value_t = 1000)]
    preload: u64,
    /// Share of reads in `mixed` (the rest are tokenizations).
    #[arg(long, default_value_t = 0.9)]
    mix_get_ratio: f64,
    /// HTTP/1.1 (the default).
    #[arg(long, conflicts_with = "http2")]
    http1: bool,
    /// HTTP/2 with prior knowledge (ALPN h2), one connection per worker.
    #[arg(long)]
    http2: bool,
    /// First index used in the 10^7-number test range 40000000xxxxxxxc. Runs against the
    /// same --target must use disjoint ranges: the bench prints the next free offset.
    #[arg(long, default_value_t = 0)]
    pan_offset: u64,
    /// How many numbers of the range this run may use; the preload takes half at most
    /// [default: the rest of the range with --spawn; with --target, 1000000 or twice
    /// --preload, whichever is more].
    #[arg(long)]
    pan_block: Option<u64>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Set the account's risk switch (off, shadow or enforce) before the scenarios run:
    /// tokenize with and without its implicit assessment. Needs the admin key (given by
    /// --spawn; with --target, --admin-key and --account). Left as it is if not given.
    #[arg(long, value_parser = ["off", "shadow", "enforce"])]
    risk_mode: Option<String>,
}

/// An access token from `POST /v1/auth/token` (valid for the server's token lifetime,
/// an hour by default: longer than any sensible run).
async fn bearer_token(target: &Arc<conn::Target>, auth: &HeaderValue) -> Result<String> {
    let req = target
        .request(http::Method::POST, "/v1/auth/token", Some(auth), None)
        .map_err(|e| anyhow::anyhow!(e))?;
    let (status, body) = conn::Conn::new(target.clone())
        .send(req)
        .await
        .map_err(|e| anyhow::anyhow!("POST /v1/auth/token: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).context("token response")?;
    match v.get("access_token").and_then(|t| t.as_str()) {
        Some(t) if status.is_success() => Ok(t.to_owned()),
        _ => bail!(
            "POST /v1/auth/token answered {status} {}",
            v.pointer("/error/code")
                .and_then(|c| c.as_str())
                .unwrap_or("")
        ),
    }
}

/// `Bearer <secret>` as a header value marked sensitive (never indexed by HPACK, hidden
/// from `Debug`).
fn bearer(secret: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| anyhow::anyhow!("the key or token is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| {
            (s.get(..i).unwrap_or(""), s.get(i..).unwrap_or(""))
        });
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Serialize)]
struct ScenarioResult {
    ops_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    errors: u64,
    server_cpu_us_per_op: Option<f64>,
    /// The server's writer thread's share of it (`--spawn` only): the one thread every
    /// write passes through (on PostgreSQL, the database's own work is not in it).
    writer_cpu_us_per_op: Option<f64>,
    server_peak_rss_mb: Option<f64>,
    floor_ratio: Option<f64>,
    /// Also reported: what the rest of the run looked like.
    ok: u64,
    seconds: f64,
    /// This process's CPU per operation, less the echo processor's threads.
    client_cpu_us_per_op: Option<f64>,
    /// The echo processor's CPU per operation (its threads in this process).
    echo_cpu_us_per_op: Option<f64>,
    /// Share of all the machine's CPU that was busy during the window (0..1).
    machine_cpu_busy: Option<f64>,
    /// Established connections to the server seen mid-run (--spawn only).
    connections: Option<usize>,
    error_kinds: Vec<String>,
}

/// The relay's throughput against the same requests sent straight to the processor.
#[derive(Serialize)]
struct RelaySummary {
    relay_ops_per_s: Option<f64>,
    direct_ops_per_s: Option<f64>,
    /// relay / relay-direct.
    ratio: Option<f64>,
    /// The server's CPU per relay: all of it is the relay's, since the direct requests do
    /// not touch the server.
    server_cpu_us_per_relay: Option<f64>,
}

fn relay_summary(results: &Results) -> Option<RelaySummary> {
    let relay = results.get("relay");
    let direct = results.get("relay-direct");
    if relay.is_none() && direct.is_none() {
        return None;
    }
    let r = relay.map(|r| r.ops_per_s);
    let d = direct.map(|d| d.ops_per_s);
    Some(RelaySummary {
        relay_ops_per_s: r,
        direct_ops_per_s: d,
        ratio: r.zip(d.filter(|d| *d > 0.0)).map(|(r, d)| r / d),
        server_cpu_us_per_relay: relay.and_then(|r| r.server_cpu_us_per_op),
    })
}

#[derive(Serialize)]
struct Config {
    mode: &'static str,
    url: String,
    scenarios: Vec<&'static str>,
    concurrency: usize,
    duration_s: f64,
    preload: u64,
    preloaded: usize,
    mix_get_ratio: f64,
    http: &'static str,
    store: &'static str,
    pan_range: [u64; 2],
    next_pan_offset: u64,
    server_bin: Option<String>,
    /// The risk mode the bench set (`None`: left as the account had it).
    risk_mode: Option<String>,
}

#[derive(Serialize)]
struct Report {
    scenarios: BTreeMap<&'static str, ScenarioResult>,
    /// `relay` against `relay-direct`, when both ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<RelaySummary>,
    /// `p2pe` against `tokenize` of the same run (docs/card-present.md: target ≥ 0.70).
    #[serde(skip_serializing_if = "Option::is_none")]
    p2pe_ratio: Option<f64>,
    machine: procfs::Machine,
    config: Config,
}

/// Parses `args` (the first is the program name) and runs the benchmark on a runtime of
/// its own: call it from outside any tokio runtime.
pub fn main_from<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // On Ctrl-C the `run` future is dropped, and with it the spawned server (killed).
    rt.block_on(async {
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })
}

async fn run(args: Args) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.mix_get_ratio) {
        bail!("--mix-get-ratio must be between 0 and 1");
    }
    if args.pan_offset >= pan::SPACE {
        bail!("--pan-offset must be below {}", pan::SPACE);
    }
    let needs_cards = args
        .scenario
        .iter()
        .any(|s| matches!(s, Scenario::Get | Scenario::Mixed | Scenario::Auth));
    if needs_cards && args.preload == 0 {
        bail!("get and mixed read preloaded cards: give --preload N (N > 0)");
    }
    let http2 = args.http2;
    let machine = procfs::machine();

    // The server: spawned (and killed when `server` drops) or given.
    let mut server = None;
    let mut admin = None;
    let (url, key, ca, server_bin) = if args.spawn {
        let bin = match &args.server_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the executable has no parent directory")?
                .join("strongroom"),
        };
        eprintln!("starting {} dev …", bin.display());
        let s = spawn::SpawnedServer::start(
            &bin,
            args.keep_data_dir,
            args.database_url.as_deref(),
            Duration::from_secs(120),
        )
        .await?;
        eprintln!(
            "server pid {} at {} (data dir {})",
            s.pid(),
            s.dev.url,
            s.data_dir().display()
        );
        admin = Some((s.dev.admin_key.clone(), s.dev.account_id.clone()));
        let t = (
            s.dev.url.clone(),
            s.dev.secret_key.clone(),
            s.dev.ca_cert.clone(),
            Some(bin.display().to_string()),
        );
        server = Some(s);
        t
    } else {
        let first = args
            .target
            .clone()
            .or_else(|| args.targets.first().cloned());
        let (Some(url), Some(key)) = (first, args.key.clone()) else {
            bail!("give either --spawn, or --target URL (or --targets URL,URL…) --key KEY");
        };
        let Some(ca) = args.ca_cert.clone() else {
            bail!("--target needs --ca-cert PEM (the CA that signed the server's certificate)");
        };
        if let (Some(k), Some(a)) = (&args.admin_key, &args.account) {
            admin = Some((k.clone(), a.clone()));
        }
        (url, key, ca, None)
    };
    let admin = match admin {
        Some((key, account)) => Some(relay::Admin {
            key: bearer(&key)?,
            account,
        }),
        None if args.scenario.iter().any(|s| s.needs_admin()) => {
            bail!("the relay and p2pe scenarios with --target need --admin-key and --account")
        }
        None if args.risk_mode.is_some() => {
            bail!("--risk-mode with --target needs --admin-key and --account")
        }
        None => None,
    };
    let url = url.trim_end_matches('/').to_string();
    let result = measure(
        &args,
        http2,
        &url,
        &key,
        &ca,
        admin.as_ref(),
        server.as_ref(),
        server_bin,
        machine,
    )
    .await;
    drop(server); // kills the child, on success and on error
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    http2: bool,
    url: &str,
    key: &str,
    ca: &str,
    admin: Option<&relay::Admin>,
    server: Option<&spawn::SpawnedServer>,
    server_bin: Option<String>,
    machine: procfs::Machine,
) -> Result<()> {
    let n = args.concurrency;
    let port = server
        .map(spawn::SpawnedServer::port)
        .transpose()?
        .flatten();
    let (block, preload) = pan_plan(args)?;
    let range_start = args.pan_offset;
    let range_end = args.pan_offset + block;

    let target = Arc::new(conn::Target::new(url, ca, http2).await?);
    // With --targets, connection w goes to node w mod N (requests are the same on each).
    let mut nodes = Vec::with_capacity(args.targets.len().max(1));
    for t in args.targets.iter().skip(1) {
        nodes.push(Arc::new(
            conn::Target::new(t.trim_end_matches('/'), ca, http2).await?,
        ));
    }
    nodes.insert(0, target.clone());
    let mut workers = Vec::with_capacity(n);
    for w in 0..n {
        let pans =
            pan::PanSlice::for_worker(range_start, range_start + preload, w as u64, n as u64);
        let node = nodes.get(w % nodes.len()).unwrap_or(&target);
        workers.push(Worker::new(
            conn::Conn::new(node.clone()),
            pans,
            w as u64 + 1,
        ));
    }
    let mut shared = Shared {
        target: target.clone(),
        auth: bearer(key)?,
        bearer: HeaderValue::from_static(""),
        ids: Vec::new(),
        get_ratio: args.mix_get_ratio,
        relay: None,
        ops: Default::default(),
    };

    // Open every connection (and do its TLS handshake) before anything is measured.
    let warm = phase(
        workers,
        Arc::new(shared),
        Scenario::Floor,
        None,
        "warm-up",
        Some(1),
    )
    .await?;
    workers = warm.0;
    shared = warm.1;
    if warm.2.ok < n as u64 {
        bail!(
            "only {} of {n} connections answered GET /healthz: {:?}",
            warm.2.ok,
            warm.2.error_kinds
        );
    }

    if let (Some(mode), Some(admin)) = (&args.risk_mode, admin) {
        risk::set_mode(&target, admin, mode).await?;
        eprintln!("the account's risk mode is {mode}");
    }
    let needs_cards = args
        .scenario
        .iter()
        .any(|s| matches!(s, Scenario::Get | Scenario::Mixed | Scenario::Auth));
    if preload > 0 || needs_cards {
        if preload == 0 {
            bail!("get and mixed read preloaded cards: give --preload N (N > 0)");
        }
        eprintln!("preloading {preload} cards over {n} connections …");
        let (ws, sh, t) = phase(
            workers,
            Arc::new(shared),
            Scenario::Tokenize,
            None,
            "preload",
            None,
        )
        .await?;
        workers = ws;
        shared = sh;
        shared.ids = t.created;
        eprintln!("preloaded {} cards ({} errors)", shared.ids.len(), t.errors);
        if t.errors > 0 {
            eprintln!("  preload errors: {:?}", t.error_kinds);
        }
        if needs_cards && shared.ids.is_empty() {
            bail!("no card could be preloaded");
        }
    }
    if args.scenario.contains(&Scenario::Auth) {
        shared.bearer = bearer(&bearer_token(&target, &shared.auth).await?)?;
    }
    // The measured scenarios draw from the rest of the block, a slice per worker.
    for (w, worker) in workers.iter_mut().enumerate() {
        worker.pans =
            pan::PanSlice::for_worker(range_start + preload, range_end, w as u64, n as u64);
    }

    // The relay scenarios: the echo processor, approved for the account, and a card.
    let mut relay = None;
    if let Some(admin) = admin.filter(|_| args.scenario.iter().any(|s| s.relays())) {
        let pan = workers
            .first_mut()
            .and_then(|w| w.pans.next_pan())
            .context("no card number left for the relay's card")?;
        let r = relay::Relay::setup(&target, &shared.auth, admin, &pan, http2).await?;
        eprintln!(
            "echo processor at https://{} (its own runtime, {} threads)",
            r.echo.addr,
            relay::ECHO_THREADS
        );
        for w in &mut workers {
            w.echo = Some(conn::Conn::new(r.plan.echo.clone()));
        }
        shared.relay = Some(r.plan.clone());
        relay = Some(r);
    }
    // The p2pe scenario: a BDK imported under dual control, a terminal per connection.
    if let Some(admin) = admin.filter(|_| args.scenario.contains(&Scenario::P2pe)) {
        let terminals = p2pe::setup(&target, &shared.auth, admin, workers.len()).await?;
        eprintln!(
            "{} AES-DUKPT terminals registered under a new BDK",
            terminals.len()
        );
        for (w, t) in workers.iter_mut().zip(terminals) {
            w.terminal = Some(t);
        }
    }
    let echo_port = relay.as_ref().map(|r| r.echo.addr.port());
    let measured = scenarios(args, workers, shared, server, port, echo_port).await;
    if let (Some(r), Some(admin)) = (&relay, admin)
        && !args.spawn
        && let Err(e) = r.restore(&target, admin).await
    {
        eprintln!("  warning: the account's relay destinations were not put back: {e:#}");
    }
    drop(relay);
    let (results, shared) = measured?;
    report(
        args,
        results,
        &shared,
        url,
        machine,
        server_bin,
        http2,
        preload,
        range_start,
        range_end,
    )
}

type Results = BTreeMap<&'static str, ScenarioResult>;

/// Runs the measured scenarios in turn.
async fn scenarios(
    args: &Args,
    mut workers: Vec<Worker>,
    shared: Shared,
    server: Option<&spawn::SpawnedServer>,
    port: Option<u16>,
    echo_port: Option<u16>,
) -> Result<(Results, Shared)> {
    let n = args.concurrency;
    let pid = server.map(spawn::SpawnedServer::pid);
    let mut shared = shared;
    // Open the echo connections, and the server's to the echo, before the clock starts.
    for s in [Scenario::RelayDirect, Scenario::Relay] {
        if args.scenario.contains(&s) {
            let (ws, sh, t) = phase(workers, Arc::new(shared), s, None, "warm-up", Some(1)).await?;
            (workers, shared) = (ws, sh);
            if t.ok < n as u64 {
                bail!(
                    "warm-up of {}: {} of {n} answered: {:?}",
                    s.name(),
                    t.ok,
                    t.error_kinds
                );
            }
        }
    }
    let mut results: Results = BTreeMap::new();
    let mut shared = Arc::new(shared);
    for &scenario in &args.scenario {
        if let Some(s) = server {
            s.settle().await;
        }
        if let Some(pid) = pid {
            procfs::reset_peak_rss(pid);
        }
        let cpu0 = pid.and_then(procfs::cpu_micros);
        let me0 = procfs::cpu_micros(std::process::id());
        let echo0 = procfs::threads_cpu_micros(echo::THREAD_NAME);
        let writer_cpu = |pid: Option<u32>| {
            let of = |p: u32| {
                WRITER_THREADS
                    .iter()
                    .find_map(|name| procfs::process_threads_cpu_micros(p, name))
            };
            pid.and_then(of)
        };
        let writer0 = writer_cpu(pid);
        let m0 = procfs::machine_ticks();
        let start = Instant::now();
        let conns_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (ws, sh, t) = phase_with(
            workers,
            shared,
            scenario,
            Some(args.duration),
            scenario.name(),
            None,
            match scenario {
                Scenario::RelayDirect => echo_port,
                _ => port,
            }
            .map(|p| (p, conns_seen.clone())),
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        workers = ws;
        shared = Arc::new(sh);
        let cpu1 = pid.and_then(procfs::cpu_micros);
        let me1 = procfs::cpu_micros(std::process::id());
        let echo1 = procfs::threads_cpu_micros(echo::THREAD_NAME);
        let writer1 = writer_cpu(pid);
        let m1 = procfs::machine_ticks();
        let total = t.ok + t.errors;
        let per_op = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if total > 0 => Some(b.saturating_sub(a) as f64 / total as f64),
            _ => None,
        };
        let busy = match (m0, m1) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(b1.saturating_sub(b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        let ms = |q| t.hist.quantile(q).map(|us| us as f64 / 1000.0);
        if t.exhausted {
            eprintln!("  warning: some workers used up their PAN slice and stopped early");
        }
        if t.errors > 0 {
            eprintln!("  {} errors, e.g. {:?}", t.errors, t.error_kinds);
        }
        results.insert(
            scenario.name(),
            ScenarioResult {
                ops_per_s: t.ok as f64 / secs,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
                errors: t.errors,
                server_cpu_us_per_op: per_op(cpu0, cpu1),
                writer_cpu_us_per_op: per_op(writer0, writer1),
                server_peak_rss_mb: pid.and_then(procfs::peak_rss_mb),
                floor_ratio: None,
                ok: t.ok,
                seconds: secs,
                // The echo processor runs in this process: its threads are counted apart.
                client_cpu_us_per_op: per_op(me0, me1)
                    .map(|c| c - per_op(echo0, echo1).unwrap_or(0.0)),
                echo_cpu_us_per_op: per_op(echo0, echo1),
                machine_cpu_busy: busy,
                connections: port.map(|_| conns_seen.load(Ordering::Relaxed)),
                error_kinds: t.error_kinds,
            },
        );
    }
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("worker state still shared after the scenarios"))?;
    Ok((results, shared))
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    mut results: Results,
    shared: &Shared,
    url: &str,
    machine: procfs::Machine,
    server_bin: Option<String>,
    http2: bool,
    preload: u64,
    range_start: u64,
    range_end: u64,
) -> Result<()> {
    let n = args.concurrency;
    let floor = results.get("floor").map(|r| r.ops_per_s);
    if let Some(f) = floor.filter(|f| *f > 0.0) {
        for r in results.values_mut() {
            r.floor_ratio = Some(r.ops_per_s / f);
        }
    }

    print_table(&results);
    let relay = relay_summary(&results);
    if let Some(r) = &relay {
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        println!(
            "relay {} ops/s against relay-direct {} ops/s: ratio {} (target ≥ 0.40); server µs per relay {} (target ≤ 60)",
            f(r.relay_ops_per_s, 0),
            f(r.direct_ops_per_s, 0),
            f(r.ratio, 3),
            f(r.server_cpu_us_per_relay, 1),
        );
    }
    let p2pe_ratio = results
        .get("p2pe")
        .zip(results.get("tokenize").filter(|t| t.ops_per_s > 0.0))
        .map(|(p, t)| p.ops_per_s / t.ops_per_s);
    if let Some(r) = p2pe_ratio {
        println!("p2pe against tokenize: ratio {r:.3} (target ≥ 0.70)");
    }
    let used_end = range_end; // every worker's slice lies within [start, end)
    if !args.spawn {
        eprintln!(
            "this run used PANs {range_start}..{used_end} of the test range; next run against the same target: --pan-offset {}",
            used_end % pan::SPACE
        );
    }
    let report = Report {
        scenarios: results,
        relay,
        p2pe_ratio,
        machine,
        config: Config {
            mode: if args.spawn { "spawn" } else { "target" },
            url: url.to_string(),
            scenarios: args.scenario.iter().map(|s| s.name()).collect(),
            concurrency: n,
            duration_s: args.duration.as_secs_f64(),
            preload,
            preloaded: shared.ids.len(),
            mix_get_ratio: args.mix_get_ratio,
            http: if http2 { "http2" } else { "http1" },
            store: match (args.spawn, args.database_url.is_some()) {
                (true, false) => "sqlite (strongroom dev)",
                (true, true) => "postgres (strongroom dev --database-url)",
                (false, _) => "unknown (target)",
            },
            pan_range: [range_start, used_end],
            next_pan_offset: used_end % pan::SPACE,
            server_bin,
            risk_mode: args.risk_mode.clone(),
        },
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

type PhaseOut = (Vec<Worker>, Shared, Tally);

async fn phase(
    workers: Vec<Worker>,
    shared: Arc<Shared>,
    scenario: Scenario,
    duration: Option<Duration>,
    label: &str,
    per_worker: Option<u64>,
) -> Result<PhaseOut> {
    phase_with(workers, shared, scenario, duration, label, per_worker, None).await
}

/// Runs every worker for `duration` (or, without one, until its PAN slice is used up,
/// within a 30-minute bound), with a progress line on stderr each second.
async fn phase_with(
    workers: Vec<Worker>,
    shared: Arc<Shared>,
    scenario: Scenario,
    duration: Option<Duration>,
    label: &str,
    per_worker: Option<u64>,
    conns: Option<(u16, Arc<std::sync::atomic::AtomicUsize>)>,
) -> Result<PhaseOut> {
    shared.ops.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = start + duration.unwrap_or(Duration::from_secs(1800));
    let keep_ids = duration.is_none() && scenario == Scenario::Tokenize;
    let mut handles = Vec::with_capacity(workers.len());
    for w in workers {
        let shared = shared.clone();
        handles.push(tokio::spawn(load::run(
            w, shared, scenario, deadline, keep_ids, per_worker,
        )));
    }
    // Progress, each second, until every worker is done.
    let progress = {
        let shared = shared.clone();
        let label = label.to_string();
        let count = move || {
            conns.as_ref().and_then(|(port, seen)| {
                let n = load::established_to(*port)?;
                seen.fetch_max(n, Ordering::Relaxed);
                Some(n)
            })
        };
        tokio::spawn(async move {
            // Count the connections once midway too, so a run shorter than the first
            // progress line still reports them.
            if let Some(d) = duration.filter(|d| *d < Duration::from_secs(2)) {
                tokio::time::sleep(d / 2).await;
                count();
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let ops = shared.ops.load(Ordering::Relaxed);
                let c = count();
                let c = c.map_or(String::new(), |c| format!("  conns {c}"));
                eprintln!(
                    "[{label}] {:>5.1}s  ops {ops:>9}  {:>8}/s{c}",
                    start.elapsed().as_secs_f64(),
                    ops.saturating_sub(last)
                );
                last = ops;
            }
        })
    };
    let mut out = Vec::with_capacity(handles.len());
    let mut total = Tally::default();
    for h in handles {
        let (w, t) = h.await.context("a worker task failed")?;
        out.push(w);
        total.merge(t);
    }
    progress.abort();
    // Wait for the abort to land, so the progress task's handle on `shared` is gone.
    let _ = progress.await;
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("worker state still shared after the phase"))?;
    Ok((out, shared, total))
}

fn print_table(results: &BTreeMap<&'static str, ScenarioResult>) {
    let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    println!(
        "{:<12} {:>10} {:>8} {:>8} {:>8} {:>7} {:>10} {:>9} {:>10} {:>9} {:>7} {:>6}",
        "scenario",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "srv µs/op",
        "wr µs/op",
        "cli µs/op",
        "srv MiB",
        "floor×",
        "conns"
    );
    // Floor first, then the rest in the order they are usually read.
    for name in [
        "floor",
        "tokenize",
        "get",
        "mixed",
        "auth",
        "relay-direct",
        "relay",
        "p2pe",
    ] {
        let Some(r) = results.get(name) else { continue };
        println!(
            "{:<12} {:>10.0} {:>8} {:>8} {:>8} {:>7} {:>10} {:>9} {:>10} {:>9} {:>7} {:>6}",
            name,
            r.ops_per_s,
            f(r.p50_ms, 2),
            f(r.p99_ms, 2),
            f(r.p999_ms, 2),
            r.errors,
            f(r.server_cpu_us_per_op, 0),
            f(r.writer_cpu_us_per_op, 1),
            f(r.client_cpu_us_per_op, 0),
            f(r.server_peak_rss_mb, 1),
            f(r.floor_ratio, 3),
            r.connections.map_or("-".to_string(), |c| c.to_string()),
        );
    }
}

/// Numbers of the test range a run against a running server uses by default.
const TARGET_BLOCK: u64 = 1_000_000;

/// How many numbers of the test range this run may use, and how many the preload takes:
/// the preload uses the first half of the block at most, the scenarios the rest. Without
/// `--pan-block`, a run against `--target` takes [`TARGET_BLOCK`] or twice the preload,
/// whichever is more. A preload that does not fit is an error, not a smaller preload.
fn pan_plan(args: &Args) -> Result<(u64, u64)> {
    let left = pan::SPACE.saturating_sub(args.pan_offset);
    let block = match args.pan_block {
        Some(b) => b,
        None if args.spawn => left,
        None => TARGET_BLOCK.max(args.preload.saturating_mul(2)),
    }
    .min(left);
    if args.preload > block / 2 {
        bail!(
            "--preload {} does not fit: the preload may use half of this run's {block} numbers \
             of the test range (from --pan-offset {}); give a smaller --preload, a larger \
             --pan-block or a smaller --pan-offset",
            args.preload,
            args.pan_offset
        );
    }
    Ok((block, args.preload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(argv: &[&str]) -> Result<(u64, u64)> {
        pan_plan(&Args::try_parse_from([&["b"], argv].concat()).unwrap())
    }

    #[test]
    fn the_pan_block_makes_room_for_the_preload() {
        let target = [
            "--target",
            "https://127.0.0.1:1",
            "--key",
            "k",
            "--ca-cert",
            "c",
        ];
        assert_eq!(plan(&target).unwrap(), (TARGET_BLOCK, 1000));
        // A million-card preload against a running server is not cut to half a million.
        let big = [&target[..], &["--preload", "1000000"]].concat();
        assert_eq!(plan(&big).unwrap(), (2_000_000, 1_000_000));
        let near_end = [&big[..], &["--pan-offset", "9000000"]].concat();
        assert!(plan(&near_end).is_err());
        let small = [&target[..], &["--pan-block", "1000"]].concat();
        assert!(plan(&small).is_err());
        assert_eq!(
            plan(&["--spawn", "--preload", "1000000"]).unwrap(),
            (pan::SPACE, 1_000_000)
        );
        assert_eq!(
            plan(&["--spawn", "--pan-offset", "4000000"]).unwrap(),
            (pan::SPACE - 4_000_000, 1000)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn args_parse() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "b",
            "--spawn",
            "--scenario",
            "floor,tokenize",
            "--duration",
            "2s",
            "--http2",
        ])
        .unwrap();
        assert_eq!(a.scenario, vec![Scenario::Floor, Scenario::Tokenize]);
        assert!(Args::try_parse_from(["b", "--spawn", "--target", "https://x"]).is_err());
        assert!(Args::try_parse_from(["b", "--http1", "--http2"]).is_err());
    }

    use clap::CommandFactory;
}
