//! `strongroom accounts …` and `strongroom keys …`: thin wrappers over the admin API.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Which server to talk to, and as whom. Defaults come from `DATA_DIR/dev.json`.
#[derive(Args)]
pub struct Target {
    /// Base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "STRONGROOM_URL", global = true)]
    url: Option<String>,
    /// Admin key (sk_admin_…). Prefer the environment variable to keep it out of shell history.
    #[arg(
        long,
        env = "STRONGROOM_ADMIN_KEY",
        global = true,
        hide_env_values = true
    )]
    admin_key: Option<String>,
    /// A PEM CA certificate to trust besides the system roots.
    #[arg(long, env = "STRONGROOM_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Dev data directory whose dev.json supplies the defaults.
    #[arg(long, default_value = "./.strongroom-dev", global = true)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Create an account.
    Create {
        #[arg(long)]
        name: String,
        /// HTTPS URL that receives live-mode OTP codes.
        #[arg(long)]
        otp_delivery_url: Option<String>,
    },
    /// Show an account.
    Get {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key (its secret is shown once).
    Create {
        #[arg(long)]
        account: String,
        /// secret, publishable or restricted.
        #[arg(long)]
        kind: String,
        /// test or live.
        #[arg(long)]
        mode: String,
        /// Scopes of a restricted key (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List an account's API keys.
    List {
        #[arg(long)]
        account: String,
    },
    /// Revoke an API key.
    Revoke {
        #[arg(long)]
        account: String,
        #[arg(long)]
        key: String,
    },
    /// Rotate a data key (cards or fingerprint); re-wrap starts at once.
    Rotate {
        #[arg(long)]
        account: String,
        #[arg(long)]
        purpose: String,
    },
    /// Data-key versions, states and re-wrap progress.
    Status {
        #[arg(long)]
        account: String,
    },
    /// Retire a data-key version that protects no record.
    Retire {
        #[arg(long)]
        account: String,
        #[arg(long)]
        purpose: String,
        #[arg(long)]
        version: i64,
    },
}

struct Conn {
    url: String,
    key: String,
    client: reqwest::Client,
}

impl Target {
    fn connect(self) -> Result<Conn> {
        let dev: Option<crate::dev::DevJson> = std::fs::read(self.data_dir.join("dev.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let url = self
            .url
            .or_else(|| dev.as_ref().map(|d| d.url.clone()))
            .ok_or_else(|| anyhow!("no server: pass --url or run `strongroom dev` first"))?;
        let key = self
            .admin_key
            .or_else(|| dev.as_ref().map(|d| d.admin_key.clone()))
            .ok_or_else(|| anyhow!("no admin key: pass --admin-key or set STRONGROOM_ADMIN_KEY"))?;
        let ca = self
            .ca_cert
            .or_else(|| dev.as_ref().map(|d| PathBuf::from(&d.ca_cert)));
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = ca {
            let pem =
                std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Conn {
            url: url.trim_end_matches('/').to_owned(),
            key,
            client: builder.build()?,
        })
    }
}

impl Conn {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<()> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the server: {}", e.without_url()))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{} {}: {}",
                status.as_u16(),
                body.pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("error"),
                body.pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
        }
        println!("{}", serde_json::to_string_pretty(&body)?);
        Ok(())
    }
}

pub async fn accounts(cmd: AccountsCommand, target: Target) -> Result<()> {
    use reqwest::Method;
    let c = target.connect()?;
    match cmd {
        AccountsCommand::Create {
            name,
            otp_delivery_url,
        } => {
            c.call(
                Method::POST,
                "/v1/admin/accounts",
                Some(json!({"name": name, "otp_delivery_url": otp_delivery_url})),
            )
            .await
        }
        AccountsCommand::Get { account } => {
            c.call(Method::GET, &format!("/v1/admin/accounts/{account}"), None)
                .await
        }
    }
}

pub async fn keys(cmd: KeysCommand, target: Target) -> Result<()> {
    use reqwest::Method;
    let c = target.connect()?;
    let base = |a: &str| format!("/v1/admin/accounts/{a}");
    match cmd {
        KeysCommand::Create {
            account,
            kind,
            mode,
            scopes,
        } => {
            let body = if scopes.is_empty() {
                json!({"kind": kind, "mode": mode})
            } else {
                json!({"kind": kind, "mode": mode, "scopes": scopes})
            };
            c.call(
                Method::POST,
                &format!("{}/api_keys", base(&account)),
                Some(body),
            )
            .await
        }
        KeysCommand::List { account } => {
            c.call(Method::GET, &format!("{}/api_keys", base(&account)), None)
                .await
        }
        KeysCommand::Revoke { account, key } => {
            c.call(
                Method::DELETE,
                &format!("{}/api_keys/{key}", base(&account)),
                None,
            )
            .await
        }
        KeysCommand::Rotate { account, purpose } => {
            c.call(
                Method::POST,
                &format!("{}/keys/rotate", base(&account)),
                Some(json!({"purpose": purpose})),
            )
            .await
        }
        KeysCommand::Status { account } => {
            c.call(Method::GET, &format!("{}/keys", base(&account)), None)
                .await
        }
        KeysCommand::Retire {
            account,
            purpose,
            version,
        } => {
            c.call(
                Method::POST,
                &format!("{}/keys/retire", base(&account)),
                Some(json!({"purpose": purpose, "version": version})),
            )
            .await
        }
    }
}
