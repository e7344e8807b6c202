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
    /// 32-byte root key file (mode 0600); else `STRONGROOM_ROOT_KEY_FILE`.
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
}

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
    pub root: RootKey,
    pub log_dir: Option<PathBuf>,
}

/// Reads and validates everything `serve` needs, without starting.
pub fn check(path: &Path) -> Result<Checked> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
    validate(file)
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
                std::fs::metadata(p)
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
    let key_path = match &file.root_key_file {
        Some(p) => p.clone(),
        None => std::env::var_os("STRONGROOM_ROOT_KEY_FILE")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("no root key: set root_key_file or STRONGROOM_ROOT_KEY_FILE"))?,
    };
    let root = load_root_key(&key_path)?;
    if let Some(t) = &tls {
        strongroom_server::tls::rustls_config(t).map_err(|e| anyhow!(e))?;
    }
    let store = StoreConfig {
        url: file.database_url.clone(),
        schema: None,
        max_connections: file
            .store
            .as_ref()
            .and_then(|s| s.max_connections)
            .unwrap_or(8),
    };
    let mut server = ServerConfig::new(file.listen, tls, store);
    if let Some(s) = file.rewrap_interval_secs {
        server.rewrap_interval = Duration::from_secs(s.max(1));
    }
    if let Some(s) = file.api_key_cache_ttl_secs {
        server.api_key_cache_ttl = Duration::from_secs(s);
    }
    if let Some(s) = file.keyring_ttl_secs {
        server.keyring_ttl = Duration::from_secs(s);
    }
    if let Some(s) = file.request_timeout_secs {
        server.request_timeout = Duration::from_secs(s.max(1));
    }
    Ok(Checked {
        server,
        root,
        log_dir: file.log_dir,
    })
}

/// Loads a production root key: 32 raw bytes or 64 hex digits, mode 0600 or stricter,
/// never a dev key. Messages never include key material.
pub fn load_root_key(path: &Path) -> Result<RootKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read root key file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "root key file {} is readable by group or others; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
    if bytes.starts_with(crate::dev::DEV_KEY_MARKER.as_bytes()) {
        bail!(
            "{} is a dev root key; refusing to serve with it (create one with `strongroom init`)",
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

/// `strongroom serve`.
pub async fn serve(path: &Path) -> Result<()> {
    let checked = check(path)?;
    let _guard = init_logging(checked.log_dir.as_deref())?;
    let running = strongroom_server::start(checked.server, checked.root)
        .await
        .map_err(|e| anyhow!("cannot start: {e}"))?;
    crate::dev::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown();
    running.wait().await.map_err(|e| anyhow!("{e}"))
}

/// JSON lines on stderr, and in `dir/strongroom.log` when given.
pub fn init_logging(
    dir: Option<&Path>,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_env("STRONGROOM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = fmt::layer().json().with_writer(std::io::stderr);
    let (file_layer, guard) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            let appender = tracing_appender::rolling::never(d, "strongroom.log");
            let (w, g) = tracing_appender::non_blocking(appender);
            (Some(fmt::layer().json().with_writer(w)), Some(g))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .try_init()
        .map_err(|e| anyhow!("logging: {e}"))?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn key_file(dir: &Path, mode: u32, content: &[u8]) -> PathBuf {
        let p = dir.join(format!("root-{mode:o}.key"));
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn parse(toml_text: &str) -> Result<Checked> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| anyhow!("{}", e.message()))?;
        validate(file)
    }

    #[test]
    fn config_rules() {
        let dir = tempfile::tempdir().unwrap();
        let good = key_file(dir.path(), 0o600, &[7u8; 32]);
        let loose = key_file(dir.path(), 0o640, &[7u8; 32]);
        let dev = key_file(
            dir.path(),
            0o400,
            format!("{}{}", crate::dev::DEV_KEY_MARKER, "ab".repeat(32)).as_bytes(),
        );
        let base = |extra: &str, key: &Path| {
            format!(
                "listen = \"127.0.0.1:8443\"\ndatabase_url = \"sqlite:///tmp/x.db\"\nroot_key_file = \"{}\"\n{extra}",
                key.display()
            )
        };
        // Plaintext on loopback is allowed; a good key loads.
        assert!(parse(&base("plaintext = true", &good)).is_ok());
        // TLS missing.
        let e = parse(&base("", &good)).err().unwrap().to_string();
        assert!(e.contains("TLS is missing"), "{e}");
        // Plaintext off loopback.
        let off = base("plaintext = true", &good).replace("127.0.0.1:8443", "0.0.0.0:8443");
        assert!(
            parse(&off)
                .err()
                .unwrap()
                .to_string()
                .contains("off loopback")
        );
        // Unknown keys.
        let e = parse(&base("plaintext = true\nlisten_port = 1", &good))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        // Group-readable key.
        let e = parse(&base("plaintext = true", &loose))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // Dev key.
        let e = parse(&base("plaintext = true", &dev))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dev root key"), "{e}");
        assert!(!e.contains(&"ab".repeat(32)));
        // Hex key accepted.
        let hex = key_file(
            dir.path(),
            0o400,
            format!("{}\n", "cd".repeat(32)).as_bytes(),
        );
        assert!(parse(&base("plaintext = true", &hex)).is_ok());
        // Missing TLS files.
        let e = parse(&base(
            "[tls]\ncert = \"/nope/cert.pem\"\nkey = \"/nope/key.pem\"",
            &good,
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("cannot read TLS file"), "{e}");
    }
}
