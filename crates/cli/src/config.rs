//! `strongroom serve`, `config check` and `init`: the production configuration.

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strongroom_crypto::RootKey;
use strongroom_server::{ServerConfig, TlsFiles};
use strongroom_store::StoreConfig;

/// The TOML file. Unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    /// Where the root key is kept: `file` (the default), `shamir` or `pkcs11`
    /// (docs/key-custody.md).
    pub root_key_provider: Option<String>,
    /// `file` provider: the 32-byte root key file (mode 0600); else `STRONGROOM_ROOT_KEY_FILE`.
    pub root_key_file: Option<PathBuf>,
    /// TLS files.
    pub tls: Option<TlsSection>,
    /// Serve plain HTTP (only on loopback, e.g. behind a local TLS proxy).
    #[serde(default)]
    pub plaintext: bool,
    /// Also write JSON logs here.
    pub log_dir: Option<PathBuf>,
    /// Store tuning.
    pub store: Option<StoreSection>,
    pub rewrap_interval_secs: Option<u64>,
    pub api_key_cache_ttl_secs: Option<u64>,
    pub keyring_ttl_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    /// Rate limits (docs/controls.md).
    pub rate_limit: Option<crate::controls::RateLimitSection>,
    /// Client address, signatures, idempotency (docs/controls.md).
    pub gateway: Option<crate::controls::GatewaySection>,
    /// PIN service settings.
    pub pin: Option<crate::pin::PinSection>,
    /// The admin listener for `/metrics`.
    pub metrics: Option<MetricsSection>,
    /// The audit trail.
    pub audit: Option<AuditSection>,
    /// Bearer tokens (JWT).
    pub tokens: Option<crate::tokens::TokensSection>,
    /// Limits against slow clients.
    pub connections: Option<crate::tokens::ConnectionsSection>,
    /// Webhook delivery settings.
    pub webhooks: Option<crate::webhooks::WebhooksSection>,
    /// Inbound processor hook sources.
    #[serde(default)]
    pub inbound: Vec<crate::webhooks::InboundSection>,
    /// The relay's timeouts and limits (docs/relay.md).
    pub relay: Option<RelaySection>,
    /// The risk engine's country data (docs/risk.md).
    pub risk: Option<RiskSection>,
    /// The key-age policy (docs/key-custody.md).
    pub key_policy: Option<KeyPolicySection>,
    /// The HSM of `root_key_provider = "pkcs11"`.
    pub pkcs11: Option<Pkcs11Section>,
}

/// `[pkcs11]`: the HSM that holds the key wrapping the root key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The wrapping key's label (made on the first start). Default `strongroom-root`.
    pub key_label: Option<String>,
    /// A file (mode 0600) holding the user PIN; else `STRONGROOM_PKCS11_PIN`.
    pub pin_file: Option<PathBuf>,
}

/// The variable that carries the HSM's user PIN when no `pin_file` is set.
pub const PKCS11_PIN_VAR: &str = "STRONGROOM_PKCS11_PIN";

/// Where the root key comes from, once the configuration is checked.
#[allow(
    clippy::large_enum_variant,
    reason = "made once at start; boxing the key would only add an allocation"
)]
pub enum Root {
    /// A file, read.
    File(RootKey),
    /// Shamir shares: a sealed start.
    Shamir,
    /// An HSM: unwrapped at start (it needs the database).
    Pkcs11(strongroom_server::custody::pkcs11::Pkcs11Config),
}

impl Root {
    /// How the server starts: for an HSM, the root key is unwrapped (or made) now.
    pub async fn custody(self, store: &StoreConfig) -> Result<strongroom_server::Custody> {
        use strongroom_core::Clock;
        use strongroom_server::{Custody, Provider};
        Ok(match self {
            Self::File(root) => Custody::Open {
                root,
                provider: Provider::File,
            },
            Self::Shamir => Custody::Sealed,
            Self::Pkcs11(cfg) => {
                let db = strongroom_store::Store::connect(store)
                    .await
                    .map_err(|e| anyhow!("cannot open the database: {e}"))?;
                let now = strongroom_core::SystemClock.now_ms();
                let root = strongroom_server::custody::pkcs11::open_root(&db, &cfg, now).await;
                db.close().await;
                Custody::Open {
                    root: root.map_err(|e| anyhow!("{e}"))?,
                    provider: Provider::Pkcs11,
                }
            }
        })
    }
}

/// The HSM settings, with the PIN from its file or the environment.
pub fn pkcs11_config(
    module: PathBuf,
    token_label: String,
    key_label: Option<String>,
    pin_file: Option<&Path>,
) -> Result<strongroom_server::custody::pkcs11::Pkcs11Config> {
    let pin = match pin_file {
        Some(p) => {
            let meta =
                std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{} gives group or others access; it must be 0600 or stricter",
                    p.display()
                );
            }
            zeroize::Zeroizing::new(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .trim()
                    .to_owned(),
            )
        }
        None => zeroize::Zeroizing::new(
            std::env::var(PKCS11_PIN_VAR)
                .map_err(|_| anyhow!("no HSM PIN: set [pkcs11] pin_file or {PKCS11_PIN_VAR}"))?,
        ),
    };
    Ok(strongroom_server::custody::pkcs11::Pkcs11Config {
        module,
        token_label,
        key_label: key_label.unwrap_or_else(|| "strongroom-root".to_owned()),
        pin,
    })
}

