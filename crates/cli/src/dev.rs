//! `strongroom dev`: one command, no setup.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use strongroom_core::{KeyKind, Mode};
use strongroom_crypto::RootKey;
use strongroom_server::{ApiError, AppState, NewKeyKind, Origin, ServerConfig, TlsFiles};
use strongroom_store::StoreConfig;

/// Marks a dev root key file, so that `serve` refuses it.
pub const DEV_KEY_MARKER: &str = "strongroom-dev-root-key:";

#[derive(Args)]
pub struct DevArgs {
    /// Data directory (created if missing).
    #[arg(long, default_value = "./.strongroom-dev")]
    data_dir: PathBuf,
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Use this database instead of the embedded SQLite file (e.g. a local
    /// `postgres://…` for benchmarks). The dev root key still lives in the data directory.
    #[arg(long)]
    database_url: Option<String>,
    /// PostgreSQL only: the schema to use (created if missing), so several dev
    /// vaults can share one database.
    #[arg(long, requires = "database_url")]
    database_schema: Option<String>,
    /// Share rate limits, idempotency records, held CVCs and risk counters with other
    /// nodes through this Redis (`strongroom cluster up` passes it).
    #[arg(long)]
    redis_url: Option<String>,
    /// Per-credential rate limit, requests per minute (default 100; benchmarks raise it).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate_limit_per_minute: Option<u32>,
    /// Per-account relay rate limit, relays per minute (default 600; benchmarks raise it).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    relay_rate_limit_per_minute: Option<u32>,
    /// Cards posted from browsers, per minute: the per-session, per-address and
    /// per-publishable-key limits at once (defaults 10, 20 and 600; the API fuzzer
    /// raises them).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    browser_rate_limit_per_minute: Option<u32>,
    /// Where the root key is kept: `file` (in the data directory), `shamir` (the vault
    /// starts sealed; the first start splits the key into 5 shares, 3 of which open it,
    /// prints them and keeps them in dev.json as `unseal_shares`, which only a
    /// development vault may do), or `pkcs11` (wrapped by a key in an HSM; PIN from
    /// `STRONGROOM_PKCS11_PIN`).
    #[arg(long, value_enum, default_value = "file")]
    root_key: DevRootKey,
    /// `--root-key pkcs11` (or an HSM that `strongroom operator rotate-root --to pkcs11`
    /// may move the root key into): the PKCS#11 module.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pkcs11_module: PathBuf,
    /// `--root-key pkcs11`, or a rotation's HSM: the token's label.
    #[arg(long, required_if_eq("root_key", "pkcs11"))]
    pkcs11_token_label: Option<String>,
    /// `--root-key pkcs11`: the wrapping key's label (made on the first start).
    #[arg(long, default_value = "strongroom-root")]
    pkcs11_key_label: String,
}

/// `strongroom dev --root-key`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevRootKey {
    /// A dev root key file in the data directory.
    File,
    /// Shamir shares: a sealed start.
    Shamir,
    /// Wrapped by a key in an HSM.
    Pkcs11,
}

/// The dev vault's shares: 5, any 3 of which open it.
const DEV_SHARES: (u8, u8) = (5, 3);

/// What `dev.json` holds: exactly these fields.
#[derive(Serialize, Deserialize)]
pub struct DevJson {
    pub url: String,
    pub ca_cert: String,
    pub account_id: String,
    pub secret_key: String,
    pub publishable_key: String,
    pub admin_key: String,
    /// The admin listener's `/metrics` (plain HTTP, loopback).
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// `--root-key shamir`: the unseal shares. Only a development vault keeps them
    /// together, and beside the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal_shares: Option<Vec<String>>,
}

