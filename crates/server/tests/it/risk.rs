//! Risk assessments (docs/risk.md, "Assessments"): a card-testing run is blocked
//! part-way and its address suspended; country mismatches (from a BIN CSV and a `.mmdb`
//! made by an independent writer) raise the score with their reasons; no card number and
//! no email address is kept.

use crate::harness::{Data, Resp, TestServer, test_pan};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

async fn assess(srv: &TestServer, body: Value) -> Value {
    let r = srv.post("/v1/risk/assessments", &srv.sk_test, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

fn codes(a: &Value) -> Vec<String> {
    a["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_card_testing_run_is_blocked_part_way_and_its_address_suspended() {
    let srv = TestServer::start().await;
    let tester = "203.0.113.7";
    let mut decisions = Vec::new();
    let mut last = Value::Null;
    for n in 0..14 {
        let card = srv.tokenize(&test_pan(400 + n)).await;
        last = assess(
            &srv,
            json!({"action": "tokenize", "card": card["id"], "ip": tester}),
        )
        .await;
        decisions.push(last["decision"].as_str().unwrap().to_owned());
    }
    // Ten cards pass; the eleventh (ten others seen from the address) is blocked.
    assert!(
        decisions[..10].iter().all(|d| d == "allow"),
        "{decisions:?}"
    );
    assert!(
        decisions[10..].iter().all(|d| d == "block"),
        "{decisions:?}"
    );
    assert!(codes(&last).contains(&"suspended".to_owned()), "{last}");
    assert_eq!(last["rules_version"], "builtin-1");
    assert!(last["features"]["ip_distinct_cards_10m"].as_f64().unwrap() >= 10.0);

    // The rule suspended the address, once, for an hour, and said so.
    let list = srv.get("/v1/suspensions", &srv.sk_test).await;
    let made: Vec<&Value> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["created_by"] == "rule:card_testing_ip")
        .collect();
    assert_eq!(made.len(), 1, "{}", list.text);
    assert_eq!(made[0]["target"]["value"], "203.0.113.7/32");
    let span = made[0]["expires_at"].as_i64().unwrap() - made[0]["created"].as_i64().unwrap();
    assert_eq!(span, 3600);
    let ev = srv
        .get("/v1/events?type=suspension.created", &srv.sk_test)
        .await;
    assert_eq!(ev.body["data"].as_array().unwrap().len(), 1, "{}", ev.text);
    let id = last["id"].as_str().unwrap();
    let read = srv
        .get(&format!("/v1/risk/assessments/{id}"), &srv.sk_test)
        .await;
    assert_eq!(read.body["decision"], "block", "{}", read.text);

    // Another address is unaffected.
    let card = srv.tokenize(&test_pan(499)).await;
    let other = assess(
        &srv,
        json!({"action": "payment", "card": card["id"], "ip": "198.51.100.1", "amount": 500, "currency": "usd"}),
    )
    .await;
    assert_eq!(other["decision"], "allow", "{other}");

    // After the hour: the suspension and the windows have passed.
    srv.clock.advance(Duration::from_secs(3601));
    let again = assess(
        &srv,
        json!({"action": "tokenize", "card": card["id"], "ip": tester}),
    )
    .await;
    assert_eq!(again["decision"], "allow", "{again}");
}

fn geo_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let csv = dir.join("bins.csv");
    std::fs::write(&csv, "bin_prefix,country\n4242,US\n555555,GB\n").unwrap();
    let mmdb = dir.join("country.mmdb");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/interop/geo/make_mmdb.py"))
        .arg(&mmdb)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required: {e}"));
    assert!(
        out.status.success(),
        "make_mmdb.py failed: pip install -r tests/interop/requirements.txt\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (csv, mmdb)
}

#[tokio::test]
async fn country_mismatches_raise_the_score_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, mmdb) = geo_files(dir.path());
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.risk_bin_table = Some(csv);
        c.risk_ip_database = Some(mmdb);
    })
    .await;
    let card = srv.tokenize("4242424242424242").await;
    // A US card, from a British address, billed to Sweden.
    let odd = assess(
        &srv,
        json!({"action": "payment", "card": card["id"], "ip": "81.2.69.5", "billing_country": "se"}),
    )
    .await;
    let c = codes(&odd);
    for want in [
        "bin_ip_country_mismatch",
        "bin_billing_country_mismatch",
        "ip_billing_country_mismatch",
    ] {
        assert!(c.contains(&want.to_owned()), "{want}: {odd}");
    }
    // The same card from a US address, billed to the US.
    let usual = assess(
        &srv,
        json!({"action": "payment", "card": card["id"], "ip": "216.160.83.9", "billing_country": "US"}),
    )
    .await;
    assert!(
        odd["score"].as_i64().unwrap() > usual["score"].as_i64().unwrap(),
        "{odd} vs {usual}"
    );
    assert!(
        !codes(&usual).iter().any(|c| c.ends_with("mismatch")),
        "{usual}"
    );
}

