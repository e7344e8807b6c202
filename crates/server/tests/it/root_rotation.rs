//! Root-key rotation: a new root key takes over every wrapped key while tokenize and
//! reveal run, without one failed request; the old key opens nothing afterwards; the
//! vault restarts on the new key (a file, new Shamir shares, or the HSM).

use crate::custody::{shamir_vault, softhsm_token, unseal};
use crate::harness::{self, Data, TestClock, TestServer, assert_not_logged, eventually, test_pan};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strongroom_crypto::RootKey;
use strongroom_server::config::{RootFileWriter, ServerConfig};
use strongroom_server::custody::rotation::context_of;
use strongroom_server::{Custody, Provider};
use strongroom_store::{CustodyStore, Store, WrappedKind, WrappedQuery};

/// Where a rotation of a file root key writes the next key, and what it wrote.
fn key_file(c: &mut ServerConfig, written: &Arc<Mutex<Option<Vec<u8>>>>) {
    let written = written.clone();
    c.custody.root_file = Some(RootFileWriter(Arc::new(move |k: Option<&[u8]>| {
        *written.lock().unwrap() = k.map(<[u8]>::to_vec);
        Ok(())
    })));
    c.custody.follow_interval = Duration::from_millis(100);
    c.webhooks.loopback_for_tests = true;
    // Data keys are read and unwrapped again and again while the rotation runs.
    c.keyring_ttl = Duration::from_millis(20);
}

/// Starts a rotation and waits for its end: the answer that started it and the last.
async fn rotate(srv: &TestServer, body: Value) -> (Value, Value) {
    let r = srv.post("/v1/sys/rotate_root", &srv.admin_key, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["state"], "running");
    let started = r.body;
    for _ in 0..200 {
        let now = srv.get("/v1/sys/rotate_root", &srv.admin_key).await;
        assert_eq!(now.status, 200, "{}", now.text);
        match now.body["state"].as_str() {
            Some("running") => tokio::time::sleep(Duration::from_millis(50)).await,
            Some("finished") => return (started, now.body),
            _ => panic!("rotation: {}", now.body),
        }
    }
    panic!("the rotation did not end within 10 s");
}

/// Every value the root key wraps, with its context: how many open under `root`.
async fn opening(store: &Store, root: &RootKey) -> (usize, usize) {
    let (mut total, mut open) = (0, 0);
    for kind in WrappedKind::ALL {
        if kind == WrappedKind::OtpEvent {
            continue;
        }
        let q = WrappedQuery {
            kind,
            after: None,
            limit: 10_000,
            since_ms: 0,
        };
        for v in store.wrapped_keys(q).await.unwrap() {
            let ctx = context_of(kind, &v).unwrap().unwrap();
            total += 1;
            open += usize::from(root.unwrap_bytes(&v.wrapped, &ctx).is_ok());
        }
    }
    (total, open)
}

/// Gives an AES-128 component to an import: the answer's status.
async fn give(srv: &TestServer, id: &str, key: &str, c: [u8; 16]) -> u16 {
    use strongroom_crypto::components::{KeyAlgorithm, kcv};
    let kcv = hex::encode(kcv(KeyAlgorithm::Aes128, &c).unwrap());
    let path = format!("/v1/admin/key_imports/{id}/components");
    let body = json!({"component": hex::encode(c), "kcv": kcv});
    srv.post(&path, key, body).await.status.as_u16()
}

