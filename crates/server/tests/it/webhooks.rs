//! Events and webhooks: signatures checked by our verifier and by the public
//! `standardwebhooks` packages (Python, npm), retries with `Retry-After`, `410`,
//! redelivery, rotation, live-mode destination rules, inbound processor hooks.

use crate::harness::{TestServer, captured_logs, test_pan};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strongroom_crypto::webhook as sig;
use strongroom_server::ServerConfig;
use strongroom_server::service::inbound::{InboundScheme, InboundSource};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Got {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    got: Vec<Got>,
    /// Scripted answers (status, Retry-After); 200 once empty.
    script: VecDeque<(u16, Option<String>)>,
}

/// A webhook receiver on 127.0.0.1 (plain HTTP, allowed for test-mode endpoints in
/// dev deployments).
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let next = {
        let mut inner = r.inner.lock().unwrap();
        inner.got.push(Got {
            id: h("webhook-id"),
            timestamp: h("webhook-timestamp").parse().unwrap_or(0),
            signature: h("webhook-signature"),
            body,
            at: Instant::now(),
        });
        inner.script.pop_front()
    };
    match next {
        // 999: hang longer than the server's timeout.
        Some((999, _)) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::OK, "late").into_response()
        }
        Some((status, header)) => {
            let mut res = (StatusCode::from_u16(status).unwrap(), "scripted").into_response();
            if let Some(v) = header {
                // Retry-After, or Location for a redirect.
                let name = if (300..400).contains(&status) {
                    "location"
                } else {
                    "retry-after"
                };
                res.headers_mut().insert(name, v.parse().unwrap());
            }
            res
        }
        None => (StatusCode::OK, "ok").into_response(),
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            listener.local_addr().unwrap().port()
        );
        let r = Receiver {
            inner: Arc::default(),
            url,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub fn script(&self, answers: &[(u16, Option<&str>)]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().map(|(s, h)| (*s, h.map(str::to_owned))));
    }

    pub fn got(&self) -> Vec<Got> {
        self.inner.lock().unwrap().got.clone()
    }

    /// Waits (polling, 30 s deadline) until `pred` holds for what was received.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Short retries and a fast poll, so tests take seconds.
fn fast(c: &mut ServerConfig) {
    c.webhooks.poll_interval = Duration::from_millis(50);
    c.webhooks.retry_schedule = vec![Duration::from_millis(200); 6];
    c.webhooks.retry_schedule[0] = Duration::ZERO;
}

async fn server() -> TestServer {
    TestServer::start_on(Arc::new(crate::harness::Data::new()), fast).await
}

/// Live deliveries (OTP codes) go to public HTTPS only; the tests' receivers are on
/// loopback, which this server lets them reach.
async fn loopback_live_server() -> TestServer {
    TestServer::start_on(Arc::new(crate::harness::Data::new()), |c| {
        fast(c);
        c.webhooks.loopback_for_tests = true;
    })
    .await
}

