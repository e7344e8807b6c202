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
async fn shamir_vault(n: u8, k: u8) -> (Arc<Data>, Vec<String>) {
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

async fn unseal(url: &str, share: &str) -> Resp {
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
    let r = srv
        .call(Method::POST, "/v1/sys/seal", Some(&srv.admin_key), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["sealed"], true);
    assert!(srv.running.state().is_none());
    assert_sealed(&srv.url, Some(&srv.sk_test)).await;

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
