//! Crash safety of webhook delivery with the real binary: tokenize 1,000 cards with an
//! endpoint registered, `kill -9` the server while deliveries are in flight, restart it
//! on the same data directory, and check that every `card.created` arrives at least
//! once, with a stable `webhook-id`, and that nothing is invented.

use axum::extract::State;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone)]
struct Receiver {
    /// (webhook-id, body) of every request.
    got: Arc<Mutex<Vec<(String, String)>>>,
    /// Requests are held until this is true.
    open: watch::Receiver<bool>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: axum::http::HeaderMap,
    body: String,
) -> &'static str {
    let mut open = r.open.clone();
    open.wait_for(|o| *o).await.unwrap();
    // Slow enough that a kill lands while deliveries are still in flight.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.got.lock().unwrap().push((id, body));
    "ok"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_dev(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["dev", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // 1,000 tokenizations in a burst: lift the default 100/min per-key limit.
        .args(["--rate-limit-per-minute", "1000000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for `dev.json` naming this port and a healthy server; returns it and a client.
async fn ready(dir: &Path, port: u16, child: &mut Child) -> (Value, reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "strongroom dev exited");
        assert!(Instant::now() < deadline, "strongroom dev did not start");
        if let Ok(bytes) = std::fs::read(dir.join("dev.json"))
            && let Ok(dev) = serde_json::from_slice::<Value>(&bytes)
            && dev["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!(":{port}")))
        {
            let ca = std::fs::read(dev["ca_cert"].as_str().unwrap()).unwrap();
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let url = format!("{}/healthz", dev["url"].as_str().unwrap());
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return (dev, client);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Luhn-valid test-range number, unique per `n`.
fn test_pan(n: u64) -> String {
    let body = format!("40000000{n:07}");
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|c| strongroom_core::pan::luhn_valid(c.as_bytes()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_card_created_arrives_after_kill_9() {
    const N: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (open_tx, open_rx) = watch::channel(false);
    let rx = Receiver {
        got: Arc::default(),
        open: open_rx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = free_port();
    let mut child = spawn_dev(dir.path(), port);
    let (dev, client) = ready(dir.path(), port, &mut child).await;
    let url = dev["url"].as_str().unwrap().to_owned();
    let sk = dev["secret_key"].as_str().unwrap().to_owned();
    let r = client
        .post(format!("{url}/v1/webhook_endpoints"))
        .bearer_auth(&sk)
        .json(&json!({"url": hook, "enabled_events": ["card.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Tokenize N cards, 16 at a time; every one is acknowledged before the kill.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let (client, url, sk, acked) = (client.clone(), url.clone(), sk.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in (w..N).step_by(16) {
                let r = client
                    .post(format!("{url}/v1/cards"))
                    .bearer_auth(&sk)
                    .json(&json!({"number": test_pan(n), "exp_month": 12, "exp_year": 2035}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let card: Value = r.json().await.unwrap();
                acked
                    .lock()
                    .unwrap()
                    .insert(card["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(acked.lock().unwrap().len(), N as usize);

    // Let deliveries flow, and kill -9 while they are in flight.
    open_tx.send(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.got.lock().unwrap().len() < 150 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = rx.got.lock().unwrap().len();
    assert!(
        at_kill < N as usize,
        "the kill must land mid-delivery ({at_kill} delivered)"
    );

    // Restart on the same directory; everything still owed is delivered.
    let port = free_port();
    let mut child = spawn_dev(dir.path(), port);
    let (dev, client) = ready(dir.path(), port, &mut child).await;
    let url = dev["url"].as_str().unwrap().to_owned();
    let card_of = |body: &str| -> String {
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "card.created");
        v["data"]["object"]["id"].as_str().unwrap().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = rx.got.lock().unwrap().clone();
        let cards: HashSet<String> = got.iter().map(|(_, b)| card_of(b)).collect();
        if cards.len() >= N as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {N} cards delivered after restart ({at_kill} before the kill)",
            cards.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.got.lock().unwrap().clone();

    // None invented: every delivered card exists and was acknowledged; one webhook-id
    // per card, the same on every copy, and it is the card's card.created event.
    let acked = acked.lock().unwrap().clone();
    let mut id_of_card: HashMap<String, String> = HashMap::new();
    for (id, body) in &got {
        let card = card_of(body);
        assert!(acked.contains(&card), "a delivered card was never created");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["id"], id.as_str());
        let prev = id_of_card.entry(card).or_insert_with(|| id.clone());
        assert_eq!(
            prev, id,
            "a card's event keeps its webhook-id across the crash"
        );
    }
    assert_eq!(id_of_card.len(), N as usize);
    let mut stored = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut u = format!("{url}/v1/cards?limit=100");
        if let Some(a) = &after {
            u.push_str(&format!("&starting_after={a}"));
        }
        let page: Value = client
            .get(u)
            .bearer_auth(dev["secret_key"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = page["data"].as_array().unwrap();
        for c in data {
            stored.insert(c["id"].as_str().unwrap().to_owned());
        }
        after = data.last().map(|c| c["id"].as_str().unwrap().to_owned());
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(stored, acked);
    println!(
        "delivered {} requests for {N} cards; {at_kill} before the kill, {} duplicates",
        got.len(),
        got.len() - N as usize
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
