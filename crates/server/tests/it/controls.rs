//! Gateway controls (docs/design/0003-gateway-controls.md): IP allowlists, rate limits
//! (memory and Redis, two nodes), idempotency, request signatures (with an independent
//! Python signer).

use crate::harness::{Data, Resp, TestServer, eventually, test_pan};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strongroom_server::gateway::RateLimitStore;

const REDIS_URL: &str = "redis://127.0.0.1:6379";

async fn send(
    srv: &TestServer,
    method: Method,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let mut req = srv
        .client
        .request(method, format!("{}{}", srv.url, path))
        .bearer_auth(key);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    Resp::from(req.send().await.unwrap()).await
}

/// The id of one of the test account's API keys, found by its shown prefix.
async fn key_id(srv: &TestServer, secret: &str) -> String {
    let r = srv
        .get(
            &format!("/v1/admin/accounts/{}/api_keys", srv.account),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys = r.body["data"].as_array().unwrap();
    let k = keys
        .iter()
        .find(|k| secret.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap();
    k["id"].as_str().unwrap().to_owned()
}

fn header(r: &Resp, name: &str) -> String {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------- IP allowlists

#[tokio::test]
async fn account_allowlist_admits_and_refuses() {
    let srv = TestServer::start().await;
    let r = srv.get("/v1/ip_allowlist", &srv.sk_test).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cidrs"], json!([]));
    // The allowlist protects live traffic too: a test key cannot change it.
    srv.call(
        Method::PUT,
        "/v1/ip_allowlist",
        Some(&srv.sk_test),
        Some(json!({"cidrs": ["10.0.0.0/8"]})),
    )
    .await
    .assert_error(403, "live_mode_required");

    // Bad input, and keys that may not change it.
    for bad in [
        json!({"cidrs": ["10.0.0.0/33"]}),
        json!({"cidrs": ["not an ip"]}),
    ] {
        srv.call(
            Method::PUT,
            "/v1/ip_allowlist",
            Some(&srv.sk_live),
            Some(bad),
        )
        .await
        .assert_error(400, "invalid_parameter");
    }
    srv.call(
        Method::PUT,
        "/v1/ip_allowlist",
        Some(&srv.pk_test),
        Some(json!({"cidrs": []})),
    )
    .await
    .assert_error(403, "permission_denied");

    // Loopback listed (and normalised): still admitted.
    let r = srv
        .call(
            Method::PUT,
            "/v1/ip_allowlist",
            Some(&srv.sk_live),
            Some(json!({"cidrs": ["127.0.0.1/8", "::1"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cidrs"], json!(["127.0.0.0/8", "::1/128"]));
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);

    // Only elsewhere: every key of the account is refused, the admin is not.
    let r = srv
        .call(
            Method::PUT,
            "/v1/ip_allowlist",
            Some(&srv.sk_live),
            Some(json!({"cidrs": ["10.0.0.0/8", "2001:db8::/32"]})),
        )
        .await;
    assert_eq!(r.status, 200);
    for key in [&srv.sk_test, &srv.pk_test, &srv.rk_reveal, &srv.sk_live] {
        let r = srv.get("/v1/cards", key).await;
        r.assert_error(403, "ip_not_allowed");
        // The quota is shown, not spent, and there is nothing to retry after.
        assert!(r.headers.get("ratelimit-limit").is_some());
        assert!(r.headers.get("retry-after").is_none());
    }
    let acct = srv.account.clone();
    assert_eq!(
        srv.get(&format!("/v1/admin/accounts/{acct}"), &srv.admin_key)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn key_allowlist_from_the_admin_api() {
    let srv = TestServer::start().await;
    let acct = srv.account.clone();
    let create = |cidrs: Value| {
        let srv = &srv;
        let acct = acct.clone();
        async move {
            srv.post(
                &format!("/v1/admin/accounts/{acct}/api_keys"),
                &srv.admin_key,
                json!({"kind": "secret", "mode": "test", "ip_allowlist": cidrs}),
            )
            .await
        }
    };
    create(json!(["300.1.1.1"]))
        .await
        .assert_error(400, "invalid_parameter");
    let far = create(json!(["192.0.2.0/24"])).await;
    assert_eq!(far.status, 201, "{}", far.text);
    assert_eq!(far.body["ip_allowlist"], json!(["192.0.2.0/24"]));
    let near = create(json!(["127.0.0.1"])).await;
    assert_eq!(near.status, 201);
    srv.get("/v1/cards", far.body["secret"].as_str().unwrap())
        .await
        .assert_error(403, "ip_not_allowed");
    assert_eq!(
        srv.get("/v1/cards", near.body["secret"].as_str().unwrap())
            .await
            .status,
        200
    );
    // Other keys of the account are unaffected.
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    // Behind a trusted proxy (the test client on loopback plays it).
    let proxied = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // Not behind one: X-Forwarded-For is whatever the client says, so it is ignored.
    let direct = TestServer::start().await;
    for srv in [&proxied, &direct] {
        let r = srv
            .call(
                Method::PUT,
                "/v1/ip_allowlist",
                Some(&srv.sk_live),
                Some(json!({"cidrs": ["203.0.113.0/24"]})),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let get = |srv: &TestServer, xff: Option<&str>| {
        let mut req = srv
            .client
            .get(format!("{}/v1/cards", srv.url))
            .bearer_auth(&srv.sk_test);
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        async move { Resp::from(req.send().await.unwrap()).await }
    };
    assert_eq!(get(&proxied, Some("203.0.113.5")).await.status, 200);
    // The right-most untrusted entry counts; a forged left-most entry does not.
    assert_eq!(
        get(&proxied, Some("198.51.100.1, 203.0.113.5, 127.0.0.1"))
            .await
            .status,
        200
    );
    get(&proxied, Some("203.0.113.5, 198.51.100.1"))
        .await
        .assert_error(403, "ip_not_allowed");
    get(&proxied, None)
        .await
        .assert_error(403, "ip_not_allowed");
    // Spoofed header from an untrusted peer changes nothing.
    get(&direct, Some("203.0.113.5"))
        .await
        .assert_error(403, "ip_not_allowed");
}

// ---------------------------------------------------------------- rate limits

fn small_limits(c: &mut strongroom_server::ServerConfig) {
    c.rate_limit.per_minute = 5;
    c.rate_limit.reveal_per_minute = 2;
    c.rate_limit.otp_per_minute = 3;
    c.rate_limit.ip_per_minute = 3;
}

#[tokio::test]
async fn gcra_per_credential_with_headers_and_retry_after() {
    let srv = TestServer::start_on(Arc::new(Data::new()), small_limits).await;
    for i in 0..5u32 {
        let r = srv.get("/v1/cards", &srv.sk_test).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
        assert_eq!(header(&r, "ratelimit-limit"), "5");
        assert_eq!(header(&r, "ratelimit-remaining"), (4 - i).to_string());
        assert!(header(&r, "ratelimit-reset").parse::<u64>().unwrap() <= 60);
    }
    let r = srv.get("/v1/cards", &srv.sk_test).await;
    r.assert_error(429, "rate_limited");
    // One request every 60/5 s; the first of the burst was sent a moment ago.
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((11..=12).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    // Errors count and carry the headers too; another credential has its own budget.
    let other = srv
        .get(
            "/v1/cards/card_00000000000000000000000000000000",
            &srv.sk_live,
        )
        .await;
    other.assert_error(404, "not_found");
    assert_eq!(header(&other, "ratelimit-remaining"), "4");
    // One interval later exactly one more request.
    srv.clock.advance(Duration::from_secs(12));
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);
    srv.get("/v1/cards", &srv.sk_test)
        .await
        .assert_error(429, "rate_limited");

    // The operator raises the account's limit; the burst follows.
    let acct = srv.account.clone();
    let r = srv
        .call(
            Method::PATCH,
            &format!("/v1/admin/accounts/{acct}"),
            Some(&srv.admin_key),
            Some(json!({"rate_limit_per_minute": 20})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["rate_limit_per_minute"], 20);
    // The backlog carries over: a full minute's worth is queued, and under the new
    // quota one slot frees every 3 s.
    srv.clock.advance(Duration::from_secs(3));
    srv.call(
        Method::PATCH,
        &format!("/v1/admin/accounts/{acct}"),
        Some(&srv.admin_key),
        Some(json!({"rate_limit_per_minute": 0})),
    )
    .await
    .assert_error(400, "invalid_parameter");
    let r = srv.get("/v1/cards", &srv.sk_test).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(header(&r, "ratelimit-limit"), "20");
}

#[tokio::test]
async fn reveal_otp_and_unauthenticated_limits_are_tighter() {
    let srv = TestServer::start_on(Arc::new(Data::new()), small_limits).await;
    let card = srv.tokenize(&test_pan(1)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // OTP creation: 3 per minute per credential.
    for _ in 0..3 {
        let r = srv
            .post(
                "/v1/otp",
                &srv.rk_reveal,
                json!({"purpose": "card.reveal", "card": card}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(header(&r, "ratelimit-limit"), "3");
    }
    srv.post(
        "/v1/otp",
        &srv.rk_reveal,
        json!({"purpose": "card.reveal", "card": card}),
    )
    .await
    .assert_error(429, "rate_limited");

    // Reveal: 2 per minute per credential (wrong codes count as well).
    let path = format!("/v1/cards/{card}/reveal");
    let body = json!({"otp": "otp_00000000000000000000000000000000", "code": "000000"});
    for _ in 0..2 {
        let r = srv.post(&path, &srv.sk_test, body.clone()).await;
        assert_ne!(r.status, 429, "{}", r.text);
        assert_eq!(header(&r, "ratelimit-limit"), "2");
    }
    let r = srv.post(&path, &srv.sk_test, body).await;
    r.assert_error(429, "rate_limited");
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((29..=30).contains(&retry), "retry-after {retry}");

    // No credential: per client address, 3 per minute.
    for _ in 0..3 {
        let r = srv.call(Method::GET, "/v1/cards", None, None).await;
        r.assert_error(401, "authentication_required");
        assert_eq!(header(&r, "ratelimit-limit"), "3");
    }
    srv.call(Method::GET, "/v1/cards", None, None)
        .await
        .assert_error(429, "rate_limited");
    // Health checks are not limited.
    for _ in 0..5 {
        assert_eq!(
            srv.call(Method::GET, "/healthz", None, None).await.status,
            200
        );
    }
}

/// Fires `n` GETs with `key`, alternating between the nodes, all at once; returns how
/// many were accepted and how long it took.
async fn burst(nodes: &[Arc<TestServer>], key: &str, n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let node = nodes[i % nodes.len()].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            node.get("/v1/cards?limit=1", &key).await.status.as_u16()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => accepted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    (accepted, started.elapsed())
}

async fn two_nodes(store: RateLimitStore) -> (Arc<TestServer>, Arc<TestServer>) {
    let tweak = move |c: &mut strongroom_server::ServerConfig| {
        c.rate_limit.per_minute = 20;
        c.rate_limit.store = store.clone();
    };
    let a = TestServer::start_on(Arc::new(Data::new()), tweak.clone()).await;
    // The second node shares the first one's database (and, with Redis, its limiter).
    let b = TestServer::start_on(a.data.clone(), tweak).await;
    (Arc::new(a), Arc::new(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_redis_stay_within_the_limit() {
    let mut probe = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("this test needs Redis at {REDIS_URL} (apt-get install redis-server): {e}")
        });
    let _: () = redis::cmd("PING").query_async(&mut probe).await.unwrap();

    let (a, b) = two_nodes(RateLimitStore::Redis(REDIS_URL.into())).await;
    let key = a.sk_test.clone();
    // Twice the limit, spread over both nodes.
    let started = Instant::now();
    let (accepted, took) = burst(&[a.clone(), b.clone()], &key, 40).await;
    // 20 at once, plus one per 3 s that the burst took to send.
    let refill = usize::try_from(took.as_secs() / 3).unwrap() + 1;
    assert!(
        (20..=20 + refill).contains(&accepted),
        "accepted {accepted} of 40 with a limit of 20 (took {took:?})"
    );
    // Both nodes see the same exhausted budget (a slot frees 3 s after the burst began).
    for node in [&a, &b] {
        let r = node.get("/v1/cards", &key).await;
        if started.elapsed() < Duration::from_millis(2900) {
            r.assert_error(429, "rate_limited");
        }
        assert_eq!(header(&r, "ratelimit-remaining"), "0");
    }

    // The same load against two nodes with in-process limiters: each node admits its
    // own 20, which is what the shared backend prevents.
    let (a, b) = two_nodes(RateLimitStore::Memory).await;
    let key = a.sk_test.clone();
    let (accepted, _) = burst(&[a.clone(), b.clone()], &key, 40).await;
    assert_eq!(accepted, 40, "in-process limiters are per node");
}

/// A node's `name{feature="…"}` from its /metrics.
async fn redis_metric(srv: &TestServer, name: &str, feature: &str) -> f64 {
    let addr = srv.running.metrics_addr.unwrap();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("{name}{{feature=\"{feature}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("{line} missing"))
        .parse::<f64>()
        .unwrap()
}

/// What each Redis-backed feature does with Redis unreachable (docs/scale-out.md, "When
/// Redis is lost"): rate limits and risk counters go on in the node's own memory, said by
/// `strongroom_redis_degraded`; a CVC is not held anywhere else (503, nothing written);
/// idempotent replays come from the database.
#[tokio::test]
async fn with_redis_unreachable_each_feature_does_what_is_documented() {
    let srv = TestServer::start_on(Arc::new(Data::new()), |c| {
        c.rate_limit.store = RateLimitStore::Redis("redis://127.0.0.1:1".into());
        c.rate_limit.per_minute = 20;
    })
    .await;
    let srv = Arc::new(srv);
    assert_eq!(
        redis_metric(&srv, "strongroom_redis_degraded", "rate_limit").await,
        0.0
    );

    // Rate limits: served, and the key's limit holds on this node.
    let (accepted, took) = burst(std::slice::from_ref(&srv), &srv.sk_test, 30).await;
    let refill = usize::try_from(took.as_secs() / 3).unwrap() + 1;
    assert!(
        (20..=20 + refill).contains(&accepted),
        "accepted {accepted} of 30 with a limit of 20"
    );
    assert_eq!(
        redis_metric(&srv, "strongroom_redis_degraded", "rate_limit").await,
        1.0
    );
    assert!(redis_metric(&srv, "strongroom_redis_fallbacks_total", "rate_limit").await >= 30.0);
    assert!(
        crate::harness::captured_logs().contains("redis unreachable: this node uses its own state"),
        "the fallback is logged"
    );

    // Another key with a budget of its own for the rest.
    let r = srv
        .post(
            &format!("/v1/admin/accounts/{}/api_keys", srv.account),
            &srv.admin_key,
            json!({"kind": "secret", "mode": "test"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.body["secret"].as_str().unwrap().to_owned();

    // A CVC cannot be held where the other nodes would find it: refused, nothing written.
    let pan = test_pan(4410);
    let with_cvc = json!({"number": pan, "exp_month": 12, "exp_year": 2030, "cvc": "737"});
    let r = srv.post("/v1/cards", &key, with_cvc).await;
    r.assert_error(503, "service_unavailable");
    assert_eq!(header(&r, "retry-after"), "1");
    let listed = srv.get("/v1/cards?limit=100", &key).await;
    assert!(!listed.text.contains(&pan[12..]), "{}", listed.text);

    // Idempotent replays come from the database.
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = srv
            .client
            .post(format!("{}/v1/cards", srv.url))
            .bearer_auth(&key)
            .header("idempotency-key", "redis-down-1")
            .json(&json!({"number": pan, "exp_month": 12, "exp_year": 2030}))
            .send()
            .await
            .unwrap();
        answers.push(Resp::from(r).await);
    }
    assert_eq!(answers[0].status, 201, "{}", answers[0].text);
    assert_eq!(answers[0].text, answers[1].text);
    // Cards still read; none shows a CVC, since none could be used.
    let id = answers[0].body["id"].as_str().unwrap();
    let r = srv.get(&format!("/v1/cards/{id}"), &key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cvc_available"], false);

    // Risk counters: an assessment still counts this node's uses.
    let r = srv
        .call(
            Method::PATCH,
            "/v1/account",
            Some(&srv.sk_live),
            Some(json!({"risk_mode": "shadow"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for n in 0..3 {
        let r = srv
            .post(
                "/v1/cards",
                &key,
                json!({"number": test_pan(4420 + n), "exp_month": 12, "exp_year": 2030}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(
        redis_metric(&srv, "strongroom_redis_degraded", "velocity").await,
        1.0
    );
}

/// A TCP relay to the test Redis that can be stopped and started on the same port: Redis
/// "stops" for the node behind it without stopping for the other tests.
struct RedisPlug {
    port: u16,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl RedisPlug {
    async fn new() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plug = Self {
            port: l.local_addr().unwrap().port(),
            tasks: Arc::default(),
        };
        plug.serve(l);
        plug
    }

    fn serve(&self, l: tokio::net::TcpListener) {
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut up).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the port and every connection through it.
    fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn start(&self) {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(l);
    }
}

/// Redis stopped under a running node, then started again: the node falls back to its
/// own limiter and says so, then goes back to the shared one and says that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_started_under_a_node_degrades_then_recovers() {
    let plug = RedisPlug::new().await;
    let url = format!("redis://127.0.0.1:{}", plug.port);
    let srv = TestServer::start_on(Arc::new(Data::new()), move |c| {
        c.rate_limit.store = RateLimitStore::Redis(url);
    })
    .await;
    let degraded =
        || async { redis_metric(&srv, "strongroom_redis_degraded", "rate_limit").await == 1.0 };
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);
    assert!(!degraded().await);

    plug.stop();
    // The node notices on its next request to Redis; every request is served.
    for _ in 0..3 {
        assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);
    }
    assert!(degraded().await);

    plug.start().await;
    // After the retry interval the node tries Redis again, finds it, and says so.
    srv.clock.advance(Duration::from_millis(
        u64::try_from(strongroom_server::metrics::REDIS_RETRY_MS).unwrap() + 100,
    ));
    eventually("the node goes back to Redis", || async {
        assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);
        srv.clock.advance(Duration::from_millis(2_100));
        !degraded().await
    })
    .await;
    assert!(crate::harness::captured_logs().contains("redis reachable again"));
}

// ---------------------------------------------------------------- idempotency

/// `POST /v1/cards` with the test key and an Idempotency-Key.
async fn post_card(srv: &TestServer, key: &str, body: Value) -> Resp {
    send(
        srv,
        Method::POST,
        "/v1/cards",
        &srv.sk_test,
        &[("idempotency-key", key)],
        Some(body),
    )
    .await
}

fn card_body(n: u64) -> Value {
    json!({"number": test_pan(n), "exp_month": 12, "exp_year": 2030})
}

/// The audit record of a request with an Idempotency-Key says what the handler did: one
/// `card.create` record per request, `success` only when the card was stored and the
/// refusal's code otherwise (the key's claim is bookkeeping and carries no record).
#[tokio::test]
async fn an_idempotent_request_is_recorded_once_with_its_real_outcome() {
    let srv = TestServer::start().await;
    let post = |key: &'static str, body: Value| post_card(&srv, key, body);
    let bad = post(
        "audit-1",
        json!({"number": "4242424242424241", "exp_month": 12, "exp_year": 2030}),
    )
    .await;
    bad.assert_error(400, "card_number_luhn");
    let good = post("audit-2", card_body(7)).await;
    assert_eq!(good.status, 201, "{}", good.text);

    let log = srv
        .get(
            "/v1/admin/audit?limit=1000&action=card.create",
            &srv.admin_key,
        )
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    let records = log.body["data"].as_array().unwrap();
    let of = |r: &Resp| {
        let id = header(r, "request-id");
        records
            .iter()
            .filter(|rec| rec["request_id"] == id.as_str())
            .map(|rec| {
                (
                    rec["outcome"].as_str().unwrap().to_owned(),
                    rec["code"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(&bad),
        [("failure".to_owned(), "card_number_luhn".to_owned())]
    );
    assert_eq!(of(&good), [("success".to_owned(), String::new())]);
}

/// The digest an idempotency record is matched by is keyed: a card body's plain SHA-256
/// (which anyone could compute for every candidate number) is nowhere in the database.
#[tokio::test]
async fn idempotency_digests_of_card_bodies_are_keyed() {
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Sqlite,
        "idempotency_digests_of_card_bodies_are_keyed",
    ) {
        return;
    }
    let srv = TestServer::start().await;
    let body = card_body(11);
    let first = post_card(&srv, "digest-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = post_card(&srv, "digest-1", body.clone()).await;
    assert_eq!(
        header(&again, "idempotent-replayed"),
        "true",
        "the record matches"
    );
    let mut m = b"POST\0/v1/cards\0/v1/cards\0".to_vec();
    m.extend_from_slice(&serde_json::to_vec(&body).unwrap());
    let plain = strongroom_crypto::httpsig::sha256(&m);
    let data = srv.stop().await;
    let files = data.sqlite_files();
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == plain),
            "a plain digest of the body is in {}",
            f.display()
        );
    }
}

#[tokio::test]
async fn same_key_same_body_replays_different_body_is_refused() {
    let srv = TestServer::start().await;
    let post = |key: &'static str, body: Value| post_card(&srv, key, body);
    let first = post("order-1", card_body(1)).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = post("order-1", card_body(1)).await;
    assert_eq!(again.status, 201);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(again.body, first.body);
    assert_ne!(header(&again, "request-id"), header(&first, "request-id"));

    post("order-1", card_body(2))
        .await
        .assert_error(422, "idempotency_key_reused");

    // An error is not stored: the corrected retry with the same key runs.
    let bad = post(
        "order-2",
        json!({"number": "4242424242424241", "exp_month": 12, "exp_year": 2030}),
    )
    .await;
    bad.assert_error(400, "card_number_luhn");
    let fixed = post("order-2", card_body(3)).await;
    assert_eq!(fixed.status, 201, "{}", fixed.text);
    assert!(fixed.headers.get("idempotent-replayed").is_none());

    // Keys are per account and mode: the live key's "order-1" is a different key.
    let live = send(
        &srv,
        Method::POST,
        "/v1/cards",
        &srv.sk_live,
        &[("idempotency-key", "order-1")],
        Some(json!({"number": "4000000000000000", "exp_month": 12, "exp_year": 2030})),
    )
    .await;
    assert_ne!(live.status, 422, "{}", live.text);

    // After 24 hours the key is forgotten.
    srv.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let later = post("order-1", card_body(2)).await;
    assert_eq!(later.status, 201, "{}", later.text);
    assert!(later.headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn malformed_and_secret_bearing_requests_are_refused() {
    let srv = TestServer::start().await;
    let long = "k".repeat(256);
    let r = send(
        &srv,
        Method::POST,
        "/v1/cards",
        &srv.sk_test,
        &[("idempotency-key", &long)],
        Some(card_body(1)),
    )
    .await;
    r.assert_error(400, "idempotency_key_invalid");
    let max = "k".repeat(255);
    let r = send(
        &srv,
        Method::POST,
        "/v1/cards",
        &srv.sk_test,
        &[("idempotency-key", &max)],
        Some(card_body(1)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Reveal (a PAN) and OTP creation (a code) never have their responses stored.
    let card = r.body["id"].as_str().unwrap().to_owned();
    let r = send(
        &srv,
        Method::POST,
        &format!("/v1/cards/{card}/reveal"),
        &srv.rk_reveal,
        &[("idempotency-key", "reveal-1")],
        Some(json!({"otp": "otp_00000000000000000000000000000000", "code": "000000"})),
    )
    .await;
    r.assert_error(400, "idempotency_not_supported");
    let r = send(
        &srv,
        Method::POST,
        "/v1/otp",
        &srv.rk_reveal,
        &[("idempotency-key", "otp-1")],
        Some(json!({"purpose": "card.reveal", "card": card})),
    )
    .await;
    r.assert_error(400, "idempotency_not_supported");
    // Webhook endpoint creation and secret rotation answer with a signing secret.
    let r = send(
        &srv,
        Method::POST,
        "/v1/webhook_endpoints",
        &srv.sk_test,
        &[("idempotency-key", "we-1")],
        Some(json!({"url": "https://example.com/hook", "enabled_events": ["card.created"]})),
    )
    .await;
    r.assert_error(400, "idempotency_not_supported");
    let r = send(
        &srv,
        Method::POST,
        "/v1/webhook_endpoints/we_00000000000000000000000000000000/rotate_secret",
        &srv.sk_test,
        &[("idempotency-key", "we-2")],
        None,
    )
    .await;
    r.assert_error(400, "idempotency_not_supported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_tokenizations_create_one_card() {
    let srv = Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            send(
                &srv,
                Method::POST,
                "/v1/cards",
                &srv.sk_test,
                &[("idempotency-key", "fifty")],
                Some(card_body(77)),
            )
            .await
        }));
    }
    let (mut executed, mut replayed, mut in_progress) = (0, 0, 0);
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            201 if r.headers.get("idempotent-replayed").is_some() => replayed += 1,
            201 => executed += 1,
            409 => {
                r.assert_error(409, "idempotency_in_progress");
                in_progress += 1;
                continue;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
        ids.insert(r.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(executed, 1, "the handler ran more than once");
    assert_eq!(executed + replayed + in_progress, 50);
    assert_eq!(ids.len(), 1);
    // One card.created event, one card.
    let list = srv.get("/v1/cards?limit=100", &srv.sk_test).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    // And a retry now replays it.
    let r = send(
        &srv,
        Method::POST,
        "/v1/cards",
        &srv.sk_test,
        &[("idempotency-key", "fifty")],
        Some(card_body(77)),
    )
    .await;
    assert_eq!(header(&r, "idempotent-replayed"), "true");
}

// ---------------------------------------------------------------- signatures

#[tokio::test]
async fn signature_headers_are_verified_and_can_be_required() {
    let srv = TestServer::start().await;
    // Garbage signatures are refused even when the account does not require them.
    for (input, sig) in [
        ("sig1=(\"@method\");created=1;keyid=\"sigk_x\"", ":AAAA:"),
        ("not a dictionary", ":AAAA:"),
        (
            "sig1=(\"@method\" \"@target-uri\");created=1",
            "sig1=:AAAA:",
        ),
    ] {
        send(
            &srv,
            Method::GET,
            "/v1/cards",
            &srv.sk_test,
            &[("signature-input", input), ("signature", sig)],
            None,
        )
        .await
        .assert_error(401, "signature_invalid");
    }
    // Only a live secret key changes the setting.
    srv.call(
        Method::PATCH,
        "/v1/account",
        Some(&srv.pk_test),
        Some(json!({"require_signed_requests": true})),
    )
    .await
    .assert_error(403, "permission_denied");
    srv.call(
        Method::PATCH,
        "/v1/account",
        Some(&srv.sk_test),
        Some(json!({"require_signed_requests": true})),
    )
    .await
    .assert_error(403, "live_mode_required");
    srv.post(
        "/v1/signing_keys",
        &srv.sk_live,
        json!({"pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    srv.post(
        "/v1/signing_keys",
        &srv.sk_live,
        json!({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "d": "AAAA"}}),
    )
    .await
    .assert_error(400, "unknown_field");
    srv.post("/v1/signing_keys", &srv.sk_live, json!({}))
        .await
        .assert_error(400, "missing_field");
    let r = srv
        .call(
            Method::PATCH,
            "/v1/account",
            Some(&srv.sk_live),
            Some(json!({"require_signed_requests": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["require_signed_requests"], true);
    srv.get("/v1/cards", &srv.sk_test)
        .await
        .assert_error(401, "signature_missing");
    // Other accounts' requests are unaffected (the admin API has no account).
    let acct = srv.account.clone();
    assert_eq!(
        srv.get(&format!("/v1/admin/accounts/{acct}"), &srv.admin_key)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn requests_signed_by_python_http_message_signatures() {
    let srv = TestServer::start().await;
    let ca = srv.data.dir.path().join("ca.pem");
    std::fs::write(&ca, crate::harness::ca_pem()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/signatures/sign.py"
    );
    let (url, sk, live) = (srv.url.clone(), srv.sk_test.clone(), srv.sk_live.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(ca)
            .arg(sk)
            .arg(live)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("python3 is needed for the signature interop test: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
    assert!(stdout.contains("\"done\": true"), "{stdout}");
    assert!(stdout.contains("replayed nonce refused"));
    assert!(stdout.contains("authorization not covered refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_responses_are_shared_through_redis_across_nodes() {
    let mut redis_conn = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {REDIS_URL}: {e}"));
    let (a, b) = two_nodes(RateLimitStore::Redis(REDIS_URL.into())).await;
    // Node B serves the same account (shared database), so node A's key works there.
    let post = |srv: Arc<TestServer>, key: String| async move {
        send(
            &srv,
            Method::POST,
            "/v1/cards",
            &key,
            &[("idempotency-key", "shared-1")],
            Some(card_body(31)),
        )
        .await
    };
    let first = post(a.clone(), a.sk_test.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    // Node B answers the retry with node A's response.
    let again = post(b.clone(), a.sk_test.clone()).await;
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(again.body, first.body);

    // The cached record is in Redis under a digest of scope and key, sealed (the card id
    // is not readable in it).
    let scope = format!("{}:test:{}", a.account, key_id(&a, &a.sk_test).await);
    let rkey = strongroom_server::gateway::idempotency::Idem::redis_key(&scope, "shared-1");
    let cached: Vec<u8> = redis::cmd("GET")
        .arg(&rkey)
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let card_id = first.body["id"].as_str().unwrap();
    assert!(cached.len() > 34);
    assert!(
        !cached
            .windows(card_id.len())
            .any(|w| w == card_id.as_bytes())
    );
    // Retries are answered from Redis: a record whose request hash differs makes the
    // same retry a reuse.
    let mut forged = cached.clone();
    forged[0] ^= 1;
    let _: () = redis::cmd("SET")
        .arg(&rkey)
        .arg(forged)
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    post(b.clone(), a.sk_test.clone())
        .await
        .assert_error(422, "idempotency_key_reused");
    // Without the cache entry the database answers, as before.
    let _: () = redis::cmd("DEL")
        .arg(&rkey)
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let db = post(b.clone(), a.sk_test.clone()).await;
    assert_eq!(header(&db, "idempotent-replayed"), "true");
    assert_eq!(db.body, first.body);
}

#[tokio::test]
async fn redis_gcra_matches_the_in_process_one_step_by_step() {
    use strongroom_server::gateway::ratelimit::{
        MemoryLimiter, Quota, RateLimitBackend, RedisLimiter,
    };
    let redis = RedisLimiter::new(REDIS_URL).unwrap();
    let memory = MemoryLimiter::default();
    let key = format!(
        "test:{}",
        hex::encode(strongroom_crypto::random::bytes::<8>().unwrap())
    );
    // An odd quota (a 857142 µs interval) and a clock with awkward offsets: every
    // decision and header value must agree exactly.
    let q = Quota { per_minute: 70 };
    let t0 = 1_763_900_000_123;
    let mut allowed = 0;
    for i in 0..200i64 {
        let now = t0 + i * 97;
        let r = redis.check(&key, q, now).await.unwrap();
        let m = memory.check(&key, q, now).await.unwrap();
        assert_eq!(r, m, "step {i}");
        allowed += usize::from(r.allowed);
    }
    // 70 at once plus one per 857 ms over the 19.3 s the steps span.
    assert_eq!(allowed, 70 + 22);
    assert_eq!(
        redis.peek(&key, q, t0 + 30_000).await.unwrap(),
        memory.peek(&key, q, t0 + 30_000).await.unwrap()
    );
}

/// With a shared database both nodes cache an account's controls; a change made on
/// one is heard by the other when it commits, and enforced there.
#[tokio::test]
async fn an_allowlist_set_on_one_node_is_enforced_by_the_other() {
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "an_allowlist_set_on_one_node_is_enforced_by_the_other",
    ) {
        return;
    }
    let a = TestServer::start().await;
    let b = TestServer::start_on(a.data.clone(), |_| {}).await;
    // B serves the key, so its key, controls and allowlist caches are warm.
    for _ in 0..3 {
        assert_eq!(b.get("/v1/cards", &a.sk_test).await.status, 200);
    }
    let r = a
        .call(
            Method::PUT,
            "/v1/ip_allowlist",
            Some(&a.sk_live),
            Some(json!({"cidrs": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let heard = eventually("B enforces A's allowlist", || async {
        b.get("/v1/cards", &a.sk_test).await.status == 403
    })
    .await;
    eprintln!("allowlist set on node A enforced by node B after {heard:?}");
    b.get("/v1/cards", &a.sk_test)
        .await
        .assert_error(403, "ip_not_allowed");
}

/// The PIDs of the backends listening for cache invalidations in database `db`.
async fn listeners(admin: &mut sqlx::PgConnection, db: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%' ORDER BY pid",
    )
    .bind(db)
    .fetch_all(admin)
    .await
    .unwrap()
}

/// A node whose cache-invalidation connection dies drops what it cached, listens again, and
/// from then on hears the other node's changes as before. The nodes get a database of their
/// own, so that the only listeners in it are theirs and the second node's can be told apart.
#[tokio::test]
async fn a_node_that_loses_its_cache_listener_listens_again() {
    use sqlx::Connection;
    if !strongroom_testenv::runs_on(
        strongroom_testenv::Backend::Postgres,
        "a_node_that_loses_its_cache_listener_listens_again",
    ) {
        return;
    }
    let base = crate::harness::pg_url();
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let db = format!(
        "it_listen_{}",
        hex::encode(strongroom_crypto::random::bytes::<6>().unwrap())
    );
    // Safe to format: the name is a fixed prefix and hex digits.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut data = Data::new();
    let (server, _) = base.rsplit_once('/').unwrap();
    data.store.url = format!("{server}/{db}");
    let data = Arc::new(data);

    let live = |s: &TestServer| s.running.state().unwrap().cache_sync().current().is_some();
    let a = TestServer::start_on(data.clone(), |_| {}).await;
    eventually("A listens", || async { live(&a) }).await;
    let before_b = listeners(&mut admin, &db).await;
    assert_eq!(before_b.len(), 1, "A's listener: {before_b:?}");
    let b = TestServer::start_on(data.clone(), |_| {}).await;
    eventually("B listens", || async { live(&b) }).await;
    let mut b_listener = listeners(&mut admin, &db).await;
    b_listener.retain(|pid| !before_b.contains(pid));
    let [b_pid] = b_listener[..] else {
        panic!("B's listener: {b_listener:?}")
    };

    // B serves a key, so the key is in its cache; then B's listener is cut.
    let first = a.new_secret_key().await;
    let first_secret = first.secret.expose().clone();
    assert_eq!(b.get("/v1/cards", &first_secret).await.status, 200);
    let cached = b.running.state().unwrap().cache_sync().current();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(b_pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed);
    // B notices: what it cached is stale (reading through, or listening anew).
    eventually("B drops its cache", || async {
        b.running.state().unwrap().cache_sync().current() != cached
    })
    .await;
    let revoke = |k: &strongroom_server::IssuedKey| {
        format!("/v1/admin/accounts/{}/api_keys/{}", a.account, k.record.id)
    };
    let r = a
        .call(Method::DELETE, &revoke(&first), Some(&a.admin_key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    b.get("/v1/cards", &first_secret)
        .await
        .assert_error(401, "api_key_revoked");

    // B listens again, on a new connection, and hears the next revocation through it.
    eventually("B listens again", || async { live(&b) }).await;
    let again = listeners(&mut admin, &db).await;
    assert_eq!(again.len(), 2, "listeners after the cut: {again:?}");
    assert!(!again.contains(&b_pid));
    let second = a.new_secret_key().await;
    let second_secret = second.secret.expose().clone();
    assert_eq!(b.get("/v1/cards", &second_secret).await.status, 200);
    let r = a
        .call(Method::DELETE, &revoke(&second), Some(&a.admin_key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually("B hears the revocation", || async {
        b.get("/v1/cards", &second_secret).await.status == 401
    })
    .await;

    b.stop().await;
    a.stop().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn per_address_limits_key_ipv6_by_its_64() {
    for store in [
        RateLimitStore::Memory,
        RateLimitStore::Redis(REDIS_URL.into()),
    ] {
        let srv = TestServer::start_on(Arc::new(Data::new()), move |c| {
            // The test client on loopback plays a trusted proxy.
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            c.rate_limit.ip_per_minute = 2;
            c.rate_limit.store = store.clone();
        })
        .await;
        // A /64 of its own per run: Redis keeps buckets between runs.
        let r = strongroom_crypto::random::bytes::<4>().unwrap();
        let net = format!(
            "2001:db8:{:x}:{:x}",
            u16::from_be_bytes([r[0], r[1]]),
            u16::from_be_bytes([r[2], r[3]])
        );
        let anonymous = |from: String| {
            let req = srv
                .client
                .get(format!("{}/v1/cards", srv.url))
                .header("x-forwarded-for", from);
            async move { Resp::from(req.send().await.unwrap()).await }
        };
        // Three addresses of one /64 share its two requests a minute.
        anonymous(format!("{net}::1"))
            .await
            .assert_error(401, "authentication_required");
        anonymous(format!("{net}::2"))
            .await
            .assert_error(401, "authentication_required");
        anonymous(format!("{net}:ffff:ffff:ffff:ffff"))
            .await
            .assert_error(429, "rate_limited");
        // The next /64 has its own.
        let next = format!(
            "2001:db8:{:x}:{:x}::1",
            u16::from_be_bytes([r[0], r[1]]),
            u16::from_be_bytes([r[2], r[3]]).wrapping_add(1)
        );
        anonymous(next)
            .await
            .assert_error(401, "authentication_required");
    }
}

#[tokio::test]
async fn signing_keys_are_capped_and_listed_in_pages() {
    use base64::Engine;
    let srv = TestServer::start().await;
    let jwk = |i: u8| {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([i; 32]);
        json!({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}})
    };
    let creates = (0..14).map(|i| srv.post("/v1/signing_keys", &srv.sk_live, jwk(i)));
    let results = futures_util::future::join_all(creates).await;
    let ids: Vec<String> = results
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 10, "at most 10 unrevoked signing keys");
    for r in results.iter().filter(|r| r.status != 201) {
        r.assert_error(409, "limit_reached");
    }
    // Pages of 4, 4, 2.
    let first = srv.get("/v1/signing_keys?limit=4", &srv.sk_live).await;
    assert_eq!(first.body["has_more"], true, "{}", first.text);
    let last_id = first.body["data"][3]["id"].as_str().unwrap().to_owned();
    let second = srv
        .get(
            &format!("/v1/signing_keys?limit=4&starting_after={last_id}"),
            &srv.sk_live,
        )
        .await;
    assert_eq!(second.body["has_more"], true);
    let next = second.body["data"][3]["id"].as_str().unwrap().to_owned();
    let third = srv
        .get(
            &format!("/v1/signing_keys?limit=4&starting_after={next}"),
            &srv.sk_live,
        )
        .await;
    assert_eq!(third.body["has_more"], false);
    assert_eq!(third.body["data"].as_array().unwrap().len(), 2);
    srv.get("/v1/signing_keys?limit=0", &srv.sk_live)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get("/v1/signing_keys?starting_after=sigk_x", &srv.sk_live)
        .await
        .assert_error(400, "invalid_parameter");
    // A revoked key makes room for a new one.
    let r = srv
        .delete(&format!("/v1/signing_keys/{}", ids[0]), &srv.sk_live)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        srv.post("/v1/signing_keys", &srv.sk_live, jwk(99))
            .await
            .status,
        201
    );
    srv.post("/v1/signing_keys", &srv.sk_live, jwk(100))
        .await
        .assert_error(409, "limit_reached");
}
