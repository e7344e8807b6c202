//! Gateway controls (docs/design/0003-gateway-controls.md): per-account settings (signed
//! requests required, IP allowlist, rate-limit override), per-key IP allowlists,
//! request-signing keys, the nonces signatures have used, and idempotency records.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::Controls`].

use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use crate::{ApiKeyRecord, EventRecord, StoreError, StoreResult};

/// Per-account gateway settings. A missing row reads as [`AccountControls::defaults`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountControls {
    /// The account.
    pub account_id: String,
    /// Every request must carry a valid RFC 9421 signature.
    pub require_signed_requests: bool,
    /// CIDRs requests may come from; empty means anywhere.
    pub ip_allowlist: Vec<String>,
    /// Operator override of the per-credential rate limit (requests per minute).
    pub rate_limit_per_minute: Option<i64>,
    /// The risk switch: `off`, `shadow` or `enforce`; `None` is the default.
    pub risk_mode: Option<String>,
    /// The account's IANA time zone; `None`: UTC.
    pub time_zone: Option<String>,
    /// The step-ups that need a device attestation (`card.reveal`, `pin.set`, …).
    pub require_attestation: Vec<String>,
    /// Last change.
    pub updated_ms: i64,
}

impl AccountControls {
    /// The settings of an account nobody has configured.
    pub fn defaults(account_id: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            require_signed_requests: false,
            ip_allowlist: Vec::new(),
            rate_limit_per_minute: None,
            risk_mode: None,
            time_zone: None,
            require_attestation: Vec::new(),
            updated_ms: 0,
        }
    }
}

/// A partial change of an account's settings, applied atomically; `None` keeps the
/// stored value (so concurrent changes of different settings never undo each other).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlsUpdate {
    /// The account.
    pub account_id: String,
    /// New `require_signed_requests`.
    pub require_signed_requests: Option<bool>,
    /// New IP allowlist.
    pub ip_allowlist: Option<Vec<String>>,
    /// New rate-limit override.
    pub rate_limit_per_minute: Option<i64>,
    /// New risk switch.
    pub risk_mode: Option<String>,
    /// New time zone.
    pub time_zone: Option<String>,
    /// New list of the step-ups that need an attestation.
    pub require_attestation: Option<Vec<String>>,
    /// Now.
    pub now_ms: i64,
    /// Events that announce the change, in the same transaction.
    pub events: Vec<EventRecord>,
}

/// An Ed25519 public key an account signs requests with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// `sigk_…`: the `keyid` of signatures.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The raw 32-byte public key.
    pub public_key: Vec<u8>,
    /// Registered at.
    pub created_ms: i64,
    /// Revoked at; a revoked key verifies nothing.
    pub revoked_ms: Option<i64>,
}

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of what identifies the request (method, route, body).
    pub request_hash: Vec<u8>,
    /// `None` while the first request is still running.
    pub response: Option<(i64, Vec<u8>)>,
}

/// What [`crate::Writes::idempotency_begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No live record: this request now holds the key (state in progress).
    Started,
    /// A live record exists.
    Existing(IdempotencyRecord),
}

/// A new idempotency claim.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// Account id (or admin key id) the key belongs to.
    pub scope: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// See [`IdempotencyRecord::request_hash`].
    pub request_hash: Vec<u8>,
    /// Now.
    pub now_ms: i64,
    /// When the record may be forgotten.
    pub expires_ms: i64,
    /// An in-progress record created before this is abandoned (its node died) and
    /// may be taken over.
    pub stale_before_ms: i64,
    /// Also delete every expired record (callers do this now and then, not on every
    /// request: concurrent bulk deletes contend on PostgreSQL).
    pub purge_expired: bool,
}

