//! Which database a command that reads it directly (`audit`, `risk`) opens.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use std::path::PathBuf;
use strongroom_store::{Store, StoreConfig};

/// The database to read.
#[derive(Args, Debug, Clone)]
pub struct Db {
    /// A `strongroom dev` data directory (its SQLite file).
    #[arg(
        long,
        conflicts_with = "database_url",
        required_unless_present = "database_url"
    )]
    pub data_dir: Option<PathBuf>,
    /// A database URL (`sqlite://PATH` or `postgres://…`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// PostgreSQL only: the schema.
    #[arg(long, requires = "database_url")]
    pub database_schema: Option<String>,
}

impl Db {
    /// Opens it (two connections: these commands read, and write little).
    pub async fn open(&self) -> Result<Store> {
        let url = match (&self.data_dir, &self.database_url) {
            (Some(dir), None) => {
                let file = dir.join("strongroom.db");
                if !file.is_file() {
                    bail!("no database at {}", file.display());
                }
                format!("sqlite://{}", file.display())
            }
            (None, Some(url)) => url.clone(),
            _ => bail!("give --data-dir or --database-url"),
        };
        let cfg = StoreConfig {
            url,
            schema: self.database_schema.clone(),
            max_connections: 2,
        };
        Store::connect(&cfg)
            .await
            .map_err(|e| anyhow!("cannot open the database: {e}"))
    }
}
