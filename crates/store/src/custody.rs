//! What the vault keeps of its root key (docs/key-custody.md): the provider, a verifier
//! and, for a sealed start, the Shamir parameters and one digest per share. Never the key
//! and never a share. Also the key-age notices already sent. Writes go through the one writer as [`crate::sql::WriteOp::Custody`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};

/// Length of a verifier and of a share digest.
pub const DIGEST_LEN: usize = 32;

/// One generation of the root key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// After the first generation: the digest key, wrapped under this root key.
    pub digest_wrapped: Option<Vec<u8>>,
    /// While a rotation to this generation runs: its root key wrapped under the one in
    /// force. A row with it is pending, not in force.
    pub transit: Option<Vec<u8>>,
}

/// A kind of key the root key wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WrappedKind {
    /// A data key: `id` the account, `sub` the purpose, `version` its version.
    DataKey,
    /// A JWT signing key: `id` the kid, `sub` the algorithm, `version` the generation.
    JwtKey,
    /// A PIN transport key: `id` the kid.
    PinTransportKey,
    /// A webhook endpoint's signing secret: `id` the endpoint, `version` the secret's.
    WebhookSecret,
    /// A webhook endpoint's previous secret during its overlap.
    WebhookOldSecret,
    /// An `otp.created` event's sealed code: `id` the event; the value is the event's
    /// data (JSON), which holds the code wrapped under the root key.
    OtpEvent,
    /// A key made by a dual-control import: `id` the key.
    ImportedKey,
    /// The XOR so far of an unfinished import's components: `id` the import.
    KeyImportPartial,
}

impl WrappedKind {
    /// Every kind, in the order a rotation moves them.
    pub const ALL: [Self; 8] = [
        Self::DataKey,
        Self::JwtKey,
        Self::PinTransportKey,
        Self::WebhookSecret,
        Self::WebhookOldSecret,
        Self::OtpEvent,
        Self::ImportedKey,
        Self::KeyImportPartial,
    ];

    /// Its name in progress reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataKey => "data_keys",
            Self::JwtKey => "jwt_signing_keys",
            Self::PinTransportKey => "pin_transport_keys",
            Self::WebhookSecret => "webhook_secrets",
            Self::WebhookOldSecret => "webhook_previous_secrets",
            Self::OtpEvent => "otp_codes",
            Self::ImportedKey => "imported_keys",
            Self::KeyImportPartial => "key_import_partials",
        }
    }
}

/// One stored value wrapped under the root key, and what names it (and so its wrap
/// context). Also the cursor of [`CustodyStore::wrapped_keys`]: the next page starts
/// after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrappedKey {
    /// See [`WrappedKind`].
    pub id: String,
    /// See [`WrappedKind`]; empty where the kind has none.
    pub sub: String,
    /// See [`WrappedKind`]; 0 where the kind has none.
    pub version: i64,
    /// The stored value.
    pub wrapped: Vec<u8>,
}

/// A page of [`CustodyStore::wrapped_keys`].
#[derive(Debug, Clone, Copy)]
pub struct WrappedQuery<'a> {
    /// Which kind.
    pub kind: WrappedKind,
    /// The last of the previous page (`None` for the first).
    pub after: Option<&'a WrappedKey>,
    /// The page size.
    pub limit: i64,
    /// [`WrappedKind::OtpEvent`] only: events made before this are not read (their codes
    /// have expired).
    pub since_ms: i64,
}

/// The root key's storage reads.
#[allow(async_fn_in_trait)]
pub trait CustodyStore: Send + Sync {
    /// The root key in force; `None` before the vault is initialised.
    async fn root_key(&self) -> StoreResult<Option<RootKeyRecord>>;

    /// The generation a rotation is moving to, while one runs.
    async fn pending_root_key(&self) -> StoreResult<Option<RootKeyRecord>>;

