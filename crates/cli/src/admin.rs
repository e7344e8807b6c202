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
    /// Rotate the account's OTP signing secret (shown once); for 24 hours deliveries are
    /// signed under the new and the previous secret.
    RotateOtpSecret {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand)]
pub enum AdminKeysCommand {
    /// Create another admin key (its secret is shown once).
    Create {
        /// The custodian the key belongs to (named in dual-control key imports).
        #[arg(long)]
        name: Option<String>,
        /// A CIDR (or address) the key may be used from (repeatable); none: anywhere.
        #[arg(long = "ip")]
        ips: Vec<String>,
    },
    /// List the admin keys and their allowlists.
    List,
    /// Revoke an admin key (not the last one).
    Revoke {
        #[arg(long)]
        key: String,
    },
    /// Replace an admin key's IP allowlist; without `--ip`, lift it.
    Allowlist {
        #[arg(long)]
        key: String,
        /// A CIDR (or address) the key may be used from (repeatable).
        #[arg(long = "ip")]
        ips: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum KeyImportsCommand {
    /// Begin an import: the key is made when `--components` custodians have each given
    /// one. Or, with `--tr31` and `--kbpk`, import a key whole from a TR-31 key block
    /// (version B or D) under a KEK imported under dual control.
    Create {
        /// The account the key is for.
        #[arg(long)]
        account: String,
        /// `bdk`, `zone_pin_key` or `kek`.
        #[arg(long, value_parser = ["bdk", "zone_pin_key", "kek"])]
        kind: String,
        /// `aes128`, `aes192`, `aes256`, `tdes2` or `tdes3`.
        #[arg(long, value_parser = ["aes128", "aes192", "aes256", "tdes2", "tdes3"],
            required_unless_present = "tr31", conflicts_with = "tr31")]
        algorithm: Option<String>,
        /// How many components (2 or 3), each from a different admin key.
        #[arg(long, conflicts_with = "tr31")]
        components: Option<i64>,
        /// What the operators call the key.
        #[arg(long)]
        name: String,
        /// A TR-31 key block holding the key.
        #[arg(long, requires = "kbpk")]
        tr31: Option<String>,
        /// The `kek_…` the TR-31 block is wrapped under.
        #[arg(long, requires = "tr31")]
        kbpk: Option<String>,
    },
    /// Give one component, with the admin key of the custodian who holds it: the
    /// component (hex) is asked for without echo on a terminal, else read as the first
    /// line of standard input; its check value is `--kcv`.
    Component {
        /// The import (`kimp_…`).
        #[arg(long)]
        id: String,
        /// The component's check value, as printed with it (6 hex digits).
        #[arg(long)]
        kcv: String,
    },
    /// Show an import: who has given a component, and the key once made.
    Get {
        /// The import (`kimp_…`).
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key (its secret is shown once).
    Create {
        #[arg(long)]
        account: String,
        /// secret, publishable or restricted.
        #[arg(long, value_parser = ["secret", "publishable", "restricted"])]
        kind: String,
        /// test or live.
        #[arg(long, value_parser = ["test", "live"])]
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
    /// Rotate a data key (cards, fingerprint or pin; re-wrap starts at once), or with
    /// `--purpose jwt` (no account) the token signing key, which is published at once
    /// and signs after the pre-publication period.
    Rotate {
        #[arg(long, required_if_eq_any = [("purpose", "cards"), ("purpose", "fingerprint"), ("purpose", "pin")])]
        account: Option<String>,
        #[arg(long, value_parser = ["cards", "fingerprint", "pin", "jwt"])]
        purpose: String,
    },
    /// The token signing keys: pending, active, retiring, expired.
    JwtStatus,
    /// Every key of every kind: purpose, provider, age against the key-age policy, and a
    /// check value where the key is symmetric (never the key).
    Inventory,
    /// Data-key versions, states and re-wrap progress.
    Status {
        #[arg(long)]
        account: String,
    },
    /// Retire a data-key version that protects no record.
    Retire {
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = ["cards", "fingerprint", "pin"])]
        purpose: String,
        #[arg(long)]
        version: i64,
    },
}

pub(crate) struct Conn {
    url: String,
    key: String,
    client: reqwest::Client,
}

/// Where to connect, and with which key.
#[derive(Debug, PartialEq)]
struct Resolved {
    url: String,
    key: String,
    ca: Option<PathBuf>,
}

