//! `strongroom audit verify` / `export` on a real data directory: exit status and
//! messages.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use strongroom_crypto::RootKey;
use strongroom_crypto::audit::AuditSigner;
use strongroom_server::audit::{HASH, anchor, checkpoint_store};
use strongroom_store::{AuditCheckpoint, AuditRecord, AuditStore, Store, StoreConfig};

pub fn strongroom(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn verify_and_export_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let key = [5u8; 32];
    // A dev-format root key, as `strongroom dev` writes it.
    std::fs::write(
        dir.path().join("root.key"),
        format!("strongroom-dev-root-key:{}\n", hex(&key)),
    )
    .unwrap();
    let cfg = StoreConfig {
        url: format!("sqlite://{}", dir.path().join("strongroom.db").display()),
        schema: None,
        max_connections: 1,
    };
    let store = Store::connect(&cfg).await.unwrap();
    let recs = (0..5)
        .map(|i| AuditRecord {
            time_ms: 1_700_000_000_000 + i * 1000,
            actor: "system".into(),
            action: format!("test.{i}"),
            outcome: "success".into(),
            ..AuditRecord::default()
        })
        .collect();
    let head = store
        .append_audit(recs, strongroom_server::audit::HASH)
        .await
        .unwrap();
    assert_eq!(head, 5);
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = strongroom(&["audit", "verify", "--data-dir", d]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("audit log OK: 5 records, 0 checkpoints"),
        "{out}"
    );

    // A signed checkpoint beyond the end of the log: the tail was cut.
    let (_, h) = store.audit_head().await.unwrap();
    let signer = AuditSigner::derive(&RootKey::from_bytes(&key).unwrap()).unwrap();
    let cp = |seq: i64| AuditCheckpoint {
        seq,
        hash: h.clone(),
        time_ms: 1,
        public_key: signer.public_key(),
        signature: signer.sign_checkpoint(seq, &h, 1),
        link: None,
    };
    store.insert_checkpoint(&cp(5)).await.unwrap();
    let (ok, out, _) = strongroom(&["audit", "verify", "--data-dir", d]);
    assert!(ok, "{out}");
    assert!(out.contains("1 checkpoints, signatures checked"), "{out}");
    store.insert_checkpoint(&cp(8)).await.unwrap();
    let (ok, _, err) = strongroom(&["audit", "verify", "--data-dir", d]);
    assert!(!ok);
    assert!(err.contains("BROKEN at record 6"), "{err}");
    assert!(err.contains("truncated"), "{err}");

    let (ok, out, err) = strongroom(&[
        "audit",
        "export",
        "--data-dir",
        d,
        "--since",
        "2023-11-14T22:13:22Z",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["seq"], 3);
    assert_eq!(lines[0]["action"], "test.2");
    assert_eq!(lines[0]["time"], "2023-11-14T22:13:22Z");
    let (ok, out, _) = strongroom(&["audit", "export", "--data-dir", d, "--after-seq", "4"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1);
    let (ok, _, err) = strongroom(&["audit", "verify", "--data-dir", "/nonexistent-dir"]);
    assert!(!ok);
    assert!(err.contains("no database"), "{err}");
    store.close().await;
}

#[tokio::test]
async fn verify_a_postgres_schema() {
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "verify_a_postgres_schema",
    ) {
        return;
    }
    let url = strongroom_testenv::pg_url();
    let schema = format!(
        "t_cli_{}",
        hex(&strongroom_crypto::random::bytes::<6>().unwrap())
    );
    let cfg = StoreConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
        max_connections: 2,
    };
    let store = Store::connect(&cfg).await.unwrap();
    let rec = AuditRecord {
        time_ms: 1,
        actor: "system".into(),
        action: "test".into(),
        outcome: "success".into(),
        ..AuditRecord::default()
    };
    store
        .append_audit(
            vec![rec.clone(), rec.clone(), rec],
            strongroom_server::audit::HASH,
        )
        .await
        .unwrap();
    let key = [6u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("root.key");
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let args = [
        "audit",
        "verify",
        "--database-url",
        &url,
        "--database-schema",
        &schema,
        "--root-key-file",
        key_file.to_str().unwrap(),
    ];
    let (ok, out, err) = strongroom(&args);
    assert!(ok, "{out}{err}");
    assert!(out.contains("audit log OK: 3 records"), "{out}");
    // A checkpoint signed by another key is refused.
    let (_, h) = store.audit_head().await.unwrap();
    let other = AuditSigner::derive(&RootKey::from_bytes(&[1u8; 32]).unwrap()).unwrap();
    store
        .insert_checkpoint(&AuditCheckpoint {
            seq: 3,
            hash: h.clone(),
            time_ms: 1,
            public_key: other.public_key(),
            signature: other.sign_checkpoint(3, &h, 1),
            link: None,
        })
        .await
        .unwrap();
    let (ok, _, err) = strongroom(&args);
    assert!(!ok);
    assert!(
        err.contains("checkpoint 3: signature does not verify"),
        "{err}"
    );
    store.close().await;
    // The schema (t_…) is dropped with the others by scripts/test.
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `sql` on the database behind the server's back, as an intruder with write
/// access to it would.
pub async fn tamper(cfg: &StoreConfig, sql: &str) {
    use sqlx::Connection;
    let q = sqlx::AssertSqlSafe(sql.to_owned());
    if cfg.url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::from_str(&cfg.url).unwrap(),
        )
        .await
        .unwrap();
        sqlx::raw_sql(q).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let opts = sqlx::postgres::PgConnectOptions::from_str(&cfg.url)
            .unwrap()
            .options([("search_path", cfg.schema.clone().unwrap())]);
        let mut c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql(q).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}

/// Deletes the records and checkpoints after `keep` and sets the head back to it: the
/// log then looks whole up to `keep`.
pub fn cut_tail_sql(keep: i64, keep_hash: &[u8], pg: bool) -> String {
    let h = if pg {
        format!("decode('{}', 'hex')", hex(keep_hash))
    } else {
        format!("X'{}'", hex(keep_hash))
    };
    format!(
        "DELETE FROM audit_log WHERE seq > {keep}; \
         DELETE FROM audit_checkpoints WHERE seq > {keep}; \
         UPDATE audit_head SET seq = {keep}, hash = {h} WHERE id = 1"
    )
}

/// Ten records and two chained checkpoints (after 5 and after 10), anchored at `anchor`.
async fn two_checkpoints(store: &Store, key: &[u8; 32], anchor: &Path) -> Vec<u8> {
    let signer = AuditSigner::derive(&RootKey::from_bytes(key).unwrap()).unwrap();
    let mut first_hash = Vec::new();
    for round in 0..2_i64 {
        let recs = (0..5)
            .map(|i| AuditRecord {
                time_ms: 1_700_000_000_000 + round * 10_000 + i,
                actor: "system".into(),
                action: format!("test.{round}.{i}"),
                outcome: "success".into(),
                ..AuditRecord::default()
            })
            .collect();
        store.append_audit(recs, HASH).await.unwrap();
        let done = checkpoint_store(store, &signer, 1_700_000_000_000 + round, Some(anchor))
            .await
            .unwrap();
        let cp = done.new.unwrap();
        if round == 0 {
            first_hash = cp.hash;
        }
    }
    first_hash
}

#[tokio::test]
async fn a_tail_cut_with_its_checkpoints_fails_verify_against_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let key = [11u8; 32];
    std::fs::write(
        dir.path().join("root.key"),
        format!("strongroom-dev-root-key:{}\n", hex(&key)),
    )
    .unwrap();
    let cfg = StoreConfig {
        url: format!("sqlite://{}", dir.path().join("strongroom.db").display()),
        schema: None,
        max_connections: 1,
    };
    let anchor_file = dir.path().join(anchor::FILE_NAME);
    let store = Store::connect(&cfg).await.unwrap();
    let first_hash = two_checkpoints(&store, &key, &anchor_file).await;
    store.close().await;
    let d = dir.path().to_str().unwrap();
    let verify = || strongroom(&["audit", "verify", "--data-dir", d]);

    let (ok, out, err) = verify();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("audit log OK: 10 records, 2 checkpoints"),
        "{out}"
    );
    assert!(out.contains("2 checkpoints, all in the database"), "{out}");
    assert!(
        out.contains("newest checkpoint: #2 at record 10 time 2023-11-14T22:13:20.001Z hash "),
        "{out}"
    );

    // An anchor line edited by hand no longer verifies.
    let text = std::fs::read_to_string(&anchor_file).unwrap();
    std::fs::write(&anchor_file, text.replacen("\"seq\":5", "\"seq\":4", 1)).unwrap();
    let (ok, _, err) = verify();
    assert!(!ok);
    assert!(
        err.contains("anchor line 1: not a checkpoint signed"),
        "{err}"
    );
    // No anchor where one belongs.
    std::fs::remove_file(&anchor_file).unwrap();
    let (ok, _, err) = verify();
    assert!(!ok);
    assert!(err.contains("no anchor at"), "{err}");
    std::fs::write(&anchor_file, &text).unwrap();
    assert!(verify().0);

    // The intruder deletes the tail and the checkpoint that covered it, and resets the
    // head: the database alone is consistent again...
    tamper(&cfg, &cut_tail_sql(5, &first_hash, false)).await;
    let (ok, out, err) = strongroom(&[
        "audit",
        "verify",
        "--database-url",
        &cfg.url,
        "--root-key-file",
        dir.path().join("root.key").to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("audit log OK: 5 records, 1 checkpoints"),
        "{out}"
    );
    assert!(out.contains("no anchor checked"), "{out}");
    // ...but the anchor remembers the second checkpoint.
    let (ok, out, err) = verify();
    assert!(!ok, "{out}");
    assert!(err.contains("BROKEN at record 6"), "{err}");
    assert!(
        err.contains("checkpoint #2, anchored outside the database, covers 10"),
        "{err}"
    );
    assert!(
        out.contains("newest anchored checkpoint: #2 at record 10"),
        "{out}"
    );
}

