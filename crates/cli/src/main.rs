//! The `strongroom` binary: `dev`, `serve`, `config check`, `init`, and wrappers over
//! the admin API.

mod admin;
mod config;
mod dev;

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
    /// Start the production server from a TOML configuration file.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
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
    /// Manage accounts through the admin API.
    Accounts {
        #[command(subcommand)]
        command: admin::AccountsCommand,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Manage API keys and data keys through the admin API.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
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
            Command::Serve { config } => config::serve(&config).await,
            Command::Config {
                command: ConfigCommand::Check { config },
            } => config::check(&config).map(|_| println!("config OK")),
            Command::Init { root_key_file } => config::init_root_key(&root_key_file),
            Command::Accounts { command, target } => admin::accounts(command, target).await,
            Command::Keys { command, target } => admin::keys(command, target).await,
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