/// `[key_policy]`: the longest each kind of key may live, in days, and what happens near
/// the limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicySection {
    pub cards_days: Option<i64>,
    pub fingerprint_days: Option<i64>,
    pub pin_days: Option<i64>,
    pub jwt_days: Option<i64>,
    pub api_key_days: Option<i64>,
    pub webhook_secret_days: Option<i64>,
    /// Days before the limit at which `key.rotation_due` goes out.
    pub notice_days: Option<Vec<i64>>,
    pub check_interval_secs: Option<u64>,
    /// Rotate data keys and the JWT signing key on their own when due.
    pub auto_rotate: Option<bool>,
}

impl KeyPolicySection {
    fn apply(&self, p: &mut strongroom_server::config::KeyPolicy) -> Result<()> {
        for (name, value, field) in [
            ("cards_days", self.cards_days, &mut p.cards_days),
            (
                "fingerprint_days",
                self.fingerprint_days,
                &mut p.fingerprint_days,
            ),
            ("pin_days", self.pin_days, &mut p.pin_days),
            ("jwt_days", self.jwt_days, &mut p.jwt_days),
            ("api_key_days", self.api_key_days, &mut p.api_key_days),
            (
                "webhook_secret_days",
                self.webhook_secret_days,
                &mut p.webhook_secret_days,
            ),
        ] {
            if let Some(v) = value {
                if !(1..=3650).contains(&v) {
                    bail!("[key_policy] {name} must be between 1 and 3650");
                }
                *field = v;
            }
        }
        if let Some(n) = &self.notice_days {
            if n.len() > 5 || n.iter().any(|d| !(1..=365).contains(d)) {
                bail!("[key_policy] notice_days: at most 5 values, each between 1 and 365");
            }
            p.notice_days.clone_from(n);
        }
        if let Some(d) = secs(
            "[key_policy] check_interval_secs",
            self.check_interval_secs,
            false,
        )? {
            p.check_interval = d;
        }
        if let Some(a) = self.auto_rotate {
            p.auto_rotate = a;
        }
        Ok(())
    }
}

/// `[risk]`: country data for the mismatch signals, read at start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSection {
    /// A BIN table: CSV rows `bin_prefix,country` (longest prefix wins).
    pub bin_table: Option<PathBuf>,
    /// A MaxMind-format IP country database (`.mmdb`: GeoLite2-Country, DB-IP lite).
    pub ip_database: Option<PathBuf>,
}

/// `[relay]`: the relay's timeouts and the largest answer it reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Time to open a connection to a destination, TCP and TLS (default 5, at most 60).
    pub connect_timeout_secs: Option<u64>,
    /// Time for a whole exchange with a destination (default 30, at most 120).
    pub timeout_secs: Option<u64>,
    /// The largest answer read from a destination, in KiB (default 1024, at most 16384).
    pub max_response_kib: Option<usize>,
}

/// Applies `[relay]`.
fn apply_relay(server: &mut ServerConfig, r: Option<&RelaySection>) -> Result<()> {
    let Some(r) = r else {
        return Ok(());
    };
    let c = &mut server.relay;
    if let Some(t) = r.connect_timeout_secs {
        if !(1..=60).contains(&t) {
            bail!("[relay] connect_timeout_secs must be 1 to 60");
        }
        c.connect_timeout = Duration::from_secs(t);
    }
    if let Some(t) = r.timeout_secs {
        if !(1..=120).contains(&t) {
            bail!("[relay] timeout_secs must be 1 to 120");
        }
        c.timeout = Duration::from_secs(t);
    }
    if let Some(k) = r.max_response_kib {
        if !(1..=16384).contains(&k) {
            bail!("[relay] max_response_kib must be 1 to 16384");
        }
        c.max_response_bytes = k * 1024;
    }
    Ok(())
}

/// `[metrics]`: the admin listener (plain HTTP, no authentication; keep it on loopback or a
/// private network: another address is accepted with a warning).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of `/metrics` (default `127.0.0.1:9464`).
    pub listen: Option<SocketAddr>,
    /// `false` turns the listener off (default on).
    pub enabled: Option<bool>,
}

/// `[audit]`: the audit trail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// How often the chain head is signed into a checkpoint (default 60; also at start and
    /// at shutdown). 0: only at start and at shutdown (accepted with a warning), e.g. on
    /// all but one of several nodes sharing a database.
    pub checkpoint_interval_secs: Option<u64>,
    /// A file outside the database where every checkpoint is also appended (JSON lines,
    /// 0600), for `strongroom audit verify --anchor`. Default: `audit-anchor.jsonl`
    /// beside an SQLite database; with PostgreSQL, none (accepted with a warning).
    pub anchor_path: Option<PathBuf>,
}