    /// A page of the values of one kind that the root key wraps, in key order.
    async fn wrapped_keys(&self, q: WrappedQuery<'_>) -> StoreResult<Vec<WrappedKey>>;
}

const CURRENT: &str = "SELECT generation, provider, verifier, threshold, shares, share_digests, \
     created_ms, wrapped_root, digest_wrapped, transit FROM root_key \
     WHERE retired_ms IS NULL AND transit IS NULL ORDER BY generation DESC LIMIT 1";
const PENDING: &str = "SELECT generation, provider, verifier, threshold, shares, share_digests, \
     created_ms, wrapped_root, digest_wrapped, transit FROM root_key \
     WHERE retired_ms IS NULL AND transit IS NOT NULL ORDER BY generation DESC LIMIT 1";
/// The first generation, unless one exists.
const INIT: &str = "INSERT INTO root_key \
     (generation, provider, verifier, threshold, shares, share_digests, created_ms, wrapped_root, \
     digest_wrapped, transit) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
     WHERE NOT EXISTS (SELECT 1 FROM root_key) ON CONFLICT (generation) DO NOTHING";
/// The next generation, pending: only one more than the newest, and only while no
/// other rotation runs (one re-wrapper at a time, across nodes).
const BEGIN: &str = "INSERT INTO root_key \
     (generation, provider, verifier, threshold, shares, share_digests, created_ms, wrapped_root, \
     digest_wrapped, transit) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
     WHERE NOT EXISTS (SELECT 1 FROM root_key WHERE transit IS NOT NULL AND retired_ms IS NULL) \
     AND $1 = (SELECT MAX(generation) FROM root_key) + 1 ON CONFLICT (generation) DO NOTHING";
/// The end of a rotation, in one transaction: every older generation is retired and
/// forgets all it held but its verifier...
const RETIRE: &str = "UPDATE root_key SET retired_ms = $2, share_digests = NULL, \
     wrapped_root = NULL, digest_wrapped = NULL, transit = NULL \
     WHERE generation < $1 AND retired_ms IS NULL";
/// ...and the pending one is in force.
const ACTIVATE: &str =
    "UPDATE root_key SET transit = NULL WHERE generation = $1 AND transit IS NOT NULL";
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
            digest_wrapped: r.opt_blob(8)?,
            transit: r.opt_blob(9)?,
        })
    }
}

pub(crate) async fn current<C: Exec>(c: &mut C) -> StoreResult<Option<RootKeyRecord>> {
    sql::one(c, CURRENT, &[]).await
}

pub(crate) async fn pending<C: Exec>(c: &mut C) -> StoreResult<Option<RootKeyRecord>> {
    sql::one(c, PENDING, &[]).await
}

const DATA_KEYS: &str = "SELECT account_id, purpose, version, wrapped FROM data_keys \
     WHERE (account_id, purpose, version) > ($1, $2, $3) \
     ORDER BY account_id, purpose, version LIMIT $4";
const JWT_KEYS: &str = "SELECT kid, alg, generation, wrapped FROM jwt_keys \
     WHERE kid > $1 AND length(wrapped) > 0 ORDER BY kid LIMIT $2";
const PIN_KEYS: &str = "SELECT kid, '', CAST(0 AS BIGINT), wrapped FROM pin_transport_keys \
     WHERE kid > $1 ORDER BY kid LIMIT $2";
const WEBHOOK_SECRETS: &str = "SELECT id, '', secret_version, secret_wrapped \
     FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2";
const WEBHOOK_OLD: &str = "SELECT id, '', old_version, old_wrapped FROM webhook_endpoints \
     WHERE id > $1 AND old_wrapped IS NOT NULL AND old_version IS NOT NULL ORDER BY id LIMIT $2";
const IMPORTED_KEYS: &str = "SELECT id, '', CAST(0 AS BIGINT), wrapped FROM imported_keys \
     WHERE id > $1 ORDER BY id LIMIT $2";
