//! The canary: run the flows with known test card numbers and keys, then scan
//! everything the server emitted (logs, audit records, events, error bodies, metrics)
//! for them, in Rust and with `scripts/leak_scan.py`.

use crate::harness::*;
use serde_json::json;
use strongroom_store::{ListEvents, Mode, VaultStore};

const PANS: &[&str] = &["4242424242424242", "5555555555554444", "378282246310005"];

#[tokio::test]
async fn nothing_the_server_emits_contains_a_test_number_or_key() {
    let srv = TestServer::start().await;
    let mut emitted = String::new();
    for pan in PANS {
        let id = srv.tokenize(pan).await["id"].as_str().unwrap().to_owned();
        let r = srv.reveal(&srv.rk_reveal, &id).await;
        assert_eq!(r.body["number"], *pan);
        srv.delete(&format!("/v1/cards/{id}"), &srv.sk_test).await;
    }
    // A card with a CVC (held, never written), read back, listed and deleted.
    let r = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "5555555555554444", "cvc": "739", "exp_month": 12, "exp_year": 2030}),
        )
        .await;
    assert_eq!(r.body["cvc_available"], true, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    for r in [
        r,
        srv.get(&format!("/v1/cards/{id}"), &srv.sk_test).await,
        srv.get("/v1/cards", &srv.sk_test).await,
        srv.delete(&format!("/v1/cards/{id}"), &srv.sk_test).await,
    ] {
        emitted.push_str(&r.text);
        emitted.push('\n');
    }
    // Refusals: every error body is kept.
    let refusals = [
        srv.post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "4242 4242 4242 4241", "exp_month": 12, "exp_year": 2030}),
        )
        .await,
        srv.post(
            "/v1/cards",
            &srv.sk_live,
            json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}),
        )
        .await,
        srv.get("/v1/cards/4242424242424242", &srv.sk_test).await,
        srv.get(
            "/v1/cards",
            "sk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .await,
        srv.post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "4242424242424242", "cvc": "12", "exp_month": 12, "exp_year": 2030}),
        )
        .await,
        srv.post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "4242424242424242", "cvc": "7319", "exp_month": 12, "exp_year": 2030}),
        )
        .await,
    ];
    for r in &refusals {
        assert!(r.status.is_client_error(), "{}", r.text);
        emitted.push_str(&r.text);
        emitted.push('\n');
    }
    let audit = srv.get("/v1/admin/audit?limit=1000", &srv.admin_key).await;
    assert_eq!(audit.status, 200);
    emitted.push_str(&audit.text);
    emitted.push('\n');
    let events = srv
        .running
        .state()
        .unwrap()
        .store()
        .list_events(
            &srv.account,
            Mode::Test,
            &ListEvents {
                event_type: None,
                created_gte: None,
                created_lt: None,
                starting_after: None,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert!(events.len() >= 6);
    for e in &events {
        emitted.push_str(&e.data);
        emitted.push('\n');
    }
    let addr = srv.running.metrics_addr.unwrap();
    emitted.push_str(
        &reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let keys = [
        srv.sk_test.clone(),
        srv.sk_live.clone(),
        srv.pk_test.clone(),
        srv.rk_reveal.clone(),
        srv.admin_key.clone(),
    ];
    srv.stop().await;
    emitted.push_str(&captured_logs());

    // A CVC is too short to look for on its own: look for it as a value.
    for cvc in ["12", "7319", "739"] {
        for form in cvc_spellings(cvc) {
            assert!(!emitted.contains(&form), "a CVC was emitted");
        }
    }
    for n in PANS.iter().copied().chain(keys.iter().map(String::as_str)) {
        for form in spellings(n) {
            assert!(!emitted.contains(&form), "a test number or key was emitted");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("emitted.txt");
    std::fs::write(&file, &emitted).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/leak_scan.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&file)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("python3 is required for the canary scan: {e}"));
    assert!(
        out.status.success(),
        "leak scan: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
