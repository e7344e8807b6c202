//! Allow and block lists (docs/risk.md, "Lists"): an entry holds at once, for explicit
//! and implicit assessments, and stops at its expiry or deletion; an allow-listed
//! address is never suspended by a rule, though a block-listed card still blocks; an
//! email is kept only as a keyed digest; malformed entries are refused whole.

use crate::harness::{Data, Resp, TestServer, assert_not_logged, test_pan};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn assess(srv: &TestServer, body: Value) -> Value {
    let r = srv.post("/v1/risk/assessments", &srv.sk_test, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

pub(crate) fn reason<'a>(a: &'a Value, code: &str) -> Option<&'a Value> {
    a["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
}

async fn add(srv: &TestServer, list: &str, body: Value) -> Resp {
    srv.post(
        &format!("/v1/risk/lists/{list}/entries"),
        &srv.sk_test,
        body,
    )
    .await
}

#[tokio::test]
async fn a_list_entry_blocks_immediately_and_stops_at_its_expiry() {
    let srv = TestServer::start().await;
    let card = srv.tokenize(&test_pan(31)).await;
    let other = srv.tokenize(&test_pan(32)).await;
    let use_of =
        |c: &Value| json!({"action": "payment", "card": c["id"], "amount": 900, "currency": "eur"});
    assert_eq!(assess(&srv, use_of(&card)).await["decision"], "allow");

    let r = add(
        &srv,
        "block",
        json!({"type": "card", "value": card["id"], "note": "chargeback ring", "expires_in": 600}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let entry = r.body;
    assert_eq!(entry["object"], "risk_list_entry");
    assert_eq!(
        (&entry["list"], &entry["type"]),
        (&json!("block"), &json!("card"))
    );
    assert_eq!(
        entry["value"], card["fingerprint"],
        "kept as the fingerprint"
    );
    assert_eq!(entry["status"], "active");
    assert_eq!(
        entry["expires_at"].as_i64().unwrap() - entry["created"].as_i64().unwrap(),
        600
    );
    assert!(
        entry["created_by"]
            .as_str()
            .unwrap()
            .starts_with("key:key_")
    );

    // At once: the next assessment of the card is blocked, and says why.
    let a = assess(&srv, use_of(&card)).await;
    assert_eq!(a["decision"], "block", "{a}");
    assert_eq!(a["score"], 100);
    let why = reason(&a, "block_listed").unwrap_or_else(|| panic!("{a}"));
    assert_eq!(
        (&why["weight"], &why["source"]),
        (&json!(100), &json!("list"))
    );
    assert!(why["detail"].as_str().unwrap().contains("card"), "{why}");
    assert_eq!(a["features"]["block_list_hits"], 1.0);
    // Another card is not.
    assert_eq!(assess(&srv, use_of(&other)).await["decision"], "allow");

    // The same card twice on the list is refused, by id or by fingerprint.
    add(&srv, "block", json!({"type": "card", "value": card["id"]}))
        .await
        .assert_error(409, "list_entry_exists");
    add(
        &srv,
        "block",
        json!({"type": "card", "value": card["fingerprint"]}),
    )
    .await
    .assert_error(409, "list_entry_exists");
    // The other list may hold it.
    let allow = add(&srv, "allow", json!({"type": "card", "value": card["id"]})).await;
    assert_eq!(allow.status, 201, "{}", allow.text);
    assert_eq!(allow.body["expires_at"], Value::Null);
    // Block wins over allow.
    assert_eq!(assess(&srv, use_of(&card)).await["decision"], "block");

    // At its expiry it stops matching (the allow entry, without one, stays).
    srv.clock.advance(Duration::from_secs(601));
    let a = assess(&srv, use_of(&card)).await;
    assert_eq!(a["decision"], "allow", "{a}");
    assert!(reason(&a, "block_listed").is_none(), "{a}");
    assert!(reason(&a, "allow_listed").is_some(), "{a}");
    let id = entry["id"].as_str().unwrap();
    let got = srv
        .get(&format!("/v1/risk/lists/block/entries/{id}"), &srv.sk_test)
        .await;
    assert_eq!(got.body["status"], "expired", "{}", got.text);
    // Not on the other list's path.
    srv.get(&format!("/v1/risk/lists/allow/entries/{id}"), &srv.sk_test)
        .await
        .assert_error(404, "not_found");
    // Expired, it no longer stands in the way of a new entry.
    let again = add(&srv, "block", json!({"type": "card", "value": card["id"]})).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(assess(&srv, use_of(&card)).await["decision"], "block");

    // Deleted, it stops at once, and stays listed as deleted.
    let again_id = again.body["id"].as_str().unwrap();
    let path = format!("/v1/risk/lists/block/entries/{again_id}");
    let del = srv.delete(&path, &srv.sk_test).await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(del.body["status"], "deleted");
    assert!(del.body["deleted_by"].as_str().unwrap().starts_with("key:"));
    assert_eq!(assess(&srv, use_of(&card)).await["decision"], "allow");
    let del2 = srv.delete(&path, &srv.sk_test).await;
    assert_eq!(del2.body["deleted_at"], del.body["deleted_at"]);

    // The list, newest first, with each entry's state; the allow list apart.
    let page = srv
        .get("/v1/risk/lists/block/entries?limit=1", &srv.sk_test)
        .await;
    assert_eq!(
        page.body["data"][0]["id"], again.body["id"],
        "{}",
        page.text
    );
    assert_eq!(page.body["has_more"], true);
    let next = srv
        .get(
            &format!("/v1/risk/lists/block/entries?starting_after={again_id}"),
            &srv.sk_test,
        )
        .await;
    assert_eq!(next.body["data"][0]["id"], entry["id"], "{}", next.text);
    assert_eq!(next.body["data"][0]["status"], "expired");
    let allows = srv.get("/v1/risk/lists/allow/entries", &srv.sk_test).await;
    assert_eq!(allows.body["data"].as_array().unwrap().len(), 1);

    // The live key's lists are its own.
    let live = srv.get("/v1/risk/lists/block/entries", &srv.sk_live).await;
    assert_eq!(live.body["data"], json!([]), "{}", live.text);
}

#[tokio::test]
async fn addresses_emails_bins_and_devices_match_as_listed() {
    let srv = TestServer::start().await;
    let card = srv.tokenize("4242424242424242").await;
    let email = "Shopper.Listed@example.com";

    let net = add(
        &srv,
        "block",
        json!({"type": "ip", "value": "198.51.100.77/24"}),
    )
    .await;
    assert_eq!(net.body["value"], "198.51.100.0/24", "{}", net.text);
    let a = assess(&srv, json!({"action": "login", "ip": "198.51.100.200"})).await;
    assert_eq!(a["decision"], "block", "{a}");
    assert!(
        reason(&a, "block_listed").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("ip")
    );
    assert_eq!(
        assess(&srv, json!({"action": "login", "ip": "198.51.101.1"})).await["decision"],
        "allow"
    );

    let e = add(&srv, "block", json!({"type": "email", "value": email})).await;
    assert_eq!(e.status, 201, "{}", e.text);
    let digest = e.body["value"].as_str().unwrap();
    assert_eq!(digest.len(), 64, "a keyed digest in hex: {digest}");
    assert!(!e.text.to_lowercase().contains("shopper.listed"));
    // The same address, spelled otherwise, is the same entry.
    add(
        &srv,
        "block",
        json!({"type": "email", "value": " shopper.listed@EXAMPLE.com"}),
    )
    .await
    .assert_error(409, "list_entry_exists");
    let a = assess(
        &srv,
        json!({"action": "login", "email": "shopper.listed@example.com"}),
    )
    .await;
    assert_eq!(a["decision"], "block", "{a}");
    assert!(!a.to_string().to_lowercase().contains("shopper.listed"));

    let b = add(&srv, "block", json!({"type": "bin", "value": "424242"})).await;
    assert_eq!(b.status, 201, "{}", b.text);
    let a = assess(&srv, json!({"action": "payment", "card": card["id"]})).await;
    assert!(
        reason(&a, "block_listed").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("bin")
    );

    let d = add(
        &srv,
        "block",
        json!({"type": "device", "value": "dev-7f3a"}),
    )
    .await;
    assert_eq!(d.status, 201, "{}", d.text);
    let a = assess(&srv, json!({"action": "login", "device_id": "dev-7f3a"})).await;
    assert_eq!(a["decision"], "block", "{a}");
    assert_not_logged(&[email, "shopper.listed@example.com"]);
}

#[tokio::test]
async fn an_allow_listed_address_is_never_suspended_but_a_blocked_card_still_blocks() {
    let srv = TestServer::start().await;
    let office = "203.0.113.99";
    let r = add(
        &srv,
        "allow",
        json!({"type": "ip", "value": office, "note": "our call centre"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["value"], "203.0.113.99/32");
    // Fourteen cards from one address would be card testing; from this one they pass,
    // and no rule suspends it.
    for n in 0..14 {
        let card = srv.tokenize(&test_pan(900 + n)).await;
        let a = assess(
            &srv,
            json!({"action": "tokenize", "card": card["id"], "ip": office}),
        )
        .await;
        assert_eq!(a["decision"], "allow", "{a}");
        assert!(reason(&a, "allow_listed").is_some(), "{a}");
    }
    let s = srv.get("/v1/suspensions", &srv.sk_test).await;
    assert_eq!(s.body["data"], json!([]), "{}", s.text);
    // A block-listed card is blocked even from there.
    let bad = srv.tokenize(&test_pan(950)).await;
    add(&srv, "block", json!({"type": "card", "value": bad["id"]})).await;
    let a = assess(
        &srv,
        json!({"action": "payment", "card": bad["id"], "ip": office}),
    )
    .await;
    assert_eq!(a["decision"], "block", "{a}");
}

#[tokio::test]
async fn a_block_listed_bin_refuses_a_publishable_key_tokenize() {
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let r = add(&srv, "block", json!({"type": "bin", "value": "400000"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let pk = srv
        .client
        .post(format!("{}/v1/cards", srv.url))
        .bearer_auth(&srv.pk_test)
        .header("X-Forwarded-For", "192.0.2.10")
        .json(&json!({"number": test_pan(77), "exp_month": 12, "exp_year": 2031}))
        .send()
        .await
        .unwrap();
    Resp::from(pk).await.assert_error(403, "risk_blocked");
    let found = srv.get("/v1/cards", &srv.sk_test).await;
    assert_eq!(
        found.body["data"],
        json!([]),
        "nothing stored: {}",
        found.text
    );
}

#[tokio::test]
async fn malformed_entries_are_refused_and_nothing_is_stored() {
    let srv = TestServer::start().await;
    for (body, status, code) in [
        (
            json!({"type": "bin", "value": "42ab42"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "bin", "value": "42424"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "bin", "value": "42424242"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "ip", "value": "10.0.0.0/33"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "ip", "value": "example.com"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "email", "value": "not-an-email"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "card", "value": "card_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "card", "value": "c2hvcnQ"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "device", "value": "a\u{7}b"}),
            400,
            "list_entry_invalid",
        ),
        (
            json!({"type": "device", "value": "d", "note": "bad\nnote"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "device", "value": "d", "expires_in": 59}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "device", "value": "d", "expires_in": 315_360_001_i64}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "grey", "value": "d"}),
            400,
            "invalid_request",
        ),
        (json!({"value": "d"}), 400, "missing_field"),
        (
            json!({"type": "device", "value": "d", "extra": 1}),
            400,
            "unknown_field",
        ),
    ] {
        add(&srv, "block", body.clone())
            .await
            .assert_error(status, code);
    }
    add(&srv, "grey", json!({"type": "device", "value": "d"}))
        .await
        .assert_error(404, "not_found");
    srv.get("/v1/risk/lists/block/entries?limit=0", &srv.sk_test)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get(
        "/v1/risk/lists/block/entries/rle_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6",
        &srv.sk_test,
    )
    .await
    .assert_error(404, "not_found");
    let none = srv.get("/v1/risk/lists/block/entries", &srv.sk_test).await;
    assert_eq!(none.body["data"], json!([]), "{}", none.text);
    // A publishable key cannot list.
    srv.post(
        "/v1/risk/lists/block/entries",
        &srv.pk_test,
        json!({"type": "device", "value": "d"}),
    )
    .await
    .assert_error(403, "permission_denied");
}

/// A server (not a dev deployment) whose account may relay to a loopback echo processor.
pub(crate) async fn with_echo() -> (crate::echo::Echo, TestServer) {
    let echo = crate::echo::Echo::start().await;
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| c.dev_mode = false).await;
    let body = json!({"destinations": [{"host": "127.0.0.1", "port": echo.port(),
        "path_prefix": "/v1", "ca_cert_pem": echo.ca_pem, "test_only": true}]});
    let path = format!("/v1/admin/accounts/{}/relay_destinations", srv.account);
    let r = srv
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&srv.admin_key),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    (echo, srv)
}

#[tokio::test]
async fn a_block_listed_card_is_refused_at_tokenize_reveal_and_relay() {
    let (echo, srv) = with_echo().await;
    let pan = test_pan(61);
    let card = srv.tokenize(&pan).await;
    let id = card["id"].as_str().unwrap().to_owned();
    let send = json!({
        "destination": format!("https://127.0.0.1:{}/v1/charges", echo.port()),
        "body": {"pan": format!("{{{{{id}:number}}}}")}
    });
    // Before the entry: a secret-key relay and a reveal go through.
    let sent = srv.post("/v1/relay", &srv.sk_test, send.clone()).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    assert_eq!(srv.reveal(&srv.rk_reveal, &id).await.status, 200);

    let r = add(&srv, "block", json!({"type": "card", "value": id})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Tokenizing the number again, revealing it and relaying it are all refused.
    srv.post(
        "/v1/cards",
        &srv.sk_test,
        json!({"number": pan, "exp_month": 12, "exp_year": 2030}),
    )
    .await
    .assert_error(403, "risk_blocked");
    srv.reveal(&srv.rk_reveal, &id)
        .await
        .assert_error(403, "risk_blocked");
    srv.post("/v1/relay", &srv.sk_test, send.clone())
        .await
        .assert_error(403, "risk_blocked");
    assert_eq!(echo.received().len(), 1, "the blocked relay sent nothing");
    // Each refusal's assessment was stored (the merchant reads why), and the reasons name
    // the list, never the card.
    let stored = srv.get("/v1/risk/lists/block/entries", &srv.sk_test).await;
    assert_eq!(stored.body["data"][0]["status"], "active");

    // In shadow mode the same uses are assessed and recorded, never refused.
    let r = srv
        .call(
            reqwest::Method::PATCH,
            "/v1/account",
            Some(&srv.sk_live),
            Some(json!({"risk_mode": "shadow"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(srv.reveal(&srv.rk_reveal, &id).await.status, 200);
    let sent = srv.post("/v1/relay", &srv.sk_test, send).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    assert_not_logged(&[&pan]);
}
