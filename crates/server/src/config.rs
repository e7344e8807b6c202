//! The server's configuration: everything it needs besides the root key.

use crate::{audit, gateway};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strongroom_core::{Mode, Sensitive};
use strongroom_crypto::jwt::JwtAlg;
use strongroom_store::StoreConfig;

/// Where the TLS certificate chain and private key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PKCS#8, SEC1 or PKCS#1 private key.
    pub key_path: PathBuf,
}

/// Everything the server needs besides the root key.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// TLS files. `None` serves plaintext HTTP; the CLI allows that only on loopback.
    pub tls: Option<TlsFiles>,
    /// The database.
    pub store: StoreConfig,
    /// Development or test deployment: OTP delivery may use plain HTTP to loopback.
    pub dev_mode: bool,
    /// How often the re-wrap worker looks for records under old key versions (it is
    /// also woken at once by a rotation).
    pub rewrap_interval: Duration,
    /// How many records the re-wrap worker moves per transaction.
    pub rewrap_batch: i64,
    /// How long a looked-up API key (and an account's controls, a key's allowlist) may
    /// be served from memory. Local changes clear it at once; on PostgreSQL, changes by
    /// other nodes clear it as soon as they are heard (`LISTEN`), and it is bypassed while
    /// not listening. Zero disables the cache.
    pub api_key_cache_ttl: Duration,
    /// How long unwrapped data keys are trusted before the key list is re-read (so a
    /// rotation on another node is picked up).
    pub keyring_ttl: Duration,
    /// Time after which a request is abandoned with 408.
    pub request_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs). Empty: the socket peer is
    /// always the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Rate limits and where their state lives.
    pub rate_limit: gateway::RateLimitConfig,
    /// How far a signature's `created` may be from now.
    pub signature_window: Duration,
    /// How long an idempotent response is kept.
    pub idempotency_ttl: Duration,
    /// PINs refused as too weak besides repeated digits and ascending/descending runs.
    pub pin_deny_list: Vec<String>,
    /// Failed PIN verifications or changes before a PIN locks, unless the account sets
    /// its own (1–10).
    pub pin_max_failures: i64,
    /// How long a replaced PIN transport key still decrypts after a rotation.
    pub pin_transport_grace: Duration,
    /// The admin listener serving `/metrics` (plain HTTP; loopback by default, port 0
    /// picks a free one). `None`: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the audit chain head is signed into a checkpoint (also at start and at
    /// shutdown). Zero: only at start and at shutdown.
    pub audit_checkpoint_interval: Duration,
    /// The file outside the database where every checkpoint is also appended
    /// (`audit::anchor`). Default: `audit-anchor.jsonl` beside an SQLite database; none
    /// with PostgreSQL unless configured.
    pub audit_anchor: Option<std::path::PathBuf>,
    /// Bearer tokens (JWT): algorithm, lifetime, key pre-publication, issuer, audience.
    pub tokens: TokenConfig,
    /// How long a client may take to send a request's headers (HTTP/1.1; also bounds an
    /// idle keep-alive connection), and the HTTP/2 keep-alive ping timeout.
    pub header_read_timeout: Duration,
    /// Webhook delivery settings (retry schedule, workers, timeouts).
    pub webhooks: WebhookConfig,
    /// Inbound processor hook sources (`POST /v1/inbound/{source}`).
    pub inbound_sources: Vec<InboundSource>,
    /// The relay's timeouts and limits (`POST /v1/relay`).
    pub relay: RelayConfig,
    /// The risk engine's country data (docs/risk.md): a BIN table (CSV
    /// `bin_prefix,country`) and a MaxMind-format IP country database, read at start.
    pub risk_bin_table: Option<std::path::PathBuf>,
    /// See [`ServerConfig::risk_bin_table`].
    pub risk_ip_database: Option<std::path::PathBuf>,
    /// The longest each kind of key may live, and what happens as it nears the limit.
    pub key_policy: KeyPolicy,
    /// Where a root-key rotation may put the next root key.
    pub custody: CustodyConfig,
}

/// What a root-key rotation needs besides the vault (docs/key-custody.md).
#[derive(Debug, Clone)]
pub struct CustodyConfig {
    /// Writes the next root key where the `file` provider reads it at start (the CLI's
    /// root key file, in its format). `None`: a rotation cannot keep a file root key.
    pub root_file: Option<RootFileWriter>,
    /// The HSM a rotation to (or within) `pkcs11` uses.
    pub pkcs11: Option<Pkcs11Config>,
    /// How often a node checks whether another has begun or ended a rotation.
    pub follow_interval: Duration,
}

