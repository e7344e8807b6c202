//! The `[webhooks]` and `[[inbound]]` sections of the production configuration.
//!
//! ```toml
//! [webhooks]
//! workers = 8
//! timeout_secs = 15
//! retry_schedule_secs = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
//! retry_after_cap_secs = 3600
//! disable_after_secs = 432000
//! max_endpoints = 16                # per account and mode
//! egress_proxy = "http://proxy.internal:3128"   # optional; the environment's proxy is ignored
//!
//! [[inbound]]
//! name = "m2p"                      # POST /v1/inbound/m2p
//! account = "acct_…"                # whose outbox gets inbound.received; must exist, or serve refuses to start
//! mode = "live"
//! scheme = "hmac-sha256-hex"        # or "stripe", "standard-webhooks"
//! header = "X-M2P-Signature"        # hmac-sha256-hex (required) and stripe (default Stripe-Signature)
//! tolerance_secs = 300              # stripe, standard-webhooks
//! secret_file = "/etc/strongroom/m2p.secret"   # or secret_env = "M2P_WEBHOOK_SECRET"
//! ```
//!
//! Secrets come from a file (mode 0600 or stricter) or an environment variable, never
//! from the configuration file itself.

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use strongroom_core::{IdKind, Mode, Sensitive, parse_id};
use strongroom_server::ServerConfig;
use strongroom_server::service::inbound::{InboundScheme, InboundSource};

/// `[webhooks]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    pub workers: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub retry_schedule_secs: Option<Vec<u64>>,
    pub retry_after_cap_secs: Option<u64>,
    pub disable_after_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub max_endpoints: Option<i64>,
    pub egress_proxy: Option<String>,
}

/// One `[[inbound]]` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSection {
    pub name: String,
    pub account: String,
    pub mode: Option<String>,
    pub scheme: String,
    pub header: Option<String>,
    pub tolerance_secs: Option<u64>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
}

/// Applies both sections to the server configuration.
pub fn apply(
    server: &mut ServerConfig,
    webhooks: Option<&WebhooksSection>,
    inbound: &[InboundSection],
) -> Result<()> {
    if let Some(w) = webhooks {
        let c = &mut server.webhooks;
        if let Some(n) = w.workers {
            if n == 0 || n > 256 {
                bail!("[webhooks] workers must be 1 to 256");
            }
            c.workers = n;
        }
        if let Some(t) = w.timeout_secs {
            if t == 0 || t > 60 {
                bail!("[webhooks] timeout_secs must be 1 to 60");
            }
            c.timeout = Duration::from_secs(t);
        }
        if let Some(s) = &w.retry_schedule_secs {
            if s.is_empty() || s.len() > 50 {
                bail!("[webhooks] retry_schedule_secs must have 1 to 50 entries");
            }
            c.retry_schedule = s.iter().copied().map(Duration::from_secs).collect();
        }
        if let Some(t) = w.retry_after_cap_secs {
            c.retry_after_cap = Duration::from_secs(t);
        }
        if let Some(t) = w.disable_after_secs {
            if t == 0 {
                bail!("[webhooks] disable_after_secs must be at least 1");
            }
            c.disable_after = Duration::from_secs(t);
        }
        if let Some(ms) = w.poll_interval_ms {
            if ms == 0 {
                bail!("[webhooks] poll_interval_ms must be at least 1");
            }
            c.poll_interval = Duration::from_millis(ms);
        }
        if let Some(n) = w.max_endpoints {
            if !(1..=1000).contains(&n) {
                bail!("[webhooks] max_endpoints must be 1 to 1000");
            }
            c.max_endpoints = n;
        }
        if let Some(p) = &w.egress_proxy {
            c.egress_proxy = Some(egress_proxy(p)?);
        }
    }
    for s in inbound {
        server.inbound_sources.push(source(s)?);
    }
    let mut names: Vec<&str> = inbound.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w.first() == w.get(1)) {
        bail!("[[inbound]] names must be unique");
    }
    Ok(())
}

/// `[webhooks] egress_proxy`: an `http://` or `https://` proxy URL with a host and no
/// credentials (secrets never live in the configuration file). Messages never echo it.
fn egress_proxy(raw: &str) -> Result<String> {
    let url =
        reqwest::Url::parse(raw).map_err(|_| anyhow!("[webhooks] egress_proxy is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("[webhooks] egress_proxy must be an http:// or https:// URL with a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "[webhooks] egress_proxy must not carry credentials: secrets never go in the configuration file"
        );
    }
    Ok(url.to_string())
}

/// Start-up warnings (`serve` logs them, `config check` prints them).
pub fn warnings(server: &ServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &server.webhooks.egress_proxy {
        let at = reqwest::Url::parse(p)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_default();
        out.push(format!(
            "[webhooks] egress_proxy = {at}: every webhook and OTP delivery goes through this proxy, which resolves and connects to the destination; strongroom still refuses non-public addresses at registration and before each send, but what the proxy connects to is the proxy's to restrict (allow only public destinations there)"
        ));
    }
    out
}

