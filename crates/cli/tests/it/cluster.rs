//! `strongroom cluster` with the real binary: three nodes on the test PostgreSQL and Redis.
//! The JWKS is the same on each, an OTP is spent once across them, each webhook event is
//! delivered once, one key's rate limit is one budget across the nodes, a key revoked on
//! node 1 fails on node 3 within a second, a killed node is reported down and comes back (and
//! HAProxy in front serves every request meanwhile), and `bench --targets` spreads its
//! connections over every node.

use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

fn strongroom(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "strongroom {args:?}: {text}");
    text
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Stops the cluster even when the test fails half way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_strongroom"))
            .args(["cluster", "down", "--data-dir", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_shares_its_controls_and_survives_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cluster");
    let data_s = data.display().to_string();
    let suffix = std::process::id();
    let port = 20_000 + (suffix % 20_000) as u16;
    let schema = format!("cluster_it_{suffix}");
    let pg = strongroom_testenv::pg_url();
    strongroom(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--port",
        &port.to_string(),
        "--data-dir",
        &data_s,
        "--database-url",
        &pg,
        "--database-schema",
        &schema,
        "--rate-limit-per-minute",
        "1000000",
    ]);
    let _down = Down(data_s.clone());
    let path = data.join("cluster.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for field in [
        "ca_cert",
        "account_id",
        "secret_key",
        "publishable_key",
        "admin_key",
        "database_url",
        "database_schema",
        "redis_url",
        "root_key_file",
    ] {
        assert!(c[field].is_string(), "{field}: {c}");
    }
    assert_eq!(c["database_schema"], schema.as_str());
    let nodes: Vec<String> = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(nodes.len(), 3);
    let pem = std::fs::read(c["ca_cert"].as_str().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let sk = c["secret_key"].as_str().unwrap().to_owned();
    let admin = c["admin_key"].as_str().unwrap().to_owned();
    let account = c["account_id"].as_str().unwrap().to_owned();
    let call =
        |node: usize, method: reqwest::Method, path: &str, key: &str, body: Option<Value>| {
            let mut r = client
                .request(method, format!("{}{path}", nodes[node]))
                .bearer_auth(key);
            if let Some(b) = body {
                r = r.json(&b);
            }
            r.send()
        };

    // A card made on node 1 reads on node 3.
    let r = call(
        0,
        reqwest::Method::POST,
        "/v1/cards",
        &sk,
        Some(json!({"number": "4000056655665556", "exp_month": 12, "exp_year": 2030})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let card: Value = r.json().await.unwrap();
    let id = card["id"].as_str().unwrap().to_owned();
    let read = call(
        2,
        reqwest::Method::GET,
        &format!("/v1/cards/{id}"),
        &sk,
        None,
    )
    .await
    .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["last4"], "5556");

    // The token signing keys are the same on every node.
    let mut jwks = Vec::new();
    for node in 0..3 {
        let r = call(
            node,
            reqwest::Method::GET,
            "/.well-known/jwks.json",
            &sk,
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        jwks.push(r.json::<Value>().await.unwrap());
    }
    assert!(jwks[0]["keys"].as_array().is_some_and(|k| !k.is_empty()));
    assert!(jwks.iter().all(|j| *j == jwks[0]));

    // An OTP made on node 1 is spent on node 2 and refused on node 3.
    let r = call(
        0,
        reqwest::Method::POST,
        &format!("/v1/admin/accounts/{account}/api_keys"),
        &admin,
        Some(json!({"kind": "restricted", "mode": "test", "scopes": ["cards:reveal"]})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let rk = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let otp: Value = call(
        0,
        reqwest::Method::POST,
        "/v1/otp",
        &rk,
        Some(json!({"purpose": "card.reveal", "card": id})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let reveal = json!({"otp": otp["id"], "code": otp["test_code"]});
    let reveal_path = format!("/v1/cards/{id}/reveal");
    let r = call(
        1,
        reqwest::Method::POST,
        &reveal_path,
        &rk,
        Some(reveal.clone()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["number"],
        "4000056655665556"
    );
    let r = call(2, reqwest::Method::POST, &reveal_path, &rk, Some(reveal))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a spent OTP is refused on another node");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "otp_invalid"
    );

    // Webhook deliveries: one per event, whichever node made the card.
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap();
                sink.lock()
                    .unwrap()
                    .push(v["id"].as_str().unwrap().to_owned());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let r = call(
        0,
        reqwest::Method::POST,
        "/v1/webhook_endpoints",
        &sk,
        Some(json!({"url": hook, "enabled_events": ["card.created"]})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..12u64 {
        let pan = luhn(&format!("400000000077{i:03}"));
        let r = call(
            (i % 3) as usize,
            reqwest::Method::POST,
            "/v1/cards",
            &sk,
            Some(json!({"number": pan, "exp_month": 12, "exp_year": 2030})),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
    }
    let waited = Instant::now();
    while got.lock().unwrap().len() < 12 && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a doubled delivery to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut events = got.lock().unwrap().clone();
    assert_eq!(events.len(), 12, "{events:?}");
    events.sort();
    events.dedup();
    assert_eq!(events.len(), 12, "an event was delivered twice");

    // bench --targets spreads its connections over the nodes.
    let targets = nodes.join(",");
    strongroom(&[
        "bench",
        "--targets",
        &targets,
        "--key",
        &sk,
        "--ca-cert",
        c["ca_cert"].as_str().unwrap(),
        "--scenario",
        "get",
        "--duration",
        "600ms",
        "--concurrency",
        "3",
        "--preload",
        "6",
        "--pan-offset",
        "9100000",
    ]);
    for n in c["nodes"].as_array().unwrap() {
        let log = std::path::Path::new(n["data_dir"].as_str().unwrap()).join("logs");
        let mut text = String::new();
        for f in std::fs::read_dir(&log).unwrap() {
            text.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap_or_default());
        }
        assert!(
            text.matches("\"route\":\"/v1/cards/{id}\"").count() > 3,
            "no bench reads on {}",
            n["url"]
        );
    }

    // One budget: a limit of 100 per minute, 200 requests over three nodes at once.
    let r = call(
        1,
        reqwest::Method::PATCH,
        &format!("/v1/admin/accounts/{account}"),
        &admin,
        Some(json!({"rate_limit_per_minute": 100})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = call(
        1,
        reqwest::Method::POST,
        &format!("/v1/admin/accounts/{account}/api_keys"),
        &admin,
        Some(json!({"kind": "secret", "mode": "test"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let key: Value = r.json().await.unwrap();
    let (key_id, secret) = (
        key["id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    );
    // Each node has forgotten the old limit within a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let req = call(
            i % 3,
            reqwest::Method::GET,
            &format!("/v1/cards/{id}"),
            &secret,
            None,
        );
        tasks.push(tokio::spawn(req));
    }
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap().unwrap().status().as_u16() {
            200 => accepted += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    // 100 at once, and one more each 0.6 s the burst took.
    let refill = (started.elapsed().as_millis() / 600) as usize + 1;
    assert!(
        (100..=100 + refill).contains(&accepted),
        "{accepted} of 200 accepted at 100 per minute over three nodes"
    );

    // Revoked on node 1: refused on node 3 within a second.
    let r = call(
        0,
        reqwest::Method::DELETE,
        &format!("/v1/admin/accounts/{account}/api_keys/{key_id}"),
        &admin,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    loop {
        let r = call(2, reqwest::Method::GET, "/v1/account", &secret, None)
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Node 2 killed: reported down, refused; the others serve; started again, it serves.
    let out = strongroom(&["cluster", "kill", "--data-dir", &data_s, "--node", "2"]);
    assert!(out.contains("killed"), "{out}");
    let status = strongroom(&["cluster", "status", "--data-dir", &data_s]);
    assert!(
        status.contains("node 2:") && status.contains("down"),
        "{status}"
    );
    assert_eq!(status.matches(" ready").count(), 2, "{status}");
    assert!(
        call(1, reqwest::Method::GET, "/healthz", &sk, None)
            .await
            .is_err()
    );
    let read = call(
        2,
        reqwest::Method::GET,
        &format!("/v1/cards/{id}"),
        &sk,
        None,
    )
    .await
    .unwrap();
    assert_eq!(read.status(), 200);
    // Through HAProxy (scripts/test installs it), one URL: no request fails for the node
    // that is down (a refused connection is tried on another).
    let proxy = c["proxy"]["url"]
        .as_str()
        .expect("haproxy is installed by scripts/test: cluster.json names the proxy")
        .to_owned();
    for _ in 0..9 {
        let r = client
            .get(format!("{proxy}/v1/cards/{id}"))
            .bearer_auth(&sk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    strongroom(&["cluster", "start", "--data-dir", &data_s, "--node", "2"]);
    let read = call(
        1,
        reqwest::Method::GET,
        &format!("/v1/cards/{id}"),
        &sk,
        None,
    )
    .await
    .unwrap();
    assert_eq!(read.status(), 200);

    // Down: every node's process, and the proxy's, is gone.
    let now: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut pids: Vec<u64> = now["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["pid"].as_u64().unwrap())
        .collect();
    pids.push(now["proxy"]["pid"].as_u64().unwrap());
    strongroom(&["cluster", "down", "--data-dir", &data_s]);
    assert!(pids.iter().all(|p| !alive(*p)));
    let status = strongroom(&["cluster", "status", "--data-dir", &data_s]);
    assert_eq!(status.matches("down").count(), 4, "{status}");
    drop_schema(&pg, &schema).await;
}

/// `body` and its Luhn check digit.
fn luhn(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

async fn drop_schema(pg: &str, schema: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(pg).await.unwrap();
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await
        .unwrap();
}
