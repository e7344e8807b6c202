//! `strongroom risk`: the learned model's loop. `simulate` runs it on seeded traffic with
//! planted fraud; `train` fits a model on a vault's labelled assessments.

use serde_json::{Value, json};
use std::process::Command;

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

#[test]
fn simulated_traffic_trains_a_model_that_beats_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    let (ok, out, err) = strongroom(&[
        "risk",
        "simulate",
        "--days",
        "5",
        "--seed",
        "7",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let holdout = &report["holdout"];
    let (m, r) = (
        holdout["model"]["auc"].as_f64().unwrap(),
        holdout["rules"]["auc"].as_f64().unwrap(),
    );
    assert!(m > r, "model {m} vs rules {r}");
    assert!(holdout["slice"]["frauds"].as_i64().unwrap() > 0);
    let saved: Value = serde_json::from_slice(&std::fs::read(&model).unwrap()).unwrap();
    assert_eq!(saved["version"], report["model_version"]);
}

#[tokio::test]
async fn a_vaults_labelled_assessments_train_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    // 240 requests with one key: above the default 100 a minute.
    let (mut child, dev) = crate::start_dev_with(&d, &["--rate-limit-per-minute", "10000"]);
    let ca = std::fs::read(dev["ca_cert"].as_str().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = dev["url"].as_str().unwrap().to_owned();
    let sk = dev["secret_key"].as_str().unwrap().to_owned();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(&sk)
            .json(&body)
            .send()
    };
    // Every fifth use is a card tester cycling cards from one address; the rest are
    // customers, each from an address of their own. The merchant labels them all.
    for i in 0..120u32 {
        let fraud = i % 5 == 0;
        let fp = format!("{i:A>42}A");
        let ip = if fraud {
            "203.0.113.9".to_owned()
        } else {
            format!("198.51.{}.{}", i / 200, i % 200 + 1)
        };
        let r = post(
            "/v1/risk/assessments",
            json!({"action": "payment", "fingerprint": fp, "ip": ip, "amount": 1000 + i, "currency": "eur"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
        let a: Value = r.json().await.unwrap();
        let label = if fraud { "fraud" } else { "legitimate" };
        let r = post(
            "/v1/risk/feedback",
            json!({"assessment": a["id"], "label": label}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    child.kill().ok();
    child.wait().ok();
    let (ok, out, err) = strongroom(&["risk", "train", "--data-dir", d.to_str().unwrap()]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["training"]["rows"], 96, "{out}");
    assert_eq!(report["holdout"]["slice"]["rows"], 24);
    assert!(
        report["holdout"]["model"]["auc"].as_f64().unwrap() > 0.9,
        "{out}"
    );
}
