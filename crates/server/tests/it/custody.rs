//! Key custody: a Shamir vault starts sealed, opens with k of n shares, seals again at
//! once; a root key that does not match the vault's record is refused at start.

use crate::harness::{self, Data, Resp, TestClock, TestServer, assert_not_logged, test_pan};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use strongroom_core::Clock;
use strongroom_crypto::RootKey;
use strongroom_crypto::shamir;
use strongroom_server::{Custody, Provider, StartError};
use strongroom_store::{CustodyStore, Store};

/// A fresh vault initialised with `n` shares of which `k` open it.
pub(crate) async fn shamir_vault(n: u8, k: u8) -> (Arc<Data>, Vec<String>) {
    let data = Arc::new(Data::new());
    let store = Store::connect(&data.store).await.unwrap();
    let now = strongroom_core::SystemClock.now_ms();
    let shares = strongroom_server::custody::init_shamir(&store, now, n, k)
        .await
        .unwrap();
    // A second init of the same vault is refused: its shares stay the only ones.
    let again = strongroom_server::custody::init_shamir(&store, now, n, k).await;
    assert!(again.is_err());
    let record = store.root_key().await.unwrap().unwrap();
    assert_eq!(record.provider, "shamir");
    assert_eq!(
        (record.threshold, record.shares),
        (Some(k.into()), Some(n.into()))
    );
    assert_eq!(record.share_digests.len(), usize::from(n));
    store.close().await;
    (data, shares.iter().map(|s| s.text().to_string()).collect())
}

async fn sealed_on(data: &Arc<Data>, clock: &TestClock) -> strongroom_server::Running {
    harness::boot(data, |_| {}, Custody::Sealed, clock)
        .await
        .unwrap()
}

