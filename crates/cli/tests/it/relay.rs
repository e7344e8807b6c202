//! `strongroom relay destinations set|list` against a real `strongroom dev`.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["relay", "destinations"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("STRONGROOM_URL")
        .env_remove("STRONGROOM_ADMIN_KEY")
        .env_remove("STRONGROOM_CA_CERT")
        .output()
        .unwrap()
}

#[test]
fn destinations_are_set_listed_and_refused_with_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    let (mut child, dev) = crate::start_dev(&d);
    let account = dev["account_id"].as_str().unwrap().to_owned();
    let ca = dev["ca_cert"].as_str().unwrap().to_owned();

    let out = cli(
        &d,
        &[
            "set",
            "--account",
            &account,
            "--destination",
            "API.example:8443/v1",
            "--destination",
            &format!("127.0.0.1:9443/echo,test-only,ca={ca}"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let set: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = set["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["host"], "api.example");
    assert_eq!(data[0]["port"], 8443);
    assert_eq!(data[0]["path_prefix"], "/v1");
    assert_eq!(data[0]["test_only"], false);
    assert_eq!(data[1]["host"], "127.0.0.1");
    assert_eq!(data[1]["test_only"], true);
    assert!(
        data[1]["ca_cert_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    let out = cli(&d, &["list", "--account", &account]);
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed, set);

    // Refusals: the server's code, and nothing changed.
    let out = cli(
        &d,
        &[
            "set",
            "--account",
            &account,
            "--destination",
            "169.254.169.254",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("400 destination_not_public"), "{stderr}");
    // Caught before any request: a scheme, no destination at all.
    let out = cli(
        &d,
        &[
            "set",
            "--account",
            &account,
            "--destination",
            "https://a.example",
        ],
    );
    assert!(!out.status.success());
    let out = cli(&d, &["set", "--account", &account]);
    assert!(!out.status.success());
    let out = cli(&d, &["list", "--account", &account]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), set);

    // --none clears.
    let out = cli(&d, &["set", "--account", &account, "--none"]);
    assert!(out.status.success());
    let out = cli(&d, &["list", "--account", &account]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["data"], serde_json::json!([]));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}
