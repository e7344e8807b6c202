//! Data-key rotation and re-wrap under live traffic: zero failed requests, every card
//! still revealable, old versions retired at the end.

use crate::harness::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

async fn status(srv: &TestServer) -> Value {
    let r = srv
        .get(
            &format!("/v1/admin/accounts/{}/keys", srv.account),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_rewrap_retire_under_load() {
    let srv = Arc::new(TestServer::start().await);
    let mut cards: Vec<(String, String)> = Vec::new();
    for i in 0..60 {
        let pan = test_pan(5000 + i);
        let id = srv.tokenize(&pan).await["id"].as_str().unwrap().to_owned();
        cards.push((id, pan));
    }
    let s = status(&srv).await;
    assert_eq!(s["purposes"]["cards"]["versions"][0]["records"], 60);
    assert_eq!(s["purposes"]["cards"]["versions"][0]["state"], "active");

    // The writer cannot be retired.
    let acct = srv.account.clone();
    srv.post(
        &format!("/v1/admin/accounts/{acct}/keys/retire"),
        &srv.admin_key,
        json!({"purpose": "cards", "version": 1}),
    )
    .await
    .assert_error(409, "key_in_use");

    // Traffic: tokenize new cards and reveal old ones, counting any failure.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let shared_cards = Arc::new(cards.clone());
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (srv, stop, failures, done, cards) = (
            srv.clone(),
            stop.clone(),
            failures.clone(),
            done.clone(),
            shared_cards.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut created = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let pan = test_pan(100_000 + w * 10_000 + i);
                let r = srv
                    .post(
                        "/v1/cards",
                        &srv.sk_test,
                        json!({"number": pan, "exp_month": 12, "exp_year": 2030}),
                    )
                    .await;
                if r.status != 201 {
                    failures.fetch_add(1, Ordering::SeqCst);
                } else {
                    created.push((r.body["id"].as_str().unwrap().to_owned(), pan));
                }
                let (id, pan) = &cards[(i as usize * 7 + w as usize) % cards.len()];
                let shown = srv.reveal(&srv.rk_reveal, id).await;
                if shown.status != 200 || shown.body["number"] != pan.as_str() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(2, Ordering::SeqCst);
            }
            created
        }));
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    for purpose in ["cards", "fingerprint"] {
        let r = srv
            .post(
                &format!("/v1/admin/accounts/{acct}/keys/rotate"),
                &srv.admin_key,
                json!({"purpose": purpose}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let versions = r.body["purposes"][purpose]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0]["state"], "decrypt_only");
        assert_eq!(versions[1]["state"], "active");
    }

    // Wait (with a deadline) for the re-wrap to move every record to version 2.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&srv).await;
        let pending = s["purposes"]["cards"]["records_to_rewrap"]
            .as_i64()
            .unwrap()
            + s["purposes"]["fingerprint"]["records_to_rewrap"]
                .as_i64()
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "re-wrap did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut all = cards.clone();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(done.load(Ordering::SeqCst) > 0);

    // Retire version 1 of both purposes; nothing can use it afterwards.
    for purpose in ["cards", "fingerprint"] {
        let r = srv
            .post(
                &format!("/v1/admin/accounts/{acct}/keys/retire"),
                &srv.admin_key,
                json!({"purpose": purpose, "version": 1}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.body["purposes"][purpose]["versions"][0]["state"],
            "retired"
        );
    }
    srv.post(
        &format!("/v1/admin/accounts/{acct}/keys/retire"),
        &srv.admin_key,
        json!({"purpose": "cards", "version": 9}),
    )
    .await
    .assert_error(404, "not_found");
    srv.post(
        &format!("/v1/admin/accounts/{acct}/keys/rotate"),
        &srv.admin_key,
        json!({"purpose": "pins"}),
    )
    .await
    .assert_error(400, "invalid_parameter");

    // Every card, old and new, is still revealable; dedup still finds old PANs.
    for (id, pan) in all.iter().step_by(3) {
        let shown = srv.reveal(&srv.rk_reveal, id).await;
        assert_eq!(shown.status, 200, "{}", shown.text);
        assert_eq!(shown.body["number"], pan.as_str());
    }
    let (id0, pan0) = &cards[0];
    let again = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": pan0, "exp_month": 12, "exp_year": 2030}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["id"], id0.as_str());
    assert_not_logged(&[pan0]);
}