/// A request to a server that may be sealed (no provisioned keys needed).
async fn raw(
    url: &str,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut req = harness::client().request(method, format!("{url}{path}"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    Resp::from(req.send().await.unwrap()).await
}

pub(crate) async fn unseal(url: &str, share: &str) -> Resp {
    raw(
        url,
        Method::POST,
        "/v1/sys/unseal",
        None,
        Some(json!({"share": share})),
    )
    .await
}

/// Every route but `/healthz` and `/v1/sys/*` answers `503 sealed`.
async fn assert_sealed(url: &str, key: Option<&str>) {
    for (method, path) in [
        (Method::GET, "/v1/cards"),
        (Method::POST, "/v1/cards"),
        (Method::GET, "/v1/admin/audit"),
        (Method::GET, "/readyz"),
        (Method::GET, "/v1/openapi.json"),
        (Method::GET, "/nothing/here"),
    ] {
        let r = raw(url, method, path, key, None).await;
        r.assert_error(503, "sealed");
        assert!(r.headers.get("retry-after").is_some());
        assert!(r.headers.get("request-id").is_some());
    }
    let health = raw(url, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    let status = raw(url, Method::GET, "/v1/sys/seal_status", None, None).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["sealed"], true);
    assert_eq!(status.body["provider"], "shamir");
    // Progress is told only to whoever hands in a share.
    assert!(status.body.get("progress").is_none());
}

#[tokio::test]
async fn a_shamir_vault_starts_sealed_and_opens_with_three_of_five_shares() {
    let (data, shares) = shamir_vault(5, 3).await;
    let clock = TestClock::default();
    let running = sealed_on(&data, &clock).await;
    assert!(running.state().is_none());
    let url = format!("https://127.0.0.1:{}", running.local_addr.port());
    assert_sealed(&url, Some("sk_test_whatever")).await;
    let status = raw(&url, Method::GET, "/v1/sys/seal_status", None, None).await;
    assert_eq!(
        (
            status.body["threshold"].clone(),
            status.body["shares"].clone()
        ),
        (json!(3), json!(5))
    );

    // One share in: progress for its custodian, still sealed.
    let r = unseal(&url, &shares[0]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["sealed"].clone(), r.body["progress"].clone()),
        (json!(true), json!(1))
    );
    // The same share again, a corrupted one, a malformed one and another vault's: refused,
    // without a word of progress.
    unseal(&url, &shares[0])
        .await
        .assert_error(409, "share_duplicate");
    let mut corrupted = shares[1].clone().into_bytes();
    let at = corrupted.len() - 3;
    corrupted[at] = if corrupted[at] == b'A' { b'B' } else { b'A' };
    let corrupted = String::from_utf8(corrupted).unwrap();
    let other = shamir::split(&[7u8; 32], 5, 3)
        .unwrap()
        .remove(1)
        .text()
        .to_string();
    for bad in [
        corrupted.as_str(),
        "srshare1_short",
        "not a share",
        other.as_str(),
    ] {
        let r = unseal(&url, bad).await;
        r.assert_error(400, "share_invalid");
        assert!(r.body.get("progress").is_none() && !r.text.contains("progress"));
    }
    raw(
        &url,
        Method::POST,
        "/v1/sys/unseal",
        None,
        Some(json!({"share": shares[1], "x": 1})),
    )
    .await
    .assert_error(400, "unknown_field");
    // Two shares do not open it.
    let r = unseal(&url, &shares[3]).await;
    assert_eq!(
        (r.body["sealed"].clone(), r.body["progress"].clone()),
        (json!(true), json!(2))
    );
    assert_sealed(&url, None).await;
    // The third does.
    let r = unseal(&url, &shares[4]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sealed"], false);
    assert!(running.state().is_some());

    let srv = TestServer::provision(running, clock, data).await;
    let pan = test_pan(3401);
    let card = srv.tokenize(&pan).await;
    let id = card["id"].as_str().unwrap().to_owned();
    let shown = srv.reveal(&srv.rk_reveal, &id).await;
    assert_eq!(shown.body["number"], pan.as_str());
    let r = srv.get("/v1/sys/seal_status", &srv.sk_test).await;
    assert_eq!(r.body["sealed"], false);
    // An open vault takes a share without complaint and stays open.
    let r = unseal(&srv.url, &shares[2]).await;
    assert_eq!(
        (r.status, r.body["sealed"].clone()),
        (StatusCode::OK, json!(false))
    );

    // Sealing takes an admin key, and closes the vault at once.
    srv.post("/v1/sys/seal", &srv.sk_test, json!({}))
        .await
        .assert_error(403, "permission_denied");
    let gone = srv.running.state().unwrap().watch_drop();
    let r = srv
        .call(Method::POST, "/v1/sys/seal", Some(&srv.admin_key), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sealed"], true);
    assert!(srv.running.state().is_none());
    assert_sealed(&srv.url, Some(&srv.sk_test)).await;
    // The open state, with every key in it, leaves memory: nothing keeps it.
    harness::eventually("the sealed state to be dropped", || async {
        gone.is_gone()
    })
    .await;

    // Three other shares open it again, with every card as it was.
    for s in [&shares[1], &shares[2], &shares[0]] {
        assert_eq!(unseal(&srv.url, s).await.status, StatusCode::OK);
    }
    assert_eq!(
        srv.reveal(&srv.rk_reveal, &id).await.body["number"],
        pan.as_str()
    );

    // After a restart it is sealed again, and cards made before reveal once it opens.
    let (sk, rk, url_before) = (srv.sk_test.clone(), srv.rk_reveal.clone(), srv.url.clone());
    let data = srv.stop().await;
    let clock = TestClock::default();
    let running = sealed_on(&data, &clock).await;
    let url = format!("https://127.0.0.1:{}", running.local_addr.port());
    assert_ne!(url, url_before);
    assert_sealed(&url, Some(&sk)).await;
    for s in &shares[2..5] {
        assert_eq!(unseal(&url, s).await.status, StatusCode::OK);
    }
    let r = raw(
        &url,
        Method::GET,
        &format!("/v1/cards/{id}"),
        Some(&sk),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let srv = TestServer::provision(running, clock, data).await;
    assert_eq!(srv.reveal(&rk, &id).await.body["number"], pan.as_str());

    // The audit log has the seal's story.
    let audit = srv.get("/v1/admin/audit?limit=100", &srv.admin_key).await;
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "vault.unsealed",
        "vault.sealed",
        "vault.unseal_refused",
        "vault.seal",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    let shares: Vec<&str> = shares.iter().map(String::as_str).collect();
    assert_not_logged(&shares);
    srv.stop().await;
}

#[tokio::test]
async fn a_root_key_that_does_not_match_the_vault_is_refused_at_start() {
    // A file vault records its key's verifier at its first start.
    let srv = TestServer::start().await;
    let data = srv.stop().await;
    let wrong = Custody::Open {
        root: RootKey::from_bytes(&[5u8; 32]).unwrap(),
        provider: Provider::File,
    };
    let e = harness::boot(&data, |_| {}, wrong, &TestClock::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, StartError::Custody(_)), "{e}");
    assert!(e.to_string().contains("does not open"), "{e}");
    // Nor does it start sealed: it has no shares.
    let e = harness::boot(&data, |_| {}, Custody::Sealed, &TestClock::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("`file` provider"), "{e}");
    // The right key still opens it.
    TestServer::start_on(data, |_| {}).await.stop().await;

    // A Shamir vault does not start from a key file, and an uninitialised one not sealed.
    let (data, _) = shamir_vault(3, 2).await;
    let file = Custody::Open {
        root: RootKey::from_bytes(&data.root).unwrap(),
        provider: Provider::File,
    };
    let e = harness::boot(&data, |_| {}, file, &TestClock::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("`shamir` provider"), "{e}");
    let fresh = Data::new();
    let e = harness::boot(&fresh, |_| {}, Custody::Sealed, &TestClock::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("operator init"), "{e}");
}

#[tokio::test]
async fn a_rekey_issues_new_shares_for_the_same_key_and_retires_the_old() {
    let (data, old) = shamir_vault(5, 3).await;
    // Tokenize under the first shares.
    let clock = TestClock::default();
    let running = sealed_on(&data, &clock).await;
    for s in &old[..3] {
        running.vault().unseal(s).await.unwrap();
    }
    let srv = TestServer::provision(running, clock, data).await;
    let pan = test_pan(3402);
    let id = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
    let rk = srv.rk_reveal.clone();
    let data = srv.stop().await;

    let store = Store::connect(&data.store).await.unwrap();
    let rekey = |given: Vec<&str>, n, k| {
        let store = store.clone();
        let given: Vec<String> = given.into_iter().map(str::to_owned).collect();
        async move {
            let given: Vec<&str> = given.iter().map(String::as_str).collect();
            strongroom_server::custody::rekey_shamir(&store, &given, n, k).await
        }
    };
    // Too few, a foreign one, or the same one thrice: refused, and nothing changes.
    let e = rekey(vec![&old[0], &old[1]], 3, 2).await.err().unwrap();
    assert!(e.to_string().contains("3 distinct shares"), "{e}");
    let e = rekey(vec![&old[0], &old[0], &old[0]], 3, 2)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("3 distinct shares"), "{e}");
    let foreign = shamir::split(&[3u8; 32], 5, 3)
        .unwrap()
        .remove(2)
        .text()
        .to_string();
    let e = rekey(vec![&old[0], &old[1], &foreign], 3, 2)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("not a share"), "{e}");
    let e = rekey(vec![&old[0], &old[1], &old[2]], 2, 3)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("threshold"), "{e}");
    // Three old shares, any three: new 2-of-3 shares.
    let new = rekey(vec![&old[4], &old[1], &old[3]], 3, 2).await.unwrap();
    let new: Vec<String> = new.iter().map(|s| s.text().to_string()).collect();
    let record = store.root_key().await.unwrap().unwrap();
    assert_eq!((record.threshold, record.shares), (Some(2), Some(3)));
    // The old shares can no longer rekey either.
    assert!(rekey(vec![&old[0], &old[1], &old[2]], 3, 2).await.is_err());
    store.close().await;

    let clock = TestClock::default();
    let running = sealed_on(&data, &clock).await;
    let url = format!("https://127.0.0.1:{}", running.local_addr.port());
    unseal(&url, &old[0])
        .await
        .assert_error(400, "share_invalid");
    let r = unseal(&url, &new[2]).await;
    assert_eq!(
        (r.body["progress"].clone(), r.body["threshold"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(unseal(&url, &new[0]).await.body["sealed"], false);
    let srv = TestServer::provision(running, clock, data).await;
    assert_eq!(srv.reveal(&rk, &id).await.body["number"], pan.as_str());
    srv.stop().await;
}

/// The check value of an AES key by OpenSSL (an independent implementation): the first 3
/// bytes of enciphering a zero block, in upper-case hex.
fn openssl_kcv(key: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["enc", "-aes-256-ecb", "-nopad", "-K", &hex::encode(key)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed by scripts/test");
    child.stdin.take().unwrap().write_all(&[0u8; 16]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    hex::encode_upper(&out.stdout[..3])
}

#[tokio::test]
async fn the_key_inventory_lists_every_key_and_the_age_policy_speaks_up() {
    use strongroom_store::{KeyPurpose, VaultStore};
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.key_policy.check_interval = std::time::Duration::from_millis(100);
    })
    .await;
    srv.get("/v1/admin/key_inventory", &srv.sk_test)
        .await
        .assert_error(403, "permission_denied");
    let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["object"], "key_inventory");
    let data = r.body["data"].as_array().unwrap().clone();
    let find = |kind: &str, id: &str| {
        data.iter()
            .find(|k| k["kind"] == kind && k["id"].as_str().unwrap().contains(id))
            .unwrap_or_else(|| panic!("no {kind} {id} in {data:?}"))
            .clone()
    };
    let root = find("root", "root/1");
    assert_eq!(
        (root["provider"].clone(), root["status"].clone()),
        (json!("file"), json!("not_applicable"))
    );
    // Every data key of the account, with a check value OpenSSL agrees with.
    let st = srv.running.state().unwrap();
    let root_key = RootKey::from_bytes(&srv.data.root).unwrap();
    let wrapped = st.store().data_keys(&srv.account).await.unwrap();
    for purpose in [KeyPurpose::Cards, KeyPurpose::Fingerprint, KeyPurpose::Pin] {
        let k = find(
            "data_key",
            &format!("{}/{}/1", srv.account, purpose.as_str()),
        );
        assert_eq!(
            (k["state"].clone(), k["status"].clone()),
            (json!("active"), json!("ok"))
        );
        assert_eq!(
            (k["max_age_days"].clone(), k["age_days"].clone()),
            (json!(365), json!(0))
        );
        let rec = wrapped.iter().find(|r| r.purpose == purpose).unwrap();
        let ctx = strongroom_server::keyring::wrap_context(&srv.account, purpose, 1);
        let raw = root_key.unwrap_bytes(&rec.wrapped, &ctx).unwrap();
        assert_eq!(k["kcv"], openssl_kcv(&raw), "{purpose:?}");
    }
    let jwt = data
        .iter()
        .find(|k| k["kind"] == "jwt_signing_key")
        .unwrap();
    assert_eq!(
        (jwt["max_age_days"].clone(), jwt["kcv"].clone()),
        (json!(90), Value::Null)
    );
    let api = data.iter().filter(|k| k["kind"] == "api_key").count();
    assert_eq!(api, 4, "the four keys the harness made");
    assert!(
        data.iter()
            .any(|k| k["kind"] == "admin_key" && k["provider"] == "digest")
    );
    // Nothing secret in it: no key material, no API key secret.
    for secret in [srv.sk_test.as_str(), srv.admin_key.as_str()] {
        assert!(!r.text.contains(secret));
    }

    // 340 days on: the data keys are due (30 days before 365), the API keys and the JWT
    // signing key past their 90 days.
    srv.clock
        .advance(std::time::Duration::from_secs(340 * 86_400));
    let events = |ty: &'static str| {
        let srv = &srv;
        async move {
            let r = srv
                .get(&format!("/v1/events?type={ty}&limit=100"), &srv.sk_test)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["data"].as_array().unwrap().clone()
        }
    };
    harness::eventually("the key-age notices", || async {
        events("key.rotation_due").await.len() >= 3 && !events("key.expired").await.is_empty()
    })
    .await;
    let due = events("key.rotation_due").await;
    let due_ids: Vec<&str> = due
        .iter()
        .filter_map(|e| e["data"]["object"]["id"].as_str())
        .collect();
    for p in ["cards", "fingerprint", "pin"] {
        assert!(
            due_ids.contains(&format!("{}/{p}/1", srv.account).as_str()),
            "{due_ids:?}"
        );
    }
    let expired = events("key.expired").await;
    assert!(
        expired
            .iter()
            .all(|e| e["data"]["object"]["kind"] == "api_key")
    );
    // Each notice goes out once, however many checks run.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(events("key.rotation_due").await.len(), due.len());
    let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let data = r.body["data"].as_array().unwrap().clone();
    let cards = find_in(&data, "data_key", &format!("{}/cards/1", srv.account));
    assert_eq!(
        (cards["status"].clone(), cards["age_days"].clone()),
        (json!("rotation_due"), json!(340))
    );
    let jwt = data
        .iter()
        .find(|k| k["kind"] == "jwt_signing_key")
        .unwrap();
    assert_eq!(jwt["status"], "expired");
    // The metric says how old the oldest key of each purpose is.
    let addr = srv.running.metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("strongroom_key_oldest_age_seconds{purpose=\"cards\"}"))
        .unwrap_or_else(|| panic!("{text}"));
    let age: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(age >= 340.0 * 86_400.0, "{line}");
    // A rotation makes a young writer; the old version only decrypts.
    let r = srv
        .post(
            &format!("/v1/admin/accounts/{}/keys/rotate", srv.account),
            &srv.admin_key,
            json!({"purpose": "cards"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let data = r.body["data"].as_array().unwrap().clone();
    let new = find_in(&data, "data_key", &format!("{}/cards/2", srv.account));
    assert_eq!(
        (new["status"].clone(), new["age_days"].clone()),
        (json!("ok"), json!(0))
    );
    let old = find_in(&data, "data_key", &format!("{}/cards/1", srv.account));
    assert_eq!(old["state"], "decrypt_only");
    srv.stop().await;
}

pub(crate) fn find_in(data: &[Value], kind: &str, id: &str) -> Value {
    data.iter()
        .find(|k| k["kind"] == kind && k["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} {id}"))
        .clone()
}

#[tokio::test]
async fn with_auto_rotate_the_due_data_keys_and_signing_key_rotate_themselves() {
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.key_policy.check_interval = std::time::Duration::from_millis(100);
        c.key_policy.auto_rotate = true;
    })
    .await;
    let pan = test_pan(3403);
    let id = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
    srv.clock
        .advance(std::time::Duration::from_secs(80 * 86_400));
    harness::eventually("the JWT signing key's rotation", || async {
        let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
        let data = r.body["data"].as_array().unwrap().clone();
        data.iter()
            .any(|k| k["kind"] == "jwt_signing_key" && k["state"] == "pending")
    })
    .await;
    // Not yet due: the data keys stay.
    let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let data = r.body["data"].as_array().unwrap().clone();
    assert!(
        !data
            .iter()
            .any(|k| k["id"] == format!("{}/cards/2", srv.account))
    );
    // Exactly one rotation while the new key waits to sign.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let pending = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kind"] == "jwt_signing_key" && k["state"] == "pending")
        .count();
    assert_eq!(pending, 1);
    srv.clock
        .advance(std::time::Duration::from_secs(260 * 86_400));
    harness::eventually("the data keys' rotation", || async {
        let r = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let data = r.body["data"].as_array().unwrap().clone();
        ["cards", "fingerprint", "pin"].iter().all(|p| {
            data.iter()
                .any(|k| k["id"] == format!("{}/{p}/2", srv.account) && k["state"] == "active")
        })
    })
    .await;
    // The card made under the old key still reveals.
    assert_eq!(
        srv.reveal(&srv.rk_reveal, &id).await.body["number"],
        pan.as_str()
    );
    srv.stop().await;
}

/// SoftHSM2's module as Debian installs it (`softhsm2`, installed by scripts/test, which
/// also points `SOFTHSM2_CONF` at a token directory of its own).
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// AES-ECB of `data` with the key labelled `key` (its id is its label) on token
/// `token`, by OpenSC's `pkcs11-tool`: PKCS#11 calls made by other code than the vault's.
pub(crate) fn hsm_ecb(token: &str, key: &str, op: &str, data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, data).unwrap();
    let out = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            SOFTHSM,
            "--token-label",
            token,
            "--login",
            "--pin",
            "5678",
        ])
        .args([op, "--mechanism", "AES-ECB", "--id", &hex::encode(key)])
        .arg("--input-file")
        .arg(&input)
        .arg("--output-file")
        .arg(&output)
        .output()
        .expect("pkcs11-tool (OpenSC) is installed by scripts/test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

/// A fresh SoftHSM2 token (user PIN 5678), and the vault's settings for it.
pub(crate) fn softhsm_token() -> strongroom_server::custody::pkcs11::Pkcs11Config {
    let label = format!(
        "sr-{}",
        hex::encode(strongroom_crypto::random::bytes::<4>().unwrap())
    );
    let init = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--so-pin",
            "1234",
            "--pin",
            "5678",
        ])
        .output()
        .expect("softhsm2-util is installed by scripts/test");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    strongroom_server::custody::pkcs11::Pkcs11Config {
        module: SOFTHSM.into(),
        token_label: label,
        key_label: "strongroom-root".into(),
        pin: "5678".to_owned().into(),
    }
}

