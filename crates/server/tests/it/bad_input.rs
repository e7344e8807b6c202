//! Every malformed request gets a 4xx with its stable code, and nothing is written.

use crate::harness::*;
use reqwest::Method;
use serde_json::{Value, json};

fn card(number: &str, m: i64, y: i64) -> Value {
    json!({"number": number, "exp_month": m, "exp_year": y})
}

async fn card_count(srv: &TestServer, key: &str) -> usize {
    let r = srv.get("/v1/cards?limit=100", key).await;
    assert_eq!(r.status, 200);
    r.body["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn bad_card_input_is_refused_with_stable_codes_and_nothing_written() {
    let srv = TestServer::start().await;
    // Another account's card.
    let other = srv
        .running
        .state()
        .unwrap()
        .accounts()
        .create(strongroom_server::Origin::System, "Other", None)
        .await
        .unwrap();
    let other_key = srv
        .running
        .state()
        .unwrap()
        .accounts()
        .create_key(
            strongroom_server::Origin::System,
            Some(&other.id),
            strongroom_server::NewKeyKind::Account(strongroom_core::KeyKind::Secret),
            strongroom_core::Mode::Test,
            None,
        )
        .await
        .unwrap();
    let foreign = srv
        .post(
            "/v1/cards",
            other_key.secret.expose(),
            card("5555555555554444", 1, 2030),
        )
        .await;
    let foreign_id = foreign.body["id"].as_str().unwrap().to_owned();

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "non-digits",
            card("4242-4242-4242-424x", 12, 2030),
            400,
            "card_number_invalid",
        ),
        (
            "11 digits",
            card("42424242424", 12, 2030),
            400,
            "card_number_invalid",
        ),
        (
            "20 digits",
            card("42424242424242424242", 12, 2030),
            400,
            "card_number_invalid",
        ),
        (
            "bad luhn",
            card("4242424242424241", 12, 2030),
            400,
            "card_number_luhn",
        ),
        (
            "unknown brand",
            card("9999999999999995", 12, 2030),
            400,
            "card_brand_unknown",
        ),
        (
            "month 0",
            card("4242424242424242", 0, 2030),
            400,
            "expiry_invalid",
        ),
        (
            "month 13",
            card("4242424242424242", 13, 2030),
            400,
            "expiry_invalid",
        ),
        (
            "past expiry",
            card("4242424242424242", 1, 2020),
            400,
            "card_expired",
        ),
        (
            "unknown field",
            json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2030, "cvv": "123"}),
            400,
            "unknown_field",
        ),
        (
            "missing field",
            json!({"number": "4242424242424242", "exp_month": 1}),
            400,
            "missing_field",
        ),
        (
            "wrong type",
            json!({"number": 4242424242424242u64, "exp_month": 1, "exp_year": 2030}),
            400,
            "invalid_request",
        ),
        (
            "not an object",
            json!(["4242424242424242"]),
            400,
            "invalid_request",
        ),
    ];
    for (name, body, status, code) in &cases {
        let r = srv.post("/v1/cards", &srv.sk_test, body.clone()).await;
        assert_eq!(r.status.as_u16(), *status, "{name}: {}", r.text);
        r.assert_error(*status, code);
        assert!(
            !r.text_without_ids().contains("4242"),
            "{name}: the error must not echo input"
        );
    }

    // Test card with a live key.
    srv.post(
        "/v1/cards",
        &srv.sk_live,
        card("4242424242424242", 12, 2030),
    )
    .await
    .assert_error(400, "test_card_in_live_mode");

    // 1 MiB body.
    let big = json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2030, "cardholder_name": "x".repeat(1 << 20)});
    srv.post("/v1/cards", &srv.sk_test, big)
        .await
        .assert_error(413, "body_too_large");

    // Wrong content type.
    let r = srv
        .client
        .post(format!("{}/v1/cards", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("content-type", "text/plain")
        .body(card("4242424242424242", 1, 2030).to_string())
        .send()
        .await
        .unwrap();
    Resp::from(r)
        .await
        .assert_error(415, "unsupported_media_type");

    // Malformed JSON.
    let r = srv
        .client
        .post(format!("{}/v1/cards", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("content-type", "application/json")
        .body("{\"number\": \"4242424242424242\", ")
        .send()
        .await
        .unwrap();
    let r = Resp::from(r).await;
    r.assert_error(400, "invalid_request");
    assert!(!r.text_without_ids().contains("4242"));

    // No auth, garbage auth, unknown key.
    srv.call(
        Method::POST,
        "/v1/cards",
        None,
        Some(card("4242424242424242", 1, 2030)),
    )
    .await
    .assert_error(401, "authentication_required");
    srv.post("/v1/cards", "not a key!", card("4242424242424242", 1, 2030))
        .await
        .assert_error(401, "invalid_api_key");
    srv.post(
        "/v1/cards",
        "sk_test_0000000000000000000000000000000000000000",
        card("4242424242424242", 1, 2030),
    )
    .await
    .assert_error(401, "invalid_api_key");

    // Revoked key: effective on the next request.
    let issued = srv.new_secret_key().await;
    let doomed = issued.secret.expose().clone();
    assert_eq!(srv.get("/v1/cards", &doomed).await.status, 200);
    let rev = srv
        .delete(
            &format!(
                "/v1/admin/accounts/{}/api_keys/{}",
                srv.account, issued.record.id
            ),
            &srv.admin_key,
        )
        .await;
    assert_eq!(rev.status, 200, "{}", rev.text);
    assert_eq!(rev.body["revoked"], true);
    srv.post("/v1/cards", &doomed, card("4242424242424242", 1, 2030))
        .await
        .assert_error(401, "api_key_revoked");

    // Another account's card id, and malformed ids.
    srv.get(&format!("/v1/cards/{foreign_id}"), &srv.sk_test)
        .await
        .assert_error(404, "not_found");
    srv.delete(&format!("/v1/cards/{foreign_id}"), &srv.sk_test)
        .await
        .assert_error(404, "not_found");
    srv.get("/v1/cards/card_nope", &srv.sk_test)
        .await
        .assert_error(404, "not_found");
    srv.get("/v1/cards/%2e%2e", &srv.sk_test)
        .await
        .assert_error(404, "not_found");

    // Unknown route and method.
    srv.get("/v1/nothing", &srv.sk_test)
        .await
        .assert_error(404, "not_found");
    srv.call(Method::PUT, "/v1/cards", Some(&srv.sk_test), None)
        .await
        .assert_error(405, "method_not_allowed");

    // Nothing was written by any refused request.
    assert_eq!(card_count(&srv, &srv.sk_test).await, 0);
    assert_eq!(card_count(&srv, &srv.sk_live).await, 0);
    // The other account's card survived our attempts.
    let still = srv
        .get(
            &format!("/v1/cards/{foreign_id}"),
            other_key.secret.expose(),
        )
        .await;
    assert_eq!(still.status, 200);
    assert_not_logged(&[
        "4242424242424242",
        "4242424242424241",
        "5555555555554444",
        &doomed,
    ]);
}

#[tokio::test]
async fn every_response_has_request_id_and_security_headers() {
    let srv = TestServer::start().await;
    let ok = srv.call(Method::GET, "/healthz", None, None).await;
    let unauth = srv.call(Method::GET, "/v1/cards", None, None).await;
    let missing = srv
        .get(
            "/v1/cards/card_00000000000000000000000000000000",
            &srv.sk_test,
        )
        .await;
    for r in [&ok, &unauth, &missing] {
        assert!(
            r.headers["request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
        assert_eq!(
            r.headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains; preload"
        );
        assert_eq!(r.headers["cache-control"], "no-store");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    assert_eq!(ok.status, 200);
    unauth.assert_error(401, "authentication_required");
    missing.assert_error(404, "not_found");
    assert_ne!(ok.headers["request-id"], unauth.headers["request-id"]);
}

/// Sends `head` and then `sent` bytes of a chunked body over TLS, and never ends the
/// body; returns what the server answered within 10 s (empty if nothing).
fn stalled_upload(port: u16, head: &str, sent: usize) -> String {
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 16 * 1024];
    let mut n = 0;
    while n < sent {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        // The server may answer and close while we are still sending.
        if tls.write_all(&frame).and_then(|()| tls.flush()).is_err() {
            break;
        }
        n += chunk.len();
    }
    let mut buf = [0u8; 4096];
    let got = tls.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

#[tokio::test]
async fn an_early_refusal_reaches_a_client_still_sending() {
    // Refused before its body is read (a declared body over the limit, no credential):
    // the server reads the rest of the body beside the answer (`middleware::drain_unread`).
    // Without that, some clients lose the answer to a reset (curl over HTTP/2, Python
    // `requests` over HTTP/1.1); reqwest does not, so this checks that the answers still
    // come, each one, and promptly.
    let srv = TestServer::start().await;
    let big = "a".repeat(300_000);
    for (path, key, status) in [
        ("/v1/inbound/x", None, 413),
        ("/v1/cards", None, 401),
        ("/v1/cards", Some(&srv.sk_test), 413),
    ] {
        for _ in 0..10 {
            let mut req = srv
                .client
                .post(format!("{}{path}", srv.url))
                .header("content-type", "application/json")
                .body(big.clone());
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let r = req.send().await;
            let got = r
                .as_ref()
                .map(reqwest::Response::status)
                .map_err(|e| e.to_string());
            assert_eq!(got.map(|s| s.as_u16()), Ok(status), "{path}");
        }
    }
}

#[tokio::test]
async fn raw_bodies_are_limited_as_they_are_read() {
    // Handlers that take the raw body (token issue, redelivery, recovery, inbound hooks)
    // must stop reading at 64 KiB: an upload that sends 256 KiB and never ends is
    // answered 413 at once, not after the server buffered up to its 2 MiB default.
    let srv = TestServer::start().await;
    let port = srv.running.local_addr.port();
    let evt = "evt_0192f3a4b5c67d8e9f00112233445566";
    for path in [
        "/v1/auth/token".to_owned(),
        format!("/v1/events/{evt}/redeliver"),
        "/v1/webhook_endpoints/we_0192f3a4b5c67d8e9f00112233445566/recover".to_owned(),
        "/v1/inbound/nope".to_owned(),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            srv.sk_test
        );
        let reply = tokio::task::spawn_blocking(move || stalled_upload(port, &head, 256 * 1024))
            .await
            .unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 413"),
            "{path}: expected 413 while the body was still coming, got {reply:?}"
        );
        assert!(reply.contains("body_too_large"), "{path}: {reply}");
    }
}

#[tokio::test]
async fn event_and_webhook_queries_and_subscriptions_are_checked_strictly() {
    let s = TestServer::start().await;
    // Unknown query parameters: 400 unknown_field, on every listing of events,
    // endpoints and attempts.
    for path in [
        "/v1/events?bogus=1",
        "/v1/webhook_endpoints?bogus=1",
        "/v1/events?limit=5&expand=data",
    ] {
        s.get(path, &s.sk_test)
            .await
            .assert_error(400, "unknown_field");
    }
    for path in [
        "/v1/admin/admin_keys?bogus=1".to_owned(),
        format!("/v1/admin/accounts/{}/api_keys?limit=1", s.account),
    ] {
        s.get(&path, &s.admin_key)
            .await
            .assert_error(400, "unknown_field");
    }
    s.get(
        "/v1/events/evt_00000000000000000000000000000000/deliveries?x=1",
        &s.sk_test,
    )
    .await
    .assert_error(400, "unknown_field");
    // Values the schema forbids: 400 invalid_parameter.
    for path in [
        "/v1/events?type=card.exploded",
        "/v1/events?type=",
        "/v1/events?limit=0",
        "/v1/events?limit=101",
        "/v1/events?limit=x",
        "/v1/events?created_gte=-1",
        "/v1/events?created_lt=99999999999999",
        "/v1/events?starting_after=evt_1",
        "/v1/webhook_endpoints?starting_after=card_00000000000000000000000000000000",
        "/v1/webhook_endpoints?limit=0",
    ] {
        s.get(path, &s.sk_test)
            .await
            .assert_error(400, "invalid_parameter");
    }
    // Every type the server emits is a valid filter.
    let ok = s
        .get("/v1/events?type=otp.created&limit=1", &s.sk_test)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["object"], "list");
    // Subscriptions name types the server emits, or `*`.
    for events in [json!(["card.exploded"]), json!([]), json!(["Card.Created"])] {
        s.post(
            "/v1/webhook_endpoints",
            &s.sk_test,
            json!({"url": "https://example.com/h", "enabled_events": events}),
        )
        .await
        .assert_error(400, "invalid_parameter");
    }
    let ep = s
        .post(
            "/v1/webhook_endpoints",
            &s.sk_test,
            json!({"url": "https://93.184.215.14/h", "enabled_events": ["card.created", "pin.locked"]}),
        )
        .await;
    assert_eq!(ep.status, 201, "{}", ep.text);
    let id = ep.body["id"].as_str().unwrap();
    for path in [
        format!("/v1/webhook_endpoints/{id}/attempts?bogus=1"),
        format!("/v1/webhook_endpoints/{id}/attempts?starting_after=evt_1:2"),
        format!(
            "/v1/webhook_endpoints/{id}/attempts?starting_after=evt_00000000000000000000000000000000:x"
        ),
    ] {
        let r = s.get(&path, &s.sk_test).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
    }
    // URLs the schema refuses are refused, even where the URL parser would fix them up.
    for url in [
        " https://example.com/h",
        "HTTPS://example.com/h",
        "https://example.com/a b",
        "https://",
    ] {
        s.post(
            "/v1/webhook_endpoints",
            &s.sk_test,
            json!({"url": url, "enabled_events": ["*"]}),
        )
        .await
        .assert_error(400, "url_not_allowed");
    }
    // `since` out of range.
    s.post(
        &format!("/v1/webhook_endpoints/{id}/recover"),
        &s.sk_test,
        json!({"since": -1}),
    )
    .await
    .assert_error(400, "invalid_parameter");
}

/// Sends `body` as it is, as JSON.
async fn raw_json(srv: &TestServer, method: Method, path: &str, key: &str, body: &str) -> Resp {
    let r = srv
        .client
        .request(method, format!("{}{path}", srv.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    Resp::from(r).await
}

#[tokio::test]
async fn query_parameters_are_checked_as_strictly_as_bodies() {
    let srv = TestServer::start().await;
    let card_id = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("/v1/cards?bogus=1", "sk", 400, "unknown_field"),
        ("/v1/cards?limit=10&expand=card", "sk", 400, "unknown_field"),
        ("/v1/cards?bogus", "sk", 400, "unknown_field"),
        ("/v1/cards?=1", "sk", 400, "unknown_field"),
        ("/v1/cards?limit=5&limit=6", "sk", 400, "invalid_parameter"),
        ("/v1/cards?fingerprint=", "sk", 400, "invalid_parameter"),
        ("/v1/cards?limit=0", "sk", 400, "invalid_parameter"),
        ("/v1/cards?limit=101", "sk", 400, "invalid_parameter"),
        ("/v1/cards?limit=ten", "sk", 400, "invalid_parameter"),
        ("/v1/cards?limit=8.0", "sk", 400, "invalid_parameter"),
        (
            "/v1/cards?starting_after=card_nope",
            "sk",
            400,
            "invalid_parameter",
        ),
        ("/v1/cards?fingerprint=abc", "sk", 400, "invalid_parameter"),
        ("/v1/signing_keys?bogus=1", "sk", 400, "unknown_field"),
        ("/v1/signing_keys?limit=0", "sk", 400, "invalid_parameter"),
        (
            "/v1/signing_keys?starting_after=key_1",
            "sk",
            400,
            "invalid_parameter",
        ),
        ("/v1/admin/audit?bogus=1", "admin", 400, "unknown_field"),
        (
            "/v1/admin/audit?limit=1001",
            "admin",
            400,
            "invalid_parameter",
        ),
        (
            "/v1/admin/audit?starting_after=-1",
            "admin",
            400,
            "invalid_parameter",
        ),
        ("/v1/admin/audit?action=", "admin", 400, "invalid_parameter"),
        (
            "/v1/admin/audit?since=9223372036854776",
            "admin",
            400,
            "invalid_parameter",
        ),
    ];
    for (path, who, status, code) in cases {
        let key = if who == "admin" {
            &srv.admin_key
        } else {
            &srv.sk_live
        };
        let key = if path.starts_with("/v1/cards") {
            &srv.sk_test
        } else {
            key
        };
        let r = srv.get(path, key).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.text);
        r.assert_error(status, code);
    }
    // The parameters the schema allows still work.
    let r = srv
        .get(
            &format!("/v1/cards?limit=1&starting_after={card_id}"),
            &srv.sk_test,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "list");
    assert_eq!(r.body["has_more"], false);
}

#[tokio::test]
async fn an_array_is_not_an_object_body() {
    let srv = TestServer::start().await;
    // serde would read a struct from an array by position; the body must be an object.
    let cases: Vec<(Method, &str, &str)> = vec![
        (
            Method::POST,
            "/v1/cards",
            r#"["4242424242424242", 12, 2030, null]"#,
        ),
        (
            Method::POST,
            "/v1/otp",
            r#"["card.reveal", "card_00000000000000000000000000000000"]"#,
        ),
        (Method::PATCH, "/v1/account", "[true]"),
        (Method::PUT, "/v1/ip_allowlist", r#"[["10.0.0.0/8"]]"#),
        (Method::POST, "/v1/auth/token", r#"["cards:read"]"#),
        (Method::POST, "/v1/cards", r#""4242424242424242""#),
        (Method::POST, "/v1/cards", "12"),
    ];
    for (method, path, body) in cases {
        let key = if path.starts_with("/v1/cards") || path.starts_with("/v1/otp") {
            &srv.sk_test
        } else {
            &srv.sk_live
        };
        let r = raw_json(&srv, method.clone(), path, key, body).await;
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.text);
        r.assert_error(400, "invalid_request");
    }
    let r = raw_json(
        &srv,
        Method::POST,
        &format!("/v1/admin/accounts/{}/pin_settings", srv.account),
        &srv.admin_key,
        "[5]",
    )
    .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(card_count(&srv, &srv.sk_test).await, 0);
    let controls = srv.get("/v1/account", &srv.sk_live).await;
    assert_eq!(controls.body["require_signed_requests"], false);
    assert_eq!(controls.body["ip_allowlist"], json!([]));
}

#[tokio::test]
async fn integers_may_be_written_with_a_zero_fraction() {
    let srv = TestServer::start().await;
    let r = raw_json(
        &srv,
        Method::POST,
        "/v1/cards",
        &srv.sk_test,
        r#"{"number": "4242424242424242", "exp_month": 12.0, "exp_year": 2030.0}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (&r.body["exp_month"], &r.body["exp_year"]),
        (&json!(12), &json!(2030))
    );
    for body in [
        r#"{"number": "4242424242424242", "exp_month": 12.5, "exp_year": 2030}"#,
        r#"{"number": "4242424242424242", "exp_month": "12", "exp_year": 2030}"#,
        r#"{"number": "4242424242424242", "exp_month": 12, "exp_year": 1e300}"#,
        r#"{"number": "4242424242424242", "exp_month": 12, "exp_year": 9223372036854775808}"#,
    ] {
        raw_json(&srv, Method::POST, "/v1/cards", &srv.sk_test, body)
            .await
            .assert_error(400, "invalid_request");
    }
    let path = format!("/v1/admin/accounts/{}/pin_settings", srv.account);
    let r = raw_json(
        &srv,
        Method::POST,
        &path,
        &srv.admin_key,
        r#"{"max_failures": 5.0}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["max_failures"], 5);
    raw_json(
        &srv,
        Method::POST,
        &path,
        &srv.admin_key,
        r#"{"max_failures": 11.0}"#,
    )
    .await
    .assert_error(400, "invalid_parameter");
    // Every integer of a body, not only those above.
    let account = format!("/v1/admin/accounts/{}", srv.account);
    let r = raw_json(
        &srv,
        Method::PATCH,
        &account,
        &srv.admin_key,
        r#"{"rate_limit_per_minute": 600.0}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["rate_limit_per_minute"], 600);
    let retire = format!("{account}/keys/retire");
    // Version 1 is the writer: refused as in use, so the body was read.
    raw_json(
        &srv,
        Method::POST,
        &retire,
        &srv.admin_key,
        r#"{"purpose": "cards", "version": 1.0}"#,
    )
    .await
    .assert_error(409, "key_in_use");
    raw_json(
        &srv,
        Method::POST,
        &retire,
        &srv.admin_key,
        r#"{"purpose": "cards", "version": 1.5}"#,
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn a_null_body_is_no_body_where_the_body_is_optional() {
    let srv = TestServer::start().await;
    let r = raw_json(&srv, Method::POST, "/v1/auth/token", &srv.sk_test, "null").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    let r = raw_json(
        &srv,
        Method::POST,
        "/v1/admin/jwt_keys/rotate",
        &srv.admin_key,
        " null ",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "list");
    // A required body is still required.
    raw_json(&srv, Method::POST, "/v1/cards", &srv.sk_test, "null")
        .await
        .assert_error(400, "invalid_request");
    let r = raw_json(
        &srv,
        Method::POST,
        &format!("/v1/admin/accounts/{}/revoke_all", srv.account),
        &srv.admin_key,
        "null",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "account");
}
