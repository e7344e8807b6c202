//! Relay destinations (docs/relay.md): the hosts an operator approved for an account to
//! send card data to. An account's list is replaced as a whole, in one write.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::Relay`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};

/// One approved destination of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayDestinationRecord {
    /// The account.
    pub account_id: String,
    /// Lower-cased DNS name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port, 1–65535.
    pub port: i64,
    /// Path prefix a request's path must start with; `/` for any path.
    pub path_prefix: String,
    /// PEM certificates that anchor the destination's TLS chain instead of the system
    /// roots; `None`: the system roots.
    pub ca_cert_pem: Option<String>,
    /// Usable in test mode only (and then it may be a loopback address).
    pub test_only: bool,
    /// When the list holding it was set.
    pub created_ms: i64,
}

/// The relay's storage reads.
#[allow(async_fn_in_trait)]
pub trait RelayStore: Send + Sync {
    /// The account's destinations, in the order they were given.
    async fn relay_destinations(
        &self,
        account_id: &str,
    ) -> StoreResult<Vec<RelayDestinationRecord>>;
}

// ---- SQL ----

const LIST: &str = "SELECT account_id, host, port, path_prefix, ca_cert_pem, test_only, \
     created_ms FROM relay_destinations WHERE account_id = $1 ORDER BY position";
const CLEAR: &str = "DELETE FROM relay_destinations WHERE account_id = $1";
const INSERT: &str = "INSERT INTO relay_destinations (account_id, position, host, port, \
     path_prefix, ca_cert_pem, test_only, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

impl FromRow for RelayDestinationRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            account_id: r.text(0)?,
            host: r.text(1)?,
            port: r.int(2)?,
            path_prefix: r.text(3)?,
            ca_cert_pem: r.opt_text(4)?,
            test_only: r.int(5)? != 0,
            created_ms: r.int(6)?,
        })
    }
}

pub(crate) async fn relay_destinations<C: Exec>(
    c: &mut C,
    account_id: &str,
) -> StoreResult<Vec<RelayDestinationRecord>> {
    sql::many(c, LIST, args![account_id]).await
}

// ---- writes ----

/// A relay write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// Replaces the account's whole list (empty: none).
    SetDestinations {
        account_id: String,
        destinations: Vec<RelayDestinationRecord>,
    },
    /// A relay ended: its events (`relay.completed`, `relay.failed`). The relay keeps
    /// no row of its own: the audit record the write carries is its record.
    Relayed { events: Vec<crate::EventRecord> },
}

pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<()> {
    match op {
        Op::SetDestinations {
            account_id,
            destinations,
        } => {
            c.exec(CLEAR, args![account_id]).await?;
            for (position, d) in (0_i64..).zip(destinations) {
                let a = args![
                    account_id,
                    position,
                    &d.host,
                    d.port,
                    &d.path_prefix,
                    d.ca_cert_pem.as_deref(),
                    i64::from(d.test_only),
                    d.created_ms
                ];
                c.exec(INSERT, a).await?;
            }
        }
        Op::Relayed { events } => sql::insert_events(c, events).await?,
    }
    Ok(())
}
