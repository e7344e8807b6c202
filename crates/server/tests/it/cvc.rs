//! The CVC sent with a card: held sealed for ten minutes, spent by its first use,
//! forgotten when the card is deleted, and lost by a restart (docs/relay.md, "The CVC").
//! The relay spends it through `state.cvcs().take(…)`; these tests call that directly.

use crate::harness::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::Mode;
use strongroom_server::gateway::RateLimitStore;

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const AMEX: &str = "378282246310005";

/// A card with a CVC, with this key; the response.
async fn create(srv: &TestServer, key: &str, number: &str, cvc: &str) -> Resp {
    srv.post(
        "/v1/cards",
        key,
        json!({"number": number, "exp_month": 12, "exp_year": 2030, "cvc": cvc}),
    )
    .await
}

/// Asserts that a body neither names a CVC nor carries this one as a value.
#[track_caller]
fn assert_no_cvc(r: &Resp, cvc: &str) {
    assert!(!r.text.contains("\"cvc\""), "{}", r.text);
    assert!(!r.text.contains(&format!("\"{cvc}\"")), "{}", r.text);
}

async fn take(srv: &TestServer, card: &str) -> Option<String> {
    take_on(srv, &srv.account, card).await
}

/// Takes a card's CVC through `srv`'s store (another node's card: its account).
async fn take_on(srv: &TestServer, account: &str, card: &str) -> Option<String> {
    let state = &srv.running.state().unwrap();
    state
        .cvcs()
        .take(account, Mode::Test, card, state.now_ms())
        .await
        .unwrap()
        .map(|c| c.as_str().to_owned())
}

async fn shown(srv: &TestServer, card: &str) -> Value {
    let r = srv.get(&format!("/v1/cards/{card}"), &srv.sk_test).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["cvc_available"].clone()
}

#[tokio::test]
async fn a_cvc_is_held_until_its_first_use() {
    let srv = TestServer::start().await;
    let r = create(&srv, &srv.sk_test, "4242424242424242", "737").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["cvc_available"], true);
    assert_no_cvc(&r, "737");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let plain = srv.tokenize("5555555555554444").await;
    assert_eq!(plain["cvc_available"], false);

    assert_eq!(shown(&srv, &id).await, true);
    let list = srv.get("/v1/cards", &srv.sk_test).await;
    let flags: Vec<(&Value, &Value)> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (&c["id"], &c["cvc_available"]))
        .collect();
    assert_eq!(
        flags,
        [(&plain["id"], &json!(false)), (&json!(id), &json!(true))]
    );
    // `card.created` says what was so at creation.
    let events = srv
        .get("/v1/events?type=card.created&limit=10", &srv.sk_test)
        .await;
    assert_no_cvc(&events, "737");
    let created = |card: &Value| {
        events.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["data"]["object"]["id"] == *card)
            .map(|e| e["data"]["object"]["cvc_available"].clone())
    };
    assert_eq!(created(&json!(id)), Some(json!(true)));
    assert_eq!(created(&plain["id"]), Some(json!(false)));

    // One use: the second take finds nothing, and the card says so.
    assert_eq!(take(&srv, &id).await.as_deref(), Some("737"));
    assert_eq!(take(&srv, &id).await, None);
    assert_eq!(shown(&srv, &id).await, false);
    // Another account's or mode's view of the same id holds nothing.
    let state = &srv.running.state().unwrap();
    let now = state.now_ms();
    let again = create(&srv, &srv.sk_test, "4242424242424242", "123").await;
    assert_eq!(again.status, 200);
    for (acct, mode) in [(srv.account.as_str(), Mode::Live), ("acct_x", Mode::Test)] {
        let other = state.cvcs().take(acct, mode, &id, now).await.unwrap();
        assert!(other.is_none());
    }
    assert_eq!(take(&srv, &id).await.as_deref(), Some("123"));
}

#[tokio::test]
async fn a_held_cvc_expires_after_ten_minutes() {
    let srv = TestServer::start().await;
    srv.clock.freeze();
    let r = create(&srv, &srv.sk_test, AMEX, "7319").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    srv.clock
        .advance(Duration::from_secs(600) - Duration::from_millis(1));
    assert_eq!(shown(&srv, &id).await, true);
    srv.clock.advance(Duration::from_millis(2));
    assert_eq!(shown(&srv, &id).await, false);
    assert_eq!(take(&srv, &id).await, None);
}

#[tokio::test]
async fn a_cvc_for_a_vaulted_number_is_held_for_that_card() {
    let srv = TestServer::start().await;
    let first = srv.tokenize("4242424242424242").await;
    assert_eq!(first["cvc_available"], false);
    let id = first["id"].as_str().unwrap();
    let r = create(&srv, &srv.sk_test, "4242 4242 4242 4242", "737").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], first["id"]);
    assert_eq!(r.body["cvc_available"], true);
    assert_eq!(shown(&srv, id).await, true);

    // A publishable key learns only whether the CVC it sent is held: not whether one
    // was held before (that would say the number was vaulted).
    let r = create(&srv, &srv.pk_test, "4242424242424242", "456").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["object"], "card_token");
    assert_eq!(r.body["cvc_available"], true);
    assert_no_cvc(&r, "456");
    let r = srv
        .post(
            "/v1/cards",
            &srv.pk_test,
            json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}),
        )
        .await;
    assert_eq!(r.body["cvc_available"], false, "{}", r.text);
    assert_eq!(shown(&srv, id).await, true);
    // The latest CVC replaced the earlier one.
    assert_eq!(take(&srv, id).await.as_deref(), Some("456"));
}

