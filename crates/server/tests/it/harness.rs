//! `TestServer`: boots the real server; a small typed client; captured logs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use strongroom_core::{Clock, KeyKind, Mode, Scopes, SystemClock};
use strongroom_crypto::RootKey;
use strongroom_server::{NewKeyKind, Origin, Running, ServerConfig, TlsFiles};
use strongroom_store::StoreConfig;
use time::OffsetDateTime;

/// System time plus an offset that tests can move forward; it can also be stopped, for
/// tests whose steps must fall within a short window however slow the machine is.
#[derive(Clone, Default)]
pub struct TestClock(
    Arc<std::sync::atomic::AtomicI64>,
    Arc<Mutex<Option<OffsetDateTime>>>,
);

impl TestClock {
    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the clock at the present; only `advance` moves it from then on.
    pub fn freeze(&self) {
        *self.1.lock().unwrap() = Some(SystemClock.now());
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        let off = self.0.load(std::sync::atomic::Ordering::SeqCst);
        let base = (*self.1.lock().unwrap()).unwrap_or_else(|| SystemClock.now());
        base + time::Duration::milliseconds(off)
    }
}

/// Everything the server logged during this test process.
pub fn captured_logs() -> String {
    let buf = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(Default::default)
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>, Option<Arc<Mutex<std::fs::File>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        if let Some(f) = &self.1 {
            f.lock().unwrap().write_all(b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Also appended to a file that .ci/run scans after the whole suite.
        let file = std::env::var_os("STRONGROOM_TEST_LOG_FILE").and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(|f| Arc::new(Mutex::new(f)))
        });
        let sink = Sink(log_buffer().clone(), file);
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info")
            .with_writer(move || sink.clone())
            .try_init();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

struct Pki {
    dir: PathBuf,
    ca_pem: Vec<u8>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strongroom-it-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "strongroom test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        Pki {
            ca_pem: ca_cert.pem().into_bytes(),
            dir,
        }
    })
}

/// `"sqlite"` or `"postgres"`: the backend under test (see `strongroom_testenv`).
pub fn backend() -> String {
    strongroom_testenv::backend().as_str().to_owned()
}

pub use strongroom_testenv::pg_url;

/// Where a test server keeps its data.
pub struct Data {
    pub dir: tempfile::TempDir,
    pub store: StoreConfig,
    pub root: [u8; 32],
}