#[tokio::test]
async fn assessments_keep_no_card_number_and_no_email() {
    let srv = TestServer::start().await;
    let card = srv.tokenize("5555555555554444").await;
    let a = assess(
        &srv,
        json!({"action": "payment", "card": card["id"], "email": "Shopper@Example.com",
               "device_id": "dev-77", "ip": "192.0.2.44"}),
    )
    .await;
    assert!(!a.to_string().to_lowercase().contains("shopper"), "{a}");
    for f in srv.data.sqlite_files() {
        crate::harness::assert_not_in_file(&f, &["hopper@", "5555555555554444"]);
    }
    // Malformed input is refused with its code; a publishable key cannot assess.
    for (body, code) in [
        (
            json!({"action": "payment", "card": card["id"], "fingerprint": card["fingerprint"]}),
            "invalid_parameter",
        ),
        (
            json!({"action": "payment", "ip": "999.1.1.1"}),
            "invalid_parameter",
        ),
        (
            json!({"action": "payment", "email": "nobody"}),
            "invalid_parameter",
        ),
        (
            json!({"action": "payment", "amount": 5}),
            "invalid_parameter",
        ),
        (json!({"action": "teleport"}), "invalid_request"),
        (
            json!({"action": "payment", "pan": "4242424242424242"}),
            "unknown_field",
        ),
    ] {
        srv.post("/v1/risk/assessments", &srv.sk_test, body)
            .await
            .assert_error(400, code);
    }
    srv.post(
        "/v1/risk/assessments",
        &srv.pk_test,
        json!({"action": "tokenize"}),
    )
    .await
    .assert_error(403, "permission_denied");
    srv.get(
        "/v1/risk/assessments/risk_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6",
        &srv.sk_test,
    )
    .await
    .assert_error(404, "not_found");
}

/// Tokenizes with the publishable key as the shopper at `from` would (behind the
/// trusted proxy the test client plays).
async fn pk_tokenize(srv: &TestServer, number: &str, from: &str) -> Resp {
    let r = srv
        .client
        .post(format!("{}/v1/cards", srv.url))
        .bearer_auth(&srv.pk_test)
        .header("X-Forwarded-For", from)
        .json(&json!({"number": number, "exp_month": 12, "exp_year": 2031}))
        .send()
        .await
        .unwrap();
    Resp::from(r).await
}

