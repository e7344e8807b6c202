//! `strongroom cluster`: several development nodes on one PostgreSQL database and one
//! Redis, in one command, for trying scale-out and for fault drills (docs/scale-out.md).
//! Never for production: each node is a `strongroom dev` process (loopback only, the dev
//! root key file shared by copy).
//!
//! `up` starts node 1, which makes the schema, the root key, the TLS chain and the dev
//! account; the others start from copies of what it made, so that every node has the same
//! root key, certificate and keys. Each node runs in its own process group and outlives
//! the command; `cluster.json` (mode 0600) says where they are. `kill --node N` stops a
//! node at once (SIGKILL), `start --node N` starts it again with the same arguments,
//! `down` stops them all (SIGTERM, then SIGKILL after 10 s).

use crate::dev::{DevJson, write_private};
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file that describes a cluster, in its data directory.
pub const CLUSTER_JSON: &str = "cluster.json";
/// How long a node has to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Start N nodes on one PostgreSQL schema and one Redis.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// How many nodes (1–16).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
        nodes: u8,
        /// The first node's port; the others take the next ones.
        #[arg(long, default_value_t = 9443)]
        port: u16,
        /// The PostgreSQL database the nodes share.
        #[arg(
            long,
            env = "STRONGROOM_CLUSTER_DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        database_url: String,
        /// The schema (created if missing); default: the one this data directory used
        /// before, or a new `strongroom_cluster_…`.
        #[arg(long)]
        database_schema: Option<String>,
        /// The Redis the nodes share (rate limits, idempotency, held CVCs, risk counters).
        #[arg(
            long,
            env = "STRONGROOM_CLUSTER_REDIS_URL",
            default_value = "redis://127.0.0.1:6379"
        )]
        redis_url: String,
        /// Per-credential rate limit, requests per minute (default 100).
        #[arg(long)]
        rate_limit_per_minute: Option<u32>,
        /// Where HAProxy listens in front of the nodes (TLS passed through), when
        /// `haproxy` is installed; default: the port before the first node's.
        #[arg(long)]
        proxy_port: Option<u16>,
    },
    /// Each node: its process and `/readyz`.
    Status {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Stop every node.
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Kill node N at once (SIGKILL), for fault drills.
    Kill {
        #[command(flatten)]
        dir: DirArg,
        /// The node (1-based).
        #[arg(long)]
        node: usize,
    },
    /// Start node N again, with the arguments it had.
    Start {
        #[command(flatten)]
        dir: DirArg,
        /// The node (1-based).
        #[arg(long)]
        node: usize,
    },
}

#[derive(clap::Args)]
pub struct DirArg {
    /// The cluster's data directory.
    #[arg(long, default_value = "./.strongroom-cluster")]
    data_dir: PathBuf,
}

/// One node in `cluster.json`.
#[derive(Serialize, Deserialize, Clone)]
pub struct Node {
    pub url: String,
    /// `null` when it is not running (after `kill` or `down`).
    pub pid: Option<u32>,
    pub metrics_url: Option<String>,
    /// Its data directory (logs, dev.json).
    pub data_dir: String,
    /// The `strongroom` arguments it runs with.
    pub args: Vec<String>,
}

/// HAProxy in front of the nodes.
#[derive(Serialize, Deserialize, Clone)]
pub struct Proxy {
    /// One URL for the whole cluster.
    pub url: String,
    /// `null` after `down`.
    pub pid: Option<u32>,
    /// Its configuration file.
    pub config: String,
}

/// What `cluster.json` holds: what a client needs, and what `start` needs.
#[derive(Serialize, Deserialize)]
pub struct ClusterJson {
    pub nodes: Vec<Node>,
    /// HAProxy in front of the nodes, when it is installed.
    #[serde(default)]
    pub proxy: Option<Proxy>,
    pub ca_cert: String,
    pub account_id: String,
    pub secret_key: String,
    pub publishable_key: String,
    pub admin_key: String,
    pub database_url: String,
    pub database_schema: String,
    pub redis_url: String,
    pub root_key_file: String,
}

pub async fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Up {
            dir,
            nodes,
            port,
            database_url,
            database_schema,
            redis_url,
            rate_limit_per_minute,
            proxy_port,
        } => {
            let up = Up {
                nodes,
                port,
                database_url,
                database_schema,
                redis_url,
                rate_limit_per_minute,
                proxy_port,
            };
            up.run(&dir.data_dir).await
        }
        ClusterCommand::Status { dir } => status(&dir.data_dir).await,
        ClusterCommand::Down { dir } => down(&dir.data_dir).await,
        ClusterCommand::Kill { dir, node } => kill(&dir.data_dir, node),
        ClusterCommand::Start { dir, node } => start(&dir.data_dir, node).await,
    }
}

struct Up {
    nodes: u8,
    port: u16,
    database_url: String,
    database_schema: Option<String>,
    redis_url: String,
    rate_limit_per_minute: Option<u32>,
    proxy_port: Option<u16>,
}

