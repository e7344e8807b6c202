//! Inbound routes (docs/relay.md, "Inbound routes"): `/in/{id}/…` accepts a partner's
//! request, tokenizes the card numbers it names into the route's account and mode, and
//! forwards the cleaned request to an approved destination of that account.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::InboundRoute`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use strongroom_core::Mode;

/// One inbound route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRouteRecord {
    /// `inr_…`: also the capability in the route's URL.
    pub id: String,
    /// The account cards are tokenized into.
    pub account_id: String,
    /// The mode they are tokenized in (the creating key's).
    pub mode: Mode,
    /// The path prefix (after `/in/{id}`) the route accepts.
    pub path: String,
    /// The approved HTTPS URL requests are forwarded to.
    pub forward_to: String,
    /// The fields to tokenize, as JSON (the server's rules; JSON pointers only).
    pub tokenize: String,
    /// The merchant's note.
    pub description: Option<String>,
    /// The networks partners may send from, as a JSON array of CIDRs; `None`: any.
    pub allowed_ips: Option<String>,
    /// When it was made.
    pub created_ms: i64,
}

/// The inbound routes' storage reads.
#[allow(async_fn_in_trait)]
pub trait InboundRouteStore: Send + Sync {
    /// A route by id, whatever its account.
    async fn inbound_route(&self, id: &str) -> StoreResult<Option<InboundRouteRecord>>;
    /// The account's routes in a mode, oldest first.
    async fn inbound_routes(
        &self,
        account_id: &str,
        mode: Mode,
    ) -> StoreResult<Vec<InboundRouteRecord>>;
}

// ---- SQL ----

const GET: &str = "SELECT id, account_id, mode, path, forward_to, tokenize, description, \
     created_ms, allowed_ips FROM inbound_routes WHERE id = $1";
const LIST: &str = "SELECT id, account_id, mode, path, forward_to, tokenize, description, \
     created_ms, allowed_ips FROM inbound_routes WHERE account_id = $1 AND mode = $2 \
     ORDER BY id";
const INSERT: &str = "INSERT INTO inbound_routes (id, account_id, mode, path, forward_to, \
     tokenize, description, created_ms, allowed_ips) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const DELETE: &str = "DELETE FROM inbound_routes WHERE id = $1 AND account_id = $2 AND mode = $3";

impl FromRow for InboundRouteRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: sql::mode(&r.text(2)?)?,
            path: r.text(3)?,
            forward_to: r.text(4)?,
            tokenize: r.text(5)?,
            description: r.opt_text(6)?,
            created_ms: r.int(7)?,
            allowed_ips: r.opt_text(8)?,
        })
    }
}

pub(crate) async fn inbound_route<C: Exec>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<InboundRouteRecord>> {
    sql::one(c, GET, args![id]).await
}

pub(crate) async fn inbound_routes<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
) -> StoreResult<Vec<InboundRouteRecord>> {
    sql::many(c, LIST, args![account_id, mode.as_str()]).await
}

// ---- writes ----

/// An inbound route write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new route.
    Insert(InboundRouteRecord),
    /// Removes the account's route in this mode; replies whether there was one.
    Delete {
        id: String,
        account_id: String,
        mode: Mode,
    },
}

/// Applies `op`; `true` unless it deleted nothing.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<bool> {
    match op {
        Op::Insert(r) => {
            let a = args![
                &r.id,
                &r.account_id,
                r.mode.as_str(),
                &r.path,
                &r.forward_to,
                &r.tokenize,
                r.description.as_deref(),
                r.created_ms,
                r.allowed_ips.as_deref()
            ];
            c.exec(INSERT, a).await?;
            Ok(true)
        }
        Op::Delete {
            id,
            account_id,
            mode,
        } => Ok(c.exec(DELETE, args![id, account_id, mode.as_str()]).await? > 0),
    }
}
