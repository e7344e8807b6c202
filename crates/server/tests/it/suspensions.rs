//! Suspensions (docs/risk.md, "Suspensions"): a card, an address, a key or an account
//! refused with `403` and `Retry-After` until the end, lifted by hand or by the clock,
//! with `suspension.created` / `suspension.lifted` and audit records.

use crate::harness::{Resp, TestServer, eventually, test_pan};
use serde_json::{Value, json};
use std::time::Duration;
use strongroom_core::{KeyKind, Mode, Scopes};
use strongroom_server::{NewKeyKind, Origin};

fn suspend(kind: &str, value: &str, expires_in: i64) -> Value {
    json!({"target": {"type": kind, "value": value}, "reason": "card testing seen", "expires_in": expires_in})
}

fn card_body(number: &str) -> Value {
    json!({"number": number, "exp_month": 12, "exp_year": 2031})
}

#[track_caller]
fn assert_suspended(r: &Resp, code: &str, max_secs: u64) {
    r.assert_error(403, code);
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=max_secs).contains(&after), "{after}");
}

async fn events(srv: &TestServer, kind: &str) -> Vec<Value> {
    let r = srv
        .get(&format!("/v1/events?type={kind}&limit=100"), &srv.sk_test)
        .await;
    r.body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_suspended_card_is_refused_until_lifted() {
    let srv = TestServer::start().await;
    let card = srv.tokenize("4242424242424242").await;
    let id = card["id"].as_str().unwrap();
    let r = srv
        .post("/v1/suspensions", &srv.sk_test, suspend("card", id, 3600))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = r.body.clone();
    assert_eq!(s["object"], "suspension");
    assert_eq!(s["status"], "active");
    // Kept by fingerprint: every tokenization of the number is refused, not just the id.
    assert_eq!(s["target"]["value"], card["fingerprint"]);
    assert!(s["created_by"].as_str().unwrap().starts_with("key:key_"));
    let sid = s["id"].as_str().unwrap();

    let again = srv
        .post("/v1/cards", &srv.sk_test, card_body("4242 4242 4242 4242"))
        .await;
    assert_suspended(&again, "suspended", 3600);
    // Generic: the message does not say what was suspended.
    assert!(!again.text.contains("card"), "{}", again.text);
    assert_suspended(&srv.reveal(&srv.rk_reveal, id).await, "suspended", 3600);
    // Another card is fine, and so is the same number in the other mode's data.
    let other = srv
        .post("/v1/cards", &srv.sk_test, card_body(&test_pan(5)))
        .await;
    assert_eq!(other.status, 201, "{}", other.text);

    // Lifted by hand: usable at once; both ends were announced.
    let lifted = srv
        .delete(&format!("/v1/suspensions/{sid}"), &srv.sk_test)
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.text);
    assert_eq!(lifted.body["status"], "lifted");
    assert!(
        lifted.body["lifted_by"]
            .as_str()
            .unwrap()
            .starts_with("key:")
    );
    let ok = srv
        .post("/v1/cards", &srv.sk_test, card_body("4242424242424242"))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(events(&srv, "suspension.created").await.len(), 1);
    let lifted_events = events(&srv, "suspension.lifted").await;
    assert_eq!(lifted_events[0]["data"]["object"]["id"], sid);
    // Lifting again changes nothing and sends nothing.
    let again = srv
        .delete(&format!("/v1/suspensions/{sid}"), &srv.sk_test)
        .await;
    assert_eq!(again.body["status"], "lifted");
    assert_eq!(events(&srv, "suspension.lifted").await.len(), 1);

    let got = srv
        .get(&format!("/v1/suspensions/{sid}"), &srv.sk_test)
        .await;
    assert_eq!(got.body["status"], "lifted");
    let list = srv.get("/v1/suspensions", &srv.sk_test).await;
    assert_eq!(list.body["data"][0]["id"], sid, "{}", list.text);
    let audit = srv.get("/v1/admin/audit?limit=100", &srv.admin_key).await;
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.iter().any(|a| a.contains("suspensions")),
        "{actions:?}"
    );
}

