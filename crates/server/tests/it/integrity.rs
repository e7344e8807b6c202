//! Device integrity: Play Integrity tokens built by an independent JOSE library
//! (jwcrypto, tests/interop/integrity/play_token.py) the way Google Play builds them earn
//! an attestation; each field changed in turn is refused with its own code; hashes are
//! single-use and bound to their caller and application; step-ups that need an
//! attestation are refused without one.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;
use strongroom_core::Clock;

const APP: &str = "com.example.wallet";
const OTHER_APP: &str = "com.example.other";
/// The signing certificate's SHA-256 as the Play Console shows it.
const CERT_HEX: &str = "6A:6A:14:74:B5:CB:BB:2B:1A:A5:7E:0B:C3:7A:C2:11:6A:6A:14:74:B5:CB:BB:2B:1A:A5:7E:0B:C3:7A:C2:11";

fn script(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop/integrity/play_token.py");
    let mut child = std::process::Command::new("python3")
        .arg(path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "play_token.py failed (pip install -r tests/interop/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An app's keys as the Play Console gives them, and the signing key (PEM, in a file).
struct Keys {
    decryption: String,
    verification: String,
    pem: tempfile::NamedTempFile,
}

fn keys() -> Keys {
    let k: Value = serde_json::from_str(&script(&["keys"], None)).unwrap();
    let pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pem.path(), k["signing_key_pem"].as_str().unwrap()).unwrap();
    Keys {
        decryption: k["decryption_key"].as_str().unwrap().to_owned(),
        verification: k["verification_key"].as_str().unwrap().to_owned(),
        pem,
    }
}

/// A token over `payload`, encrypted under `dk` and signed with `signer`'s key.
fn token(payload: &Value, dk: &str, signer: &Keys) -> String {
    let pem = signer.pem.path().to_str().unwrap();
    script(&["token", dk, pem], Some(&payload.to_string()))
}

/// A verdict as Play writes it for a genuine app on a genuine device.
fn verdict(srv: &TestServer, hash: &str) -> Value {
    use base64::Engine as _;
    let cert = hex::decode(CERT_HEX.replace(':', "")).unwrap();
    let now = srv.clock.now_ms();
    json!({
        "requestDetails": {"requestPackageName": APP, "requestHash": hash,
            "timestampMillis": now.to_string()},
        "appIntegrity": {"appRecognitionVerdict": "PLAY_RECOGNIZED", "packageName": APP,
            "certificateSha256Digest": [base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cert)],
            "versionCode": "42"},
        "deviceIntegrity": {"deviceRecognitionVerdict": ["MEETS_DEVICE_INTEGRITY"]},
        "accountDetails": {"appLicensingVerdict": "LICENSED"}
    })
}

async fn hash_for(srv: &TestServer, key: &str, app: &str) -> Resp {
    let r = srv
        .client
        .get(format!("{}/v1/integrity/app", srv.url))
        .bearer_auth(key)
        .header("applicationid", app)
        .send()
        .await
        .unwrap();
    Resp::from(r).await
}

async fn hash(srv: &TestServer, key: &str) -> String {
    let r = hash_for(srv, key, APP).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["hash"].as_str().unwrap().to_owned()
}

async fn attest(srv: &TestServer, key: &str, hash: &str, app: &str, token: &str) -> Resp {
    srv.post(
        "/v1/integrity/app",
        key,
        json!({"hash": hash, "applicationId": app, "token": token}),
    )
    .await
}

async fn register(srv: &TestServer, app: &str, keys: &Keys) -> Resp {
    srv.post(
        &format!("/v1/admin/accounts/{}/integrity_apps", srv.account),
        &srv.admin_key,
        json!({"application_id": app, "decryption_key": keys.decryption,
            "verification_key": keys.verification, "allowed_certificate_sha256": [CERT_HEX],
            "min_version_code": 42, "require_licensed": true}),
    )
    .await
}

