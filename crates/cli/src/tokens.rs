//! Bearer tokens in the configuration file (`[tokens]`, `[connections]`) and
//! `strongroom incident revoke-all`.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde::Deserialize;
use std::time::Duration;
use strongroom_crypto::jwt::JwtAlg;
use strongroom_server::ServerConfig;

/// `[tokens]`: the JWTs issued by `POST /v1/auth/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    /// `EdDSA` (default) or `RS256`: the algorithm of new signing keys. Changing it
    /// rotates to a key of the new algorithm at the next start (with pre-publication).
    pub algorithm: Option<String>,
    /// Token lifetime, 60..=86400 s (default 3600).
    pub lifetime_secs: Option<u64>,
    /// How long a new signing key is published before it signs (default 300). Must be
    /// at least `keyring_ttl_secs`, so every node knows the key before it is used.
    pub prepublish_secs: Option<u64>,
    /// Clock-skew leeway for `exp`/`nbf`, 0..=300 s (default 5).
    pub leeway_secs: Option<u64>,
    /// The `iss` claim (default `strongroom`).
    pub issuer: Option<String>,
    /// The `aud` claim (default `strongroom-api`).
    pub audience: Option<String>,
}

/// `[connections]`: limits against slow clients.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsSection {
    /// Deadline for a request's headers, also for an idle keep-alive connection
    /// (default 10 s).
    pub header_read_timeout_secs: Option<u64>,
}

fn claim_text(name: &str, v: &str) -> Result<String> {
    if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
        bail!("[tokens] {name} must be 1-200 printable characters");
    }
    Ok(v.to_owned())
}

/// Applies `[tokens]` and `[connections]` to the server configuration.
pub fn apply(
    tokens: Option<&TokensSection>,
    connections: Option<&ConnectionsSection>,
    server: &mut ServerConfig,
) -> Result<()> {
    if let Some(t) = tokens {
        let c = &mut server.tokens;
        if let Some(a) = &t.algorithm {
            c.alg = match JwtAlg::parse(a) {
                Some(alg) => alg,
                None => bail!("[tokens] algorithm must be EdDSA or RS256"),
            };
        }
        if let Some(s) = t.lifetime_secs {
            if !(60..=86_400).contains(&s) {
                bail!("[tokens] lifetime_secs must be between 60 and 86400");
            }
            c.lifetime = Duration::from_secs(s);
        }
        if let Some(s) = t.prepublish_secs {
            c.prepublish = Duration::from_secs(s);
        }
        if let Some(s) = t.leeway_secs {
            if s > 300 {
                bail!("[tokens] leeway_secs must be at most 300");
            }
            c.leeway = Duration::from_secs(s);
        }
        if let Some(v) = &t.issuer {
            c.issuer = claim_text("issuer", v)?;
        }
        if let Some(v) = &t.audience {
            c.audience = claim_text("audience", v)?;
        }
    }
    if server.tokens.prepublish < server.keyring_ttl {
        bail!(
            "[tokens] prepublish_secs ({}) must be at least keyring_ttl_secs ({}): other nodes must load a new signing key before it signs",
            server.tokens.prepublish.as_secs(),
            server.keyring_ttl.as_secs()
        );
    }
    if let Some(s) = connections.and_then(|c| c.header_read_timeout_secs) {
        if !(1..=300).contains(&s) {
            bail!("[connections] header_read_timeout_secs must be between 1 and 300");
        }
        server.header_read_timeout = Duration::from_secs(s);
    }
    Ok(())
}

/// `strongroom incident …`
#[derive(Subcommand)]
pub enum IncidentCommand {
    /// Revoke every API key of an account, and with them every bearer token issued from
    /// them (`POST /v1/admin/accounts/{id}/revoke_all`). Emits `account.keys_revoked`.
    RevokeAll {
        #[arg(long)]
        account: String,
    },
}

pub async fn incident(cmd: IncidentCommand, target: crate::admin::Target) -> Result<()> {
    let c = target.connect()?;
    match cmd {
        IncidentCommand::RevokeAll { account } => {
            let path = format!(
                "/v1/admin/accounts/{}/revoke_all",
                crate::admin::id(&account)?
            );
            c.call(reqwest::Method::POST, &path, Some(serde_json::json!({})))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::server;

    fn section(text: &str) -> TokensSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tokens_section_is_applied_and_checked() {
        let mut s = server();
        s.keyring_ttl = Duration::from_secs(5);
        let t = section(
            "algorithm = \"RS256\"\nlifetime_secs = 600\nprepublish_secs = 60\nleeway_secs = 2\nissuer = \"https://vault.example\"\naudience = \"payments\"",
        );
        let c = ConnectionsSection {
            header_read_timeout_secs: Some(3),
        };
        apply(Some(&t), Some(&c), &mut s).unwrap();
        assert_eq!(s.tokens.alg, JwtAlg::Rs256);
        assert_eq!(s.tokens.lifetime, Duration::from_secs(600));
        assert_eq!(s.tokens.prepublish, Duration::from_secs(60));
        assert_eq!(s.tokens.issuer, "https://vault.example");
        assert_eq!(s.header_read_timeout, Duration::from_secs(3));
        for (bad, why) in [
            ("algorithm = \"none\"", "EdDSA or RS256"),
            ("algorithm = \"HS256\"", "EdDSA or RS256"),
            ("lifetime_secs = 10", "between 60"),
            ("leeway_secs = 3600", "at most 300"),
            ("issuer = \"\"", "printable"),
            ("prepublish_secs = 1", "keyring_ttl_secs"),
        ] {
            let mut s = server();
            s.keyring_ttl = Duration::from_secs(5);
            let e = apply(Some(&section(bad)), None, &mut s).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(toml::from_str::<TokensSection>("lifetime = 5").is_err());
    }
}
