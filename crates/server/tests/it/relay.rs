//! Relay destinations: the admin API that approves where an account's card data may be
//! sent, and the send-time check the relay asks (`service::relay::approve`).

use crate::harness::*;
use reqwest::Method;
use serde_json::{Value, json};
use strongroom_core::Mode;
use strongroom_server::service::ServiceError;
use strongroom_server::service::relay::approve;

fn path(srv: &TestServer) -> String {
    format!("/v1/admin/accounts/{}/relay_destinations", srv.account)
}

async fn put(srv: &TestServer, key: &str, destinations: Value) -> Resp {
    let body = json!({ "destinations": destinations });
    srv.call(Method::PUT, &path(srv), Some(key), Some(body))
        .await
}

/// A server that is not a dev deployment: loopback only for test-only destinations.
async fn production() -> TestServer {
    TestServer::start_on(std::sync::Arc::new(Data::new()), |c| c.dev_mode = false).await
}

fn ca() -> String {
    String::from_utf8(ca_pem()).unwrap()
}

#[tokio::test]
async fn destinations_round_trip_and_are_replaced_whole() {
    let srv = production().await;
    let r = srv.get(&path(&srv), &srv.admin_key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"object": "list", "data": [], "has_more": false})
    );

    let ca = ca();
    let r = put(
        &srv,
        &srv.admin_key,
        json!([
            {"host": "API.Processor.example.", "path_prefix": "/v1"},
            {"host": "93.184.216.34", "port": 8443, "ca_cert_pem": ca},
            {"host": "[::1]", "port": 9443, "test_only": true},
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["object"], "relay_destination");
    assert_eq!(data[0]["host"], "api.processor.example");
    assert_eq!(data[0]["port"], 443);
    assert_eq!(data[0]["path_prefix"], "/v1");
    assert_eq!(data[0]["ca_cert_pem"], Value::Null);
    assert_eq!(data[0]["test_only"], false);
    assert!(data[0]["created_at"].as_i64().unwrap() > 0);
    assert_eq!(data[1]["port"], 8443);
    assert_eq!(data[1]["path_prefix"], "/");
    assert_eq!(data[1]["ca_cert_pem"], ca.as_str());
    assert_eq!(data[2]["host"], "::1");
    assert_eq!(data[2]["test_only"], true);
    let got = srv.get(&path(&srv), &srv.admin_key).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, r.body);

    // PUT replaces the whole list.
    let r = put(&srv, &srv.admin_key, json!([{"host": "b.example"}])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = srv.get(&path(&srv), &srv.admin_key).await;
    let data = got.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["host"], "b.example");

    // Empty clears.
    let r = put(&srv, &srv.admin_key, json!([])).await;
    assert_eq!(r.status, 200);
    let got = srv.get(&path(&srv), &srv.admin_key).await;
    assert_eq!(got.body["data"], json!([]));
    srv.stop().await;
}

