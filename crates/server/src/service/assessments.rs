//! Risk assessments (docs/risk.md, "Assessments"): a score from 0 to 100, a decision
//! and its reasons for one use of a card, from velocity over sliding windows (per card,
//! address and network, key, email and device), country mismatches, and suspensions.
//!
//! The signals are `strongroom_risk`'s feature schema, computed here as its simulator
//! defines them (earlier uses only, in each window), and stored with the assessment, so
//! that a model can later be trained on the labelled rows. The rules are the account's
//! set in force ([`crate::risk::rules`]: its own, or the built-in one); a rule may
//! block, and may suspend the subject it saw (the built-in card-testing rule suspends the
//! address for an hour). Nothing here keeps a card number or an email address: a
//! fingerprint and a keyed digest.

use crate::auth::Principal;
use crate::risk::velocity::{Counts, Use};
use crate::service::controls::RiskMode;
use crate::service::suspensions::{self, Subject, TargetType};
use crate::service::{Result, ServiceError, secs};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use strongroom_core::{IdKind, KeyKind, Scope};
use strongroom_risk::lists::{ListHits, ListKind, ListProbe};
use strongroom_risk::ruleset::Hit;
use strongroom_risk::{Feature, Features, RuleAction, RuleSpec, Signals, Standing, SuspendTarget};
use strongroom_store::{AssessmentRecord, LabelTarget, RiskStore, VaultStore};
use utoipa::ToSchema;

/// The most points an active model adds: a confident model alone asks for review; a
/// block needs a rule too.
pub const MODEL_POINTS: f64 = 60.0;

/// The model's points for `features`, and what it says of them.
fn model_reason(m: &strongroom_risk::Model, f: &Features, shadow: bool) -> Reason {
    let p = m.score(f);
    #[allow(clippy::cast_possible_truncation)]
    let points = (p * MODEL_POINTS).round() as i64;
    let top: Vec<&str> = m
        .explain(f)
        .into_iter()
        .filter(|(_, c)| *c > 0.0)
        .take(3)
        .map(|(name, _)| name)
        .collect();
    let why = if top.is_empty() {
        String::new()
    } else {
        format!("; most from {}", top.join(", "))
    };
    Reason {
        code: if shadow { "model_shadow" } else { "model" }.into(),
        detail: format!(
            "model {}: fraud likelihood {:.0}%{why}{}",
            m.version(),
            p * 100.0,
            if shadow { " (shadow: not counted)" } else { "" }
        ),
        weight: if shadow { 0 } else { points },
        source: "model".into(),
    }
}

/// What is being assessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A card being stored.
    Tokenize,
    /// A payment with a stored card.
    Payment,
    /// A card number being revealed.
    Reveal,
    /// A card sent through the relay.
    Relay,
    /// A card being added to a customer's account or wallet.
    CardOnFile,
    /// A customer logging in or signing up.
    Login,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tokenize => "tokenize",
            Self::Payment => "payment",
            Self::Reveal => "reveal",
            Self::Relay => "relay",
            Self::CardOnFile => "card_on_file",
            Self::Login => "login",
        }
    }
}

/// Body of `POST /v1/risk/assessments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAssessment {
    /// What is being assessed.
    pub action: Action,
    /// The card (`card_…`) of this account and mode; or give `fingerprint`.
    #[schema(pattern = "^card_[0-9a-f]{32}$")]
    pub card: Option<String>,
    /// A card fingerprint as the card object shows it, instead of `card`.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub fingerprint: Option<String>,
    /// In minor units.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 0, maximum = 99_999_999_999_i64)]
    pub amount: Option<i64>,
    /// ISO 4217.
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// The customer's address (not your server's).
    #[schema(value_type = Option<String>, example = "203.0.113.7")]
    pub ip: Option<String>,
    /// The customer's email: digested with a key at once, never kept.
    #[schema(max_length = 254)]
    pub email: Option<String>,
    /// Your app's device id.
    #[schema(min_length = 1, max_length = 200)]
    pub device_id: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    pub billing_country: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Za-z]{2}$")]
    pub shipping_country: Option<String>,
}