impl Data {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = if backend() == "postgres" {
            let schema = format!(
                "it_{}",
                hex::encode(strongroom_crypto::random::bytes::<8>().unwrap())
            );
            StoreConfig {
                url: pg_url(),
                schema: Some(schema),
                max_connections: 8,
            }
        } else {
            StoreConfig {
                url: format!("sqlite://{}", dir.path().join("strongroom.db").display()),
                schema: None,
                max_connections: 4,
            }
        };
        Self {
            dir,
            store,
            root: strongroom_crypto::random::bytes::<32>().unwrap(),
        }
    }

    /// Where the servers on this data anchor their audit checkpoints.
    pub fn anchor(&self) -> PathBuf {
        self.dir
            .path()
            .join(strongroom_server::audit::anchor::FILE_NAME)
    }

    pub fn sqlite_files(&self) -> Vec<PathBuf> {
        ["strongroom.db", "strongroom.db-wal"]
            .iter()
            .map(|f| self.dir.path().join(f))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Starts a server on `data` with the test configuration, `tweak`ed, and `custody`.
pub async fn boot(
    data: &Data,
    tweak: impl FnOnce(&mut ServerConfig),
    custody: strongroom_server::Custody,
    clock: &TestClock,
) -> Result<Running, strongroom_server::StartError> {
    init_logging();
    let p = pki();
    let tls = TlsFiles {
        cert_path: p.dir.join("cert.pem"),
        key_path: p.dir.join("key.pem"),
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = ServerConfig::new(addr, Some(tls), data.store.clone());
    config.dev_mode = true;
    config.rewrap_interval = Duration::from_millis(200);
    config.rewrap_batch = 50;
    // Tests that are not about rate limits must not trip them (controls.rs sets its own).
    config.rate_limit.per_minute = 1_000_000;
    config.rate_limit.reveal_per_minute = 1_000_000;
    config.rate_limit.otp_per_minute = 1_000_000;
    config.rate_limit.ip_per_minute = 1_000_000;
    config.rate_limit.browser_session_per_minute = 1_000_000;
    config.rate_limit.browser_ip_per_minute = 1_000_000;
    config.rate_limit.browser_key_per_minute = 1_000_000;
    // The audit anchor lives with the data on both backends (SQLite's default).
    config.audit_anchor = Some(data.anchor());
    tweak(&mut config);
    strongroom_server::start_custody(config, custody, Arc::new(clock.clone())).await
}

pub struct TestServer {
    pub running: Running,
    pub url: String,
    pub client: reqwest::Client,
    pub clock: TestClock,
    pub admin_key: String,
    pub account: String,
    pub sk_test: String,
    pub pk_test: String,
    pub sk_live: String,
    /// Restricted test key with every card scope, reveal included.
    pub rk_reveal: String,
    pub data: Arc<Data>,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki().ca_pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on(Arc::new(Data::new()), |_| {}).await
    }

    /// Boots a server on existing data (for restarts).
    pub async fn start_on(data: Arc<Data>, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let clock = TestClock::default();
        let root = RootKey::from_bytes(&data.root).unwrap();
        let custody = strongroom_server::Custody::Open {
            root,
            provider: strongroom_server::Provider::File,
        };
        let running = boot(&data, tweak, custody, &clock).await.unwrap();
        Self::provision(running, clock, data).await
    }

    /// Provisions an admin key, an account and its keys on a started, open server.
    pub async fn provision(running: Running, clock: TestClock, data: Arc<Data>) -> Self {
        let s = running.state().unwrap();
        let admin = s
            .accounts()
            .create_key(Origin::System, None, NewKeyKind::Admin, Mode::Live, None)
            .await
            .unwrap();
        let acct = s
            .accounts()
            .create(Origin::System, "Test merchant", None)
            .await
            .unwrap();
        let key = |kind, mode, scopes: Option<Scopes>| {
            let s = s.clone();
            let acct = acct.id.clone();
            async move {
                s.accounts()
                    .create_key(
                        Origin::System,
                        Some(&acct),
                        NewKeyKind::Account(kind),
                        mode,
                        scopes,
                    )
                    .await
                    .unwrap()
                    .secret
                    .expose()
                    .clone()
            }
        };
        let all = Scopes::parse_list(["cards:write", "cards:read", "cards:reveal", "cards:delete"])
            .unwrap();
        let url = format!("https://127.0.0.1:{}", running.local_addr.port());
        Self {
            sk_test: key(KeyKind::Secret, Mode::Test, None).await,
            pk_test: key(KeyKind::Publishable, Mode::Test, None).await,
            sk_live: key(KeyKind::Secret, Mode::Live, None).await,
            rk_reveal: key(KeyKind::Restricted, Mode::Test, Some(all)).await,
            admin_key: admin.secret.expose().clone(),
            account: acct.id,
            running,
            url,
            client: client(),
            clock,
            data,
        }
    }

    pub async fn stop(self) -> Arc<Data> {
        self.running.shutdown();
        self.running.wait().await.unwrap();
        self.data
    }

    /// A new secret test-mode key of this server's account.
    pub async fn new_secret_key(&self) -> strongroom_server::IssuedKey {
        self.running
            .state()
            .unwrap()
            .accounts()
            .create_key(
                Origin::System,
                Some(&self.account),
                NewKeyKind::Account(KeyKind::Secret),
                Mode::Test,
                None,
            )
            .await
            .unwrap()
    }

    /// Sends a request; returns status, JSON body (Null if none) and headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{}", self.url, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(key), Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, Some(key), None).await
    }

    /// Tokenizes with the test secret key; asserts success.
    pub async fn tokenize(&self, number: &str) -> Value {
        let r = self
            .post(
                "/v1/cards",
                &self.sk_test,
                json!({"number": number, "exp_month": 12, "exp_year": 2030}),
            )
            .await;
        assert!(r.status.is_success(), "tokenize: {} {}", r.status, r.body);
        r.body
    }

    /// Creates a reveal OTP and reveals with it using `key`.
    pub async fn reveal(&self, key: &str, card_id: &str) -> Resp {
        let otp = self
            .post(
                "/v1/otp",
                key,
                json!({"purpose": "card.reveal", "card": card_id}),
            )
            .await;
        assert_eq!(otp.status, StatusCode::CREATED, "{}", otp.body);
        let code = otp.body["test_code"].as_str().unwrap().to_owned();
        let id = otp.body["id"].as_str().unwrap().to_owned();
        self.post(
            &format!("/v1/cards/{card_id}/reveal"),
            key,
            json!({"otp": id, "code": code}),
        )
        .await
    }
}

