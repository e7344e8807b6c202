//! `strongroom operator`: the root key's custody (docs/key-custody.md). `init` writes to
//! the database directly (the server need not run); `unseal`, `status` and `seal` talk to a
//! running server.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use strongroom_core::Clock;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Make the root key of a new vault, split it into unseal shares (printed once) and
    /// record only a verifier and the shares' digests. The server then starts sealed with
    /// `root_key_provider = "shamir"`.
    Init {
        #[command(flatten)]
        db: VaultDb,
        #[command(flatten)]
        split: Split,
    },
    /// Issue new unseal shares for the same root key: the custodians hand in the current
    /// threshold of shares (asked for without echo, or one per line on standard input),
    /// and the new shares are printed once. The old shares stop opening the vault.
    Rekey {
        #[command(flatten)]
        db: VaultDb,
        #[command(flatten)]
        split: Split,
    },
    /// Hand in one unseal share: asked for without echo on a terminal, else read as one
    /// line from standard input. Only this answer says how many shares are in.
    Unseal {
        #[command(flatten)]
        server: Server,
    },
    /// Whether the vault is sealed, and how many shares open it.
    Status {
        #[command(flatten)]
        server: Server,
    },
    /// Seal the vault now: every key leaves memory (admin key).
    Seal {
        #[command(flatten)]
        target: crate::admin::Target,
    },
    /// Rotate the root key (admin key): a new one, kept by the same provider or moved
    /// into an HSM (`--to pkcs11`, which needs the server's [pkcs11] section), takes over
    /// every wrapped key while the vault keeps serving; the old one is retired. Shows
    /// the progress; with Shamir, prints the new shares once.
    RotateRoot {
        #[command(flatten)]
        target: crate::admin::Target,
        /// The next key's provider: `file`, `shamir` or `pkcs11` (default: the one in
        /// force). A key moves only to a stronger provider.
        #[arg(long, value_parser = ["file", "shamir", "pkcs11"])]
        to: Option<String>,
        #[command(flatten)]
        split: Split,
    },
}

/// How a root key is split into unseal shares (with `--to shamir` for `rotate-root`).
#[derive(Args)]
pub struct Split {
    /// How many shares (custodians), 2 to 32.
    #[arg(long, default_value_t = 5)]
    shares: u8,
    /// How many shares open the vault, 2 to `--shares`.
    #[arg(long, default_value_t = 3)]
    threshold: u8,
    /// A file of custodians' age public keys (`age1…`), one per share, in order: each
    /// share is printed only encrypted to its custodian (with the `age` tool).
    #[arg(long)]
    share_recipients: Option<PathBuf>,
}

/// The vault's database: the server's configuration file, or a URL.
#[derive(Args)]
pub struct VaultDb {
    /// The server's configuration file (its `database_url`).
    #[arg(
        long,
        conflicts_with = "database_url",
        required_unless_present = "database_url"
    )]
    config: Option<PathBuf>,
    /// Or the database URL (`sqlite://PATH` or `postgres://…`).
    #[arg(long)]
    database_url: Option<String>,
    /// PostgreSQL only: the schema.
    #[arg(long, requires = "database_url")]
    database_schema: Option<String>,
}

impl VaultDb {
    async fn open(self) -> Result<strongroom_store::Store> {
        let url = match (self.config, self.database_url) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                database_url_of(&text)
                    .ok_or_else(|| anyhow!("{} has no database_url", path.display()))?
            }
            (None, Some(url)) => url,
            (None, None) => bail!("give --config or --database-url"),
        };
        strongroom_store::Store::connect(&strongroom_store::StoreConfig {
            url,
            schema: self.database_schema,
            max_connections: 2,
        })
        .await
        .map_err(|e| anyhow!("cannot open the database: {e}"))
    }
}

/// Which server: `--url` (and `--ca-cert`), or a dev data directory's `dev.json`.
#[derive(Args)]
pub struct Server {
    /// Base URL, e.g. https://vault.internal:8443.
    #[arg(long, env = "STRONGROOM_URL")]
    url: Option<String>,
    /// A PEM CA certificate to trust besides the system roots.
    #[arg(long, env = "STRONGROOM_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Dev data directory whose dev.json supplies the URL and CA.
    #[arg(long, default_value = "./.strongroom-dev")]
    data_dir: PathBuf,
}

impl Server {
    fn connect(self) -> Result<(reqwest::Client, String)> {
        let (url, ca) = match self.url {
            Some(url) => (url, self.ca_cert),
            None => {
                let dev = crate::dev::load_dev_json(&self.data_dir)?;
                (dev.url, self.ca_cert.or(Some(PathBuf::from(dev.ca_cert))))
            }
        };
        let client = crate::admin::client(ca.as_deref())?;
        Ok((client, url.trim_end_matches('/').to_owned()))
    }
}

