//! Inbound routes: a partner posts card numbers to `/in/{route}/…`; the merchant's
//! receiver (the loopback echo, with its own CA) gets tokens and masks, never a number.

use crate::echo::Echo;
use crate::harness::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A server (not a dev deployment) whose account may send to `echo` in test mode.
async fn setup(echo: &Echo) -> TestServer {
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| c.dev_mode = false).await;
    approve(&srv, echo, "/v1").await;
    srv
}

async fn approve(srv: &TestServer, echo: &Echo, prefix: &str) {
    let body = json!({"destinations": [{"host": "127.0.0.1", "port": echo.port(),
        "path_prefix": prefix, "ca_cert_pem": echo.ca_pem, "test_only": true}]});
    let r = srv
        .call(
            Method::PUT,
            &format!("/v1/admin/accounts/{}/relay_destinations", srv.account),
            Some(&srv.admin_key),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn url(echo: &Echo, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", echo.port())
}

async fn route(srv: &TestServer, body: Value) -> Resp {
    srv.post("/v1/inbound_routes", &srv.sk_test, body).await
}

/// A route forwarding `/in/{id}/notify…` to the echo's `/v1/partner…`, tokenizing a
/// card at `/card/number` (expiry beside it) and a payout card spelled out.
async fn standard_route(srv: &TestServer, echo: &Echo) -> String {
    let r = route(
        srv,
        json!({
            "forward_to": url(echo, "/v1/partner"),
            "path": "/notify",
            "tokenize": ["/card/number",
                         {"number": "/payout/pan", "expiry": "/payout/exp", "cvc": "/payout/cvv"}],
            "description": "acquirer notifications"
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

/// A partner's request: no vault key, its own headers.
async fn partner(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Resp {
    let mut req = srv.client.request(method, format!("{}{path}", srv.url));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    Resp::from(req.send().await.unwrap()).await
}

fn contains(hay: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| hay.contains(n))
}

#[tokio::test]
async fn a_partner_card_reaches_the_merchant_only_as_a_token() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let id = standard_route(&srv, &echo).await;
    assert!(id.starts_with("inr_"), "{id}");
    let (pan1, pan2, pan3) = (test_pan(31_501), test_pan(31_502), test_pan(31_503));
    let spaced = format!(
        "{} {} {} {}",
        &pan3[..4],
        &pan3[4..8],
        &pan3[8..12],
        &pan3[12..]
    );
    let body = json!({
        "card": {"number": pan1, "exp_month": "03", "exp_year": 2031, "cardholder_name": "Ann Lee"},
        "payout": {"pan": pan2, "exp": "04/32", "cvv": "737"},
        "note": format!("also {spaced} here"),
        "amount": 1234
    })
    .to_string();
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify/v2?ref={pan3}&n=1"),
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer partner-token"),
            ("x-partner-card", &pan3),
            ("cookie", "session=partner"),
            ("strongroom-inbound-cards", "card_forged"),
        ],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["strongroom-relay-status"], "completed");

    // What the merchant received: tokens, masks, no CVC, no number anywhere.
    let got = echo.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.method, "POST");
    let masked3 = format!("XXXX{}", &pan3[12..]);
    assert_eq!(m.path, format!("/v1/partner/notify/v2?ref={masked3}&n=1"));
    let sent: Value = serde_json::from_str(&m.body).unwrap();
    let card1 = sent["card"]["number"].as_str().unwrap().to_owned();
    let card2 = sent["payout"]["pan"].as_str().unwrap().to_owned();
    assert!(
        card1.starts_with("card_") && card2.starts_with("card_"),
        "{sent}"
    );
    assert_ne!(card1, card2);
    assert_eq!(sent["card"]["exp_month"], "03");
    assert_eq!(sent["payout"]["cvv"], "", "the CVC is removed");
    assert_eq!(sent["note"], format!("also {masked3} here"));
    assert_eq!(sent["amount"], 1234);
    assert_eq!(m.headers["authorization"], "Bearer partner-token");
    assert_eq!(m.headers["x-partner-card"], masked3.as_str());
    assert_eq!(m.headers["strongroom-inbound-route"], id.as_str());
    assert_eq!(
        m.headers["strongroom-inbound-cards"],
        format!("{card1},{card2}").as_str()
    );
    assert!(m.headers.get("cookie").is_none());
    let all_headers: String = m
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", v.to_str().unwrap_or_default()))
        .collect();
    let secrets = [pan1.as_str(), pan2.as_str(), pan3.as_str(), "737"];
    assert!(!contains(&m.body, &secrets[..3]) && !m.body.contains("\"737\""));
    assert!(!contains(&all_headers, &secrets[..3]) && !contains(&m.path, &secrets[..3]));

    // The partner's answer is the merchant's echo, cleaned the same way.
    assert!(!contains(&r.text, &secrets[..3]), "{}", r.text);

    // The cards are the account's, in test mode; the payout card's CVC is held.
    let c1 = srv.get(&format!("/v1/cards/{card1}"), &srv.sk_test).await;
    assert_eq!(c1.status, 200, "{}", c1.text);
    assert_eq!(c1.body["last4"], &pan1[12..]);
    assert_eq!(
        (c1.body["exp_month"].clone(), c1.body["exp_year"].clone()),
        (json!(3), json!(2031))
    );
    assert_eq!(c1.body["cvc_available"], false);
    let c2 = srv.get(&format!("/v1/cards/{card2}"), &srv.sk_test).await;
    assert_eq!(c2.body["last4"], &pan2[12..]);
    assert_eq!(c2.body["exp_year"], 2032);
    assert_eq!(c2.body["cvc_available"], true);

    // The same card again is the same token (the vault's dedup).
    let again = json!({"card": {"number": pan1, "exp_month": 3, "exp_year": "31"}}).to_string();
    let r = partner(
        &srv,
        Method::PUT,
        &format!("/in/{id}/notify"),
        &[("content-type", "application/json")],
        Some(again),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = &echo.received()[1];
    assert_eq!(m.method, "PUT");
    assert_eq!(m.path, "/v1/partner/notify");
    let sent: Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(sent["card"]["number"], card1.as_str());

    // A form body has nothing to tokenize: every number in it is masked.
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(format!("pan={pan1}&amount=5")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        echo.received()[2].body,
        format!("pan=XXXX{}&amount=5", &pan1[12..])
    );

    // Spellings a byte scan cannot see are found decoded: a JSON escape, a query's
    // and a form's percent-encoding.
    let hidden = format!(r#"{{"memo":"\u00{:x}{}"}}"#, pan1.as_bytes()[0], &pan1[1..]);
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify?p={}%20{}", &pan2[..8], &pan2[8..]),
        &[("content-type", "application/json")],
        Some(hidden),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = &echo.received()[3];
    let sent: Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(sent["memo"], format!("XXXX{}", &pan1[12..]));
    assert_eq!(m.path, format!("/v1/partner/notify?p=XXXX{}", &pan2[12..]));
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify"),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(format!("pan={}%20{}", &pan3[..8], &pan3[8..])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(echo.received()[4].body, format!("pan={masked3}"));

    // Recorded: events and audit records naming the route and the cards.
    let ev = srv
        .get("/v1/events?type=inbound_route.forwarded", &srv.sk_test)
        .await;
    assert_eq!(ev.status, 200, "{}", ev.text);
    let data = ev.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 5, "{}", ev.text);
    let first = data
        .iter()
        .find(|e| e["data"]["object"]["cards"].as_array().unwrap().len() == 2)
        .expect("the first request's event");
    assert_eq!(first["data"]["object"]["route"], id.as_str());
    assert_eq!(first["data"]["object"]["path"], "/v1/partner/notify/v2");
    assert_eq!(first["data"]["object"]["status"], 200);
    let audit = srv
        .get("/v1/admin/audit?action=card.inbound", &srv.admin_key)
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert!(
        audit.text.contains(&format!("card:{card1}")),
        "{}",
        audit.text
    );
    let fwd = srv
        .get(
            "/v1/admin/audit?action=inbound_route.forward",
            &srv.admin_key,
        )
        .await;
    assert!(
        fwd.text.contains(&format!("inbound_route:{id}")),
        "{}",
        fwd.text
    );
    assert!(!contains(&ev.text, &secrets[..3]) && !contains(&audit.text, &secrets[..3]));
    assert!(!ev.text.contains("\"737\""));
    assert_not_logged(&secrets[..3]);
    let data = srv.stop().await;
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &secrets[..3]);
    }
}

#[tokio::test]
async fn routes_are_listed_read_and_deleted() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let id = standard_route(&srv, &echo).await;
    let one = srv
        .get(&format!("/v1/inbound_routes/{id}"), &srv.sk_test)
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["object"], "inbound_route");
    assert_eq!(one.body["path"], "/notify");
    assert_eq!(one.body["mode"], "test");
    assert_eq!(
        one.body["tokenize"][0],
        json!({"number": "/card/number", "exp_month": "/card/exp_month",
               "exp_year": "/card/exp_year", "cardholder_name": "/card/cardholder_name"})
    );
    let list = srv.get("/v1/inbound_routes", &srv.sk_test).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    // Another mode sees none of them.
    let live = srv.get("/v1/inbound_routes", &srv.sk_live).await;
    assert_eq!(live.body["data"].as_array().unwrap().len(), 0);
    let r = srv
        .get(&format!("/v1/inbound_routes/{id}"), &srv.sk_live)
        .await;
    assert_eq!(r.status, 404);

    let d = srv
        .delete(&format!("/v1/inbound_routes/{id}"), &srv.sk_test)
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["deleted"], true);
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify"),
        &[("content-type", "application/json")],
        Some("{}".into()),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "not_found");
    assert!(echo.received().is_empty());
    let again = srv
        .delete(&format!("/v1/inbound_routes/{id}"), &srv.sk_test)
        .await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn a_bad_route_is_refused_with_its_code() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let ok = |b: Value| b;
    let cases = [
        (
            ok(json!({"forward_to": "https://merchant.example/v1/x", "tokenize": []})),
            403,
            "destination_not_approved",
        ),
        (
            ok(json!({"forward_to": url(&echo, "/v2/outside"), "tokenize": []})),
            403,
            "destination_not_approved",
        ),
        (
            ok(json!({"forward_to": url(&echo, "/v1/x?secret=1"), "tokenize": []})),
            400,
            "inbound_route_invalid",
        ),
        (
            ok(json!({"forward_to": url(&echo, "/v1/x"), "tokenize": ["card/number"]})),
            400,
            "relay_pointer_invalid",
        ),
        (
            ok(json!({"forward_to": url(&echo, "/v1/x"), "tokenize": [{"number": "/n"}]})),
            400,
            "inbound_route_invalid",
        ),
        (
            ok(json!({"forward_to": url(&echo, "/v1/x"), "tokenize": [],
                      "path": "/a/../b"})),
            400,
            "inbound_route_invalid",
        ),
        (
            ok(json!({"forward_to": url(&echo, "/v1/x"), "tokenize": [], "extra": 1})),
            400,
            "unknown_field",
        ),
    ];
    for (body, status, code) in cases {
        let r = route(&srv, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{body}: {}", r.text);
    }
    // A publishable key cannot make one; a live key cannot use a test-only destination.
    let body = json!({"forward_to": url(&echo, "/v1/x"), "tokenize": []});
    let r = srv
        .post("/v1/inbound_routes", &srv.pk_test, body.clone())
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "permission_denied");
    let r = srv.post("/v1/inbound_routes", &srv.sk_live, body).await;
    assert_eq!(
        r.body["error"]["code"], "destination_not_approved",
        "{}",
        r.text
    );
    let list = srv.get("/v1/inbound_routes", &srv.sk_test).await;
    assert_eq!(
        list.body["data"].as_array().unwrap().len(),
        0,
        "nothing was made"
    );
}