pub async fn run(args: DevArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "strongroom dev listens on loopback only; use `strongroom serve` for other addresses"
        );
    }
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let dir = dir.canonicalize()?;
    let _log_guard = crate::config::init_logging(Some(&dir.join("logs")))?;

    let tls = dev_tls(&dir.join("tls"))?;
    let store = StoreConfig {
        url: args
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("strongroom.db").display())),
        schema: args.database_schema.clone(),
        max_connections: if args.database_url.is_some() { 16 } else { 4 },
    };
    let mut config = ServerConfig::new(args.listen, Some(tls), store);
    config.dev_mode = true;
    // In the data directory whatever the database, where `audit verify --data-dir` looks.
    config.audit_anchor = Some(dir.join(strongroom_server::audit::anchor::FILE_NAME));
    if let Some(n) = args.rate_limit_per_minute {
        config.rate_limit.per_minute = n;
    }
    if let Some(url) = &args.redis_url {
        config.rate_limit.store = strongroom_server::gateway::RateLimitStore::Redis(url.clone());
    }
    if let Some(n) = args.relay_rate_limit_per_minute {
        config.rate_limit.relay_per_minute = n;
    }
    if let Some(n) = args.browser_rate_limit_per_minute {
        let rl = &mut config.rate_limit;
        rl.browser_session_per_minute = n;
        rl.browser_ip_per_minute = n;
        rl.browser_key_per_minute = n;
    }
    // With the HSM's options, a rotation may move the root key into it.
    if let Some(label) = &args.pkcs11_token_label {
        config.custody.pkcs11 = Some(crate::config::pkcs11_config(
            args.pkcs11_module.clone(),
            label.clone(),
            Some(args.pkcs11_key_label.clone()),
            None,
        )?);
    }
    let (custody, new_shares) = match args.root_key {
        DevRootKey::File => {
            let root = dev_root_key(&dir.join("root.key"))?;
            config.custody.root_file =
                Some(crate::config::root_file_writer(dir.join("root.key"), |k| {
                    format!("{DEV_KEY_MARKER}{}\n", hex_encode(k)).into_bytes()
                }));
            let provider = strongroom_server::Provider::File;
            (strongroom_server::Custody::Open { root, provider }, None)
        }
        DevRootKey::Shamir => (
            strongroom_server::Custody::Sealed,
            dev_shares(&config.store).await?,
        ),
        DevRootKey::Pkcs11 => {
            let hsm = config.custody.pkcs11.clone();
            let hsm = hsm.ok_or_else(|| anyhow!("--root-key pkcs11 needs --pkcs11-token-label"))?;
            let root = crate::config::Root::Pkcs11(hsm);
            (root.custody(&config.store).await?, None)
        }
    };
    let clock = std::sync::Arc::new(strongroom_core::SystemClock);
    let running = strongroom_server::start_custody(config, custody, clock)
        .await
        .map_err(|e| anyhow!("cannot start: {e}"))?;
    let url = format!("https://{}", running.local_addr);
    let path = dir.join("dev.json");
    let old_shares = read_dev_json(&dir).and_then(|d| d.unseal_shares);
    if let Some(shares) = &new_shares {
        println!(
            "Unseal shares of this dev vault ({} of {} open it; shown once, and kept in {} only because this is a development vault):",
            DEV_SHARES.1,
            DEV_SHARES.0,
            path.display()
        );
        for s in shares {
            println!("  {}", s.as_str());
        }
        // The first start opens it with them, to provision the account.
        for s in shares.iter().take(usize::from(DEV_SHARES.1)) {
            running
                .vault()
                .unseal(s)
                .await
                .map_err(|e| anyhow!("cannot unseal the new dev vault: {}", e.code))?;
        }
    } else if running.vault().is_sealed() {
        println!(
            "Strongroom dev vault on {url} is sealed: run `strongroom operator unseal --data-dir {}` with {} of the shares in {}",
            dir.display(),
            DEV_SHARES.1,
            path.display()
        );
    }
    let state = running.vault().opened().await;
    let mut dev = provision(&state, &dir, url).await?;
    drop(state);
    dev.metrics_url = running.metrics_addr.map(|a| format!("http://{a}/metrics"));
    dev.unseal_shares = new_shares
        .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect())
        .or(old_shares);
    write_private(&path, &serde_json::to_vec_pretty(&dev)?)?;

    println!("Strongroom dev vault on {}", dev.url);
    println!("  trust:           {}", dev.ca_cert);
    println!("  account:         {}", dev.account_id);
    println!("  secret key:      {}", dev.secret_key);
    println!("  publishable key: {}", dev.publishable_key);
    println!("  admin key:       {}", dev.admin_key);
    if let Some(m) = &dev.metrics_url {
        println!("  metrics:         {m}");
    }
    println!("  (all of this is in {})", path.display());

    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown();
    running.wait().await.map_err(|e| anyhow!("{e}"))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// The `dev.json` of a data directory, for the commands that talk to a dev vault; the