/// An API key with what the gateway checks before every request made with it, read in
/// one statement: for deployments that cache none of it (several nodes sharing a
/// database, where another node's change must hold on the next request).
#[derive(Debug, Clone)]
pub struct KeyWithControls {
    /// The key.
    pub key: ApiKeyRecord,
    /// Its account's controls (defaults when never set); `None` for a key without an
    /// account (admin keys).
    pub controls: Option<AccountControls>,
    /// The key's own IP allowlist (empty: none).
    pub key_allowlist: Vec<String>,
}

/// The controls' storage operations.
#[allow(async_fn_in_trait)]
pub trait ControlStore: Send + Sync {
    /// The account's settings (defaults if never set).
    async fn account_controls(&self, account_id: &str) -> StoreResult<AccountControls>;
    /// The IP allowlist of one API key (empty: none).
    async fn key_ip_allowlist(&self, key_id: &str) -> StoreResult<Vec<String>>;
    /// The API key with this digest, its account's controls and its allowlist, in one
    /// read.
    async fn key_with_controls(&self, digest: &[u8]) -> StoreResult<Option<KeyWithControls>>;

    /// One signing key of the account.
    async fn signing_key(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<SigningKeyRecord>>;
    /// The account's signing keys, oldest first: at most `limit`, after the key
    /// `starting_after` (an id) if given.
    async fn list_signing_keys(
        &self,
        account_id: &str,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SigningKeyRecord>>;
}

// ---- SQL ----

const GET_CONTROLS: &str = "SELECT account_id, require_signed_requests, ip_allowlist, \
     rate_limit_per_minute, updated_ms, risk_mode, time_zone, require_attestation \
     FROM account_controls WHERE account_id = $1";
const UPSERT_CONTROLS: &str = "INSERT INTO account_controls (account_id, \
     require_signed_requests, ip_allowlist, rate_limit_per_minute, updated_ms, risk_mode, \
     time_zone, require_attestation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (account_id) DO UPDATE SET \
     require_signed_requests = excluded.require_signed_requests, \
     ip_allowlist = excluded.ip_allowlist, \
     rate_limit_per_minute = excluded.rate_limit_per_minute, updated_ms = excluded.updated_ms, \
     risk_mode = excluded.risk_mode, time_zone = excluded.time_zone, \
     require_attestation = excluded.require_attestation";
const UPDATE_CONTROLS: &str = "INSERT INTO account_controls (account_id, \
     require_signed_requests, ip_allowlist, rate_limit_per_minute, updated_ms, risk_mode, \
     time_zone, require_attestation) \
     VALUES ($1, COALESCE($2, 0), COALESCE($3, ''), $4, $5, $6, $7, $8) \
     ON CONFLICT (account_id) DO UPDATE SET \
     require_signed_requests = COALESCE($2, account_controls.require_signed_requests), \
     ip_allowlist = COALESCE($3, account_controls.ip_allowlist), \
     rate_limit_per_minute = COALESCE($4, account_controls.rate_limit_per_minute), \
     updated_ms = $5, risk_mode = COALESCE($6, account_controls.risk_mode), \
     time_zone = COALESCE($7, account_controls.time_zone), \
     require_attestation = COALESCE($8, account_controls.require_attestation) \
     RETURNING account_id, require_signed_requests, ip_allowlist, rate_limit_per_minute, \
     updated_ms, risk_mode, time_zone, require_attestation";
const GET_KEY_ALLOWLIST: &str = "SELECT ip_allowlist FROM api_key_controls WHERE key_id = $1";
const UPSERT_KEY_ALLOWLIST: &str = "INSERT INTO api_key_controls (key_id, ip_allowlist) \
     VALUES ($1, $2) ON CONFLICT (key_id) DO UPDATE SET ip_allowlist = excluded.ip_allowlist";

macro_rules! signing_key_cols {
    () => {
        "id, account_id, public_key, created_ms, revoked_ms"
    };
}
const INSERT_SIGNING_KEY: &str = concat!(
    "INSERT INTO signing_keys (",
    signing_key_cols!(),
    ") VALUES ($1, $2, $3, $4, $5)"
);
const GET_SIGNING_KEY: &str = concat!(
    "SELECT ",
    signing_key_cols!(),
    " FROM signing_keys WHERE account_id = $1 AND id = $2"
);
const LIST_SIGNING_KEYS: &str = concat!(
    "SELECT ",
    signing_key_cols!(),
    " FROM signing_keys WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
);
const COUNT_SIGNING_KEYS: &str =
    "SELECT COUNT(*) FROM signing_keys WHERE account_id = $1 AND revoked_ms IS NULL";
const REVOKE_SIGNING_KEY: &str = concat!(
    "UPDATE signing_keys SET revoked_ms = COALESCE(revoked_ms, $3) \
     WHERE account_id = $1 AND id = $2 RETURNING ",
    signing_key_cols!()
);

const PURGE_NONCES: &str = "DELETE FROM signature_nonces WHERE expires_ms <= $1";
const EXPIRE_NONCE: &str =
    "DELETE FROM signature_nonces WHERE key_id = $1 AND nonce = $2 AND expires_ms <= $3";
const INSERT_NONCE: &str = "INSERT INTO signature_nonces (key_id, nonce, expires_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (key_id, nonce) DO NOTHING";

const PURGE_IDEM: &str = "DELETE FROM idempotency_keys WHERE expires_ms <= $1";
// This key's record if it expired, or if it is a claim abandoned by a dead node.
const RELEASE_STALE_IDEM: &str = "DELETE FROM idempotency_keys WHERE scope = $1 \
     AND idem_key = $2 AND (expires_ms <= $4 OR (state = 'in_progress' AND created_ms <= $3))";
const INSERT_IDEM: &str = "INSERT INTO idempotency_keys (scope, idem_key, request_hash, state, \
     status, body, created_ms, expires_ms) VALUES ($1, $2, $3, 'in_progress', NULL, NULL, $4, $5) \
     ON CONFLICT (scope, idem_key) DO NOTHING";
const GET_IDEM: &str = "SELECT request_hash, state, status, body FROM idempotency_keys \
     WHERE scope = $1 AND idem_key = $2";
const FINISH_IDEM: &str = "UPDATE idempotency_keys SET state = 'done', status = $3, body = $4 \
     WHERE scope = $1 AND idem_key = $2 AND state = 'in_progress'";
const ABORT_IDEM: &str = "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 \
     AND state = 'in_progress'";

/// CIDR lists are stored space-separated (CIDRs contain no spaces).
pub(crate) fn join_cidrs(cidrs: &[String]) -> String {
    cidrs.join(" ")
}

fn split_cidrs(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_owned).collect()
}

impl FromRow for AccountControls {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            account_id: r.text(0)?,
            require_signed_requests: r.int(1)? != 0,
            ip_allowlist: split_cidrs(&r.text(2)?),
            rate_limit_per_minute: r.opt_int(3)?,
            updated_ms: r.int(4)?,
            risk_mode: r.opt_text(5)?,
            time_zone: r.opt_text(6)?,
            require_attestation: split_cidrs(&r.opt_text(7)?.unwrap_or_default()),
        })
    }
}