#[tokio::test]
async fn card_testing_through_a_publishable_key_is_stopped_and_the_address_suspended() {
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let tester = "203.0.113.50";
    let mut statuses = Vec::new();
    let mut codes_seen = Vec::new();
    for n in 0..30 {
        let r = pk_tokenize(&srv, &test_pan(600 + n), tester).await;
        statuses.push(r.status.as_u16());
        codes_seen.push(r.body["error"]["code"].as_str().unwrap_or("").to_owned());
    }
    // Blocked part-way: the first ten pass, the eleventh is blocked by the rule, and
    // the rest meet the address's suspension at the gateway.
    assert!(statuses[..10].iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(
        (statuses[10], codes_seen[10].as_str()),
        (403, "risk_blocked")
    );
    assert!(
        codes_seen[11..].iter().all(|c| c == "suspended"),
        "{codes_seen:?}"
    );
    // Nothing was stored for the blocked card.
    let found = srv.get("/v1/cards?limit=100", &srv.sk_test).await;
    assert_eq!(
        found.body["data"].as_array().unwrap().len(),
        10,
        "{}",
        found.text
    );
    let list = srv.get("/v1/suspensions", &srv.sk_test).await;
    let s = &list.body["data"][0];
    assert_eq!(s["target"]["value"], "203.0.113.50/32", "{}", list.text);
    assert_eq!(s["created_by"], "rule:card_testing_ip");
    assert!(s["reason"].as_str().unwrap().contains("card testing"));
    let ev = srv
        .get("/v1/events?type=suspension.created", &srv.sk_test)
        .await;
    assert_eq!(ev.body["data"].as_array().unwrap().len(), 1, "{}", ev.text);

    // Another address is unaffected.
    let other = pk_tokenize(&srv, &test_pan(700), "198.51.100.9").await;
    assert_eq!(other.status, 201, "{}", other.text);
    // After the suspension's hour the address works again.
    srv.clock.advance(Duration::from_secs(3601));
    let later = pk_tokenize(&srv, &test_pan(701), tester).await;
    assert_eq!(later.status, 201, "{}", later.text);
}

#[tokio::test]
async fn shadow_mode_records_and_off_skips_but_neither_refuses() {
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let set = |mode: &'static str| {
        srv.call(
            reqwest::Method::PATCH,
            "/v1/account",
            Some(&srv.sk_live),
            Some(json!({ "risk_mode": mode })),
        )
    };
    let r = set("shadow").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["risk_mode"], "shadow");
    for n in 0..15 {
        let r = pk_tokenize(&srv, &test_pan(800 + n), "203.0.113.60").await;
        assert_eq!(r.status, 201, "shadow never refuses: {}", r.text);
    }
    // Shadow takes no action: no suspension was made ...
    let list = srv.get("/v1/suspensions", &srv.sk_test).await;
    assert_eq!(list.body["data"], json!([]), "{}", list.text);
    // ... but the run was seen: enforced now, the next card from there is blocked.
    assert_eq!(set("enforce").await.body["risk_mode"], "enforce");
    let r = pk_tokenize(&srv, &test_pan(830), "203.0.113.60").await;
    r.assert_error(403, "risk_blocked");
    let r = set("off").await;
    assert_eq!(r.body["risk_mode"], "off");
    let r = set("sometimes").await;
    r.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn feedback_labels_one_assessment_or_every_one_of_a_card() {
    let srv = TestServer::start().await;
    let card = srv.tokenize("4242424242424242").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let a = assess(&srv, json!({"action": "payment", "card": card["id"]})).await;
        assert_eq!(a["label"], Value::Null);
        ids.push(a["id"].as_str().unwrap().to_owned());
    }
    let r = srv
        .post(
            "/v1/risk/feedback",
            &srv.sk_test,
            json!({"assessment": ids[0], "label": "legitimate"}),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["labelled"].as_i64()),
        (200, Some(1)),
        "{}",
        r.text
    );
    let r = srv
        .post(
            "/v1/risk/feedback",
            &srv.sk_test,
            json!({"card": card["id"], "label": "chargeback", "at": 1_900_000_000}),
        )
        .await;
    // The card's three assessed payments (its tokenize's implicit assessment found
    // nothing, so it was counted, not stored).
    assert_eq!(r.body["labelled"], 3, "{}", r.text);
    let got = srv
        .get(&format!("/v1/risk/assessments/{}", ids[2]), &srv.sk_test)
        .await;
    assert_eq!(got.body["label"], "chargeback");
    for (body, status, code) in [
        (json!({"label": "fraud"}), 400, "missing_field"),
        (
            json!({"assessment": ids[0], "card": card["id"], "label": "fraud"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"assessment": ids[0], "label": "maybe"}),
            400,
            "invalid_request",
        ),
        (
            json!({"assessment": "risk_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6", "label": "fraud"}),
            404,
            "not_found",
        ),
    ] {
        srv.post("/v1/risk/feedback", &srv.sk_test, body)
            .await
            .assert_error(status, code);
    }
}

