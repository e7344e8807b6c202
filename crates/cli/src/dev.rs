//! `strongroom dev`: one command, no setup.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use strongroom_core::{KeyKind, Mode};
use strongroom_crypto::RootKey;
use strongroom_server::{AppState, NewKeyKind, ServerConfig, TlsFiles};
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
}

/// What `dev.json` holds: exactly these fields.
#[derive(Serialize, Deserialize)]
pub struct DevJson {
    pub url: String,
    pub ca_cert: String,
    pub account_id: String,
    pub secret_key: String,
    pub publishable_key: String,
    pub admin_key: String,
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

    let root = dev_root_key(&dir.join("root.key"))?;
    let tls = dev_tls(&dir.join("tls"))?;
    let store = StoreConfig {
        url: format!("sqlite://{}", dir.join("strongroom.db").display()),
        schema: None,
        max_connections: 4,
    };
    let mut config = ServerConfig::new(args.listen, Some(tls), store);
    config.dev_mode = true;
    let running = strongroom_server::start(config, root)
        .await
        .map_err(|e| anyhow!("cannot start: {e}"))?;
    let url = format!("https://{}", running.local_addr);
    let dev = provision(&running.state, &dir, url).await?;
    let path = dir.join("dev.json");
    write_private(&path, &serde_json::to_vec_pretty(&dev)?)?;

    println!("Strongroom dev vault on {}", dev.url);
    println!("  trust:           {}", dev.ca_cert);
    println!("  account:         {}", dev.account_id);
    println!("  secret key:      {}", dev.secret_key);
    println!("  publishable key: {}", dev.publishable_key);
    println!("  admin key:       {}", dev.admin_key);
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

/// Reuses what `dev.json` names if it is all still valid; creates what is missing.
async fn provision(state: &AppState, dir: &Path, url: String) -> Result<DevJson> {
    let old: Option<DevJson> = std::fs::read(dir.join("dev.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let valid = |secret: &str| {
        let secret = secret.to_owned();
        async move {
            matches!(state.lookup_api_key(&secret).await, Ok(Some(k)) if k.revoked_ms.is_none())
        }
    };
    let account_id = match &old {
        Some(o) if state.account(&o.account_id).await.is_ok() => o.account_id.clone(),
        _ => {
            state
                .create_account("Dev account", None)
                .await
                .map_err(|e| anyhow!("cannot create the dev account: {}", e.code))?
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
            .create_api_key(acct.as_deref(), kind, mode, None)
            .await
            .map(|k| k.secret.expose().clone())
            .map_err(|e| anyhow!("cannot create a key: {}", e.code))
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

fn dev_root_key(path: &Path) -> Result<RootKey> {
    if !path.exists() {
        let key = strongroom_crypto::random::bytes::<32>().map_err(|_| anyhow!("no randomness"))?;
        write_private(
            path,
            format!("{DEV_KEY_MARKER}{}\n", hex_encode(&key)).as_bytes(),
        )?;
    }
    let text = std::fs::read_to_string(path)?;
    let hex = text
        .trim()
        .strip_prefix(DEV_KEY_MARKER)
        .ok_or_else(|| anyhow!("{} is not a dev root key", path.display()))?;
    let bytes = hex_decode(hex).ok_or_else(|| anyhow!("{} is corrupt", path.display()))?;
    RootKey::from_bytes(&bytes).map_err(|_| anyhow!("{} is corrupt", path.display()))
}

pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
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
    std::fs::create_dir_all(dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Strongroom dev CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])?;
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    std::fs::write(&ca_path, ca_cert.pem())?;
    std::fs::write(&files.cert_path, leaf_cert.pem())?;
    write_private(&files.key_path, leaf_key.serialize_pem().as_bytes())?;
    Ok(files)
}