/// A partner's request and what it must be refused with: method, path, headers,
/// body, status, code.
type Case<'a> = (
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    String,
    u16,
    &'a str,
);

#[tokio::test]
async fn every_refused_partner_request_forwards_and_stores_nothing() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let id = standard_route(&srv, &echo).await;
    let pan = test_pan(31_511);
    let cards_before = srv.get("/v1/cards", &srv.sk_test).await;
    let json_h: &[(&str, &str)] = &[("content-type", "application/json")];
    let good = json!({"card": {"number": pan, "exp_month": 3, "exp_year": 2031}});
    let mut bad_luhn = pan.clone();
    bad_luhn.replace_range(15..16, if pan.ends_with('0') { "1" } else { "0" });
    let cases: Vec<Case> = vec![
        // Unknown, malformed or foreign route ids are one 404.
        (Method::POST, "/in/inr_00000000000000000000000000000000/notify".into(), json_h.to_vec(), good.to_string(), 404, "not_found"),
        (Method::POST, "/in/nope/notify".into(), json_h.to_vec(), good.to_string(), 404, "not_found"),
        // A path the route does not accept, or one that climbs out of it.
        (Method::POST, format!("/in/{id}/other"), json_h.to_vec(), good.to_string(), 404, "not_found"),
        (Method::POST, format!("/in/{id}/notify/..%2F..%2Fadmin"), json_h.to_vec(), good.to_string(), 404, "not_found"),
        // A method the relay does not send.
        (Method::OPTIONS, format!("/in/{id}/notify"), vec![], String::new(), 405, "method_not_allowed"),
        // A body that cannot be cleaned.
        (Method::POST, format!("/in/{id}/notify"), vec![("content-type", "application/json"), ("content-encoding", "gzip")], good.to_string(), 415, "unsupported_media_type"),
        // A named field without a card, or a card without its expiry, or expired.
        (Method::POST, format!("/in/{id}/notify"), json_h.to_vec(), json!({"card": {"number": bad_luhn, "exp_month": 3, "exp_year": 2031}}).to_string(), 422, "inbound_card_invalid"),
        (Method::POST, format!("/in/{id}/notify"), json_h.to_vec(), json!({"card": {"number": pan, "exp_month": 3}}).to_string(), 422, "inbound_card_invalid"),
        (Method::POST, format!("/in/{id}/notify"), json_h.to_vec(), json!({"card": {"number": pan, "exp_month": 13, "exp_year": 2031}}).to_string(), 422, "inbound_card_invalid"),
        (Method::POST, format!("/in/{id}/notify"), json_h.to_vec(), json!({"card": {"number": pan, "exp_month": 1, "exp_year": 2001}}).to_string(), 422, "inbound_card_invalid"),
        // One bad card of two: the good one is not stored either.
        (Method::POST, format!("/in/{id}/notify"), json_h.to_vec(), json!({"card": {"number": pan, "exp_month": 3, "exp_year": 2031}, "payout": {"pan": pan, "exp": "99/99"}}).to_string(), 422, "inbound_card_invalid"),
        // A live card number in a test route.
        (Method::POST, format!("/in/{id}/notify"), json_h.to_vec(), json!({"card": {"number": "4539578763621486", "exp_month": 3, "exp_year": 2031}}).to_string(), 422, "inbound_card_invalid"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = partner(&srv, method.clone(), &path, &headers, Some(body)).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{path}: {}", r.text);
        assert_eq!(r.headers["strongroom-relay-status"], "refused", "{path}");
        assert!(!r.text.contains(&pan));
    }
    assert!(echo.received().is_empty(), "nothing was forwarded");
    let cards_after = srv.get("/v1/cards", &srv.sk_test).await;
    assert_eq!(
        cards_before.body["data"], cards_after.body["data"],
        "no card was stored"
    );

    // A destination the operator withdrew stops the route at the next request.
    approve(&srv, &echo, "/v2").await;
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify"),
        json_h,
        Some(good.to_string()),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "destination_not_approved");
    assert!(echo.received().is_empty());
    let cards_after = srv.get("/v1/cards", &srv.sk_test).await;
    assert_eq!(cards_before.body["data"], cards_after.body["data"]);
    assert_not_logged(&[&pan, &bad_luhn, "4539578763621486"]);
}

