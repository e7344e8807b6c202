//! Bearer tokens (JWT): issue, use, refusals, revocation, revoke-all, JWKS, rotation
//! (also under load), RS256, and interop with PyJWT.

use crate::harness::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use strongroom_crypto::jwt::{Claims, Expectations, JwtAlg, JwtVerifier};
use strongroom_store::VaultStore;

/// Issues a token with `key` (and an optional body); asserts success.
async fn token(srv: &TestServer, key: &str, body: Option<Value>) -> String {
    let r = srv
        .call(Method::POST, "/v1/auth/token", Some(key), body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["access_token"].as_str().unwrap().to_owned()
}

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
}

/// A new key of the test account via the admin API: (id, secret).
async fn new_key(srv: &TestServer, account: &str, body: Value) -> (String, String) {
    let r = srv
        .post(
            &format!("/v1/admin/accounts/{account}/api_keys"),
            &srv.admin_key,
            body,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["secret"].as_str().unwrap().to_owned(),
    )
}

fn assert_security_headers(r: &Resp) {
    assert_eq!(
        r.headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains; preload"
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_token_is_issued_and_accepted_like_its_key() {
    let srv = TestServer::start().await;
    let r = srv
        .call(Method::POST, "/v1/auth/token", Some(&srv.sk_test), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_security_headers(&r);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    assert_eq!(
        r.body["scope"],
        "cards:write cards:read cards:delete pins:write pins:verify account:read \
         account:write signing_keys:write events:read webhooks:read webhooks:write cards:relay risk:read risk:write \
         terminals:write terminals:use"
    );
    let t = r.body["access_token"].as_str().unwrap().to_owned();

    let header = part(&t, 0);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "JWT");
    let c = part(&t, 1);
    assert_eq!(c["iss"], "strongroom");
    assert_eq!(c["aud"], "strongroom-api");
    assert!(c["sub"].as_str().unwrap().starts_with("key_"));
    assert_eq!(c["acct"], srv.account.as_str());
    assert_eq!(c["mode"], "test");
    assert_eq!(c["scope"], r.body["scope"]);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(c["nbf"], c["iat"]);
    assert!(c["jti"].as_str().unwrap().starts_with("tok_"));

    // Accepted anywhere the key is, with the key's mode.
    let card = srv
        .post(
            "/v1/cards",
            &t,
            json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}),
        )
        .await;
    assert_eq!(card.status, 201, "{}", card.text);
    let id = card.body["id"].as_str().unwrap().to_owned();
    let got = srv.get(&format!("/v1/cards/{id}"), &t).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["mode"], "test");
    // Twice more: the verified-token cache answers the same.
    for _ in 0..2 {
        assert_eq!(srv.get(&format!("/v1/cards/{id}"), &t).await.status, 200);
    }

    // Narrowed: read only.
    let ro = token(&srv, &srv.sk_test, Some(json!({"scope": "cards:read"}))).await;
    assert_eq!(part(&ro, 1)["scope"], "cards:read");
    assert_eq!(srv.get(&format!("/v1/cards/{id}"), &ro).await.status, 200);
    srv.post(
        "/v1/cards",
        &ro,
        json!({"number": "4111111111111111", "exp_month": 12, "exp_year": 2030}),
    )
    .await
    .assert_error(403, "permission_denied");
    srv.delete(&format!("/v1/cards/{id}"), &ro)
        .await
        .assert_error(403, "permission_denied");

    // Never more than the key: a secret key cannot mint a reveal token.
    for scope in [
        "cards:reveal",
        "cards:read cards:reveal",
        "cards:all",
        "",
        " ",
    ] {
        srv.call(
            Method::POST,
            "/v1/auth/token",
            Some(&srv.sk_test),
            Some(json!({ "scope": scope })),
        )
        .await
        .assert_error(400, "invalid_scope");
    }
    // A restricted key with reveal can, and the OTP-gated reveal works with the token.
    let rt = token(&srv, &srv.rk_reveal, None).await;
    assert!(
        part(&rt, 1)["scope"]
            .as_str()
            .unwrap()
            .contains("cards:reveal")
    );
    let rev = srv.reveal(&rt, &id).await;
    assert_eq!(rev.status, 200, "{}", rev.text);

    // Who may not issue: publishable keys, tokens, admin keys, nobody.
    srv.call(Method::POST, "/v1/auth/token", Some(&srv.pk_test), None)
        .await
        .assert_error(403, "permission_denied");
    srv.call(Method::POST, "/v1/auth/token", Some(&t), None)
        .await
        .assert_error(403, "permission_denied");
    srv.call(Method::POST, "/v1/auth/token", Some(&srv.admin_key), None)
        .await
        .assert_error(401, "invalid_api_key");
    srv.call(Method::POST, "/v1/auth/token", None, None)
        .await
        .assert_error(401, "authentication_required");
    // Malformed bodies.
    srv.post(
        "/v1/auth/token",
        &srv.sk_test,
        json!({"scopes": "cards:read"}),
    )
    .await
    .assert_error(400, "unknown_field");
    let r = srv
        .client
        .post(format!("{}/v1/auth/token", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("content-type", "text/plain")
        .body("scope=cards:read")
        .send()
        .await
        .unwrap();
    Resp::from(r)
        .await
        .assert_error(415, "unsupported_media_type");
    // A token is not an admin credential.
    srv.get(&format!("/v1/admin/accounts/{}", srv.account), &t)
        .await
        .assert_error(401, "invalid_api_key");
    // Live key, live token: sees live data only.
    let lt = token(&srv, &srv.sk_live, None).await;
    assert_eq!(part(&lt, 1)["mode"], "live");
    srv.get(&format!("/v1/cards/{id}"), &lt)
        .await
        .assert_error(404, "not_found");

    assert_not_logged(&[&t, &ro, &rt, &lt]);
}

#[tokio::test]
async fn tampered_none_expired_and_foreign_tokens_are_refused() {
    let srv = TestServer::start().await;
    let t = token(&srv, &srv.sk_test, None).await;
    let good = srv.get("/v1/cards?limit=1", &t).await;
    assert_eq!(good.status, 200, "{}", good.text);
    let [h, p, s]: [&str; 3] = t.split('.').collect::<Vec<_>>().try_into().unwrap();

    // A claim changed under the original signature.
    let mut c = part(&t, 1);
    c["scope"] = json!("cards:write cards:read cards:reveal cards:delete");
    let forged = format!("{h}.{}.{s}", B64.encode(c.to_string()));
    // One flipped signature character.
    let mut sig = s.to_owned();
    let flip = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flip);
    let bad_sig = format!("{h}.{p}.{sig}");
    // alg: none, with and without an empty signature.
    let none =
        B64.encode(json!({"alg": "none", "typ": "JWT", "kid": part(&t, 0)["kid"]}).to_string());
    // HS256 with the public key as a secret would need the key; any HS256 is refused.
    let hs =
        B64.encode(json!({"alg": "HS256", "typ": "JWT", "kid": part(&t, 0)["kid"]}).to_string());
    for bad in [
        forged,
        bad_sig,
        format!("{none}.{p}."),
        format!("{none}.{p}.{s}"),
        format!("{hs}.{p}.{s}"),
        "a.b.c".to_owned(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.x"),
    ] {
        let r = srv.get("/v1/cards?limit=1", &bad).await;
        r.assert_error(401, "token_invalid");
        assert_security_headers(&r);
    }
    // Characters no JWT has.
    srv.get("/v1/cards?limit=1", &format!("{h}.{p}.{s}!"))
        .await
        .assert_error(401, "token_invalid");

    // Signed by us but for another audience or issuer, or not yet valid.
    let state = &srv.running.state().unwrap();
    let base: Claims = serde_json::from_value(part(&t, 1)).unwrap();
    let now = base.iat;
    let variants = [
        Claims {
            aud: "another-api".into(),
            ..base.clone()
        },
        Claims {
            iss: "https://evil.example".into(),
            ..base.clone()
        },
        Claims {
            nbf: now + 600,
            ..base.clone()
        },
        Claims {
            acct: "acct_0000000000000000000000".into(),
            ..base.clone()
        },
        Claims {
            sub: "key_0000000000000000000000".into(),
            ..base.clone()
        },
        Claims {
            mode: "live".into(),
            ..base.clone()
        },
    ];
    for v in variants {
        let tok = state.tokens().sign_claims(&v).await.unwrap();
        srv.get("/v1/cards?limit=1", &tok)
            .await
            .assert_error(401, "token_invalid");
    }
    // A token claiming more scopes than its key holds gets only the key's.
    let greedy = state
        .tokens()
        .sign_claims(&Claims {
            scope: "cards:read cards:reveal".into(),
            ..base.clone()
        })
        .await
        .unwrap();
    let card = srv.tokenize("4242424242424242").await;
    let otp = srv
        .post(
            "/v1/otp",
            &greedy,
            json!({"purpose": "card.reveal", "card": card["id"]}),
        )
        .await;
    otp.assert_error(403, "permission_denied");

    // Expired: one lifetime plus the leeway later (the injected clock, no sleeping).
    srv.clock.advance(Duration::from_secs(3600 + 5));
    let r = srv.get("/v1/cards?limit=1", &t).await;
    r.assert_error(401, "token_expired");
    assert_security_headers(&r);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer realm="strongroom", error="invalid_token""#
    );
    // The key itself still works, and a fresh token too.
    assert_eq!(srv.get("/v1/cards?limit=1", &srv.sk_test).await.status, 200);
    let fresh = token(&srv, &srv.sk_test, None).await;
    assert_eq!(srv.get("/v1/cards?limit=1", &fresh).await.status, 200);
}

