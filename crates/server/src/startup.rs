//! Why the server could not start ([`StartError`]).

use thiserror::Error;

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] strongroom_store::StoreError),
    /// The TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    /// A setting cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The audit log could not be written (the service fails closed).
    #[error("audit log: {0}")]
    Audit(&'static str),
    /// The JWT signing keys could not be loaded or created.
    #[error("JWT signing keys: {0}")]
    Keys(&'static str),
    /// The root key does not open this vault, or the vault has none yet.
    #[error("root key: {0}")]
    Custody(String),
}
