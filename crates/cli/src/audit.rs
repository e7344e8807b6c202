//! `strongroom audit verify` and `strongroom audit export`: read the audit log straight
//! from the database (no server needed), so an auditor can check a copy offline.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use strongroom_crypto::RootKey;
use strongroom_crypto::audit::AuditSigner;
use strongroom_store::{AuditQuery, AuditStore, Store, StoreConfig};

/// Which database to read.
#[derive(Args, Debug, Clone)]
pub struct Source {
    /// A `strongroom dev` data directory (its SQLite file and dev root key).
    #[arg(
        long,
        conflicts_with = "database_url",
        required_unless_present = "database_url"
    )]
    pub data_dir: Option<PathBuf>,
    /// A database URL (`sqlite://PATH` or `postgres://…`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// PostgreSQL only: the schema.
    #[arg(long, requires = "database_url")]
    pub database_schema: Option<String>,
    /// The root key file, to check checkpoint signatures against the audit key derived
    /// from it (default with --data-dir: its dev root key).
    #[arg(long)]
    pub root_key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; exits non-zero and names the
    /// first broken record if the log was modified, reordered, cut or extended.
    Verify {
        #[command(flatten)]
        source: Source,
    },
    /// Write records as JSON lines on stdout, oldest first.
    Export {
        #[command(flatten)]
        source: Source,
        /// Only records at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only records after this sequence number (for incremental shipping).
        #[arg(long)]
        after_seq: Option<i64>,
    },
}

fn store_config(s: &Source) -> Result<StoreConfig> {
    let url = match (&s.data_dir, &s.database_url) {
        (Some(dir), None) => {
            let db = dir.join("strongroom.db");
            if !db.is_file() {
                bail!("no database at {}", db.display());
            }
            format!("sqlite://{}", db.display())
        }
        (None, Some(url)) => url.clone(),
        _ => bail!("give --data-dir or --database-url"),
    };
    Ok(StoreConfig {
        url,
        schema: s.database_schema.clone(),
        max_connections: 2,
    })
}

fn root_key(s: &Source) -> Result<Option<RootKey>> {
    let path = match (&s.root_key_file, &s.data_dir) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) if dir.join("root.key").is_file() => dir.join("root.key"),
        _ => return Ok(None),
    };
    let head = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if head.starts_with(crate::dev::DEV_KEY_MARKER.as_bytes()) {
        crate::dev::dev_root_key(&path).map(Some)
    } else {
        crate::config::load_root_key(&path).map(Some)
    }
}

async fn open(s: &Source) -> Result<Store> {
    Store::connect(&store_config(s)?)
        .await
        .map_err(|e| anyhow!("cannot open the database: {e}"))
}

pub async fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify { source } => {
            let key = root_key(&source)?;
            let pk = match &key {
                Some(k) => Some(
                    AuditSigner::derive(k)
                        .map_err(|_| anyhow!("cannot derive the audit key"))?
                        .public_key(),
                ),
                None => None,
            };
            let store = open(&source).await?;
            let result = strongroom_server::audit::verify(&store, pk.as_deref()).await;
            store.close().await;
            let v = result.map_err(|e| anyhow!("cannot read the audit log: {}", e.code))?;
            if let Some(b) = v.broken {
                bail!(
                    "audit log BROKEN at record {}: {b} ({} records verified before it)",
                    b.position(),
                    b.position().saturating_sub(1).min(v.records)
                );
            }
            println!(
                "audit log OK: {} records, {} checkpoints{}",
                v.records,
                v.checkpoints,
                if pk.is_some() {
                    ", signatures checked against the root key's audit key"
                } else {
                    "; no root key given: signatures checked only against the keys recorded in the checkpoints"
                }
            );
            Ok(())
        }
        AuditCommand::Export {
            source,
            since,
            after_seq,
        } => {
            let since_ms = match since {
                Some(t) => {
                    let t = time::OffsetDateTime::parse(
                        &t,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_err(|_| anyhow!("--since must be an RFC 3339 time"))?;
                    Some(i64::try_from(t.unix_timestamp_nanos() / 1_000_000)?)
                }
                None => None,
            };
            let store = open(&source).await?;
            let result = export(&store, since_ms, after_seq.unwrap_or(0)).await;
            store.close().await;
            result
        }
    }
}

async fn export(store: &Store, since_ms: Option<i64>, mut after: i64) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let q = AuditQuery {
            since_ms,
            after_seq: Some(after),
            limit: 1000,
            ..AuditQuery::default()
        };
        let rows = store
            .list_audit(&q)
            .await
            .map_err(|e| anyhow!("cannot read the audit log: {e}"))?;
        for r in &rows {
            serde_json::to_writer(&mut out, &strongroom_server::audit::record_json(r))?;
            out.write_all(b"\n")?;
            after = r.seq;
        }
        if rows.len() < 1000 {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