#[tokio::test]
async fn revoking_a_key_invalidates_its_tokens_on_the_next_request() {
    let srv = TestServer::start().await;
    let (kid, secret) = new_key(
        &srv,
        &srv.account,
        json!({"kind": "secret", "mode": "test"}),
    )
    .await;
    let t = token(&srv, &secret, None).await;
    let other = token(&srv, &srv.sk_test, None).await;
    // Used once, so both the token and the key record are cached.
    assert_eq!(srv.get("/v1/cards?limit=1", &t).await.status, 200);
    let r = srv
        .delete(
            &format!("/v1/admin/accounts/{}/api_keys/{kid}", srv.account),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    srv.get("/v1/cards?limit=1", &t)
        .await
        .assert_error(401, "token_revoked");
    srv.get("/v1/cards?limit=1", &secret)
        .await
        .assert_error(401, "api_key_revoked");
    srv.call(Method::POST, "/v1/auth/token", Some(&secret), None)
        .await
        .assert_error(401, "api_key_revoked");
    // Other keys' tokens are untouched.
    assert_eq!(srv.get("/v1/cards?limit=1", &other).await.status, 200);
}

#[tokio::test]
async fn revoke_all_revokes_every_key_and_token_of_the_account() {
    let srv = TestServer::start().await;
    let a = srv
        .post(
            "/v1/admin/accounts",
            &srv.admin_key,
            json!({"name": "Breached"}),
        )
        .await;
    let acct = a.body["id"].as_str().unwrap().to_owned();
    let (_, sk) = new_key(&srv, &acct, json!({"kind": "secret", "mode": "test"})).await;
    let (_, sk_live) = new_key(&srv, &acct, json!({"kind": "secret", "mode": "live"})).await;
    let (_, rk) = new_key(
        &srv,
        &acct,
        json!({"kind": "restricted", "mode": "test", "scopes": ["cards:read"]}),
    )
    .await;
    let (_, pk) = new_key(&srv, &acct, json!({"kind": "publishable", "mode": "test"})).await;
    let tokens = [
        token(&srv, &sk, None).await,
        token(&srv, &sk_live, None).await,
        token(&srv, &rk, None).await,
    ];
    for t in tokens.iter().chain([&sk, &sk_live, &rk]) {
        assert_eq!(srv.get("/v1/cards?limit=1", t).await.status, 200);
    }
    let other_token = token(&srv, &srv.sk_test, None).await;

    let r = srv
        .post(
            &format!("/v1/admin/accounts/{acct}/revoke_all"),
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked_keys"], 4);
    assert_eq!(r.body["id"], acct.as_str());

    for t in &tokens {
        srv.get("/v1/cards?limit=1", t)
            .await
            .assert_error(401, "token_revoked");
    }
    for k in [&sk, &sk_live, &rk] {
        srv.get("/v1/cards?limit=1", k)
            .await
            .assert_error(401, "api_key_revoked");
    }
    srv.post(
        "/v1/cards",
        &pk,
        json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}),
    )
    .await
    .assert_error(401, "api_key_revoked");
    // The listing shows them revoked; the event is in the outbox, in both modes.
    let keys = srv
        .get(
            &format!("/v1/admin/accounts/{acct}/api_keys"),
            &srv.admin_key,
        )
        .await;
    assert!(
        keys.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["revoked"] == true),
        "{}",
        keys.text
    );
    for mode in [strongroom_core::Mode::Test, strongroom_core::Mode::Live] {
        let events = srv
            .running
            .state()
            .unwrap()
            .store()
            .list_events(
                &acct,
                mode,
                &strongroom_store::ListEvents {
                    limit: 10,
                    event_type: Some("account.keys_revoked".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{mode}");
    }
    // Other accounts are untouched; a key issued afterwards works.
    assert_eq!(srv.get("/v1/cards?limit=1", &other_token).await.status, 200);
    let (_, fresh) = new_key(&srv, &acct, json!({"kind": "secret", "mode": "test"})).await;
    assert_eq!(srv.get("/v1/cards?limit=1", &fresh).await.status, 200);

    // Unknown account, bad id, not an admin.
    srv.post(
        "/v1/admin/accounts/acct_0000000000000000000000/revoke_all",
        &srv.admin_key,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    srv.post(
        "/v1/admin/accounts/nope/revoke_all",
        &srv.admin_key,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    srv.post(
        &format!("/v1/admin/accounts/{}/revoke_all", srv.account),
        &srv.sk_test,
        json!({}),
    )
    .await
    .assert_error(403, "permission_denied");
}

async fn jwks(srv: &TestServer) -> Value {
    let r = srv
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_security_headers(&r);
    r.body
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn key_states(srv: &TestServer) -> Vec<(String, String)> {
    let r = srv.get("/v1/admin/jwt_keys", &srv.admin_key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn jwks_publishes_the_next_key_first_and_the_old_one_until_its_tokens_expire() {
    let srv = TestServer::start().await;
    let j = jwks(&srv).await;
    let k = &j["keys"][0];
    assert_eq!(j["keys"].as_array().unwrap().len(), 1);
    assert_eq!(k["kty"], "OKP");
    assert_eq!(k["crv"], "Ed25519");
    assert_eq!(k["alg"], "EdDSA");
    assert_eq!(k["use"], "sig");
    assert!(k.get("d").is_none(), "no private part");
    let old_kid = k["kid"].as_str().unwrap().to_owned();
    let t_old = token(&srv, &srv.sk_test, None).await;
    assert_eq!(part(&t_old, 0)["kid"], old_kid.as_str());

    let r = srv
        .call(
            Method::POST,
            "/v1/admin/jwt_keys/rotate",
            Some(&srv.admin_key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ks = kids(&jwks(&srv).await);
    assert_eq!(ks.len(), 2);
    let new_kid = ks.iter().find(|k| **k != old_kid).unwrap().clone();
    assert_eq!(
        key_states(&srv).await,
        vec![
            (old_kid.clone(), "active".into()),
            (new_kid.clone(), "pending".into())
        ]
    );
    // Pre-published: the new key does not sign yet.
    let t_mid = token(&srv, &srv.sk_test, None).await;
    assert_eq!(part(&t_mid, 0)["kid"], old_kid.as_str());

    // After the pre-publication period (300 s by default) the new key signs.
    srv.clock.advance(Duration::from_secs(301));
    let t_new = token(&srv, &srv.sk_test, None).await;
    assert_eq!(part(&t_new, 0)["kid"], new_kid.as_str());
    for t in [&t_old, &t_mid, &t_new] {
        assert_eq!(srv.get("/v1/cards?limit=1", t).await.status, 200);
    }
    assert_eq!(kids(&jwks(&srv).await).len(), 2);
    assert_eq!(
        key_states(&srv).await,
        vec![
            (old_kid.clone(), "retiring".into()),
            (new_kid.clone(), "active".into())
        ]
    );
    // One token lifetime after the switch (plus leeway), the old key is gone.
    srv.clock.advance(Duration::from_secs(3600 + 5));
    assert_eq!(kids(&jwks(&srv).await), vec![new_kid.clone()]);
    assert_eq!(key_states(&srv).await[0].1, "expired");
    srv.get("/v1/cards?limit=1", &t_mid)
        .await
        .assert_error(401, "token_expired");
    // Rotation needs the admin key.
    srv.call(
        Method::POST,
        "/v1/admin/jwt_keys/rotate",
        Some(&srv.sk_test),
        None,
    )
    .await
    .assert_error(403, "permission_denied");
}

#[tokio::test]
async fn rs256_when_the_deployment_chooses_it_and_survives_restart() {
    let data = Arc::new(Data::new());
    let srv = TestServer::start_on(data.clone(), |c| c.tokens.alg = JwtAlg::Rs256).await;
    let j = jwks(&srv).await;
    assert_eq!(j["keys"][0]["kty"], "RSA");
    assert_eq!(j["keys"][0]["alg"], "RS256");
    assert_eq!(j["keys"][0]["e"], "AQAB");
    let t = token(&srv, &srv.sk_test, None).await;
    assert_eq!(part(&t, 0)["alg"], "RS256");
    assert_eq!(srv.get("/v1/cards?limit=1", &t).await.status, 200);
    let sk = srv.sk_test.clone();
    let data = srv.stop().await;

    // Restarted with the default (EdDSA): the RS256 key keeps signing while an Ed25519
    // key is pre-published, and the old token still verifies (keys come from storage).
    let srv = TestServer::start_on(data, |_| {}).await;
    let j = jwks(&srv).await;
    let algs: Vec<_> = j["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(algs, vec!["RS256", "EdDSA"]);
    assert_eq!(srv.get("/v1/cards?limit=1", &t).await.status, 200);
    let t2 = token(&srv, &sk, None).await;
    assert_eq!(part(&t2, 0)["alg"], "RS256");
    srv.clock.advance(Duration::from_secs(301));
    let t3 = token(&srv, &sk, None).await;
    assert_eq!(part(&t3, 0)["alg"], "EdDSA");
    assert_eq!(srv.get("/v1/cards?limit=1", &t3).await.status, 200);
}

/// Runs the PyJWT interop script; returns its JSON output.
fn pyjwt_verify(url: &str, token: &str) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/jwt/verify.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(url)
        .arg(ca_pem_path())
        .arg(token)
        .arg("strongroom-api")
        .arg("strongroom")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is required for the JWT interop test (scripts/test installs PyJWT): {e}"
            )
        });
    assert!(
        out.status.success(),
        "PyJWT interop failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn pyjwt_verifies_our_tokens_against_our_jwks() {
    for alg in [JwtAlg::EdDsa, JwtAlg::Rs256] {
        let srv = TestServer::start_on(Arc::new(Data::new()), |c| c.tokens.alg = alg).await;
        let t = token(&srv, &srv.sk_test, Some(json!({"scope": "cards:read"}))).await;
        let url = srv.url.clone();
        let t_ref = t.clone();
        let v = tokio::task::spawn_blocking(move || pyjwt_verify(&url, &t_ref))
            .await
            .unwrap();
        assert_eq!(v["alg"], alg.as_str());
        assert_eq!(v["claims"]["acct"], srv.account.as_str());
        assert_eq!(v["claims"]["scope"], "cards:read");
        assert_eq!(v["claims"]["mode"], "test");
        srv.stop().await;
    }
}

/// A resource server's view: verifies tokens locally against a cached JWKS and fetches
/// the JWKS again only when it meets an unknown `kid`.
struct JwksClient {
    verifier: JwtVerifier,
    fetches: u64,
}

impl JwksClient {
    async fn refresh(&mut self, srv: &TestServer) {
        let j = jwks(srv).await;
        let mut v = JwtVerifier::new();
        for k in j["keys"].as_array().unwrap() {
            v.add_jwk(k).unwrap();
        }
        self.verifier = v;
        self.fetches += 1;
    }

    async fn verify(&mut self, srv: &TestServer, token: &str) -> Result<Claims, String> {
        let kid = part(token, 0)["kid"].as_str().unwrap().to_owned();
        if !self.verifier.knows(&kid) {
            self.refresh(srv).await;
        }
        let now = srv.clock_now_s();
        let e = Expectations {
            issuer: "strongroom".into(),
            audience: "strongroom-api".into(),
            leeway_s: 5,
        };
        self.verifier
            .verify(token, &e, now)
            .map_err(|e| format!("{e}"))
    }
}

trait ClockNow {
    fn clock_now_s(&self) -> i64;
}

impl ClockNow for TestServer {
    fn clock_now_s(&self) -> i64 {
        use strongroom_core::Clock;
        self.clock.now_ms() / 1000
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_key_rotation_under_continuous_load_has_zero_failures() {
    let srv = Arc::new(TestServer::start().await);
    let card = srv.tokenize("4242424242424242").await;
    let path = format!("/v1/cards/{}", card["id"].as_str().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (srv, stop, done, path) = (srv.clone(), stop.clone(), done.clone(), path.clone());
        workers.push(tokio::spawn(async move {
            let mut client = JwksClient {
                verifier: JwtVerifier::new(),
                fetches: 0,
            };
            let mut failures = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                let r = srv
                    .call(Method::POST, "/v1/auth/token", Some(&srv.sk_test), None)
                    .await;
                if r.status != 200 {
                    failures.push(format!("issue: {} {}", r.status, r.text));
                    continue;
                }
                let t = r.body["access_token"].as_str().unwrap().to_owned();
                seen.insert(part(&t, 0)["kid"].as_str().unwrap().to_owned());
                if let Err(e) = client.verify(&srv, &t).await {
                    failures.push(format!("local verify: {e}"));
                }
                for _ in 0..3 {
                    let g = srv.get(&path, &t).await;
                    if g.status != 200 {
                        failures.push(format!("use: {} {}", g.status, g.text));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            (failures, seen, client.fetches)
        }));
    }
    // Waits until the workers have completed `n` more iterations (no sleeping on time).
    let progress = |n: u64| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::SeqCst) + n;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < target {
                assert!(tokio::time::Instant::now() < deadline, "load stalled");
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    progress(20).await;
    for _ in 0..3 {
        let r = srv
            .call(
                Method::POST,
                "/v1/admin/jwt_keys/rotate",
                Some(&srv.admin_key),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        progress(20).await;
        // The pre-publication period passes: the new key starts signing mid-load.
        srv.clock.advance(Duration::from_secs(301));
        progress(20).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut all_failures = Vec::new();
    let mut kids = std::collections::BTreeSet::new();
    for w in workers {
        let (f, seen, fetches) = w.await.unwrap();
        all_failures.extend(f);
        kids.extend(seen);
        assert!(fetches >= 2, "the client refreshed its JWKS on new kids");
    }
    assert!(all_failures.is_empty(), "{all_failures:?}");
    assert_eq!(kids.len(), 4, "every generation signed: {kids:?}");
}

#[tokio::test]
async fn two_nodes_share_signing_keys_rotation_and_revocation() {
    // Several nodes need a shared store; with SQLite there is one node by design.
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "two_nodes_share_signing_keys_rotation_and_revocation",
    ) {
        return;
    }
    let data = Arc::new(Data::new());
    let a = TestServer::start_on(data.clone(), |_| {}).await;
    // Node B reloads its key list only every hour: it must learn A's new key from the
    // unknown-kid reload.
    let b = TestServer::start_on(data.clone(), |c| c.keyring_ttl = Duration::from_secs(3600)).await;
    assert_eq!(kids(&jwks(&a).await), kids(&jwks(&b).await));
    let t = token(&a, &a.sk_test, None).await;
    assert_eq!(b.get("/v1/cards?limit=1", &t).await.status, 200);

    let r = a
        .call(
            Method::POST,
            "/v1/admin/jwt_keys/rotate",
            Some(&a.admin_key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    a.clock.advance(Duration::from_secs(301));
    b.clock.advance(Duration::from_secs(301));
    let t2 = token(&a, &a.sk_test, None).await;
    assert_ne!(part(&t2, 0)["kid"], part(&t, 0)["kid"]);
    assert_eq!(b.get("/v1/cards?limit=1", &t2).await.status, 200);
    assert_eq!(b.get("/v1/cards?limit=1", &t).await.status, 200);

    // Revoking on one node is heard by the other as soon as it commits (a trigger
    // notifies every node's listener), even though both cache keys for 300 s.
    let (kid, secret) = new_key(&a, &a.account, json!({"kind": "secret", "mode": "test"})).await;
    let tk = token(&b, &secret, None).await;
    assert_eq!(b.get("/v1/cards?limit=1", &tk).await.status, 200);
    assert_eq!(b.get("/v1/cards?limit=1", &secret).await.status, 200);
    let r = a
        .delete(
            &format!("/v1/admin/accounts/{}/api_keys/{kid}", a.account),
            &a.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let heard = eventually("B refuses the revoked key", || async {
        b.get("/v1/cards?limit=1", &secret).await.status == 401
    })
    .await;
    eprintln!("revocation on node A heard by node B after {heard:?}");
    b.get("/v1/cards?limit=1", &tk)
        .await
        .assert_error(401, "token_revoked");
    b.get("/v1/cards?limit=1", &secret)
        .await
        .assert_error(401, "api_key_revoked");
    // Revoke-all on B: A's tokens of that account stop too.
    let ta = token(&a, &a.sk_test, None).await;
    assert_eq!(a.get("/v1/cards?limit=1", &ta).await.status, 200);
    let r = b
        .post(
            &format!("/v1/admin/accounts/{}/revoke_all", a.account),
            &b.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually("A refuses the revoked token", || async {
        a.get("/v1/cards?limit=1", &ta).await.status == 401
    })
    .await;
    a.get("/v1/cards?limit=1", &ta)
        .await
        .assert_error(401, "token_revoked");
    a.get("/v1/cards?limit=1", &a.sk_test)
        .await
        .assert_error(401, "api_key_revoked");
}