#[tokio::test]
async fn a_postgres_tail_cut_fails_verify_against_an_anchor_path() {
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "a_postgres_tail_cut_fails_verify_against_an_anchor_path",
    ) {
        return;
    }
    let url = strongroom_testenv::pg_url();
    let schema = format!(
        "t_cli_{}",
        hex(&strongroom_crypto::random::bytes::<6>().unwrap())
    );
    let cfg = StoreConfig {
        url: url.clone(),
        schema: Some(schema.clone()),
        max_connections: 2,
    };
    let dir = tempfile::tempdir().unwrap();
    let key = [12u8; 32];
    let key_file = dir.path().join("root.key");
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let anchor_file = dir.path().join("elsewhere.jsonl");
    let store = Store::connect(&cfg).await.unwrap();
    let first_hash = two_checkpoints(&store, &key, &anchor_file).await;
    store.close().await;
    let args = [
        "audit",
        "verify",
        "--database-url",
        &url,
        "--database-schema",
        &schema,
        "--root-key-file",
        key_file.to_str().unwrap(),
        "--anchor",
        anchor_file.to_str().unwrap(),
    ];
    let (ok, out, err) = strongroom(&args);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 checkpoints, all in the database"), "{out}");
    tamper(&cfg, &cut_tail_sql(5, &first_hash, true)).await;
    assert!(
        strongroom(&args[..8]).0,
        "the database alone still verifies"
    );
    let (ok, _, err) = strongroom(&args);
    assert!(!ok);
    assert!(err.contains("BROKEN at record 6"), "{err}");
    assert!(err.contains("tail truncated with its checkpoints"), "{err}");
    // A given anchor that is not there is an error, not a pass.
    let mut missing = args;
    let gone = dir.path().join("gone.jsonl");
    missing[9] = gone.to_str().unwrap();
    let (ok, _, err) = strongroom(&missing);
    assert!(!ok);
    assert!(err.contains("cannot read the anchor"), "{err}");
    // The schema (t_…) is dropped with the others by scripts/test.
}