impl Up {
    async fn run(self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let before = read(&dir).ok();
        if let Some(b) = &before
            && (b.nodes.iter().any(|n| n.pid.is_some_and(alive))
                || b.proxy.as_ref().is_some_and(|p| p.pid.is_some_and(alive)))
        {
            bail!(
                "a cluster is already running from {} (`strongroom cluster down` first)",
                dir.display()
            );
        }
        let schema = match (&self.database_schema, &before) {
            (Some(s), _) => s.clone(),
            (None, Some(b)) => b.database_schema.clone(),
            (None, None) => format!("strongroom_cluster_{}", crate::dev::hex_encode(&rand4()?)),
        };
        if !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("--database-schema: lowercase letters, digits and _ only");
        }
        let mut nodes = Vec::new();
        for i in 1..=usize::from(self.nodes) {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let port = self
                .port
                .checked_add(u16::try_from(i - 1)?)
                .ok_or_else(|| anyhow!("--port: no room for {} nodes", self.nodes))?;
            let mut args = vec![
                "dev".to_owned(),
                "--data-dir".to_owned(),
                node_dir.display().to_string(),
                "--listen".to_owned(),
                format!("127.0.0.1:{port}"),
                "--database-url".to_owned(),
                self.database_url.clone(),
                "--database-schema".to_owned(),
                schema.clone(),
                "--redis-url".to_owned(),
                self.redis_url.clone(),
            ];
            if let Some(n) = self.rate_limit_per_minute {
                args.extend(["--rate-limit-per-minute".to_owned(), n.to_string()]);
            }
            if i > 1 {
                // The first node made the root key, the TLS chain and the dev account.
                let first = dir.join("node1");
                copy_tree(&first.join("tls"), &node_dir.join("tls"))?;
                for f in ["root.key", "dev.json"] {
                    std::fs::copy(first.join(f), node_dir.join(f))
                        .with_context(|| format!("cannot copy {f} from node 1"))?;
                }
            }
            let pid = spawn(&args, &node_dir)?;
            let dev = wait_ready(&node_dir, pid).await?;
            println!("node {i}: {} (pid {pid})", dev.url);
            nodes.push((
                Node {
                    url: dev.url.clone(),
                    pid: Some(pid),
                    metrics_url: dev.metrics_url.clone(),
                    data_dir: node_dir.display().to_string(),
                    args,
                },
                dev,
            ));
        }
        let first = &nodes.first().ok_or_else(|| anyhow!("no nodes"))?.1;
        let proxy_port = match self.proxy_port {
            Some(p) => p,
            None => self.port.saturating_sub(1),
        };
        let proxy = haproxy(
            &dir,
            proxy_port,
            &nodes.iter().map(|(n, _)| n.url.clone()).collect::<Vec<_>>(),
        )
        .await?;
        let cluster = ClusterJson {
            proxy,
            ca_cert: first.ca_cert.clone(),
            account_id: first.account_id.clone(),
            secret_key: first.secret_key.clone(),
            publishable_key: first.publishable_key.clone(),
            admin_key: first.admin_key.clone(),
            database_url: self.database_url.clone(),
            database_schema: schema,
            redis_url: self.redis_url.clone(),
            root_key_file: dir.join("node1").join("root.key").display().to_string(),
            nodes: nodes.into_iter().map(|(n, _)| n).collect(),
        };
        write(&dir, &cluster)?;
        println!(
            "cluster of {} nodes; everything a client needs is in {}",
            cluster.nodes.len(),
            dir.join(CLUSTER_JSON).display()
        );
        Ok(())
    }
}