impl FromRow for SigningKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            public_key: r.blob(2)?,
            created_ms: r.int(3)?,
            revoked_ms: r.opt_int(4)?,
        })
    }
}

// ---- reads ----

pub(crate) async fn account_controls<C: Exec>(
    c: &mut C,
    account_id: &str,
) -> StoreResult<AccountControls> {
    Ok(sql::one(c, GET_CONTROLS, args![account_id])
        .await?
        .unwrap_or_else(|| AccountControls::defaults(account_id)))
}

/// A row read from column `.1` on: lets the `FromRow` decoders read a joined row.
struct At<'r, R>(&'r R, usize);

impl<R: RowGet> RowGet for At<'_, R> {
    fn text(&self, i: usize) -> StoreResult<String> {
        self.0.text(self.1 + i)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        self.0.opt_text(self.1 + i)
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        self.0.int(self.1 + i)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        self.0.opt_int(self.1 + i)
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        self.0.blob(self.1 + i)
    }
    fn opt_blob(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        self.0.opt_blob(self.1 + i)
    }
}

pub(crate) async fn key_with_controls<C: Exec>(
    c: &mut C,
    digest: &[u8],
) -> StoreResult<Option<KeyWithControls>> {
    let Some(r) = c.opt(sql::KEY_WITH_CONTROLS, args![digest]).await? else {
        return Ok(None);
    };
    let key = ApiKeyRecord::from_row(&r)?;
    let at = sql::API_KEY_COLS;
    let controls = match (&key.account_id, r.opt_text(at)?) {
        (None, _) => None,
        (Some(_), Some(_)) => Some(AccountControls::from_row(&At(&r, at))?),
        (Some(account), None) => Some(AccountControls::defaults(account)),
    };
    // After the eight columns of the account's controls (GET_CONTROLS's order).
    let key_allowlist = r
        .opt_text(at + 8)?
        .map(|s| split_cidrs(&s))
        .unwrap_or_default();
    Ok(Some(KeyWithControls {
        key,
        controls,
        key_allowlist,
    }))
}

