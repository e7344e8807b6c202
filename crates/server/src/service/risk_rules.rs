//! An account's risk rules as data (docs/risk.md, "Rules"): read the set in force, put a
//! new one whole (checked before anything is stored, numbered, the old ones kept as
//! history), and try one first on the last 30 days of assessments (a dry run).

use crate::auth::Principal;
use crate::risk::rules::{InForce, version_name};
use crate::service::assessments::Reason;
use crate::service::{List, Result, ServiceError, secs};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strongroom_core::Scope;
use strongroom_risk::{
    Decision, Features, RuleError, RuleSet, RuleSetSpec, RuleSpec, Signals, Standing,
};
use strongroom_store::{AssessmentRecord, RiskStore, RuleSetRecord};
use utoipa::ToSchema;

/// How far back a dry run looks.
pub const DRY_RUN_DAYS: i64 = 30;
/// The most assessments a dry run decides again (the oldest are left out beyond it).
pub const DRY_RUN_MAX: i64 = 100_000;

crate::service::object_name!(
    /// `risk_rules`.
    RulesObject = "risk_rules"
);
crate::service::object_name!(
    /// `risk_rules_dry_run`.
    DryRunObject = "risk_rules_dry_run"
);

/// A rule set: the one in force, or one of its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesView {
    /// Always `risk_rules`.
    pub object: RulesObject,
    /// `builtin-1` (the built-in set, until the account puts its own), or `v1`, `v2`, …
    pub version: String,
    /// Whether this is the built-in set.
    pub builtin: bool,
    /// The key that put it; null for the built-in set.
    pub created_by: Option<String>,
    /// Unix seconds; null for the built-in set.
    pub created: Option<i64>,
    /// A score at or above this asks for review.
    pub review_at: i64,
    /// A score at or above this blocks.
    pub block_at: i64,
    /// The rules, in order (docs/risk.md: the expression language and the signals).
    #[schema(value_type = Vec<RuleDoc>)]
    pub rules: Vec<RuleSpec>,
}

impl RulesView {
    fn new(f: &InForce) -> Self {
        let spec = f.set.spec();
        Self {
            object: RulesObject::Value,
            version: f.version.clone(),
            builtin: f.number == 0,
            created_by: f.created_by.clone(),
            created: (f.number != 0).then(|| secs(f.created_ms)),
            review_at: spec.review_at,
            block_at: spec.block_at,
            rules: spec.rules.clone(),
        }
    }
}

// The next three describe `strongroom_risk`'s rule JSON in the API document only.

/// One rule (docs/risk.md, "Rules").
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Rule)]
#[allow(dead_code, reason = "describes RuleSpec's JSON in the API document")]
pub struct RuleDoc {
    /// `[a-z0-9_]`, unique in the set: the reason code.
    #[schema(pattern = "^[a-z0-9_]{1,64}$", example = "card_testing_ip")]
    id: String,
    /// What it catches, in words (at most 500 characters): the reason's detail.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// The condition over the signals, which must yield true or false (at most 1000
    /// characters).
    #[schema(max_length = 1000, example = "ip_distinct_cards_10m >= 10")]
    when: String,
    /// Points added to the score when it holds (negative lowers it).
    #[schema(minimum = -100, maximum = 100)]
    score: i64,
    /// What else it does when it holds.
    action: Option<RuleActionDoc>,
    /// A disabled rule is kept but not evaluated (default true).
    #[schema(nullable = false)]
    enabled: Option<bool>,
}

/// What a rule does besides adding its score.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[schema(as = RuleAction)]
#[allow(dead_code, reason = "describes RuleAction's JSON in the API document")]
pub enum RuleActionDoc {
    /// The decision is at least `review`.
    Review,
    /// The decision is `block`.
    Block,
    /// The decision is `block`, and the subject is suspended (in an account that
    /// enforces).
    Suspend {
        /// What to suspend: `network` is the address's /24 or /64.
        target: SuspendTargetDoc,
        /// Seconds.
        #[schema(minimum = 60, maximum = 7_776_000)]
        duration: i64,
    },
}

/// What a rule suspends.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SuspendTarget)]
#[allow(
    dead_code,
    reason = "describes SuspendTarget's JSON in the API document"
)]
pub enum SuspendTargetDoc {
    /// The client's address.
    Ip,
    /// Its /24 (IPv4) or /64 (IPv6).
    Network,
    /// The card's fingerprint.
    Card,
    /// The email's keyed digest.
    Email,
    /// The device id.
    DeviceId,
}

