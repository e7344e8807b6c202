//! `strongroom audit verify` / `export` on a real data directory: exit status and
//! messages.

use std::process::Command;
use strongroom_crypto::RootKey;
use strongroom_crypto::audit::AuditSigner;
use strongroom_store::{AuditCheckpoint, AuditRecord, AuditStore, Store, StoreConfig};

fn strongroom(args: &[&str]) -> (bool, String, String) {
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
    let url = std::env::var("STRONGROOM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
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
