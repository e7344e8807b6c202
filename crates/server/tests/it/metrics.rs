//! `/metrics` on the admin listener, parsed by the reference Python parser.

use crate::harness::*;
use serde_json::Value;

fn sample<'a>(samples: &'a [Value], name: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
}

#[tokio::test]
async fn metrics_parse_with_prometheus_client_and_carry_no_sensitive_label() {
    let srv = TestServer::start().await;
    let addr = srv
        .running
        .metrics_addr
        .expect("a metrics listener by default");
    assert!(addr.ip().is_loopback());
    let pan = "4242424242424242";
    let card = srv.tokenize(pan).await;
    let id = card["id"].as_str().unwrap();
    assert_eq!(srv.reveal(&srv.rk_reveal, id).await.status, 200);
    srv.get(&format!("/v1/cards/{id}"), &srv.sk_test).await;
    srv.get("/v1/nothing/here", &srv.sk_test)
        .await
        .assert_error(404, "not_found");
    let url = format!("http://{addr}/metrics");

    // The exposition itself never names a card, key or number.
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    for needle in [
        pan,
        id,
        srv.sk_test.as_str(),
        srv.account.as_str(),
        "127.0.0.1",
    ] {
        assert!(!text.contains(needle), "metrics leak {needle}");
    }

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/metrics/parse.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&url)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("python3 is required for this test (scripts/test installs prometheus_client): {e}")
    });
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let v = |name, labels: &[(&str, &str)]| {
        sample(&samples, name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        v(
            "strongroom_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/v1/cards"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert_eq!(
        v(
            "strongroom_http_requests_total",
            &[("route", "(unmatched)"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "strongroom_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/v1/cards/{id}/reveal")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "strongroom_http_request_duration_seconds_bucket",
            &[("route", "/v1/cards/{id}/reveal"), ("le", "+Inf")]
        ),
        1.0
    );
    // The tokenize and the reveal were each assessed; finding nothing, only counted.
    for action in ["tokenize", "reveal"] {
        let labels = [
            ("action", action),
            ("decision", "allow"),
            ("stored", "false"),
        ];
        assert_eq!(v("strongroom_risk_assessments_total", &labels), 1.0);
    }
    assert!(v("strongroom_audit_chain_length", &[]) > 5.0);
    assert!(v("strongroom_audit_last_checkpoint_age_seconds", &[]) >= 0.0);
    assert_eq!(
        v(
            "strongroom_data_key_versions",
            &[("purpose", "cards"), ("state", "active")]
        ),
        1.0
    );
    assert_eq!(
        v("strongroom_rewrap_pending_records", &[("purpose", "cards")]),
        0.0
    );
    assert_eq!(v("strongroom_rate_limit_refusals_total", &[]), 0.0);
    // The counter others increment.
    srv.running.state().unwrap().metrics().rate_limited();
    // The webhook backlog is read from the outbox at scrape time: an endpoint that
    // refuses connections (nothing listens on the discard port) keeps its delivery pending.
    let r = srv
        .post(
            "/v1/webhook_endpoints",
            &srv.sk_test,
            serde_json::json!({"url": "http://127.0.0.1:9/hook", "enabled_events": ["card.created"], "signing": "hmac-sha256"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    srv.tokenize("4111111111111111").await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\nstrongroom_rate_limit_refusals_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nstrongroom_webhook_queue_depth 1\n"),
        "{text}"
    );
    srv.stop().await;
}