/// `text` with the 32 hex digits after every `_` taken out (`req_0190…` → `req_`). Ids are
/// a prefix and 32 hex digits, most of them random, so a four-digit needle turns up in one
/// by chance about once in 3,000 ids: a check for an echoed `4242` failed that way in CI.
pub fn without_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('_') {
        let (head, tail) = rest.split_at(at + 1);
        out.push_str(head);
        let hex = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        rest = if hex >= 32 { &tail[32..] } else { tail };
    }
    out.push_str(rest);
    out
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Self {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            body,
            headers,
            text,
        }
    }

    /// The body with the hex part of every id taken out (see [`without_ids`]), for checks
    /// that a short input (`4242`, a four-digit PIN) is not echoed.
    pub fn text_without_ids(&self) -> String {
        without_ids(&self.text)
    }

    /// Asserts an error response with this status and code, in the standard shape.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.text);
        let rid = self.body["error"]["request_id"].as_str().unwrap();
        assert!(rid.starts_with("req_"));
        assert_eq!(self.headers["request-id"].to_str().unwrap(), rid);
        assert!(self.body["error"]["type"].is_string());
        assert!(self.body["error"]["message"].is_string());
        // RFC 9110 §11.6.1 / RFC 6750 §3: every 401 carries a challenge.
        let challenge = self
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap());
        if status == 401 {
            let expected = if code.starts_with("token_") {
                r#"Bearer realm="strongroom", error="invalid_token""#
            } else {
                r#"Bearer realm="strongroom""#
            };
            assert_eq!(challenge, Some(expected), "{code}");
        } else {
            assert_eq!(challenge, None, "{status} {code}");
        }
    }
}

/// Every way a PAN might be written: plain, spaced in fours, dashed.
pub fn spellings(pan: &str) -> Vec<String> {
    let groups: Vec<String> = pan
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    vec![pan.to_owned(), groups.join(" "), groups.join("-")]
}

/// Every way a CVC might be written as a value: a CVC (3–4 digits) is too short to
/// look for on its own in logs and database files full of numbers, so look for it where
/// it would be a value: JSON (also escaped, and as a number), `key=value` and Debug.
pub fn cvc_spellings(cvc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["cvc", "cvv", "cvc2", "csc"] {
        out.extend([
            format!("\"{key}\":\"{cvc}\""),
            format!("\"{key}\": \"{cvc}\""),
            format!("\\\"{key}\\\":\\\"{cvc}\\\""),
            format!("\"{key}\":{cvc}"),
            format!("{key}={cvc}"),
            format!("{key}: \"{cvc}\""),
            format!("{key}: {cvc}"),
        ]);
    }
    out
}

/// Asserts that none of `secrets` appears in the server's logs so far.
#[track_caller]
pub fn assert_not_logged(secrets: &[&str]) {
    let logs = captured_logs();
    for s in secrets {
        for form in spellings(s) {
            assert!(
                !logs.contains(&form),
                "a secret appeared in the server's logs"
            );
        }
    }
}

/// Asserts that none of `needles` occurs in the bytes of `path`.
#[track_caller]
pub fn assert_not_in_file(path: &Path, needles: &[&str]) {
    let bytes = std::fs::read(path).unwrap();
    for n in needles {
        assert!(
            !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
            "a secret appeared in clear in {}",
            path.display()
        );
    }
}

/// A Luhn-valid 16-digit number in the 40000000 test range, unique per `n`.
pub fn test_pan(n: u64) -> String {
    let body = format!("40000000{:07}", n % 10_000_000);
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|c| strongroom_core::pan::luhn_valid(c.as_bytes()))
        .unwrap()
}

/// The test CA certificate (PEM), for clients in other languages.
pub fn ca_pem() -> Vec<u8> {
    pki().ca_pem.clone()
}

/// The test CA certificate as a PEM file (for openssl, Python and other clients).
pub fn ca_pem_path() -> PathBuf {
    let p = pki();
    let path = p.dir.join("ca.pem");
    if !path.exists() {
        let tmp = p
            .dir
            .join(format!("ca.pem.{:?}", std::thread::current().id()));
        std::fs::write(&tmp, &p.ca_pem).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// Polls `check` until it holds, for at most 5 s; returns how long that took. For what
/// another node learns asynchronously (a change heard through `LISTEN`).
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn without_ids_takes_out_the_hex_of_ids_and_nothing_else() {
    let id = format!("req_{}", "4242".repeat(8));
    let text = format!(r#"{{"request_id":"{id}","message":"4242 echoed","x":"snake_case_abc"}}"#);
    assert_eq!(
        without_ids(&text),
        r#"{"request_id":"req_","message":"4242 echoed","x":"snake_case_abc"}"#
    );
    // Longer than an id: only the id's 32 digits go.
    assert_eq!(without_ids(&format!("{id}42")), "req_42");
}