/// Why a score is what it is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    /// Stable: `suspended`, `block_listed`, `allow_listed`, `model`, `model_shadow`, or
    /// the id of the rule that held
    /// (the built-in set's: `card_testing_ip`, `card_testing_network`, `card_velocity`,
    /// `device_cycling`, `email_cycling`, `bin_ip_country_mismatch`,
    /// `bin_billing_country_mismatch`, `ip_billing_country_mismatch`, `declines`).
    pub code: String,
    /// What was seen, in words: the rule's description and the signals it read (counts
    /// and flags; never a number or an address).
    pub detail: String,
    /// Points it added to the score.
    pub weight: i64,
    /// `rule`, `model`, `suspension` or `list`.
    pub source: String,
}

/// An assessment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssessmentView {
    /// `risk_…`
    pub id: String,
    /// Always `risk_assessment`.
    pub object: &'static str,
    /// `test` or `live`.
    pub mode: &'static str,
    /// What was assessed.
    pub action: String,
    /// 0 (no risk seen) to 100.
    pub score: i64,
    /// `allow`, `review` or `block`.
    pub decision: String,
    /// The reasons, largest weight first.
    pub reasons: Vec<Reason>,
    /// The signals, by name (the model's feature schema).
    #[schema(value_type = Object)]
    pub features: serde_json::Value,
    /// The rule set that scored it.
    pub rules_version: String,
    /// The model that scored it; null (no model in service yet).
    pub model_version: Option<String>,
    /// The suspension a rule made, if one did (`susp_…`).
    pub suspension: Option<String>,
    /// The merchant's label (`fraud`, `legitimate`, `chargeback`); null until given.
    pub label: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

impl AssessmentView {
    fn new(r: &AssessmentRecord) -> Self {
        Self {
            id: r.id.clone(),
            object: "risk_assessment",
            mode: r.mode.as_str(),
            action: r.action.clone(),
            score: r.score,
            decision: r.decision.clone(),
            reasons: serde_json::from_str(&r.reasons).unwrap_or_default(),
            features: serde_json::from_str::<Features>(&r.features)
                .ok()
                .and_then(|f| serde_json::to_value(f).ok())
                .unwrap_or_default(),
            rules_version: r.rules_version.clone(),
            model_version: r.model_version.clone(),
            suspension: r.suspension_id.clone(),
            label: r.label.clone(),
            created: secs(r.created_ms),
        }
    }
}

/// What one assessment looks at, checked and in stored form.
struct Subjects {
    fingerprint: Option<String>,
    bin: Option<String>,
    ip: Option<IpAddr>,
    email_digest: Option<String>,
    device: Option<String>,
}

impl Subjects {
    /// What the lists match.
    fn probe(&self) -> ListProbe<'_> {
        ListProbe {
            fingerprint: self.fingerprint.as_deref(),
            bin: self.bin.as_deref(),
            ip: self.ip,
            email_digest: self.email_digest.as_deref(),
            device: self.device.as_deref(),
        }
    }
}

fn country(c: Option<&String>) -> Result<Option<String>> {
    match c {
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Some(c.to_ascii_uppercase()))
        }
        Some(_) => Err(ServiceError::InvalidParameter),
        None => Ok(None),
    }
}

/// The signals of one use: the velocity counts before it, the country mismatches, the
/// amount and the hour of `local_ms` (the account's wall clock); the amount-history
/// ratios are set apart.
fn features(
    counts: &Counts,
    m: &crate::risk::geo::Mismatches,
    amount: Option<i64>,
    local_ms: i64,
) -> Features {
    let mut f = Features([0.0; strongroom_risk::N_FEATURES]);
    let n = |v: u32| f64::from(v);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let day_ms = 86_400_000_i64;
    let angle = std::f64::consts::TAU * (local_ms.rem_euclid(day_ms) as f64) / day_ms as f64;
    for (feature, v) in [
        (
            Feature::AmountLog10,
            (1.0 + amount.unwrap_or(0).max(0) as f64).log10(),
        ),
        (Feature::CardUses10m, n(counts.card_uses_10m)),
        (Feature::CardUses24h, n(counts.card_uses_24h)),
        (Feature::IpUses1m, n(counts.ip_uses_1m)),
        (Feature::IpDistinctCards10m, n(counts.ip_distinct_cards_10m)),
        (Feature::IpDistinctCards1h, n(counts.ip_distinct_cards_1h)),
        (Feature::NetDistinctCards1h, n(counts.net_distinct_cards_1h)),
        (Feature::KeyUses1m, n(counts.key_uses_1m)),
        (
            Feature::EmailDistinctCards24h,
            n(counts.email_distinct_cards_24h),
        ),
        (
            Feature::DeviceDistinctCards1h,
            n(counts.device_distinct_cards_1h),
        ),
        (Feature::CardDeclines24h, n(counts.card_declines_24h)),
        (Feature::CardOtpFailures24h, n(counts.card_otp_failures_24h)),
        (Feature::BinIpCountryMismatch, flag(m.bin_ip)),
        (Feature::BinBillingCountryMismatch, flag(m.bin_billing)),
        (Feature::IpBillingCountryMismatch, flag(m.ip_billing)),
        (Feature::HourSin, angle.sin()),
        (Feature::HourCos, angle.cos()),
    ] {
        f.set(feature, v);
    }
    f
}

