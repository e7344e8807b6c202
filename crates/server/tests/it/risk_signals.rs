//! Signals of a card use beyond velocity (docs/risk.md, "Assessments", "Declines and
//! failed one-time passwords"): a card's declines and failed OTPs, counted by the vault
//! (a wrong OTP code, a relay answered 402) and reported by the merchant, and the hour
//! of day in the account's time zone.

use crate::harness::{TestServer, test_pan};
use crate::risk_lists::{assess, reason, with_echo};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn declines_and_failed_otps_count_in_the_cards_later_assessments() {
    let (echo, srv) = with_echo().await;
    let card = srv.tokenize(&test_pan(71)).await;
    let id = card["id"].as_str().unwrap().to_owned();
    let features = |a: &Value| {
        let f = &a["features"];
        (
            f["card_declines_24h"].as_f64(),
            f["card_otp_failures_24h"].as_f64(),
        )
    };
    let pay = json!({"action": "payment", "card": id});

    // Two wrong codes for a reveal OTP of the card: counted by the vault itself.
    let otp = srv
        .post(
            "/v1/otp",
            &srv.rk_reveal,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    let right = otp.body["test_code"].as_str().unwrap();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..2 {
        srv.post(
            &format!("/v1/cards/{id}/reveal"),
            &srv.rk_reveal,
            json!({"otp": otp.body["id"], "code": wrong}),
        )
        .await
        .assert_error(403, "otp_invalid");
    }
    let a = assess(&srv, pay.clone()).await;
    assert_eq!(features(&a), (Some(0.0), Some(2.0)), "{a}");

    // A relay the processor answers 402: a decline of the card.
    echo.answer_with(
        402,
        "application/json",
        r#"{"error":"card_declined"}"#,
        None,
    );
    let send = json!({
        "destination": format!("https://127.0.0.1:{}/v1/charges", echo.port()),
        "body": {"pan": format!("{{{{{id}:number}}}}")}
    });
    let r = srv.post("/v1/relay", &srv.sk_test, send).await;
    assert_eq!(r.status, 402, "the answer is passed on: {}", r.text);
    // Two more, reported by the merchant (one dated an hour ago).
    let now = a["created"].as_i64().unwrap();
    for at in [None, Some(now - 3600)] {
        let mut body = json!({"type": "decline", "card": id});
        if let Some(at) = at {
            body["at"] = json!(at);
        }
        let r = srv.post("/v1/risk/card_failures", &srv.sk_test, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["object"], "risk_card_failure");
        assert_eq!(r.body["fingerprint"], card["fingerprint"]);
    }
    let a = assess(&srv, pay.clone()).await;
    assert_eq!(features(&a), (Some(3.0), Some(2.0)), "{a}");
    assert!(reason(&a, "declines").is_some(), "three declines: {a}");
    // By fingerprint, an OTP failed elsewhere: three of those too.
    let r = srv
        .post(
            "/v1/risk/card_failures",
            &srv.sk_test,
            json!({"type": "otp_failure", "fingerprint": card["fingerprint"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        features(&assess(&srv, pay.clone()).await),
        (Some(3.0), Some(3.0))
    );

    // Another card is untouched; a day later the card's counts have gone.
    let other = srv.tokenize(&test_pan(72)).await;
    let a = assess(&srv, json!({"action": "payment", "card": other["id"]})).await;
    assert_eq!(features(&a), (Some(0.0), Some(0.0)));
    srv.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(features(&assess(&srv, pay).await), (Some(0.0), Some(0.0)));

    // Malformed reports.
    let now = now + 24 * 3600;
    for (body, status, code) in [
        (json!({"type": "decline"}), 400, "missing_field"),
        (
            json!({"type": "decline", "card": id, "fingerprint": card["fingerprint"]}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "decline", "card": id, "at": now - 2 * 24 * 3600}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "decline", "card": id, "at": now + 600}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "decline", "fingerprint": "c2hvcnQ"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"type": "refund", "card": id}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "decline", "card": "card_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6"}),
            404,
            "not_found",
        ),
    ] {
        srv.post("/v1/risk/card_failures", &srv.sk_test, body)
            .await
            .assert_error(status, code);
    }
}

#[tokio::test]
async fn the_hour_signal_is_the_accounts_local_hour() {
    let srv = TestServer::start().await;
    let hour_of = |a: &Value| {
        let (s, c) = (
            a["features"]["hour_sin"].as_f64().unwrap(),
            a["features"]["hour_cos"].as_f64().unwrap(),
        );
        let turn = s.atan2(c).rem_euclid(std::f64::consts::TAU) / std::f64::consts::TAU;
        (turn * 24.0 + 1e-9).floor() as i64
    };
    let utc_hour = |a: &Value, offset_h: i64| {
        (a["created"].as_i64().unwrap() + offset_h * 3600).rem_euclid(86_400) / 3600
    };
    let account = srv.get("/v1/account", &srv.sk_live).await;
    assert_eq!(account.body["time_zone"], "UTC", "{}", account.text);
    let a = assess(&srv, json!({"action": "login"})).await;
    assert_eq!(hour_of(&a), utc_hour(&a, 0), "{a}");

    let patch = |tz: &str| {
        srv.call(
            reqwest::Method::PATCH,
            "/v1/account",
            Some(&srv.sk_live),
            Some(json!({ "time_zone": tz })),
        )
    };
    let r = patch("Asia/Tokyo").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["time_zone"], "Asia/Tokyo");
    assert_eq!(r.body["risk_mode"], "enforce", "other settings are kept");
    // Tokyo is UTC+9 all year.
    let a = assess(&srv, json!({"action": "login"})).await;
    assert_eq!(hour_of(&a), utc_hour(&a, 9), "{a}");
    // A rule reads it as `hour`.
    let local = hour_of(&a);
    let rules = json!({"rules": [
        {"id": "this_hour", "when": format!("hour == {local}"), "score": 5}
    ]});
    let r = srv
        .call(
            reqwest::Method::PUT,
            "/v1/risk/rules",
            Some(&srv.sk_test),
            Some(rules),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = assess(&srv, json!({"action": "login"})).await;
    if hour_of(&b) == local {
        assert!(reason(&b, "this_hour").is_some(), "{b}");
    }

    for bad in ["Mars/Olympus", "+02:00", "", "../../etc/passwd"] {
        patch(bad).await.assert_error(400, "invalid_parameter");
    }
    let account = srv.get("/v1/account", &srv.sk_live).await;
    assert_eq!(account.body["time_zone"], "Asia/Tokyo");
}
