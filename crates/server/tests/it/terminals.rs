//! Card-present terminals: what a DUKPT terminal enciphers becomes a card of the
//! account, the terminal side produced independently (pydukpt for TDES-DUKPT; for
//! AES-DUKPT the published X9.24-3 data keys with OpenSSL's AES-CBC), and nothing of the
//! track data in an answer, a log or the database.

use crate::harness::*;
use crate::key_imports::import_key;
use serde_json::{Value, json};

/// The published ANSI X9.24-1 test BDK and a device's initial KSN.
const TDES_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";
const TDES_KSN: &str = "FFFF9876543210E00000";
/// The published ANSI X9.24-3 test BDK (AES-128; twice over, AES-256) and Initial Key ID.
const AES_BDK: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
const IKID: &str = "1234567890123456";

/// TDES-DUKPT: `clear` enciphered by the terminal for `ksn`, by pydukpt.
fn pydukpt(args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop/dukpt/terminal.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "pydukpt failed (pip install -r tests/interop/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// AES-CBC (zero IV) by OpenSSL, which pads with PKCS#7 itself unless `nopad`.
fn openssl_aes(key: &str, clear: &[u8], nopad: bool) -> Vec<u8> {
    use std::io::Write;
    let cipher = format!("-aes-{}-cbc", key.len() * 4);
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["enc", &cipher, "-K", key, "-iv", &"0".repeat(32)]);
    if nopad {
        cmd.arg("-nopad");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child.stdin.take().unwrap().write_all(clear).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn ksn(prefix: &str, counter: u32) -> String {
    let mut k = hex::decode(prefix).unwrap();
    let n = k.len();
    let c = counter.to_be_bytes();
    if n == 10 {
        k[7] |= c[1];
        k[8] = c[2];
        k[9] = c[3];
    } else {
        k.extend_from_slice(&c);
    }
    hex::encode_upper(k)
}

async fn terminal(srv: &TestServer, body: Value) -> String {
    let r = srv.post("/v1/terminals", &srv.sk_test, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn send(srv: &TestServer, id: &str, body: Value) -> Resp {
    srv.post(&format!("/v1/terminals/{id}/cards"), &srv.sk_test, body)
        .await
}

#[tokio::test]
async fn a_tdes_terminals_track_2_becomes_a_card_once() {
    let srv = TestServer::start().await;
    let bdk = import_key(&srv, "bdk", "tdes2", &hex::decode(TDES_BDK).unwrap()).await;
    let id = terminal(
        &srv,
        json!({"bdk": bdk, "ksn_prefix": TDES_KSN, "serial": "PP-1001", "location": "Lane 3"}),
    )
    .await;
    assert!(id.starts_with("term_"), "{id}");
    let pan = test_pan(7101);
    let track = format!(";{pan}=30121011234567890?");
    let clear = {
        let mut t = track.clone().into_bytes();
        t.resize(t.len().div_ceil(8) * 8, 0);
        hex::encode(t)
    };
    let body = |k: &str, data: &str| json!({"ksn": k, "encrypted_data": data, "data": "track2", "cipher": "tdes-cbc"});
    let k1 = ksn(TDES_KSN, 1);
    let enc = pydukpt(&["data", TDES_BDK, &k1, &clear]);
    let r = send(&srv, &id, body(&k1, &enc)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["object"], "card");
    assert_eq!(r.body["last4"], &pan[12..]);
    assert_eq!(
        (r.body["exp_month"].as_i64(), r.body["exp_year"].as_i64()),
        (Some(12), Some(2030))
    );
    let card = r.body["id"].as_str().unwrap().to_owned();
    assert!(!r.text.contains(&pan) && !r.text.contains("1234567890"));
    // The same number through POST /v1/cards is the same card.
    assert_eq!(srv.tokenize(&pan).await["id"], card.as_str());

    // A retry with the request's Idempotency-Key replays the answer (the terminal's
    // transaction is not run twice); without one, the same transaction is a replay.
    let k4 = ksn(TDES_KSN, 4);
    let enc4 = pydukpt(&["data", TDES_BDK, &k4, &clear]);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = srv
            .client
            .post(format!("{}/v1/terminals/{id}/cards", srv.url))
            .bearer_auth(&srv.sk_test)
            .header("idempotency-key", "lane-3-tx-4")
            .json(&body(&k4, &enc4))
            .send()
            .await
            .unwrap();
        answers.push(Resp::from(r).await);
    }
    assert_eq!(answers[0].status, 200, "{}", answers[0].text);
    assert_eq!(answers[0].text, answers[1].text);
    assert_eq!(answers[1].body["id"], card.as_str());

    // The same transaction again, or an older one: replays.
    send(&srv, &id, body(&k1, &enc))
        .await
        .assert_error(409, "ksn_replayed");
    // A later one, as base64: the same card again (200).
    let k5 = ksn(TDES_KSN, 5);
    let enc5 = pydukpt(&["data", TDES_BDK, &k5, &clear]);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&enc5).unwrap());
    let r = send(&srv, &id, body(&k5, &b64)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], card.as_str());
    let k3 = ksn(TDES_KSN, 3);
    let enc3 = pydukpt(&["data", TDES_BDK, &k3, &clear]);
    send(&srv, &id, body(&k3, &enc3))
        .await
        .assert_error(409, "ksn_replayed");

    // What does not decipher to a track is one error, and moves nothing.
    let k6 = ksn(TDES_KSN, 6);
    let other_device = ksn("FFFF9876543211E00000", 6);
    let junk = pydukpt(&["data", TDES_BDK, &k6, &hex::encode([b'x'; 32])]);
    for (k, data) in [
        (k6.as_str(), enc5.as_str()),            // another transaction's key
        (other_device.as_str(), enc5.as_str()),  // another device's KSN
        (k6.as_str(), junk.as_str()),            // not a track
        (k6.as_str(), &enc5[..enc5.len() - 16]), // truncated a block
        (k6.as_str(), &enc5[..enc5.len() - 2]),  // not whole blocks
    ] {
        send(&srv, &id, body(k, data))
            .await
            .assert_error(422, "decryption_failed");
    }
    // Counters a terminal never uses; malformed KSNs and data.
    for k in [
        ksn(TDES_KSN, 0x7FF),
        ksn(TDES_KSN, 0),
        "FFFF9876543210E0".to_owned(),
        ksn(IKID, 9),
    ] {
        send(&srv, &id, body(&k, &enc5))
            .await
            .assert_error(400, "ksn_invalid");
    }
    send(&srv, &id, body(&k6, "not hex or base64!"))
        .await
        .assert_error(400, "invalid_parameter");
    let mut aes = body(&k6, &enc5);
    aes["cipher"] = json!("aes-cbc");
    send(&srv, &id, aes)
        .await
        .assert_error(400, "invalid_parameter");
    // Counter 6 is still free: the failures moved nothing.
    let enc6 = pydukpt(&["data", TDES_BDK, &k6, &clear]);
    assert_eq!(send(&srv, &id, body(&k6, &enc6)).await.status, 200);

    // The terminal as listed; disabled, it is refused.
    let r = srv.get(&format!("/v1/terminals/{id}"), &srv.sk_test).await;
    assert_eq!(r.body["transaction_counter"], 6);
    assert_eq!(r.body["scheme"], "tdes-dukpt");
    assert_eq!(r.body["ksn_prefix"], TDES_KSN);
    assert_eq!(r.body["status"], "active");
    let r = srv.get("/v1/terminals", &srv.sk_test).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = srv
        .post(
            &format!("/v1/terminals/{id}/disable"),
            &srv.sk_test,
            json!({}),
        )
        .await;
    assert_eq!(r.body["status"], "disabled", "{}", r.text);
    let k7 = ksn(TDES_KSN, 7);
    let enc7 = pydukpt(&["data", TDES_BDK, &k7, &clear]);
    send(&srv, &id, body(&k7, &enc7))
        .await
        .assert_error(409, "terminal_disabled");

    // Each refusal is in the audit log, naming the terminal, with its code.
    let log = srv.get("/v1/admin/audit?limit=1000", &srv.admin_key).await;
    let failed: Vec<&Value> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "terminal.card" && r["code"] == "decryption_failed")
        .collect();
    assert_eq!(failed.len(), 5, "{}", log.text);
    assert!(
        failed
            .iter()
            .all(|r| r["outcome"] == "failure" && r["resource"] == format!("terminal:{id}"))
    );
    assert!(!log.text.contains(&pan) && !log.text.contains("1011234567890"));

    // Nothing of the track, the PAN or the data in the logs or the database.
    let secrets = [
        pan.as_str(),
        track.as_str(),
        "1011234567890",
        clear.as_str(),
    ];
    assert_not_logged(&secrets);
    let data = srv.stop().await;
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &[&pan, &track, "1011234567890"]);
    }
}