#[tokio::test]
async fn every_refusal_has_its_code_and_changes_nothing() {
    let srv = production().await;
    let before = put(&srv, &srv.admin_key, json!([{"host": "keep.example"}])).await;
    assert_eq!(before.status, 200);
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let too_many: Vec<Value> = (0..51)
        .map(|i| json!({"host": format!("h{i}.example")}))
        .collect();
    let cases: Vec<(Value, u16, &str)> = vec![
        // Malformed hosts: scheme, credentials, port, path, bad labels.
        (
            json!([{"host": "https://a.example"}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "user@a.example"}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example:443"}]),
            400,
            "destination_invalid",
        ),
        (json!([{"host": "a.example/x"}]), 400, "destination_invalid"),
        (json!([{"host": "-a.example"}]), 400, "destination_invalid"),
        (json!([{"host": ""}]), 400, "destination_invalid"),
        (json!([{"host": "0x7f.1"}]), 400, "destination_invalid"),
        (
            json!([{"host": "a".repeat(254)}]),
            400,
            "destination_invalid",
        ),
        // Ports.
        (
            json!([{"host": "a.example", "port": 0}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example", "port": 65536}]),
            400,
            "destination_invalid",
        ),
        // Path prefixes.
        (
            json!([{"host": "a.example", "path_prefix": "v1"}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example", "path_prefix": "/a/../b"}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example", "path_prefix": "/a?b"}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example", "path_prefix": format!("/{}", "a".repeat(512))}]),
            400,
            "destination_invalid",
        ),
        // CA certificates: garbage, a private key beside a certificate, too large.
        (
            json!([{"host": "a.example", "ca_cert_pem": "not pem"}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example", "ca_cert_pem": format!("{}{key}", ca())}]),
            400,
            "destination_invalid",
        ),
        (
            json!([{"host": "a.example", "ca_cert_pem": format!("{}{}", ca(), "\n".repeat(16 * 1024))}]),
            400,
            "destination_invalid",
        ),
        // Duplicates.
        (
            json!([{"host": "a.example"}, {"host": "A.example", "port": 443}]),
            400,
            "destination_invalid",
        ),
        // Not public (live): loopback, private, link-local, metadata, local names.
        (
            json!([{"host": "127.0.0.1"}]),
            400,
            "destination_not_public",
        ),
        (json!([{"host": "::1"}]), 400, "destination_not_public"),
        (
            json!([{"host": "localhost"}]),
            400,
            "destination_not_public",
        ),
        (
            json!([{"host": "api.localhost"}]),
            400,
            "destination_not_public",
        ),
        (json!([{"host": "10.1.2.3"}]), 400, "destination_not_public"),
        (
            json!([{"host": "192.168.0.1"}]),
            400,
            "destination_not_public",
        ),
        (
            json!([{"host": "169.254.169.254"}]),
            400,
            "destination_not_public",
        ),
        (json!([{"host": "fe80::1"}]), 400, "destination_not_public"),
        (
            json!([{"host": "::ffff:127.0.0.1"}]),
            400,
            "destination_not_public",
        ),
        // Test-only lets loopback through, nothing else private.
        (
            json!([{"host": "10.1.2.3", "test_only": true}]),
            400,
            "destination_not_public",
        ),
        (
            json!([{"host": "169.254.169.254", "test_only": true}]),
            400,
            "destination_not_public",
        ),
        // One bad entry refuses the whole list.
        (
            json!([{"host": "fine.example"}, {"host": "10.0.0.1"}]),
            400,
            "destination_not_public",
        ),
        (Value::Array(too_many), 400, "too_many_destinations"),
        // Body shape.
        (
            json!([{"host": "a.example", "insecure": true}]),
            400,
            "unknown_field",
        ),
        (json!([{"port": 443}]), 400, "missing_field"),
    ];
    for (list, status, code) in cases {
        let r = put(&srv, &srv.admin_key, list.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{list}: {}", r.text);
        r.assert_error(status, code);
        // Nothing of the input is echoed.
        assert!(!r.text.contains("example"), "{}", r.text);
        assert!(!r.text.contains("CERTIFICATE"), "{}", r.text);
    }
    let after = srv.get(&path(&srv), &srv.admin_key).await;
    assert_eq!(after.body, before.body);

    // Unknown and malformed account ids.
    let r = srv
        .call(
            Method::PUT,
            "/v1/admin/accounts/acct_00000000000000000000000000000000/relay_destinations",
            Some(&srv.admin_key),
            Some(json!({"destinations": []})),
        )
        .await;
    r.assert_error(404, "not_found");
    let r = srv
        .get(
            "/v1/admin/accounts/acct_00000000000000000000000000000000/relay_destinations",
            &srv.admin_key,
        )
        .await;
    r.assert_error(404, "not_found");
    let r = srv
        .get("/v1/admin/accounts/nope/relay_destinations", &srv.admin_key)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    srv.stop().await;
}

#[tokio::test]
async fn test_only_destinations_may_be_loopback() {
    let srv = production().await;
    let r = put(
        &srv,
        &srv.admin_key,
        json!([
            {"host": "127.0.0.1", "port": 8443, "test_only": true},
            {"host": "localhost", "test_only": true},
            {"host": "::1", "test_only": true},
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    srv.stop().await;
}

#[tokio::test]
async fn a_dev_server_may_approve_loopback() {
    // The harness's default is a dev deployment (`strongroom dev`).
    let srv = TestServer::start().await;
    let r = put(
        &srv,
        &srv.admin_key,
        json!([{"host": "127.0.0.1", "port": 8443}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Still never private or metadata.
    let r = put(&srv, &srv.admin_key, json!([{"host": "169.254.169.254"}])).await;
    r.assert_error(400, "destination_not_public");
    srv.stop().await;
}

#[tokio::test]
async fn only_admin_keys_manage_destinations() {
    let srv = production().await;
    for key in [&srv.sk_test, &srv.sk_live, &srv.pk_test, &srv.rk_reveal] {
        let r = put(&srv, key, json!([{"host": "a.example"}])).await;
        assert!(
            r.status == 401 || r.status == 403,
            "{}: {}",
            r.status,
            r.text
        );
        let r = srv.get(&path(&srv), key).await;
        assert!(r.status == 401 || r.status == 403, "{}", r.text);
    }
    let r = srv
        .call(
            Method::PUT,
            &path(&srv),
            None,
            Some(json!({"destinations": []})),
        )
        .await;
    r.assert_error(401, "authentication_required");
    assert_eq!(
        srv.get(&path(&srv), &srv.admin_key).await.body["data"],
        json!([])
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_change_is_audited_and_nothing_secret_is_logged() {
    let srv = production().await;
    let ca = ca();
    let r = put(
        &srv,
        &srv.admin_key,
        json!([{"host": "audited.example", "ca_cert_pem": ca}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let refused = put(&srv, &srv.admin_key, json!([{"host": "10.9.9.9"}])).await;
    refused.assert_error(400, "destination_not_public");
    let log = srv.get("/v1/admin/audit?limit=1000", &srv.admin_key).await;
    assert_eq!(log.status, 200, "{}", log.text);
    let records: Vec<&Value> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "relay_destinations.update")
        .collect();
    assert_eq!(records.len(), 2, "{}", log.text);
    let account = format!("account:{}", srv.account);
    assert!(records.iter().all(|r| r["resource"] == account.as_str()));
    assert!(records.iter().any(|r| r["outcome"] == "success"));
    assert!(
        records
            .iter()
            .any(|r| r["code"] == "destination_not_public")
    );
    // The admin secret never reaches the logs.
    assert_not_logged(&[&srv.admin_key]);
    srv.stop().await;
}

#[tokio::test]
async fn approve_matches_host_port_path_and_mode() {
    let srv = production().await;
    let r = put(
        &srv,
        &srv.admin_key,
        json!([
            {"host": "93.184.216.34", "path_prefix": "/v1"},
            {"host": "127.0.0.1", "port": 8443, "path_prefix": "/echo/", "test_only": true},
            {"host": "nowhere.invalid"},
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let state = &srv.running.state().unwrap();
    let acct = srv.account.as_str();

    // Public destination: both modes, the pinned address is the one checked.
    for mode in [Mode::Live, Mode::Test] {
        let ok = approve(state, acct, mode, "https://93.184.216.34/v1/charges?x=1")
            .await
            .unwrap();
        assert_eq!(ok.addr, "93.184.216.34:443".parse().unwrap());
        assert_eq!(ok.destination.path_prefix, "/v1");
        assert_eq!(ok.url.path(), "/v1/charges");
    }
    // Test-only loopback: test mode only, pinned to loopback.
    let ok = approve(state, acct, Mode::Test, "https://127.0.0.1:8443/echo/x")
        .await
        .unwrap();
    assert_eq!(ok.addr, "127.0.0.1:8443".parse().unwrap());
    assert!(ok.destination.test_only);

    let refused = |mode, url: &'static str| approve(state, acct, mode, url);
    for (mode, url) in [
        // Loopback test-only destination in live mode.
        (Mode::Live, "https://127.0.0.1:8443/echo/x"),
        // Not HTTPS, credentials, fragment, garbage.
        (Mode::Live, "http://93.184.216.34/v1/x"),
        (Mode::Live, "https://u:p@93.184.216.34/v1/x"),
        (Mode::Live, "https://93.184.216.34/v1/x#f"),
        (Mode::Live, "not a url"),
        // Wrong port, path outside the prefix (also at a segment boundary), other host.
        (Mode::Live, "https://93.184.216.34:8443/v1/x"),
        (Mode::Live, "https://93.184.216.34/v2/x"),
        (Mode::Live, "https://93.184.216.34/v10"),
        (Mode::Live, "https://93.184.216.35/v1/x"),
        (Mode::Test, "https://127.0.0.1:8443/other"),
    ] {
        assert!(
            matches!(
                refused(mode, url).await.unwrap_err(),
                ServiceError::DestinationNotApproved
            ),
            "{url}"
        );
    }
    // Approved, but the name does not resolve now.
    assert!(matches!(
        refused(Mode::Live, "https://nowhere.invalid/x")
            .await
            .unwrap_err(),
        ServiceError::DestinationUnreachable
    ));
    // Another account has no destinations.
    let other = state
        .accounts()
        .create(strongroom_server::audit::Origin::System, "Other", None)
        .await
        .unwrap();
    assert!(matches!(
        approve(state, &other.id, Mode::Live, "https://93.184.216.34/v1/x")
            .await
            .unwrap_err(),
        ServiceError::DestinationNotApproved
    ));
    srv.stop().await;
}

#[tokio::test]
async fn approve_rechecks_addresses_at_send_time() {
    // A loopback destination approved on a dev server is refused at send time once the
    // server no longer runs as dev: the check is made again on every send.
    let srv = TestServer::start().await;
    let r = put(
        &srv,
        &srv.admin_key,
        json!([{"host": "127.0.0.1", "port": 8443}, {"host": "localhost", "port": 8443}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ok = approve(
        &srv.running.state().unwrap(),
        &srv.account,
        Mode::Live,
        "https://127.0.0.1:8443/",
    )
    .await
    .unwrap();
    assert_eq!(ok.addr, "127.0.0.1:8443".parse().unwrap());
    let ok = approve(
        &srv.running.state().unwrap(),
        &srv.account,
        Mode::Live,
        "https://localhost:8443/",
    )
    .await
    .unwrap();
    assert!(ok.addr.ip().is_loopback());
    let account = srv.account.clone();
    let data = srv.stop().await;

    let srv = TestServer::start_on(data, |c| c.dev_mode = false).await;
    for url in ["https://127.0.0.1:8443/", "https://localhost:8443/"] {
        for mode in [Mode::Live, Mode::Test] {
            let e = approve(&srv.running.state().unwrap(), &account, mode, url)
                .await
                .unwrap_err();
            assert!(
                matches!(e, ServiceError::DestinationNotPublic),
                "{url}: {e}"
            );
        }
    }
    srv.stop().await;
}
