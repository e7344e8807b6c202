//! `strongroom config check` with the real binary: settings that are allowed but weaken
//! something are printed as warnings on stderr, and the check still passes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn check(dir: &Path, extra: &str) -> Output {
    let key = dir.join("root.key");
    if !key.exists() {
        std::fs::write(&key, [7u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.join("strongroom.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:8443\"\nplaintext = true\n\
             database_url = \"sqlite://{}\"\nroot_key_file = \"{}\"\n{extra}\n",
            dir.join("strongroom.db").display(),
            key.display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap()
}

#[test]
fn config_check_warns_about_metrics_off_loopback_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), "[metrics]\nlisten = \"0.0.0.0:9464\"");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "config OK");
    assert!(
        stderr.contains("warning") && stderr.contains("[metrics] listen = 0.0.0.0:9464"),
        "{stderr}"
    );
    assert!(stderr.contains("without authentication"), "{stderr}");

    // On loopback: no warning about it; only the one every file root key gets.
    let out = check(dir.path(), "[metrics]\nlisten = \"127.0.0.1:9464\"");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("root_key_provider = \"file\""),
        "{stderr}"
    );
}

#[test]
fn config_check_accepts_a_zero_checkpoint_interval_with_a_warning() {
    // The server reads 0 as "checkpoint only at start and at shutdown"; the check agrees.
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), "[audit]\ncheckpoint_interval_secs = 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config OK");
    assert!(
        stderr.contains("warning") && stderr.contains("checkpoint_interval_secs = 0"),
        "{stderr}"
    );
}
