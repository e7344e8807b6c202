//! `strongroom relay destinations set|list`: the hosts an account's relay may send card
//! data to, through the admin API (docs/relay.md); and `strongroom relay echo`, a loopback
//! HTTPS echo processor to point the relay at.

use crate::admin::{Target, id};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum RelayCommand {
    /// Approved relay destinations of an account.
    Destinations {
        #[command(subcommand)]
        command: DestinationsCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Run a loopback HTTPS echo processor: it answers every request with a JSON echo of
    /// it (method, path, headers, body), under a CA it makes at start. Approve it with
    /// `relay destinations set --destination 127.0.0.1:PORT,test-only,ca=FILE`.
    Echo {
        /// Where to listen: a loopback address only (it receives card data).
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        /// Where to write the CA certificate (PEM) the processor's certificate is
        /// signed by.
        #[arg(long, default_value = "echo-ca.pem")]
        ca_out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum DestinationsCommand {
    /// Replace the account's whole list of destinations.
    Set {
        #[arg(long)]
        account: String,
        /// `host[:port][/path_prefix][,test-only][,ca=FILE]` (repeatable): a DNS name or
        /// IP literal (IPv6 in brackets when a port follows), port 443 by default, path
        /// prefix `/` by default; `test-only` limits it to test mode (where it may be a
        /// loopback address), `ca=FILE` verifies it against that PEM CA instead of the
        /// system roots.
        #[arg(long = "destination", value_name = "SPEC")]
        destinations: Vec<String>,
        /// Mark every destination given as test-only.
        #[arg(long)]
        test_only: bool,
        /// Remove every destination (instead of naming none by mistake).
        #[arg(long, conflicts_with = "destinations")]
        none: bool,
    },
    /// Show the account's destinations.
    List {
        #[arg(long)]
        account: String,
    },
}

/// Parses `host[:port][/prefix]` and its `,`-separated options into the API's object.
/// Only the shape is checked here; the server checks the rest and says why it refuses.
fn parse_spec(
    spec: &str,
    all_test_only: bool,
    read: &dyn Fn(&Path) -> Result<String>,
) -> Result<Value> {
    let mut parts = spec.split(',');
    let target = parts.next().unwrap_or_default();
    if target.contains("://") {
        bail!(
            "--destination {spec:?}: give host[:port][/path_prefix], without a scheme (HTTPS is the only one)"
        );
    }
    let (hostport, prefix) = match target.find('/') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| anyhow!("--destination {spec:?}: unclosed `[`"))?;
        match after.strip_prefix(':') {
            Some(p) => (inner, Some(p)),
            None if after.is_empty() => (inner, None),
            None => bail!("--destination {spec:?}: expected `:port` after `]`"),
        }
    } else if hostport.matches(':').count() == 1 {
        let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
        (h, Some(p))
    } else {
        (hostport, None)
    };
    if host.is_empty() {
        bail!("--destination {spec:?}: no host");
    }
    let mut obj = Map::new();
    obj.insert("host".into(), Value::String(host.to_owned()));
    if let Some(p) = port {
        let n = p
            .parse::<u16>()
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| anyhow!("--destination {spec:?}: the port must be 1-65535"))?;
        obj.insert("port".into(), json!(n));
    }
    if !prefix.is_empty() {
        obj.insert("path_prefix".into(), Value::String(prefix.to_owned()));
    }
    let mut test_only = all_test_only;
    for opt in parts {
        if opt == "test-only" {
            test_only = true;
        } else if let Some(file) = opt.strip_prefix("ca=") {
            obj.insert("ca_cert_pem".into(), Value::String(read(Path::new(file))?));
        } else {
            bail!("--destination {spec:?}: unknown option {opt:?} (test-only, ca=FILE)");
        }
    }
    if test_only {
        obj.insert("test_only".into(), Value::Bool(true));
    }
    Ok(Value::Object(obj))
}

fn read_pem(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub async fn run(cmd: RelayCommand) -> Result<()> {
    match cmd {
        RelayCommand::Destinations { command, target } => destinations(command, target).await,
        RelayCommand::Echo { listen, ca_out } => echo(listen, &ca_out).await,
    }
}

/// Serves the echo processor until Ctrl-C.
async fn echo(listen: SocketAddr, ca_out: &Path) -> Result<()> {
    let echo = strongroom_bench::echo::EchoProcessor::bind(listen)?;
    std::fs::write(ca_out, echo.ca_pem())
        .with_context(|| format!("cannot write {}", ca_out.display()))?;
    let addr = echo.local_addr();
    println!(
        "echo processor listening on https://{addr} (CA certificate in {}); Ctrl-C stops it",
        ca_out.display()
    );
    tokio::select! {
        r = echo.run() => r,
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
    }
}

async fn destinations(command: DestinationsCommand, target: Target) -> Result<()> {
    let path = |a: &str| id(a).map(|a| format!("/v1/admin/accounts/{a}/relay_destinations"));
    match command {
        DestinationsCommand::Set {
            account,
            destinations,
            test_only,
            none,
        } => {
            if destinations.is_empty() && !none {
                bail!("name at least one --destination, or pass --none to remove them all");
            }
            let list = destinations
                .iter()
                .map(|d| parse_spec(d, test_only, &read_pem))
                .collect::<Result<Vec<_>>>()?;
            let path = path(&account)?;
            let c = target.connect()?;
            c.call(
                reqwest::Method::PUT,
                &path,
                Some(json!({ "destinations": list })),
            )
            .await
        }
        DestinationsCommand::List { account } => {
            let path = path(&account)?;
            target
                .connect()?
                .call(reqwest::Method::GET, &path, None)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Value> {
        parse_spec(spec, false, &|p| Ok(format!("PEM of {}", p.display())))
    }

    #[test]
    fn specs() {
        assert_eq!(
            parse("api.example").unwrap(),
            json!({"host": "api.example"})
        );
        assert_eq!(
            parse("api.example:8443/v1/pay").unwrap(),
            json!({"host": "api.example", "port": 8443, "path_prefix": "/v1/pay"})
        );
        assert_eq!(
            parse("[::1]:9443,test-only,ca=ca.pem").unwrap(),
            json!({"host": "::1", "port": 9443, "test_only": true, "ca_cert_pem": "PEM of ca.pem"})
        );
        assert_eq!(
            parse("2001:db8::1").unwrap(),
            json!({"host": "2001:db8::1"})
        );
        assert_eq!(
            parse("[2001:db8::1]/x").unwrap(),
            json!({"host": "2001:db8::1", "path_prefix": "/x"})
        );
        assert_eq!(
            parse_spec("h.example", true, &|_| unreachable!()).unwrap(),
            json!({"host": "h.example", "test_only": true})
        );
        for bad in [
            "https://h.example",
            "h.example:0",
            "h.example:x",
            "[::1",
            "[::1]x",
            ":443",
            "h.example,insecure",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