pub(crate) async fn key_ip_allowlist<C: Exec>(c: &mut C, key_id: &str) -> StoreResult<Vec<String>> {
    match c.opt(GET_KEY_ALLOWLIST, args![key_id]).await? {
        Some(r) => Ok(split_cidrs(&r.text(0)?)),
        None => Ok(Vec::new()),
    }
}

pub(crate) async fn signing_key<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<SigningKeyRecord>> {
    sql::one(c, GET_SIGNING_KEY, args![account_id, id]).await
}

pub(crate) async fn list_signing_keys<C: Exec>(
    c: &mut C,
    account_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<SigningKeyRecord>> {
    let a = args![account_id, starting_after, limit.max(0)];
    sql::many(c, LIST_SIGNING_KEYS, a).await
}

// ---- writes ----

/// A controls write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    SetControls(AccountControls),
    UpdateControls(ControlsUpdate),
    SetKeyAllowlist {
        key_id: String,
        cidrs: String,
    },
    InsertSigningKey {
        key: SigningKeyRecord,
        max: Option<i64>,
        events: Vec<EventRecord>,
    },
    RevokeSigningKey {
        account_id: String,
        id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    },
    UseNonce {
        key_id: String,
        nonce: String,
        now_ms: i64,
        expires_ms: i64,
        purge: bool,
    },
    IdemBegin(IdempotencyClaim),
    IdemFinish {
        scope: String,
        key: String,
        status: i64,
        body: Vec<u8>,
    },
    IdemAbort {
        scope: String,
        key: String,
    },
}

/// What an [`Op`] returns.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Flag(bool),
    Controls(AccountControls),
    SigningKey(Option<SigningKeyRecord>),
    Idem(IdempotencyBegin),
}

pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Reply> {
    let reply = match op {
        Op::SetControls(a) => {
            let cidrs = join_cidrs(&a.ip_allowlist);
            let attest = a.require_attestation.join(" ");
            let a = args![
                &a.account_id,
                i64::from(a.require_signed_requests),
                &cidrs,
                a.rate_limit_per_minute,
                a.updated_ms,
                a.risk_mode.as_deref(),
                a.time_zone.as_deref(),
                &attest
            ];
            c.exec(UPSERT_CONTROLS, a).await?;
            Reply::Done
        }
        Op::UpdateControls(u) => {
            let cidrs = u.ip_allowlist.as_deref().map(join_cidrs);
            let attest = u.require_attestation.as_ref().map(|l| l.join(" "));
            let a = args![
                &u.account_id,
                u.require_signed_requests.map(i64::from),
                cidrs.as_deref(),
                u.rate_limit_per_minute,
                u.now_ms,
                u.risk_mode.as_deref(),
                u.time_zone.as_deref(),
                attest.as_deref()
            ];
            let row = sql::one(c, UPDATE_CONTROLS, a)
                .await?
                .ok_or(StoreError::Conflict("account settings not written"))?;
            sql::insert_events(c, &u.events).await?;
            Reply::Controls(row)
        }
        Op::SetKeyAllowlist { key_id, cidrs } => {
            c.exec(UPSERT_KEY_ALLOWLIST, args![key_id, cidrs]).await?;
            Reply::Done
        }
        Op::InsertSigningKey {
            key: k,
            max,
            events,
        } => {
            // Inside the writer's transaction (on PostgreSQL every batch first locks the
            // audit head, so batches of all nodes run one at a time): no other insert can
            // come between this count and the insert.
            if let Some(max) = max {
                let n = match c.opt(COUNT_SIGNING_KEYS, args![&k.account_id]).await? {
                    Some(row) => row.int(0)?,
                    None => 0,
                };
                if n >= *max {
                    return Ok(Reply::Flag(false));
                }
            }
            let a = args![
                &k.id,
                &k.account_id,
                &k.public_key,
                k.created_ms,
                k.revoked_ms
            ];
            c.exec(INSERT_SIGNING_KEY, a).await?;
            sql::insert_events(c, events).await?;
            Reply::Flag(true)
        }
        Op::RevokeSigningKey {
            account_id,
            id,
            now_ms,
            events,
        } => {
            let key: Option<SigningKeyRecord> =
                sql::one(c, REVOKE_SIGNING_KEY, args![account_id, id, *now_ms]).await?;
            if key.is_some() {
                sql::insert_events(c, events).await?;
            }
            Reply::SigningKey(key)
        }
        Op::UseNonce {
            key_id,
            nonce,
            now_ms,
            expires_ms,
            purge,
        } => {
            if *purge {
                c.exec(PURGE_NONCES, args![*now_ms]).await?;
            }
            c.exec(EXPIRE_NONCE, args![key_id, nonce, *now_ms]).await?;
            let n = c
                .exec(INSERT_NONCE, args![key_id, nonce, *expires_ms])
                .await?;
            Reply::Flag(n == 1)
        }
        Op::IdemBegin(cl) => {
            if cl.purge_expired {
                c.exec(PURGE_IDEM, args![cl.now_ms]).await?;
            }
            c.exec(
                RELEASE_STALE_IDEM,
                args![&cl.scope, &cl.key, cl.stale_before_ms, cl.now_ms],
            )
            .await?;
            let a = args![
                &cl.scope,
                &cl.key,
                &cl.request_hash,
                cl.now_ms,
                cl.expires_ms
            ];
            if c.exec(INSERT_IDEM, a).await? == 1 {
                Reply::Idem(IdempotencyBegin::Started)
            } else {
                let row = c
                    .opt(GET_IDEM, args![&cl.scope, &cl.key])
                    .await?
                    .ok_or(StoreError::Conflict("idempotency record changed; retry"))?;
                let done = row.text(1)? == "done";
                let response = if done {
                    Some((row.opt_int(2)?.unwrap_or(500), row.blob(3)?))
                } else {
                    None
                };
                Reply::Idem(IdempotencyBegin::Existing(IdempotencyRecord {
                    request_hash: row.blob(0)?,
                    response,
                }))
            }
        }
        Op::IdemFinish {
            scope,
            key,
            status,
            body,
        } => {
            c.exec(FINISH_IDEM, args![scope, key, *status, body])
                .await?;
            Reply::Done
        }
        Op::IdemAbort { scope, key } => {
            c.exec(ABORT_IDEM, args![scope, key]).await?;
            Reply::Done
        }
    };
    Ok(reply)
}
