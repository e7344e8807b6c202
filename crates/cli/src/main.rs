//! The `strongroom` binary: `dev`, `serve`, `config check`, `init`, and wrappers over
//! the admin API.

// glibc's malloc was about a sixth of the server's CPU under load (arena locks,
// consolidation of the many small buffers a request makes); mimalloc's per-thread heaps
// take most of that away. Secrets never depend on the allocator: they are zeroized on drop.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod audit;
mod cluster;
mod config;
mod controls;
mod db;
mod dev;
mod logfmt;
mod logq;
mod operator;
mod pin;
mod relay;
mod risk;
mod tokens;
mod webhooks;

#[cfg(test)]
mod test_support {
    use strongroom_server::ServerConfig;

    /// A server configuration for the config-section tests (nothing is opened).
    pub fn server() -> ServerConfig {
        ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            None,
            strongroom_store::StoreConfig {
                url: "sqlite:///tmp/x.db".into(),
                schema: None,
                max_connections: 1,
            },
        )
    }
}

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "strongroom",
    version,
    about = "Self-hosted card vault and payment-security gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a development vault: no setup, HTTPS on loopback, embedded SQLite.
    Dev(dev::DevArgs),
    /// Several development nodes on one PostgreSQL and one Redis, for scale-out trials
    /// and fault drills: up, status, kill, start, down (docs/scale-out.md).
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Start the production server from a TOML configuration file.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Start with `root_key_provider = "file"`: anyone who can read the disk can
        /// read that key (docs/key-custody.md).
        #[arg(long = "i-understand-file-root-key")]
        i_understand_file_root_key: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write a fresh production root key (32 random bytes, mode 0600).
    Init {
        /// Where to write it; refuses to overwrite.
        #[arg(long)]
        root_key_file: PathBuf,
    },
    /// The root key's custody: initialise a sealed vault, unseal, seal
    /// (docs/key-custody.md).
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Manage accounts through the admin API.
    Accounts {
        #[command(subcommand)]
        command: admin::AccountsCommand,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Manage admin keys through the admin API: create, list, revoke, restrict by IP.
    AdminKeys {
        #[command(subcommand)]
        command: admin::AdminKeysCommand,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Import a key under dual control (BDKs, zone PIN keys, KEKs): begin a ceremony, then
    /// each custodian gives one component with their own admin key.
    KeyImports {
        #[command(subcommand)]
        command: admin::KeyImportsCommand,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Verify or export the audit log, reading the database directly.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Manage API keys and data keys through the admin API.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Load generator: HTTPS load against a spawned or running vault, with a table and a
    /// JSON report (`strongroom bench --help`; BENCHMARKS.md has the figures).
    #[command(disable_help_flag = true)]
    Bench {
        /// Everything after `bench` goes to the load generator.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The relay: an account's approved destinations (through the admin API), and a
    /// loopback echo processor to try it against.
    Relay {
        #[command(subcommand)]
        command: relay::RelayCommand,
    },
    /// The risk engine's learned model: train it on labelled assessments, or run the
    /// whole loop on simulated traffic (docs/risk.md).
    Risk {
        #[command(subcommand)]
        command: risk::RiskCommand,
    },
    /// Incident response through the admin API.
    Incident {
        #[command(subcommand)]
        command: tokens::IncidentCommand,
        #[command(flatten)]
        target: admin::Target,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file without starting.
    Check {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Bench { args } = cli.command {
        // The bench runs its own runtime, so it starts before ours exists. With --spawn it
        // starts this same binary as `strongroom dev`.
        let argv = std::iter::once(std::ffi::OsString::from("strongroom bench")).chain(args);
        return match strongroom_bench::main_from(argv) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strongroom bench: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strongroom: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Cluster { command } => cluster::run(command).await,
            Command::Serve {
                config,
                i_understand_file_root_key,
            } => config::serve(&config, i_understand_file_root_key).await,
            Command::Operator { command } => operator::run(command).await,
            Command::Config {
                command: ConfigCommand::Check { config },
            } => config::check_and_report(&config),
            Command::Init { root_key_file } => config::init_root_key(&root_key_file),
            Command::Accounts { command, target } => admin::accounts(command, target).await,
            Command::Keys { command, target } => admin::keys(command, target).await,
            Command::AdminKeys { command, target } => admin::admin_keys(command, target).await,
            Command::KeyImports { command, target } => admin::key_imports(command, target).await,
            Command::Audit { command } => audit::run(command).await,
            Command::Risk { command } => risk::run(command).await,
            Command::Incident { command, target } => tokens::incident(command, target).await,
            Command::Relay { command } => relay::run(command).await,
            // Run before the runtime was built (above).
            Command::Bench { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