impl Default for CustodyConfig {
    fn default() -> Self {
        Self {
            root_file: None,
            pkcs11: None,
            follow_interval: Duration::from_secs(1),
        }
    }
}

/// Writes a root key's 32 bytes to the file it is read from at start, replacing the
/// key there (atomically: a crash leaves the old key or the new one); given `None`,
/// removes the file (the key moved to another provider).
#[derive(Clone)]
#[allow(
    clippy::type_complexity,
    reason = "one callback, named by this type and nowhere else"
)]
pub struct RootFileWriter(
    pub std::sync::Arc<dyn Fn(Option<&[u8]>) -> std::io::Result<()> + Send + Sync>,
);

impl std::fmt::Debug for RootFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootFileWriter")
    }
}

/// Where the HSM's key is (the `pkcs11` root-key provider).
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The label of the AES key that wraps the root key (made on the first start).
    pub key_label: String,
    /// The user PIN.
    pub pin: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"[REDACTED]")
            .finish()
    }
}

/// The key-age policy (docs/key-custody.md, "Key-age policy"): the longest each kind of
/// key may live before it must be rotated, in days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Card data keys.
    pub cards_days: i64,
    /// Fingerprint keys.
    pub fingerprint_days: i64,
    /// PIN-block keys and PIN transport keys.
    pub pin_days: i64,
    /// JWT signing keys.
    pub jwt_days: i64,
    /// API keys and admin keys.
    pub api_key_days: i64,
    /// Webhook signing secrets.
    pub webhook_secret_days: i64,
    /// `key.rotation_due` goes out this many days before the limit (each once).
    pub notice_days: Vec<i64>,
    /// How often the ages are checked (events, the metric, automatic rotation).
    pub check_interval: Duration,
    /// Rotate card, fingerprint and PIN data keys, and the JWT signing key, on their
    /// own when they reach the first notice.
    pub auto_rotate: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            cards_days: 365,
            fingerprint_days: 365,
            pin_days: 365,
            jwt_days: 90,
            api_key_days: 90,
            webhook_secret_days: 365,
            notice_days: vec![30, 7],
            check_interval: Duration::from_secs(3600),
            auto_rotate: false,
        }
    }
}

impl ServerConfig {
    /// Defaults for everything but the address, TLS and database.
    pub fn new(listen: SocketAddr, tls: Option<TlsFiles>, store: StoreConfig) -> Self {
        let single_node = store.url.starts_with("sqlite:");
        let audit_anchor = audit::anchor::default_path(&store.url);
        Self {
            listen,
            tls,
            store,
            dev_mode: false,
            rewrap_interval: Duration::from_secs(30),
            rewrap_batch: 256,
            // On PostgreSQL too: every node hears committed changes (`crate::cache`).
            api_key_cache_ttl: Duration::from_secs(300),
            keyring_ttl: Duration::from_secs(if single_node { 300 } else { 5 }),
            request_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            rate_limit: gateway::RateLimitConfig::default(),
            signature_window: Duration::from_secs(300),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            pin_deny_list: DEFAULT_DENY_LIST.iter().map(|s| (*s).to_owned()).collect(),
            pin_max_failures: DEFAULT_MAX_FAILURES,
            pin_transport_grace: Duration::from_secs(24 * 3600),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            audit_checkpoint_interval: Duration::from_secs(60),
            audit_anchor,
            tokens: TokenConfig::default(),
            header_read_timeout: Duration::from_secs(10),
            webhooks: WebhookConfig::default(),
            inbound_sources: Vec::new(),
            relay: RelayConfig::default(),
            risk_bin_table: None,
            risk_ip_database: None,
            key_policy: KeyPolicy::default(),
            custody: CustodyConfig::default(),
        }
    }
}

/// The relay's timeouts and limits (part of [`ServerConfig`]).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Time to open a connection to a destination (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for a whole exchange with a destination: connect, send, and read the
    /// response. The relay's route is given this plus a margin, whatever
    /// `request_timeout` says, so that a slow destination ends as `504
    /// relay_upstream_timeout` (and a `relay.failed` event) rather than `408`.
    pub timeout: Duration,
    /// The largest response body read from a destination.
    pub max_response_bytes: usize,
    /// How long an idle connection to a destination is kept for reuse.
    pub pool_idle_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_response_bytes: 1024 * 1024,
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Failures before a PIN locks, unless configured.
pub const DEFAULT_MAX_FAILURES: i64 = 3;