/// Assesses one use of a card for the caller's account and mode (`risk:write`), stores
/// the assessment, and makes the suspension a rule asks for.
pub async fn create(
    state: &AppState,
    who: &Principal,
    new: &NewAssessment,
) -> Result<AssessmentView> {
    who.require(Scope::RiskWrite)?;
    let subjects = subjects_of(state, who, new).await?;
    let billing = country(new.billing_country.as_ref())?;
    country(new.shipping_country.as_ref())?;
    if new.amount.is_some() != new.currency.is_some()
        || new
            .currency
            .as_ref()
            .is_some_and(|c| c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(ServiceError::InvalidParameter);
    }
    let controls = controls(state, who).await?;
    let run = Run {
        act: RiskMode::of(controls.risk_mode.as_deref()) == RiskMode::Enforce,
        implicit: false,
        zone: controls.time_zone.as_deref(),
    };
    let record = assess(state, who, new.action, subjects, new.amount, billing, run).await?;
    state
        .store()
        .audited(&who.audit)
        .insert_assessment(&record)
        .await?;
    state
        .metrics()
        .assessment(&record.action, &record.decision, true);
    Ok(AssessmentView::new(&record))
}

async fn controls(
    state: &AppState,
    who: &Principal,
) -> Result<std::sync::Arc<strongroom_store::AccountControls>> {
    state
        .gateway()
        .account_controls(&who.account_id)
        .await
        .map_err(|_| ServiceError::internal("account controls unavailable"))
}

/// What the implicit assessment of a card use knows.
pub struct Implicit {
    /// What is being done.
    pub action: Action,
    /// The client's address. Used only for a publishable key, whose requests come from
    /// the shopper's browser; a secret or restricted key's address is the merchant's
    /// server (or a partner's, through an inbound route), which says nothing of the
    /// shopper and would make every card look as if it came from one place.
    pub ip: Option<IpAddr>,
}

/// The implicit assessment of a card use (docs/risk.md, "Implicit assessment"): every
/// tokenize (`POST /v1/cards`, hosted fields and strongroom.js, inbound routes), reveal
/// and relay, before anything is stored, revealed or sent. The account's switch
/// decides: `off` skips it, `shadow` records it, `enforce` (the default) also refuses a
/// `block` with `risk_blocked` and makes the suspension a rule asks for.
pub async fn implicit(
    state: &AppState,
    who: &Principal,
    ctx: &Implicit,
    fingerprint: &[u8],
    bin: &str,
) -> Result<Recording> {
    let controls = controls(state, who).await?;
    let mode = RiskMode::of(controls.risk_mode.as_deref());
    if mode == RiskMode::Off {
        return Ok(Recording::none());
    }
    let subjects = Subjects {
        fingerprint: Some(URL_SAFE_NO_PAD.encode(fingerprint)),
        bin: Some(bin.to_owned()),
        ip: ctx.ip.filter(|_| who.kind == KeyKind::Publishable),
        email_digest: None,
        device: None,
    };
    let enforce = mode == RiskMode::Enforce;
    let run = Run {
        act: enforce,
        implicit: true,
        zone: controls.time_zone.as_deref(),
    };
    let record = assess(state, who, ctx.action, subjects, None, None, run).await?;
    let blocked = enforce && record.decision == "block";
    let recording = Recording::start(state, record);
    if blocked {
        // Stored before the refusal is answered: the merchant reads why.
        recording.settle().await;
        return Err(ServiceError::RiskBlocked);
    }
    Ok(recording)
}