#[tokio::test]
async fn a_root_rotation_under_load_moves_every_key_and_fails_no_request() {
    let data = Arc::new(Data::new());
    let written = Arc::new(Mutex::new(None));
    let w = written.clone();
    let srv = TestServer::start_on(data.clone(), move |c| key_file(c, &w)).await;
    // Something of every kind the root key wraps: data keys (cards), the JWT signing
    // key (made at start), the PIN transport key, a webhook secret and, after its
    // rotation, the previous one.
    let mut cards = Vec::new();
    for i in 0..5 {
        let pan = test_pan(7100 + i);
        cards.push((
            srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned(),
            pan,
        ));
    }
    let r = srv.get("/v1/pin/encryption_key", &srv.sk_test).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ep = srv
        .post(
            "/v1/webhook_endpoints",
            &srv.sk_test,
            json!({"url": "https://127.0.0.1:9/hook", "enabled_events": ["card.created"]}),
        )
        .await;
    assert_eq!(ep.status, 201, "{}", ep.text);
    let ep_id = ep.body["id"].as_str().unwrap().to_owned();
    let r = srv
        .post(
            &format!("/v1/webhook_endpoints/{ep_id}/rotate_secret"),
            &srv.sk_test,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // An imported key, and an import still waiting for its second component.
    let other = srv
        .post("/v1/admin/admin_keys", &srv.admin_key, json!({"name": "B"}))
        .await;
    let other = other.body["secret"].as_str().unwrap().to_owned();
    let part = [0x5au8; 16];
    let mut imports = Vec::new();
    for _ in 0..2 {
        let r = srv
            .post(
                "/v1/admin/key_imports",
                &srv.admin_key,
                json!({"account": srv.account, "kind": "kek", "algorithm": "aes128",
                    "components": 2, "name": "KEK"}),
            )
            .await;
        imports.push(r.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(give(&srv, &imports[0], &srv.admin_key, part).await, 200);
    assert_eq!(give(&srv, &imports[0], &other, [0x33; 16]).await, 200);
    assert_eq!(give(&srv, &imports[1], &srv.admin_key, part).await, 200);
    let old_root = RootKey::from_bytes(&data.root).unwrap();
    let store = Store::connect(&data.store).await.unwrap();
    let (before, under_old) = opening(&store, &old_root).await;
    assert_eq!(before, under_old);
    assert!(before >= 7, "{before} wrapped keys");

    // Tokenize and reveal, three clients at once, for as long as the rotation runs.
    let srv = Arc::new(srv);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let made = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for t in 0..3u64 {
        let (srv, stop, done, failed, made) = (
            srv.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
            made.clone(),
        );
        let (id, pan) = cards[usize::try_from(t).unwrap()].clone();
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let new_pan = test_pan(20_000 + t * 10_000 + n);
                let r = srv
                    .post(
                        "/v1/cards",
                        &srv.sk_test,
                        json!({"number": new_pan, "exp_month": 12, "exp_year": 2031}),
                    )
                    .await;
                if r.status.is_success() {
                    made.lock()
                        .unwrap()
                        .push((r.body["id"].as_str().unwrap().to_owned(), new_pan));
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                let r = srv.reveal(&srv.rk_reveal, &id).await;
                if r.status != 200 || r.body["number"] != pan.as_str() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (started, ended) = rotate(&srv, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(done > 20, "only {done} requests ran during the rotation");
    assert_eq!(
        failed, 0,
        "{failed} of {done} requests failed during the rotation"
    );
    assert_eq!(started["generation"], 2);
    assert_eq!(started["provider"], "file");
    assert!(started.get("shares").is_none());
    for kind in [
        "data_keys",
        "jwt_signing_keys",
        "pin_transport_keys",
        "webhook_secrets",
        "webhook_previous_secrets",
        "imported_keys",
        "key_import_partials",
    ] {
        assert!(
            ended["moved"][kind].as_u64().unwrap_or(0) >= 1,
            "{kind}: {ended}"
        );
    }
    assert!(ended["passes"].as_u64().unwrap() >= 1);

    // The new key is in the file; the store's record is generation 2 with nothing
    // pending; every wrapped value opens under the new key and none under the old.
    let next = written
        .lock()
        .unwrap()
        .clone()
        .expect("the key file was written");
    assert_ne!(next.as_slice(), data.root.as_slice());
    let new_root = RootKey::from_bytes(&next).unwrap();
    let record = store.root_key().await.unwrap().unwrap();
    assert_eq!(record.generation, 2);
    assert_eq!(record.verifier, new_root.verifier().to_vec());
    assert!(record.transit.is_none() && record.digest_wrapped.is_some());
    assert!(store.pending_root_key().await.unwrap().is_none());
    let (total, under_new) = opening(&store, &new_root).await;
    assert_eq!(total, under_new, "values the new root key does not open");
    assert_eq!(
        opening(&store, &old_root).await.1,
        0,
        "the old key still opens values"
    );
    store.close().await;
    // The audit log has both ends of the rotation.
    for action in ["vault.root_rotation_started", "vault.root_rotated"] {
        let audit = srv
            .get(
                &format!("/v1/admin/audit?actor=system&action={action}"),
                &srv.admin_key,
            )
            .await;
        assert_eq!(
            audit.body["data"].as_array().map(Vec::len),
            Some(1),
            "{action}: {}",
            audit.text
        );
        assert_eq!(audit.body["data"][0]["resource"], "root_key/2");
    }
    assert_not_logged(&[&hex::encode(next.as_slice()), &hex::encode(data.root)]);

    // Restarted on the new key: every card reveals, the API keys (whose digests the
    // carried digest key made) still authenticate; the old key opens nothing.
    let rk = srv.rk_reveal.clone();
    let srv = Arc::into_inner(srv).unwrap();
    let data = srv.stop().await;
    let old = Custody::Open {
        root: RootKey::from_bytes(&data.root).unwrap(),
        provider: Provider::File,
    };
    let e = harness::boot(&data, |_| {}, old, &TestClock::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("does not open"), "{e}");
    let new = Custody::Open {
        root: RootKey::from_bytes(&next).unwrap(),
        provider: Provider::File,
    };
    let clock = TestClock::default();
    let running = harness::boot(&data, |_| {}, new, &clock).await.unwrap();
    let srv = TestServer::provision(running, clock, data.clone()).await;
    let made = made.lock().unwrap().clone();
    assert!(!made.is_empty());
    for (id, pan) in cards.iter().chain(made.iter().take(10)) {
        let r = srv.reveal(&rk, id).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["number"], pan.as_str());
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_file_root_key_moves_to_shamir_shares_and_bad_rotations_are_refused() {
    let data = Arc::new(Data::new());
    let srv = TestServer::start_on(data.clone(), |c| {
        c.custody.follow_interval = Duration::from_millis(100);
    })
    .await;
    let pan = test_pan(7301);
    let id = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
    // Nothing to rotate to: no key file, no HSM; a file never moves back from shares.
    let r = srv
        .post("/v1/sys/rotate_root", &srv.admin_key, json!({}))
        .await;
    r.assert_error(409, "provider_not_configured");
    let r = srv
        .post(
            "/v1/sys/rotate_root",
            &srv.admin_key,
            json!({"provider": "pkcs11"}),
        )
        .await;
    r.assert_error(409, "provider_not_configured");
    for (body, code) in [
        (
            json!({"provider": "shamir", "shares": 3, "threshold": 1}),
            "invalid_parameter",
        ),
        (
            json!({"provider": "shamir", "shares": 40, "threshold": 3}),
            "invalid_parameter",
        ),
        (json!({"provider": "vault"}), "invalid_request"),
        (json!({"shares": 300}), "invalid_request"),
        (json!({"provider": "shamir", "extra": 1}), "unknown_field"),
    ] {
        let r = srv
            .post("/v1/sys/rotate_root", &srv.admin_key, body.clone())
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{body}: {}", r.text);
    }
    let r = srv
        .post(
            "/v1/sys/rotate_root",
            &srv.sk_test,
            json!({"provider": "shamir"}),
        )
        .await;
    r.assert_error(403, "permission_denied");
    srv.get("/v1/sys/rotate_root", &srv.admin_key)
        .await
        .assert_error(404, "not_found");

    // File → Shamir: the answer carries the new shares, shown once.
    let (started, _) = rotate(
        &srv,
        json!({"provider": "shamir", "shares": 3, "threshold": 2}),
    )
    .await;
    let shares: Vec<String> = started["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shares.len(), 3);
    let again = srv.get("/v1/sys/rotate_root", &srv.admin_key).await;
    assert!(again.body.get("shares").is_none(), "{}", again.text);
    assert_eq!(
        srv.get("/v1/sys/seal_status", &srv.sk_test).await.body["provider"],
        "shamir"
    );
    // Now a Shamir vault: it may not go back to a file.
    let r = srv
        .post(
            "/v1/sys/rotate_root",
            &srv.admin_key,
            json!({"provider": "file"}),
        )
        .await;
    r.assert_error(400, "root_provider_downgrade");
    let rk = srv.rk_reveal.clone();
    let data = srv.stop().await;
    assert_not_logged(&shares.iter().map(String::as_str).collect::<Vec<_>>());

    // It starts sealed; two of the new shares open it and the card reveals.
    let clock = TestClock::default();
    let running = harness::boot(&data, |_| {}, Custody::Sealed, &clock)
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", running.local_addr.port());
    for s in &shares[1..] {
        assert_eq!(unseal(&url, s).await.status, 200);
    }
    let srv = TestServer::provision(running, clock, data.clone()).await;
    let r = srv.reveal(&rk, &id).await;
    assert_eq!(r.body["number"], pan.as_str(), "{}", r.text);
    srv.stop().await;
}

#[tokio::test]
async fn a_shamir_root_key_moves_into_the_hsm() {
    use strongroom_server::custody::pkcs11::open_root;
    let hsm = softhsm_token();
    let (data, shares) = shamir_vault(3, 2).await;
    let tweak = |c: &mut ServerConfig| {
        c.custody.pkcs11 = Some(hsm.clone());
        c.custody.follow_interval = Duration::from_millis(100);
    };
    let clock = TestClock::default();
    let running = harness::boot(&data, tweak, Custody::Sealed, &clock)
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", running.local_addr.port());
    for s in &shares[..2] {
        assert_eq!(unseal(&url, s).await.status, 200);
    }
    let srv = TestServer::provision(running, clock, data.clone()).await;
    let pan = test_pan(7402);
    let id = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
    let (started, ended) = rotate(&srv, json!({"provider": "pkcs11"})).await;
    assert_eq!(started["provider"], "pkcs11");
    assert!(started.get("shares").is_none());
    assert!(
        ended["moved"]["data_keys"].as_u64().unwrap() >= 1,
        "{ended}"
    );
    assert_eq!(
        srv.get("/v1/sys/seal_status", &srv.sk_test).await.body["provider"],
        "pkcs11"
    );
    // The old shares are retired with their key: nothing is left of them.
    let store = Store::connect(&data.store).await.unwrap();
    let record = store.root_key().await.unwrap().unwrap();
    assert_eq!((record.generation, record.provider.as_str()), (2, "pkcs11"));
    assert!(record.share_digests.is_empty() && record.wrapped_root.is_some());
    let rk = srv.rk_reveal.clone();
    let data = srv.stop().await;
    assert_not_logged(&shares.iter().map(String::as_str).collect::<Vec<_>>());

    // Sealed with shares, it no longer starts; from the HSM it does, and reveals.
    let e = harness::boot(&data, |_| {}, Custody::Sealed, &TestClock::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("`pkcs11` provider"), "{e}");
    let root = open_root(&store, &hsm, 0).await.unwrap();
    store.close().await;
    let custody = Custody::Open {
        root,
        provider: Provider::Pkcs11,
    };
    let clock = TestClock::default();
    let running = harness::boot(&data, |_| {}, custody, &clock).await.unwrap();
    let srv = TestServer::provision(running, clock, data.clone()).await;
    let r = srv.reveal(&rk, &id).await;
    assert_eq!(r.body["number"], pan.as_str(), "{}", r.text);
    srv.stop().await;
}

#[tokio::test]
async fn a_second_node_follows_a_root_rotation_without_a_failed_request() {
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "a_second_node_follows_a_root_rotation_without_a_failed_request",
    ) {
        return;
    }
    let data = Arc::new(Data::new());
    let written = Arc::new(Mutex::new(None));
    let w = written.clone();
    let a = TestServer::start_on(data.clone(), move |c| key_file(c, &w)).await;
    let b = Arc::new(
        TestServer::start_on(data.clone(), |c| key_file(c, &Arc::new(Mutex::new(None)))).await,
    );
    // Node B tokenizes and reveals (with A's account keys) all through the rotation on A.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (b, stop, failed) = (b.clone(), stop.clone(), failed.clone());
        let (sk, rk) = (a.sk_test.clone(), a.rk_reveal.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let pan = test_pan(50_000 + n);
                let r = b
                    .post(
                        "/v1/cards",
                        &sk,
                        json!({"number": pan, "exp_month": 12, "exp_year": 2031}),
                    )
                    .await;
                let ok = r.status.is_success() && {
                    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
                    let r = b.reveal(&rk, &id).await;
                    r.status == 200 && r.body["number"] == pan.as_str()
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    rotate(&a, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let rounds = load.await.unwrap();
    assert!(rounds > 5, "only {rounds} rounds on node B");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests on node B"
    );
    // B has dropped the old key: it wraps and unwraps under the new one alone. A data
    // key B makes now, A reads.
    let next = written.lock().unwrap().clone().unwrap();
    let verifier = RootKey::from_bytes(&next).unwrap().verifier();
    let b_state = b.running.state().unwrap();
    eventually("node B follows the end of the rotation", || async {
        !b_state.root().rotating() && b_state.root().verifier() == verifier
    })
    .await;
    let r = b
        .post(
            &format!("/v1/admin/accounts/{}/keys/rotate", a.account),
            &a.admin_key,
            json!({"purpose": "cards"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    a.running.state().unwrap().keyring().clear();
    let id = a.tokenize(&test_pan(7777)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b.reveal(&a.rk_reveal, &id).await;
    assert_eq!(r.body["number"], test_pan(7777).as_str(), "{}", r.text);
    Arc::into_inner(b).unwrap().stop().await;
    a.stop().await;
}