#[tokio::test]
async fn aes_128_and_aes_256_terminals_decipher_under_the_published_data_keys() {
    let srv = TestServer::start().await;
    let b128 = hex::decode(AES_BDK).unwrap();
    let b256 = [b128.clone(), b128.clone()].concat();
    let bdk128 = import_key(&srv, "bdk", "aes128", &b128).await;
    let bdk256 = import_key(&srv, "bdk", "aes256", &b256).await;
    let t128 = terminal(
        &srv,
        json!({"bdk": bdk128, "initial_key_id": IKID, "serial": "A-1"}),
    )
    .await;
    // The same device identity under the same BDK is one terminal.
    let r = srv
        .post(
            "/v1/terminals",
            &srv.sk_test,
            json!({"bdk": bdk128, "initial_key_id": IKID.to_lowercase(), "serial": "A-2"}),
        )
        .await;
    r.assert_error(409, "terminal_exists");
    let t256 = terminal(
        &srv,
        json!({"bdk": bdk256, "initial_key_id": IKID, "serial": "A-3"}),
    )
    .await;
    let pan = test_pan(7102);
    let body = |k: String, data: String, kind: &str| json!({"ksn": k, "encrypted_data": data, "data": kind, "cipher": "aes-cbc", "key_usage": "data"});
    // X9.24-3-2017 supplement: the data-encryption keys of counters 1 and 2 (AES-128
    // BDK), and of counter 1 (AES-256 BDK, AES-256 working key).
    let track2 = format!("{pan}=29061011234567890");
    let enc = openssl_aes("A35C412EFD41FDB98B69797C02DCD08F", track2.as_bytes(), false);
    let r = send(&srv, &t128, body(ksn(IKID, 1), hex::encode(&enc), "track2")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["last4"], &pan[12..]);
    assert_eq!(r.body["exp_month"], 6);
    let card = r.body["id"].clone();
    // Track 1 with the name, zero padded.
    let track1 = format!("%B{pan}^LOVELACE/ADA^2906101000000725000000?");
    let mut padded = track1.clone().into_bytes();
    padded.resize(padded.len().div_ceil(16) * 16, 0);
    let enc = openssl_aes("D639514AA33AC43AD9229E433D6D4E5B", &padded, true);
    let r = send(&srv, &t128, body(ksn(IKID, 2), hex::encode(&enc), "track1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], card);
    // AES-256; EMV data (5A, 5F24) of another card.
    let other = test_pan(7103);
    let tlv = format!("5A08{other}5F2403310131");
    let enc = openssl_aes(
        "71EB36C9A6B7F801D1D1700C29741FC5A5C4E9B45D742DA7AF6992B8AA29AF58",
        &hex::decode(&tlv).unwrap(),
        false,
    );
    let r = send(
        &srv,
        &t256,
        body(ksn(IKID, 1), hex::encode(&enc), "emv_tlv"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["last4"], &other[12..]);
    assert_eq!(
        (r.body["exp_month"].as_i64(), r.body["exp_year"].as_i64()),
        (Some(1), Some(2031))
    );
    // The AES-128 terminal's counter 1 again: replay; 17 one bits: never used.
    send(&srv, &t128, body(ksn(IKID, 1), hex::encode(&enc), "track2"))
        .await
        .assert_error(409, "ksn_replayed");
    send(
        &srv,
        &t128,
        body(ksn(IKID, 0x1FFFF), hex::encode(&enc), "track2"),
    )
    .await
    .assert_error(400, "ksn_invalid");
    // Under the wrong key (AES-256 data to the AES-128 terminal): one error.
    send(
        &srv,
        &t128,
        body(ksn(IKID, 3), hex::encode(&enc), "emv_tlv"),
    )
    .await
    .assert_error(422, "decryption_failed");
    assert_not_logged(&[&pan, &other, &track2, &track1]);
}

#[tokio::test]
async fn terminals_are_registered_only_under_the_accounts_own_bdks() {
    let srv = TestServer::start().await;
    let tdes = import_key(&srv, "bdk", "tdes2", &hex::decode(TDES_BDK).unwrap()).await;
    let aes = import_key(&srv, "bdk", "aes128", &hex::decode(AES_BDK).unwrap()).await;
    let tdes3 = import_key(&srv, "bdk", "tdes3", &[7u8; 24]).await;
    let zpk = import_key(&srv, "zone_pin_key", "tdes2", &[9u8; 16]).await;
    for (body, status, code) in [
        (
            json!({"bdk": aes, "ksn_prefix": TDES_KSN, "serial": "x"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"bdk": tdes, "initial_key_id": IKID, "serial": "x"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"bdk": aes, "initial_key_id": IKID, "ksn_prefix": TDES_KSN, "serial": "x"}),
            400,
            "invalid_parameter",
        ),
        (json!({"bdk": aes, "serial": "x"}), 400, "invalid_parameter"),
        (
            json!({"bdk": aes, "initial_key_id": "12345678", "serial": "x"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"bdk": aes, "initial_key_id": IKID, "serial": " "}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"bdk": tdes3, "ksn_prefix": TDES_KSN, "serial": "x"}),
            400,
            "bdk_unsupported",
        ),
        (
            json!({"bdk": zpk.replace("zpk_", "bdk_"), "ksn_prefix": TDES_KSN, "serial": "x"}),
            400,
            "bdk_unknown",
        ),
        (
            json!({"bdk": "bdk_00000000000000000000000000000000", "ksn_prefix": TDES_KSN, "serial": "x"}),
            400,
            "bdk_unknown",
        ),
        (
            json!({"bdk": zpk, "ksn_prefix": TDES_KSN, "serial": "x"}),
            400,
            "bdk_unknown",
        ),
    ] {
        srv.post("/v1/terminals", &srv.sk_test, body)
            .await
            .assert_error(status, code);
    }
    // Another account's key cannot use this account's BDK, nor see its terminals.
    let acct = srv
        .post(
            "/v1/admin/accounts",
            &srv.admin_key,
            json!({"name": "Other"}),
        )
        .await;
    let acct = acct.body["id"].as_str().unwrap().to_owned();
    let sk = srv
        .post(
            &format!("/v1/admin/accounts/{acct}/api_keys"),
            &srv.admin_key,
            json!({"kind": "secret", "mode": "test"}),
        )
        .await;
    let sk = sk.body["secret"].as_str().unwrap().to_owned();
    srv.post(
        "/v1/terminals",
        &sk,
        json!({"bdk": aes, "initial_key_id": IKID, "serial": "x"}),
    )
    .await
    .assert_error(400, "bdk_unknown");
    let mine = terminal(
        &srv,
        json!({"bdk": aes, "initial_key_id": IKID, "serial": "x"}),
    )
    .await;
    srv.get(&format!("/v1/terminals/{mine}"), &sk)
        .await
        .assert_error(404, "not_found");
    let r = srv.get("/v1/terminals", &sk).await;
    assert_eq!(r.body["data"], json!([]));
    // A restricted key needs the scope.
    let rk = srv
        .post(
            &format!("/v1/admin/accounts/{}/api_keys", srv.account),
            &srv.admin_key,
            json!({"kind": "restricted", "mode": "test", "scopes": ["cards:read"]}),
        )
        .await;
    assert_eq!(rk.status, 201, "{}", rk.text);
    let rk = rk.body["secret"].as_str().unwrap();
    srv.post(
        "/v1/terminals",
        rk,
        json!({"bdk": aes, "initial_key_id": IKID, "serial": "x"}),
    )
    .await
    .assert_error(403, "permission_denied");
    srv.get(
        "/v1/terminals/term_00000000000000000000000000000000",
        &srv.sk_test,
    )
    .await
    .assert_error(404, "not_found");
}

/// The TDES zone PIN key the tests translate to.
const ZPK: &str = "F1E2D3C4B5A69788796A5B4C3D2E1F00";

/// A TDES-DUKPT terminal under the published BDK, and the zone PIN key [`ZPK`], imported.
async fn tdes_terminal_and_zpk(srv: &TestServer, serial: &str) -> (String, String) {
    let bdk = import_key(srv, "bdk", "tdes2", &hex::decode(TDES_BDK).unwrap()).await;
    let zpk = import_key(srv, "zone_pin_key", "tdes2", &hex::decode(ZPK).unwrap()).await;
    let body = json!({"bdk": bdk, "ksn_prefix": TDES_KSN, "serial": serial});
    (terminal(srv, body).await, zpk)
}

async fn card_id(srv: &TestServer, pan: &str) -> String {
    srv.tokenize(pan).await["id"].as_str().unwrap().to_owned()
}

async fn translate(srv: &TestServer, t: &str, body: Value) -> Resp {
    let path = format!("/v1/terminals/{t}/pin_translations");
    srv.post(&path, &srv.sk_test, body).await
}

/// The PIN a processor reads from a translated block, by pydukpt and pycryptodome
/// (format 0) or psec (format 4).
fn processor_reads(format: &str, zpk: &str, block: &str, pan: &str) -> String {
    pydukpt(&[&format!("{format}-decipher"), zpk, block, pan])
}

#[tokio::test]
async fn terminal_pin_blocks_are_translated_to_the_processors_zone_key() {
    let srv = TestServer::start().await;
    let aes_bdk = import_key(&srv, "bdk", "aes128", &hex::decode(AES_BDK).unwrap()).await;
    let (tdes, zpk) = tdes_terminal_and_zpk(&srv, "P-1").await;
    let zpk_hex = ZPK;
    let azpk_hex = "00112233445566778899AABBCCDDEEFF";
    let azpk = import_key(
        &srv,
        "zone_pin_key",
        "aes128",
        &hex::decode(azpk_hex).unwrap(),
    )
    .await;
    let aes = terminal(
        &srv,
        json!({"bdk": aes_bdk, "initial_key_id": IKID, "serial": "P-2"}),
    )
    .await;
    let pan = test_pan(7201);
    let (card, other) = (
        card_id(&srv, &pan).await,
        card_id(&srv, &test_pan(7202)).await,
    );

    // TDES-DUKPT terminal, format 0, to a TDES zone key: the processor reads the PIN.
    let k1 = ksn(TDES_KSN, 1);
    let block = pydukpt(&["pin", TDES_BDK, &k1, "4821", &pan]);
    let body = |k: &str, b: &str, card: &str, to: Value| json!({"ksn": k, "pin_block": b, "format": "iso0", "card": card, "to": to});
    let to0 = json!({"zone_key": zpk, "format": "iso0"});
    let r = translate(&srv, &tdes, body(&k1, &block, &card, to0.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["object"], "pin_translation");
    assert!(r.body["id"].as_str().unwrap().starts_with("pint_"));
    let out = r.body["pin_block"].as_str().unwrap();
    assert_eq!(out.len(), 16);
    assert_ne!(out, block);
    assert_eq!(processor_reads("iso0", zpk_hex, out, &pan), "4821");
    // Again: a replay. Another card's PAN, or a foreign block: one error, nothing moved.
    translate(&srv, &tdes, body(&k1, &block, &card, to0.clone()))
        .await
        .assert_error(409, "ksn_replayed");
    let k2 = ksn(TDES_KSN, 2);
    let block2 = pydukpt(&["pin", TDES_BDK, &k2, "4821", &pan]);
    translate(&srv, &tdes, body(&k2, &block2, &other, to0.clone()))
        .await
        .assert_error(422, "decryption_failed");
    translate(&srv, &tdes, body(&k2, &block, &card, to0.clone()))
        .await
        .assert_error(422, "decryption_failed");
    // The card-data counter is its own: counter 2 of the same transaction still reads.
    // To an AES zone key, format 4, from the same counter 2 (unused by the failures).
    let to4 = json!({"zone_key": azpk, "format": "iso4"});
    let r = translate(&srv, &tdes, body(&k2, &block2, &card, to4.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let out4 = r.body["pin_block"].as_str().unwrap();
    assert_eq!(out4.len(), 32);
    assert_eq!(processor_reads("iso4", azpk_hex, out4, &pan), "4821");
    let got = srv
        .get(&format!("/v1/terminals/{tdes}"), &srv.sk_test)
        .await;
    assert_eq!(got.body["pin_transaction_counter"], 2);
    assert_eq!(got.body["transaction_counter"], 0);

    // AES-DUKPT terminal, format 4 under the published PIN key of counter 1 (psec).
    let pin_key = "AF8CB133A78F8DC2D1359F18527593FB";
    let ablock = pydukpt(&["iso4-encipher", pin_key, "902211", &pan]);
    let abody = |k: String, to: Value| json!({"ksn": k, "pin_block": ablock, "format": "iso4", "card": card, "to": to});
    let r = translate(&srv, &aes, abody(ksn(IKID, 1), to0.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let out = r.body["pin_block"].as_str().unwrap();
    assert_eq!(processor_reads("iso0", zpk_hex, out, &pan), "902211");

    // Formats that are not the terminal's or the key's; unknown keys and cards.
    let mut wrong = abody(ksn(IKID, 2), to0.clone());
    wrong["format"] = json!("iso0");
    translate(&srv, &aes, wrong)
        .await
        .assert_error(400, "invalid_parameter");
    let wrong = abody(ksn(IKID, 2), json!({"zone_key": zpk, "format": "iso4"}));
    translate(&srv, &aes, wrong)
        .await
        .assert_error(400, "invalid_parameter");
    let wrong = abody(
        ksn(IKID, 2),
        json!({"zone_key": "zpk_00000000000000000000000000000000", "format": "iso0"}),
    );
    translate(&srv, &aes, wrong)
        .await
        .assert_error(400, "zone_key_unknown");
    let mut wrong = abody(ksn(IKID, 2), to0.clone());
    wrong["card"] = json!("card_00000000000000000000000000000000");
    translate(&srv, &aes, wrong)
        .await
        .assert_error(404, "not_found");
    let mut wrong = abody(ksn(IKID, 2), to0.clone());
    wrong["pin_block"] = json!(&block);
    translate(&srv, &aes, wrong)
        .await
        .assert_error(400, "invalid_parameter");

    // Never kept for an idempotent replay: the answer carries a PIN block.
    let r = srv
        .client
        .post(format!("{}/v1/terminals/{aes}/pin_translations", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("idempotency-key", "pin-1")
        .json(&abody(ksn(IKID, 2), to0.clone()))
        .send()
        .await
        .unwrap();
    Resp::from(r)
        .await
        .assert_error(400, "idempotency_not_supported");

    assert_not_logged(&[&pan]);
    let audit = srv.get("/v1/admin/audit?limit=1000", &srv.admin_key).await;
    assert!(audit.text.contains("terminal.pin_translation") && !audit.text.contains(&pan));
    let logs = captured_logs();
    for secret in ["4821", "902211"] {
        for form in [format!("\"pin\":\"{secret}\""), format!("pin={secret}")] {
            assert!(!logs.contains(&form));
        }
    }
    // No PAN or PIN block of the terminal in the database or its WAL.
    let data = srv.stop().await;
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &[&pan, &block, &block2, &ablock]);
    }
}

#[tokio::test]
async fn a_translated_pin_block_reaches_the_processor_once_through_the_relay() {
    let echo = crate::echo::Echo::start().await;
    let srv = crate::relay_send::setup(&echo).await;
    let (term, zpk) = tdes_terminal_and_zpk(&srv, "R-1").await;
    let zpk_hex = ZPK;
    let pan = test_pan(7301);
    let (card, other) = (
        card_id(&srv, &pan).await,
        card_id(&srv, &test_pan(7302)).await,
    );
    let mut pints = Vec::new();
    for counter in [1, 2, 3] {
        let k = ksn(TDES_KSN, counter);
        let block = pydukpt(&["pin", TDES_BDK, &k, "5512", &pan]);
        let r = translate(
            &srv,
            &term,
            json!({"ksn": k, "pin_block": block, "format": "iso0", "card": card,
                "to": {"zone_key": zpk, "format": "iso0"}}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        pints.push((
            r.body["id"].as_str().unwrap().to_owned(),
            r.body["pin_block"].as_str().unwrap().to_owned(),
        ));
    }
    let relay = |card: &str, pint: &str| {
        json!({"destination": format!("https://127.0.0.1:{}/v1/authorize", echo.port()),
            "body": {"pan": format!("{{{{{card}:number}}}}"),
                     "pin_block": format!("{{{{{card}:pin_block:{pint}}}}}")}})
    };
    let (pint, block) = &pints[0];
    let r = srv
        .post("/v1/relay", &srv.sk_test, relay(&card, pint))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sent: Value = serde_json::from_str(&echo.received()[0].body).unwrap();
    assert_eq!(sent["pin_block"], block.as_str());
    assert_eq!(
        processor_reads("iso0", zpk_hex, sent["pin_block"].as_str().unwrap(), &pan),
        "5512"
    );
    // The echo comes back without the block or the number.
    assert!(
        !r.text.contains(block.as_str()) && !r.text.contains(&pan),
        "{}",
        r.text
    );
    // Spent; named with another card; after 60 seconds: refused, nothing sent.
    srv.post("/v1/relay", &srv.sk_test, relay(&card, pint))
        .await
        .assert_error(409, "pin_block_unavailable");
    let (pint2, _) = &pints[1];
    srv.post("/v1/relay", &srv.sk_test, relay(&other, pint2))
        .await
        .assert_error(409, "pin_block_unavailable");
    srv.clock.advance(std::time::Duration::from_millis(60_001));
    let (pint3, _) = &pints[2];
    srv.post("/v1/relay", &srv.sk_test, relay(&card, pint3))
        .await
        .assert_error(409, "pin_block_unavailable");
    assert_eq!(echo.received().len(), 1);
    srv.post("/v1/relay", &srv.sk_test, relay(&card, "pint_12"))
        .await
        .assert_error(400, "relay_expression_invalid");
}

/// With the `pkcs11` provider, an AES-128 BDK and the zone PIN keys go onto the token:
/// the DUKPT derivations, the card data's decipherment and the PIN blocks' encipherment
/// run in the HSM, and the database holds only a marker. AES-256 and TDES BDKs cannot
/// derive there through PKCS#11 and stay wrapped by the root key.
#[tokio::test]
async fn with_an_hsm_dukpt_and_zone_pin_keys_run_on_the_token() {
    use strongroom_store::{KeyImportStore, Store};
    let cfg = crate::custody::softhsm_token();
    let token = cfg.token_label.clone();
    let data = std::sync::Arc::new(Data::new());
    let srv = crate::custody::pkcs11_server(&cfg, &data).await;
    let b128 = hex::decode(AES_BDK).unwrap();
    let bdk = import_key(&srv, "bdk", "aes128", &b128).await;
    let bdk256 = import_key(&srv, "bdk", "aes256", &[b128.clone(), b128].concat()).await;
    let (tdes, zpk) = tdes_terminal_and_zpk(&srv, "H-1").await;
    let azpk_hex = "00112233445566778899AABBCCDDEEFF";
    let azpk = import_key(
        &srv,
        "zone_pin_key",
        "aes128",
        &hex::decode(azpk_hex).unwrap(),
    )
    .await;
    let aes = terminal(
        &srv,
        json!({"bdk": bdk, "initial_key_id": IKID, "serial": "H-2"}),
    )
    .await;
    let t256 = terminal(
        &srv,
        json!({"bdk": bdk256, "initial_key_id": IKID, "serial": "H-3"}),
    )
    .await;

    // Track 2 under the published data key of counter 1: the card, once.
    let pan = test_pan(7301);
    let track2 = format!("{pan}=29061011234567890");
    let enc = openssl_aes("A35C412EFD41FDB98B69797C02DCD08F", track2.as_bytes(), false);
    let body = |k: String, t: &str| json!({"ksn": k, "encrypted_data": hex::encode(&enc), "data": t, "cipher": "aes-cbc", "key_usage": "data"});
    let r = send(&srv, &aes, body(ksn(IKID, 1), "track2")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["last4"], &pan[12..]);
    let card = r.body["id"].as_str().unwrap().to_owned();
    send(&srv, &aes, body(ksn(IKID, 1), "track2"))
        .await
        .assert_error(409, "ksn_replayed");
    // Counter 2's key is another: the same bytes do not decipher.
    send(&srv, &aes, body(ksn(IKID, 2), "track2"))
        .await
        .assert_error(422, "decryption_failed");
    // The AES-256 terminal derives in memory, as without an HSM.
    let enc256 = openssl_aes(
        "71EB36C9A6B7F801D1D1700C29741FC5A5C4E9B45D742DA7AF6992B8AA29AF58",
        track2.as_bytes(),
        false,
    );
    let r = send(
        &srv,
        &t256,
        json!({"ksn": ksn(IKID, 1), "encrypted_data": hex::encode(&enc256), "data": "track2", "cipher": "aes-cbc", "key_usage": "data"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], card.as_str());

    // The AES terminal's format 4 block (the published PIN key of counter 1) to the TDES
    // zone key on the token, and the TDES terminal's format 0 block to the AES one: the
    // processor reads each PIN with independent code.
    let ablock = pydukpt(&[
        "iso4-encipher",
        "AF8CB133A78F8DC2D1359F18527593FB",
        "902211",
        &pan,
    ]);
    let r = translate(
        &srv,
        &aes,
        json!({"ksn": ksn(IKID, 1), "pin_block": ablock, "format": "iso4", "card": card,
            "to": {"zone_key": zpk, "format": "iso0"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let out = r.body["pin_block"].as_str().unwrap();
    assert_eq!(processor_reads("iso0", ZPK, out, &pan), "902211");
    let k1 = ksn(TDES_KSN, 1);
    let block = pydukpt(&["pin", TDES_BDK, &k1, "4821", &pan]);
    let r = translate(
        &srv,
        &tdes,
        json!({"ksn": k1, "pin_block": block, "format": "iso0", "card": card,
            "to": {"zone_key": azpk, "format": "iso4"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let out = r.body["pin_block"].as_str().unwrap();
    assert_eq!(processor_reads("iso4", azpk_hex, out, &pan), "4821");
    // A wrong PIN block under the HSM's key is the same one error.
    let wrong = pydukpt(&["iso4-encipher", azpk_hex, "902211", &pan]);
    translate(
        &srv,
        &aes,
        json!({"ksn": ksn(IKID, 2), "pin_block": wrong, "format": "iso4", "card": card,
            "to": {"zone_key": zpk, "format": "iso0"}}),
    )
    .await
    .assert_error(422, "decryption_failed");

    // The inventory says where each key is; the token holds those on it, sensitive and
    // not extractable, and OpenSC computes the AES zone key's check value there.
    let inventory = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let keys = inventory.body["data"].as_array().unwrap();
    let tdes_bdk = srv
        .get(&format!("/v1/terminals/{tdes}"), &srv.sk_test)
        .await
        .body["bdk"]
        .as_str()
        .unwrap()
        .to_owned();
    for (id, provider) in [
        (&bdk, "pkcs11"),
        (&zpk, "pkcs11"),
        (&azpk, "pkcs11"),
        (&bdk256, "wrapped"),
        (&tdes_bdk, "wrapped"),
    ] {
        let k = crate::custody::find_in(keys, "imported_key", id);
        assert_eq!(k["provider"], provider, "{k}");
    }
    let objects = crate::custody::token_objects(&token);
    for id in [&bdk, &zpk, &azpk] {
        let label = format!("label:      strongroom-root/imported/{id}\n");
        let o = objects.iter().find(|o| o.contains(&label)).expect(id);
        // Not extractable (pkcs11-tool prints `extractable` only for a key that is);
        // never `never extractable`, which PKCS#11 keeps for keys made on the token.
        assert!(o.contains("sensitive") && !o.contains("extractable"), "{o}");
    }
    assert!(!objects.concat().contains(&bdk256));
    let kcv = crate::custody::hsm_ecb(
        &token,
        &format!("strongroom-root/imported/{azpk}"),
        "--encrypt",
        &[0u8; 16],
    );
    let k = crate::custody::find_in(keys, "imported_key", &azpk);
    assert_eq!(k["kcv"], hex::encode_upper(&kcv[..3]).as_str());
    assert_not_logged(&[&pan, &track2]);
    let data = srv.stop().await;

    // The database holds a marker for the keys on the token, and no PAN or PIN block.
    let store = Store::connect(&data.store).await.unwrap();
    for (id, on_token) in [(&bdk, true), (&azpk, true), (&bdk256, false)] {
        let rec = store.imported_key(id).await.unwrap().unwrap();
        let marker = rec.wrapped == strongroom_server::custody::pkcs11::HSM_KEY;
        assert_eq!(marker, on_token, "{id}");
    }
    store.close().await;
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &[&pan, &block, &ablock]);
    }
}
