//! The PIN service: transport key, encrypted payloads, set / verify / change, lockout,
//! events, and that no PIN reaches logs, events or the database in clear.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use strongroom_store::{ListEvents, Mode, VaultStore};

fn now_s(srv: &TestServer) -> i64 {
    use strongroom_core::Clock;
    srv.clock.now_ms() / 1000
}

pub(crate) async fn jwk(srv: &TestServer) -> Value {
    let r = srv.get("/v1/pin/encryption_key", &srv.sk_test).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

fn jti() -> String {
    hex::encode(strongroom_crypto::random::bytes::<16>().unwrap())
}

/// A compact JWE of a PIN payload, made from the JWK alone as a client would.
fn seal_with(jwk: &Value, alg: &str, claims: Value) -> String {
    let header = json!({"alg": alg, "enc": "A256GCM", "kid": jwk["kid"]});
    strongroom_crypto::jwe::encrypt_compact(jwk, &header, claims.to_string().as_bytes()).unwrap()
}

pub(crate) fn payload(srv: &TestServer, jwk: &Value, pin: &str, card: &str) -> String {
    seal_with(
        jwk,
        "RSA-OAEP-256",
        json!({"pin": pin, "card": card, "iat": now_s(srv), "jti": jti()}),
    )
}

async fn otp(srv: &TestServer, key: &str, purpose: &str, card: &str) -> (String, String) {
    let r = srv
        .post("/v1/otp", key, json!({"purpose": purpose, "card": card}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["test_code"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn set_pin(
    srv: &TestServer,
    jwk: &Value,
    card: &str,
    pin: &str,
    purpose: &str,
) -> Resp {
    let (id, code) = otp(srv, &srv.sk_test, purpose, card).await;
    srv.call(
        reqwest::Method::PUT,
        &format!("/v1/cards/{card}/pin"),
        Some(&srv.sk_test),
        Some(json!({"encrypted_pin": payload(srv, jwk, pin, card), "otp": id, "code": code})),
    )
    .await
}

pub(crate) async fn verify(srv: &TestServer, key: &str, card: &str, enc: String) -> Resp {
    srv.post(
        &format!("/v1/cards/{card}/pin/verify"),
        key,
        json!({"encrypted_pin": enc}),
    )
    .await
}

pub(crate) async fn matches(srv: &TestServer, jwk: &Value, card: &str, pin: &str) -> bool {
    let r = verify(srv, &srv.sk_test, card, payload(srv, jwk, pin, card)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["match"].as_bool().unwrap()
}

async fn event_types(srv: &TestServer, account: &str) -> Vec<(String, String)> {
    let q = ListEvents {
        limit: 1000,
        ..Default::default()
    };
    let mut out: Vec<(String, String)> = srv
        .running
        .state()
        .unwrap()
        .store()
        .list_events(account, Mode::Test, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, e.data))
        .collect();
    out.reverse();
    out
}

/// The independent Python client (jwcrypto) runs the whole contract against the server.
#[tokio::test]
async fn python_client_end_to_end() {
    let srv = TestServer::start().await;
    let card = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = srv.tokenize("5555555555554444").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/pin/client.py");
    let url = srv.url.clone();
    let ca = ca_pem_path();
    let key = srv.sk_test.clone();
    let (c1, c2) = (card.clone(), other.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(ca)
            .arg(key)
            .arg(c1)
            .arg(c2)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 is required for the PIN interop test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "Python PIN client failed (pip install jwcrypto):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The events of that run, in order, with no PIN in them.
    let events = event_types(&srv, &srv.account).await;
    // Events made in the same millisecond have no defined order: compare as multisets.
    let mut kinds: Vec<&str> = events
        .iter()
        .map(|(t, _)| t.as_str())
        .filter(|t| t.starts_with("pin."))
        .collect();
    kinds.sort_unstable();
    let mut expected = [
        "pin.set",
        "pin.verification_failed",
        "pin.verification_failed",
        "pin.verification_failed",
        "pin.verification_failed",
        "pin.verification_failed",
        "pin.locked",
        "pin.set",
        "pin.unlocked",
        "pin.verification_failed",
        "pin.changed",
    ];
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    for (_, data) in &events {
        for pin in ["5803", "5804", "730291"] {
            assert!(!data.contains(&format!("\"{pin}\"")), "a PIN in an event");
        }
    }
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "pin.set" && d.contains(&card))
    );
}

#[tokio::test]
async fn payload_checks_and_refusals() {
    let srv = TestServer::start().await;
    let jwk = jwk(&srv).await;
    assert_eq!(jwk["alg"], "RSA-OAEP-256");
    assert_eq!(jwk["use"], "enc");
    assert_eq!(jwk["kty"], "RSA");
    // Publishable keys may fetch it too (a browser or app encrypts).
    let pk = srv.get("/v1/pin/encryption_key", &srv.pk_test).await;
    assert_eq!(pk.body["kid"], jwk["kid"]);
    let card = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = srv.tokenize("4000056655665556").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // No PIN yet.
    verify(
        &srv,
        &srv.sk_test,
        &card,
        payload(&srv, &jwk, "4826", &card),
    )
    .await
    .assert_error(409, "pin_not_set");
    // Weak PINs are refused on set, and the OTP is not spent by the refusal.
    for weak in ["0000", "1234", "9876", "1212", "012345678901"] {
        set_pin(&srv, &jwk, &card, weak, "pin.set")
            .await
            .assert_error(400, "pin_too_weak");
    }
    for bad in ["123", "1234567890123", "12a4", ""] {
        set_pin(&srv, &jwk, &card, bad, "pin.set")
            .await
            .assert_error(400, "pin_length");
    }
    // An OTP of another purpose, or for another card, does not set a PIN.
    let (id, code) = otp(&srv, &srv.rk_reveal, "card.reveal", &card).await;
    srv.call(
        reqwest::Method::PUT,
        &format!("/v1/cards/{card}/pin"),
        Some(&srv.sk_test),
        Some(json!({"encrypted_pin": payload(&srv, &jwk, "4826", &card), "otp": id, "code": code})),
    )
    .await
    .assert_error(403, "otp_invalid");
    let (id, code) = otp(&srv, &srv.sk_test, "pin.set", &other).await;
    srv.call(
        reqwest::Method::PUT,
        &format!("/v1/cards/{card}/pin"),
        Some(&srv.sk_test),
        Some(json!({"encrypted_pin": payload(&srv, &jwk, "4826", &card), "otp": id, "code": code})),
    )
    .await
    .assert_error(403, "otp_invalid");
    // A wrong code.
    let (id, _) = otp(&srv, &srv.sk_test, "pin.set", &card).await;
    srv.call(
        reqwest::Method::PUT,
        &format!("/v1/cards/{card}/pin"),
        Some(&srv.sk_test),
        Some(json!({"encrypted_pin": payload(&srv, &jwk, "4826", &card), "otp": id, "code": "000000"})),
    )
    .await
    .assert_error(403, "otp_invalid");

    let r = set_pin(&srv, &jwk, &card, "4826", "pin.set").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["object"], "card_pin");
    assert!(!r.text_without_ids().contains("4826"));
    set_pin(&srv, &jwk, &card, "4827", "pin.set")
        .await
        .assert_error(409, "pin_already_set");
    assert!(matches(&srv, &jwk, &card, "4826").await);

    // Payload refusals: none of them counts as a failed attempt.
    let enc = payload(&srv, &jwk, "4826", &card);
    assert_eq!(
        verify(&srv, &srv.sk_test, &card, enc.clone()).await.status,
        StatusCode::OK
    );
    verify(&srv, &srv.sk_test, &card, enc)
        .await
        .assert_error(409, "pin_payload_replayed");
    verify(
        &srv,
        &srv.sk_test,
        &card,
        payload(&srv, &jwk, "4826", &other),
    )
    .await
    .assert_error(400, "pin_payload_card_mismatch");
    for iat in [now_s(&srv) - 301, now_s(&srv) + 60, i64::MIN, i64::MAX] {
        let enc = seal_with(
            &jwk,
            "RSA-OAEP-256",
            json!({"pin": "4826", "card": card, "iat": iat, "jti": jti()}),
        );
        verify(&srv, &srv.sk_test, &card, enc)
            .await
            .assert_error(400, "pin_payload_stale");
    }
    for alg in ["RSA1_5", "RSA-OAEP", "dir"] {
        let enc = seal_with(
            &jwk,
            alg,
            json!({"pin": "4826", "card": card, "iat": now_s(&srv), "jti": jti()}),
        );
        verify(&srv, &srv.sk_test, &card, enc)
            .await
            .assert_error(400, "pin_payload_unsupported");
    }
    for junk in ["", "a.b.c.d.e", "not a jwe", &"x.".repeat(5000)] {
        verify(&srv, &srv.sk_test, &card, junk.to_owned())
            .await
            .assert_error(400, "pin_payload_invalid");
    }
    // Extra claims, a missing jti, or an unknown kid.
    let enc = seal_with(
        &jwk,
        "RSA-OAEP-256",
        json!({"pin": "4826", "card": card, "iat": now_s(&srv)}),
    );
    verify(&srv, &srv.sk_test, &card, enc)
        .await
        .assert_error(400, "pin_payload_invalid");
    let mut wrong_kid = jwk.clone();
    wrong_kid["kid"] = "ptk_unknown".into();
    verify(
        &srv,
        &srv.sk_test,
        &card,
        payload(&srv, &wrong_kid, "4826", &card),
    )
    .await
    .assert_error(400, "pin_payload_invalid");
    // Unknown body fields, and keys without the PIN scopes.
    srv.post(
        &format!("/v1/cards/{card}/pin/verify"),
        &srv.sk_test,
        json!({"encrypted_pin": payload(&srv, &jwk, "4826", &card), "pin": "4826"}),
    )
    .await
    .assert_error(400, "unknown_field");
    verify(
        &srv,
        &srv.rk_reveal,
        &card,
        payload(&srv, &jwk, "4826", &card),
    )
    .await
    .assert_error(403, "permission_denied");
    srv.post(
        "/v1/otp",
        &srv.rk_reveal,
        json!({"purpose": "pin.set", "card": card}),
    )
    .await
    .assert_error(403, "permission_denied");
    // The counter is untouched by all of that: two wrong, then right, still fine.
    assert!(!matches(&srv, &jwk, &card, "4820").await);
    assert!(!matches(&srv, &jwk, &card, "4821").await);
    assert!(matches(&srv, &jwk, &card, "4826").await);

    // Change: a wrong current PIN counts and is refused; a right one changes it.
    let (id, code) = otp(&srv, &srv.sk_test, "pin.change", &card).await;
    let change = |cur: &str, new: &str, id: &str, code: &str| {
        json!({
            "encrypted_current_pin": payload(&srv, &jwk, cur, &card),
            "encrypted_new_pin": payload(&srv, &jwk, new, &card),
            "otp": id, "code": code,
        })
    };
    srv.post(
        &format!("/v1/cards/{card}/pin/change"),
        &srv.sk_test,
        change("4820", "7391", &id, &code),
    )
    .await
    .assert_error(403, "pin_incorrect");
    srv.post(
        &format!("/v1/cards/{card}/pin/change"),
        &srv.sk_test,
        change("4826", "5555", &id, &code),
    )
    .await
    .assert_error(400, "pin_too_weak");
    let r = srv
        .post(
            &format!("/v1/cards/{card}/pin/change"),
            &srv.sk_test,
            change("4826", "7391", &id, &code),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The OTP is spent with the change.
    srv.post(
        &format!("/v1/cards/{card}/pin/change"),
        &srv.sk_test,
        change("7391", "8264", &id, &code),
    )
    .await
    .assert_error(403, "otp_invalid");
    assert!(matches(&srv, &jwk, &card, "7391").await);
    assert!(!matches(&srv, &jwk, &card, "4826").await);
    // The other mode sees no such card.
    verify(
        &srv,
        &srv.sk_live,
        &card,
        payload(&srv, &jwk, "7391", &card),
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn lockout_is_configurable_survives_restart_and_unlocks() {
    let srv = TestServer::start().await;
    let jwk = jwk(&srv).await;
    let card = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/admin/accounts/{}/pin_settings", srv.account);
    let r = srv.get(&path, &srv.admin_key).await;
    assert_eq!(r.body["max_failures"], 3, "{}", r.text);
    for bad in [0, 11, -1] {
        srv.post(&path, &srv.admin_key, json!({"max_failures": bad}))
            .await
            .assert_error(400, "invalid_parameter");
    }
    srv.post(&path, &srv.sk_test, json!({"max_failures": 2}))
        .await
        .assert_error(403, "permission_denied");
    let r = srv
        .post(&path, &srv.admin_key, json!({"max_failures": 2}))
        .await;
    assert_eq!(r.body["max_failures"], 2, "{}", r.text);

    assert_eq!(
        set_pin(&srv, &jwk, &card, "60517", "pin.set").await.status,
        StatusCode::OK
    );
    assert!(!matches(&srv, &jwk, &card, "60518").await);
    assert!(!matches(&srv, &jwk, &card, "60519").await);
    verify(
        &srv,
        &srv.sk_test,
        &card,
        payload(&srv, &jwk, "60517", &card),
    )
    .await
    .assert_error(423, "pin_locked");

    // The lock is in the store: a restarted server (another node, in effect) holds it.
    let key = srv.sk_test.clone();
    let admin = srv.admin_key.clone();
    let account = srv.account.clone();
    let data = srv.stop().await;
    let srv = TestServer::start_on(data, |_| {}).await;
    let jwk2 = {
        let r = srv.get("/v1/pin/encryption_key", &key).await;
        r.body
    };
    assert_eq!(
        jwk2["kid"], jwk["kid"],
        "the transport key survives a restart"
    );
    verify(&srv, &key, &card, payload(&srv, &jwk, "60517", &card))
        .await
        .assert_error(423, "pin_locked");
    let (id, code) = otp(&srv, &key, "pin.change", &card).await;
    srv.post(
        &format!("/v1/cards/{card}/pin/change"),
        &key,
        json!({
            "encrypted_current_pin": payload(&srv, &jwk, "60517", &card),
            "encrypted_new_pin": payload(&srv, &jwk, "73914", &card),
            "otp": id, "code": code,
        }),
    )
    .await
    .assert_error(423, "pin_locked");

    // The operator unlocks.
    srv.post(
        &format!("/v1/admin/cards/{card}/pin/unlock"),
        &key,
        json!({}),
    )
    .await
    .assert_error(403, "permission_denied");
    let r = srv
        .post(
            &format!("/v1/admin/cards/{card}/pin/unlock"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = verify(&srv, &key, &card, payload(&srv, &jwk, "60517", &card)).await;
    assert_eq!(r.body, json!({"match": true}), "{}", r.text);

    let mut kinds: Vec<String> = event_types(&srv, &account)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| t.starts_with("pin."))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "pin.locked",
            "pin.set",
            "pin.unlocked",
            "pin.verification_failed",
            "pin.verification_failed",
        ]
    );
}

#[tokio::test]
async fn transport_key_rotation_keeps_the_old_key_for_the_grace_period() {
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| {
        c.pin_transport_grace = Duration::from_secs(600);
    })
    .await;
    let old = jwk(&srv).await;
    let card = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        set_pin(&srv, &old, &card, "82731", "pin.set").await.status,
        StatusCode::OK
    );
    srv.post(
        "/v1/admin/pin/encryption_key/rotate",
        &srv.sk_test,
        json!({}),
    )
    .await
    .assert_error(403, "permission_denied");
    let r = srv
        .post(
            "/v1/admin/pin/encryption_key/rotate",
            &srv.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let new = jwk(&srv).await;
    assert_eq!(new["kid"], r.body["kid"]);
    assert_ne!(new["kid"], old["kid"]);
    assert_ne!(new["n"], old["n"]);
    assert!(matches(&srv, &new, &card, "82731").await);
    assert!(
        matches(&srv, &old, &card, "82731").await,
        "old key in grace"
    );
    srv.clock.advance(Duration::from_secs(601));
    verify(
        &srv,
        &srv.sk_test,
        &card,
        payload(&srv, &old, "82731", &card),
    )
    .await
    .assert_error(400, "pin_payload_invalid");
    assert!(matches(&srv, &new, &card, "82731").await);
}

#[tokio::test]
async fn pin_key_rotation_rewraps_pins() {
    let srv = TestServer::start().await;
    let jwk = jwk(&srv).await;
    let card = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        set_pin(&srv, &jwk, &card, "318274", "pin.set").await.status,
        StatusCode::OK
    );
    let keys = format!("/v1/admin/accounts/{}/keys", srv.account);
    let r = srv.get(&keys, &srv.admin_key).await;
    assert_eq!(
        r.body["purposes"]["pin"]["versions"][0]["records"], 1,
        "{}",
        r.text
    );
    let r = srv
        .post(
            &format!("{keys}/rotate"),
            &srv.admin_key,
            json!({"purpose": "pin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = srv.get(&keys, &srv.admin_key).await;
        if r.body["purposes"]["pin"]["records_to_rewrap"] == 0 {
            assert_eq!(r.body["purposes"]["pin"]["versions"][1]["records"], 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "re-wrap stalled: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = srv
        .post(
            &format!("{keys}/retire"),
            &srv.admin_key,
            json!({"purpose": "pin", "version": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(matches(&srv, &jwk, &card, "318274").await);
    assert!(!matches(&srv, &jwk, &card, "318275").await);
}

/// No PIN, and no clear PIN field, in logs, events or the database.
#[tokio::test]
async fn no_pin_in_clear_anywhere() {
    let srv = TestServer::start().await;
    let jwk = jwk(&srv).await;
    let card = srv.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Long PINs: a 4-digit one would turn up by chance in ids and timestamps.
    let (a, b, wrong) = ("583920174629", "916402837155", "583920174628");
    assert_eq!(
        set_pin(&srv, &jwk, &card, a, "pin.set").await.status,
        StatusCode::OK
    );
    assert!(!matches(&srv, &jwk, &card, wrong).await);
    let (id, code) = otp(&srv, &srv.sk_test, "pin.change", &card).await;
    let r = srv
        .post(
            &format!("/v1/cards/{card}/pin/change"),
            &srv.sk_test,
            json!({
                "encrypted_current_pin": payload(&srv, &jwk, a, &card),
                "encrypted_new_pin": payload(&srv, &jwk, b, &card),
                "otp": id, "code": code,
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Refused input is not logged either.
    set_pin(&srv, &jwk, &card, "111111111111", "pin.reset")
        .await
        .assert_error(400, "pin_too_weak");
    let account = srv.account.clone();
    for (_, data) in event_types(&srv, &account).await {
        for p in [a, b, wrong, "111111111111"] {
            assert!(!data.contains(p), "a PIN in an event");
        }
    }
    let backend = backend();
    let store = srv.data.store.clone();
    let data = srv.stop().await;
    // The PINs, and their clear format 4 PIN fields (first 8 bytes) in hex and raw.
    let fields: Vec<String> = [a, b]
        .iter()
        .flat_map(|p| {
            let f = format!("4C{p}AA");
            [f.clone(), f.to_lowercase()]
        })
        .collect();
    let raw: Vec<Vec<u8>> = [a, b]
        .iter()
        .map(|p| hex::decode(format!("4C{p}AA")).unwrap())
        .collect();
    let mut needles: Vec<&str> = vec![a, b, wrong, "111111111111"];
    needles.extend(fields.iter().map(String::as_str));
    if backend == "postgres" {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&store.url).await.unwrap();
        let schema = store.schema.unwrap();
        for t in [
            "pins",
            "events",
            "otps",
            "pin_jtis",
            "pin_transport_keys",
            "data_keys",
        ] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{schema}\".\"{t}\" t"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            if t == "pins" {
                assert_eq!(rows.len(), 1);
            }
            for r in rows {
                let text: String = r.get(0);
                for n in &needles {
                    assert!(!text.contains(n), "a PIN in clear in table {t}");
                }
            }
        }
        let blocks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT block FROM \"{schema}\".pins"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for r in blocks {
            let b: Vec<u8> = r.get(0);
            assert_eq!(b.len(), 16);
            for f in &raw {
                assert!(!b.starts_with(f), "a clear PIN field in the store");
            }
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    } else {
        let files = data.sqlite_files();
        assert!(!files.is_empty());
        for f in files {
            assert_not_in_file(&f, &needles);
            let bytes = std::fs::read(&f).unwrap();
            for field in &raw {
                assert!(
                    !bytes.windows(field.len()).any(|w| w == field.as_slice()),
                    "a clear PIN field on disk"
                );
            }
        }
    }
    let logs = captured_logs();
    for n in &needles {
        assert!(!logs.contains(n), "a PIN in the server's logs");
    }
}

/// Two nodes on one database: a lock, a spent `jti` and a rotated transport key made on
/// one are honoured by the other.
#[tokio::test]
async fn two_nodes_share_lock_replay_and_transport_keys() {
    let a = TestServer::start().await;
    let b = TestServer::start_on(a.data.clone(), |_| {}).await;
    let jwk_a = jwk(&a).await;
    let card = a.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        set_pin(&a, &jwk_a, &card, "90417", "pin.set").await.status,
        StatusCode::OK
    );
    // Node B serves the same key and verifies the PIN set on A.
    let r = b.get("/v1/pin/encryption_key", &a.sk_test).await;
    assert_eq!(r.body["kid"], jwk_a["kid"], "{}", r.text);
    let r = verify(&b, &a.sk_test, &card, payload(&b, &jwk_a, "90417", &card)).await;
    assert_eq!(r.body, json!({"match": true}), "{}", r.text);
    // A payload spent on A is a replay on B.
    let enc = payload(&a, &jwk_a, "90417", &card);
    assert_eq!(
        verify(&a, &a.sk_test, &card, enc.clone()).await.status,
        StatusCode::OK
    );
    verify(&b, &a.sk_test, &card, enc)
        .await
        .assert_error(409, "pin_payload_replayed");
    // Failures on both nodes add up to one lock.
    for (node, n) in [(&a, 1), (&b, 2), (&a, 3)] {
        let r = verify(
            node,
            &a.sk_test,
            &card,
            payload(node, &jwk_a, "90418", &card),
        )
        .await;
        assert_eq!(r.body, json!({"match": false}), "failure {n}: {}", r.text);
    }
    for node in [&a, &b] {
        verify(
            node,
            &a.sk_test,
            &card,
            payload(node, &jwk_a, "90417", &card),
        )
        .await
        .assert_error(423, "pin_locked");
    }
    // A transport key rotated on B decrypts on A at once (an unknown kid re-reads).
    let r = b
        .post(
            "/v1/admin/pin/encryption_key/rotate",
            &b.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let jwk_b = r.body;
    let r = a
        .post(
            &format!("/v1/admin/cards/{card}/pin/unlock"),
            &a.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = verify(&a, &a.sk_test, &card, payload(&a, &jwk_b, "90417", &card)).await;
    assert_eq!(r.body, json!({"match": true}), "{}", r.text);
    b.stop().await;
}

#[tokio::test]
async fn unknown_kid_rereads_transport_keys_at_most_once_a_second() {
    // A long keyring TTL, so that only the unknown-kid path can re-read the keys.
    let long_ttl =
        |c: &mut strongroom_server::ServerConfig| c.keyring_ttl = Duration::from_secs(300);
    let a = TestServer::start_on(std::sync::Arc::new(Data::new()), long_ttl).await;
    let b = TestServer::start_on(a.data.clone(), long_ttl).await;
    let jwk_a = jwk(&a).await;
    let card = a.tokenize("4242424242424242").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        set_pin(&a, &jwk_a, &card, "90417", "pin.set").await.status,
        StatusCode::OK
    );
    // Stopped, so that a slow machine cannot stretch the steps below past the second.
    a.clock.freeze();
    let mut made_up = jwk_a.clone();
    made_up["kid"] = "ptk_unknown".into();
    verify(&a, &a.sk_test, &card, payload(&a, &made_up, "90417", &card))
        .await
        .assert_error(400, "pin_payload_invalid");
    // A key rotated on B within the same second on A: A does not re-read the store again.
    let r = b
        .post(
            "/v1/admin/pin/encryption_key/rotate",
            &b.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let jwk_b = r.body;
    verify(&a, &a.sk_test, &card, payload(&a, &jwk_b, "90417", &card))
        .await
        .assert_error(400, "pin_payload_invalid");
    // Once the second has passed it does, and finds B's key.
    a.clock.advance(Duration::from_millis(1000));
    let r = verify(&a, &a.sk_test, &card, payload(&a, &jwk_b, "90417", &card)).await;
    assert_eq!(r.body, json!({"match": true}), "{}", r.text);
    b.stop().await;
}
