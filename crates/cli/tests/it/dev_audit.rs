//! `strongroom dev` end to end: dev.json names the metrics listener, the audit log of
//! the run (start, provisioning, stop) verifies with `strongroom audit verify`.

use std::process::Command;

#[test]
fn dev_writes_metrics_url_and_its_audit_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    let (mut child, dev) = crate::start_dev(&d);
    let metrics = dev["metrics_url"].as_str().unwrap().to_owned();
    assert!(metrics.starts_with("http://127.0.0.1:"), "{metrics}");
    assert!(metrics.ends_with("/metrics"));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&d)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // At least start + account + 3 keys + stop; checkpoints at start and at stop.
    assert!(text.starts_with("audit log OK: "), "{text}");
    let n: Vec<i64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(n[0] >= 6 && n[1] >= 2, "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["audit", "export", "--data-dir"])
        .arg(&d)
        .output()
        .unwrap();
    let actions: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions.first().map(String::as_str), Some("service.start"));
    assert_eq!(actions.last().map(String::as_str), Some("service.stop"));
    assert!(actions.iter().any(|a| a == "api_key.create"));

    // Someone with write access to the database deletes everything after the start
    // checkpoint (records and checkpoints) and resets the head. The dev server anchored
    // its checkpoints in the data directory, so verify fails.
    let anchor = std::fs::read_to_string(d.join("audit-anchor.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(anchor.lines().next().unwrap()).unwrap();
    let keep = first["seq"].as_i64().unwrap();
    let keep_hash: Vec<u8> = (0..32)
        .map(|i| {
            u8::from_str_radix(&first["hash"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    let cfg = strongroom_store::StoreConfig {
        url: format!("sqlite://{}", d.join("strongroom.db").display()),
        schema: None,
        max_connections: 1,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(crate::audit_cli::tamper(
            &cfg,
            &crate::audit_cli::cut_tail_sql(keep, &keep_hash, false),
        ));
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("BROKEN at record {}", keep + 1)),
        "{err}"
    );
    assert!(err.contains("tail truncated with its checkpoints"), "{err}");
}