/// Body of `PUT /v1/risk/rules`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRules {
    /// The whole set, at most 100 rules, evaluated in order. Each is checked here (not
    /// by the JSON parser), so a bad one is named in `400 rules_invalid`.
    #[schema(value_type = Vec<RuleDoc>, max_items = 100)]
    pub rules: Vec<serde_json::Value>,
    /// Default 50.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 0, maximum = 100)]
    pub review_at: Option<i64>,
    /// Default 80; at least `review_at`.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub block_at: Option<i64>,
    /// Only report how the last 30 days would have been decided; store nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The version this set replaces (as `GET` showed it): if another set was put since,
    /// `409 rules_version_conflict` and nothing is stored.
    #[schema(example = "v3")]
    pub replaces: Option<String>,
}

/// How many uses were decided each way.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
pub struct DecisionCounts {
    /// Allowed.
    pub allow: i64,
    /// Sent to review.
    pub review: i64,
    /// Blocked.
    pub block: i64,
}

impl DecisionCounts {
    fn add(&mut self, d: Decision) {
        match d {
            Decision::Allow => self.allow += 1,
            Decision::Review => self.review += 1,
            Decision::Block => self.block += 1,
        }
    }
}

/// Labelled uses of one kind, blocked then and under the new set.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
pub struct LabelledCounts {
    /// How many assessments carry the label.
    pub total: i64,
    /// How many were blocked as decided.
    pub blocked_current: i64,
    /// How many the new set would block.
    pub blocked_proposed: i64,
}

/// How often one rule of the new set held.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleHits {
    /// The rule.
    pub id: String,
    /// How many assessments it held for.
    pub hits: i64,
}

/// What a dry run found.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    /// Always `risk_rules_dry_run`.
    pub object: DryRunObject,
    /// How many days back it looked (30).
    pub window_days: i64,
    /// How many assessments it decided again.
    pub assessments: i64,
    /// Whether there were more than it decides (100 000); the oldest were decided.
    pub truncated: bool,
    /// The decisions as they were made.
    pub current: DecisionCounts,
    /// The decisions the new set makes.
    pub proposed: DecisionCounts,
    /// How many assessments the new set decides differently.
    pub changed: i64,
    /// How many suspensions the new set's rules would have asked for (in an account
    /// that enforces).
    pub suspensions: i64,
    /// Each rule of the new set, with how often it held.
    pub rules: Vec<RuleHits>,
    /// Assessments labelled `fraud` or `chargeback`.
    pub fraud: LabelledCounts,
    /// Assessments labelled `legitimate`.
    pub legitimate: LabelledCounts,
}

/// What a put did: the set now in force, or a dry run's report.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PutOutcome {
    /// The set stored and now in force.
    Stored(RulesView),
    /// A dry run's report (nothing stored).
    DryRun(DryRunView),
}

/// The rules in force for the caller's account and mode (`risk:read`).
pub async fn get(state: &AppState, who: &Principal) -> Result<RulesView> {
    who.require(Scope::RiskRead)?;
    let f = state.risk_rules(&who.account_id, who.mode).await?;
    Ok(RulesView::new(&f))
}

/// Reads a put's set: each rule as the schema says, then the set compiled whole.
fn checked(put: &PutRules) -> std::result::Result<RuleSet, RuleError> {
    let mut rules = Vec::with_capacity(put.rules.len());
    for (i, v) in put.rules.iter().enumerate() {
        let name = v
            .get("id")
            .and_then(serde_json::Value::as_str)
            .filter(|id| id.len() <= 64)
            .map_or_else(|| format!("rules[{i}]"), str::to_owned);
        let rule = RuleSpec::deserialize(v).map_err(|e| RuleError {
            rule: Some(name),
            problem: e.to_string(),
        })?;
        rules.push(rule);
    }
    RuleSet::compile(RuleSetSpec {
        rules,
        review_at: put.review_at.unwrap_or(50),
        block_at: put.block_at.unwrap_or(80),
    })
}