/// A vault whose root key the HSM `cfg` names keeps (made there on this first start).
pub(crate) async fn pkcs11_server(
    cfg: &strongroom_server::custody::pkcs11::Pkcs11Config,
    data: &Arc<Data>,
) -> TestServer {
    let store = Store::connect(&data.store).await.unwrap();
    let now = strongroom_core::SystemClock.now_ms();
    let root = strongroom_server::custody::pkcs11::open_root(&store, cfg, now)
        .await
        .unwrap();
    store.close().await;
    let clock = TestClock::default();
    let custody = Custody::Open {
        root,
        provider: Provider::Pkcs11,
    };
    let with_hsm = |c: &mut strongroom_server::config::ServerConfig| {
        c.custody.pkcs11 = Some(cfg.clone());
    };
    let running = harness::boot(data, with_hsm, custody, &clock)
        .await
        .unwrap();
    TestServer::provision(running, clock, data.clone()).await
}

/// The secret-key objects on token `token`, as OpenSC's pkcs11-tool lists them.
pub(crate) fn token_objects(token: &str) -> Vec<String> {
    let out = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            SOFTHSM,
            "--token-label",
            token,
            "--login",
            "--pin",
            "5678",
        ])
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .expect("pkcs11-tool (OpenSC) is installed by scripts/test");
    let listed = String::from_utf8_lossy(&out.stdout);
    listed
        .split("Secret Key Object")
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_pkcs11_vault_keeps_its_root_key_wrapped_by_the_hsm() {
    use strongroom_server::custody::pkcs11::{Pkcs11Config, open_root};
    let cfg = softhsm_token();
    let label = cfg.token_label.clone();
    let data = Arc::new(Data::new());
    let open = |cfg: Pkcs11Config| {
        let data = data.clone();
        async move {
            let store = Store::connect(&data.store).await.unwrap();
            let now = strongroom_core::SystemClock.now_ms();
            let root = open_root(&store, &cfg, now).await;
            store.close().await;
            root
        }
    };
    // First start: the key is made in the HSM, the root key recorded only wrapped.
    let srv = pkcs11_server(&cfg, &data).await;
    let pan = test_pan(3404);
    let id = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
    assert_eq!(
        srv.reveal(&srv.rk_reveal, &id).await.body["number"],
        pan.as_str()
    );
    let status = srv.get("/v1/sys/seal_status", &srv.sk_test).await;
    assert_eq!(status.body["provider"], "pkcs11");
    let inventory = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let keys = inventory.body["data"].as_array().unwrap();
    assert_eq!(find_in(keys, "root", "root/1")["provider"], "pkcs11");
    // The PIN-block key is on the token: the PIN service enciphers there.
    let jwk = crate::pin::jwk(&srv).await;
    let r = crate::pin::set_pin(&srv, &jwk, &id, "4821", "pin.set").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(crate::pin::matches(&srv, &jwk, &id, "4821").await);
    assert!(!crate::pin::matches(&srv, &jwk, &id, "4822").await);
    let pin_key = find_in(keys, "data_key", &format!("{}/pin/1", srv.account));
    assert_eq!(pin_key["provider"], "pkcs11", "{pin_key}");
    let key_label = format!("strongroom-root/pin/{}/1", srv.account);
    // Its check value, and the stored block, as OpenSC computes them on the token.
    let zero = hsm_ecb(&label, &key_label, "--encrypt", &[0u8; 16]);
    assert_eq!(
        pin_key["kcv"],
        hex::encode_upper(&zero[..3]).as_str(),
        "{pin_key}"
    );
    let store = Store::connect(&data.store).await.unwrap();
    use strongroom_store::{PinStore, VaultStore};
    let rec = store
        .get_pin(&srv.account, strongroom_store::Mode::Test, &id)
        .await
        .unwrap()
        .unwrap();
    let pin_row = store
        .data_keys(&srv.account)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.purpose == strongroom_store::KeyPurpose::Pin)
        .unwrap();
    assert_eq!(pin_row.wrapped, strongroom_server::custody::pkcs11::HSM_KEY);
    store.close().await;
    let mut work = hsm_ecb(&label, &key_label, "--decrypt", &rec.block);
    let pan_field = strongroom_crypto::pin::pan_field(&pan).unwrap();
    for (w, p) in work.iter_mut().zip(pan_field) {
        *w ^= p;
    }
    let field: [u8; 16] = hsm_ecb(&label, &key_label, "--decrypt", &work)
        .try_into()
        .unwrap();
    assert_eq!(
        strongroom_crypto::pin::decode_pin_field(&field)
            .unwrap()
            .expose_digits(),
        "4821"
    );
    let (rk, sk) = (srv.rk_reveal.clone(), srv.sk_test.clone());
    srv.stop().await;

    // Restarted, the HSM unwraps the same key: cards made before reveal, and the PIN
    // still verifies on the token.
    let srv = pkcs11_server(&cfg, &data).await;
    assert_eq!(srv.reveal(&rk, &id).await.body["number"], pan.as_str());
    let enc = crate::pin::payload(&srv, &jwk, "4821", &id);
    let r = crate::pin::verify(&srv, &sk, &id, enc).await;
    assert_eq!(r.body["match"], true, "{}", r.text);
    srv.stop().await;

    // A wrong PIN, or a token without the key, opens nothing.
    let wrong = Pkcs11Config {
        pin: "0000".to_owned().into(),
        ..cfg.clone()
    };
    let e = open(wrong).await.err().unwrap();
    assert!(e.to_string().contains("login"), "{e}");
    assert!(!e.to_string().contains("0000"));
    let other = Pkcs11Config {
        key_label: "not-there".into(),
        ..cfg.clone()
    };
    assert!(
        open(other)
            .await
            .err()
            .unwrap()
            .to_string()
            .contains("not on the token")
    );

    // OpenSC's pkcs11-tool sees the wrapping key as sensitive and never extractable.
    // The root key's wrapping key and a PIN-block key for the account of each start,
    // each sensitive, never extractable, for encrypting and decrypting only.
    let objects = token_objects(&label);
    assert_eq!(objects.len(), 3, "{objects:?}");
    let listed = objects.concat();
    assert!(listed.contains("label:      strongroom-root\n"), "{listed}");
    assert!(
        listed.contains("label:      strongroom-root/pin/acct_"),
        "{listed}"
    );
    for o in objects {
        assert!(
            o.contains("sensitive") && o.contains("never extractable"),
            "{o}"
        );
    }
    // The data directory holds no root key file, and the database only the wrapping.
    for entry in std::fs::read_dir(data.dir.path()).unwrap() {
        assert!(
            !entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("root")
        );
    }
    let store = Store::connect(&data.store).await.unwrap();
    let record = store.root_key().await.unwrap().unwrap();
    assert_eq!(record.provider, "pkcs11");
    assert_eq!(
        record.wrapped_root.as_ref().map(Vec::len),
        Some(12 + 32 + 16)
    );
    store.close().await;
}