pub async fn run(cmd: OperatorCommand) -> Result<()> {
    match cmd {
        OperatorCommand::Init { db, split } => {
            let Split {
                shares,
                threshold,
                share_recipients,
            } = split;
            let recipients = recipients(share_recipients.as_deref(), shares)?;
            let store = db.open().await?;
            let now = strongroom_core::SystemClock.now_ms();
            let made =
                strongroom_server::custody::init_shamir(&store, now, shares, threshold).await;
            store.close().await;
            println!(
                "The vault's root key is made, and split into {shares} unseal shares; any {threshold} of them open it."
            );
            print_shares(&made?, recipients.as_deref())?;
            println!("Start the server with root_key_provider = \"shamir\"; it starts sealed.");
            Ok(())
        }
        OperatorCommand::Rekey { db, split } => {
            let Split {
                shares,
                threshold,
                share_recipients,
            } = split;
            let recipients = recipients(share_recipients.as_deref(), shares)?;
            let store = db.open().await?;
            let old = read_old_shares(&store).await;
            let made = match old {
                Ok(old) => {
                    let old: Vec<&str> = old.iter().map(|s| s.as_str()).collect();
                    strongroom_server::custody::rekey_shamir(&store, &old, shares, threshold)
                        .await
                        .map_err(anyhow::Error::from)
                }
                Err(e) => Err(e),
            };
            store.close().await;
            let made = made?;
            println!(
                "New unseal shares for the same root key: {shares}, any {threshold} of which open the vault. The old shares no longer do."
            );
            print_shares(&made, recipients.as_deref())
        }
        OperatorCommand::Unseal { server } => unseal(server).await,
        OperatorCommand::Status { server } => {
            let (client, url) = server.connect()?;
            let res = client
                .get(format!("{url}/v1/sys/seal_status"))
                .send()
                .await
                .map_err(crate::admin::unreachable)?;
            let body = crate::admin::answer(res).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
        OperatorCommand::Seal { target } => {
            target
                .connect()?
                .call(reqwest::Method::POST, "/v1/sys/seal", None)
                .await
        }
        OperatorCommand::RotateRoot { target, to, split } => rotate_root(target, to, split).await,
    }
}

/// `operator rotate-root`: starts the rotation, prints the new shares (if any) at once,
/// then the progress until it ends.
async fn rotate_root(target: crate::admin::Target, to: Option<String>, split: Split) -> Result<()> {
    use reqwest::Method;
    let Split {
        shares,
        threshold,
        share_recipients,
    } = split;
    let recipients = match to.as_deref() {
        Some("shamir") | None => recipients(share_recipients.as_deref(), shares)?,
        Some(_) => None,
    };
    let conn = target.connect()?;
    let body = match &to {
        Some(p) => json!({"provider": p, "shares": shares, "threshold": threshold}),
        None => json!({"shares": shares, "threshold": threshold}),
    };
    let started = conn
        .json(Method::POST, "/v1/sys/rotate_root", Some(body))
        .await?;
    let field = |v: &serde_json::Value, name: &str| v.get(name).cloned().unwrap_or_default();
    println!(
        "Root rotation to generation {} ({}) begun: every wrapped key moves under the new root key while the vault serves.",
        field(&started, "generation"),
        field(&started, "provider").as_str().unwrap_or("?")
    );
    if let Some(list) = started.get("shares").and_then(|s| s.as_array()) {
        println!(
            "The new root key's unseal shares, any {threshold} of which open the vault once the rotation ends. Each is shown this once; give each to a different custodian."
        );
        let texts: Vec<(u8, Zeroizing<String>)> = list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let i = u8::try_from(i + 1).unwrap_or(u8::MAX);
                (i, Zeroizing::new(s.as_str().unwrap_or_default().to_owned()))
            })
            .collect();
        emit_shares(&texts, recipients.as_deref())?;
    }
    let mut last = String::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let now = conn.json(Method::GET, "/v1/sys/rotate_root", None).await?;
        let progress = format!(
            "pass {}: moved {}",
            field(&now, "passes"),
            field(&now, "moved")
        );
        if progress != last {
            println!("  {progress}");
            last = progress;
        }
        match field(&now, "state").as_str() {
            Some("finished") => break,
            Some("running") => {}
            _ => bail!(
                "the rotation stopped: {}; it stays pending: run `strongroom operator rotate-root` again with the same provider",
                field(&now, "error").as_str().unwrap_or("unknown")
            ),
        }
    }
    println!("The root key is rotated; the previous one is retired.");
    if let Some(p) = &to {
        println!(
            "Before the next start, set root_key_provider = \"{p}\" in the server's configuration (docs/key-custody.md)."
        );
    }
    Ok(())
}