/// Puts a new rule set for the caller's account and mode (`risk:write`), whole, or
/// with `dry_run` reports how it would have decided the last 30 days.
pub async fn put(state: &AppState, who: &Principal, put: &PutRules) -> Result<PutOutcome> {
    who.require(Scope::RiskWrite)?;
    let set = checked(put).map_err(ServiceError::RulesInvalid)?;
    if put.dry_run {
        return Ok(PutOutcome::DryRun(dry_run(state, who, set).await?));
    }
    let latest = state
        .store()
        .rule_sets(&who.account_id, who.mode, None, 1)
        .await?
        .first()
        .map_or(0, |r| r.version);
    if let Some(replaces) = &put.replaces {
        let in_force = if latest == 0 {
            strongroom_risk::BUILTIN_VERSION.to_owned()
        } else {
            version_name(latest)
        };
        if *replaces != in_force {
            return Err(ServiceError::RulesVersionConflict);
        }
    }
    let record = RuleSetRecord {
        account_id: who.account_id.clone(),
        mode: who.mode,
        version: latest + 1,
        rules: serde_json::to_string(set.spec())
            .map_err(|_| ServiceError::internal("rule set json"))?,
        created_by: who.key_id.clone(),
        created_ms: state.now_ms(),
    };
    crate::audit::set_version(&who.audit, "risk_rules", record.version);
    let stored = state
        .store()
        .audited(&who.audit)
        .put_rule_set(&record)
        .await?;
    if !stored {
        // Another put took this number first.
        return Err(if put.replaces.is_some() {
            ServiceError::RulesVersionConflict
        } else {
            ServiceError::Conflict
        });
    }
    state.forget_risk_rules(&who.account_id, who.mode);
    let f = InForce {
        version: version_name(record.version),
        number: record.version,
        created_by: Some(record.created_by),
        created_ms: record.created_ms,
        set,
    };
    Ok(PutOutcome::Stored(RulesView::new(&f)))
}

