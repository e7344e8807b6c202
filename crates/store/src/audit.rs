//! The audit trail: an append-only, hash-chained log of every authenticated request and
//! security event, its head, and signed checkpoints of the head.
//!
//! `hash_n = H(hash_{n-1} ‖ canonical(record_n))`, `hash_0` = 32 zero bytes. `H` is
//! SHA-256, handed in as a [`HashFn`] by the caller (the store never imports the crypto
//! crate). Every append locks the one-row `audit_head` table with an `UPDATE` inside the
//! appending transaction, which serialises chain appends on SQLite (one writer) and on
//! PostgreSQL (a row lock held to commit, across nodes) alike.
//!
//! **Same transaction as the change.** A request has an [`AuditScope`] (made by the
//! server's outermost middleware and handed to the code that acts for the request).
//! A write made through `store.audited(&scope)` ([`crate::Store::audited`]) is wrapped
//! by `sql::attach`: the scope's request record and any queued security events
//! are appended in the same transaction as the write, so the change and its record
//! commit together or not at all, and the group commit carries both with one fsync. The
//! writes exist only on that handle (or on [`crate::Store::unaudited`], which names a
//! write that carries nothing), so the call site always says which. A request that
//! writes nothing gets a standalone append after its handler
//! ([`AuditStore::append_audit`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::exec::{Arg, Exec, RowGet, args};
use crate::{StoreError, StoreResult};

/// One chain step: `H(prev ‖ canonical record)`.
pub type HashFn = fn(&[u8; 32], &[u8]) -> [u8; 32];

/// One audit record. Never holds a PAN, CVV, PIN, code, key or secret: only ids,
/// names and codes. Empty strings stand for "none".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditRecord {
    /// Position in the chain, from 1 (assigned on append).
    pub seq: i64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `req_…`, or empty for a system event.
    pub request_id: String,
    /// `acct_…` the request acted on, if any.
    pub account_id: String,
    /// `key_…` of the API key, `admin:key_…`, `system`, or `anonymous`.
    pub actor: String,
    /// What was done, e.g. `card.reveal`, `api_key.create`, `auth.failed`.
    pub action: String,
    /// `type:id` of the object, e.g. `card:card_…` (never a PAN), or empty.
    pub resource: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The error code of a failure (`otp_invalid`), or the HTTP status of a success.
    pub code: String,
    /// The client's IP address, if known.
    pub client_ip: String,
    /// HTTP method, if a request.
    pub method: String,
    /// Route template (`/v1/cards/{id}`), never the raw path.
    pub route: String,
    /// The chain hash after this record (assigned on append).
    pub hash: Vec<u8>,
}

impl AuditRecord {
    /// The canonical encoding that is hashed: a version label, then every field
    /// except `hash`, each as a big-endian length (u32) and bytes; integers as 8
    /// big-endian bytes. Unambiguous, and independent of storage.
    pub fn canonical(&self, seq: i64) -> Vec<u8> {
        let fields: [&str; 10] = [
            &self.request_id,
            &self.account_id,
            &self.actor,
            &self.action,
            &self.resource,
            &self.outcome,
            &self.code,
            &self.client_ip,
            &self.method,
            &self.route,
        ];
        let mut out = Vec::with_capacity(64 + fields.iter().map(|f| f.len() + 4).sum::<usize>());
        out.extend_from_slice(b"strongroom-audit/v1");
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        for f in fields {
            let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }
}

/// A signed checkpoint of the chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The head's sequence number.
    pub seq: i64,
    /// The head's hash.
    pub hash: Vec<u8>,
    /// When it was taken.
    pub time_ms: i64,
    /// Ed25519 public key that signed it.
    pub public_key: Vec<u8>,
    /// Ed25519 signature over the checkpoint message.
    pub signature: Vec<u8>,
    /// The link to the checkpoint before it, which the signature covers; `None` for a
    /// checkpoint made before checkpoints were chained.
    pub link: Option<CheckpointLink>,
}

