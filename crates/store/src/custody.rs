//! What the vault keeps of its root key (docs/key-custody.md): the provider, a verifier
//! and, for a sealed start, the Shamir parameters and one digest per share. Never the key
//! and never a share. Also the key-age notices already sent. Writes go through the one writer as [`crate::sql::WriteOp::Custody`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};

/// Length of a verifier and of a share digest.
pub const DIGEST_LEN: usize = 32;

/// One generation of the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeyRecord {
    /// 1 for the first root key, one more for each rotation.
    pub generation: i64,
    /// `file`, `shamir` or `pkcs11`.
    pub provider: String,
    /// A one-way derivation of the key that tells it from another.
    pub verifier: Vec<u8>,
    /// Shamir only: how many shares open the vault.
    pub threshold: Option<i64>,
    /// Shamir only: how many shares exist.
    pub shares: Option<i64>,
    /// Shamir only: the digest of each share, [`DIGEST_LEN`] bytes each, in share order.
    pub share_digests: Vec<[u8; DIGEST_LEN]>,
    /// When it was made.
    pub created_ms: i64,
    /// PKCS#11 only: the root key wrapped by the HSM's key (never the key itself).
    pub wrapped_root: Option<Vec<u8>>,
}

/// The root key's storage reads.
#[allow(async_fn_in_trait)]
pub trait CustodyStore: Send + Sync {
    /// The root key in force; `None` before the vault is initialised.
    async fn root_key(&self) -> StoreResult<Option<RootKeyRecord>>;
}

const CURRENT: &str = "SELECT generation, provider, verifier, threshold, shares, share_digests, \
     created_ms, wrapped_root FROM root_key WHERE retired_ms IS NULL ORDER BY generation DESC LIMIT 1";
/// The first generation, unless one exists.
const INIT: &str = "INSERT INTO root_key \
     (generation, provider, verifier, threshold, shares, share_digests, created_ms, wrapped_root) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
     WHERE NOT EXISTS (SELECT 1 FROM root_key) ON CONFLICT (generation) DO NOTHING";
/// New shares for the key in force (a rekey): same key, same verifier; only if the
/// shares are still those the rekey was given ($5), so two rekeys cannot both succeed.
const REKEY: &str = "UPDATE root_key SET threshold = $2, shares = $3, share_digests = $4 \
     WHERE generation = $1 AND retired_ms IS NULL AND provider = 'shamir' \
     AND share_digests = $5";

impl FromRow for RootKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        let digests = r.opt_blob(5)?.unwrap_or_default();
        Ok(Self {
            generation: r.int(0)?,
            provider: r.text(1)?,
            verifier: r.blob(2)?,
            threshold: r.opt_int(3)?,
            shares: r.opt_int(4)?,
            share_digests: digests
                .chunks_exact(DIGEST_LEN)
                .filter_map(|c| <[u8; DIGEST_LEN]>::try_from(c).ok())
                .collect(),
            created_ms: r.int(6)?,
            wrapped_root: r.opt_blob(7)?,
        })
    }
}

pub(crate) async fn current<C: Exec>(c: &mut C) -> StoreResult<Option<RootKeyRecord>> {
    sql::one(c, CURRENT, &[]).await
}

/// Records a key-age notice unless it was sent, with its events (none for a key that
/// belongs to no account).
const NOTICE: &str = "INSERT INTO key_notices (key_ref, notice, created_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (key_ref, notice) DO NOTHING";

/// A change to the root key's record, or a key-age notice.
#[derive(Debug)]
pub(crate) enum Op {
    /// A notice about a key's age: written, with `events`, only the first time.
    Notice {
        key_ref: String,
        notice: String,
        now_ms: i64,
        events: Vec<crate::EventRecord>,
    },
    /// Records the first root key; nothing if the vault already has one.
    Init(RootKeyRecord),
    /// Replaces the shares of `generation` (threshold, count, digests) if its digests
    /// are still `old`.
    Rekey {
        new: RootKeyRecord,
        old: Vec<[u8; DIGEST_LEN]>,
    },
}

fn digests(r: &RootKeyRecord) -> Option<Vec<u8>> {
    (!r.share_digests.is_empty()).then(|| r.share_digests.concat())
}

/// Applies `op`: whether it changed a row.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<bool> {
    match op {
        Op::Notice {
            key_ref,
            notice,
            now_ms,
            events,
        } => {
            let first = c.exec(NOTICE, args![key_ref, notice, *now_ms]).await? == 1;
            if first {
                sql::insert_events(c, events).await?;
            }
            Ok(first)
        }
        Op::Init(r) => {
            let d = digests(r);
            let a = args![
                r.generation,
                &r.provider,
                r.verifier.as_slice(),
                r.threshold,
                r.shares,
                d.as_deref(),
                r.created_ms,
                r.wrapped_root.as_deref()
            ];
            Ok(c.exec(INIT, a).await? == 1)
        }
        Op::Rekey { new, old } => {
            let d = digests(new);
            let old = old.concat();
            let a = args![
                new.generation,
                new.threshold,
                new.shares,
                d.as_deref(),
                old.as_slice()
            ];
            Ok(c.exec(REKEY, a).await? == 1)
        }
    }
}
