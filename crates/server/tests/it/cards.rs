//! The card flow: tokenize, masked reads, fingerprint lookup, OTP reveal, delete.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn full_flow_then_restart_keeps_everything() {
    let srv = TestServer::start().await;
    let r = srv
        .post("/v1/cards", &srv.sk_test, json!({"number": "4242 4242-4242 4242", "exp_month": 12, "exp_year": 2030, "cardholder_name": "Ada Lovelace"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let card = r.body.clone();
    let id = card["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("card_") && id.len() == 37);
    assert_eq!(card["object"], "card");
    assert_eq!(card["brand"], "visa");
    assert_eq!(card["bin"], "424242");
    assert_eq!(card["last4"], "4242");
    assert_eq!(card["masked_number"], "XXXX4242");
    assert_eq!(card["exp_month"], 12);
    assert_eq!(card["exp_year"], 2030);
    assert_eq!(card["mode"], "test");
    assert!(card["created"].as_i64().unwrap() > 1_700_000_000);
    assert!(
        !r.text.contains("4242424242424242"),
        "tokenize must not echo the PAN"
    );
    assert!(!r.text.contains("Ada"), "tokenize must not echo the name");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(
        r.headers["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=63072000")
    );

    // Same PAN again, with an earlier expiry: one PAN, one record, the stored expiry
    // kept.
    let again = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "4242424242424242", "exp_month": 11, "exp_year": 2030}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, card);
    // A later expiry (a renewed card) moves the stored one; the card is otherwise the same.
    let renewed = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "4242424242424242", "exp_month": 1, "exp_year": 2031}),
        )
        .await;
    assert_eq!(renewed.status, 200);
    assert_eq!(renewed.body["id"], card["id"]);
    assert_eq!(
        (&renewed.body["exp_month"], &renewed.body["exp_year"]),
        (&json!(1), &json!(2031))
    );
    let mut card = card;
    card["exp_month"] = json!(1);
    card["exp_year"] = json!(2031);
    assert_eq!(renewed.body, card);

    // Masked read.
    let got = srv.get(&format!("/v1/cards/{id}"), &srv.sk_test).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, card);

    // Lookup by fingerprint.
    let fp = card["fingerprint"].as_str().unwrap();
    srv.tokenize("5555555555554444").await;
    let page = srv
        .get(&format!("/v1/cards?fingerprint={fp}"), &srv.sk_test)
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["data"][0]["id"], card["id"]);

    // The secret key cannot reveal: least privilege.
    let otp = srv
        .post(
            "/v1/otp",
            &srv.sk_test,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    otp.assert_error(403, "permission_denied");
    let denied = srv
        .post(
            &format!("/v1/cards/{id}/reveal"),
            &srv.sk_test,
            json!({"otp": "otp_00000000000000000000000000000000", "code": "123456"}),
        )
        .await;
    denied.assert_error(403, "permission_denied");
    assert!(!denied.text.contains("4242424242424242"));

    // Reveal with the restricted key and an OTP.
    let shown = srv.reveal(&srv.rk_reveal, &id).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.body["number"], "4242424242424242");
    assert_eq!(shown.body["cardholder_name"], "Ada Lovelace");
    assert_eq!(shown.body["exp_month"], 1, "the renewed expiry");
    assert_eq!(shown.headers["cache-control"], "no-store");

    // Restart on the same data: everything is still there and still works.
    let admin = srv.admin_key.clone();
    let (sk, rk) = (srv.sk_test.clone(), srv.rk_reveal.clone());
    let data = srv.stop().await;
    let srv2 = TestServer::start_on(data, |_| {}).await;
    let got = srv2.get(&format!("/v1/cards/{id}"), &sk).await;
    assert_eq!(
        got.status, 200,
        "old key and card survive a restart: {}",
        got.text
    );
    assert_eq!(got.body, card);
    let shown = srv2.reveal(&rk, &id).await;
    assert_eq!(shown.body["number"], "4242424242424242");
    let keys = srv2
        .get(
            &format!("/v1/admin/accounts/{}/api_keys", srv2.account),
            &admin,
        )
        .await;
    assert_eq!(keys.status, 200);

    // Delete: ciphertext gone; GET and reveal give 404.
    let del = srv2.delete(&format!("/v1/cards/{id}"), &sk).await;
    assert_eq!(del.status, 200);
    assert_eq!(del.body["deleted"], true);
    srv2.get(&format!("/v1/cards/{id}"), &sk)
        .await
        .assert_error(404, "not_found");
    let otp = srv2
        .post(
            "/v1/otp",
            &rk,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    otp.assert_error(404, "not_found");
    srv2.delete(&format!("/v1/cards/{id}"), &sk)
        .await
        .assert_error(404, "not_found");
    assert_not_logged(&["4242424242424242", "5555555555554444", &sk, &rk, &admin]);
}

