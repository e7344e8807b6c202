//! `[rate_limit]` and `[gateway]` sections of the configuration file (docs/controls.md).

use anyhow::{Result, bail};
use serde::Deserialize;
use std::time::Duration;
use strongroom_server::ServerConfig;
use strongroom_server::gateway::{RateLimitStore, parse_cidrs};

/// `[rate_limit]`: requests per minute (the burst equals the per-minute figure).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// `memory` (default; one node) or `redis` (shared by nodes).
    pub backend: Option<String>,
    /// With `backend = "redis"`: e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Per credential (default 100).
    pub per_minute: Option<u32>,
    /// Card reveals per credential (default 10).
    pub reveal_per_minute: Option<u32>,
    /// OTP creation per credential (default 10).
    pub otp_per_minute: Option<u32>,
    /// Per client address on unauthenticated requests and token issue (default 60).
    pub ip_per_minute: Option<u32>,
    /// Relays per account, every key of it together (default 600).
    pub relay_per_minute: Option<u32>,
    /// Cards posted from browsers, per client session (default 10).
    pub browser_session_per_minute: Option<u32>,
    /// Cards posted from browsers, per client address (default 20).
    pub browser_ip_per_minute: Option<u32>,
    /// Cards posted from browsers, per publishable key (default 600).
    pub browser_key_per_minute: Option<u32>,
}

/// `[gateway]`: client address, request signatures, idempotency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// CIDRs of proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// How far a signature's `created` may be from now (default 300).
    pub signature_window_secs: Option<u64>,
    /// How long idempotent responses are kept (default 86400).
    pub idempotency_ttl_secs: Option<u64>,
}

/// Applies both sections to the server configuration.
pub fn apply(
    rate: Option<&RateLimitSection>,
    gw: Option<&GatewaySection>,
    server: &mut ServerConfig,
) -> Result<()> {
    if let Some(r) = rate {
        let rl = &mut server.rate_limit;
        rl.store = match (r.backend.as_deref(), &r.redis_url) {
            (None | Some("memory"), None) => RateLimitStore::Memory,
            (None | Some("memory"), Some(_)) => {
                bail!("[rate_limit] redis_url is set but backend is not \"redis\"")
            }
            (Some("redis"), Some(url)) => RateLimitStore::Redis(url.clone()),
            (Some("redis"), None) => bail!("[rate_limit] backend = \"redis\" needs redis_url"),
            (Some(_), _) => bail!("[rate_limit] backend must be \"memory\" or \"redis\""),
        };
        for (name, value, slot) in [
            ("per_minute", r.per_minute, &mut rl.per_minute),
            (
                "reveal_per_minute",
                r.reveal_per_minute,
                &mut rl.reveal_per_minute,
            ),
            ("otp_per_minute", r.otp_per_minute, &mut rl.otp_per_minute),
            ("ip_per_minute", r.ip_per_minute, &mut rl.ip_per_minute),
            (
                "relay_per_minute",
                r.relay_per_minute,
                &mut rl.relay_per_minute,
            ),
            (
                "browser_session_per_minute",
                r.browser_session_per_minute,
                &mut rl.browser_session_per_minute,
            ),
            (
                "browser_ip_per_minute",
                r.browser_ip_per_minute,
                &mut rl.browser_ip_per_minute,
            ),
            (
                "browser_key_per_minute",
                r.browser_key_per_minute,
                &mut rl.browser_key_per_minute,
            ),
        ] {
            match value {
                Some(0) => bail!("[rate_limit] {name} must be at least 1"),
                Some(n) => *slot = n,
                None => {}
            }
        }
    }
    if let Some(g) = gw {
        if let Some(list) = &g.trusted_proxies {
            server.trusted_proxies = parse_cidrs(list)
                .map_err(|_| anyhow::anyhow!("[gateway] trusted_proxies: not a list of CIDRs"))?;
        }
        match g.signature_window_secs {
            Some(0) => bail!("[gateway] signature_window_secs must be at least 1"),
            Some(n) => server.signature_window = Duration::from_secs(n),
            None => {}
        }
        match g.idempotency_ttl_secs {
            Some(0) => bail!("[gateway] idempotency_ttl_secs must be at least 1"),
            Some(n) => server.idempotency_ttl = Duration::from_secs(n),
            None => {}
        }
    }
    strongroom_server::gateway::check_config(&server.rate_limit).map_err(|e| anyhow::anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::server;

    fn apply_toml(rate: &str, gw: &str) -> Result<ServerConfig> {
        let r: Option<RateLimitSection> = if rate.is_empty() {
            None
        } else {
            Some(toml::from_str(rate)?)
        };
        let g: Option<GatewaySection> = if gw.is_empty() {
            None
        } else {
            Some(toml::from_str(gw)?)
        };
        let mut s = server();
        apply(r.as_ref(), g.as_ref(), &mut s)?;
        Ok(s)
    }

    #[test]
    fn defaults_and_overrides() {
        let s = apply_toml("", "").unwrap();
        assert_eq!(s.rate_limit.store, RateLimitStore::Memory);
        assert_eq!(s.rate_limit.per_minute, 100);
        assert_eq!(s.signature_window, Duration::from_secs(300));
        assert_eq!(s.idempotency_ttl, Duration::from_secs(86_400));
        assert!(s.trusted_proxies.is_empty());

        let s = apply_toml(
            "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nper_minute = 600\nreveal_per_minute = 5",
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nsignature_window_secs = 60\nidempotency_ttl_secs = 3600",
        )
        .unwrap();
        assert_eq!(
            s.rate_limit.store,
            RateLimitStore::Redis("redis://127.0.0.1:6379".into())
        );
        assert_eq!(s.rate_limit.per_minute, 600);
        assert_eq!(s.rate_limit.reveal_per_minute, 5);
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.signature_window, Duration::from_secs(60));
        assert_eq!(s.idempotency_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn nonsense_is_refused() {
        for (rate, gw) in [
            ("backend = \"redis\"", ""),
            ("redis_url = \"redis://127.0.0.1\"", ""),
            ("backend = \"memcached\"", ""),
            ("per_minute = 0", ""),
            ("per_minute = 1000001", ""),
            ("backend = \"redis\"\nredis_url = \"nonsense\"", ""),
            ("burst = 5", ""),
            ("", "trusted_proxies = [\"10.0.0.0/40\"]"),
            ("", "signature_window_secs = 0"),
            ("", "trusted_proxy = []"),
        ] {
            assert!(apply_toml(rate, gw).is_err(), "accepted {rate:?} {gw:?}");
        }
    }
}