#[tokio::test]
async fn a_merchant_that_fails_is_a_failed_forward() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let id = standard_route(&srv, &echo).await;
    let port = echo.port();
    drop(echo);
    let pan = test_pan(31_521);
    let body = json!({"card": {"number": pan, "exp_month": 3, "exp_year": 2031}}).to_string();
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/notify"),
        &[("content-type", "application/json")],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "relay_upstream_failed");
    assert_eq!(r.headers["strongroom-relay-status"], "failed");
    let ev = srv
        .get("/v1/events?type=inbound_route.failed", &srv.sk_test)
        .await;
    let data = ev.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", ev.text);
    assert_eq!(
        data[0]["data"]["object"]["failure_code"],
        "relay_upstream_failed"
    );
    assert!(!ev.text.contains(&pan) && port > 0);
}

#[tokio::test]
async fn a_route_admits_partners_only_from_its_networks() {
    let echo = Echo::start().await;
    let srv = setup(&echo).await;
    let make = |ips: Value| {
        json!({"forward_to": url(&echo, "/v1/partner"), "tokenize": ["/card/number"],
               "allowed_ips": ips})
    };
    let r = route(&srv, make(json!(["not-a-network"]))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "invalid_parameter");
    let elsewhere = route(&srv, make(json!(["203.0.113.0/24", "2001:db8::/32"]))).await;
    assert_eq!(elsewhere.status, 201, "{}", elsewhere.text);
    assert_eq!(
        elsewhere.body["allowed_ips"],
        json!(["203.0.113.0/24", "2001:db8::/32"])
    );
    let here = route(&srv, make(json!(["127.0.0.1"]))).await;
    assert_eq!(
        here.body["allowed_ips"],
        json!(["127.0.0.1/32"]),
        "{}",
        here.text
    );
    let pan = test_pan(31_531);
    let body = json!({"card": {"number": pan, "exp_month": 3, "exp_year": 2031}}).to_string();
    let h: &[(&str, &str)] = &[("content-type", "application/json")];
    let id = elsewhere.body["id"].as_str().unwrap();
    let r = partner(
        &srv,
        Method::POST,
        &format!("/in/{id}/x"),
        h,
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "ip_not_allowed");
    assert!(echo.received().is_empty(), "nothing was forwarded");
    let cards = srv.get("/v1/cards", &srv.sk_test).await;
    assert_eq!(
        cards.body["data"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );
    let id = here.body["id"].as_str().unwrap();
    let r = partner(&srv, Method::POST, &format!("/in/{id}/x"), h, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(echo.received().len(), 1);
}