/// Starts HAProxy in front of `nodes` on `port` (TCP, TLS passed through, a node that
/// refuses connections taken out within two seconds and a refused connection tried on
/// another), if `haproxy` is installed.
async fn haproxy(dir: &Path, port: u16, nodes: &[String]) -> Result<Option<Proxy>> {
    let installed = std::process::Command::new("haproxy")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!("haproxy is not installed: no proxy in front (the nodes are reached directly)");
        return Ok(None);
    }
    let mut cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    \
         timeout server 60s\n    retries 3\n    option redispatch\n\n\
         frontend vault\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\n\
         backend nodes\n    balance roundrobin\n"
    );
    for (i, url) in nodes.iter().enumerate() {
        let addr = url.trim_start_matches("https://");
        cfg.push_str(&format!(
            "    server node{} {addr} check inter 500ms fall 2 rise 1\n",
            i + 1
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("haproxy.log"))?;
    let child = std::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start haproxy")?;
    let pid = child.id();
    // Listening (or exited, on a bad configuration or a port in use).
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if !alive(pid) || Instant::now() > deadline {
            bail!(
                "haproxy did not start; see {}",
                dir.join("haproxy.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("https://127.0.0.1:{port}");
    println!("proxy: {url} (haproxy, pid {pid})");
    Ok(Some(Proxy {
        url,
        pid: Some(pid),
        config: path.display().to_string(),
    }))
}

fn rand4() -> Result<[u8; 4]> {
    strongroom_crypto::random::bytes::<4>().map_err(|e| anyhow!("{e}"))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Starts `strongroom <args>` in its own process group (so that it outlives this command
/// and a Ctrl-C here), its output to `node.log` in its directory.
fn spawn(args: &[String], dir: &Path) -> Result<u32> {
    let exe = std::env::current_exe().context("cannot find the strongroom binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))?;
    let child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        // stdout is `strongroom dev`'s banner, keys included: they are in dev.json (0600)
        // and must not be copied into a log. The logs are on stderr.
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start a node")?;
    Ok(child.id())
}

/// Whether process `pid` runs (and is not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Waits until the node in `dir` answers `/readyz` with its dev.json written.
async fn wait_ready(dir: &Path, pid: u32) -> Result<DevJson> {
    let deadline = Instant::now() + START_TIMEOUT;
    let started = std::fs::metadata(dir.join("dev.json"))
        .and_then(|m| m.modified())
        .ok();
    loop {
        if !alive(pid) {
            bail!(
                "node in {} exited while starting; see {}",
                dir.display(),
                dir.join("node.log").display()
            );
        }
        let fresh = std::fs::metadata(dir.join("dev.json"))
            .and_then(|m| m.modified())
            .ok()
            .is_some_and(|m| started.is_none_or(|s| m > s));
        if fresh
            && let Ok(dev) = crate::dev::load_dev_json(dir)
            && ready(&dev.url, &dev.ca_cert).await
        {
            return Ok(dev);
        }
        if Instant::now() > deadline {
            bail!(
                "node in {} did not start within {START_TIMEOUT:?}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `url` answers `/readyz` with 200.
async fn ready(url: &str, ca: &str) -> bool {
    let Ok(pem) = std::fs::read(ca) else {
        return false;
    };
    let Ok(cert) = reqwest::Certificate::from_pem(&pem) else {
        return false;
    };
    let Ok(client) = reqwest::Client::builder()
        .add_root_certificate(cert)
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn read(dir: &Path) -> Result<ClusterJson> {
    let path = dir.join(CLUSTER_JSON);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no cluster here: {} (run `strongroom cluster up`)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a cluster file", path.display()))
}

fn write(dir: &Path, c: &ClusterJson) -> Result<()> {
    write_private(&dir.join(CLUSTER_JSON), &serde_json::to_vec_pretty(c)?)
}

fn node_mut(c: &mut ClusterJson, n: usize) -> Result<&mut Node> {
    let count = c.nodes.len();
    n.checked_sub(1)
        .and_then(|i| c.nodes.get_mut(i))
        .ok_or_else(|| anyhow!("--node: 1 to {count}"))
}

async fn status(dir: &Path) -> Result<()> {
    let c = read(dir)?;
    for (i, n) in c.nodes.iter().enumerate() {
        let running = n.pid.is_some_and(alive);
        let state = match (running, running && ready(&n.url, &c.ca_cert).await) {
            (true, true) => "ready",
            (true, false) => "running, not ready",
            _ => "down",
        };
        let pid = n.pid.map_or("-".to_owned(), |p| p.to_string());
        println!("node {}: {} pid {pid} {state}", i + 1, n.url);
    }
    if let Some(p) = &c.proxy {
        let state = if p.pid.is_some_and(alive) {
            "running"
        } else {
            "down"
        };
        println!("proxy: {} {state}", p.url);
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .context("cannot run kill")?
        .success();
    if !ok && alive(pid) {
        bail!("cannot signal process {pid}");
    }
    Ok(())
}

fn kill(dir: &Path, node: usize) -> Result<()> {
    let dir = dir.canonicalize()?;
    let mut c = read(&dir)?;
    let n = node_mut(&mut c, node)?;
    match n.pid.take() {
        Some(pid) if alive(pid) => {
            signal(pid, "-KILL")?;
            println!("node {node}: killed (pid {pid})");
        }
        _ => println!("node {node}: not running"),
    }
    write(&dir, &c)
}

async fn start(dir: &Path, node: usize) -> Result<()> {
    let dir = dir.canonicalize()?;
    let mut c = read(&dir)?;
    let n = node_mut(&mut c, node)?;
    if n.pid.is_some_and(alive) {
        bail!("node {node} is running");
    }
    let node_dir = PathBuf::from(&n.data_dir);
    let pid = spawn(&n.args, &node_dir)?;
    let dev = wait_ready(&node_dir, pid).await?;
    n.pid = Some(pid);
    n.metrics_url = dev.metrics_url;
    println!("node {node}: {} (pid {pid})", n.url);
    write(&dir, &c)
}

async fn down(dir: &Path) -> Result<()> {
    let dir = dir.canonicalize()?;
    let mut c = read(&dir)?;
    let proxy = c.proxy.as_ref().and_then(|p| p.pid);
    let pids: Vec<u32> = c
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .chain(proxy)
        .filter(|p| alive(*p))
        .collect();
    for pid in &pids {
        signal(*pid, "-TERM")?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        signal(*pid, "-KILL")?;
    }
    for n in &mut c.nodes {
        n.pid = None;
    }
    if let Some(p) = &mut c.proxy {
        p.pid = None;
    }
    write(&dir, &c)?;
    println!("cluster stopped ({} processes)", pids.len());
    Ok(())
}
