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

/// Starts `strongroom relay echo` on a free loopback port and reads the port from its
/// one line. Killed by the caller.
fn start_echo(ca_out: &Path) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["relay", "echo", "--listen", "127.0.0.1:0", "--ca-out"])
        .arg(ca_out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("https://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    assert!(line.contains(&ca_out.display().to_string()), "{line}");
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_processor_answers_over_its_own_ca_and_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let ca_out = dir.path().join("echo-ca.pem");
    let (mut echo, port) = start_echo(&ca_out);
    let ca = std::fs::read(&ca_out).unwrap();

    // Straight to the processor, trusting only its CA.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let r = client
        .post(format!("https://127.0.0.1:{port}/v1/charges?x=1"))
        .header("x-test", "yes")
        .body("amount=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/charges?x=1");
    assert_eq!(v["headers"]["x-test"], "yes");
    assert_eq!(v["body"], "amount=1");

    // Through the relay of a dev vault that approved it.
    let d = dir.path().join("dev");
    let (mut dev_child, dev) = crate::start_dev(&d);
    let account = dev["account_id"].as_str().unwrap().to_owned();
    let spec = format!("127.0.0.1:{port},test-only,ca={}", ca_out.display());
    let out = cli(&d, &["set", "--account", &account, "--destination", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vault = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(dev["ca_cert"].as_str().unwrap()).unwrap(),
        )
        .unwrap()])
        .build()
        .unwrap();
    let url = dev["url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let sk = dev["secret_key"].as_str().unwrap();
    let r = vault
        .post(format!("{url}/v1/cards"))
        .bearer_auth(sk)
        .json(&serde_json::json!({"number": "4242424242424242", "exp_month": 4, "exp_year": 2031}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = vault
        .post(format!("{url}/v1/relay"))
        .bearer_auth(sk)
        .json(&serde_json::json!({
            "destination": format!("https://127.0.0.1:{port}/v1/charges"),
            "body": {"number": format!("{{{{{id}:number}}}}"), "exp_month": format!("{{{{{id}:exp_month}}}}")}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("4242424242424242"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let body = v["body"].as_str().unwrap();
    assert!(body.contains("XXXX4242"), "{body}");
    assert!(body.contains(r#""exp_month":"04""#), "{body}");

    // The README's inbound route: a partner posts a card, the receiver (the echo) gets
    // the card's id.
    let r = vault
        .post(format!("{url}/v1/inbound_routes"))
        .bearer_auth(sk)
        .json(&serde_json::json!({
            "forward_to": format!("https://127.0.0.1:{port}/v1/partner"),
            "tokenize": ["/card/number"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let route = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = vault
        .post(format!("{url}/in/{route}/notify"))
        .json(&serde_json::json!({"card": {"number": "4242424242424242", "exp_month": 4, "exp_year": 2031}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains("4242424242424242"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["path"], "/v1/partner/notify");
    assert_eq!(v["headers"]["strongroom-inbound-cards"], id.as_str());
    let forwarded: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        forwarded["card"]["number"],
        id.as_str(),
        "the same card, deduplicated"
    );

    for child in [&mut echo, &mut dev_child] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn the_echo_processor_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["relay", "echo", "--listen", "0.0.0.0:0", "--ca-out"])
        .arg(dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback only"), "{stderr}");
    assert!(!dir.path().join("ca.pem").exists());
}