/// The write of an implicit assessment's record, started but not awaited, so that it
/// joins the group commit of the request's own write instead of taking a commit round
/// of its own before it: [`Recording::settle`] after that write. Its writes carry no
/// audit record: the request's own record says how the request ended (carried by this
/// write, it would say the request succeeded before it did).
///
/// An implicit assessment that found nothing (score 0, no reason, `allow`) is counted in
/// `strongroom_risk_assessments_total{stored="false"}` but not stored: it would be most
/// of them, and a row per card use costs tokenize about a quarter of its server CPU
/// (BENCHMARKS.md). Its uses are counted by the velocity windows all the same; with a
/// model in service every assessment has a reason (the model's), so every one is kept.
#[must_use = "settle it after the request's own write"]
pub struct Recording(Option<tokio::task::JoinHandle<strongroom_store::StoreResult<()>>>);

impl Recording {
    /// Nothing to record (the account's switch is `off`, or no assessment was asked for).
    pub fn none() -> Self {
        Self(None)
    }

    fn start(state: &AppState, record: AssessmentRecord) -> Self {
        let clean = record.score == 0 && record.decision == "allow" && record.reasons == "[]";
        state
            .metrics()
            .assessment(&record.action, &record.decision, !clean);
        if clean {
            return Self::none();
        }
        let store = state.store().clone();
        #[allow(
            clippy::disallowed_methods,
            reason = "an implicit assessment is part of a request whose own record says how \
                      it ended; carried by this write, it would say so before it did"
        )]
        let write = async move { store.unaudited().insert_assessment(&record).await };
        Self(Some(tokio::spawn(write)))
    }

    /// Waits for the record to be stored. A failure is logged, not returned: the card use
    /// it describes has happened (or been refused) by then, and the record is the risk
    /// engine's history, not the audit log.
    pub async fn settle(self) {
        let Some(write) = self.0 else { return };
        match write.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "an implicit risk assessment was not stored"),
            Err(e) => tracing::warn!(error = %e, "an implicit risk assessment was not stored"),
        }
    }
}

/// How an assessment runs.
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    /// Make the suspension a rule asks for (the account enforces).
    act: bool,
    /// Part of another request (a tokenize, reveal or relay): the assessment is not the
    /// request's object, and its writes do not carry the request's audit record, which
    /// must say how the request itself ended. A suspension a rule makes then commits
    /// with a system record of its own (`suspension.rule`).
    implicit: bool,
    /// The account's time zone (its controls, read once by the caller): the hour of day
    /// is its local one.
    zone: Option<&'a str>,
}