#[tokio::test]
async fn play_integrity_tokens_earn_attestations_and_each_bad_field_has_its_code() {
    let srv = TestServer::start().await;
    srv.clock.freeze();
    let k = keys();
    let r = register(&srv, APP, &k).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["id"].as_str().unwrap().starts_with("iapp_"));
    assert_eq!(
        r.body["required_device_verdicts"],
        json!(["MEETS_DEVICE_INTEGRITY"])
    );
    assert_eq!(
        r.body["allowed_certificate_sha256"][0],
        CERT_HEX.replace(':', "").to_lowercase().as_str()
    );
    assert!(!r.text.contains(&k.decryption) && !r.text.contains(&k.verification));
    register(&srv, APP, &k)
        .await
        .assert_error(409, "integrity_app_exists");
    // Keys that are not an AES-256 key or a P-256 public key.
    let bad = Keys {
        decryption: "AAAA".into(),
        ..keys()
    };
    register(&srv, OTHER_APP, &bad)
        .await
        .assert_error(400, "invalid_parameter");
    let bad = Keys {
        verification: k.decryption.clone(),
        ..keys()
    };
    register(&srv, OTHER_APP, &bad)
        .await
        .assert_error(400, "invalid_parameter");

    // The flow: a hash, a token over it, an attestation.
    let key = &srv.sk_test;
    let h = hash(&srv, key).await;
    assert_eq!(h.len(), 43);
    let good = token(&verdict(&srv, &h), &k.decryption, &k);
    let r = attest(&srv, key, &h, APP, &good).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["attestation"].as_str().unwrap().starts_with("att_"));
    assert_eq!(r.body["application_id"], APP);
    assert_eq!(r.body["reusable"], false);
    // The hash is spent.
    attest(&srv, key, &h, APP, &good)
        .await
        .assert_error(400, "integrity_hash_invalid");

    // Each field changed in turn, each time over a fresh hash.
    let other_signer = keys();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, u16, &str)> = vec![
        (
            "package",
            Box::new(|v| v["requestDetails"]["requestPackageName"] = json!(OTHER_APP)),
            400,
            "integrity_application_invalid",
        ),
        (
            "hash",
            Box::new(|v| v["requestDetails"]["requestHash"] = json!("not-the-hash")),
            400,
            "integrity_hash_invalid",
        ),
        (
            "stale",
            Box::new(|v| {
                let t: i64 = v["requestDetails"]["timestampMillis"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                v["requestDetails"]["timestampMillis"] = json!((t - 121_000).to_string());
            }),
            400,
            "integrity_token_expired",
        ),
        (
            "unrecognized",
            Box::new(|v| {
                v["appIntegrity"]["appRecognitionVerdict"] = json!("UNRECOGNIZED_VERSION")
            }),
            403,
            "integrity_app_unrecognized",
        ),
        (
            "certificate",
            Box::new(|v| v["appIntegrity"]["certificateSha256Digest"] = json!(["q".repeat(43)])),
            403,
            "integrity_app_unrecognized",
        ),
        (
            "version",
            Box::new(|v| v["appIntegrity"]["versionCode"] = json!("41")),
            403,
            "integrity_app_version",
        ),
        (
            "device",
            Box::new(|v| {
                v["deviceIntegrity"]["deviceRecognitionVerdict"] = json!(["MEETS_BASIC_INTEGRITY"])
            }),
            403,
            "integrity_device",
        ),
        (
            "licensing",
            Box::new(|v| v["accountDetails"]["appLicensingVerdict"] = json!("UNLICENSED")),
            403,
            "integrity_licensing",
        ),
    ];
    let mut sent = vec![good.clone()];
    for (what, change, status, code) in cases {
        let h = hash(&srv, key).await;
        let mut v = verdict(&srv, &h);
        change(&mut v);
        let t = token(&v, &k.decryption, &k);
        let r = attest(&srv, key, &h, APP, &t).await;
        assert_eq!(
            (r.status.as_u16(), r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.text
        );
        sent.push(t);
    }
    // Signed by another key, encrypted under another key, truncated.
    let h = hash(&srv, key).await;
    let t = token(&verdict(&srv, &h), &k.decryption, &other_signer);
    attest(&srv, key, &h, APP, &t)
        .await
        .assert_error(400, "integrity_token_invalid");
    let h = hash(&srv, key).await;
    let t = token(&verdict(&srv, &h), &other_signer.decryption, &k);
    attest(&srv, key, &h, APP, &t)
        .await
        .assert_error(400, "integrity_token_invalid");
    let h = hash(&srv, key).await;
    let t = token(&verdict(&srv, &h), &k.decryption, &k);
    attest(&srv, key, &h, APP, &t[..t.len() - 20])
        .await
        .assert_error(400, "integrity_token_invalid");
    sent.push(t);

    // A hash is refused to another caller (and stays its owner's), for another
    // application, and after 5 minutes.
    let reg = register(&srv, OTHER_APP, &keys()).await;
    assert_eq!(reg.status, 201, "{}", reg.text);
    let h = hash(&srv, key).await;
    let t = token(&verdict(&srv, &h), &k.decryption, &k);
    attest(&srv, &srv.rk_reveal, &h, APP, &t)
        .await
        .assert_error(400, "integrity_hash_invalid");
    attest(&srv, key, &h, OTHER_APP, &t)
        .await
        .assert_error(400, "integrity_hash_invalid");
    assert_eq!(attest(&srv, key, &h, APP, &t).await.status, 201);
    let h = hash(&srv, key).await;
    srv.clock.advance(Duration::from_secs(301));
    let t = token(&verdict(&srv, &h), &k.decryption, &k);
    attest(&srv, key, &h, APP, &t)
        .await
        .assert_error(400, "integrity_hash_invalid");
    // Unknown applications.
    hash_for(&srv, key, "com.example.unknown")
        .await
        .assert_error(400, "integrity_application_invalid");
    let r = srv.get("/v1/integrity/app", key).await;
    r.assert_error(400, "integrity_application_invalid");

    // The audit log has each verdict, never a token.
    let audit = srv.get("/v1/admin/audit?limit=1000", &srv.admin_key).await;
    assert!(audit.text.contains("integrity.verdict"), "{}", audit.text);
    assert!(
        audit
            .text
            .contains("integrity_device:PLAY_RECOGNIZED+MEETS_BASIC_INTEGRITY+LICENSED")
    );
    let secrets: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert!(secrets.iter().all(|t| !audit.text.contains(t)));
    assert_not_logged(&secrets);
    assert_not_logged(&[&k.decryption]);
    let data = srv.stop().await;
    for f in data.sqlite_files() {
        assert_not_in_file(&f, &[&good, &k.decryption]);
    }
}

/// Reveals `card` with `key`, sending `attestation` if given.
async fn reveal(srv: &TestServer, key: &str, card: &str, attestation: Option<&str>) -> Resp {
    let otp = srv
        .post(
            "/v1/otp",
            key,
            json!({"purpose": "card.reveal", "card": card}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    let mut req = srv
        .client
        .post(format!("{}/v1/cards/{card}/reveal", srv.url))
        .bearer_auth(key)
        .json(&json!({"otp": otp.body["id"], "code": otp.body["test_code"]}));
    if let Some(a) = attestation {
        req = req.header("strongroom-attestation", a);
    }
    Resp::from(req.send().await.unwrap()).await
}

#[tokio::test]
async fn a_step_up_that_requires_attestation_takes_a_fresh_one_of_its_caller() {
    let srv = TestServer::start().await;
    let k = keys();
    assert_eq!(register(&srv, APP, &k).await.status, 201);
    let pan = test_pan(8801);
    let card = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
    let account = format!("/v1/admin/accounts/{}", srv.account);
    // Unknown step-ups are refused; the account shows the list in force.
    srv.patch(
        &account,
        &srv.admin_key,
        json!({"require_attestation": ["card.peek"]}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    let r = srv
        .patch(
            &account,
            &srv.admin_key,
            json!({"require_attestation": ["card.reveal", "card.reveal"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["require_attestation"], json!(["card.reveal"]));
    let got = srv.get(&account, &srv.admin_key).await;
    assert_eq!(got.body["require_attestation"], json!(["card.reveal"]));

    let rk = srv.rk_reveal.clone();
    reveal(&srv, &rk, &card, None)
        .await
        .assert_error(403, "attestation_required");
    let earn = |key: String| {
        let srv = &srv;
        let k = &k;
        async move {
            let h = hash(srv, &key).await;
            let t = token(&verdict(srv, &h), &k.decryption, k);
            let r = attest(srv, &key, &h, APP, &t).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["attestation"].as_str().unwrap().to_owned()
        }
    };
    // Another caller's attestation, or a malformed one, does not count.
    let theirs = earn(srv.sk_test.clone()).await;
    reveal(&srv, &rk, &card, Some(&theirs))
        .await
        .assert_error(403, "attestation_invalid");
    reveal(&srv, &rk, &card, Some("att_nope"))
        .await
        .assert_error(403, "attestation_invalid");
    // The caller's own: once.
    let mine = earn(rk.clone()).await;
    let r = reveal(&srv, &rk, &card, Some(&mine)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["number"], pan.as_str());
    reveal(&srv, &rk, &card, Some(&mine))
        .await
        .assert_error(403, "attestation_invalid");
    // Expired after its 10 minutes.
    let late = earn(rk.clone()).await;
    srv.clock.advance(Duration::from_secs(601));
    reveal(&srv, &rk, &card, Some(&late))
        .await
        .assert_error(403, "attestation_invalid");
    // Reusable attestations, where the application allows them, last their lifetime.
    let apps = srv
        .get(&format!("{account}/integrity_apps"), &srv.admin_key)
        .await;
    let app_id = apps.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = srv
        .patch(
            &format!("{account}/integrity_apps/{app_id}"),
            &srv.admin_key,
            json!({"reusable_attestations": true, "attestation_ttl_s": 60}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let again = earn(rk.clone()).await;
    for _ in 0..2 {
        assert_eq!(reveal(&srv, &rk, &card, Some(&again)).await.status, 200);
    }
    // Other step-ups stay free until named; with the list emptied, reveal is too.
    let r = srv
        .patch(&account, &srv.admin_key, json!({"require_attestation": []}))
        .await;
    assert_eq!(r.body["require_attestation"], json!([]));
    assert_eq!(reveal(&srv, &rk, &card, None).await.status, 200);
    // OTP creation named instead: the OTP of a reveal needs one now.
    let r = srv
        .patch(
            &account,
            &srv.admin_key,
            json!({"require_attestation": ["otp.create"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let otp = json!({"purpose": "card.reveal", "card": card});
    srv.post("/v1/otp", &rk, otp.clone())
        .await
        .assert_error(403, "attestation_required");
    let fresh = earn(rk.clone()).await;
    let r = srv
        .client
        .post(format!("{}/v1/otp", srv.url))
        .bearer_auth(&rk)
        .header("strongroom-attestation", &fresh)
        .json(&otp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Removing the application.
    let r = srv
        .delete(
            &format!("{account}/integrity_apps/{app_id}"),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    hash_for(&srv, &rk, APP)
        .await
        .assert_error(400, "integrity_application_invalid");
}