/// A chained checkpoint's link to the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointLink {
    /// The previous checkpoint's digest (32 zero bytes for the first).
    pub prev: Vec<u8>,
    /// This checkpoint's place in the chain of checkpoints, from 1.
    pub count: i64,
}

/// Filters of an audit query; records come oldest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this account.
    pub account_id: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only records at or after this time.
    pub since_ms: Option<i64>,
    /// Only records before this time.
    pub until_ms: Option<i64>,
    /// Only records after this sequence number (paging).
    pub after_seq: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

// ---- SQL ----

macro_rules! audit_cols {
    () => {
        "seq, time_ms, request_id, account_id, actor, action, resource, outcome, code, \
         client_ip, method, route, hash"
    };
}

// A no-op UPDATE takes the row lock (PostgreSQL waits for a concurrent appender to
// commit and then reads its head); on SQLite the writer is alone anyway.
const LOCK_HEAD: &str = "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";
const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
/// PostgreSQL: a whole append in one statement, every row through `UNNEST` (one array per
/// column, `$1`…`$13`) and the new head (`$14`, `$15`) in the same round trip.
const APPEND_UNNEST: &str = concat!(
    "WITH appended AS (INSERT INTO audit_log (",
    audit_cols!(),
    ") SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
     $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], \
     $13::BYTEA[])) UPDATE audit_head SET seq = $14, hash = $15 WHERE id = 1"
);
/// The head after an append (under the lock `LOCK_HEAD` took).
const SET_HEAD: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";
/// Columns of one audit row, i.e. bind values per row of [`insert_sql`].
const COLS: usize = 13;

/// Row counts of the multi-row `INSERT`s an append is cut into (largest first). A few
/// fixed sizes keep the prepared-statement cache small; one statement for 32 rows is
/// one round trip to the driver instead of 32 (on SQLite each is a thread hand-off), and
/// 32 × 13 bind values stay far below both backends' parameter limits.
const CHUNKS: [usize; 3] = [32, 8, 1];

/// `INSERT INTO audit_log (…) VALUES ($1 … $13), ($14 … $26), …` for `rows` rows, built
/// once per size and kept for the life of the process (the statement caches key on
/// `&'static str`).
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        CHUNKS
            .iter()
            .map(|&n| {
                let mut s = String::from(concat!(
                    "INSERT INTO audit_log (",
                    audit_cols!(),
                    ") VALUES "
                ));
                for r in 0..n {
                    s.push_str(if r == 0 { "(" } else { ", (" });
                    for c in 0..COLS {
                        if c > 0 {
                            s.push_str(", ");
                        }
                        s.push('$');
                        s.push_str(&(r * COLS + c + 1).to_string());
                    }
                    s.push(')');
                }
                &*Box::leak(s.into_boxed_str())
            })
            .collect()
    });
    CHUNKS
        .iter()
        .position(|&n| n == rows)
        .and_then(|i| all.get(i).copied())
        .unwrap_or("")
}
const RANGE: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
);
const QUERY: &str = concat!(
    "SELECT ",
    audit_cols!(),
    " FROM audit_log WHERE seq > $1 AND ($2 IS NULL OR account_id = $2) \
     AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR action = $4) \
     AND ($5 IS NULL OR time_ms >= $5) AND ($6 IS NULL OR time_ms < $6) \
     ORDER BY seq LIMIT $7"
);
// A checkpoint at a seq that has one, or naming a predecessor that another checkpoint
// names already (a fork, e.g. two nodes at once), is not stored.
pub(crate) const INSERT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints \
     (seq, hash, time_ms, public_key, signature, prev_hash, count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
const CHECKPOINTS: &str = "SELECT seq, hash, time_ms, public_key, signature, prev_hash, count \
     FROM audit_checkpoints ORDER BY seq";
const LATEST_CHECKPOINT: &str = "SELECT seq, hash, time_ms, public_key, signature, \
     prev_hash, count FROM audit_checkpoints ORDER BY seq DESC LIMIT 1";
const COUNT_CHECKPOINTS: &str = "SELECT COUNT(*) FROM audit_checkpoints";
// Readiness: the probe appends nothing that survives (its savepoint is rolled back).
pub(crate) const PROBE: &str = concat!(
    "INSERT INTO audit_log (",
    audit_cols!(),
    ") VALUES (-1, 0, '', '', 'system', 'audit.probe', '', 'success', '', '', '', '', $1)"
);

fn record<R: RowGet>(r: &R) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        seq: r.int(0)?,
        time_ms: r.int(1)?,
        request_id: r.text(2)?,
        account_id: r.text(3)?,
        actor: r.text(4)?,
        action: r.text(5)?,
        resource: r.text(6)?,
        outcome: r.text(7)?,
        code: r.text(8)?,
        client_ip: r.text(9)?,
        method: r.text(10)?,
        route: r.text(11)?,
        hash: r.blob(12)?,
    })
}

