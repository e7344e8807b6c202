//! Risk assessments (docs/risk.md): one row per assessed card use, with the features it
//! was scored on, so that the merchant can read why and a model can later be trained on
//! the labelled rows. Holds a fingerprint and a keyed email digest, never a card number
//! or an address.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::Risk`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use strongroom_core::Mode;

/// One assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessmentRecord {
    /// `risk_…`
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Its mode.
    pub mode: Mode,
    /// What was assessed: `tokenize`, `payment`, `reveal`, `relay`, …
    pub action: String,
    /// 0–100.
    pub score: i64,
    /// `allow`, `review` or `block`.
    pub decision: String,
    /// The reasons, as the server's JSON.
    pub reasons: String,
    /// The features, as JSON keyed by name.
    pub features: String,
    /// The rule set that scored it.
    pub rules_version: String,
    /// The model that scored it, if one did.
    pub model_version: Option<String>,
    /// The card's fingerprint (base64url), when a card was named.
    pub fingerprint: Option<String>,
    /// The client address, when known.
    pub ip: Option<String>,
    /// The email's keyed digest, when one was given.
    pub email_digest: Option<String>,
    /// The device id, when one was given.
    pub device_id: Option<String>,
    /// The API key of the request.
    pub key_id: Option<String>,
    /// The suspension a rule made, if one did.
    pub suspension_id: Option<String>,
    /// The merchant's label (`fraud`, `legitimate`, `chargeback`), once given.
    pub label: Option<String>,
    /// When the label says the outcome happened.
    pub label_ms: Option<i64>,
    /// When it was made.
    pub created_ms: i64,
}

/// The assessments' storage reads.
#[allow(async_fn_in_trait)]
pub trait RiskStore: Send + Sync {
    /// One assessment of the account and mode.
    async fn assessment(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
    ) -> StoreResult<Option<AssessmentRecord>>;
    /// Up to `limit` labelled assessments (of one account, or of all), oldest first:
    /// what a model is trained on.
    async fn labelled_assessments(
        &self,
        account_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AssessmentRecord>>;
    /// The models in service (`shadow` and `active`).
    async fn risk_models(&self) -> StoreResult<Vec<RiskModelRecord>>;
    /// A page of the account's assessments in this mode made at or after `since_ms`,
    /// newest first, up to `limit`, those before `before` (the last row of the previous
    /// page, as `(created_ms, id)`): what a dry run of a rule set decides again, a page at
    /// a time.
    async fn assessments_since(
        &self,
        account_id: &str,
        mode: Mode,
        since_ms: i64,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<AssessmentRecord>>;
    /// Up to `limit` of the account's rule sets in this mode, newest first, below
    /// version `before` when given: the first is the set in force.
    async fn rule_sets(
        &self,
        account_id: &str,
        mode: Mode,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<RuleSetRecord>>;
}

/// One version of an account's risk rules in one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetRecord {
    /// The account.
    pub account_id: String,
    /// Its mode.
    pub mode: Mode,
    /// 1, 2, …: the highest is in force.
    pub version: i64,
    /// The set, as JSON.
    pub rules: String,
    /// The key that put it.
    pub created_by: String,
    /// When.
    pub created_ms: i64,
}

impl FromRow for RuleSetRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            account_id: r.text(0)?,
            mode: sql::mode(&r.text(1)?)?,
            version: r.int(2)?,
            rules: r.text(3)?,
            created_by: r.text(4)?,
            created_ms: r.int(5)?,
        })
    }
}

/// A trained model in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskModelRecord {
    /// The model's version.
    pub version: String,
    /// `shadow`, `active` or `retired`.
    pub state: String,
    /// The model, as `strongroom_risk::Model::to_json` wrote it.
    pub model: String,
    /// When it took this state.
    pub promoted_ms: i64,
}

impl FromRow for RiskModelRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            version: r.text(0)?,
            state: r.text(1)?,
            model: r.text(2)?,
            promoted_ms: r.int(3)?,
        })
    }
}

/// What feedback labels.
#[derive(Debug, Clone)]
pub enum LabelTarget {
    /// One assessment.
    Assessment(String),
    /// Every assessment of a card, by its fingerprint (base64url).
    Fingerprint(String),
}

macro_rules! cols {
    () => {
        "id, account_id, mode, action, score, decision, reasons, features, rules_version, \
         model_version, fingerprint, ip, email_digest, device_id, key_id, suspension_id, label, \
         label_ms, created_ms"
    };
}

const GET: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM risk_assessments WHERE account_id = $1 AND mode = $2 AND id = $3"
);
const LABELLED: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM risk_assessments WHERE label IS NOT NULL AND ($1 IS NULL OR account_id = $1) \
     ORDER BY created_ms, id LIMIT $2"
);
const SINCE: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM risk_assessments WHERE account_id = $1 AND mode = $2 AND created_ms >= $3 \
     AND (created_ms < $4 OR (created_ms = $4 AND id < $5)) \
     ORDER BY created_ms DESC, id DESC LIMIT $6"
);
const RULE_SETS: &str = "SELECT account_id, mode, version, rules, created_by, created_ms \
     FROM risk_rule_sets WHERE account_id = $1 AND mode = $2 AND ($3 IS NULL OR version < $3) \
     ORDER BY version DESC LIMIT $4";