/// Scores one use and, when `run.act` (the account enforces), makes the suspension a
/// rule asks for: the assessment, for the caller to store.
async fn assess(
    state: &AppState,
    who: &Principal,
    action: Action,
    subjects: Subjects,
    amount: Option<i64>,
    billing: Option<String>,
    run: Run<'_>,
) -> Result<AssessmentRecord> {
    let now = state.now_ms();
    let counts = state
        .velocity()
        .observe(&Use {
            account_id: &who.account_id,
            mode: who.mode,
            at_ms: now,
            card: subjects.fingerprint.as_deref(),
            ip: subjects.ip,
            key_id: Some(&who.key_id),
            email: subjects.email_digest.as_deref(),
            device: subjects.device.as_deref(),
        })
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    let mismatches = match (subjects.bin.as_deref(), subjects.ip) {
        (bin, Some(ip)) => state
            .geo()
            .mismatches(bin.unwrap_or_default(), ip, billing.as_deref()),
        (Some(bin), None) => crate::risk::geo::Mismatches::between(
            state.geo().bins().and_then(|b| b.country(bin)),
            None,
            billing.as_deref(),
        ),
        (None, None) => crate::risk::geo::Mismatches::default(),
    };
    // The hour of day is the account's local one.
    let local = crate::risk::local_time::local_ms(run.zone, now);
    let mut features = features(&counts, &mismatches, amount, local);
    // A payment's amount against the card's and the account's last 30 days (1 without an
    // amount, or for a first payment).
    let history = match amount {
        Some(amount) => {
            let p = crate::risk::velocity::Payment {
                account_id: &who.account_id,
                mode: who.mode,
                at_ms: now,
                card: subjects.fingerprint.as_deref(),
                amount,
            };
            let h = state.velocity().amounts(&p).await;
            let h = h.map_err(|e| ServiceError::internal(e.to_string()))?;
            Some((h.card.ratio(amount), h.account.ratio(amount)))
        }
        None => None,
    };
    let (vs_card, vs_account) = history.unwrap_or((1.0, 1.0));
    features.set(Feature::AmountVsCardMean, vs_card);
    features.set(Feature::AmountVsAccountMean, vs_account);

    let active = state
        .gateway()
        .suspensions(&who.account_id)
        .await
        .map_err(|_| ServiceError::internal("suspensions unavailable"))?;
    let suspended = active.any_of(
        who.mode,
        now,
        subjects.fingerprint.as_deref(),
        subjects.ip,
        subjects.email_digest.as_deref(),
        subjects.device.as_deref(),
    );
    let listed = state
        .risk_lists(&who.account_id, who.mode)
        .await?
        .hits(now, &subjects.probe());
    features.set(Feature::BlockListHits, f64::from(listed.block));
    let rules = state.risk_rules(&who.account_id, who.mode).await?;
    let models = state.risk_models().await?;
    let signals = Signals::new(&features, action.as_str(), suspended, listed.allow > 0);
    let hits = rules.set.evaluate(&signals);
    let mut reasons = Vec::new();
    if suspended {
        reasons.push(Reason {
            code: "suspended".into(),
            detail: "a subject of this use is suspended".into(),
            weight: 100,
            source: "suspension".into(),
        });
    }
    reasons.extend(list_reasons(&listed));
    for h in &hits {
        reasons.push(rule_reason(h, &signals));
    }
    let mut model_points = 0;
    if let Some(m) = &models.active {
        let r = model_reason(m, &features, false);
        model_points = r.weight;
        reasons.push(r);
    }
    if let Some(m) = &models.shadow {
        reasons.push(model_reason(m, &features, true));
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.weight));
    let standing = Standing {
        suspended,
        block_listed: listed.block > 0,
        allow_listed: listed.allow > 0,
        model_points,
    };
    let verdict = rules.set.decide(&hits, standing);

    let id = state.new_id(IdKind::RiskAssessment)?;
    if !run.implicit {
        crate::audit::set_resource(&who.audit, "risk_assessment", &id);
    }
    let mut suspension = None;
    if run.act {
        let audit = if run.implicit {
            crate::audit::Origin::System.scope(state.clock(), "suspension.rule")
        } else {
            who.audit.clone()
        };
        for rule in &verdict.suspend {
            let made = suspend(state, who, &audit, &subjects, &active, rule, now).await?;
            suspension = suspension.or(made);
        }
    }
    let record = AssessmentRecord {
        id,
        account_id: who.account_id.clone(),
        mode: who.mode,
        action: action.as_str().to_owned(),
        score: verdict.score,
        decision: verdict.decision.as_str().to_owned(),
        reasons: serde_json::to_string(&reasons)
            .map_err(|_| ServiceError::internal("assessment reasons"))?,
        features: features.to_stored(),
        rules_version: rules.version.clone(),
        model_version: models.active.as_ref().map(|m| m.version().to_owned()),
        fingerprint: subjects.fingerprint,
        ip: subjects.ip.map(|ip| ip.to_string()),
        email_digest: subjects.email_digest,
        device_id: subjects.device,
        key_id: Some(who.key_id.clone()),
        suspension_id: suspension,
        label: None,
        label_ms: None,
        created_ms: now,
    };
    Ok(record)
}

/// The reasons the lists give: `block_listed` (it blocks) and `allow_listed` (it allows
/// unless something blocks), each naming the kinds of entry matched, never the values.
fn list_reasons(listed: &ListHits) -> Vec<Reason> {
    let kinds = |k: &[ListKind]| k.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    if listed.block > 0 {
        out.push(Reason {
            code: "block_listed".into(),
            detail: format!("on the block list (by {})", kinds(&listed.block_kinds)),
            weight: 100,
            source: "list".into(),
        });
    }
    if listed.allow > 0 {
        out.push(Reason {
            code: "allow_listed".into(),
            detail: format!(
                "on the allow list (by {}): allowed unless suspended or block-listed",
                kinds(&listed.allow_kinds)
            ),
            weight: 0,
            source: "list".into(),
        });
    }
    out
}