const IMPORT_PARTIALS: &str = "SELECT id, '', CAST(0 AS BIGINT), partial FROM key_imports \
     WHERE id > $1 AND partial IS NOT NULL ORDER BY id LIMIT $2";
const OTP_EVENTS: &str = "SELECT id, '', CAST(0 AS BIGINT), data FROM events \
     WHERE id > $1 AND event_type = 'otp.created' AND created_ms >= $3 ORDER BY id LIMIT $2";

impl FromRow for WrappedKey {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            sub: r.text(1)?,
            version: r.int(2)?,
            wrapped: r.blob(3)?,
        })
    }
}

/// An event's data is text: read as such, carried as its bytes.
struct EventData(WrappedKey);

impl FromRow for EventData {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self(WrappedKey {
            id: r.text(0)?,
            sub: String::new(),
            version: 0,
            wrapped: r.text(3)?.into_bytes(),
        }))
    }
}

pub(crate) async fn wrapped_keys<C: Exec>(
    c: &mut C,
    q: WrappedQuery<'_>,
) -> StoreResult<Vec<WrappedKey>> {
    let start = WrappedKey {
        version: i64::MIN,
        ..WrappedKey::default()
    };
    let after = q.after.unwrap_or(&start);
    let id = after.id.as_str();
    match q.kind {
        WrappedKind::DataKey => {
            let a = args![id, after.sub.as_str(), after.version, q.limit];
            sql::many(c, DATA_KEYS, a).await
        }
        WrappedKind::JwtKey => sql::many(c, JWT_KEYS, args![id, q.limit]).await,
        WrappedKind::PinTransportKey => sql::many(c, PIN_KEYS, args![id, q.limit]).await,
        WrappedKind::WebhookSecret => sql::many(c, WEBHOOK_SECRETS, args![id, q.limit]).await,
        WrappedKind::WebhookOldSecret => sql::many(c, WEBHOOK_OLD, args![id, q.limit]).await,
        WrappedKind::ImportedKey => sql::many(c, IMPORTED_KEYS, args![id, q.limit]).await,
        WrappedKind::KeyImportPartial => sql::many(c, IMPORT_PARTIALS, args![id, q.limit]).await,
        WrappedKind::OtpEvent => {
            let rows: Vec<EventData> =
                sql::many(c, OTP_EVENTS, args![id, q.limit, q.since_ms]).await?;
            Ok(rows.into_iter().map(|e| e.0).collect())
        }
    }
}

/// Each re-wrap is written only if the stored value is still the one read: a value
/// changed meanwhile (a webhook secret rotated, a JWT key emptied) was written under
/// the key in force already, or is picked up by the next pass.
const REWRAP_DATA_KEY: &str = "UPDATE data_keys SET wrapped = $1 \
     WHERE account_id = $2 AND purpose = $3 AND version = $4 AND wrapped = $5";
const REWRAP_JWT_KEY: &str = "UPDATE jwt_keys SET wrapped = $1 WHERE kid = $2 AND wrapped = $3";
const REWRAP_PIN_KEY: &str =
    "UPDATE pin_transport_keys SET wrapped = $1 WHERE kid = $2 AND wrapped = $3";
const REWRAP_WEBHOOK: &str = "UPDATE webhook_endpoints SET secret_wrapped = $1 \
     WHERE id = $2 AND secret_version = $3 AND secret_wrapped = $4";
const REWRAP_WEBHOOK_OLD: &str = "UPDATE webhook_endpoints SET old_wrapped = $1 \
     WHERE id = $2 AND old_version = $3 AND old_wrapped = $4";
const REWRAP_IMPORTED_KEY: &str =
    "UPDATE imported_keys SET wrapped = $1 WHERE id = $2 AND wrapped = $3";
const REWRAP_IMPORT_PARTIAL: &str =
    "UPDATE key_imports SET partial = $1 WHERE id = $2 AND partial = $3";
const REWRAP_OTP_EVENT: &str = "UPDATE events SET data = $1 WHERE id = $2 AND data = $3";