fn source(s: &InboundSection) -> Result<InboundSource> {
    let ctx = || format!("[[inbound]] {}", s.name);
    if s.name.is_empty()
        || s.name.len() > 64
        || !s
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("[[inbound]] name must be 1-64 letters, digits, '-' or '_'");
    }
    parse_id(IdKind::Account, &s.account)
        .map_err(|_| anyhow!("{}: account must be an acct_ id", ctx()))?;
    let mode = match s.mode.as_deref() {
        None => Mode::Live,
        Some(m) => Mode::parse(m).ok_or_else(|| anyhow!("{}: mode must be test or live", ctx()))?,
    };
    let tolerance_s = i64::try_from(s.tolerance_secs.unwrap_or(300)).unwrap_or(300);
    let scheme = match s.scheme.as_str() {
        "hmac-sha256-hex" => InboundScheme::HmacSha256Hex {
            header: s
                .header
                .clone()
                .ok_or_else(|| anyhow!("{}: header is required for hmac-sha256-hex", ctx()))?
                .to_ascii_lowercase(),
        },
        "stripe" => InboundScheme::Stripe {
            header: s
                .header
                .clone()
                .unwrap_or_else(|| "stripe-signature".into())
                .to_ascii_lowercase(),
            tolerance_s,
        },
        "standard-webhooks" => InboundScheme::StandardWebhooks { tolerance_s },
        _ => bail!(
            "{}: scheme must be hmac-sha256-hex, stripe or standard-webhooks",
            ctx()
        ),
    };
    let raw = zeroize::Zeroizing::new(match (&s.secret_file, &s.secret_env) {
        (Some(p), None) => {
            let meta = std::fs::metadata(p)
                .with_context(|| format!("{}: cannot read secret_file", ctx()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{}: secret_file {} must be mode 0600 or stricter",
                    ctx(),
                    p.display()
                );
            }
            std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read secret_file", ctx()))?
        }
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| anyhow!("{}: environment variable {var} is not set", ctx()))?,
        _ => bail!("{}: set exactly one of secret_file or secret_env", ctx()),
    });
    let text = raw.trim();
    let secret = if matches!(scheme, InboundScheme::StandardWebhooks { .. }) {
        strongroom_crypto::webhook::decode_hmac_secret(text)
            .map_err(|_| anyhow!("{}: the secret must be a whsec_ base64 secret", ctx()))?
            .to_vec()
    } else {
        text.as_bytes().to_vec()
    };
    if secret.is_empty() {
        bail!("{}: the secret is empty", ctx());
    }
    Ok(InboundSource {
        name: s.name.clone(),
        account_id: s.account.clone(),
        mode,
        scheme,
        secret: Sensitive::new(secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::server;

    fn section(scheme: &str, secret_file: &std::path::Path) -> InboundSection {
        toml::from_str(&format!(
            "name = \"m2p\"\naccount = \"acct_0192f3a4b5c67d8e9f00112233445566\"\n\
             scheme = \"{scheme}\"\nheader = \"X-M2P-Signature\"\nsecret_file = \"{}\"",
            secret_file.display()
        ))
        .unwrap()
    }

    #[test]
    fn inbound_secrets_come_from_private_files_never_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m2p.secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(apply(&mut server(), None, &[section("hmac-sha256-hex", &f)]).is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = server();
        apply(&mut c, None, &[section("hmac-sha256-hex", &f)]).unwrap();
        let src = &c.inbound_sources[0];
        assert_eq!(src.secret.expose().as_slice(), b"s3cret");
        assert_eq!(
            src.scheme,
            InboundScheme::HmacSha256Hex {
                header: "x-m2p-signature".into()
            }
        );
        assert!(apply(&mut server(), None, &[section("md5", &f)]).is_err());
        // standard-webhooks wants a whsec_ secret.
        assert!(apply(&mut server(), None, &[section("standard-webhooks", &f)]).is_err());
        // A secret in the file itself is an unknown key.
        assert!(
            toml::from_str::<InboundSection>(
                "name = \"x\"\naccount = \"acct_0192f3a4b5c67d8e9f00112233445566\"\n\
                 scheme = \"stripe\"\nsecret = \"inline\""
            )
            .is_err()
        );
    }

    #[test]
    fn webhook_settings_are_validated() {
        let w: WebhooksSection =
            toml::from_str("workers = 4\nretry_schedule_secs = [0, 1, 2]").unwrap();
        let mut c = server();
        apply(&mut c, Some(&w), &[]).unwrap();
        assert_eq!(c.webhooks.workers, 4);
        assert_eq!(c.webhooks.retry_schedule.len(), 3);
        assert_eq!(c.webhooks.max_endpoints, 16);
        let w: WebhooksSection = toml::from_str("workers = 0").unwrap();
        assert!(apply(&mut server(), Some(&w), &[]).is_err());
        assert!(toml::from_str::<WebhooksSection>("nope = 1").is_err());
        let w: WebhooksSection = toml::from_str("max_endpoints = 4").unwrap();
        apply(&mut c, Some(&w), &[]).unwrap();
        assert_eq!(c.webhooks.max_endpoints, 4);
        assert!(warnings(&c).is_empty());
        let w: WebhooksSection =
            toml::from_str("egress_proxy = \"http://proxy.internal:3128\"").unwrap();
        apply(&mut c, Some(&w), &[]).unwrap();
        assert_eq!(
            c.webhooks.egress_proxy.as_deref(),
            Some("http://proxy.internal:3128/")
        );
        let warned = warnings(&c);
        assert_eq!(warned.len(), 1);
        assert!(warned[0].contains("proxy.internal:3128"), "{warned:?}");
        for bad in [
            "max_endpoints = 0",
            "max_endpoints = 1001",
            "egress_proxy = \"socks5://p:1080\"",
            "egress_proxy = \"not a url\"",
            "egress_proxy = \"http://user:s3cret@proxy:3128\"",
        ] {
            let w: WebhooksSection = toml::from_str(bad).unwrap();
            let e = apply(&mut server(), Some(&w), &[]).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
