//! Device integrity (docs/device-integrity.md): the applications whose Play Integrity
//! tokens an account accepts, the single-use challenges (`hash`) handed to them, kept only
//! as digests, and the attestations good tokens earn.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::Integrity`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};

/// An application an account accepts attestations from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityAppRecord {
    /// `iapp_…`
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The Android package name.
    pub application_id: String,
    /// The token decryption key (AES-256), wrapped by the root key.
    pub decryption_key: Vec<u8>,
    /// The token verification key (P-256, DER), wrapped by the root key.
    pub verification_key: Vec<u8>,
    /// SHA-256 digests of the signing certificates accepted, lowercase hex.
    pub allowed_certificates: Vec<String>,
    /// The lowest `versionCode` accepted.
    pub min_version_code: Option<i64>,
    /// Device verdicts a token must carry, each.
    pub required_device_verdicts: Vec<String>,
    /// Whether the app must be `LICENSED`.
    pub require_licensed: bool,
    /// How old a token may be, seconds.
    pub max_token_age_s: i64,
    /// How long an attestation lasts, seconds.
    pub attestation_ttl_s: i64,
    /// Whether an attestation may be used more than once before it expires.
    pub reusable_attestations: bool,
    /// Registered at.
    pub created_ms: i64,
    /// Last changed at.
    pub updated_ms: i64,
}

/// A challenge handed out by `GET /v1/integrity/app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// SHA-256 of the challenge; the challenge itself is never stored.
    pub digest: Vec<u8>,
    /// The account.
    pub account_id: String,
    /// The caller it was handed to (the API key's id).
    pub subject: String,
    /// The application it is for.
    pub application_id: String,
    /// When it stops being accepted.
    pub expires_ms: i64,
}

/// An attestation: a verified token's outcome, for step-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationRecord {
    /// `att_…`
    pub id: String,
    /// The account.
    pub account_id: String,
    /// The caller it was earned by (the API key's id).
    pub subject: String,
    /// The application.
    pub application_id: String,
    /// Whether it may be used more than once.
    pub reusable: bool,
    /// Earned at.
    pub created_ms: i64,
    /// Expires at.
    pub expires_ms: i64,
}

/// The integrity storage reads.
#[allow(async_fn_in_trait)]
pub trait IntegrityStore: Send + Sync {
    /// The account's application registered as `application_id`.
    async fn integrity_app(
        &self,
        account_id: &str,
        application_id: &str,
    ) -> StoreResult<Option<IntegrityAppRecord>>;
    /// The account's applications, oldest id first.
    async fn integrity_apps(&self, account_id: &str) -> StoreResult<Vec<IntegrityAppRecord>>;
}

macro_rules! app_cols {
    () => {
        "id, account_id, application_id, decryption_key, verification_key, \
         allowed_certificates, min_version_code, required_device_verdicts, require_licensed, \
         max_token_age_s, attestation_ttl_s, reusable_attestations, created_ms, updated_ms"
    };
}
const GET_APP: &str = concat!(
    "SELECT ",
    app_cols!(),
    " FROM integrity_apps WHERE account_id = $1 AND application_id = $2"
);
const LIST_APPS: &str = concat!(
    "SELECT ",
    app_cols!(),
    " FROM integrity_apps WHERE account_id = $1 ORDER BY id"
);
const INSERT_APP: &str = concat!(
    "INSERT INTO integrity_apps (",
    app_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);
// The same arguments as INSERT_APP: the row is the one with that id, account,
// application and creation time.
const UPDATE_APP: &str = "UPDATE integrity_apps SET decryption_key = $4, verification_key = $5, \
     allowed_certificates = $6, min_version_code = $7, required_device_verdicts = $8, \
     require_licensed = $9, max_token_age_s = $10, attestation_ttl_s = $11, \
     reusable_attestations = $12, updated_ms = $14 \
     WHERE id = $1 AND account_id = $2 AND application_id = $3 AND created_ms = $13";
const DELETE_APP: &str = "DELETE FROM integrity_apps WHERE account_id = $1 AND id = $2";
const PURGE_CHALLENGES: &str = "DELETE FROM integrity_challenges WHERE expires_ms <= $1";
const INSERT_CHALLENGE: &str = "INSERT INTO integrity_challenges (digest, account_id, subject, \
     application_id, expires_ms) VALUES ($1, $2, $3, $4, $5)";
const CONSUME_CHALLENGE: &str = "DELETE FROM integrity_challenges WHERE digest = $1 \
     AND account_id = $2 AND subject = $3 AND application_id = $4 AND expires_ms > $5";
const PURGE_ATTESTATIONS: &str = "DELETE FROM attestations WHERE expires_ms <= $1";
const INSERT_ATTESTATION: &str = "INSERT INTO attestations (id, account_id, subject, \
     application_id, reusable, created_ms, expires_ms, used_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)";