/// error says how to get one.
pub(crate) fn load_dev_json(dir: &Path) -> Result<DevJson> {
    let path = dir.join("dev.json");
    let bytes = std::fs::read(&path).map_err(|_| {
        anyhow!(
            "no server: pass --url (or set STRONGROOM_URL), or run `strongroom dev` so that {} exists",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|_| anyhow!("{} is not a strongroom dev.json", path.display()))
}

/// What `dev.json` holds now, if it is one.
fn read_dev_json(dir: &Path) -> Option<DevJson> {
    std::fs::read(dir.join("dev.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// A Shamir dev vault's first start: makes its root key and returns the shares; `None`
/// when the vault has a root key already.
async fn dev_shares(store: &StoreConfig) -> Result<Option<Vec<zeroize::Zeroizing<String>>>> {
    use strongroom_core::Clock;
    use strongroom_store::CustodyStore;
    let db = strongroom_store::Store::connect(store)
        .await
        .map_err(|e| anyhow!("cannot open the database: {e}"))?;
    let shares = match db.root_key().await? {
        Some(_) => None,
        None => {
            let (n, k) = DEV_SHARES;
            let now = strongroom_core::SystemClock.now_ms();
            let shares = strongroom_server::custody::init_shamir(&db, now, n, k).await?;
            Some(shares.iter().map(|s| s.text()).collect())
        }
    };
    db.close().await;
    Ok(shares)
}

/// Reuses what `dev.json` names if it is all still valid; creates what is missing.
async fn provision(state: &AppState, dir: &Path, url: String) -> Result<DevJson> {
    let old = read_dev_json(dir);
    let valid = |secret: &str| {
        let secret = secret.to_owned();
        async move {
            matches!(state.accounts().lookup_key(&secret).await, Ok(Some((k, _))) if k.revoked_ms.is_none())
        }
    };
    let account_id = match &old {
        Some(o) if state.accounts().get(&o.account_id).await.is_ok() => o.account_id.clone(),
        _ => {
            state
                .accounts()
                .create(Origin::System, "Dev account", None)
                .await
                .map_err(|e| anyhow!("cannot create the dev account: {}", ApiError::from(e).code))?
                .id
        }
    };
    let issue = |kind: NewKeyKind, acct: Option<String>| async move {
        let mode = if kind == NewKeyKind::Admin {
            Mode::Live
        } else {
            Mode::Test
        };
        state
            .accounts()
            .create_key(Origin::System, acct.as_deref(), kind, mode, None)
            .await
            .map(|k| k.secret.expose().clone())
            .map_err(|e| anyhow!("cannot create a key: {}", ApiError::from(e).code))
    };
    let reuse = |f: fn(&DevJson) -> &String| old.as_ref().map(|o| f(o).clone());
    let same_account = old.as_ref().is_some_and(|o| o.account_id == account_id);
    let secret_key = match reuse(|o| &o.secret_key) {
        Some(k) if same_account && valid(&k).await => k,
        _ => {
            issue(
                NewKeyKind::Account(KeyKind::Secret),
                Some(account_id.clone()),
            )
            .await?
        }
    };
    let publishable_key = match reuse(|o| &o.publishable_key) {
        Some(k) if same_account && valid(&k).await => k,
        _ => {
            issue(
                NewKeyKind::Account(KeyKind::Publishable),
                Some(account_id.clone()),
            )
            .await?
        }
    };
    let admin_key = match reuse(|o| &o.admin_key) {
        Some(k) if valid(&k).await => k,
        _ => issue(NewKeyKind::Admin, None).await?,
    };
    Ok(DevJson {
        url,
        ca_cert: dir.join("tls").join("ca.pem").display().to_string(),
        account_id,
        secret_key,
        publishable_key,
        admin_key,
        metrics_url: None,
        unseal_shares: None,
    })
}

/// Writes a file readable only by its owner (temp file, then rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The dev root key: text `strongroom-dev-root-key:` and 64 hex digits, so that `serve`
/// can recognise (and refuse) it. Generated on first start, reused afterwards.
pub(crate) fn dev_root_key(path: &Path) -> Result<RootKey> {
    use zeroize::Zeroizing;
    if !path.exists() {
        let key = Zeroizing::new(
            strongroom_crypto::random::bytes::<32>().map_err(|_| anyhow!("no randomness"))?,
        );
        let text = Zeroizing::new(format!("{DEV_KEY_MARKER}{}\n", hex_encode(key.as_slice())));
        write_private(path, text.as_bytes())?;
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let hex = text
        .trim()
        .strip_prefix(DEV_KEY_MARKER)
        .ok_or_else(|| anyhow!("{} is not a dev root key", path.display()))?;
    let bytes =
        Zeroizing::new(hex_decode(hex).ok_or_else(|| anyhow!("{} is corrupt", path.display()))?);
    RootKey::from_bytes(&bytes).map_err(|_| anyhow!("{} is corrupt", path.display()))
}

pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Strict hex: an even number of ASCII hex digits, nothing else (no signs, no spaces).
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    b.chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

/// A CA and a leaf for localhost, 127.0.0.1 and ::1, generated once.
fn dev_tls(dir: &Path) -> Result<TlsFiles> {
    let files = TlsFiles {
        cert_path: dir.join("cert.pem"),
        key_path: dir.join("key.pem"),
    };
    let ca_path = dir.join("ca.pem");
    if files.cert_path.exists() && files.key_path.exists() && ca_path.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The CA's private key is never written: the leaf is issued once, and a fresh data
    // directory gets a fresh CA.
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Strongroom dev CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])?;
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    std::fs::write(&ca_path, ca_cert.pem())?;
    std::fs::write(&files.cert_path, leaf_cert.pem())?;
    write_private(&files.key_path, leaf_key.serialize_pem().as_bytes())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let b: Vec<u8> = (0u8..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&b)).unwrap(), b);
        assert_eq!(hex_decode("ABcd").unwrap(), vec![0xab, 0xcd]);
        for bad in ["abc", "+f", "0x", " a", "zz", "é1"] {
            assert!(hex_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn dev_key_is_generated_once_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("root.key");
        dev_root_key(&p).unwrap();
        let first = std::fs::read_to_string(&p).unwrap();
        assert!(first.starts_with(DEV_KEY_MARKER));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        dev_root_key(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), first);
        // And `serve` refuses it.
        let e = format!("{:#}", crate::config::load_root_key(&p).err().unwrap());
        assert!(e.contains("dev key"), "{e}");
    }

    #[test]
    fn dev_tls_chain_verifies_for_loopback_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = dev_tls(dir.path()).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let leaf = std::fs::read(&files.cert_path).unwrap();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
            .build()
            .unwrap();
        let leaf: rustls::pki_types::CertificateDer<'_> =
            rustls::pki_types::pem::PemObject::from_pem_slice(&leaf).unwrap();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                verifier.as_ref(),
                &leaf,
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
        }
        // Generated once: a second call keeps the same files.
        dev_tls(dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert_eq!(
            std::fs::metadata(&files.key_path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