/// Commonly chosen PINs refused besides repeats and runs (configurable).
pub const DEFAULT_DENY_LIST: &[&str] = &[
    "1212", "1122", "1313", "2580", "0852", "1004", "2000", "2001", "1010", "6969", "1984", "4444",
    "121212", "112233", "123123", "147258", "159753", "696969", "131313",
];

/// Settings of the delivery workers (part of `ServerConfig`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Delay before attempt n+1 after attempt n failed (`[0]` is the first attempt's);
    /// its length is the number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// Concurrent deliveries per node.
    pub workers: usize,
    /// How often idle workers look for due deliveries.
    pub poll_interval: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// Continuous failure after which an endpoint is disabled.
    pub disable_after: Duration,
    /// How long a claimed delivery is reserved for its worker.
    pub lease: Duration,
    /// How long events are kept.
    pub event_retention: Duration,
    /// The most API-managed endpoints an account may have in each mode: every event
    /// writes one delivery row per matching endpoint inside the writer's transaction.
    pub max_endpoints: i64,
    /// An HTTP(S) proxy that every delivery goes through (`[webhooks] egress_proxy`).
    /// Without it the environment's proxy variables (`HTTPS_PROXY`, `ALL_PROXY`, …) are
    /// ignored: a proxy would make the address checks see only the proxy.
    pub egress_proxy: Option<String>,
    /// Test harnesses only (no configuration file sets it): deliveries that must go to
    /// public HTTPS destinations (live mode, OTP codes) may also go to plain-HTTP
    /// loopback, where a test receiver listens. Nothing else private is let through.
    #[doc(hidden)]
    pub loopback_for_tests: bool,
}

/// Default of [`WebhookConfig::max_endpoints`].
pub const DEFAULT_MAX_ENDPOINTS: i64 = 16;

impl Default for WebhookConfig {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            retry_schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                m(5),
                m(30),
                m(120),
                m(300),
                m(600),
                m(600),
            ],
            workers: 8,
            poll_interval: Duration::from_millis(500),
            timeout: Duration::from_secs(15),
            retry_after_cap: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            lease: Duration::from_secs(60),
            event_retention: Duration::from_secs(30 * 24 * 3600),
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
            egress_proxy: None,
            loopback_for_tests: false,
        }
    }
}

/// Settings of bearer tokens (part of [`crate::ServerConfig`]).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Algorithm of newly generated signing keys.
    pub alg: JwtAlg,
    /// Lifetime of an access token.
    pub lifetime: Duration,
    /// How long a new signing key is published before it signs.
    pub prepublish: Duration,
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            alg: JwtAlg::EdDsa,
            lifetime: Duration::from_secs(3600),
            prepublish: Duration::from_secs(300),
            leeway: Duration::from_secs(5),
            issuer: "strongroom".into(),
            audience: "strongroom-api".into(),
        }
    }
}

/// How a source signs its notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundScheme {
    /// Hex HMAC-SHA256 of the raw body in the named header (e.g. `X-M2P-Signature`).
    HmacSha256Hex {
        /// The header carrying the signature.
        header: String,
    },
    /// Stripe-style `Stripe-Signature: t=…,v1=…` over `"{t}.{body}"`.
    Stripe {
        /// The header (default `Stripe-Signature`).
        header: String,
        /// Accepted clock difference, seconds.
        tolerance_s: i64,
    },
    /// Standard Webhooks headers and `v1` signatures under a `whsec_` secret.
    StandardWebhooks {
        /// Accepted clock difference, seconds.
        tolerance_s: i64,
    },
}

/// A configured inbound source. The secret comes from a file or the environment.
#[derive(Debug, Clone)]
pub struct InboundSource {
    /// The `{source}` path segment.
    pub name: String,
    /// The account whose outbox receives `inbound.received`.
    pub account_id: String,
    /// The mode of those events.
    pub mode: Mode,
    /// The signature scheme.
    pub scheme: InboundScheme,
    /// The shared secret (raw bytes; for Standard Webhooks, the decoded `whsec_`).
    pub secret: Sensitive<Vec<u8>>,
}
