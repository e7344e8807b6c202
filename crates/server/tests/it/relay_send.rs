//! `POST /v1/relay` against a loopback HTTPS echo processor with its own CA: the
//! processor receives the card data, the caller never does, and every refusal sends
//! nothing.

use crate::echo::Echo;
use crate::harness::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A server (not a dev deployment) whose account may send to `echo` in test mode.
pub(crate) async fn setup(echo: &Echo) -> TestServer {
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| c.dev_mode = false).await;
    approve(&srv, echo, &srv.admin_key).await;
    srv
}

async fn approve(srv: &TestServer, echo: &Echo, admin: &str) {
    let body = json!({"destinations": [{"host": "127.0.0.1", "port": echo.port(),
        "path_prefix": "/v1", "ca_cert_pem": echo.ca_pem, "test_only": true}]});
    let r = srv
        .call(
            Method::PUT,
            &format!("/v1/admin/accounts/{}/relay_destinations", srv.account),
            Some(admin),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn card(srv: &TestServer, pan: &str) -> String {
    let r = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": pan, "exp_month": 3, "exp_year": 2031, "cardholder_name": "Anne & \"Q\" <Example>"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

fn url(echo: &Echo, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", echo.port())
}

async fn relay(srv: &TestServer, key: &str, body: Value) -> Resp {
    srv.post("/v1/relay", key, body).await
}

#[tokio::test]
async fn the_processor_gets_the_card_and_the_caller_only_a_mask_or_a_token() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let pan = test_pan(31_001);
    let id = card(&srv, &pan).await;
    let body = json!({
        "destination": url(&echo, "/v1/charges?x=1"),
        "headers": {"X-Card-Last": format!("{{{{{id}:exp_month}}}}/{{{{{id}:exp_year2}}}}"),
                    "Authorization": "Bearer processor-secret"},
        "body": {"card": {"number": format!("{{{{{id}:number}}}}"),
                          "exp_year": format!("{{{{{id}:exp_year}}}}"),
                          "name": format!("{{{{{id}:cardholder_name}}}}")},
                 "amount": 1234},
        "tokenize_response_fields": ["/body"]
    });
    let r = relay(&srv, &srv.sk_test, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["strongroom-relay-status"], "completed");
    let ms: f64 = r.headers["strongroom-upstream-latency-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms > 0.0);
    assert!(r.headers.get("set-cookie").is_none(), "cookies are dropped");

    // What the processor received: the real data, JSON-escaped, over its own CA's TLS.
    let got = echo.received();
    assert_eq!(got.len(), 1);
    let sent: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(sent["card"]["number"], pan);
    assert_eq!(sent["card"]["exp_year"], "2031");
    assert_eq!(sent["card"]["name"], "Anne & \"Q\" <Example>");
    assert_eq!(got[0].headers["x-card-last"], "03/31");
    assert_eq!(got[0].headers["authorization"], "Bearer processor-secret");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert_eq!(got[0].headers["accept-encoding"], "identity");
    assert_eq!(got[0].path, "/v1/charges?x=1");

    // What the caller got back: the echo, with the number masked everywhere.
    assert!(!r.text.contains(&pan));
    let echoed: Value = serde_json::from_str(r.body["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["card"]["number"], format!("XXXX{}", &pan[12..]));
    assert_eq!(echoed["amount"], 1234);

    // A pointer at a field that holds the number alone gives the card's id back.
    echo.answer_with(
        201,
        "application/json",
        &format!(
            r#"{{"payment":{{"card":"{pan}","last4":"{}"}},"note":"card {pan}"}}"#,
            &pan[12..]
        ),
        Some(("x-echo-card", pan.as_str())),
    );
    let body = json!({"destination": url(&echo, "/v1/pay"), "body": format!("pan={{{{{id}:number}}}}"),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "tokenize_response_fields": ["/payment/card"]});
    let r = relay(&srv, &srv.sk_test, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["payment"]["card"], id.as_str());
    assert_eq!(r.body["note"], format!("card XXXX{}", &pan[12..]));
    assert_eq!(
        r.headers["x-echo-card"],
        format!("XXXX{}", &pan[12..]).as_str()
    );
    assert_eq!(echo.received()[1].body, format!("pan={pan}"));

    // The relay is recorded: an event and audit records, none with the number.
    let ev = srv
        .get("/v1/events?type=relay.completed", &srv.sk_test)
        .await;
    assert_eq!(ev.status, 200, "{}", ev.text);
    let data = ev.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{}", ev.text);
    let obj = &data[1]["data"]["object"];
    assert_eq!(obj["host"], "127.0.0.1");
    assert_eq!(obj["path"], "/v1/charges");
    assert_eq!(obj["status"], 200);
    assert_eq!(obj["cards"], json!([id]));
    let audit = srv
        .get("/v1/admin/audit?action=card.relay", &srv.admin_key)
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert!(audit.text.contains(&format!("card:{id}")), "{}", audit.text);
    assert!(!ev.text.contains(&pan) && !audit.text.contains(&pan));
    assert_not_logged(&[&pan]);
    let data = srv.stop().await;
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &[&pan]);
    }
}

#[tokio::test]
async fn the_raw_form_forwards_the_body_and_keeps_the_vault_headers() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let pan = test_pan(31_002);
    let id = card(&srv, &pan).await;
    let xml = format!(
        "<pay><pan>{{{{{id}:number}}}}</pan><name>{{{{{id}:cardholder_name}}}}</name></pay>"
    );
    let r = srv
        .client
        .post(format!("{}/v1/relay", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("strongroom-destination", url(&echo, "/v1/xml"))
        .header(
            "strongroom-destination-authorization",
            "Basic cHJvYzpzZWNyZXQ=",
        )
        .header("content-type", "application/xml")
        .header("x-merchant", "m-1")
        .body(xml)
        .send()
        .await
        .unwrap();
    let r = Resp::from(r).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = echo.received();
    assert_eq!(got[0].method, "POST");
    assert_eq!(
        got[0].body,
        format!("<pay><pan>{pan}</pan><name>Anne &amp; &quot;Q&quot; &lt;Example&gt;</name></pay>")
    );
    assert_eq!(got[0].headers["authorization"], "Basic cHJvYzpzZWNyZXQ=");
    assert_eq!(got[0].headers["x-merchant"], "m-1");
    assert!(got[0].headers.get("strongroom-destination").is_none());
    assert!(
        !got[0].headers.iter().any(|(_, v)| v
            .as_bytes()
            .windows(srv.sk_test.len())
            .any(|w| w == srv.sk_test.as_bytes())),
        "the vault key never leaves"
    );
    assert!(!r.text.contains(&pan));
}

#[tokio::test]
async fn every_refusal_has_its_code_and_sends_nothing() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let pan = test_pan(31_003);
    let id = card(&srv, &pan).await;
    let gone = card(&srv, &test_pan(31_004)).await;
    assert_eq!(
        srv.delete(&format!("/v1/cards/{gone}"), &srv.sk_test)
            .await
            .status,
        200
    );
    let ok_url = url(&echo, "/v1/charges");
    let expr = |id: &str, f: &str| format!("{{{{{id}:{f}}}}}");
    let req = |dest: &str, body: Value| json!({"destination": dest, "body": body});
    let cases: Vec<(Value, u16, &str)> = vec![
        // Not approved: another port, another path, plain HTTP, credentials.
        (
            req(
                &format!("https://127.0.0.1:{}/v1/x", echo.port() + 1),
                json!({}),
            ),
            403,
            "destination_not_approved",
        ),
        (
            req(&url(&echo, "/v2/x"), json!({})),
            403,
            "destination_not_approved",
        ),
        (
            req(&format!("http://127.0.0.1:{}/v1/x", echo.port()), json!({})),
            403,
            "destination_not_approved",
        ),
        (
            req(
                &format!("https://u:p@127.0.0.1:{}/v1/x", echo.port()),
                json!({}),
            ),
            403,
            "destination_not_approved",
        ),
        // Cards: unknown, deleted, malformed expressions, fields not offered.
        (
            req(
                &ok_url,
                json!({"n": expr("card_0192f3a4b5c67d8e9f00112233445566", "number")}),
            ),
            400,
            "relay_card_unknown",
        ),
        (
            req(&ok_url, json!({"n": expr(&gone, "number")})),
            400,
            "relay_card_unknown",
        ),
        (
            req(&ok_url, json!({"n": expr(&id, "pin_block")})),
            400,
            "relay_field_not_offered",
        ),
        (
            req(&ok_url, json!({"n": format!("{{{{{id}number}}}}")})),
            400,
            "relay_expression_invalid",
        ),
        (
            req(&ok_url, json!({"n": "{{card_xyz:number}}"})),
            400,
            "relay_expression_invalid",
        ),
        (
            req(&ok_url, json!({"n": expr(&id, "cvc")})),
            409,
            "cvc_unavailable",
        ),
        (
            json!({"destination": ok_url, "headers": {"Host": "evil.example"}}),
            400,
            "relay_header_invalid",
        ),
        (
            json!({"destination": ok_url, "headers": {"X-Bad": format!("a\n{}", expr(&id, "number"))}}),
            400,
            "relay_header_invalid",
        ),
        (
            json!({"destination": ok_url, "method": "TRACE"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"destination": ok_url, "body": 12}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"destination": ok_url, "tokenize_response_fields": ["no-slash"]}),
            400,
            "relay_pointer_invalid",
        ),
        (
            json!({"destination": ok_url, "extra": 1}),
            400,
            "unknown_field",
        ),
    ];
    for (body, status, code) in &cases {
        let r = relay(&srv, &srv.sk_test, body.clone()).await;
        r.assert_error(*status, code);
        assert_eq!(r.headers["strongroom-relay-status"], "refused", "{code}");
        assert!(!r.text.contains(&pan));
    }
    // A live key cannot use a test card, nor a test-only destination.
    let live = json!({"destination": ok_url, "body": {"n": expr(&id, "number")}});
    relay(&srv, &srv.sk_live, live)
        .await
        .assert_error(403, "destination_not_approved");
    // Too large.
    let big = json!({"destination": ok_url, "body": "x".repeat(300 * 1024)});
    relay(&srv, &srv.sk_test, big)
        .await
        .assert_error(413, "body_too_large");
    // A key without cards:relay.
    let rk = srv.rk_reveal.clone();
    let body = json!({"destination": ok_url, "body": {"n": expr(&id, "number")}});
    relay(&srv, &rk, body)
        .await
        .assert_error(403, "permission_denied");
    assert!(echo.received().is_empty(), "nothing reached the processor");
    assert_not_logged(&[&pan]);
}

#[tokio::test]
async fn a_failed_destination_is_a_relay_failure_and_an_untrusted_one_is_not_reached() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let id = card(&srv, &test_pan(31_005)).await;
    // A destination whose certificate does not chain to its CA: TLS refuses it.
    let other = Echo::start().await;
    let body = json!({"destinations": [
        {"host": "127.0.0.1", "port": other.port(), "ca_cert_pem": echo.ca_pem, "test_only": true},
        {"host": "localhost", "port": 9, "test_only": true}]});
    let r = srv
        .call(
            Method::PUT,
            &format!("/v1/admin/accounts/{}/relay_destinations", srv.account),
            Some(&srv.admin_key),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let send =
        |dest: String| json!({"destination": dest, "body": {"n": format!("{{{{{id}:number}}}}")}});
    let r = relay(
        &srv,
        &srv.sk_test,
        send(format!("https://127.0.0.1:{}/x", other.port())),
    )
    .await;
    r.assert_error(502, "relay_upstream_failed");
    assert_eq!(r.headers["strongroom-relay-status"], "failed");
    assert!(
        other.received().is_empty(),
        "an unverified processor gets nothing"
    );
    // Nothing listens on port 9.
    let r = relay(&srv, &srv.sk_test, send("https://localhost:9/x".into())).await;
    r.assert_error(502, "relay_upstream_failed");
    let ev = srv.get("/v1/events?type=relay.failed", &srv.sk_test).await;
    assert_eq!(ev.body["data"].as_array().unwrap().len(), 2, "{}", ev.text);
    assert_eq!(
        ev.body["data"][0]["data"]["object"]["failure_code"],
        "relay_upstream_failed"
    );
}

async fn card_with_cvc(srv: &TestServer, pan: &str, cvc: &str) -> String {
    let r = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": pan, "exp_month": 3, "exp_year": 2031, "cvc": cvc}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(r.body["cvc_available"], true);
    r.body["id"].as_str().unwrap().to_owned()
}

fn with_cvc(echo: &Echo, id: &str) -> Value {
    json!({"destination": url(echo, "/v1/charges"),
           "body": {"number": format!("{{{{{id}:number}}}}"), "cvc": format!("{{{{{id}:cvc}}}}")}})
}

#[tokio::test]
async fn a_cvc_reaches_the_processor_once_and_never_comes_back() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let (pan, cvc) = (test_pan(31_010), "737");
    let id = card_with_cvc(&srv, &pan, cvc).await;
    let r = relay(&srv, &srv.sk_test, with_cvc(&echo, &id)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sent: Value = serde_json::from_str(&echo.received()[0].body).unwrap();
    assert_eq!(sent["cvc"], cvc);
    // The echo of the CVC is removed from the answer, the number masked.
    let echoed: Value = serde_json::from_str(r.body["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["cvc"], "");
    assert_eq!(echoed["number"], format!("XXXX{}", &pan[12..]));
    for form in cvc_spellings(cvc) {
        assert!(!r.text.contains(&form));
    }
    let shown = srv.get(&format!("/v1/cards/{id}"), &srv.sk_test).await;
    assert_eq!(shown.body["cvc_available"], false, "spent by its first use");

    // Used twice: refused, nothing sent.
    let r = relay(&srv, &srv.sk_test, with_cvc(&echo, &id)).await;
    r.assert_error(409, "cvc_unavailable");
    assert_eq!(echo.received().len(), 1);

    // A refusal before the CVC is needed does not spend it: a header that cannot hold
    // the name (there is none) refuses first, and the CVC is still there after.
    let id2 = card_with_cvc(&srv, &test_pan(31_011), "738").await;
    let mut body = with_cvc(&echo, &id2);
    body["headers"] = json!({"X-Name": format!("{{{{{id2}:cardholder_name}}}}")});
    relay(&srv, &srv.sk_test, body)
        .await
        .assert_error(409, "relay_value_unavailable");
    let shown = srv.get(&format!("/v1/cards/{id2}"), &srv.sk_test).await;
    assert_eq!(shown.body["cvc_available"], true);

    // After ten minutes it is gone.
    srv.clock
        .advance(std::time::Duration::from_millis(10 * 60 * 1000 + 1));
    let r = relay(&srv, &srv.sk_test, with_cvc(&echo, &id2)).await;
    r.assert_error(409, "cvc_unavailable");
    assert_eq!(echo.received().len(), 1, "nothing sent after expiry");
    assert_not_logged(&[&pan]);
    let logs = captured_logs();
    for form in cvc_spellings(cvc) {
        assert!(!logs.contains(&form));
    }
}

#[tokio::test]
async fn a_restart_loses_a_held_cvc_and_it_is_in_no_file() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let cvc = "4971";
    let pan_amex = "378282246310005";
    let id = {
        let r = srv
            .post(
                "/v1/cards",
                &srv.sk_test,
                json!({"number": pan_amex, "exp_month": 3, "exp_year": 2031, "cvc": cvc}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    };
    let sk = srv.sk_test.clone();
    let data = srv.stop().await;
    // A lone 4-digit CVC turns up in hex ids by chance: look for it as a value.
    let forms = cvc_spellings(cvc);
    let mut needles: Vec<&str> = forms.iter().map(String::as_str).collect();
    needles.push(pan_amex);
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &needles);
    }
    // The same data, the same account and key (the harness adds another account).
    let srv = TestServer::start_on(data, |c| c.dev_mode = false).await;
    let r = relay(&srv, &sk, with_cvc(&echo, &id)).await;
    r.assert_error(409, "cvc_unavailable");
    assert!(echo.received().is_empty());
    let data = srv.stop().await;
    // A lone 4-digit CVC turns up in hex ids by chance: look for it as a value.
    let forms = cvc_spellings(cvc);
    let mut needles: Vec<&str> = forms.iter().map(String::as_str).collect();
    needles.push(pan_amex);
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &needles);
    }
}

#[tokio::test]
async fn a_retried_relay_with_its_idempotency_key_is_sent_once() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let pan = test_pan(31_020);
    let id = card(&srv, &pan).await;
    let body = json!({"destination": url(&echo, "/v1/pay"),
        "body": {"n": format!("{{{{{id}:number}}}}"), "amount": 5}});
    let send = || {
        srv.client
            .post(format!("{}/v1/relay", srv.url))
            .bearer_auth(&srv.sk_test)
            .header("idempotency-key", "pay-order-77")
            .json(&body)
            .send()
    };
    let first = Resp::from(send().await.unwrap()).await;
    let second = Resp::from(send().await.unwrap()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(first.body, second.body);
    assert_eq!(echo.received().len(), 1, "a retry does not pay twice");
    assert!(!second.text.contains(&pan));
}

async fn withdraw(node: &TestServer, account: &str, admin: &str) -> Resp {
    node.call(
        Method::PUT,
        &format!("/v1/admin/accounts/{account}/relay_destinations"),
        Some(admin),
        Some(json!({"destinations": []})),
    )
    .await
}

/// Destinations are cached per node: a list changed on this node, or (PostgreSQL) on
/// another, stops the relay at once (within the time the change takes to be heard).
#[tokio::test]
async fn a_withdrawn_destination_stops_the_relay_on_every_node() {
    let echo = Echo::start().await;
    let a = setup(&echo).await;
    let id = card(&a, &test_pan(31_031)).await;
    let body = json!({"destination": url(&echo, "/v1/pay"),
        "body": {"n": format!("{{{{{id}:number}}}}")}});
    assert_eq!(relay(&a, &a.sk_test, body.clone()).await.status, 200);
    // Changed on this node: the next relay is refused.
    assert_eq!(withdraw(&a, &a.account, &a.admin_key).await.status, 200);
    let r = relay(&a, &a.sk_test, body.clone()).await;
    assert_eq!(
        r.body["error"]["code"], "destination_not_approved",
        "{}",
        r.text
    );
    assert_eq!(echo.received().len(), 1);
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "a_withdrawn_destination_stops_the_relay_on_every_node (two nodes)",
    ) {
        return;
    }
    // Changed on another node: heard within a second.
    let b = TestServer::start_on(a.data.clone(), |c| c.dev_mode = false).await;
    approve(&a, &echo, &a.admin_key).await;
    assert_eq!(relay(&a, &a.sk_test, body.clone()).await.status, 200);
    // Straight to the store through node B, so that nothing but the change itself (no
    // key's use, no audit) can tell node A.
    let st = b.running.state().unwrap();
    #[allow(clippy::disallowed_methods)]
    let writes = st.store().unaudited();
    writes
        .set_relay_destinations(&a.account, &[])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let r = relay(&a, &a.sk_test, body.clone()).await;
        if r.body["error"]["code"] == "destination_not_approved" {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(std::time::Instant::now() < deadline, "node A still relays");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A processor that spells the number with JSON escapes or percent-encoding does not get
/// it past the cleaning: the answer is read decoded on a second pass.
#[tokio::test]
async fn numbers_hidden_by_escapes_in_an_answer_are_masked() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let pan = test_pan(31_041);
    let id = card(&srv, &pan).await;
    let body = json!({"destination": url(&echo, "/v1/pay"),
        "body": {"n": format!("{{{{{id}:number}}}}")}});
    let escaped = format!(
        r#"{{"memo":"\u00{:x}{}","ok":true}}"#,
        pan.as_bytes()[0],
        &pan[1..]
    );
    echo.answer_with(200, "application/json", &escaped, None);
    let r = relay(&srv, &srv.sk_test, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["memo"], format!("XXXX{}", &pan[12..]), "{}", r.text);
    assert_eq!(r.body["ok"], true);
    let form = format!("card={}%20{}&ok=1", &pan[..8], &pan[8..]);
    echo.answer_with(200, "application/x-www-form-urlencoded", &form, None);
    let r = relay(&srv, &srv.sk_test, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, format!("card=XXXX{}&ok=1", &pan[12..]));
}