/// Where `serve` exposes `/metrics` unless configured.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub max_connections: Option<u32>,
}

/// A validated configuration, ready to start.
pub struct Checked {
    pub server: ServerConfig,
    /// Where the root key comes from.
    pub root: Root,
    pub log_dir: Option<PathBuf>,
    /// Serving plain HTTP on loopback (worth a warning in the log).
    pub plaintext: bool,
    /// Settings that are allowed but weaken something: `config check` prints them and
    /// `serve` logs them.
    pub warnings: Vec<String>,
}

/// `strongroom config check`: validates and prints the warnings, then `config OK`.
pub fn check_and_report(path: &Path) -> Result<()> {
    let checked = check(path)?;
    for w in &checked.warnings {
        eprintln!("strongroom: warning: {w}");
    }
    println!("config OK");
    Ok(())
}

/// Reads and validates everything `serve` needs, without starting.
pub fn check(path: &Path) -> Result<Checked> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    validate(parse_toml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?)
}

/// Parses the TOML text. The message names the line and the offending key, but never
/// quotes the file (a value could be a secret pasted in by mistake).
fn parse_toml(text: &str) -> Result<FileConfig> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .and_then(|s| text.get(..s.start))
            .map(|before| before.matches('\n').count() + 1);
        match line {
            Some(n) => anyhow!("line {n}: {}", e.message()),
            None => anyhow!("{}", e.message()),
        }
    })
}

/// Seconds from the file; zero is refused where it would make no sense.
fn secs(name: &str, value: Option<u64>, zero_ok: bool) -> Result<Option<Duration>> {
    match value {
        Some(0) if !zero_ok => bail!("{name} must be at least 1"),
        v => Ok(v.map(Duration::from_secs)),
    }
}