#[tokio::test]
async fn a_bad_cvc_is_refused_and_not_echoed() {
    let srv = TestServer::start().await;
    let visa = "4242424242424242";
    for (number, cvc) in [
        (visa, "12"),
        (visa, "12345"),
        (visa, "12a"),
        (visa, "1234"),
        (visa, " 737"),
        (AMEX, "737"),
        (AMEX, "73190"),
    ] {
        let r = create(&srv, &srv.sk_test, number, cvc).await;
        r.assert_error(400, "cvc_invalid");
        assert!(!r.text_without_ids().contains(cvc.trim()), "{}", r.text);
    }
    // Not a string: refused by the body's schema.
    let r = srv
        .post(
            "/v1/cards",
            &srv.sk_test,
            json!({"number": visa, "exp_month": 12, "exp_year": 2030, "cvc": 737}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(!r.text_without_ids().contains("737"), "{}", r.text);
    // Nothing was created.
    let list = srv.get("/v1/cards", &srv.sk_test).await;
    assert_eq!(list.body["data"], json!([]));
}

#[tokio::test]
async fn deleting_a_card_forgets_its_cvc_and_a_restart_loses_them_all() {
    let srv = TestServer::start().await;
    let r = create(&srv, &srv.sk_test, "4242424242424242", "737").await;
    let gone = r.body["id"].as_str().unwrap().to_owned();
    let r = create(&srv, &srv.sk_test, "5555555555554444", "738").await;
    let kept = r.body["id"].as_str().unwrap().to_owned();
    let d = srv.delete(&format!("/v1/cards/{gone}"), &srv.sk_test).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(take(&srv, &gone).await, None);
    assert_eq!(shown(&srv, &kept).await, true);

    let sk = srv.sk_test.clone();
    let data = srv.stop().await;
    let srv = TestServer::start_on(data, |_| {}).await;
    let r = srv.get(&format!("/v1/cards/{kept}"), &sk).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cvc_available"], false, "a restart loses held CVCs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_redis_share_held_cvcs_and_each_is_used_once() {
    let mut redis_conn = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {REDIS_URL}: {e}"));
    let tweak = |c: &mut strongroom_server::ServerConfig| {
        c.rate_limit.store = RateLimitStore::Redis(REDIS_URL.into());
    };
    let a = TestServer::start_on(Arc::new(Data::new()), tweak).await;
    let b = TestServer::start_on(a.data.clone(), tweak).await;
    let acct = a.account.clone();
    let cvc = "4821";
    let r = create(&a, &a.sk_test, AMEX, cvc).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = b.get(&format!("/v1/cards/{id}"), &a.sk_test).await;
    assert_eq!(r.body["cvc_available"], true, "{}", r.text);

    // Sealed in Redis, under a name that does not show the card.
    let names: Vec<String> = redis::cmd("KEYS")
        .arg("strongroom:cvc:*")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!(!names.is_empty());
    for name in &names {
        assert!(!name.contains(&id) && !name.contains(&a.account));
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(name)
            .query_async(&mut redis_conn)
            .await
            .unwrap();
        let value = value.unwrap_or_default();
        assert!(!value.windows(4).any(|w| w == cvc.as_bytes()));
    }

    // Taken through one node, it is gone for the other.
    assert_eq!(take_on(&b, &acct, &id).await.as_deref(), Some(cvc));
    assert_eq!(take(&a, &id).await, None);
    assert_eq!(take_on(&b, &acct, &id).await, None);
    let r = a.get(&format!("/v1/cards/{id}"), &a.sk_test).await;
    assert_eq!(r.body["cvc_available"], false);

    // Deleting through one node forgets it for both; a node's restart loses nothing.
    let again = create(&a, &a.sk_test, AMEX, cvc).await;
    assert_eq!(again.body["cvc_available"], true);
    let other = create(&a, &a.sk_test, "5555555555554444", "738").await;
    let other = other.body["id"].as_str().unwrap().to_owned();
    a.delete(&format!("/v1/cards/{id}"), &a.sk_test).await;
    assert_eq!(take_on(&b, &acct, &id).await, None);
    let sk = a.sk_test.clone();
    a.stop().await;
    let r = b.get(&format!("/v1/cards/{other}"), &sk).await;
    assert_eq!(r.body["cvc_available"], true, "{}", r.text);
    assert_eq!(take_on(&b, &acct, &other).await.as_deref(), Some("738"));
    assert_no_cvc(&r, "738");
}