const USE_ATTESTATION: &str = "UPDATE attestations SET used_ms = $4 WHERE id = $1 \
     AND account_id = $2 AND subject = $3 AND expires_ms > $4 \
     AND (used_ms IS NULL OR reusable = 1) AND ($5 IS NULL OR application_id = $5)";

/// Lists are stored space-separated (their items contain no spaces).
fn split(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_owned).collect()
}

impl FromRow for IntegrityAppRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            application_id: r.text(2)?,
            decryption_key: r.blob(3)?,
            verification_key: r.blob(4)?,
            allowed_certificates: split(&r.text(5)?),
            min_version_code: r.opt_int(6)?,
            required_device_verdicts: split(&r.text(7)?),
            require_licensed: r.int(8)? != 0,
            max_token_age_s: r.int(9)?,
            attestation_ttl_s: r.int(10)?,
            reusable_attestations: r.int(11)? != 0,
            created_ms: r.int(12)?,
            updated_ms: r.int(13)?,
        })
    }
}

pub(crate) async fn integrity_app<C: Exec>(
    c: &mut C,
    account_id: &str,
    application_id: &str,
) -> StoreResult<Option<IntegrityAppRecord>> {
    sql::one(c, GET_APP, args![account_id, application_id]).await
}

pub(crate) async fn integrity_apps<C: Exec>(
    c: &mut C,
    account_id: &str,
) -> StoreResult<Vec<IntegrityAppRecord>> {
    sql::many(c, LIST_APPS, args![account_id]).await
}

/// An integrity write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new application (one already registered under its id is a conflict).
    InsertApp(IntegrityAppRecord),
    /// New settings and keys of an application.
    UpdateApp(IntegrityAppRecord),
    /// Removes an application.
    DeleteApp { account_id: String, id: String },
    /// A new challenge; expired ones are purged first.
    InsertChallenge {
        challenge: ChallengeRecord,
        now_ms: i64,
    },
    /// Takes a live challenge of this caller and application, once.
    ConsumeChallenge {
        challenge: ChallengeRecord,
        now_ms: i64,
    },
    /// A new attestation; expired ones are purged first.
    InsertAttestation(AttestationRecord),
    /// Uses a live attestation of this caller (and application, when named): once,
    /// unless it is reusable.
    UseAttestation {
        id: String,
        account_id: String,
        subject: String,
        application_id: Option<String>,
        now_ms: i64,
    },
}

/// Applies `op`: whether it changed a row.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<bool> {
    let n = match op {
        Op::InsertApp(r) | Op::UpdateApp(r) => {
            let (certs, verdicts) = (
                r.allowed_certificates.join(" "),
                r.required_device_verdicts.join(" "),
            );
            let a = args![
                &r.id,
                &r.account_id,
                &r.application_id,
                &r.decryption_key,
                &r.verification_key,
                &certs,
                r.min_version_code,
                &verdicts,
                i64::from(r.require_licensed),
                r.max_token_age_s,
                r.attestation_ttl_s,
                i64::from(r.reusable_attestations),
                r.created_ms,
                r.updated_ms
            ];
            let sql = if matches!(op, Op::InsertApp(_)) {
                INSERT_APP
            } else {
                UPDATE_APP
            };
            c.exec(sql, a).await?
        }
        Op::DeleteApp { account_id, id } => c.exec(DELETE_APP, args![account_id, id]).await?,
        Op::InsertChallenge {
            challenge: h,
            now_ms,
        } => {
            c.exec(PURGE_CHALLENGES, args![*now_ms]).await?;
            let a = args![
                &h.digest,
                &h.account_id,
                &h.subject,
                &h.application_id,
                h.expires_ms
            ];
            c.exec(INSERT_CHALLENGE, a).await?
        }
        Op::ConsumeChallenge {
            challenge: h,
            now_ms,
        } => {
            let a = args![
                &h.digest,
                &h.account_id,
                &h.subject,
                &h.application_id,
                *now_ms
            ];
            c.exec(CONSUME_CHALLENGE, a).await?
        }
        Op::InsertAttestation(r) => {
            c.exec(PURGE_ATTESTATIONS, args![r.created_ms]).await?;
            let a = args![
                &r.id,
                &r.account_id,
                &r.subject,
                &r.application_id,
                i64::from(r.reusable),
                r.created_ms,
                r.expires_ms
            ];
            c.exec(INSERT_ATTESTATION, a).await?
        }
        Op::UseAttestation {
            id,
            account_id,
            subject,
            application_id,
            now_ms,
        } => {
            let a = args![id, account_id, subject, *now_ms, application_id.as_deref()];
            c.exec(USE_ATTESTATION, a).await?
        }
    };
    Ok(n == 1)
}
