//! Client sessions over the API (docs/client-side.md): the back end fixes the
//! parameters, the browser presents only the client secret; one card per session (or
//! `max_cards`), refused once expired, spent or foreign; CORS only for the session's
//! origins; browsers kept off every other route; limits per session, address and key.

use crate::harness::{Data, TestServer, assert_not_logged, test_pan};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::{KeyKind, Mode};
use strongroom_server::{NewKeyKind, Origin};

const SHOP: &str = "https://shop.example";

fn new_session(extra: Value) -> Value {
    let mut body = json!({"purpose": "tokenize", "allowed_origins": [SHOP]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Creates a session with the test secret key; `(id, client_secret)`.
async fn create(srv: &TestServer, extra: Value) -> (String, String) {
    let r = srv
        .post("/v1/client_sessions", &srv.sk_test, new_session(extra))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let secret = r.body["client_secret"].as_str().unwrap().to_owned();
    (id, secret)
}

fn card(secret: &str, number: &str) -> Value {
    json!({"client_secret": secret, "number": number, "exp_month": 11, "exp_year": 2031, "cvc": "123"})
}

async fn collect(srv: &TestServer, key: &str, id: &str, body: Value) -> crate::harness::Resp {
    srv.post(&format!("/v1/client_sessions/{id}/cards"), key, body)
        .await
}

#[tokio::test]
async fn the_back_end_fixes_the_parameters_and_the_card_carries_them() {
    let srv = TestServer::start().await;
    let r = srv
        .post(
            "/v1/client_sessions",
            &srv.sk_test,
            new_session(
                json!({"amount": 1250, "currency": "USD", "order_id": "ord_77",
                "metadata": {"cart": "c-9"}, "expires_in": 600}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = &r.body;
    assert_eq!(s["object"], "client_session");
    assert_eq!(s["status"], "open");
    assert_eq!(s["mode"], "test");
    assert_eq!(s["currency"], "usd");
    assert_eq!(s["collect_cvc"], true);
    assert_eq!(
        (s["max_cards"].as_i64(), s["cards_collected"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        s["expires_at"].as_i64().unwrap() - s["created"].as_i64().unwrap(),
        600
    );
    let id = s["id"].as_str().unwrap();
    let secret = s["client_secret"].as_str().unwrap();
    assert!(secret.starts_with(&format!("{id}_secret_")), "{secret}");

    // The browser sends the card and the secret: a card token naming the session.
    let r = collect(&srv, &srv.pk_test, id, card(secret, "4242424242424242")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["object"], "card_token");
    assert_eq!(r.body["client_session"], id);
    assert_eq!(r.body["cvc_available"], true);
    assert!(
        !r.text.contains(secret),
        "the answer echoes the client secret"
    );

    // The back end redeems it: the card, with the parameters it fixed.
    let token = r.body["id"].as_str().unwrap();
    let c = srv
        .post(
            "/v1/card_tokens/redeem",
            &srv.sk_test,
            json!({ "token": token }),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    let cs = &c.body["client_session"];
    assert_eq!(cs["id"], id);
    assert_eq!(cs["amount"], 1250);
    assert_eq!(cs["currency"], "usd");
    assert_eq!(cs["order_id"], "ord_77");
    assert_eq!(cs["metadata"]["cart"], "c-9");
    let card_id = c.body["id"].as_str().unwrap();

    // And so do the session and the card.created event.
    let g = srv
        .get(&format!("/v1/client_sessions/{id}"), &srv.sk_test)
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["status"], "complete");
    assert_eq!(g.body["cards"], json!([card_id]));
    assert!(g.body.get("client_secret").is_none(), "{}", g.text);
    let ev = srv
        .get("/v1/events?type=card.created&limit=1", &srv.sk_test)
        .await;
    let obj = &ev.body["data"][0]["data"]["object"];
    assert_eq!(obj["id"], card_id, "{}", ev.text);
    assert_eq!(obj["client_session"]["order_id"], "ord_77");

    // A card made through the API says nothing of sessions.
    let plain = srv.tokenize(&test_pan(71)).await;
    assert!(plain.get("client_session").is_none(), "{plain}");

    // The secret is spent: the same card again is refused, nothing changes.
    let again = collect(&srv, &srv.pk_test, id, card(secret, "4242424242424242")).await;
    again.assert_error(409, "client_session_used");
    let g = srv
        .get(&format!("/v1/client_sessions/{id}"), &srv.sk_test)
        .await;
    assert_eq!(g.body["cards_collected"], 1);
    assert_not_logged(&["4242424242424242", secret]);
}

#[tokio::test]
async fn a_tampered_request_cannot_change_what_the_session_fixed() {
    let srv = TestServer::start().await;
    let (id, secret) = create(
        &srv,
        json!({"amount": 500, "currency": "eur", "order_id": "o-1"}),
    )
    .await;
    for (field, value) in [
        ("amount", json!(1)),
        ("order_id", json!("o-2")),
        ("currency", json!("usd")),
        ("metadata", json!({"x": "y"})),
        ("allowed_origins", json!(["https://evil.example"])),
    ] {
        let mut body = card(&secret, "4242424242424242");
        body[field] = value;
        collect(&srv, &srv.pk_test, &id, body)
            .await
            .assert_error(400, "unknown_field");
    }
    // Nothing was written: the session still takes its one card, as fixed.
    let r = collect(&srv, &srv.pk_test, &id, card(&secret, "4242424242424242")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = srv
        .post(
            "/v1/card_tokens/redeem",
            &srv.sk_test,
            json!({"token": r.body["id"]}),
        )
        .await;
    assert_eq!(c.body["client_session"]["amount"], 500);
    assert_eq!(c.body["client_session"]["order_id"], "o-1");
}

#[tokio::test]
async fn expired_foreign_and_wrong_secrets_are_refused() {
    let srv = TestServer::start().await;
    let (id, secret) = create(&srv, json!({"expires_in": 60})).await;
    let body = || card(&secret, "4242424242424242");

    // A wrong secret, one of another session, or a malformed one.
    let (other_id, other_secret) = create(&srv, json!({})).await;
    for bad in [
        format!("{id}_secret_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        other_secret.clone(),
        "nonsense".to_owned(),
    ] {
        collect(&srv, &srv.pk_test, &id, card(&bad, "4242424242424242"))
            .await
            .assert_error(403, "client_session_invalid");
    }
    // An unknown or malformed session id.
    collect(
        &srv,
        &srv.pk_test,
        "cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6",
        body(),
    )
    .await
    .assert_error(403, "client_session_invalid");
    collect(&srv, &srv.pk_test, "cs_x", body())
        .await
        .assert_error(403, "client_session_invalid");

    // Keys: a secret key may not use the browser route, another account's publishable
    // key or a live one may not use this session.
    collect(&srv, &srv.sk_test, &id, body())
        .await
        .assert_error(403, "permission_denied");
    let s = &srv.running.state().unwrap();
    let other = s
        .accounts()
        .create(Origin::System, "Other shop", None)
        .await
        .unwrap();
    for (acct, mode) in [(&other.id, Mode::Test), (&srv.account, Mode::Live)] {
        let pk = s
            .accounts()
            .create_key(
                Origin::System,
                Some(acct),
                NewKeyKind::Account(KeyKind::Publishable),
                mode,
                None,
            )
            .await
            .unwrap();
        collect(&srv, pk.secret.expose(), &id, body())
            .await
            .assert_error(403, "client_session_invalid");
    }
    // Another account's back end cannot read the session either.
    let other_sk = s
        .accounts()
        .create_key(
            Origin::System,
            Some(&other.id),
            NewKeyKind::Account(KeyKind::Secret),
            Mode::Test,
            None,
        )
        .await
        .unwrap();
    srv.get(
        &format!("/v1/client_sessions/{id}"),
        other_sk.secret.expose(),
    )
    .await
    .assert_error(404, "not_found");

    // After its end: expired, and says so.
    srv.clock.advance(Duration::from_secs(61));
    collect(&srv, &srv.pk_test, &id, body())
        .await
        .assert_error(400, "client_session_expired");
    let g = srv
        .get(&format!("/v1/client_sessions/{id}"), &srv.sk_test)
        .await;
    assert_eq!(g.body["status"], "expired");
    assert_eq!(g.body["cards_collected"], 0);
    // The other session, made with the default 15 minutes, is still open.
    let r = collect(
        &srv,
        &srv.pk_test,
        &other_id,
        card(&other_secret, "4242424242424242"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_not_logged(&["4242424242424242", &secret, &other_secret]);
}

#[tokio::test]
async fn max_cards_bounds_a_session_even_under_concurrent_posts() {
    let srv = TestServer::start().await;
    let (id, secret) = create(&srv, json!({"max_cards": 2})).await;
    for n in 0..2 {
        let r = collect(&srv, &srv.pk_test, &id, card(&secret, &test_pan(100 + n))).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    collect(&srv, &srv.pk_test, &id, card(&secret, &test_pan(102)))
        .await
        .assert_error(409, "client_session_used");

    // Eight browsers race for one slot: exactly one wins.
    let (id, secret) = create(&srv, json!({})).await;
    let tries = (0..8u64).map(|n| {
        let body = card(&secret, &test_pan(200 + n));
        let path = format!("/v1/client_sessions/{id}/cards");
        let srv = &srv;
        async move { srv.post(&path, &srv.pk_test, body).await.status.as_u16() }
    });
    let mut statuses = futures_util::future::join_all(tries).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let g = srv
        .get(&format!("/v1/client_sessions/{id}"), &srv.sk_test)
        .await;
    assert_eq!(g.body["cards"].as_array().unwrap().len(), 1, "{}", g.text);
}

#[tokio::test]
async fn the_cvc_is_asked_for_exactly_when_the_session_collects_it() {
    let srv = TestServer::start().await;
    let (id, secret) = create(&srv, json!({})).await;
    let mut body = card(&secret, "4242424242424242");
    body.as_object_mut().unwrap().remove("cvc");
    collect(&srv, &srv.pk_test, &id, body.clone())
        .await
        .assert_error(400, "missing_field");
    let (id2, secret2) = create(&srv, json!({"collect_cvc": false})).await;
    collect(&srv, &srv.pk_test, &id2, card(&secret2, "4242424242424242"))
        .await
        .assert_error(400, "invalid_parameter");
    body["client_secret"] = secret2.into();
    let r = collect(&srv, &srv.pk_test, &id2, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["cvc_available"], false);
    // Card rules still hold, and a refused card spends nothing.
    for (number, code) in [
        ("4242424242424241", "card_number_luhn"),
        ("5105105105105106", "card_number_luhn"),
    ] {
        collect(&srv, &srv.pk_test, &id, card(&secret, number))
            .await
            .assert_error(400, code);
    }
    let mut short = card(&secret, "4242424242424242");
    short["cvc"] = "12".into();
    collect(&srv, &srv.pk_test, &id, short)
        .await
        .assert_error(400, "cvc_invalid");
    let r = collect(&srv, &srv.pk_test, &id, card(&secret, "4242424242424242")).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn sessions_are_made_only_by_the_back_end_with_valid_origins() {
    let srv = TestServer::start().await;
    // A publishable key lives in browsers: it cannot make sessions.
    srv.post("/v1/client_sessions", &srv.pk_test, new_session(json!({})))
        .await
        .assert_error(403, "permission_denied");
    for origins in [
        json!([]),
        json!(["https://shop.example/"]),
        json!(["https://shop.example/pay"]),
        json!(["HTTPS://SHOP.EXAMPLE"]),
        json!(["https://shop.example:443"]),
        json!(["http://shop.example"]),
        json!(["*"]),
        json!(["null"]),
        json!(["https://a.example", "https://a.example"]),
        json!(
            (0..11)
                .map(|i| format!("https://s{i}.example"))
                .collect::<Vec<_>>()
        ),
    ] {
        srv.post(
            "/v1/client_sessions",
            &srv.sk_test,
            json!({"purpose": "tokenize", "allowed_origins": origins}),
        )
        .await
        .assert_error(400, "origin_invalid");
    }
    // Plain HTTP to loopback: test mode only.
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:3000",
        "https://shop.example:8443",
    ] {
        let r = srv
            .post(
                "/v1/client_sessions",
                &srv.sk_test,
                json!({"purpose": "tokenize", "allowed_origins": [ok]}),
            )
            .await;
        assert_eq!(r.status, 201, "{ok}: {}", r.text);
    }
    srv.post(
        "/v1/client_sessions",
        &srv.sk_live,
        json!({"purpose": "tokenize", "allowed_origins": ["http://127.0.0.1:8080"]}),
    )
    .await
    .assert_error(400, "origin_invalid");
    for (extra, status, code) in [
        (json!({"amount": 100}), 400, "missing_field"),
        (
            json!({"amount": -1, "currency": "usd"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"amount": 1, "currency": "us"}),
            400,
            "invalid_parameter",
        ),
        (json!({"expires_in": 59}), 400, "invalid_parameter"),
        (json!({"expires_in": 3601}), 400, "invalid_parameter"),
        (json!({"max_cards": 0}), 400, "invalid_parameter"),
        (json!({"max_cards": 101}), 400, "invalid_parameter"),
        (json!({"order_id": "a\nb"}), 400, "invalid_parameter"),
        (json!({"metadata": {"": "x"}}), 400, "invalid_parameter"),
        (json!({"purpose": "reveal"}), 400, "invalid_request"),
        (json!({"amount_due": 1}), 400, "unknown_field"),
    ] {
        let r = srv
            .post(
                "/v1/client_sessions",
                &srv.sk_test,
                new_session(extra.clone()),
            )
            .await;
        r.assert_error(status, code);
    }
    // Its answer carries the client secret: never stored for an idempotent replay.
    let r = srv
        .client
        .post(format!("{}/v1/client_sessions", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("Idempotency-Key", "k-1")
        .json(&new_session(json!({})))
        .send()
        .await
        .unwrap();
    crate::harness::Resp::from(r)
        .await
        .assert_error(400, "idempotency_not_supported");
}

#[tokio::test]
async fn cors_answers_only_the_sessions_origins_and_browsers_reach_nothing_else() {
    let srv = TestServer::start().await;
    let (id, secret) = create(&srv, json!({})).await;
    let url = format!("{}/v1/client_sessions/{id}/cards", srv.url);
    let preflight = |origin: &'static str| {
        srv.client
            .request(Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight(SHOP).await.unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], SHOP);
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());

    // The post itself: the allowed origin can read the answer, errors included.
    let post = |origin: &'static str, body: Value| {
        srv.client
            .post(&url)
            .bearer_auth(&srv.pk_test)
            .header("Origin", origin)
            .header("Sec-Fetch-Site", "cross-site")
            .json(&body)
            .send()
    };
    let r = post(SHOP, card(&secret, "4242424242424242")).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], SHOP);
    let r = post(SHOP, card(&secret, "4242424242424242")).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["access-control-allow-origin"], SHOP);
    let r = post("https://evil.example", card(&secret, "4242424242424242"))
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Any other route, asked by a page, is refused before the key is looked at.
    for (method, path) in [
        (Method::GET, "/v1/cards"),
        (Method::POST, "/v1/cards"),
        (Method::GET, &*format!("/v1/client_sessions/{id}")),
        (Method::POST, "/v1/client_sessions"),
        (Method::POST, "/v1/card_tokens/redeem"),
    ] {
        for (name, value) in [
            ("Origin", SHOP),
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Site", "same-origin"),
        ] {
            let r = srv
                .client
                .request(method.clone(), format!("{}{path}", srv.url))
                .bearer_auth(&srv.sk_test)
                .header(name, value)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let r = crate::harness::Resp::from(r).await;
            r.assert_error(403, "browser_not_allowed");
            assert!(r.headers.get("access-control-allow-origin").is_none());
        }
    }
    // A typed navigation (Sec-Fetch-Site: none) is no page's request.
    let r = srv
        .client
        .get(format!("{}/healthz", srv.url))
        .header("Sec-Fetch-Site", "none")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn card_testing_from_one_address_hits_the_limit() {
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.rate_limit.browser_ip_per_minute = 20;
        c.rate_limit.browser_session_per_minute = 10;
    })
    .await;
    // The risk rules would stop this run at its eleventh card (tests/it/risk.rs): off
    // here, so that the limit is what is seen.
    let off = srv
        .call(
            Method::PATCH,
            "/v1/account",
            Some(&srv.sk_live),
            Some(json!({"risk_mode": "off"})),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.text);
    // Fifty cards from one address in a minute, each through a fresh session (so the
    // per-session limit is not what stops them): the address's limit does.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for n in 0..50u64 {
        let (id, secret) = create(&srv, json!({})).await;
        let r = collect(&srv, &srv.pk_test, &id, card(&secret, &test_pan(300 + n))).await;
        if r.status == 429 {
            r.assert_error(429, "rate_limited");
            retry_after = r
                .headers
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);
    let after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");

    // One session guessed at: its own limit, whatever the address's.
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.rate_limit.browser_session_per_minute = 10;
    })
    .await;
    let (id, secret) = create(&srv, json!({})).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        let r = collect(&srv, &srv.pk_test, &id, card(&secret, "4242424242424241")).await;
        codes.push(
            r.body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "card_number_luhn").count(),
        10,
        "{codes:?}"
    );
    assert_eq!(codes.iter().filter(|c| *c == "rate_limited").count(), 2);
}

#[tokio::test]
async fn the_hosted_field_page_is_locked_to_the_sessions_origins() {
    let srv = TestServer::start().await;
    let (id, _) = create(
        &srv,
        json!({"allowed_origins": [SHOP, "https://m.shop.example"]}),
    )
    .await;
    let page = |q: String| {
        let url = format!("{}/elements/v1/card?{q}", srv.url);
        let client = srv.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    let q = |origin: &str| {
        format!(
            "session={id}&origin={}&frame=abcdEFGH1234-card",
            urlencode(origin)
        )
    };
    let r = page(q(SHOP)).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'none'; "), "{csp}");
    assert!(
        csp.ends_with("frame-ancestors https://shop.example https://m.shop.example"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.get("set-cookie").is_none());
    assert!(
        h.get("x-frame-options").is_none(),
        "frame-ancestors governs framing"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap()
        .to_owned();
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("nonce=\"{nonce}\"")));
    assert!(!html.contains("{{"), "a placeholder was left");
    assert!(html.contains("autocomplete=\"cc-number\""));
    // A fresh nonce for every page.
    let again = page(q(SHOP)).await;
    assert_ne!(again.headers()["content-security-policy"], csp.as_str());
    // The script the page names carries the integrity of what the vault serves.
    let js = srv
        .client
        .get(format!("{}/elements/v1/elements.js", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sri = strongroom_server::routes::elements::integrity(&js);
    assert!(html.contains(&format!("integrity=\"{sri}\"")));

    // Another origin: nothing to show, and framing still limited to the session's.
    let r = page(q("https://evil.example")).await;
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .ends_with("frame-ancestors https://shop.example https://m.shop.example")
    );
    // An unknown session, a field that is not one, a bad frame id: framed by nobody.
    for q in [
        format!(
            "session=cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6&origin={}&frame=abcdEFGH1234",
            urlencode(SHOP)
        ),
        format!("session={id}&origin={}&frame=<script>", urlencode(SHOP)),
    ] {
        let r = page(q).await;
        assert_eq!(r.status(), 404);
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .ends_with("frame-ancestors 'none'")
        );
    }
    let r = srv
        .client
        .get(format!("{}/elements/v1/pan?{}", srv.url, q(SHOP)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn strongroom_js_is_cacheable_and_its_published_integrity_holds() {
    let srv = TestServer::start().await;
    for path in [
        "/js/v1/strongroom.js",
        "/js/v1/strongroom.d.ts",
        "/elements/v1/elements.js",
    ] {
        let r = srv
            .client
            .get(format!("{}{path}", srv.url))
            .header("Origin", SHOP)
            .header("Sec-Fetch-Site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "*", "{path}");
        assert_eq!(h["cache-control"], "public, max-age=86400", "{path}");
        assert!(h.get("set-cookie").is_none());
    }
    let js = srv
        .client
        .get(format!("{}/js/v1/strongroom.js", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sri = strongroom_server::routes::elements::integrity(&js);
    // docs/client-side.md publishes the hash merchants pin; it must be this file's.
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/client-side.md"),
    )
    .unwrap();
    assert!(
        docs.contains(&sri),
        "docs/client-side.md must publish strongroom.js's integrity {sri}"
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