async fn endpoint(s: &TestServer, key: &str, url: &str, signing: &str, events: Value) -> Value {
    let r = s
        .post(
            "/v1/webhook_endpoints",
            key,
            json!({"url": url, "enabled_events": events, "signing": signing}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

fn card_created(g: &Got) -> bool {
    g.body.contains("\"card.created\"")
}

/// Runs an interop script on one received message; a missing tool fails the test.
fn interop(cmd: &str, script: &str, message: &Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/webhooks");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message.to_string()).unwrap();
    let out = std::process::Command::new(cmd)
        .arg(dir.join(script))
        .arg(file.path())
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("`{cmd}` is required for the webhook interop tests: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd} {script} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn hmac_deliveries_verify_here_and_with_the_public_packages() {
    let s = server().await;
    let rx = Receiver::start().await;
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    let secret = ep["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    // Shown once: never again.
    let again = s
        .get(
            &format!("/v1/webhook_endpoints/{}", ep["id"].as_str().unwrap()),
            &s.sk_test,
        )
        .await;
    assert_eq!(again.status, 200);
    assert!(again.body.get("secret").is_none());
    assert!(!again.text.contains(&secret));

    let card = s.tokenize(&test_pan(1)).await;
    let got = rx
        .wait_for("card.created", |g| g.iter().any(card_created))
        .await;
    let m = got.iter().find(|g| card_created(g)).unwrap();
    assert!(m.id.starts_with("evt_"));
    let body: Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(body["id"], m.id.as_str());
    assert_eq!(body["type"], "card.created");
    assert_eq!(body["data"]["object"]["id"], card["id"]);
    assert!(!m.body.contains("4000000"), "no PAN in an event");

    // Our own verifier.
    let key = sig::decode_hmac_secret(&secret).unwrap();
    let content = sig::signed_content(&m.id, m.timestamp, m.body.as_bytes());
    assert!(m.signature.starts_with("v1,"));
    assert!(sig::verify_standard(&m.signature, &content, &[&key], &[]));
    let mut flipped = m.body.clone().into_bytes();
    flipped[10] ^= 1;
    let bad = sig::signed_content(&m.id, m.timestamp, &flipped);
    assert!(!sig::verify_standard(&m.signature, &bad, &[&key], &[]));

    // The public packages.
    let msg = json!({"secret": secret, "id": m.id, "timestamp": m.timestamp, "signature": m.signature, "body": m.body});
    interop("python3", "verify.py", &msg);
    interop("node", "verify.js", &msg);

    // The event is readable through the API, with the same body.
    let ev = s.get(&format!("/v1/events/{}", m.id), &s.sk_test).await;
    assert_eq!(ev.status, 200);
    assert_eq!(ev.body, body);
    let list = s
        .get("/v1/events?type=card.created&limit=5", &s.sk_test)
        .await;
    assert_eq!(list.status, 200);
    assert!(
        list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == m.id.as_str())
    );
    // Publishable keys cannot read events.
    s.get("/v1/events", &s.pk_test)
        .await
        .assert_error(403, "permission_denied");
    assert!(!captured_logs().contains(&secret));
}

#[tokio::test]
async fn ed25519_deliveries_carry_v1a_under_the_public_key() {
    let s = server().await;
    let rx = Receiver::start().await;
    let ep = endpoint(&s, &s.sk_test, &rx.url, "ed25519", json!(["*"])).await;
    assert!(ep.get("secret").is_none());
    let pk = ep["public_key"].as_str().unwrap().to_owned();
    assert!(pk.starts_with("whpk_"));
    s.tokenize(&test_pan(2)).await;
    let got = rx
        .wait_for("card.created", |g| g.iter().any(card_created))
        .await;
    let m = got.iter().find(|g| card_created(g)).unwrap();
    assert!(m.signature.starts_with("v1a,"));
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        pk.strip_prefix("whpk_").unwrap(),
    )
    .unwrap();
    assert_eq!(raw.len(), 32);
    let content = sig::signed_content(&m.id, m.timestamp, m.body.as_bytes());
    assert!(sig::verify_standard(&m.signature, &content, &[], &[&raw]));
    let stale = sig::signed_content(&m.id, m.timestamp - 1, m.body.as_bytes());
    assert!(!sig::verify_standard(&m.signature, &stale, &[], &[&raw]));
    let msg = json!({"public_key": pk, "id": m.id, "timestamp": m.timestamp, "signature": m.signature, "body": m.body});
    interop("node", "verify.js", &msg);
    interop("python3", "verify.py", &msg);
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_fourth_attempt_keeps_the_webhook_id() {
    // The default schedule (5 s, 5 min, …): only Retry-After makes this take seconds.
    let s = TestServer::start_on(Arc::new(crate::harness::Data::new()), |c| {
        c.webhooks.poll_interval = Duration::from_millis(50);
    })
    .await;
    let rx = Receiver::start().await;
    rx.script(&[(503, Some("1")), (503, Some("1")), (503, Some("1"))]);
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    s.tokenize(&test_pan(3)).await;
    let got = rx.wait_for("four attempts", |g| g.len() >= 4).await;
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|g| g.id == got[0].id),
        "same webhook-id on every attempt"
    );
    for w in got.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(900),
            "Retry-After: 1 honoured, gap {gap:?}"
        );
    }
    // Recorded: four attempts, three 503 then 200; the delivery is done.
    let id = ep["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = s
            .get(&format!("/v1/webhook_endpoints/{id}/attempts"), &s.sk_test)
            .await;
        let data = a.body["data"].as_array().unwrap().clone();
        if data.len() == 4 {
            let mut statuses: Vec<i64> =
                data.iter().map(|x| x["status"].as_i64().unwrap()).collect();
            statuses.reverse();
            assert_eq!(statuses, vec![503, 503, 503, 200]);
            assert_eq!(data[3]["error_class"], "http_status");
            assert_eq!(data[3]["response_body"], "scripted");
            assert_eq!(a.body["has_more"], false);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "attempts not recorded: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A page at a time, newest first, the next page after the last one's id.
    let path = format!("/v1/webhook_endpoints/{id}/attempts");
    let first = s.get(&format!("{path}?limit=3"), &s.sk_test).await;
    let data = first.body["data"].as_array().unwrap();
    assert_eq!((data.len(), &first.body["has_more"]), (3, &json!(true)));
    assert_eq!(data[0]["status"], 200);
    let cursor = data[2]["id"].as_str().unwrap();
    assert_eq!(cursor, format!("{}:2", got[0].id));
    let rest = s
        .get(
            &format!("{path}?limit=3&starting_after={cursor}"),
            &s.sk_test,
        )
        .await;
    let data = rest.body["data"].as_array().unwrap();
    assert_eq!((data.len(), &rest.body["has_more"]), (1, &json!(false)));
    assert_eq!(
        (&data[0]["attempt"], &data[0]["status"]),
        (&json!(1), &json!(503))
    );
    for bad in [
        "limit=0",
        "limit=101",
        "starting_after=evt_x:1",
        "starting_after=nocolon",
    ] {
        s.get(&format!("{path}?{bad}"), &s.sk_test)
            .await
            .assert_error(400, "invalid_parameter");
    }
    let d = s
        .get(&format!("/v1/events/{}/deliveries", got[0].id), &s.sk_test)
        .await;
    assert_eq!(d.body["data"][0]["state"], "delivered");
    assert_eq!(d.body["data"][0]["attempts"], 4);
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_emits_an_event() {
    let s = server().await;
    let rx = Receiver::start().await;
    let watcher = Receiver::start().await;
    rx.script(&[(410, None)]);
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    endpoint(
        &s,
        &s.sk_test,
        &watcher.url,
        "hmac-sha256",
        json!(["webhook_endpoint.disabled"]),
    )
    .await;
    s.tokenize(&test_pan(4)).await;
    let got = watcher
        .wait_for("webhook_endpoint.disabled", |g| !g.is_empty())
        .await;
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["type"], "webhook_endpoint.disabled");
    assert_eq!(body["data"]["object"]["id"], ep["id"]);
    assert_eq!(body["data"]["object"]["disabled_reason"], "gone");
    let e = s
        .get(
            &format!("/v1/webhook_endpoints/{}", ep["id"].as_str().unwrap()),
            &s.sk_test,
        )
        .await;
    assert_eq!(e.body["status"], "disabled");
    // Disabled: nothing more is sent to it.
    s.tokenize(&test_pan(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 1);
}

#[tokio::test]
async fn duplicates_and_failed_writes_send_nothing_and_redeliver_resends() {
    let s = server().await;
    let rx = Receiver::start().await;
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created", "card.deleted"]),
    )
    .await;
    let pan = test_pan(6);
    s.tokenize(&pan).await;
    s.tokenize(&pan).await; // dedup: no new card, no event
    // A delete of a card that does not exist changes nothing and emits nothing.
    s.delete(
        "/v1/cards/card_0192f3a4b5c67d8e9f00112233445566",
        &s.sk_test,
    )
    .await
    .assert_error(404, "not_found");
    let got = rx.wait_for("one card.created", |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 1, "exactly one event: {got:?}");

    // Redeliver: same webhook-id, fresh signature.
    let id = got[0].id.clone();
    let r = s
        .post(&format!("/v1/events/{id}/redeliver"), &s.sk_test, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["queued"], 1);
    let got = rx.wait_for("redelivery", |g| g.len() >= 2).await;
    assert_eq!(got[1].id, id);

    // Recover since the start: the same event again.
    let r = s
        .post(
            &format!(
                "/v1/webhook_endpoints/{}/recover",
                ep["id"].as_str().unwrap()
            ),
            &s.sk_test,
            json!({"since": 0}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["queued"], 1);
    let got = rx.wait_for("recovery", |g| g.len() >= 3).await;
    assert_eq!(got[2].id, id);
}

#[tokio::test]
async fn rotated_secrets_sign_side_by_side() {
    let s = server().await;
    let rx = Receiver::start().await;
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    let old = sig::decode_hmac_secret(ep["secret"].as_str().unwrap()).unwrap();
    let r = s
        .post(
            &format!(
                "/v1/webhook_endpoints/{}/rotate_secret",
                ep["id"].as_str().unwrap()
            ),
            &s.sk_test,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = sig::decode_hmac_secret(r.body["secret"].as_str().unwrap()).unwrap();
    assert_ne!(old, new);
    assert!(r.body["secret_rotation_ends_at"].is_i64());
    s.tokenize(&test_pan(7)).await;
    let got = rx.wait_for("delivery", |g| !g.is_empty()).await;
    let m = &got[0];
    let parts: Vec<&str> = m.signature.split(' ').collect();
    assert_eq!(parts.len(), 2, "two signatures during the overlap");
    let content = sig::signed_content(&m.id, m.timestamp, m.body.as_bytes());
    assert!(sig::verify_standard(&m.signature, &content, &[&old], &[]));
    assert!(sig::verify_standard(&m.signature, &content, &[&new], &[]));
    // After 24 h only the new secret signs.
    s.clock.advance(Duration::from_secs(24 * 3600 + 60));
    s.tokenize(&test_pan(8)).await;
    let got = rx.wait_for("second delivery", |g| g.len() >= 2).await;
    assert_eq!(got[1].signature.split(' ').count(), 1);
    let content = sig::signed_content(&got[1].id, got[1].timestamp, got[1].body.as_bytes());
    assert!(sig::verify_standard(
        &got[1].signature,
        &content,
        &[&new],
        &[]
    ));
    assert!(!sig::verify_standard(
        &got[1].signature,
        &content,
        &[&old],
        &[]
    ));
}

#[tokio::test]
async fn live_mode_refuses_private_destinations() {
    let s = server().await;
    for url in [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://100.100.100.200/hook",
        "https://localhost/hook",
        "https://localhost.:8443/hook",
        "http://127.0.0.1/hook",
        "http://example.com/hook",
        "https://user:pw@example.com/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let r = s
            .post(
                "/v1/webhook_endpoints",
                &s.sk_live,
                json!({"url": url, "enabled_events": ["*"]}),
            )
            .await;
        r.assert_error(400, "url_not_allowed");
        assert!(!r.text.contains(url), "the message never echoes input");
    }
    // The OTP event cannot be subscribed to.
    s.post(
        "/v1/webhook_endpoints",
        &s.sk_live,
        json!({"url": "https://example.com/h", "enabled_events": ["otp.created"]}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    // A public HTTPS destination is accepted (no DNS needed for an IP literal).
    let r = s
        .post(
            "/v1/webhook_endpoints",
            &s.sk_live,
            json!({"url": "https://93.184.215.14/hook", "enabled_events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Test mode in a dev deployment: plain HTTP to loopback only.
    let r = s
        .post(
            "/v1/webhook_endpoints",
            &s.sk_test,
            json!({"url": "http://10.0.0.1/h", "enabled_events": ["*"]}),
        )
        .await;
    r.assert_error(400, "url_not_allowed");
    // Unknown fields and bad signing schemes are refused.
    s.post(
        "/v1/webhook_endpoints",
        &s.sk_test,
        json!({"url": "https://example.com/h", "enabled_events": ["*"], "signing": "md5"}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    s.post(
        "/v1/webhook_endpoints",
        &s.sk_test,
        json!({"url": "https://example.com/h", "enabled_events": ["*"], "x": 1}),
    )
    .await
    .assert_error(400, "unknown_field");
}

#[tokio::test]
async fn live_deliveries_resolve_and_refuse_private_addresses() {
    // An endpoint that was acceptable when registered but whose name now resolves to
    // loopback is refused at delivery time, before any connection.
    let s = server().await;
    let rx = Receiver::start().await;
    let ep = endpoint(&s, &s.sk_test, &rx.url, "hmac-sha256", json!(["*"])).await;
    let _ = ep;
    let pk = strongroom_server::service::egress::is_public;
    assert!(!pk("127.0.0.1".parse().unwrap()));
    assert!(!pk("169.254.169.254".parse().unwrap()));
    assert!(!pk("10.0.0.1".parse().unwrap()));
    assert!(!pk("::1".parse().unwrap()));
    assert!(!pk("64:ff9b::a9fe:a9fe".parse().unwrap()));
    assert!(pk("93.184.215.14".parse().unwrap()));
    assert!(pk("2606:2800:21f:cb07:6820:80da:af6b:8b2c"
        .parse()
        .unwrap()));
    // The strict client's resolver refuses `localhost` (it resolves to loopback).
    let clients =
        strongroom_server::service::webhooks::Clients::new(Duration::from_secs(5), None).unwrap();
    let class = clients
        .probe_strict(&format!(
            "https://localhost:{}/hook",
            rx.url.rsplit(':').next().unwrap().trim_end_matches("/hook")
        ))
        .await;
    assert_eq!(class, "refused_address");
    assert!(rx.got().is_empty());
}

#[tokio::test]
async fn inbound_hooks_are_verified_on_the_raw_bytes() {
    let data = Arc::new(crate::harness::Data::new());
    // The account is created by the harness; sources name it after start, so boot once
    // to learn it, then restart with the sources configured.
    let s = TestServer::start_on(data.clone(), fast).await;
    let account = s.account.clone();
    let sk = s.sk_test.clone();
    let data = s.stop().await;
    let src = |name: &str, scheme| InboundSource {
        name: name.into(),
        account_id: account.clone(),
        mode: strongroom_core::Mode::Test,
        scheme,
        secret: strongroom_core::Sensitive::new(b"inbound-secret".to_vec()),
    };
    let sources = vec![
        src(
            "m2p",
            InboundScheme::HmacSha256Hex {
                header: "x-m2p-signature".into(),
            },
        ),
        src(
            "stripe",
            InboundScheme::Stripe {
                header: "stripe-signature".into(),
                tolerance_s: 300,
            },
        ),
        src("svix", InboundScheme::StandardWebhooks { tolerance_s: 300 }),
    ];
    let s = TestServer::start_on(data, move |c| {
        fast(c);
        c.inbound_sources = sources;
    })
    .await;
    let body = r#"{"type":"txn.settled","amount":100,"card":"4242424242424242"}"#;
    let post = |path: &str, headers: Vec<(&'static str, String)>, body: &'static str| {
        let mut req = s.client.post(format!("{}{path}", s.url)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { crate::harness::Resp::from(req.send().await.unwrap()).await }
    };
    let mac = hex::encode(strongroom_crypto::hmac_sha256(
        b"inbound-secret",
        body.as_bytes(),
    ));
    let r = post(
        "/v1/inbound/m2p",
        vec![("x-m2p-signature", mac.clone())],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post(
        "/v1/inbound/m2p",
        vec![("x-m2p-signature", mac.clone())],
        r#"{"type":"txn.settled","amount":101}"#,
    )
    .await
    .assert_error(401, "signature_invalid");
    post("/v1/inbound/m2p", vec![], body)
        .await
        .assert_error(401, "signature_invalid");
    let now = strongroom_core::Clock::now_ms(&s.clock) / 1000;
    let stripe = |t: i64| {
        let v1 = hex::encode(strongroom_crypto::hmac_sha256(
            b"inbound-secret",
            format!("{t}.{body}").as_bytes(),
        ));
        format!("t={t},v1={v1}")
    };
    let r = post(
        "/v1/inbound/stripe",
        vec![("stripe-signature", stripe(now))],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post(
        "/v1/inbound/stripe",
        vec![("stripe-signature", stripe(now - 3600))],
        body,
    )
    .await
    .assert_error(401, "signature_invalid");
    let sw = sig::sign_v1(b"inbound-secret", "msg_1", now, body.as_bytes());
    let r = post(
        "/v1/inbound/svix",
        vec![
            ("webhook-id", "msg_1".into()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", sw),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    post("/v1/inbound/nope", vec![], body)
        .await
        .assert_error(404, "not_found");
    // Three verified hooks became inbound.received events.
    let ev = s.get("/v1/events?type=inbound.received", &sk).await;
    let data = ev.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{}", ev.text);
    assert_eq!(data[0]["data"]["object"]["payload"]["amount"], 100);
    // A card number in a processor's notification is never stored or emitted.
    assert_eq!(data[0]["data"]["object"]["payload"]["card"], "[REDACTED]");
    assert!(!ev.text.contains("4242424242424242"));
    crate::harness::assert_not_logged(&["4242424242424242"]);
}

#[tokio::test]
async fn an_inbound_source_naming_a_missing_account_stops_the_start() {
    // Otherwise hooks would verify and then have no account to be recorded under.
    let data = crate::harness::Data::new();
    let missing = "acct_0192f3a4b5c67d8e9f00112233445566";
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap(), None, data.store.clone());
    c.metrics_listen = None;
    c.inbound_sources = vec![InboundSource {
        name: "m2p".into(),
        account_id: missing.into(),
        mode: strongroom_core::Mode::Live,
        scheme: InboundScheme::HmacSha256Hex {
            header: "x-m2p-signature".into(),
        },
        secret: strongroom_core::Sensitive::new(b"inbound-secret-never-shown".to_vec()),
    }];
    let root = strongroom_crypto::RootKey::from_bytes(&data.root).unwrap();
    let err = match strongroom_server::start(c, root).await {
        Ok(_) => panic!("started with an inbound source for a missing account"),
        Err(e) => e,
    };
    assert!(
        matches!(err, strongroom_server::StartError::Config(_)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("\"m2p\"") && msg.contains(missing), "{msg}");
    assert!(!msg.contains("inbound-secret"), "{msg}");
}

#[tokio::test]
async fn live_otp_codes_reach_only_the_otp_endpoint() {
    let s = loopback_live_server().await;
    let otp_rx = Receiver::start().await;
    let acct = s
        .post(
            "/v1/admin/accounts",
            &s.admin_key,
            json!({"name": "Live", "otp_delivery_url": otp_rx.url}),
        )
        .await;
    assert_eq!(acct.status, 201, "{}", acct.text);
    let id = acct.body["id"].as_str().unwrap();
    let secret = acct.body["otp_signing_secret"].as_str().unwrap().to_owned();
    let key = |body: Value| {
        let path = format!("/v1/admin/accounts/{id}/api_keys");
        let s = &s;
        async move {
            let r = s.post(&path, &s.admin_key, body).await;
            r.body["secret"].as_str().unwrap().to_owned()
        }
    };
    let sk = key(json!({"kind": "secret", "mode": "live"})).await;
    let rk = key(json!({"kind": "restricted", "mode": "live", "scopes": ["cards:reveal"]})).await;
    // A live endpoint for every event (unreachable; only the fan-out matters here).
    let all = s
        .post(
            "/v1/webhook_endpoints",
            &sk,
            json!({"url": "https://93.184.215.14/hook", "enabled_events": ["*"]}),
        )
        .await;
    assert_eq!(all.status, 201, "{}", all.text);
    let card = s
        .post(
            "/v1/cards",
            &sk,
            json!({"number": "4532015112830366", "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    let card_id = card.body["id"].as_str().unwrap().to_owned();
    let otp = s
        .post(
            "/v1/otp",
            &rk,
            json!({"purpose": "card.reveal", "card": card_id}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    let got = otp_rx.wait_for("otp.created", |g| !g.is_empty()).await;
    let m = &got[0];
    let key_bytes = sig::decode_hmac_secret(&secret).unwrap();
    let content = sig::signed_content(&m.id, m.timestamp, m.body.as_bytes());
    assert!(sig::verify_standard(
        &m.signature,
        &content,
        &[&key_bytes],
        &[]
    ));
    let body: Value = serde_json::from_str(&m.body).unwrap();
    let code = body["data"]["object"]["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);

    // The event is listed without the code (or its ciphertext), and only the OTP
    // endpoint got a delivery for it; the `*` endpoint did not.
    let ev = s.get(&format!("/v1/events/{}", m.id), &sk).await;
    assert_eq!(ev.body["type"], "otp.created");
    assert!(ev.body["data"]["object"].get("code").is_none());
    assert!(ev.body["data"]["object"].get("sealed_code").is_none());
    let d = s.get(&format!("/v1/events/{}/deliveries", m.id), &sk).await;
    let d = d.body["data"].as_array().unwrap();
    assert_eq!(d.len(), 1);
    assert_ne!(d[0]["endpoint"], all.body["id"]);
    // The OTP endpoint is not an API-managed endpoint.
    let list = s.get("/v1/webhook_endpoints", &sk).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);

    let shown = s
        .post(
            &format!("/v1/cards/{card_id}/reveal"),
            &rk,
            json!({"otp": otp.body["id"], "code": code}),
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    crate::harness::assert_not_logged(&["4532015112830366"]);
    assert!(!captured_logs().contains(&format!("\"{code}\"")));
}

#[tokio::test]
async fn five_days_of_failure_disable_the_endpoint() {
    // Enough attempts that the delivery is still retrying when the clock moves.
    let s = TestServer::start_on(Arc::new(crate::harness::Data::new()), |c| {
        fast(c);
        c.webhooks.retry_schedule = vec![Duration::from_millis(200); 50];
    })
    .await;
    let rx = Receiver::start().await;
    let watcher = Receiver::start().await;
    rx.script(&[(500, None); 60]);
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    endpoint(
        &s,
        &s.sk_test,
        &watcher.url,
        "hmac-sha256",
        json!(["webhook_endpoint.disabled"]),
    )
    .await;
    s.tokenize(&test_pan(9)).await;
    rx.wait_for("a failed attempt", |g| g.len() >= 2).await;
    // Still enabled after a few failures.
    let e = s
        .get(
            &format!("/v1/webhook_endpoints/{}", ep["id"].as_str().unwrap()),
            &s.sk_test,
        )
        .await;
    assert_eq!(e.body["status"], "enabled");
    // Five days later the run of failures continues: disabled, and the event says so.
    s.clock.advance(Duration::from_secs(5 * 24 * 3600 + 1));
    let got = watcher
        .wait_for("webhook_endpoint.disabled", |g| !g.is_empty())
        .await;
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["data"]["object"]["id"], ep["id"]);
    assert_eq!(body["data"]["object"]["disabled_reason"], "failing");
    let e = s
        .get(
            &format!("/v1/webhook_endpoints/{}", ep["id"].as_str().unwrap()),
            &s.sk_test,
        )
        .await;
    assert_eq!(e.body["status"], "disabled");
    // Enabling clears the run.
    let r = s
        .post(
            &format!(
                "/v1/webhook_endpoints/{}/enable",
                ep["id"].as_str().unwrap()
            ),
            &s.sk_test,
            json!({}),
        )
        .await;
    assert_eq!(r.body["status"], "enabled");
}

#[tokio::test]
async fn events_are_kept_thirty_days() {
    let s = server().await;
    let card = s.tokenize(&test_pan(10)).await;
    let list = s.get("/v1/events?type=card.created", &s.sk_test).await;
    let ev = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"]["object"]["id"] == card["id"])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.clock.advance(Duration::from_secs(29 * 24 * 3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.get(&format!("/v1/events/{ev}"), &s.sk_test).await.status,
        200
    );
    // The pruner runs at most hourly (by the server's clock).
    s.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get(&format!("/v1/events/{ev}"), &s.sk_test).await;
        if r.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event older than 30 days still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_nodes_share_deliveries_without_double_sending() {
    // Several nodes share one PostgreSQL store; the embedded SQLite store is one process.
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "two_nodes_share_deliveries_without_double_sending",
    ) {
        return;
    }
    let data = Arc::new(crate::harness::Data::new());
    let a = TestServer::start_on(data.clone(), fast).await;
    let b = TestServer::start_on(data, fast).await;
    let rx = Receiver::start().await;
    endpoint(
        &a,
        &a.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    let n = 200u64;
    for i in 0..n {
        // Alternate nodes; both read the same keys and accounts.
        let s = if i % 2 == 0 { &a } else { &b };
        let r = s
            .post(
                "/v1/cards",
                &a.sk_test,
                json!({"number": test_pan(100 + i), "exp_month": 12, "exp_year": 2030}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    rx.wait_for("every card.created", |g| g.len() >= n as usize)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.got();
    let ids: std::collections::HashSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids.len(), n as usize);
    assert_eq!(
        got.len(),
        n as usize,
        "no event sent twice in the normal case"
    );
}

#[tokio::test]
async fn timeouts_redirects_and_long_retry_after_are_bounded() {
    let s = TestServer::start_on(Arc::new(crate::harness::Data::new()), |c| {
        fast(c);
        c.webhooks.timeout = Duration::from_secs(1);
        c.webhooks.retry_after_cap = Duration::from_secs(1);
    })
    .await;
    let rx = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    rx.script(&[
        (999, None),
        (302, Some(elsewhere.url.as_str())),
        (503, Some("86400")),
    ]);
    let ep = endpoint(
        &s,
        &s.sk_test,
        &rx.url,
        "hmac-sha256",
        json!(["card.created"]),
    )
    .await;
    s.tokenize(&test_pan(11)).await;
    // Timeout, redirect (not followed), Retry-After capped at 1 s, then 200.
    let got = rx.wait_for("four attempts", |g| g.len() >= 4).await;
    let gap = got[3].at - got[2].at;
    assert!(
        gap < Duration::from_secs(10),
        "Retry-After capped, gap {gap:?}"
    );
    assert!(elsewhere.got().is_empty(), "redirects are not followed");
    let id = ep["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = s
            .get(&format!("/v1/webhook_endpoints/{id}/attempts"), &s.sk_test)
            .await;
        let mut data = a.body["data"].as_array().unwrap().clone();
        if data.len() == 4 {
            data.reverse();
            assert_eq!(data[0]["error_class"], "timeout");
            assert!(data[0]["status"].is_null());
            assert_eq!(data[1]["status"], 302);
            assert_eq!(data[2]["status"], 503);
            assert_eq!(data[3]["status"], 200);
            break;
        }
        assert!(Instant::now() < deadline, "attempts: {}", a.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn otp_signing_secret_rotates_with_an_overlap() {
    let s = loopback_live_server().await;
    let otp_rx = Receiver::start().await;
    let acct = s
        .post(
            "/v1/admin/accounts",
            &s.admin_key,
            json!({"name": "Live", "otp_delivery_url": otp_rx.url}),
        )
        .await;
    assert_eq!(acct.status, 201, "{}", acct.text);
    let id = acct.body["id"].as_str().unwrap().to_owned();
    let old = acct.body["otp_signing_secret"].as_str().unwrap().to_owned();
    assert_eq!(acct.body["otp_signing_secret_version"], 1);

    let rotate = format!("/v1/admin/accounts/{id}/otp_signing_secret/rotate");
    let r = s.post(&rotate, &s.admin_key, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.body["otp_signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(r.body["otp_signing_secret_version"], 2);
    assert!(r.body["otp_signing_secret_rotation_ends_at"].is_i64());
    // The account's update view now shows the new secret.
    let patch = || async {
        s.call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/accounts/{id}"),
            Some(&s.admin_key),
            Some(json!({})),
        )
        .await
    };
    assert_eq!(patch().await.body["otp_signing_secret"], new.as_str());

    let key = |body: Value| {
        let path = format!("/v1/admin/accounts/{id}/api_keys");
        let s = &s;
        async move {
            let r = s.post(&path, &s.admin_key, body).await;
            r.body["secret"].as_str().unwrap().to_owned()
        }
    };
    let sk = key(json!({"kind": "secret", "mode": "live"})).await;
    let rk = key(json!({"kind": "restricted", "mode": "live", "scopes": ["cards:reveal"]})).await;
    let card = s
        .post(
            "/v1/cards",
            &sk,
            json!({"number": "4532015112830366", "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    let card_id = card.body["id"].as_str().unwrap().to_owned();
    let old_key = sig::decode_hmac_secret(&old).unwrap();
    let new_key = sig::decode_hmac_secret(&new).unwrap();
    let verifies = |m: &Got, k: &[u8]| {
        let content = sig::signed_content(&m.id, m.timestamp, m.body.as_bytes());
        sig::verify_standard(&m.signature, &content, &[k], &[])
    };
    let otp = || async {
        let r = s
            .post(
                "/v1/otp",
                &rk,
                json!({"purpose": "card.reveal", "card": card_id}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    };

    // During the overlap a delivery is signed under both secrets.
    otp().await;
    let got = otp_rx.wait_for("otp.created", |g| !g.is_empty()).await;
    assert!(verifies(&got[0], &new_key), "{}", got[0].signature);
    assert!(verifies(&got[0], &old_key), "{}", got[0].signature);

    // After it, under the new one only.
    s.clock.advance(Duration::from_secs(24 * 3600 + 1));
    otp().await;
    let got = otp_rx
        .wait_for("second otp.created", |g| g.len() >= 2)
        .await;
    assert!(verifies(&got[1], &new_key));
    assert!(!verifies(&got[1], &old_key));
    let shown = patch().await;
    assert_eq!(shown.body["otp_signing_secret"], new.as_str());
    assert!(shown.body["otp_signing_secret_rotation_ends_at"].is_null());

    // Without a delivery URL there is nothing to rotate; account keys may not.
    let plain = format!("/v1/admin/accounts/{}/otp_signing_secret/rotate", s.account);
    s.post(&plain, &s.admin_key, json!({}))
        .await
        .assert_error(409, "otp_delivery_not_configured");
    s.post(&rotate, &sk, json!({}))
        .await
        .assert_error(403, "permission_denied");
}

#[tokio::test]
async fn revoke_all_events_reach_webhooks() {
    // `account.keys_revoked` goes through the one event path, so it has deliveries.
    let s = server().await;
    let rx = Receiver::start().await;
    endpoint(&s, &s.sk_test, &rx.url, "hmac-sha256", json!(["*"])).await;
    let r = s
        .post(
            &format!("/v1/admin/accounts/{}/revoke_all", s.account),
            &s.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = rx
        .wait_for("account.keys_revoked", |g| {
            g.iter()
                .any(|m| m.body.contains("\"account.keys_revoked\""))
        })
        .await;
    let m = got
        .iter()
        .find(|m| m.body.contains("\"account.keys_revoked\""))
        .unwrap();
    let body: Value = serde_json::from_str(&m.body).unwrap();
    assert_eq!(body["mode"], "test");
}

#[tokio::test]
async fn inbound_redaction_sees_spaced_dashed_and_escaped_numbers() {
    let data = Arc::new(crate::harness::Data::new());
    let s = TestServer::start_on(data.clone(), fast).await;
    let (account, sk) = (s.account.clone(), s.sk_test.clone());
    let data = s.stop().await;
    let source = InboundSource {
        name: "m2p".into(),
        account_id: account,
        mode: strongroom_core::Mode::Test,
        scheme: InboundScheme::HmacSha256Hex {
            header: "x-m2p-signature".into(),
        },
        secret: strongroom_core::Sensitive::new(b"inbound-secret".to_vec()),
    };
    let s = TestServer::start_on(data, move |c| {
        fast(c);
        c.inbound_sources = vec![source];
    })
    .await;
    let rx = Receiver::start().await;
    endpoint(&s, &sk, &rx.url, "hmac-sha256", json!(["inbound.received"])).await;
    // The same number spelled four ways, one of them with JSON escapes that only a
    // parser turns back into digits, one as a bare JSON number, one in a key.
    let body = r#"{"spaced":"4242 4242 4242 4242","dashed":"card 5555-5555-5555-4444 ok","escaped":"\u0034\u0032424242424242\u00342","n":[4000056655665556],"4111111111111111":"k","ref":"1234567890123","amount":100}"#;
    let mac = hex::encode(strongroom_crypto::hmac_sha256(
        b"inbound-secret",
        body.as_bytes(),
    ));
    let r = s
        .client
        .post(format!("{}/v1/inbound/m2p", s.url))
        .header("x-m2p-signature", mac)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = s.get("/v1/events?type=inbound.received", &sk).await;
    let p = &ev.body["data"][0]["data"]["object"]["payload"];
    assert_eq!(p["spaced"], "[REDACTED]", "{}", ev.text);
    assert_eq!(p["dashed"], "card [REDACTED] ok");
    assert_eq!(p["escaped"], "[REDACTED]");
    assert_eq!(p["n"][0], "[REDACTED]");
    assert_eq!(p["[REDACTED]"], "k");
    // Other numbers stay as they were.
    assert_eq!(p["ref"], "1234567890123");
    assert_eq!(p["amount"], 100);
    let got = rx.wait_for("inbound.received", |g| !g.is_empty()).await;
    let pans = [
        "4242424242424242",
        "5555555555554444",
        "4000056655665556",
        "4111111111111111",
    ];
    for text in [ev.text.as_str(), got[0].body.as_str()] {
        for pan in pans {
            for form in crate::harness::spellings(pan) {
                assert!(!text.contains(&form), "a card number was emitted");
            }
        }
        assert!(!text.contains("\\u0034"), "{text}");
    }
    crate::harness::assert_not_logged(&pans);
    // Nor stored: the inbound record keeps the redacted JSON, not the raw bytes.
    if let Some(db) = s.data.sqlite_files().first().cloned() {
        s.stop().await;
        for pan in pans {
            for form in crate::harness::spellings(pan) {
                crate::harness::assert_not_in_file(&db, &[&form]);
            }
        }
    }
}

#[tokio::test]
async fn endpoints_are_capped_per_account_and_mode_and_listed_in_pages() {
    let s = server().await;
    let rx = Receiver::start().await;
    // Concurrent creations cannot pass the cap together: the count and the insert share
    // the writer's transaction.
    let creates = (0..24).map(|_| {
        s.post(
            "/v1/webhook_endpoints",
            &s.sk_test,
            json!({"url": rx.url, "enabled_events": ["*"]}),
        )
    });
    let results = futures_util::future::join_all(creates).await;
    let created: Vec<&crate::harness::Resp> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        16,
        "the default cap is 16 per account and mode"
    );
    for r in results.iter().filter(|r| r.status != 201) {
        r.assert_error(409, "limit_reached");
        assert!(r.body.get("secret").is_none());
    }
    // The other mode has its own allowance.
    let live = s
        .post(
            "/v1/webhook_endpoints",
            &s.sk_live,
            json!({"url": "https://93.184.215.14/hook", "enabled_events": ["*"]}),
        )
        .await;
    assert_eq!(live.status, 201, "{}", live.text);
    // Pages of 5: oldest first, has_more until the last, no endpoint twice.
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/webhook_endpoints?limit=5&starting_after={a}"),
            None => "/v1/webhook_endpoints?limit=5".to_owned(),
        };
        let r = s.get(&path, &s.sk_test).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data = r.body["data"].as_array().unwrap();
        seen.extend(data.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        if r.body["has_more"] == false {
            assert_eq!(data.len(), 1);
            break;
        }
        assert_eq!(data.len(), 5);
        after = seen.last().cloned();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted), (16, seen.clone()));
    for bad in ["limit=0", "limit=101", "starting_after=nope", "cursor=x"] {
        let r = s
            .get(&format!("/v1/webhook_endpoints?{bad}"), &s.sk_test)
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    // Deleting one makes room for one.
    let gone = s
        .delete(&format!("/v1/webhook_endpoints/{}", seen[0]), &s.sk_test)
        .await;
    assert_eq!(gone.status, 200);
    let again = || {
        s.post(
            "/v1/webhook_endpoints",
            &s.sk_test,
            json!({"url": rx.url, "enabled_events": ["*"]}),
        )
    };
    assert_eq!(again().await.status, 201);
    again().await.assert_error(409, "limit_reached");
}

#[tokio::test]
async fn the_endpoint_cap_is_configurable() {
    let s = TestServer::start_on(Arc::new(crate::harness::Data::new()), |c| {
        fast(c);
        c.webhooks.max_endpoints = 2;
    })
    .await;
    let rx = Receiver::start().await;
    for _ in 0..2 {
        endpoint(&s, &s.sk_test, &rx.url, "hmac-sha256", json!(["*"])).await;
    }
    s.post(
        "/v1/webhook_endpoints",
        &s.sk_test,
        json!({"url": rx.url, "enabled_events": ["*"]}),
    )
    .await
    .assert_error(409, "limit_reached");
}

#[tokio::test]
async fn otp_delivery_urls_get_the_live_webhook_checks() {
    use strongroom_store::VaultStore;
    let s = server().await;
    // At registration: the rules of a live endpoint, with credentials refused and never
    // echoed (the old check took anything starting with https:// and loopback in dev).
    for url in [
        "https://otp-user:s3cret-pw@example.com/otp",
        "https://otp-user@example.com/otp",
        "http://127.0.0.1:9/otp",
        "https://127.0.0.1/otp",
        "https://10.0.0.1/otp",
        "https://169.254.169.254/latest",
        "https://localhost/otp",
    ] {
        let r = s
            .post(
                "/v1/admin/accounts",
                &s.admin_key,
                json!({"name": "x", "otp_delivery_url": url}),
            )
            .await;
        r.assert_error(400, "url_not_allowed");
        assert!(
            !r.text.contains("s3cret") && !r.text.contains(url),
            "{}",
            r.text
        );
        let r = s
            .call(
                reqwest::Method::PATCH,
                &format!("/v1/admin/accounts/{}", s.account),
                Some(&s.admin_key),
                Some(json!({"otp_delivery_url": url})),
            )
            .await;
        r.assert_error(400, "url_not_allowed");
    }
    let ok = s
        .post(
            "/v1/admin/accounts",
            &s.admin_key,
            json!({"name": "x", "otp_delivery_url": "https://93.184.215.14/otp"}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    // Webhook URLs with credentials are refused in every mode.
    s.post(
        "/v1/webhook_endpoints",
        &s.sk_test,
        json!({"url": "http://u:s3cret-pw@127.0.0.1:9/h", "enabled_events": ["*"]}),
    )
    .await
    .assert_error(400, "url_not_allowed");

    // At send time: an OTP URL stored before these checks (loopback, with credentials)
    // is refused before any connection, and never echoed with its credentials.
    let rx = Receiver::start().await;
    let legacy = rx.url.replace("http://", "http://otp-user:s3cret-pw@");
    let st = s.running.state().unwrap();
    let store = st.store();
    let mut acct = store.get_account(&s.account).await.unwrap().unwrap();
    acct.otp_delivery_url = Some(legacy);
    // Set behind the API's back: no request, so no audit scope.
    #[allow(clippy::disallowed_methods)]
    let updated = store.unaudited().update_account(&acct).await.unwrap();
    assert!(updated);
    let shown = s
        .get(&format!("/v1/admin/accounts/{}", s.account), &s.admin_key)
        .await;
    assert_eq!(shown.status, 200);
    assert!(!shown.text.contains("s3cret"), "{}", shown.text);
    let card = s
        .post(
            "/v1/cards",
            &s.sk_live,
            json!({"number": "4532015112830366", "exp_month": 3, "exp_year": 2031}),
        )
        .await;
    assert_eq!(card.status, 201, "{}", card.text);
    let otp = s
        .post(
            "/v1/otp",
            &s.sk_live,
            json!({"purpose": "pin.set", "card": card.body["id"]}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    let ev = s.get("/v1/events?type=otp.created", &s.sk_live).await;
    let ev_id = ev.body["data"][0]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = s
            .get(&format!("/v1/events/{ev_id}/deliveries"), &s.sk_live)
            .await;
        if d.body["data"][0]["attempts"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no attempt: {}", d.text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(rx.got().is_empty(), "the OTP code went to a loopback URL");
    assert!(!captured_logs().contains("s3cret"));

    // The same URL without credentials is refused too: loopback is not public.
    let mut acct = store.get_account(&s.account).await.unwrap().unwrap();
    acct.otp_delivery_url = Some(rx.url.clone());
    // Set behind the API's back: no request, so no audit scope.
    #[allow(clippy::disallowed_methods)]
    let updated = store.unaudited().update_account(&acct).await.unwrap();
    assert!(updated);
    let otp = s
        .post(
            "/v1/otp",
            &s.sk_live,
            json!({"purpose": "pin.set", "card": card.body["id"]}),
        )
        .await;
    assert_eq!(otp.status, 201, "{}", otp.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = s
            .get("/v1/events?type=otp.created&limit=1", &s.sk_live)
            .await;
        let id = ev.body["data"][0]["id"].as_str().unwrap().to_owned();
        let d = s
            .get(&format!("/v1/events/{id}/deliveries"), &s.sk_live)
            .await;
        if id != ev_id && d.body["data"][0]["attempts"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no attempt: {}", d.text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(rx.got().is_empty(), "the OTP code went to a loopback URL");
}