async fn put_rules(srv: &TestServer, body: Value) -> Resp {
    srv.call(
        reqwest::Method::PUT,
        "/v1/risk/rules",
        Some(&srv.sk_test),
        Some(body),
    )
    .await
}

fn rule_set() -> Value {
    json!({"rules": [
        {"id": "big_payment", "description": "a large payment",
         "when": "action == \"payment\" && amount >= 100000", "score": 40,
         "action": {"type": "review"}},
        {"id": "tight_testing", "when": "ip_distinct_cards_10m >= 2", "score": 90,
         "action": {"type": "suspend", "target": "network", "duration": 600}},
        {"id": "never", "when": "card_uses_24h > 1000", "score": 10, "enabled": false}
    ]})
}

#[tokio::test]
async fn rules_are_data_put_whole_versioned_and_in_force() {
    let srv = TestServer::start().await;
    let got = srv.get("/v1/risk/rules", &srv.sk_test).await;
    assert_eq!(got.body["version"], "builtin-1", "{}", got.text);
    assert_eq!(got.body["builtin"], true);
    assert_eq!(got.body["rules"][0]["id"], "card_testing_ip");

    // A bad rule anywhere refuses the whole set, naming the rule and the problem.
    let ok = rule_set()["rules"][0].clone();
    let with = |bad: Value| json!({"rules": [ok.clone(), bad]});
    let cases = [
        (
            with(json!({"id": "x", "when": "card_uses_10mm > 1", "score": 1})),
            "x",
            "unknown signal",
        ),
        (
            with(json!({"id": "x", "when": "card_uses_10m + 1", "score": 1})),
            "x",
            "condition",
        ),
        (
            with(json!({"id": "x", "when": "a = 1", "score": 1})),
            "x",
            "assign",
        ),
        (
            with(json!({"id": "x", "when": "card_uses_10m > (", "score": 1})),
            "x",
            "parse",
        ),
        (
            with(json!({"id": "x", "when": "true", "score": 101})),
            "x",
            "score",
        ),
        (
            with(json!({"id": "x", "when": "true", "score": 1, "eval": "rm"})),
            "x",
            "unknown field",
        ),
        (with(json!({"when": "true", "score": 1})), "rules[1]", "id"),
        (
            with(json!({"id": "Bad-Id", "when": "true", "score": 1})),
            "rules[1]",
            "id",
        ),
        (
            with(json!({"id": "big_payment", "when": "true", "score": 1})),
            "big_payment",
            "twice",
        ),
        (
            with(json!({"id": "x", "when": "true", "score": 1,
                "action": {"type": "suspend", "target": "ip", "duration": 5}})),
            "x",
            "duration",
        ),
        (
            with(json!({"id": "x", "when": "str::from(1) == \"1\"", "score": 1})),
            "x",
            "function",
        ),
    ];
    for (body, rule, problem) in cases {
        let r = put_rules(&srv, body.clone()).await;
        r.assert_error(400, "rules_invalid");
        assert_eq!(r.body["error"]["rule"], rule, "{body}: {}", r.text);
        let said = r.body["error"]["problem"].as_str().unwrap();
        assert!(said.contains(problem), "{body}: {said}");
    }
    let r = put_rules(
        &srv,
        json!({"rules": [ok], "review_at": 90, "block_at": 80}),
    )
    .await;
    r.assert_error(400, "rules_invalid");
    assert_eq!(r.body["error"].get("rule"), None, "{}", r.text);
    let r = put_rules(&srv, json!({"rules": "all"})).await;
    r.assert_error(400, "invalid_request");
    let r = srv.get("/v1/risk/rules", &srv.sk_test).await;
    assert_eq!(
        r.body["version"], "builtin-1",
        "nothing was stored: {}",
        r.text
    );
    let r = put_rules(&srv, json!({"rules": [], "replaces": "v1"})).await;
    r.assert_error(409, "rules_version_conflict");

    // A good set is stored as v1 and decides at once.
    let mut body = rule_set();
    body["replaces"] = json!("builtin-1");
    let r = put_rules(&srv, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["version"].as_str(), r.body["builtin"].as_bool()),
        (Some("v1"), Some(false))
    );
    assert_eq!(r.body["rules"][2]["enabled"], false);
    let card = srv.tokenize(&test_pan(700)).await;
    let a = assess(
        &srv,
        json!({"action": "payment", "card": card["id"], "amount": 200_000, "currency": "eur"}),
    )
    .await;
    assert_eq!(
        (a["decision"].as_str(), a["score"].as_i64()),
        (Some("review"), Some(40)),
        "{a}"
    );
    assert_eq!(a["rules_version"], "v1");
    assert_eq!(codes(&a), ["big_payment"]);
    assert_eq!(
        a["reasons"][0]["detail"],
        "a large payment (action=payment, amount=200000)"
    );
    assert_eq!(a["reasons"][0]["source"], "rule");
    // The built-in card-testing threshold is gone; the new one suspends the network.
    let mut last = Value::Null;
    for n in 0..3 {
        let card = srv.tokenize(&test_pan(710 + n)).await;
        last = assess(
            &srv,
            json!({"action": "tokenize", "card": card["id"], "ip": "198.51.100.9"}),
        )
        .await;
    }
    assert_eq!(last["decision"], "block", "{last}");
    let list = srv.get("/v1/suspensions", &srv.sk_test).await;
    let made = &list.body["data"][0];
    assert_eq!(made["created_by"], "rule:tight_testing", "{}", list.text);
    assert_eq!(made["target"]["value"], "198.51.100.0/24");
    assert_eq!(
        made["expires_at"].as_i64().unwrap() - made["created"].as_i64().unwrap(),
        600
    );
    assert_eq!(last["suspension"], made["id"]);

    // Optimistic concurrency, history, and one version read back.
    let mut body = rule_set();
    body["replaces"] = json!("builtin-1");
    put_rules(&srv, body)
        .await
        .assert_error(409, "rules_version_conflict");
    let r = put_rules(&srv, json!({"rules": [], "block_at": 90, "replaces": "v1"})).await;
    assert_eq!(r.body["version"], "v2", "{}", r.text);
    let h = srv.get("/v1/risk/rules/versions", &srv.sk_test).await;
    let names: Vec<&str> = h.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v2", "v1"], "{}", h.text);
    let h = srv
        .get("/v1/risk/rules/versions?limit=1&before=2", &srv.sk_test)
        .await;
    assert_eq!(h.body["data"][0]["version"], "v1", "{}", h.text);
    assert_eq!(h.body["data"][0]["rules"][0]["id"], "big_payment");
    let v1 = srv.get("/v1/risk/rules/versions/v1", &srv.sk_test).await;
    assert_eq!(v1.body["rules"], h.body["data"][0]["rules"]);
    let b = srv
        .get("/v1/risk/rules/versions/builtin-1", &srv.sk_test)
        .await;
    assert_eq!(b.body["builtin"], true, "{}", b.text);
    for bad in ["v9", "v0", "v01", "latest"] {
        srv.get(&format!("/v1/risk/rules/versions/{bad}"), &srv.sk_test)
            .await
            .assert_error(404, "not_found");
    }
    srv.get("/v1/risk/rules/versions?limit=0", &srv.sk_test)
        .await
        .assert_error(400, "invalid_parameter");
    // Live mode has its own rules; a publishable key may not read them.
    let live = srv.get("/v1/risk/rules", &srv.sk_live).await;
    assert_eq!(live.body["version"], "builtin-1", "{}", live.text);
    srv.get("/v1/risk/rules", &srv.pk_test)
        .await
        .assert_error(403, "permission_denied");
    // Each stored put is audited under its version.
    let log = srv
        .get(
            "/v1/admin/audit?limit=1000&action=risk_rules.update",
            &srv.admin_key,
        )
        .await;
    let resources: Vec<&str> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "success")
        .filter_map(|r| r["resource"].as_str())
        .collect();
    assert!(resources.contains(&"risk_rules:v1"), "{}", log.text);
    assert!(resources.contains(&"risk_rules:v2"), "{}", log.text);
}

