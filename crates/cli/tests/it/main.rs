//! The cli crate's one integration-test binary: runs the real `strongroom` binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod audit_cli;
mod bench;
mod cluster;
mod config;
mod custody;
mod dev_audit;
mod relay;
mod risk;
mod webhooks;

/// Starts `strongroom dev` on a free loopback port with data in `dir`, and waits for its
/// dev.json (URL, keys, account, CA), which it returns with the child.
pub fn start_dev(dir: &std::path::Path) -> (std::process::Child, serde_json::Value) {
    start_dev_with(dir, &[])
}

/// [`start_dev`] with more `strongroom dev` options.
pub fn start_dev_with(
    dir: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, serde_json::Value) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["dev", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let json = dir.join("dev.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dev = loop {
        if let Some(v) = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            break v;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("strongroom dev did not write dev.json");
        }
        std::thread::park_timeout(Duration::from_millis(50));
    };
    (child, dev)
}