#[tokio::test]
async fn otp_rules_single_use_three_tries_five_minutes() {
    let srv = TestServer::start().await;
    let id = srv.tokenize("4111111111111111").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rk = srv.rk_reveal.clone();
    let path = format!("/v1/cards/{id}/reveal");
    let new_otp = || async {
        let r = srv
            .post(
                "/v1/otp",
                &rk,
                json!({"purpose": "card.reveal", "card": id}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let exp = r.body["expires_at"].as_i64().unwrap();
        assert!(r.body["id"].as_str().unwrap().starts_with("otp_"));
        assert!(exp > 0);
        (
            r.body["id"].as_str().unwrap().to_owned(),
            r.body["test_code"].as_str().unwrap().to_owned(),
        )
    };
    let wrong = |code: &str| {
        let c: u32 = code.parse().unwrap();
        format!("{:06}", (c + 1) % 1_000_000)
    };

    // Single use.
    let (otp, code) = new_otp().await;
    assert_eq!(code.len(), 6);
    assert_eq!(
        srv.post(&path, &rk, json!({"otp": otp, "code": code}))
            .await
            .status,
        200
    );
    let r = srv
        .post(&path, &rk, json!({"otp": otp, "code": code}))
        .await;
    r.assert_error(403, "otp_invalid");
    assert!(!r.text.contains("4111111111111111"));

    // Dies after 3 wrong tries, even for the right code.
    let (otp, code) = new_otp().await;
    for _ in 0..3 {
        srv.post(&path, &rk, json!({"otp": otp, "code": wrong(&code)}))
            .await
            .assert_error(403, "otp_invalid");
    }
    srv.post(&path, &rk, json!({"otp": otp, "code": code}))
        .await
        .assert_error(403, "otp_invalid");

    // Two wrong tries, then the right one: still fine.
    let (otp, code) = new_otp().await;
    for _ in 0..2 {
        srv.post(&path, &rk, json!({"otp": otp, "code": wrong(&code)}))
            .await
            .assert_error(403, "otp_invalid");
    }
    assert_eq!(
        srv.post(&path, &rk, json!({"otp": otp, "code": code}))
            .await
            .status,
        200
    );

    // Expires after 5 minutes.
    let (otp, code) = new_otp().await;
    srv.clock.advance(Duration::from_secs(5 * 60 + 1));
    srv.post(&path, &rk, json!({"otp": otp, "code": code}))
        .await
        .assert_error(403, "otp_invalid");

    // Bound to its card.
    let other = srv.tokenize("5555555555554444").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (otp, code) = new_otp().await;
    srv.post(
        &format!("/v1/cards/{other}/reveal"),
        &rk,
        json!({"otp": otp, "code": code}),
    )
    .await
    .assert_error(403, "otp_invalid");

    // Malformed OTP input.
    srv.post(&path, &rk, json!({"otp": "nope", "code": "12"}))
        .await
        .assert_error(403, "otp_invalid");
    srv.post(&path, &rk, json!({"otp": otp}))
        .await
        .assert_error(400, "missing_field");
    // Exactly the two successful reveals were recorded in the outbox; failures were not.
    use strongroom_store::{ListEvents, VaultStore};
    let revealed = srv
        .running
        .state()
        .unwrap()
        .store()
        .list_events(
            &srv.account,
            strongroom_core::Mode::Test,
            &ListEvents {
                event_type: Some("card.revealed".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(revealed.len(), 2);
    assert!(
        revealed
            .iter()
            .all(|e| e.data.contains(&id) && !e.data.contains("4111111111111111"))
    );
    assert_not_logged(&["4111111111111111", &code]);
}

#[tokio::test]
async fn publishable_keys_only_create_and_modes_do_not_mix() {
    let srv = TestServer::start().await;
    let r = srv
        .post(
            "/v1/cards",
            &srv.pk_test,
            json!({"number": "378282246310005", "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["brand"], "amex");
    assert_eq!(r.body["masked_number"], "XXXX0005");
    let id = r.body["id"].as_str().unwrap().to_owned();
    srv.get(&format!("/v1/cards/{id}"), &srv.pk_test)
        .await
        .assert_error(403, "permission_denied");
    srv.get("/v1/cards", &srv.pk_test)
        .await
        .assert_error(403, "permission_denied");
    srv.delete(&format!("/v1/cards/{id}"), &srv.pk_test)
        .await
        .assert_error(403, "permission_denied");

    // A live key does not see test data.
    srv.get(&format!("/v1/cards/{id}"), &srv.sk_live)
        .await
        .assert_error(404, "not_found");
    let live_list = srv.get("/v1/cards", &srv.sk_live).await;
    assert_eq!(live_list.body["data"].as_array().unwrap().len(), 0);

    // Every published test card is accepted in test mode, with its brand.
    for (n, brand) in [
        ("4242424242424242", "visa"),
        ("4111111111111111", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("3566002020360505", "jcb"),
        ("36227206271667", "diners"),
        ("6200000000000005", "unionpay"),
        ("4000000000000002", "visa"),
    ] {
        assert_eq!(srv.tokenize(n).await["brand"], brand, "{n}");
    }
    // A real-looking number is refused in test mode.
    let r = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": "4532015112830366", "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    r.assert_error(400, "live_card_in_test_mode");
    // ...and accepted in live mode.
    let r = srv
        .post(
            "/v1/cards",
            &srv.sk_live,
            json!({"number": "4532015112830366", "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["mode"], "live");
    assert_not_logged(&["4532015112830366", "378282246310005"]);
}

#[tokio::test]
async fn list_paginates_newest_first() {
    let srv = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            srv.tokenize(&test_pan(100 + i)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        srv.clock.advance(Duration::from_millis(2));
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("/v1/cards?limit=3&starting_after={a}"),
            None => "/v1/cards?limit=3".to_owned(),
        };
        let page = srv.get(&q, &srv.sk_test).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let data = page.body["data"].as_array().unwrap();
        seen.extend(data.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
        if !page.body["has_more"].as_bool().unwrap() {
            break;
        }
        after = seen.last().cloned();
    }
    assert_eq!(seen, ids);
    srv.get("/v1/cards?limit=0", &srv.sk_test)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get("/v1/cards?limit=101", &srv.sk_test)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get("/v1/cards?fingerprint=abc", &srv.sk_test)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get("/v1/cards?starting_after=x", &srv.sk_test)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get("/v1/cards?colour=red", &srv.sk_test)
        .await
        .assert_error(400, "unknown_field");
}

#[tokio::test]
async fn live_otp_goes_to_the_delivery_url_signed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A loopback receiver that captures one request and answers 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let captured = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(h) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= h + 4 + len {
                    break;
                }
            }
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(buf).unwrap()
    });

    // Live deliveries go to public HTTPS only; the receiver is on loopback.
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| {
        c.webhooks.loopback_for_tests = true;
    })
    .await;
    let created = srv
        .post("/v1/admin/accounts", &srv.admin_key, json!({"name": "Live merchant", "otp_delivery_url": format!("http://127.0.0.1:{port}/otp")}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let acct = created.body["id"].as_str().unwrap();
    let secret = created.body["otp_signing_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mk = |kind: &str, scopes: Option<Vec<&str>>| {
        let mut body = json!({"kind": kind, "mode": "live"});
        if let Some(s) = scopes {
            body["scopes"] = json!(s);
        }
        body
    };
    let sk = srv
        .post(
            &format!("/v1/admin/accounts/{acct}/api_keys"),
            &srv.admin_key,
            mk("secret", None),
        )
        .await;
    let rk = srv
        .post(
            &format!("/v1/admin/accounts/{acct}/api_keys"),
            &srv.admin_key,
            mk("restricted", Some(vec!["cards:reveal"])),
        )
        .await;
    let (sk, rk) = (
        sk.body["secret"].as_str().unwrap().to_owned(),
        rk.body["secret"].as_str().unwrap().to_owned(),
    );
    assert!(sk.starts_with("sk_live_") && rk.starts_with("rk_live_"));
    let pan = "4532015112830366";
    let card = srv
        .post(
            "/v1/cards",
            &sk,
            json!({"number": pan, "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    let id = card.body["id"].as_str().unwrap().to_owned();
    let otp = srv
        .post(
            "/v1/otp",
            &rk,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    assert!(
        otp.body.get("test_code").is_none(),
        "live mode never returns the code"
    );

    let request = captured.await.unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap()
    };
    // Delivered as an `otp.created` webhook, Standard Webhooks signed under the
    // account's OTP signing secret. Verify independently of the server's code path:
    // HMAC-SHA256 over "{id}.{timestamp}.{body}".
    let (msg_id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let expected = b64.encode(strongroom_crypto::hmac_sha256(
        &key,
        format!("{msg_id}.{ts}.{body}").as_bytes(),
    ));
    assert_eq!(sig, format!("v1,{expected}"));
    let event: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["id"], msg_id.as_str());
    assert_eq!(event["type"], "otp.created");
    let delivered = &event["data"]["object"];
    assert_eq!(delivered["id"], otp.body["id"]);
    assert!(delivered.get("sealed_code").is_none());
    let code = delivered["code"].as_str().unwrap();
    let shown = srv
        .post(
            &format!("/v1/cards/{id}/reveal"),
            &rk,
            json!({"otp": otp.body["id"], "code": code}),
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.body["number"], pan);
    assert_not_logged(&[pan, code, &sk, &rk]);
}