#[tokio::test]
async fn a_dry_run_reports_how_the_last_30_days_would_have_gone() {
    let srv = TestServer::start().await;
    let old = srv.tokenize(&test_pan(720)).await;
    assess(
        &srv,
        json!({"action": "payment", "card": old["id"], "amount": 900_000, "currency": "usd"}),
    )
    .await;
    srv.clock.advance(Duration::from_secs(31 * 86_400));
    let mut big = Vec::new();
    for n in 0..5_u64 {
        let card = srv.tokenize(&test_pan(730 + n)).await;
        let amount = if n < 2 { 250_000 } else { 500 };
        let a = assess(
            &srv,
            json!({"action": "payment", "card": card["id"], "amount": amount, "currency": "usd"}),
        )
        .await;
        assert_eq!(a["decision"], "allow", "{a}");
        if n < 2 {
            big.push(a["id"].clone());
        }
    }
    let r = srv
        .post(
            "/v1/risk/feedback",
            &srv.sk_test,
            json!({"assessment": big[0], "label": "fraud"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = json!({"dry_run": true, "rules": [
        {"id": "large", "when": "amount >= 100000", "score": 10, "action": {"type": "block"}},
        {"id": "refunds", "when": "action == \"refund\"", "score": 10}
    ]});
    let r = put_rules(&srv, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.body;
    assert_eq!(d["object"], "risk_rules_dry_run");
    // Five payments (the tokenizations before them found nothing: not stored).
    assert_eq!(
        (d["window_days"].as_i64(), d["assessments"].as_i64()),
        (Some(30), Some(5)),
        "{d}"
    );
    assert_eq!(d["current"], json!({"allow": 5, "review": 0, "block": 0}));
    assert_eq!(d["proposed"], json!({"allow": 3, "review": 0, "block": 2}));
    assert_eq!(d["changed"], 2);
    assert_eq!(d["truncated"], false);
    assert_eq!(
        d["rules"],
        json!([{"id": "large", "hits": 2}, {"id": "refunds", "hits": 0}])
    );
    assert_eq!(
        d["fraud"],
        json!({"total": 1, "blocked_current": 0, "blocked_proposed": 1})
    );
    assert_eq!(d["legitimate"]["total"], 0);
    let r = srv.get("/v1/risk/rules", &srv.sk_test).await;
    assert_eq!(
        r.body["version"], "builtin-1",
        "a dry run stores nothing: {}",
        r.text
    );
    // A bad set is refused before any dry run.
    let r = put_rules(
        &srv,
        json!({"dry_run": true, "rules": [{"id": "x", "when": "1", "score": 1}]}),
    )
    .await;
    r.assert_error(400, "rules_invalid");
}

#[tokio::test]
async fn a_payment_is_weighed_against_the_cards_and_the_accounts_amounts() {
    let srv = TestServer::start().await;
    let card = srv.tokenize(&test_pan(840)).await;
    let other = srv.tokenize(&test_pan(841)).await;
    let pay = |c: &Value, amount: i64| json!({"action": "payment", "card": c["id"], "amount": amount, "currency": "eur"});
    let ratios = |a: &Value| {
        (
            a["features"]["amount_vs_card_mean"].as_f64().unwrap(),
            a["features"]["amount_vs_account_mean"].as_f64().unwrap(),
        )
    };
    // A first payment has nothing to compare with.
    assert_eq!(ratios(&assess(&srv, pay(&card, 1_000)).await), (1.0, 1.0));
    assert_eq!(ratios(&assess(&srv, pay(&card, 3_000)).await), (3.0, 3.0));
    // The card's mean is 2 000; the account's too.
    assert_eq!(
        ratios(&assess(&srv, pay(&card, 20_000)).await),
        (10.0, 10.0)
    );
    // Another card's first payment: its own history is empty, the account's mean is
    // (1 000 + 3 000 + 20 000) / 3 = 8 000.
    assert_eq!(ratios(&assess(&srv, pay(&other, 4_000)).await), (1.0, 0.5));
    // A use without an amount weighs nothing.
    let a = assess(&srv, json!({"action": "login", "card": card["id"]})).await;
    assert_eq!(ratios(&a), (1.0, 1.0));
    // After 30 days the history has gone.
    srv.clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
    assert_eq!(ratios(&assess(&srv, pay(&card, 5_000)).await), (1.0, 1.0));
}

#[tokio::test]
async fn a_single_nodes_counters_outlive_its_restart() {
    let srv = TestServer::start().await;
    let card = srv.tokenize(&test_pan(850)).await;
    let pay = json!({"action": "payment", "card": card["id"], "ip": "203.0.113.80"});
    for _ in 0..3 {
        assess(&srv, pay.clone()).await;
    }
    // The same account, through the key it had (the restarted harness makes another).
    let key = srv.sk_test.clone();
    let again = TestServer::start_on(srv.stop().await, |_| {}).await;
    let r = again.post("/v1/risk/assessments", &key, pay).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = r.body;
    // The card's uses: its tokenize and three payments; the address's: the payments.
    let (card_uses, ip_uses) = if crate::harness::backend() == "sqlite" {
        // The one node of a SQLite store kept its counters in the store at shutdown.
        (4.0, 3.0)
    } else {
        // Several nodes share Redis for this; a node's own memory is not kept.
        (0.0, 0.0)
    };
    assert_eq!(a["features"]["card_uses_10m"], card_uses, "{a}");
    assert_eq!(a["features"]["ip_uses_1m"], ip_uses, "{a}");
}

/// Nodes that share Redis share the velocity counters: a card tested on one node counts on
/// the next (with in-process counters each node would see only its own share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_redis_count_each_others_uses() {
    let redis = |c: &mut strongroom_server::ServerConfig| {
        c.rate_limit.store =
            strongroom_server::gateway::RateLimitStore::Redis("redis://127.0.0.1:6379".into());
    };
    let a = TestServer::start_on(Arc::new(Data::new()), redis).await;
    let b = TestServer::start_on(a.data.clone(), redis).await;
    let card = a.tokenize(&test_pan(851)).await;
    let pay = json!({"action": "payment", "card": card["id"], "ip": "203.0.113.81"});
    for _ in 0..3 {
        assess(&a, pay.clone()).await;
    }
    let r = b.post("/v1/risk/assessments", &a.sk_test, pay).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The card's tokenize and three payments, and the address's payments, all on node A.
    assert_eq!(r.body["features"]["card_uses_10m"], 4.0, "{}", r.body);
    assert_eq!(r.body["features"]["ip_uses_1m"], 3.0, "{}", r.body);
}
