//! `--spawn`: a fresh `strongroom dev` child on a temporary data directory and a free
//! loopback port. The child is killed and the directory removed when this is dropped, on
//! success and on error alike.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::conn::{Conn, Target};

/// The fields of `dev.json` the bench uses.
#[derive(Deserialize)]
pub struct DevJson {
    pub url: String,
    pub ca_cert: String,
    pub secret_key: String,
    /// The relay scenarios approve their echo processor with these.
    pub admin_key: String,
    pub account_id: String,
}

pub struct SpawnedServer {
    child: Child,
    dir: PathBuf,
    /// The child's stderr (its log), kept to flush it between phases ([`Self::settle`]).
    log: std::fs::File,
    keep_dir: bool,
    /// PostgreSQL URL and the run's schema, dropped with the server.
    pg: Option<(String, String)>,
    pub dev: DevJson,
}

impl SpawnedServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The port the server listens on, from its URL in `dev.json`.
    pub fn port(&self) -> Result<Option<u16>> {
        Ok(self
            .dev
            .url
            .parse::<http::Uri>()
            .with_context(|| format!("bad url {}", self.dev.url))?
            .port_u16())
    }

    /// Writes the server's logs out to disk before a measured phase: its stderr and the
    /// files under `logs/` in its data dir. The server logs every request, twice, so a
    /// preload or a floor phase leaves hundreds of MB of log in the OS cache (a 20-second
    /// floor), and the kernel writes that out 30 s later, inside whichever phase is running
    /// then: a drop in a tokenize phase, whose every commit waits on the same disk. Flushed here, between
    /// phases, each phase pays only for its own writes.
    pub async fn settle(&self) {
        let mut files = vec![self.log.try_clone()];
        if let Ok(entries) = std::fs::read_dir(self.dir.join("logs")) {
            files.extend(entries.flatten().map(|e| std::fs::File::open(e.path())));
        }
        let flushed = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .try_for_each(|f| f.and_then(|f| f.sync_data()))
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            eprintln!("  warning: could not flush the server's logs before the phase");
        }
    }

    /// Starts `BIN dev --data-dir TMP --listen 127.0.0.1:PORT` and waits (up to
    /// `timeout`) for `dev.json` and for `GET /healthz` to answer 200.
    /// `database_url`: a PostgreSQL URL for the server instead of its embedded SQLite; the
    /// server then uses a fresh schema `bench_<pid>` in that database.
    pub async fn start(
        bin: &Path,
        keep_dir: bool,
        database_url: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        if !bin.is_file() {
            bail!(
                "server binary {} not found: build it with `cargo build --release -p strongroom-cli` or pass --server-bin",
                bin.display()
            );
        }
        let dir = std::env::temp_dir().join(format!("strongroom-bench-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("server.stderr.log"))?;
        let log_handle = log.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // The load generator measures the vault, not the 100/min default rate limit.
            .arg("--rate-limit-per-minute")
            .arg("1000000")
            .arg("--relay-rate-limit-per-minute")
            .arg("1000000");
        let pg = database_url.map(|url| (url.to_owned(), format!("bench_{}", std::process::id())));
        if let Some((url, schema)) = &pg {
            cmd.arg("--database-url")
                .arg(url)
                .arg("--database-schema")
                .arg(schema);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // From here on, Drop kills the child.
        let mut server = Self {
            child,
            dir,
            log: log_handle,
            keep_dir,
            pg,
            dev: DevJson {
                url: String::new(),
                ca_cert: String::new(),
                secret_key: String::new(),
                admin_key: String::new(),
                account_id: String::new(),
            },
        };
        let deadline = Instant::now() + timeout;
        let dev_path = server.dir.join("dev.json");
        let dev: DevJson = loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited with {status} before it was ready; see {}",
                    server.dir.join("server.stderr.log").display()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&dev_path)
                && let Ok(dev) = serde_json::from_str(&text)
            {
                break dev;
            }
            if Instant::now() > deadline {
                bail!("no {} after {timeout:?}", dev_path.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        check_loopback(&dev.url)?;
        server.dev = dev;
        let url = server.dev.url.trim_end_matches('/').to_owned();
        let target = std::sync::Arc::new(Target::new(&url, &server.dev.ca_cert, false).await?);
        let mut conn = Conn::new(target.clone());
        let health = format!("{url}/healthz");
        loop {
            if let Ok(req) = target.request(http::Method::GET, "/healthz", None, None)
                && let Ok((status, _)) = conn.send(req).await
                && status.is_success()
            {
                break;
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited with {status} before /healthz answered");
            }
            if Instant::now() > deadline {
                bail!("{health} did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some((url, schema)) = self.pg.take() {
                drop_schema(url, schema);
            }
        }
    }
}

/// Drops the run's PostgreSQL schema (tables, cards, audit log). Runs on a thread of its
/// own with its own runtime: `Drop` may run inside the bench's async runtime, where a
/// nested `block_on` would panic.
fn drop_schema(url: String, schema: String) {
    let done = std::thread::spawn(move || -> Result<()> {
        use sqlx::Connection;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut c =
                tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&url))
                    .await??;
            // Safe to format: the name is `bench_` and this process's id, never input.
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await?;
            c.close().await?;
            Ok(())
        })
    })
    .join();
    if !matches!(done, Ok(Ok(()))) {
        eprintln!(
            "could not drop the run's PostgreSQL schema; drop it by hand: DROP SCHEMA bench_{} CASCADE",
            std::process::id()
        );
    }
}

/// A port that was free a moment ago (bind to :0, read it back, release it).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(l.local_addr()?.port())
}

/// In `--spawn` mode, traffic goes only to loopback: refuse any other URL.
pub fn check_loopback(url: &str) -> Result<()> {
    let u: http::Uri = url.parse().with_context(|| format!("bad url {url}"))?;
    let ok = u
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback());
    if !ok {
        bail!("refusing to send --spawn traffic to {url}: only 127.0.0.1 or ::1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_only() {
        assert!(super::check_loopback("https://127.0.0.1:8443").is_ok());
        assert!(super::check_loopback("https://[::1]:8443").is_ok());
        assert!(super::check_loopback("https://localhost:8443").is_err());
        assert!(super::check_loopback("https://10.0.0.1:8443").is_err());
    }
}