// Stored only if no version as high exists: two nodes putting at once cannot both win.
const PUT_RULES: &str = "INSERT INTO risk_rule_sets \
     (account_id, mode, version, rules, created_by, created_ms) \
     SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM risk_rule_sets \
     WHERE account_id = $1 AND mode = $2 AND version >= $3)";
const LABEL_ONE: &str = "UPDATE risk_assessments SET label = $4, label_ms = $5 \
     WHERE account_id = $1 AND mode = $2 AND id = $3";
const LABEL_CARD: &str = "UPDATE risk_assessments SET label = $4, label_ms = $5 \
     WHERE account_id = $1 AND mode = $2 AND fingerprint = $3";
const MODELS: &str = "SELECT version, state, model, promoted_ms FROM risk_models \
     WHERE state IN ('shadow', 'active') ORDER BY promoted_ms";
const RETIRE_MODELS: &str = "UPDATE risk_models SET state = 'retired', promoted_ms = $2 \
     WHERE state = $1";
const PUT_MODEL: &str = "INSERT INTO risk_models (version, state, model, promoted_ms) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO UPDATE SET state = excluded.state, \
     model = excluded.model, promoted_ms = excluded.promoted_ms";
const INSERT: &str = concat!(
    "INSERT INTO risk_assessments (",
    cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19)"
);

impl FromRow for AssessmentRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: sql::mode(&r.text(2)?)?,
            action: r.text(3)?,
            score: r.int(4)?,
            decision: r.text(5)?,
            reasons: r.text(6)?,
            features: r.text(7)?,
            rules_version: r.text(8)?,
            model_version: r.opt_text(9)?,
            fingerprint: r.opt_text(10)?,
            ip: r.opt_text(11)?,
            email_digest: r.opt_text(12)?,
            device_id: r.opt_text(13)?,
            key_id: r.opt_text(14)?,
            suspension_id: r.opt_text(15)?,
            label: r.opt_text(16)?,
            label_ms: r.opt_int(17)?,
            created_ms: r.int(18)?,
        })
    }
}

pub(crate) async fn assessment<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    id: &str,
) -> StoreResult<Option<AssessmentRecord>> {
    sql::one(c, GET, args![account_id, mode.as_str(), id]).await
}

pub(crate) async fn labelled<C: Exec>(
    c: &mut C,
    account_id: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<AssessmentRecord>> {
    sql::many(c, LABELLED, args![account_id, limit]).await
}

pub(crate) async fn models<C: Exec>(c: &mut C) -> StoreResult<Vec<RiskModelRecord>> {
    sql::many(c, MODELS, &[]).await
}

pub(crate) async fn since<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    since_ms: i64,
    before: Option<(i64, &str)>,
    limit: i64,
) -> StoreResult<Vec<AssessmentRecord>> {
    // Past every row: the first page's cursor.
    let (before_ms, before_id) = before.unwrap_or((i64::MAX, "risk_~"));
    let a = args![
        account_id,
        mode.as_str(),
        since_ms,
        before_ms,
        before_id,
        limit
    ];
    sql::many(c, SINCE, a).await
}

pub(crate) async fn rule_sets<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    before: Option<i64>,
    limit: i64,
) -> StoreResult<Vec<RuleSetRecord>> {
    let a = args![account_id, mode.as_str(), before, limit];
    sql::many(c, RULE_SETS, a).await
}

/// A risk write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new assessment (boxed: the writer's ops stay small).
    Insert(Box<AssessmentRecord>),
    /// A model put in service in its state; the one in that state before is retired.
    Promote(RiskModelRecord),
    /// A new version of an account's rules (written only if it is the highest).
    PutRules(RuleSetRecord),
    /// The merchant's label on assessments.
    Label {
        account_id: String,
        mode: Mode,
        target: LabelTarget,
        label: String,
        label_ms: i64,
    },
}

/// Applies `op`: how many rows it wrote.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<u64> {
    match op {
        Op::PutRules(r) => {
            let a = args![
                &r.account_id,
                r.mode.as_str(),
                r.version,
                &r.rules,
                &r.created_by,
                r.created_ms
            ];
            c.exec(PUT_RULES, a).await
        }
        Op::Promote(m) => {
            c.exec(RETIRE_MODELS, args![&m.state, m.promoted_ms])
                .await?;
            let a = args![&m.version, &m.state, &m.model, m.promoted_ms];
            c.exec(PUT_MODEL, a).await
        }
        Op::Label {
            account_id,
            mode,
            target,
            label,
            label_ms,
        } => {
            let (sql, value) = match target {
                LabelTarget::Assessment(id) => (LABEL_ONE, id),
                LabelTarget::Fingerprint(fp) => (LABEL_CARD, fp),
            };
            let a = args![account_id, mode.as_str(), value, label, *label_ms];
            c.exec(sql, a).await
        }
        Op::Insert(r) => {
            let a = args![
                &r.id,
                &r.account_id,
                r.mode.as_str(),
                &r.action,
                r.score,
                &r.decision,
                &r.reasons,
                &r.features,
                &r.rules_version,
                r.model_version.as_deref(),
                r.fingerprint.as_deref(),
                r.ip.as_deref(),
                r.email_digest.as_deref(),
                r.device_id.as_deref(),
                r.key_id.as_deref(),
                r.suspension_id.as_deref(),
                r.label.as_deref(),
                r.label_ms,
                r.created_ms
            ];
            c.exec(INSERT, a).await
        }
    }
}