impl Target {
    /// With `--url` (or `STRONGROOM_URL`) everything comes from flags and environment, and
    /// dev.json is not read at all: a dev admin key must never be sent to another server.
    /// Without it, dev.json supplies the URL, and the key and CA unless given.
    fn resolve(self) -> Result<Resolved> {
        if let Some(url) = self.url {
            let key = self.admin_key.ok_or_else(|| {
                anyhow!("no admin key: pass --admin-key or set STRONGROOM_ADMIN_KEY")
            })?;
            return Ok(Resolved {
                url,
                key,
                ca: self.ca_cert,
            });
        }
        let dev = crate::dev::load_dev_json(&self.data_dir)?;
        Ok(Resolved {
            url: dev.url,
            key: self.admin_key.unwrap_or(dev.admin_key),
            ca: self.ca_cert.or(Some(PathBuf::from(dev.ca_cert))),
        })
    }

    pub(crate) fn connect(self) -> Result<Conn> {
        let r = self.resolve()?;
        Ok(Conn {
            url: r.url.trim_end_matches('/').to_owned(),
            key: r.key,
            client: client(r.ca.as_deref())?,
        })
    }
}

/// An HTTPS client that also trusts the PEM CA certificate at `ca`.
pub(crate) fn client(ca: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|_| anyhow!("{} is not a PEM certificate", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder.build()?)
}

/// Ids go into URL paths, so only id characters are allowed (no `/`, `?`, `..`).
pub(crate) fn id(s: &str) -> Result<&str> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(s)
    } else {
        bail!("not an id: expected letters, digits and `_` (e.g. acct_…, key_…)")
    }
}

impl Conn {
    /// Calls the admin API and prints the JSON answer.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<()> {
        let body = self.json(method, path, body).await?;
        print_stdout(&serde_json::to_string_pretty(&body)?)
    }

    /// Calls the admin API: the JSON answer of a success.
    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(unreachable)?;
        answer(res).await
    }
}

/// Why the server could not be reached: the source chain (refused, unknown issuer, …);
/// the URL is already known.
pub(crate) fn unreachable(e: reqwest::Error) -> anyhow::Error {
    let why = format!("{:#}", anyhow::Error::from(e.without_url()));
    let hint = if why.contains("certificate") {
        " (pass --ca-cert with the CA that signed the server's certificate)"
    } else {
        ""
    };
    anyhow!("cannot reach the server: {why}{hint}")
}

/// The JSON body of a success, or the error's status, code and message.
pub(crate) async fn answer(res: reqwest::Response) -> Result<Value> {
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
    Ok(body)
}

/// Prints a line; a closed pipe (`… | head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
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
            let mut body = json!({ "name": name });
            if let (Some(u), Some(obj)) = (otp_delivery_url, body.as_object_mut()) {
                obj.insert("otp_delivery_url".to_owned(), Value::String(u));
            }
            c.call(Method::POST, "/v1/admin/accounts", Some(body)).await
        }
        AccountsCommand::Get { account } => {
            c.call(
                Method::GET,
                &format!("/v1/admin/accounts/{}", id(&account)?),
                None,
            )
            .await
        }
        AccountsCommand::RotateOtpSecret { account } => {
            c.call(
                Method::POST,
                &format!(
                    "/v1/admin/accounts/{}/otp_signing_secret/rotate",
                    id(&account)?
                ),
                None,
            )
            .await
        }
    }
}

pub async fn key_imports(cmd: KeyImportsCommand, target: Target) -> Result<()> {
    use reqwest::Method;
    let c = target.connect()?;
    match cmd {
        KeyImportsCommand::Create {
            account,
            kind,
            algorithm,
            components,
            name,
            tr31,
            kbpk,
        } => {
            let body = match (tr31, kbpk) {
                (Some(block), Some(kbpk)) => json!({"account": account, "kind": kind,
                    "name": name, "tr31": block, "kbpk": kbpk}),
                _ => json!({"account": account, "kind": kind, "algorithm": algorithm,
                    "components": components.unwrap_or(2), "name": name}),
            };
            c.call(Method::POST, "/v1/admin/key_imports", Some(body))
                .await
        }
        KeyImportsCommand::Component { id, kcv } => {
            let component = crate::operator::read_secret_line("Key component (hex): ")?;
            let body = json!({"component": component.as_str(), "kcv": kcv});
            let path = format!("/v1/admin/key_imports/{}/components", self::id(&id)?);
            c.call(Method::POST, &path, Some(body)).await
        }
        KeyImportsCommand::Get { id } => {
            let path = format!("/v1/admin/key_imports/{}", self::id(&id)?);
            c.call(Method::GET, &path, None).await
        }
    }
}

