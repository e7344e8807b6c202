//! `strongroom audit verify` and `strongroom audit export`: read the audit log straight
//! from the database (no server needed), so an auditor can check a copy offline.

use crate::db::Db;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use strongroom_crypto::RootKey;
use strongroom_crypto::audit::AuditSigner;
use strongroom_server::audit::{self, anchor};
use strongroom_server::service::audit::AuditRecordView;
use strongroom_store::{AuditCheckpoint, AuditQuery, AuditStore, Store};

/// Which database to read.
#[derive(Args, Debug, Clone)]
pub struct Source {
    #[command(flatten)]
    pub db: Db,
    /// The root key file, to check checkpoint signatures against the audit key derived
    /// from it (default with --data-dir: its dev root key).
    #[arg(long)]
    pub root_key_file: Option<PathBuf>,
    /// The audit anchor (the server's `[audit] anchor_path`) to hold the database to
    /// (default with --data-dir: its audit-anchor.jsonl).
    #[arg(long)]
    pub anchor: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain, the chain of signed checkpoints and the anchor outside the
    /// database; exits non-zero and names the first broken record if the log was
    /// modified, reordered, cut or extended. Prints the newest checkpoint, to keep a copy
    /// elsewhere.
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

fn root_key(s: &Source) -> Result<Option<RootKey>> {
    let path = match (&s.root_key_file, &s.db.data_dir) {
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
    s.db.open().await
}

pub async fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify { source } => verify(&source).await,
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

/// Where the anchor is: given, or the data directory's. `None`: no anchor to check.
fn anchor_path(s: &Source) -> Option<(PathBuf, bool)> {
    match (&s.anchor, &s.db.data_dir) {
        (Some(p), _) => Some((p.clone(), true)),
        (None, Some(dir)) => Some((dir.join(anchor::FILE_NAME), false)),
        (None, None) => None,
    }
}

async fn verify(source: &Source) -> Result<()> {
    let key = root_key(source)?;
    let store = open(source).await?;
    // A rotated root key signs with the digest key it carries.
    let key = match key {
        Some(k) => {
            use strongroom_store::CustodyStore;
            let record = store.root_key().await;
            match record {
                Ok(Some(r)) if strongroom_crypto::ct_eq(&r.verifier, &k.verifier()) => Some(
                    strongroom_server::custody::with_carried_digest(&r, k)
                        .map_err(|e| anyhow!("{e}"))?,
                ),
                _ => Some(k),
            }
        }
        None => None,
    };
    let pk = match &key {
        Some(k) => Some(
            AuditSigner::derive(k)
                .map_err(|_| anyhow!("cannot derive the audit key"))?
                .public_key(),
        ),
        None => None,
    };
    let path = anchor_path(source);
    let anchor = match &path {
        // A missing default anchor is judged below, once the database says whether
        // it should have one.
        Some((p, explicit)) if *explicit || p.exists() => Some(
            anchor::read(p).with_context(|| format!("cannot read the anchor {}", p.display()))?,
        ),
        _ => None,
    };
    let result = audit::verify_anchored(&store, pk.as_deref(), anchor.as_ref()).await;
    store.close().await;
    let v = result.map_err(|e| anyhow!("cannot read the audit log: {}", e.code))?;
    if let Some(b) = &v.broken {
        if let Some(cp) = &v.newest_anchored {
            println!("newest anchored checkpoint: {}", describe(cp));
        }
        let p = b.position();
        if p > 0 {
            bail!(
                "audit log BROKEN at record {p}: {b} ({} records verified before it)",
                p.saturating_sub(1).min(v.records)
            );
        }
        bail!("audit log BROKEN: {b}");
    }
    if let Some((p, _)) = &path
        && anchor.is_none()
        && v.chained > 0
    {
        bail!(
            "audit log BROKEN: the database holds {} chained checkpoints but there is no anchor at {} (deleted?); give --anchor if it is elsewhere",
            v.chained,
            p.display()
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
    match (&path, &anchor) {
        (Some((p, _)), Some(a)) => {
            println!(
                "anchor {}: {} checkpoints, all in the database{}",
                p.display(),
                v.anchored.unwrap_or(0),
                if a.torn_tail {
                    " (an unfinished last line, from a crash while appending, was skipped)"
                } else {
                    ""
                }
            );
        }
        _ => println!(
            "no anchor checked: a tail cut together with its checkpoints would not show; give --anchor"
        ),
    }
    if let Some(cp) = &v.newest {
        println!(
            "newest checkpoint: {} (keep a copy elsewhere: the log must always reach it)",
            describe(cp)
        );
    }
    Ok(())
}

/// One line naming a checkpoint: its place, position, time and hash.
fn describe(cp: &AuditCheckpoint) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(cp.time_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| cp.time_ms.to_string());
    let place = cp
        .link
        .as_ref()
        .map_or_else(|| "unchained".to_owned(), |l| format!("#{}", l.count));
    format!(
        "{place} at record {} time {time} hash {}",
        cp.seq,
        cp.hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
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
            // Through a `Value`, whose keys are sorted: the lines stay as they were.
            let line = serde_json::to_value(AuditRecordView::from(r))?;
            serde_json::to_writer(&mut out, &line)?;
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