#[tokio::test]
async fn an_address_suspension_ends_by_itself_and_its_end_is_recorded() {
    let srv = TestServer::start().await;
    // The live key suspends the network the tests come from, in live mode.
    let r = srv
        .post(
            "/v1/suspensions",
            &srv.sk_live,
            suspend("ip", "127.0.0.0/8", 120),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["target"]["value"], "127.0.0.0/8");
    let sid = r.body["id"].as_str().unwrap().to_owned();
    let refused = srv.get("/v1/cards", &srv.sk_live).await;
    assert_suspended(&refused, "suspended", 120);
    // Test mode is another world.
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);

    // After its end: served again, and the sweep records the end (actor: expiry).
    srv.clock.advance(Duration::from_secs(121));
    assert_eq!(srv.get("/v1/cards", &srv.sk_live).await.status, 200);
    let path = format!("/v1/suspensions/{sid}");
    eventually("the sweep records the end", || async {
        srv.get(&path, &srv.sk_live).await.body["lifted_by"] == "expiry"
    })
    .await;
    let got = srv.get(&path, &srv.sk_live).await;
    assert_eq!(got.body["status"], "expired", "{}", got.text);
    let ev = srv
        .get("/v1/events?type=suspension.lifted", &srv.sk_live)
        .await;
    assert_eq!(ev.body["data"][0]["data"]["object"]["id"], sid.as_str());
}

#[tokio::test]
async fn keys_and_accounts_are_told_they_are_suspended() {
    let srv = TestServer::start().await;
    let s = &srv.running.state().unwrap();
    let extra = s
        .accounts()
        .create_key(
            Origin::System,
            Some(&srv.account),
            NewKeyKind::Account(KeyKind::Restricted),
            Mode::Test,
            Some(Scopes::parse_list(["cards:read"]).unwrap()),
        )
        .await
        .unwrap();
    let key_id = extra.record.id.clone();
    let rk = extra.secret.expose().clone();
    let r = srv
        .post(
            "/v1/suspensions",
            &srv.sk_test,
            suspend("api_key", &key_id, 600),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_suspended(&srv.get("/v1/cards", &rk).await, "api_key_suspended", 600);
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);

    // The account itself: operators only, both modes, lifted by an operator.
    srv.post(
        "/v1/suspensions",
        &srv.sk_test,
        suspend("account", &srv.account, 600),
    )
    .await
    .assert_error(403, "permission_denied");
    let mut body = suspend("account", &srv.account, 600);
    body["mode"] = "live".into();
    let r = srv
        .post(
            &format!("/v1/admin/accounts/{}/suspensions", srv.account),
            &srv.admin_key,
            body,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["created_by"].as_str().unwrap().starts_with("admin:"));
    let sid = r.body["id"].as_str().unwrap();
    for key in [&srv.sk_test, &srv.sk_live, &srv.pk_test] {
        assert_suspended(&srv.get("/v1/cards", key).await, "account_suspended", 600);
    }
    let lifted = srv
        .delete(
            &format!("/v1/admin/accounts/{}/suspensions/{sid}", srv.account),
            &srv.admin_key,
        )
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.text);
    assert_eq!(srv.get("/v1/cards", &srv.sk_live).await.status, 200);
}

#[tokio::test]
async fn malformed_or_foreign_targets_are_refused_and_emails_are_never_kept() {
    let srv = TestServer::start().await;
    for (kind, value) in [
        ("card", "card_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6"),
        ("card", "not-a-fingerprint"),
        ("ip", "300.1.2.3"),
        ("ip", "10.0.0.0/33"),
        ("email", "no-at-sign"),
        ("device", ""),
        ("api_key", "key_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6"),
    ] {
        srv.post("/v1/suspensions", &srv.sk_test, suspend(kind, value, 600))
            .await
            .assert_error(400, "suspension_target_invalid");
    }
    for (extra, code) in [
        (json!({"expires_in": 59}), "invalid_parameter"),
        (json!({"expires_in": 7_776_001}), "invalid_parameter"),
        (json!({"reason": "a\nb"}), "invalid_parameter"),
        (json!({"mode": "live"}), "invalid_parameter"),
        (json!({"severity": 1}), "unknown_field"),
    ] {
        let mut body = suspend("device", "dev-1", 600);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        srv.post("/v1/suspensions", &srv.sk_test, body)
            .await
            .assert_error(400, code);
    }
    // A publishable key holds no risk scope.
    srv.post("/v1/suspensions", &srv.pk_test, suspend("device", "d", 600))
        .await
        .assert_error(403, "permission_denied");
    // An email is kept as a keyed digest, never as the address.
    let r = srv
        .post(
            "/v1/suspensions",
            &srv.sk_test,
            suspend("email", "Fraudster@Example.com", 600),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let digest = r.body["target"]["value"].as_str().unwrap();
    assert_eq!(digest.len(), 64, "{digest}");
    assert!(!r.text.to_lowercase().contains("fraudster"), "{}", r.text);
    let same = srv
        .post(
            "/v1/suspensions",
            &srv.sk_test,
            suspend("email", " fraudster@example.com", 600),
        )
        .await;
    assert_eq!(
        same.body["target"]["value"], digest,
        "normalized before digesting"
    );
    for f in srv.data.sqlite_files() {
        crate::harness::assert_not_in_file(&f, &["raudster@"]);
    }
}
