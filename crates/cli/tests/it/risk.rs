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
    // Five other cards from one new address: below the card-testing rule's ten.
    let mut before = Value::Null;
    for i in 0..6u32 {
        let fp = format!("{i:B>42}A");
        let r = post(
            "/v1/risk/assessments",
            json!({"action": "payment", "fingerprint": fp, "ip": "192.0.2.77"}),
        )
        .await
        .unwrap();
        before = r.json().await.unwrap();
    }
    assert_eq!(before["decision"], "allow", "{before}");
    child.kill().ok();
    child.wait().ok();

    let model = dir.path().join("model.json");
    let data = d.to_str().unwrap();
    let (ok, out, err) = strongroom(&[
        "risk",
        "train",
        "--data-dir",
        data,
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["training"]["rows"], 96, "{out}");
    assert_eq!(report["holdout"]["slice"]["rows"], 24);
    assert!(
        report["holdout"]["model"]["auc"].as_f64().unwrap() > 0.9,
        "{out}"
    );

    // Promoted (active), the model changes the decision on the same pattern.
    let m = model.to_str().unwrap();
    let (ok, out, err) = strongroom(&[
        "risk",
        "promote",
        "--data-dir",
        data,
        "--model",
        m,
        "--active",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("is now active"), "{out}");
    std::fs::remove_file(d.join("dev.json")).unwrap();
    let (mut child, dev) = crate::start_dev_with(&d, &["--rate-limit-per-minute", "10000"]);
    let url2 = dev["url"].as_str().unwrap().to_owned();
    let mut after = Value::Null;
    for i in 0..6u32 {
        let fp = format!("{i:C>42}A");
        let r = client
            .post(format!("{url2}/v1/risk/assessments"))
            .bearer_auth(&sk)
            .json(&json!({"action": "payment", "fingerprint": fp, "ip": "192.0.2.78"}))
            .send()
            .await
            .unwrap();
        after = r.json().await.unwrap();
    }
    child.kill().ok();
    child.wait().ok();
    assert_ne!(after["decision"], "allow", "{after}");
    assert_eq!(after["model_version"], report["model_version"], "{after}");
    let weight = after["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "model")
        .and_then(|r| r["weight"].as_i64())
        .unwrap_or(0);
    assert!(weight >= 50, "{after}");
}