/// The `database_url` line of a configuration file (the rest is `serve`'s to check).
fn database_url_of(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Only {
        database_url: String,
    }
    // Other keys are allowed here: only this one is read.
    toml::from_str::<Only>(text).ok().map(|o| o.database_url)
}

fn print_shares(
    shares: &[strongroom_crypto::shamir::Share],
    recipients: Option<&[String]>,
) -> Result<()> {
    let texts: Vec<(u8, Zeroizing<String>)> =
        shares.iter().map(|s| (s.index(), s.text())).collect();
    emit_shares(&texts, recipients)
}

/// The custodians' age recipients from `path` (one per line; `#` comments and blank
/// lines skipped): exactly one per share. Checked before any share exists, with the
/// `age` tool that will encrypt them.
fn recipients(path: Option<&std::path::Path>, shares: u8) -> Result<Option<Vec<String>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let list: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if list.len() != usize::from(shares) {
        bail!(
            "{} names {} recipients for {shares} shares: one per share",
            path.display(),
            list.len()
        );
    }
    // Each is tried now, so that a typo stops the ceremony before a share exists.
    for r in &list {
        age_encrypt(r, "check")?;
    }
    Ok(Some(list))
}

/// `text` encrypted to the age `recipient`, ASCII-armoured, by the `age` tool.
fn age_encrypt(recipient: &str, text: &str) -> Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("age")
        .args(["--encrypt", "--armor", "--recipient", recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("cannot run `age` (install it to encrypt shares): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "age refused the recipient {recipient}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Prints each share once: in clear, or encrypted to its custodian's age key.
fn emit_shares(shares: &[(u8, Zeroizing<String>)], recipients: Option<&[String]>) -> Result<()> {
    match recipients {
        None => {
            println!(
                "Each is shown this once. Give each to a different custodian, to keep offline; Strongroom keeps only their digests."
            );
            for (i, s) in shares {
                println!("  share {i}: {}", s.as_str());
            }
        }
        Some(list) => {
            println!(
                "Each share is shown this once, encrypted to its custodian's age key (decrypt with `age --decrypt -i KEY`); Strongroom keeps only their digests."
            );
            for ((i, s), r) in shares.iter().zip(list) {
                println!("share {i} for {r}:");
                print!("{}", age_encrypt(r, s.as_str())?);
            }
        }
    }
    Ok(())
}

/// The current shares for a rekey: as many as the threshold, asked for without echo on
/// a terminal, or every line of standard input.
async fn read_old_shares(store: &strongroom_store::Store) -> Result<Vec<Zeroizing<String>>> {
    use strongroom_store::CustodyStore;
    let record = store
        .root_key()
        .await?
        .filter(|r| r.provider == "shamir")
        .ok_or_else(|| anyhow!("this vault's root key is not kept by Shamir shares"))?;
    let k = record.threshold.unwrap_or(0);
    let mut out = Vec::new();
    if std::io::stdin().is_terminal() {
        for i in 1..=k {
            let s = Zeroizing::new(rpassword::prompt_password(format!(
                "Current unseal share {i} of {k}: "
            ))?);
            out.push(Zeroizing::new(s.trim().to_owned()));
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = Zeroizing::new(line?);
            if !line.trim().is_empty() {
                out.push(Zeroizing::new(line.trim().to_owned()));
            }
        }
    }
    Ok(out)
}

async fn unseal(server: Server) -> Result<()> {
    let (client, url) = server.connect()?;
    let share = read_share()?;
    let res = client
        .post(format!("{url}/v1/sys/unseal"))
        .json(&json!({"share": share.as_str()}))
        .send()
        .await
        .map_err(crate::admin::unreachable)?;
    let body = crate::admin::answer(res).await?;
    let field = |name: &str| body.get(name).cloned().unwrap_or_default();
    if field("sealed") == json!(false) {
        println!("unsealed: the vault is open");
    } else {
        println!(
            "share accepted: {} of {}; the vault is still sealed",
            field("progress"),
            field("threshold")
        );
    }
    Ok(())
}

/// One share: asked for without echo on a terminal, or one line of standard input.
fn read_share() -> Result<Zeroizing<String>> {
    read_secret_line("Unseal share: ")
}

/// A secret: asked for without echo on a terminal (after `prompt`), or the first line of
/// standard input. Never empty.
pub(crate) fn read_secret_line(prompt: &str) -> Result<Zeroizing<String>> {
    let line = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt)?)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        line
    };
    let secret = Zeroizing::new(line.trim().to_owned());
    if secret.is_empty() {
        bail!("nothing given");
    }
    Ok(secret)
}
