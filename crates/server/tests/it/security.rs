//! Regressions of the security review: who may change the account's security settings
//! and read its events (narrowed tokens, test keys, publishable keys, anonymous
//! callers), card tokens for callers that cannot read cards, a gateway that fails
//! closed, idempotency per credential, and OTPs bound to the key that asked for them.

use crate::audit::Db;
use crate::harness::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// A bearer token of `key` narrowed to `scope`.
async fn narrowed(srv: &TestServer, key: &str, scope: &str) -> String {
    let r = srv
        .call(
            Method::POST,
            "/v1/auth/token",
            Some(key),
            Some(json!({ "scope": scope })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["scope"], scope);
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// A key of the test account made through the admin API; its secret.
async fn admin_key(srv: &TestServer, body: Value) -> String {
    let r = srv
        .post(
            &format!("/v1/admin/accounts/{}/api_keys", srv.account),
            &srv.admin_key,
            body,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["secret"].as_str().unwrap().to_owned()
}

/// RFC 8037's example Ed25519 public key.
const JWK_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

/// Every route that changes the account's security settings: (method, path, body).
/// The ids are well formed; the refusal comes before any lookup.
fn settings_routes() -> Vec<(Method, String, Option<Value>)> {
    let hex = "0".repeat(32);
    vec![
        (
            Method::PUT,
            "/v1/ip_allowlist".into(),
            Some(json!({"cidrs": ["10.0.0.0/8"]})),
        ),
        (
            Method::PATCH,
            "/v1/account".into(),
            Some(json!({"require_signed_requests": true})),
        ),
        (
            Method::POST,
            "/v1/signing_keys".into(),
            Some(json!({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": JWK_X}})),
        ),
        (Method::DELETE, format!("/v1/signing_keys/sigk_{hex}"), None),
    ]
}

/// Every route that reads the settings, reads events, or manages webhook endpoints
/// (whose answers carry signing secrets).
fn other_guarded_routes() -> Vec<(Method, String, Option<Value>)> {
    let hex = "0".repeat(32);
    let (we, evt) = (format!("we_{hex}"), format!("evt_{hex}"));
    let endpoint = json!({"url": "https://hooks.example.com/h", "enabled_events": ["*"]});
    vec![
        (Method::GET, "/v1/ip_allowlist".into(), None),
        (Method::GET, "/v1/account".into(), None),
        (Method::GET, "/v1/signing_keys".into(), None),
        (Method::GET, "/v1/events".into(), None),
        (Method::GET, format!("/v1/events/{evt}"), None),
        (Method::GET, format!("/v1/events/{evt}/deliveries"), None),
        (Method::POST, format!("/v1/events/{evt}/redeliver"), None),
        (Method::POST, "/v1/webhook_endpoints".into(), Some(endpoint)),
        (Method::GET, "/v1/webhook_endpoints".into(), None),
        (Method::GET, format!("/v1/webhook_endpoints/{we}"), None),
        (
            Method::PATCH,
            format!("/v1/webhook_endpoints/{we}"),
            Some(json!({"enabled_events": ["*"]})),
        ),
        (Method::DELETE, format!("/v1/webhook_endpoints/{we}"), None),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{we}/rotate_secret"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{we}/disable"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/webhook_endpoints/{we}/enable"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/webhook_endpoints/{we}/attempts"),
            None,
        ),
    ]
}

#[tokio::test]
async fn narrowed_tokens_test_keys_publishable_keys_and_anonymous_callers_are_refused() {
    let srv = TestServer::start().await;
    let live_read = narrowed(&srv, &srv.sk_live, "cards:read").await;
    let test_read = narrowed(&srv, &srv.sk_test, "cards:read").await;
    // A restricted live key that may change the allowlist, and nothing else.
    let rk_account = admin_key(
        &srv,
        json!({"kind": "restricted", "mode": "live", "scopes": ["account:write"]}),
    )
    .await;

    let all = settings_routes()
        .into_iter()
        .chain(other_guarded_routes())
        .collect::<Vec<_>>();
    for (method, path, body) in &all {
        let call = |key: Option<String>| {
            let (srv, method, path, body) = (&srv, method.clone(), path.clone(), body.clone());
            async move { srv.call(method, &path, key.as_deref(), body).await }
        };
        for key in [&live_read, &test_read, &srv.pk_test] {
            call(Some(key.clone()))
                .await
                .assert_error(403, "permission_denied");
        }
        call(None)
            .await
            .assert_error(401, "authentication_required");
        if path != "/v1/ip_allowlist" && path != "/v1/account" {
            call(Some(rk_account.clone()))
                .await
                .assert_error(403, "permission_denied");
        }
    }
    // A test secret key holds the scopes but not the mode: live traffic's protections
    // are not a test key's to change.
    for (method, path, body) in settings_routes() {
        srv.call(method, &path, Some(&srv.sk_test), body)
            .await
            .assert_error(403, "live_mode_required");
    }

    // Nothing changed.
    let r = srv.get("/v1/account", &srv.sk_live).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["require_signed_requests"], false);
    assert_eq!(r.body["ip_allowlist"], json!([]));
    let r = srv.get("/v1/signing_keys", &srv.sk_live).await;
    assert_eq!(r.body["data"], json!([]));

    // The holders of the scope, in live mode, may: a restricted key that names it, and
    // a secret key (positive controls, so the refusals above are not the only answer).
    let r = srv
        .call(
            Method::PUT,
            "/v1/ip_allowlist",
            Some(&rk_account),
            Some(json!({"cidrs": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = srv
        .post(
            "/v1/signing_keys",
            &srv.sk_live,
            json!({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": JWK_X}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Each change is an event in the live stream and a security event in the audit log.
    let events = srv
        .get("/v1/events?type=account.updated", &srv.sk_live)
        .await;
    assert_eq!(events.status, 200, "{}", events.text);
    let data = events.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", events.text);
    assert_eq!(data[0]["mode"], "live");
    assert_eq!(
        data[0]["data"]["object"]["ip_allowlist"],
        json!(["127.0.0.0/8"])
    );
    let test_events = srv
        .get("/v1/events?type=account.updated", &srv.sk_test)
        .await;
    assert_eq!(test_events.body["data"], json!([]));
    let audit = srv.get("/v1/admin/audit?limit=1000", &srv.admin_key).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "security.ip_allowlist_changed",
        "security.signing_key_created",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

#[tokio::test]
async fn publishable_keys_cannot_tell_a_vaulted_card_from_a_new_one() {
    let srv = TestServer::start().await;
    let pan = test_pan(7);
    let body = |m: i64, y: i64| json!({"number": pan, "exp_month": m, "exp_year": y});

    // The same new number twice through a publishable key: the same kind of answer.
    let first = srv.post("/v1/cards", &srv.pk_test, body(12, 2030)).await;
    let second = srv.post("/v1/cards", &srv.pk_test, body(12, 2030)).await;
    for r in [&first, &second] {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["object"], "card_token");
        for absent in ["fingerprint", "card"] {
            assert!(r.body.get(absent).is_none(), "{absent} in {}", r.text);
        }
        assert!(r.body["id"].as_str().unwrap().starts_with("ctok_"));
        assert!(!r.text.contains(&pan), "the number is echoed");
    }
    assert_ne!(first.body["id"], second.body["id"]);
    let shape = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (keys, v["id"].as_str().unwrap().len())
    };
    assert_eq!(shape(&first.body), shape(&second.body));

    // The back end redeems either token for the one card.
    let redeem = |key: String, token: Value| {
        let srv = &srv;
        async move {
            srv.post("/v1/card_tokens/redeem", &key, json!({ "token": token }))
                .await
        }
    };
    let a = redeem(srv.sk_test.clone(), first.body["id"].clone()).await;
    let b = redeem(srv.sk_test.clone(), second.body["id"].clone()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["object"], "card");
    assert_eq!(a.body["id"], b.body["id"]);
    let card_id = a.body["id"].as_str().unwrap().to_owned();

    // An older card: the publishable key sees only what it sent, never the stored
    // expiry or the card's age; a later expiry renews the card for the merchant.
    srv.clock.advance(Duration::from_secs(3600 * 24));
    let later = srv.post("/v1/cards", &srv.pk_test, body(3, 2032)).await;
    assert_eq!(later.status, 201, "{}", later.text);
    assert_eq!(
        (&later.body["exp_month"], &later.body["exp_year"]),
        (&json!(3), &json!(2032))
    );
    assert_eq!(shape(&later.body), shape(&first.body));
    let earlier = srv.post("/v1/cards", &srv.pk_test, body(1, 2031)).await;
    assert_eq!(earlier.status, 201, "{}", earlier.text);
    assert_eq!(earlier.body["exp_year"], 2031, "the submitted expiry");
    let stored = srv.get(&format!("/v1/cards/{card_id}"), &srv.sk_test).await;
    assert_eq!(
        (&stored.body["exp_month"], &stored.body["exp_year"]),
        (&json!(3), &json!(2032)),
        "renewed once, never moved back: {}",
        stored.text
    );
    let updated = srv.get("/v1/events?type=card.updated", &srv.sk_test).await;
    let updated = updated.body["data"].as_array().unwrap().clone();
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0]["data"]["object"]["id"], card_id.as_str());
    assert_eq!(updated[0]["data"]["object"]["exp_year"], 2032);

    // Redemption: only with cards:read, only in the token's account and mode, only
    // unaltered, only within the hour.
    let token = later.body["id"].clone();
    redeem(srv.pk_test.clone(), token.clone())
        .await
        .assert_error(403, "permission_denied");
    redeem(srv.sk_live.clone(), token.clone())
        .await
        .assert_error(404, "card_token_invalid");
    let mut raw = B64
        .decode(token.as_str().unwrap().strip_prefix("ctok_").unwrap())
        .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let forged = format!("ctok_{}", B64.encode(&raw));
    for bad in [
        json!(forged),
        json!("ctok_"),
        json!("card_x"),
        json!("ctok_!!"),
    ] {
        redeem(srv.sk_test.clone(), bad)
            .await
            .assert_error(404, "card_token_invalid");
    }
    srv.post("/v1/card_tokens/redeem", &srv.sk_test, json!({}))
        .await
        .assert_error(400, "missing_field");
    srv.clock.advance(Duration::from_secs(3601));
    redeem(srv.sk_test.clone(), token)
        .await
        .assert_error(404, "card_token_invalid");

    // A caller that may read cards still gets the card itself.
    let sk = srv.post("/v1/cards", &srv.sk_test, body(3, 2032)).await;
    assert_eq!(sk.status, 200, "{}", sk.text);
    assert_eq!(sk.body["id"], card_id.as_str());
}

#[tokio::test]
async fn a_failed_credential_lookup_is_503_never_anonymous() {
    let srv = TestServer::start().await;
    let fresh = srv.new_secret_key().await.secret.expose().clone();
    let mut db = Db::open(&srv.data.store).await;

    // The key table unreadable: the request stops at the gateway with 503 and a
    // Retry-After, not as an anonymous request that the handler resolves again.
    db.exec("ALTER TABLE api_keys RENAME TO api_keys_away")
        .await;
    let r = srv.get("/v1/cards", &fresh).await;
    r.assert_error(503, "service_unavailable");
    assert_eq!(r.headers["retry-after"], "1");
    db.exec("ALTER TABLE api_keys_away RENAME TO api_keys")
        .await;
    let r = srv.get("/v1/cards", &fresh).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A bearer token whose key set cannot be reloaded: the same.
    db.exec("ALTER TABLE jwt_keys RENAME TO jwt_keys_away")
        .await;
    let header = B64.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"unknown"}"#);
    let claims = B64.encode(br#"{"sub":"key_x"}"#);
    let jwt = format!("{header}.{claims}.{}", B64.encode([0u8; 64]));
    let r = srv.get("/v1/cards", &jwt).await;
    r.assert_error(503, "service_unavailable");
    assert_eq!(r.headers["retry-after"], "1");
    db.exec("ALTER TABLE jwt_keys_away RENAME TO jwt_keys")
        .await;
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_credential_that_used_them() {
    let srv = TestServer::start().await;
    let other = srv.new_secret_key().await.secret.expose().clone();
    let card = json!({"number": test_pan(11), "exp_month": 12, "exp_year": 2030});
    let post = |key: String, idem: &'static str| {
        let (srv, card) = (&srv, card.clone());
        async move {
            let r = srv
                .client
                .post(format!("{}/v1/cards", srv.url))
                .bearer_auth(key)
                .header("idempotency-key", idem)
                .json(&card)
                .send()
                .await
                .unwrap();
            Resp::from(r).await
        }
    };
    // A publishable key claims the merchant's predictable key first ...
    let pk = post(srv.pk_test.clone(), "order-1").await;
    assert_eq!(pk.status, 201, "{}", pk.text);
    assert_eq!(pk.body["object"], "card_token");
    // ... and the back end's request with it is its own, not a replay of a token.
    let sk = post(srv.sk_test.clone(), "order-1").await;
    assert_eq!(sk.status, 200, "{}", sk.text);
    assert_eq!(sk.body["object"], "card");
    assert!(sk.headers.get("idempotent-replayed").is_none());
    // The same key retried is replayed; another secret key of the account is not.
    let again = post(srv.sk_test.clone(), "order-1").await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, sk.body);
    let by_other = post(other, "order-1").await;
    assert_eq!(by_other.status, 200, "{}", by_other.text);
    assert!(by_other.headers.get("idempotent-replayed").is_none());
    // A narrower token of the same key does not replay the key's answer either.
    let t = narrowed(&srv, &srv.sk_test, "cards:write").await;
    let by_token = post(t, "order-1").await;
    assert_eq!(by_token.status, 201, "{}", by_token.text);
    assert_eq!(by_token.body["object"], "card_token");
    assert!(by_token.headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn an_otp_is_spent_only_by_the_key_that_asked_for_it() {
    let srv = TestServer::start().await;
    let card = srv.tokenize(&test_pan(12)).await;
    let id = card["id"].as_str().unwrap();
    let other = admin_key(
        &srv,
        json!({"kind": "restricted", "mode": "test", "scopes": ["cards:reveal", "cards:read"]}),
    )
    .await;
    let otp = srv
        .post(
            "/v1/otp",
            &srv.rk_reveal,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    let spend = json!({"otp": otp.body["id"], "code": otp.body["test_code"]});
    let path = format!("/v1/cards/{id}/reveal");
    srv.post(&path, &other, spend.clone())
        .await
        .assert_error(403, "otp_invalid");
    let r = srv.post(&path, &srv.rk_reveal, spend).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["number"], test_pan(12));
}