pub async fn admin_keys(cmd: AdminKeysCommand, target: Target) -> Result<()> {
    use reqwest::Method;
    let c = target.connect()?;
    match cmd {
        AdminKeysCommand::Create { name, ips } => {
            let body = match name {
                Some(n) => json!({"name": n, "ip_allowlist": ips}),
                None => json!({"ip_allowlist": ips}),
            };
            c.call(Method::POST, "/v1/admin/admin_keys", Some(body))
                .await
        }
        AdminKeysCommand::List => c.call(Method::GET, "/v1/admin/admin_keys", None).await,
        AdminKeysCommand::Revoke { key } => {
            c.call(
                Method::DELETE,
                &format!("/v1/admin/admin_keys/{}", id(&key)?),
                None,
            )
            .await
        }
        AdminKeysCommand::Allowlist { key, ips } => {
            c.call(
                Method::PUT,
                &format!("/v1/admin/admin_keys/{}/ip_allowlist", id(&key)?),
                Some(json!({ "cidrs": ips })),
            )
            .await
        }
    }
}

pub async fn keys(cmd: KeysCommand, target: Target) -> Result<()> {
    use reqwest::Method;
    let c = target.connect()?;
    let base = |a: &str| id(a).map(|a| format!("/v1/admin/accounts/{a}"));
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
                &format!("{}/api_keys", base(&account)?),
                Some(body),
            )
            .await
        }
        KeysCommand::List { account } => {
            c.call(Method::GET, &format!("{}/api_keys", base(&account)?), None)
                .await
        }
        KeysCommand::Revoke { account, key } => {
            c.call(
                Method::DELETE,
                &format!("{}/api_keys/{}", base(&account)?, id(&key)?),
                None,
            )
            .await
        }
        KeysCommand::Rotate { account, purpose } => match (purpose.as_str(), account) {
            ("jwt", None) => {
                c.call(Method::POST, "/v1/admin/jwt_keys/rotate", None)
                    .await
            }
            ("jwt", Some(_)) => {
                bail!("--purpose jwt rotates the server's signing key: omit --account")
            }
            (_, Some(account)) => {
                c.call(
                    Method::POST,
                    &format!("{}/keys/rotate", base(&account)?),
                    Some(json!({"purpose": purpose})),
                )
                .await
            }
            (_, None) => bail!("--account is required for --purpose {purpose}"),
        },
        KeysCommand::Inventory => c.call(Method::GET, "/v1/admin/key_inventory", None).await,
        KeysCommand::JwtStatus => c.call(Method::GET, "/v1/admin/jwt_keys", None).await,
        KeysCommand::Status { account } => {
            c.call(Method::GET, &format!("{}/keys", base(&account)?), None)
                .await
        }
        KeysCommand::Retire {
            account,
            purpose,
            version,
        } => {
            c.call(
                Method::POST,
                &format!("{}/keys/retire", base(&account)?),
                Some(json!({"purpose": purpose, "version": version})),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dir: &std::path::Path, url: Option<&str>, key: Option<&str>) -> Target {
        Target {
            url: url.map(str::to_owned),
            admin_key: key.map(str::to_owned),
            ca_cert: None,
            data_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn dev_json_supplies_defaults_only_without_url() {
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::dev::DevJson {
            url: "https://127.0.0.1:9".into(),
            ca_cert: "/d/ca.pem".into(),
            account_id: "acct_1".into(),
            secret_key: "sk_test_x".into(),
            publishable_key: "pk_test_x".into(),
            admin_key: "sk_admin_dev".into(),
            metrics_url: None,
            unseal_shares: None,
        };
        std::fs::write(
            dir.path().join("dev.json"),
            serde_json::to_vec(&dev).unwrap(),
        )
        .unwrap();
        let r = target(dir.path(), None, None).resolve().unwrap();
        assert_eq!(r.url, "https://127.0.0.1:9");
        assert_eq!(r.key, "sk_admin_dev");
        assert_eq!(r.ca, Some(PathBuf::from("/d/ca.pem")));
        let r = target(dir.path(), None, Some("sk_admin_other"))
            .resolve()
            .unwrap();
        assert_eq!(r.key, "sk_admin_other");
        // Another server never gets the dev key or the dev CA.
        assert!(
            target(dir.path(), Some("https://prod"), None)
                .resolve()
                .is_err()
        );
        let r = target(dir.path(), Some("https://prod"), Some("sk_admin_p"))
            .resolve()
            .unwrap();
        assert_eq!(r.ca, None);
        assert_eq!(r.key, "sk_admin_p");
        // Nothing at all.
        let empty = tempfile::tempdir().unwrap();
        let e = target(empty.path(), None, None).resolve().unwrap_err();
        assert!(e.to_string().contains("--url"), "{e}");
    }

    #[test]
    fn ids_cannot_escape_the_path() {
        assert!(id("acct_01a2087e4b09").is_ok());
        for bad in ["", "../x", "a/b", "a?b", "a#b", "a b", "a%2f"] {
            assert!(id(bad).is_err(), "{bad}");
        }
    }
}