fn checkpoint<R: RowGet>(r: &R) -> StoreResult<AuditCheckpoint> {
    Ok(AuditCheckpoint {
        seq: r.int(0)?,
        hash: r.blob(1)?,
        time_ms: r.int(2)?,
        public_key: r.blob(3)?,
        signature: r.blob(4)?,
        // Half a link (one column cleared by hand) is kept as a link that cannot
        // verify, so that verification names the checkpoint rather than failing to read.
        link: match (r.opt_blob(5)?, r.opt_int(6)?) {
            (None, None) => None,
            (prev, count) => Some(CheckpointLink {
                prev: prev.unwrap_or_default(),
                count: count.unwrap_or(0),
            }),
        },
    })
}

fn hash32(v: &[u8]) -> StoreResult<[u8; 32]> {
    <[u8; 32]>::try_from(v).map_err(|_| StoreError::Corrupt("audit head hash length".into()))
}

/// The chain head: sequence number and hash.
pub(crate) type Head = (i64, [u8; 32]);

/// A head read from a row `(seq, hash)`.
pub(crate) fn head_of(row: &impl RowGet) -> StoreResult<Head> {
    Ok((row.int(0)?, hash32(&row.blob(1)?)?))
}

/// Appends `records` to the chain inside the caller's transaction; returns the new
/// head's sequence number. `head`: the head as the transaction read it under its lock
/// when it opened, if it did ([`Exec::begin`]); otherwise it is locked and read here.
pub(crate) async fn append<'r, C: Exec>(
    c: &mut C,
    head: Option<Head>,
    records: impl Iterator<Item = (&'r AuditRecord, HashFn)>,
) -> StoreResult<i64> {
    let (mut seq, mut prev) = match head {
        Some(h) => h,
        None => head_of(
            &c.opt(LOCK_HEAD, &[])
                .await?
                .ok_or_else(|| StoreError::Corrupt("audit head missing".into()))?,
        )?,
    };
    // Chain first (seq and hash of every record), then insert in as few statements as
    // the chunk sizes allow, in order.
    let mut rows: Vec<(&AuditRecord, i64, [u8; 32])> = Vec::new();
    for (r, hash) in records {
        seq = seq.saturating_add(1);
        prev = hash(&prev, &r.canonical(seq));
        rows.push((r, seq, prev));
    }
    if rows.is_empty() {
        return Ok(seq);
    }
    if c.dialect().bulk_insert() {
        append_unnest(c, &rows).await?;
        return Ok(seq);
    }
    let mut rest = rows.as_slice();
    while !rest.is_empty() {
        let n = CHUNKS
            .iter()
            .copied()
            .find(|&n| n <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut a: Vec<Arg<'_>> = Vec::with_capacity(n * COLS);
        for (r, seq, h) in chunk {
            a.extend_from_slice(args![
                *seq,
                r.time_ms,
                &r.request_id,
                &r.account_id,
                &r.actor,
                &r.action,
                &r.resource,
                &r.outcome,
                &r.code,
                &r.client_ip,
                &r.method,
                &r.route,
                &h[..]
            ]);
        }
        c.exec(insert_sql(n), &a).await?;
        rest = tail;
    }
    c.exec(SET_HEAD, args![seq, &prev[..]]).await?;
    Ok(seq)
}

/// [`APPEND_UNNEST`]: the rows of an append and its new head (the last row's), in one
/// statement.
async fn append_unnest<C: Exec>(
    c: &mut C,
    rows: &[(&AuditRecord, i64, [u8; 32])],
) -> StoreResult<()> {
    let text =
        |f: fn(&AuditRecord) -> &str| rows.iter().map(|(r, _, _)| f(r)).collect::<Vec<&str>>();
    let seqs: Vec<i64> = rows.iter().map(|(_, s, _)| *s).collect();
    let times: Vec<i64> = rows.iter().map(|(r, _, _)| r.time_ms).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|(_, _, h)| &h[..]).collect();
    let cols = [
        text(|r| &r.request_id),
        text(|r| &r.account_id),
        text(|r| &r.actor),
        text(|r| &r.action),
        text(|r| &r.resource),
        text(|r| &r.outcome),
        text(|r| &r.code),
        text(|r| &r.client_ip),
        text(|r| &r.method),
        text(|r| &r.route),
    ];
    let (last_seq, last_hash) = rows
        .last()
        .map(|(_, s, h)| (*s, &h[..]))
        .ok_or_else(|| StoreError::Corrupt("empty audit append".into()))?;
    let mut a: Vec<Arg<'_>> = Vec::with_capacity(COLS + 2);
    a.push(Arg::Ints(&seqs));
    a.push(Arg::Ints(&times));
    a.extend(cols.iter().map(|v| Arg::Texts(v)));
    a.push(Arg::Blobs(&hashes));
    a.push(Arg::Int(last_seq));
    a.push(Arg::Blob(last_hash));
    c.exec(APPEND_UNNEST, &a).await?;
    Ok(())
}