fn validate(file: FileConfig) -> Result<Checked> {
    let tls = match (&file.tls, file.plaintext) {
        (Some(_), true) => bail!("both [tls] and plaintext = true are set; choose one"),
        (None, false) => bail!("TLS is missing: add a [tls] section with cert and key"),
        (None, true) if !file.listen.ip().is_loopback() => {
            bail!(
                "refusing to listen in plaintext off loopback ({}); configure [tls]",
                file.listen
            )
        }
        (None, true) => None,
        (Some(t), false) => {
            for p in [&t.cert, &t.key] {
                std::fs::File::open(p)
                    .with_context(|| format!("cannot read TLS file {}", p.display()))?;
            }
            Some(TlsFiles {
                cert_path: t.cert.clone(),
                key_path: t.key.clone(),
            })
        }
    };
    if !(file.database_url.starts_with("sqlite://")
        || file.database_url.starts_with("postgres://")
        || file.database_url.starts_with("postgresql://"))
    {
        bail!("database_url must start with sqlite:// or postgres://");
    }
    let provider = file.root_key_provider.as_deref().unwrap_or("file");
    if file.root_key_file.is_some() && provider != "file" {
        bail!(
            "root_key_file is for root_key_provider = \"file\"; a {provider} vault's key is not in a file (docs/key-custody.md)"
        );
    }
    // With another provider, [pkcs11] names the HSM a root rotation may move the key to.
    let hsm = match &file.pkcs11 {
        Some(h) => {
            if !h.module.is_file() {
                bail!("[pkcs11] module {} does not exist", h.module.display());
            }
            Some(pkcs11_config(
                h.module.clone(),
                h.token_label.clone(),
                h.key_label.clone(),
                h.pin_file.as_deref(),
            )?)
        }
        None => None,
    };
    let mut root_file = None;
    let root = match strongroom_server::Provider::parse(provider) {
        Some(strongroom_server::Provider::File) => {
            let key_path = match &file.root_key_file {
                Some(p) => p.clone(),
                None => std::env::var_os("STRONGROOM_ROOT_KEY_FILE")
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        anyhow!("no root key: set root_key_file or STRONGROOM_ROOT_KEY_FILE")
                    })?,
            };
            let root = Root::File(load_root_key(&key_path)?);
            root_file = Some(root_file_writer(key_path, |k| k.to_vec()));
            root
        }
        Some(strongroom_server::Provider::Shamir) => Root::Shamir,
        Some(strongroom_server::Provider::Pkcs11) => {
            Root::Pkcs11(hsm.clone().ok_or_else(|| {
                anyhow!("root_key_provider = \"pkcs11\" needs a [pkcs11] section")
            })?)
        }
        None => bail!("root_key_provider must be \"file\", \"shamir\" or \"pkcs11\""),
    };
    if let Some(t) = &tls {
        strongroom_server::tls::rustls_config(t).map_err(|e| anyhow!(e))?;
    }
    let max_connections = file
        .store
        .as_ref()
        .and_then(|s| s.max_connections)
        .unwrap_or(8);
    if max_connections == 0 {
        bail!("[store] max_connections must be at least 1");
    }
    let store = StoreConfig {
        url: file.database_url.clone(),
        schema: None,
        max_connections,
    };
    let mut server = ServerConfig::new(file.listen, tls, store);
    if let Some(d) = secs("rewrap_interval_secs", file.rewrap_interval_secs, false)? {
        server.rewrap_interval = d;
    }
    // Zero disables the API key cache (several nodes hear changes anyway: strongroom_server::cache).
    if let Some(d) = secs("api_key_cache_ttl_secs", file.api_key_cache_ttl_secs, true)? {
        server.api_key_cache_ttl = d;
    }
    if let Some(d) = secs("keyring_ttl_secs", file.keyring_ttl_secs, true)? {
        server.keyring_ttl = d;
    }
    if let Some(d) = secs("request_timeout_secs", file.request_timeout_secs, false)? {
        server.request_timeout = d;
    }
    crate::controls::apply(file.rate_limit.as_ref(), file.gateway.as_ref(), &mut server)?;
    if let Some(pin) = &file.pin {
        pin.apply(&mut server)?;
    }
    let mut warnings = Vec::new();
    let metrics = file.metrics.as_ref();
    server.metrics_listen = if metrics.and_then(|m| m.enabled) == Some(false) {
        None
    } else {
        Some(match metrics.and_then(|m| m.listen) {
            Some(a) => a,
            None => DEFAULT_METRICS_LISTEN.parse()?,
        })
    };
    if let Some(a) = server.metrics_listen
        && !a.ip().is_loopback()
    {
        warnings.push(format!(
            "[metrics] listen = {a} is not a loopback address: /metrics is plain HTTP without authentication, so anyone who can reach that address can read it; keep it on a private network or firewall it"
        ));
    }
    // Zero is what the server means by "only at start and at shutdown".
    let interval = file.audit.as_ref().and_then(|a| a.checkpoint_interval_secs);
    if let Some(d) = secs("[audit] checkpoint_interval_secs", interval, true)? {
        if d.is_zero() {
            warnings.push(
                "[audit] checkpoint_interval_secs = 0: the audit head is signed only at start and at shutdown, so after a crash the records since start are covered by no checkpoint and a cut tail would go unnoticed; use this only where another node checkpoints the same database".into(),
            );
        }
        server.audit_checkpoint_interval = d;
    }
    if let Some(p) = file.audit.as_ref().and_then(|a| a.anchor_path.clone()) {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            bail!(
                "[audit] anchor_path: the directory of {} does not exist",
                p.display()
            );
        }
        server.audit_anchor = Some(p);
    }
    if server.audit_anchor.is_none() {
        warnings.push(
            "[audit] anchor_path is not set: with PostgreSQL the audit checkpoints are then kept only in the database, so whoever can write it can cut the log's tail together with its checkpoints unnoticed; set it to a file on this node (or another volume)".into(),
        );
    }
    crate::tokens::apply(file.tokens.as_ref(), file.connections.as_ref(), &mut server)?;
    crate::webhooks::apply(&mut server, file.webhooks.as_ref(), &file.inbound)?;
    apply_relay(&mut server, file.relay.as_ref())?;
    if let Some(k) = &file.key_policy {
        k.apply(&mut server.key_policy)?;
    }
    server.custody.pkcs11 = hsm;
    server.custody.root_file = root_file;
    if let Some(r) = &file.risk {
        server.risk_bin_table.clone_from(&r.bin_table);
        server.risk_ip_database.clone_from(&r.ip_database);
    }
    warnings.extend(crate::webhooks::warnings(&server));
    if matches!(root, Root::File(_)) {
        warnings.push(format!(
            "root_key_provider = \"file\": whoever can read the disk can read the root key; `serve` asks for {FILE_ROOT_KEY_FLAG}, and production vaults should start sealed (root_key_provider = \"shamir\", docs/key-custody.md)"
        ));
    }
    Ok(Checked {
        server,
        root,
        log_dir: file.log_dir,
        plaintext: file.plaintext,
        warnings,
    })
}

/// Loads a production root key: 32 raw bytes or 64 hex digits, mode 0600 or stricter,
/// never a dev key. Messages never include key material.
pub fn load_root_key(path: &Path) -> Result<RootKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read root key file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "root key file {} has mode 0{mode:03o}, which gives group or others access; it must be 0600 or stricter: run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    if !meta.is_file() {
        bail!("root key file {} is not a regular file", path.display());
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
    if bytes.starts_with(crate::dev::DEV_KEY_MARKER.as_bytes()) {
        bail!(
            "{} is a dev root key, and strongroom serve refuses to start with a dev key; create a production key with `strongroom init --root-key-file PATH`",
            path.display()
        );
    }
    let key = if bytes.len() == 32 {
        RootKey::from_bytes(&bytes)
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            anyhow!(
                "root key file {} is not 32 bytes or 64 hex digits",
                path.display()
            )
        })?;
        let raw =
            zeroize::Zeroizing::new(crate::dev::hex_decode(text.trim_end()).ok_or_else(|| {
                anyhow!(
                    "root key file {} is not 32 bytes or 64 hex digits",
                    path.display()
                )
            })?);
        RootKey::from_bytes(&raw)
    };
    key.map_err(|_| {
        anyhow!(
            "root key file {} is not 32 bytes or 64 hex digits",
            path.display()
        )
    })
}