/// The reason a rule gives: its description and the signals it read.
fn rule_reason(hit: &Hit<'_>, signals: &Signals) -> Reason {
    let read = hit.values_read(signals);
    let detail = match (hit.rule.description.as_deref(), read.is_empty()) {
        (None | Some(""), _) => read,
        (Some(d), true) => d.to_owned(),
        (Some(d), false) => format!("{d} ({read})"),
    };
    Reason {
        code: hit.rule.id.clone(),
        detail,
        weight: hit.rule.score,
        source: "rule".into(),
    }
}

/// Makes the suspension a rule's action asks for, unless the use has no such subject or
/// it is suspended already: the new suspension's id.
async fn suspend(
    state: &AppState,
    who: &Principal,
    audit: &std::sync::Arc<strongroom_store::AuditScope>,
    subjects: &Subjects,
    active: &crate::gateway::suspended::Active,
    rule: &RuleSpec,
    now: i64,
) -> Result<Option<String>> {
    let Some(RuleAction::Suspend { target, duration }) = rule.action else {
        return Ok(None);
    };
    let mode = who.mode;
    let (kind, value, already) = match target {
        SuspendTarget::Ip | SuspendTarget::Network => {
            let Some(ip) = subjects.ip else {
                return Ok(None);
            };
            let net = if target == SuspendTarget::Ip {
                ipnet::IpNet::from(ip)
            } else {
                let prefix = if ip.is_ipv4() { 24 } else { 64 };
                ipnet::IpNet::new(strongroom_risk::network_of(ip), prefix)
                    .map_err(|_| ServiceError::internal("network prefix"))?
            };
            let already = active.any_of(mode, now, None, Some(ip), None, None);
            (TargetType::Ip, net.to_string(), already)
        }
        SuspendTarget::Card => {
            let Some(fp) = subjects.fingerprint.as_deref() else {
                return Ok(None);
            };
            let already = active.any_of(mode, now, Some(fp), None, None, None);
            (TargetType::Card, fp.to_owned(), already)
        }
        SuspendTarget::Email => {
            let Some(d) = subjects.email_digest.as_deref() else {
                return Ok(None);
            };
            let already = active.any_of(mode, now, None, None, Some(d), None);
            (TargetType::Email, d.to_owned(), already)
        }
        SuspendTarget::DeviceId => {
            let Some(d) = subjects.device.as_deref() else {
                return Ok(None);
            };
            let already = active.any_of(mode, now, None, None, None, Some(d));
            (TargetType::Device, d.to_owned(), already)
        }
    };
    if already {
        return Ok(None);
    }
    let subject = Subject {
        account_id: &who.account_id,
        mode,
        kind,
        target: value,
    };
    let reason = rule.description.as_deref().unwrap_or(rule.id.as_str());
    let by = format!("rule:{}", rule.id);
    let made = suspensions::store(state, audit, subject, reason, &by, duration).await?;
    Ok(Some(made.id))
}

/// The subjects a request names, checked: the card of this account and mode (or a
/// fingerprint), the address, the email (digested at once), the device.
async fn subjects_of(state: &AppState, who: &Principal, new: &NewAssessment) -> Result<Subjects> {
    let (fingerprint, bin) = match card_named(state, who, &new.card, &new.fingerprint).await? {
        Some((fp, bin)) => (Some(fp), bin),
        None => (None, None),
    };
    let ip = new
        .ip
        .as_deref()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| ServiceError::InvalidParameter)
        })
        .transpose()?;
    let email_digest = match new.email.as_deref().map(str::trim) {
        Some(e)
            if e.len() <= 254
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty()) =>
        {
            Some(suspensions::email_digest(state, &who.account_id, e))
        }
        Some(_) => return Err(ServiceError::InvalidParameter),
        None => None,
    };
    let device = match new.device_id.as_deref() {
        Some(d) if (1..=200).contains(&d.chars().count()) && !d.chars().any(char::is_control) => {
            Some(d.to_owned())
        }
        Some(_) => return Err(ServiceError::InvalidParameter),
        None => None,
    };
    Ok(Subjects {
        fingerprint,
        bin,
        ip,
        email_digest,
        device,
    })
}