// ---- the request scope ----

/// The audit state of one request (or one system operation): its record, queued
/// security events, and whether an audit write failed.
#[derive(Debug)]
pub struct AuditScope {
    pub(crate) hash: HashFn,
    state: Mutex<ScopeState>,
    pub(crate) failed: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
pub(crate) struct ScopeState {
    /// The request's own record; `None` once committed (or if the request is not audited).
    pub(crate) request: Option<AuditRecord>,
    /// Whether the request's record has been committed with a write.
    pub(crate) committed: bool,
    /// Security events waiting to ride on the next write or the standalone append.
    pub(crate) events: Vec<AuditRecord>,
    /// Head after the last append through this scope.
    pub(crate) head: Option<i64>,
}

impl AuditScope {
    /// A scope whose request record is `request` (`None`: only events are recorded,
    /// until [`AuditScope::set_request`]).
    pub fn new(hash: HashFn, request: Option<AuditRecord>) -> Arc<Self> {
        Arc::new(Self {
            hash,
            state: Mutex::new(ScopeState {
                request,
                ..ScopeState::default()
            }),
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The hash function.
    pub fn hash_fn(&self) -> HashFn {
        self.hash
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ScopeState> {
        // A poisoned lock only means another thread panicked mid-update; the state is
        // plain data and still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (or replaces) the request's record, unless it was committed already.
    pub fn set_request(&self, rec: AuditRecord) {
        let mut s = self.lock();
        if !s.committed {
            s.request = Some(rec);
        }
    }

    /// Edits the pending request record (e.g. to name the resource).
    pub fn update(&self, f: impl FnOnce(&mut AuditRecord)) {
        if let Some(r) = self.lock().request.as_mut() {
            f(r);
        }
    }

    /// A copy of the request record, committed or not.
    pub fn request(&self) -> Option<AuditRecord> {
        self.lock().request.clone()
    }

    /// Queues a security event; it commits with the next write of the scope or the
    /// final append.
    pub fn event(&self, rec: AuditRecord) {
        self.lock().events.push(rec);
    }

    /// Whether the request record has been committed with a write.
    pub fn committed(&self) -> bool {
        self.lock().committed
    }

    /// Whether an audit append of this scope failed (the operation was not performed).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The head after the last successful append through this scope.
    pub fn head(&self) -> Option<i64> {
        self.lock().head
    }

    /// Takes what is still pending for the final append: the request record (if not
    /// committed; `finish` sets its outcome) and the queued events.
    pub fn take_pending(&self, finish: impl FnOnce(&mut AuditRecord)) -> Vec<AuditRecord> {
        let mut s = self.lock();
        let mut out = std::mem::take(&mut s.events);
        if !s.committed
            && let Some(mut r) = s.request.take()
        {
            finish(&mut r);
            out.push(r);
        }
        out
    }

    pub(crate) fn restore(&self, request: Option<AuditRecord>, events: Vec<AuditRecord>) {
        let mut s = self.lock();
        if let Some(r) = request
            && !s.committed
        {
            s.request = Some(r);
        }
        let later = std::mem::replace(&mut s.events, events);
        s.events.extend(later);
    }
}

// ---- reads and standalone writes ----

/// Audit operations on the store.
#[allow(async_fn_in_trait)]
pub trait AuditStore {
    /// Appends records (not wrapped in any other write); returns the new head's seq.
    async fn append_audit(&self, records: Vec<AuditRecord>, hash: HashFn) -> StoreResult<i64>;
    /// The chain head: sequence number and hash (0 and zeros when empty).
    async fn audit_head(&self) -> StoreResult<(i64, Vec<u8>)>;
    /// Up to `limit` records after `after_seq`, in order (for verification and export).
    async fn audit_range(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRecord>>;
    /// Records matching a query, oldest first.
    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;
    /// Stores a checkpoint (false if one at that seq exists, or one that names the same
    /// predecessor).
    async fn insert_checkpoint(&self, cp: &AuditCheckpoint) -> StoreResult<bool>;
    /// How many checkpoints there are.
    async fn checkpoint_count(&self) -> StoreResult<i64>;
    /// Every checkpoint, oldest first.
    async fn checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>>;
    /// The latest checkpoint.
    async fn latest_checkpoint(&self) -> StoreResult<Option<AuditCheckpoint>>;
    /// Whether an audit record could be written now (a write that is rolled back).
    async fn audit_writable(&self) -> StoreResult<()>;
}

pub(crate) async fn head<C: Exec>(c: &mut C) -> StoreResult<(i64, Vec<u8>)> {
    let r = c
        .opt(HEAD, &[])
        .await?
        .ok_or_else(|| StoreError::Corrupt("audit head missing".into()))?;
    Ok((r.int(0)?, r.blob(1)?))
}

pub(crate) async fn range<C: Exec>(
    c: &mut C,
    after_seq: i64,
    limit: i64,
) -> StoreResult<Vec<AuditRecord>> {
    c.all(RANGE, args![after_seq, limit.max(0)])
        .await?
        .iter()
        .map(record)
        .collect()
}

pub(crate) async fn query<C: Exec>(c: &mut C, q: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
    let a = args![
        q.after_seq.unwrap_or(0),
        q.account_id.as_deref(),
        q.actor.as_deref(),
        q.action.as_deref(),
        q.since_ms,
        q.until_ms,
        q.limit.max(0)
    ];
    c.all(QUERY, a).await?.iter().map(record).collect()
}

pub(crate) async fn checkpoints<C: Exec>(c: &mut C) -> StoreResult<Vec<AuditCheckpoint>> {
    c.all(CHECKPOINTS, &[])
        .await?
        .iter()
        .map(checkpoint)
        .collect()
}

pub(crate) async fn latest_checkpoint<C: Exec>(c: &mut C) -> StoreResult<Option<AuditCheckpoint>> {
    c.opt(LATEST_CHECKPOINT, &[])
        .await?
        .as_ref()
        .map(checkpoint)
        .transpose()
}

pub(crate) async fn checkpoint_count<C: Exec>(c: &mut C) -> StoreResult<i64> {
    c.opt(COUNT_CHECKPOINTS, &[])
        .await?
        .map_or(Ok(0), |r| r.int(0))
}