/// `strongroom init`: a fresh production root key.
pub fn init_root_key(path: &Path) -> Result<()> {
    use std::io::Write;
    let key = zeroize::Zeroizing::new(
        strongroom_crypto::random::bytes::<32>().map_err(|_| anyhow!("no randomness"))?,
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(key.as_slice())?;
    f.sync_all()?;
    println!(
        "wrote a new root key to {} (mode 0600); back it up offline",
        path.display()
    );
    Ok(())
}

/// Writes a rotated root key to `path` (0600, through a temporary file and a rename),
/// in the form `encode` gives it; removes it when the key moves to another provider.
pub fn root_file_writer(
    path: PathBuf,
    encode: fn(&[u8]) -> Vec<u8>,
) -> strongroom_server::config::RootFileWriter {
    strongroom_server::config::RootFileWriter(std::sync::Arc::new(move |key: Option<&[u8]>| {
        match key {
            Some(key) => {
                let bytes = zeroize::Zeroizing::new(encode(key));
                crate::dev::write_private(&path, &bytes).map_err(std::io::Error::other)
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }))
}

/// The switch `serve` needs to start on a root key file.
pub const FILE_ROOT_KEY_FLAG: &str = "--i-understand-file-root-key";

/// `strongroom serve`. A root key in a file is refused unless `file_root_key_ok`
/// (`--i-understand-file-root-key`): a production vault should start sealed.
pub async fn serve(path: &Path, file_root_key_ok: bool) -> Result<()> {
    let checked = check(path)?;
    if matches!(checked.root, Root::File(_)) && !file_root_key_ok {
        bail!(
            "the root key is a file (root_key_provider = \"file\"), which anyone who can read this disk can take; start sealed with root_key_provider = \"shamir\" (docs/key-custody.md), or pass {FILE_ROOT_KEY_FLAG} to accept the risk"
        );
    }
    let _guard = init_logging(checked.log_dir.as_deref())?;
    if checked.plaintext {
        tracing::warn!(
            listen = %checked.server.listen,
            "serving plaintext HTTP on loopback; TLS must be terminated in front of this process"
        );
    }
    for w in &checked.warnings {
        tracing::warn!("{w}");
    }
    let clock = std::sync::Arc::new(strongroom_core::SystemClock);
    let custody = checked.root.custody(&checked.server.store).await?;
    let running = strongroom_server::start_custody(checked.server, custody, clock)
        .await
        .map_err(|e| anyhow!("cannot start: {e}"))?;
    crate::dev::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown();
    running.wait().await.map_err(|e| anyhow!("{e}"))
}

/// JSON lines on stderr, and in `dir/strongroom.log` when given.
///
/// Each event is formatted once and passes the leak guard once; a background thread
/// ([`crate::logq`], lossless: it applies back-pressure rather than drop a line) then
/// writes the same bytes to stderr and to the file, a batch of lines at a time. Request
/// threads never make the write system calls themselves: the access log is one line per
/// request.
pub fn init_logging(dir: Option<&Path>) -> Result<crate::logq::LogGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_env("STRONGROOM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use strongroom_server::leak_guard::Guarded;
    let file = match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            private_file(&d.join(LOG_FILE))?;
            Some(tracing_appender::rolling::never(d, LOG_FILE))
        }
        None => None,
    };
    let (w, guard) = crate::logq::start(Tee {
        stderr: std::io::BufWriter::with_capacity(LOG_BUFFER, std::io::stderr()),
        file: file.map(|f| std::io::BufWriter::with_capacity(LOG_BUFFER, f)),
    })
    .context("starting the log writer thread")?;
    // Everything written passes the leak guard (card numbers, secret-shaped strings).
    let layer = fmt::layer()
        .json()
        .event_format(crate::logfmt::LogFormat::default())
        .with_writer(move || Guarded(w.clone()));
    strongroom_server::leak_guard::install_panic_hook();
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(|e| anyhow!("logging: {e}"))?;
    Ok(guard)
}

/// The log file's name in the log directory.
const LOG_FILE: &str = "strongroom.log";

/// Creates `path` readable by the owner only, or narrows an existing file to that.
/// The appender then opens it for appending and keeps the mode. The log holds no secret
/// (the leak guard sees every line), but it does hold client addresses, request ids and
/// account ids, which are for the operator alone.
fn private_file(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Bytes of log lines the writer thread gathers per output before one `write`.
const LOG_BUFFER: usize = 64 * 1024;

/// Writes every log line to stderr and, when there is one, to the log file.
///
/// Both are buffered: the log writer thread hands over all the lines gathered since its
/// last write, then flushes, so a burst of access-log lines costs one `write` per output
/// instead of one per line (two system calls per request otherwise).
struct Tee {
    stderr: std::io::BufWriter<std::io::Stderr>,
    file: Option<std::io::BufWriter<tracing_appender::rolling::RollingFileAppender>>,
}

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // stderr may be closed (a daemon); the file still gets the line.
        let _ = self.stderr.write_all(buf);
        if let Some(f) = &mut self.file {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.stderr.flush();
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Fixture {
        dir: tempfile::TempDir,
        key: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path(), "good.key", 0o600, &[7u8; 32]);
        Fixture { dir, key }
    }

    fn key_file(dir: &Path, name: &str, mode: u32, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// The log file is the operator's alone: created 0600, and narrowed to 0600 when an
    /// older run left it wider. What it held is kept.
    #[test]
    fn the_log_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = dir.path().join("fresh.log");
        private_file(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);
        let old = key_file(dir.path(), "old.log", 0o644, b"earlier line\n");
        private_file(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"earlier line\n");
    }

    /// A config listening on `listen`, with the given root key and extra lines.
    fn toml_with(listen: &str, key: &Path, extra: &str) -> String {
        format!(
            "listen = \"{listen}\"\ndatabase_url = \"sqlite:///tmp/x.db\"\nroot_key_file = \"{}\"\n{extra}\n",
            key.display()
        )
    }

    /// The checked configuration, without the warning every file root key gets (which
    /// must be there when the configuration names a key file): the tests look at the rest.
    fn parse(text: &str) -> Result<Checked> {
        let mut c = validate(parse_toml(text)?)?;
        let file = matches!(c.root, Root::File(_));
        let before = c.warnings.len();
        c.warnings
            .retain(|w| !w.starts_with("root_key_provider = \"file\""));
        assert_eq!(before - c.warnings.len(), usize::from(file));
        Ok(c)
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A CA-signed leaf for localhost, as `strongroom dev` makes it.
    fn tls_files(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn the_root_key_provider_is_chosen_and_checked() {
        let f = fixture();
        let file = parse(&toml_with("127.0.0.1:8443", &f.key, "plaintext = true")).unwrap();
        assert!(matches!(file.root, Root::File(_)));
        let shamir = "listen = \"127.0.0.1:8443\"\ndatabase_url = \"sqlite:///tmp/x.db\"\nplaintext = true\nroot_key_provider = \"shamir\"\n";
        let c = parse(shamir).unwrap();
        assert!(matches!(c.root, Root::Shamir));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\nroot_key_provider = \"shamir\"",
        ));
        assert!(e.contains("root_key_file is for"), "{e}");
        let e = err(&shamir.replace("shamir", "vault"));
        assert!(e.contains("\"shamir\" or \"pkcs11\""), "{e}");
        let e = err(&shamir.replace("shamir", "pkcs11"));
        assert!(e.contains("[pkcs11]"), "{e}");
        let e = err(&format!(
            "{shamir}[pkcs11]\nmodule = \"/nonexistent.so\"\ntoken_label = \"t\"\n"
        ));
        assert!(e.contains("/nonexistent.so does not exist"), "{e}");
    }

    #[test]
    fn the_key_policy_section_is_read_and_checked() {
        let f = fixture();
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[key_policy]\njwt_days = 30\nnotice_days = [14]\nauto_rotate = true\ncheck_interval_secs = 60",
        ))
        .unwrap();
        let p = &c.server.key_policy;
        assert_eq!((p.jwt_days, p.cards_days, p.api_key_days), (30, 365, 90));
        assert_eq!(p.notice_days, [14]);
        assert!(p.auto_rotate);
        assert_eq!(p.check_interval, Duration::from_secs(60));
        for bad in [
            "cards_days = 0",
            "notice_days = [400]",
            "check_interval_secs = 0",
            "api_key_days = 99999",
        ] {
            let e = err(&toml_with(
                "127.0.0.1:8443",
                &f.key,
                &format!("plaintext = true\n[key_policy]\n{bad}"),
            ));
            assert!(e.contains("[key_policy]"), "{bad}: {e}");
        }
    }

    #[test]
    fn metrics_and_audit_sections() {
        let f = fixture();
        let c = parse(&toml_with("127.0.0.1:8443", &f.key, "plaintext = true")).unwrap();
        assert_eq!(
            c.server.metrics_listen,
            Some(DEFAULT_METRICS_LISTEN.parse().unwrap())
        );
        assert_eq!(c.server.audit_checkpoint_interval, Duration::from_secs(60));
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[metrics]\nlisten = \"127.0.0.1:9999\"\n[audit]\ncheckpoint_interval_secs = 5",
        ))
        .unwrap();
        assert_eq!(c.server.metrics_listen.unwrap().port(), 9999);
        assert_eq!(c.server.audit_checkpoint_interval, Duration::from_secs(5));
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[metrics]\nenabled = false",
        ))
        .unwrap();
        assert_eq!(c.server.metrics_listen, None);
        assert!(
            err(&toml_with(
                "127.0.0.1:8443",
                &f.key,
                "plaintext = true\n[audit]\nkeep = 1"
            ))
            .contains("keep")
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_relay_section_sets_timeouts_and_limits() {
        let f = fixture();
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[rate_limit]\nrelay_per_minute = 50\n[relay]\nconnect_timeout_secs = 2\ntimeout_secs = 10\nmax_response_kib = 64",
        ))
        .unwrap();
        assert_eq!(c.server.relay.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.server.relay.timeout, Duration::from_secs(10));
        assert_eq!(c.server.relay.max_response_bytes, 64 * 1024);
        assert_eq!(c.server.rate_limit.relay_per_minute, 50);
        for (bad, name) in [
            ("[relay]\ntimeout_secs = 0", "timeout_secs"),
            ("[relay]\nconnect_timeout_secs = 61", "connect_timeout_secs"),
            ("[relay]\nmax_response_kib = 0", "max_response_kib"),
            ("[relay]\nretries = 1", "retries"),
            ("[rate_limit]\nrelay_per_minute = 0", "relay_per_minute"),
        ] {
            let e = err(&toml_with(
                "127.0.0.1:8443",
                &f.key,
                &format!("plaintext = true\n{bad}"),
            ));
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn the_browser_limits_are_read_and_checked() {
        let f = fixture();
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[rate_limit]\nbrowser_session_per_minute = 3\nbrowser_ip_per_minute = 7\nbrowser_key_per_minute = 900",
        ))
        .unwrap();
        let rl = &c.server.rate_limit;
        assert_eq!(
            (
                rl.browser_session_per_minute,
                rl.browser_ip_per_minute,
                rl.browser_key_per_minute
            ),
            (3, 7, 900)
        );
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[rate_limit]\nbrowser_ip_per_minute = 0",
        ));
        assert!(e.contains("browser_ip_per_minute"), "{e}");
    }

    #[test]
    fn the_audit_anchor_defaults_beside_sqlite_and_is_asked_for_with_postgres() {
        let f = fixture();
        let c = parse(&toml_with("127.0.0.1:8443", &f.key, "plaintext = true")).unwrap();
        assert_eq!(
            c.server.audit_anchor,
            Some(PathBuf::from("/tmp/audit-anchor.jsonl"))
        );
        let elsewhere = f.dir.path().join("anchor.jsonl");
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            &format!(
                "plaintext = true\n[audit]\nanchor_path = \"{}\"",
                elsewhere.display()
            ),
        ))
        .unwrap();
        assert_eq!(c.server.audit_anchor, Some(elsewhere));
        assert!(
            err(&toml_with(
                "127.0.0.1:8443",
                &f.key,
                "plaintext = true\n[audit]\nanchor_path = \"/nonexistent-dir/a.jsonl\""
            ))
            .contains("does not exist")
        );
        let pg = toml_with("127.0.0.1:8443", &f.key, "plaintext = true")
            .replace("sqlite:///tmp/x.db", "postgres://db/strongroom");
        let c = parse(&pg).unwrap();
        assert_eq!(c.server.audit_anchor, None);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("anchor_path"), "{:?}", c.warnings);
        let c = parse(&format!(
            "{pg}[audit]\nanchor_path = \"{}\"\n",
            f.dir.path().join("a").display()
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn zero_checkpoint_interval_means_start_and_shutdown_only() {
        // The server's meaning of zero: no periodic checkpoints. Accepted, with a warning.
        let f = fixture();
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[audit]\ncheckpoint_interval_secs = 0",
        ))
        .unwrap();
        assert_eq!(c.server.audit_checkpoint_interval, Duration::ZERO);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("checkpoint_interval_secs = 0"));
    }

    #[test]
    fn metrics_off_loopback_is_a_warning_not_a_refusal() {
        let f = fixture();
        for (listen, warned) in [
            ("127.0.0.1:9464", false),
            ("[::1]:9464", false),
            ("10.0.0.5:9464", true),
            ("0.0.0.0:9464", true),
            ("[::]:9464", true),
        ] {
            let c = parse(&toml_with(
                "127.0.0.1:8443",
                &f.key,
                &format!("plaintext = true\n[metrics]\nlisten = \"{listen}\""),
            ))
            .unwrap();
            assert_eq!(c.server.metrics_listen, Some(listen.parse().unwrap()));
            assert_eq!(c.warnings.len(), usize::from(warned), "{listen}");
            if warned {
                assert!(c.warnings[0].contains("[metrics]"), "{:?}", c.warnings);
                assert!(c.warnings[0].contains("authentication"), "{:?}", c.warnings);
            }
        }
        // Turned off: nothing to warn about.
        let c = parse(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[metrics]\nlisten = \"0.0.0.0:9464\"\nenabled = false",
        ))
        .unwrap();
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn good_config_with_tls_is_accepted() {
        let f = fixture();
        let (c, k) = tls_files(f.dir.path());
        let text = toml_with(
            "0.0.0.0:8443",
            &f.key,
            &format!(
                "log_dir = \"/tmp/logs\"\nrewrap_interval_secs = 5\napi_key_cache_ttl_secs = 0\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n[store]\nmax_connections = 3",
                c.display(),
                k.display()
            ),
        );
        let checked = parse(&text).unwrap();
        assert_eq!(checked.server.store.max_connections, 3);
        assert_eq!(checked.server.rewrap_interval, Duration::from_secs(5));
        assert_eq!(checked.server.api_key_cache_ttl, Duration::ZERO);
        assert!(checked.server.tls.is_some());
        assert!(!checked.server.dev_mode);
    }

    #[test]
    fn plaintext_on_loopback_is_accepted() {
        let f = fixture();
        let checked = parse(&toml_with("127.0.0.1:8443", &f.key, "plaintext = true")).unwrap();
        assert!(checked.server.tls.is_none());
        assert!(parse(&toml_with("[::1]:8443", &f.key, "plaintext = true")).is_ok());
    }

    #[test]
    fn plaintext_off_loopback_is_refused() {
        let f = fixture();
        let e = err(&toml_with("0.0.0.0:8443", &f.key, "plaintext = true"));
        assert!(e.contains("off loopback"), "{e}");
    }

    #[test]
    fn missing_tls_is_refused() {
        let f = fixture();
        let e = err(&toml_with("127.0.0.1:8443", &f.key, ""));
        assert!(e.contains("TLS is missing"), "{e}");
    }

    #[test]
    fn unreadable_tls_files_are_refused() {
        let f = fixture();
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "[tls]\ncert = \"/nope/cert.pem\"\nkey = \"/nope/key.pem\"",
        ));
        assert!(e.contains("cannot read TLS file /nope/cert.pem"), "{e}");
        // Readable but not PEM.
        let junk = key_file(f.dir.path(), "junk.pem", 0o600, b"junk");
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            &format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"",
                junk.display(),
                junk.display()
            ),
        ));
        assert!(e.contains("junk.pem"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let f = fixture();
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\nlisten_port = \"s3cr3t\"",
        ));
        assert!(e.contains("unknown field `listen_port`"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[store]\npool = 3",
        ));
        assert!(e.contains("unknown field `pool`"), "{e}");
    }

    #[test]
    fn group_or_other_access_to_the_key_file_is_refused() {
        let f = fixture();
        for mode in [0o640, 0o604, 0o610, 0o660] {
            let loose = key_file(f.dir.path(), &format!("{mode:o}.key"), mode, &[7u8; 32]);
            let e = err(&toml_with("127.0.0.1:8443", &loose, "plaintext = true"));
            assert!(e.contains("chmod 600"), "{e}");
        }
        let strict = key_file(f.dir.path(), "400.key", 0o400, &[7u8; 32]);
        assert!(parse(&toml_with("127.0.0.1:8443", &strict, "plaintext = true")).is_ok());
    }

    #[test]
    fn dev_key_is_refused_without_showing_it() {
        let f = fixture();
        let hex = "ab".repeat(32);
        let dev = key_file(
            f.dir.path(),
            "dev.key",
            0o600,
            format!("{}{hex}\n", crate::dev::DEV_KEY_MARKER).as_bytes(),
        );
        let e = err(&toml_with("127.0.0.1:8443", &dev, "plaintext = true"));
        assert!(e.contains("refuses to start with a dev key"), "{e}");
        assert!(!e.contains(&hex));
    }

    #[test]
    fn key_file_formats() {
        let f = fixture();
        let ok = |content: &[u8]| {
            let p = key_file(f.dir.path(), "k.key", 0o600, content);
            parse(&toml_with("127.0.0.1:8443", &p, "plaintext = true"))
        };
        assert!(ok(format!("{}\n", "cd".repeat(32)).as_bytes()).is_ok());
        assert!(ok("CD".repeat(32).as_bytes()).is_ok());
        let e = format!("{:#}", ok(&[1u8; 31]).err().unwrap());
        assert!(e.contains("not 32 bytes or 64 hex digits"), "{e}");
        assert!(ok(&[1u8; 33]).is_err());
        assert!(ok(format!("+{}", "c".repeat(63)).as_bytes()).is_err());
        assert!(ok("cd".repeat(33).as_bytes()).is_err());
    }

    #[test]
    fn nonsense_values_are_refused() {
        let f = fixture();
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\nrequest_timeout_secs = 0",
        ));
        assert!(e.contains("request_timeout_secs"), "{e}");
        let e = err(&toml_with("127.0.0.1:8443", &f.key, "plaintext = true")
            .replace("sqlite:///tmp/x.db", "mysql://h/db"));
        assert!(e.contains("database_url"), "{e}");
        let e = err(&toml_with(
            "127.0.0.1:8443",
            &f.key,
            "plaintext = true\n[store]\nmax_connections = 0",
        ));
        assert!(e.contains("max_connections"), "{e}");
    }

    #[test]
    fn init_writes_a_private_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        init_root_key(&p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        assert!(load_root_key(&p).is_ok());
        assert!(init_root_key(&p).is_err());
    }
}