async fn rewrap_one<C: Exec>(
    c: &mut C,
    kind: WrappedKind,
    old: &WrappedKey,
    new: &[u8],
) -> StoreResult<u64> {
    let (id, was) = (old.id.as_str(), old.wrapped.as_slice());
    match kind {
        WrappedKind::DataKey => {
            let a = args![new, id, old.sub.as_str(), old.version, was];
            c.exec(REWRAP_DATA_KEY, a).await
        }
        WrappedKind::JwtKey => c.exec(REWRAP_JWT_KEY, args![new, id, was]).await,
        WrappedKind::PinTransportKey => c.exec(REWRAP_PIN_KEY, args![new, id, was]).await,
        WrappedKind::WebhookSecret => {
            c.exec(REWRAP_WEBHOOK, args![new, id, old.version, was])
                .await
        }
        WrappedKind::WebhookOldSecret => {
            c.exec(REWRAP_WEBHOOK_OLD, args![new, id, old.version, was])
                .await
        }
        WrappedKind::ImportedKey => c.exec(REWRAP_IMPORTED_KEY, args![new, id, was]).await,
        WrappedKind::KeyImportPartial => c.exec(REWRAP_IMPORT_PARTIAL, args![new, id, was]).await,
        WrappedKind::OtpEvent => {
            let (Ok(new), Ok(was)) = (std::str::from_utf8(new), std::str::from_utf8(was)) else {
                return Ok(0);
            };
            c.exec(REWRAP_OTP_EVENT, args![new, id, was]).await
        }
    }
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
    /// Records the pending generation of a rotation, unless another rotation runs.
    BeginRotation(RootKeyRecord),
    /// Moves wrapped values of one kind under the next root key: (as read, new value).
    Rewrap {
        kind: WrappedKind,
        updates: Vec<(WrappedKey, Vec<u8>)>,
    },
    /// Puts `generation` in force and retires every one before it.
    FinishRotation { generation: i64, now_ms: i64 },
}

fn digests(r: &RootKeyRecord) -> Option<Vec<u8>> {
    (!r.share_digests.is_empty()).then(|| r.share_digests.concat())
}

fn insert_args<'a>(r: &'a RootKeyRecord, digests: Option<&'a [u8]>) -> [crate::exec::Arg<'a>; 10] {
    use crate::exec::Arg;
    [
        Arg::from(r.generation),
        Arg::from(r.provider.as_str()),
        Arg::from(r.verifier.as_slice()),
        Arg::from(r.threshold),
        Arg::from(r.shares),
        Arg::from(digests),
        Arg::from(r.created_ms),
        Arg::from(r.wrapped_root.as_deref()),
        Arg::from(r.digest_wrapped.as_deref()),
        Arg::from(r.transit.as_deref()),
    ]
}

/// Applies `op`: how many rows (or values) it changed.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<u64> {
    match op {
        Op::Notice {
            key_ref,
            notice,
            now_ms,
            events,
        } => {
            let first = c.exec(NOTICE, args![key_ref, notice, *now_ms]).await?;
            if first == 1 {
                sql::insert_events(c, events).await?;
            }
            Ok(first)
        }
        Op::Init(r) => {
            let d = digests(r);
            c.exec(INIT, &insert_args(r, d.as_deref())).await
        }
        Op::BeginRotation(r) => {
            let d = digests(r);
            c.exec(BEGIN, &insert_args(r, d.as_deref())).await
        }
        Op::Rewrap { kind, updates } => {
            let mut n = 0;
            for (old, new) in updates {
                n += rewrap_one(c, *kind, old, new).await?;
            }
            Ok(n)
        }
        Op::FinishRotation { generation, now_ms } => {
            c.exec(RETIRE, args![*generation, *now_ms]).await?;
            c.exec(ACTIVATE, args![*generation]).await
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
            c.exec(REKEY, a).await
        }
    }
}