/// The card a request names by `card` (an id of the caller's account and mode: its
/// fingerprint and BIN) or by `fingerprint` (no BIN); `None` when it names neither.
/// Both is `invalid_parameter`, a malformed fingerprint too; an unknown card `not_found`.
pub(crate) async fn card_named(
    state: &AppState,
    who: &Principal,
    card: &Option<String>,
    fingerprint: &Option<String>,
) -> Result<Option<(String, Option<String>)>> {
    match (card, fingerprint) {
        (Some(_), Some(_)) => Err(ServiceError::InvalidParameter),
        (Some(id), None) => {
            strongroom_core::parse_id(IdKind::Card, id)?;
            let card = state
                .store()
                .get_card(&who.account_id, who.mode, id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            Ok(Some((
                URL_SAFE_NO_PAD.encode(&card.fingerprint),
                Some(card.bin),
            )))
        }
        (None, Some(fp)) => {
            if !URL_SAFE_NO_PAD.decode(fp).is_ok_and(|b| b.len() == 32) {
                return Err(ServiceError::InvalidParameter);
            }
            Ok(Some((fp.clone(), None)))
        }
        (None, None) => Ok(None),
    }
}

/// A label the merchant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The use was fraud.
    Fraud,
    /// The use was genuine.
    Legitimate,
    /// The payment was charged back (trained as fraud).
    Chargeback,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Self::Fraud => "fraud",
            Self::Legitimate => "legitimate",
            Self::Chargeback => "chargeback",
        }
    }
}

/// Body of `POST /v1/risk/feedback`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFeedback {
    /// One assessment (`risk_…`); or give `card`.
    #[schema(pattern = "^risk_[0-9a-f]{32}$")]
    pub assessment: Option<String>,
    /// A card (`card_…`): every assessment of its number is labelled.
    #[schema(pattern = "^card_[0-9a-f]{32}$")]
    pub card: Option<String>,
    /// What the use turned out to be.
    pub label: Label,
    /// Unix seconds: when it turned out so (default now).
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 0, maximum = 32_503_680_000_i64)]
    pub at: Option<i64>,
}

/// What feedback did.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackView {
    /// Always `risk_feedback`.
    pub object: &'static str,
    /// The label given.
    pub label: Label,
    /// How many assessments it labelled.
    pub labelled: i64,
}

/// Labels assessments of the caller's account and mode (`risk:write`): one, or every
/// one of a card's number. The labels are what `strongroom risk train` learns from.
pub async fn feedback(
    state: &AppState,
    who: &Principal,
    new: &NewFeedback,
) -> Result<FeedbackView> {
    who.require(Scope::RiskWrite)?;
    let target = match (&new.assessment, &new.card) {
        (Some(id), None) => {
            strongroom_core::parse_id(IdKind::RiskAssessment, id)?;
            LabelTarget::Assessment(id.clone())
        }
        (None, Some(id)) => {
            strongroom_core::parse_id(IdKind::Card, id)?;
            let card = state
                .store()
                .get_card(&who.account_id, who.mode, id)
                .await?
                .ok_or(ServiceError::NotFound)?;
            LabelTarget::Fingerprint(URL_SAFE_NO_PAD.encode(&card.fingerprint))
        }
        (None, None) => return Err(ServiceError::MissingField),
        (Some(_), Some(_)) => return Err(ServiceError::InvalidParameter),
    };
    let at_ms = match new.at {
        Some(s) => s.checked_mul(1000).ok_or(ServiceError::InvalidParameter)?,
        None => state.now_ms(),
    };
    let labelled = state
        .store()
        .audited(&who.audit)
        .label_assessments(&who.account_id, who.mode, target, new.label.as_str(), at_ms)
        .await?;
    if labelled == 0 {
        return Err(ServiceError::NotFound);
    }
    Ok(FeedbackView {
        object: "risk_feedback",
        label: new.label,
        labelled,
    })
}

/// One assessment of the caller's account and mode (`risk:read`).
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<AssessmentView> {
    who.require(Scope::RiskRead)?;
    strongroom_core::parse_id(IdKind::RiskAssessment, id)?;
    let r = state
        .store()
        .assessment(&who.account_id, who.mode, id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    Ok(AssessmentView::new(&r))
}