/// A page of the account's rule sets in the caller's mode, newest first (`risk:read`);
/// `before` is a version number.
pub async fn versions(
    state: &AppState,
    who: &Principal,
    before: Option<i64>,
    limit: i64,
) -> Result<List<RulesView>> {
    who.require(Scope::RiskRead)?;
    if !(1..=100).contains(&limit) || before.is_some_and(|b| b < 1) {
        return Err(ServiceError::InvalidParameter);
    }
    let mut rows = state
        .store()
        .rule_sets(&who.account_id, who.mode, before, limit.saturating_add(1))
        .await?;
    let has_more = crate::extract::page(&mut rows, limit);
    let views = rows
        .iter()
        .map(|r| InForce::load(r).map(|f| RulesView::new(&f)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ServiceError::internal("a stored rule set no longer compiles"))?;
    Ok(List::page(views, has_more))
}

/// One version of the account's rules in the caller's mode (`risk:read`): `v<n>`, or
/// `builtin-1`.
pub async fn version(state: &AppState, who: &Principal, name: &str) -> Result<RulesView> {
    who.require(Scope::RiskRead)?;
    if name == strongroom_risk::BUILTIN_VERSION {
        return Ok(RulesView::new(&InForce::builtin()));
    }
    let n = name
        .strip_prefix('v')
        .filter(|d| !d.starts_with('0') && d.len() <= 18 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<i64>().ok())
        .ok_or(ServiceError::NotFound)?;
    let rows = state
        .store()
        .rule_sets(&who.account_id, who.mode, Some(n + 1), 1)
        .await?;
    let r = rows
        .into_iter()
        .find(|r| r.version == n)
        .ok_or(ServiceError::NotFound)?;
    let f = InForce::load(&r)
        .ok_or_else(|| ServiceError::internal("a stored rule set no longer compiles"))?;
    Ok(RulesView::new(&f))
}

/// What a stored assessment says of its standing: suspended, listed, the model's points.
fn standing(reasons: &[Reason]) -> Standing {
    let has = |code: &str| reasons.iter().any(|r| r.code == code);
    Standing {
        suspended: has("suspended"),
        block_listed: has("block_listed"),
        allow_listed: has("allow_listed"),
        model_points: reasons
            .iter()
            .filter(|r| r.source == "model")
            .map(|r| r.weight)
            .sum(),
    }
}

fn decision_of(s: &str) -> Decision {
    match s {
        "block" => Decision::Block,
        "review" => Decision::Review,
        _ => Decision::Allow,
    }
}

/// Decides the last 30 days' assessments again with `set`, from what each stored: its
/// signals, its action, and its standing (suspended, listed, the model's points). A
/// suspension the new set would have made is counted, not replayed into later uses. The
/// rows are read newest first, a page at a time (memory holds one page, whatever the
/// account's volume), and each page is decided on the blocking pool, off the request
/// workers; beyond [`DRY_RUN_MAX`] rows the oldest are left out (`truncated`).
async fn dry_run(state: &AppState, who: &Principal, set: RuleSet) -> Result<DryRunView> {
    let since = state.now_ms() - DRY_RUN_DAYS * 86_400_000;
    let set = std::sync::Arc::new(set);
    let mut tally = Tally::default();
    let mut before: Option<(i64, String)> = None;
    let mut read = 0_i64;
    let truncated = loop {
        let cursor = before.as_ref().map(|(t, id)| (*t, id.as_str()));
        let want = (DRY_RUN_MAX - read).min(DRY_RUN_PAGE);
        if want == 0 {
            // At the cap: say whether anything older was left out.
            let more = state
                .store()
                .assessments_since(&who.account_id, who.mode, since, cursor, 1)
                .await?;
            break !more.is_empty();
        }
        let rows = state
            .store()
            .assessments_since(&who.account_id, who.mode, since, cursor, want)
            .await?;
        let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        read += n;
        before = rows.last().map(|r| (r.created_ms, r.id.clone()));
        let page_set = set.clone();
        tally = tokio::task::spawn_blocking(move || {
            tally.add(&page_set, &rows);
            tally
        })
        .await
        .map_err(|_| ServiceError::internal("dry run"))?;
        if n < want {
            break false;
        }
    };
    Ok(tally.finish(&set, truncated))
}

/// Rows a dry run reads at once.
const DRY_RUN_PAGE: i64 = 5_000;

/// A dry run's counts so far.
#[derive(Default)]
struct Tally {
    assessments: i64,
    current: DecisionCounts,
    proposed: DecisionCounts,
    changed: i64,
    suspensions: i64,
    hits_by_rule: BTreeMap<String, i64>,
    fraud: LabelledCounts,
    legitimate: LabelledCounts,
}

impl Tally {
    /// Counts `rows` decided again by `set`.
    fn add(&mut self, set: &RuleSet, rows: &[AssessmentRecord]) {
        for r in rows {
            let Some((proposed, suspends, held)) = decide_again(set, r) else {
                continue;
            };
            let current = decision_of(&r.decision);
            self.assessments += 1;
            self.current.add(current);
            self.proposed.add(proposed);
            self.changed += i64::from(current != proposed);
            self.suspensions += suspends;
            for id in held {
                *self.hits_by_rule.entry(id.to_owned()).or_default() += 1;
            }
            let labelled = match r.label.as_deref() {
                Some("fraud" | "chargeback") => Some(&mut self.fraud),
                Some("legitimate") => Some(&mut self.legitimate),
                _ => None,
            };
            if let Some(l) = labelled {
                l.total += 1;
                l.blocked_current += i64::from(current == Decision::Block);
                l.blocked_proposed += i64::from(proposed == Decision::Block);
            }
        }
    }

    /// The report: every rule of `set` with its hits, in the set's order.
    fn finish(self, set: &RuleSet, truncated: bool) -> DryRunView {
        let rules = set
            .spec()
            .rules
            .iter()
            .map(|rule| RuleHits {
                id: rule.id.clone(),
                hits: self.hits_by_rule.get(&rule.id).copied().unwrap_or(0),
            })
            .collect();
        DryRunView {
            object: DryRunObject::Value,
            window_days: DRY_RUN_DAYS,
            assessments: self.assessments,
            truncated,
            current: self.current,
            proposed: self.proposed,
            changed: self.changed,
            suspensions: self.suspensions,
            rules,
            fraud: self.fraud,
            legitimate: self.legitimate,
        }
    }
}

/// One stored assessment decided by `set`: the decision, how many suspensions it asks
/// for, and the rules that held. `None` for a row whose signals cannot be read.
fn decide_again<'s>(
    set: &'s RuleSet,
    r: &AssessmentRecord,
) -> Option<(Decision, i64, Vec<&'s str>)> {
    let features: Features = serde_json::from_str(&r.features).ok()?;
    let reasons: Vec<Reason> = serde_json::from_str(&r.reasons).unwrap_or_default();
    let standing = standing(&reasons);
    let signals = Signals::new(
        &features,
        &r.action,
        standing.suspended,
        standing.allow_listed,
    );
    let hits = set.evaluate(&signals);
    let verdict = set.decide(&hits, standing);
    let held = hits.iter().map(|h| h.rule.id.as_str()).collect();
    Some((verdict.decision, verdict.suspend.len() as i64, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_standing_is_read_back() {
        let r = |code: &str, source: &str, weight| Reason {
            code: code.into(),
            detail: String::new(),
            weight,
            source: source.into(),
        };
        let s = standing(&[
            r("suspended", "suspension", 100),
            r("model", "model", 25),
            r("model_shadow", "model", 0),
            r("card_velocity", "rule", 30),
        ]);
        assert!(s.suspended && !s.block_listed && !s.allow_listed);
        assert_eq!(s.model_points, 25);
    }
}
