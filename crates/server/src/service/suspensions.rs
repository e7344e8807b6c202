//! Suspensions (docs/risk.md, "Suspensions"): a card, an address or network, an email,
//! a device, an API key or a whole account refused until a set time. The merchant's
//! back end makes and lifts them for its account (`risk:write`); operators for any
//! account, the account itself included, and they may lift any. The risk rules will
//! make them too (`created_by: "rule:…"`).
//!
//! The gateway refuses a suspended account, key or address before anything else; the
//! card services refuse a suspended card number (by fingerprint, under every usable
//! fingerprint key). Email and device suspensions are for risk assessments, which carry
//! those. An email is kept only as a keyed digest. Each suspension ends by itself at
//! `expires_at`; the expiry sweep then records its end (`suspension.lifted`).

use crate::auth::Principal;
use crate::gateway::suspended::parse_net;
use crate::service::events::EventType;
use crate::service::{List, Result, ServiceError, secs};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::{IdKind, Mode, Scope};
use strongroom_store::{AuditScope, SuspensionRecord, SuspensionStore, VaultStore};
use utoipa::ToSchema;

/// Shortest suspension, in seconds.
pub const MIN_DURATION_S: i64 = 60;
/// Longest suspension, in seconds (90 days).
pub const MAX_DURATION_S: i64 = 90 * 24 * 3600;
/// Longest reason, in characters.
pub const REASON_MAX: usize = 200;
/// Longest device id, in characters.
pub const DEVICE_MAX: usize = 200;
/// How often the expiry sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most suspensions the sweep ends per pass.
const SWEEP_BATCH: i64 = 100;

/// What is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    /// A card number: `value` is a card id (`card_…`) or a fingerprint as the card
    /// object shows it.
    Card,
    /// An IP address or network (CIDR).
    Ip,
    /// An email address (kept only as a keyed digest).
    Email,
    /// A device id, as the merchant's app names it.
    Device,
    /// An API key of the account (`key_…`).
    ApiKey,
    /// The whole account, both modes (operators only).
    Account,
}

impl TargetType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Ip => "ip",
            Self::Email => "email",
            Self::Device => "device",
            Self::ApiKey => "api_key",
            Self::Account => "account",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Card,
            Self::Ip,
            Self::Email,
            Self::Device,
            Self::ApiKey,
            Self::Account,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
}

/// A suspension's subject.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// What kind of subject.
    #[serde(rename = "type")]
    pub kind: TargetType,
    /// The subject. Answered as stored: a card's fingerprint (not the card id), a
    /// network in CIDR form, an email's keyed digest (hex), the device or key id, the
    /// account id.
    #[schema(max_length = 320)]
    pub value: String,
}

/// Body of `POST /v1/suspensions` (and of the operators' route).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuspension {
    /// What to suspend.
    pub target: Target,
    /// Why: 1 to 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
    /// Seconds from now until it ends by itself: 60 to 7 776 000 (90 days).
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 60, maximum = 7_776_000)]
    pub expires_in: i64,
    /// Operators' route only: the mode it holds in (`test` or `live`; an account's
    /// suspension holds in both). Account keys suspend in their own mode.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(test|live)$")]
    pub mode: Option<String>,
}

/// A suspension.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuspensionView {
    /// `susp_…`
    pub id: String,
    /// Always `suspension`.
    pub object: &'static str,
    /// `test` or `live`.
    pub mode: &'static str,
    /// What it suspends.
    pub target: Target,
    /// Why.
    pub reason: String,
    /// `key:<id>` (an account key), `admin:<id>` (an operator) or `rule:<id>`.
    pub created_by: String,
    /// `active`, `expired` or `lifted`.
    pub status: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds: it ends by itself then.
    pub expires_at: i64,
    /// Unix seconds: when it was lifted or its expiry was recorded; null while active.
    pub lifted_at: Option<i64>,
    /// Who lifted it (`expiry` for the sweep); null while active.
    pub lifted_by: Option<String>,
}

impl SuspensionView {
    /// The view of a stored suspension at `now_ms`.
    pub fn new(r: &SuspensionRecord, now_ms: i64) -> Self {
        let status = if r.lifted_ms.is_some_and(|l| l < r.expires_ms) {
            "lifted"
        } else if r.active(now_ms) {
            "active"
        } else {
            "expired"
        };
        Self {
            id: r.id.clone(),
            object: "suspension",
            mode: r.mode.as_str(),
            target: Target {
                kind: TargetType::parse(&r.target_kind).unwrap_or(TargetType::Device),
                value: r.target.clone(),
            },
            reason: r.reason.clone(),
            created_by: r.created_by.clone(),
            status,
            created: secs(r.created_ms),
            expires_at: secs(r.expires_ms),
            lifted_at: r.lifted_ms.map(secs),
            lifted_by: r.lifted_by.clone(),
        }
    }
}

/// The keyed digest an email is kept as (per account: the same address in two accounts
/// gives two digests).
pub fn email_digest(state: &AppState, account_id: &str, email: &str) -> String {
    let normal = email.trim().to_lowercase();
    let input = format!("{account_id}|{normal}");
    hex::encode(state.root().digest("risk-email", input.as_bytes()))
}

/// Whether `s` is 1 to `max` characters with no control character.
pub(crate) fn printable(s: &str, max: usize) -> bool {
    let n = s.chars().count();
    (1..=max).contains(&n) && !s.chars().any(char::is_control)
}

/// The fingerprint a subject value names as the card object spells it: a card id of the
/// account and mode (looked up), or a fingerprint itself (32 bytes, base64url). `None`
/// for anything else, a card of another account or mode included.
pub(crate) async fn card_fingerprint(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    v: &str,
) -> Result<Option<String>> {
    if v.starts_with(IdKind::Card.prefix()) {
        if strongroom_core::parse_id(IdKind::Card, v).is_err() {
            return Ok(None);
        }
        let card = state.store().get_card(account_id, mode, v).await?;
        return Ok(card.map(|c| URL_SAFE_NO_PAD.encode(&c.fingerprint)));
    }
    let ok = URL_SAFE_NO_PAD.decode(v).is_ok_and(|b| b.len() == 32);
    Ok(ok.then(|| v.to_owned()))
}

/// The keyed digest of an email address given as a subject; `None` when it is not one.
pub(crate) fn email_subject(state: &AppState, account_id: &str, v: &str) -> Option<String> {
    let ok = v.len() <= 254
        && v.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && printable(v, 254);
    ok.then(|| email_digest(state, account_id, v))
}

/// The stored form of a target of `account_id` in `mode`: checked, normalized, an email
/// digested, a card id turned into its fingerprint.
async fn stored_target(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    t: &Target,
) -> Result<String> {
    let bad = || ServiceError::SuspensionTargetInvalid;
    let v = t.value.trim();
    Ok(match t.kind {
        TargetType::Card => card_fingerprint(state, account_id, mode, v)
            .await?
            .ok_or_else(bad)?,
        TargetType::Ip => parse_net(v).ok_or_else(bad)?.to_string(),
        TargetType::Email => email_subject(state, account_id, v).ok_or_else(bad)?,
        TargetType::Device if printable(v, DEVICE_MAX) => v.to_owned(),
        TargetType::Device => return Err(bad()),
        TargetType::ApiKey => {
            strongroom_core::parse_id(IdKind::ApiKey, v).map_err(|_| bad())?;
            let keys = state.store().list_api_keys(Some(account_id)).await?;
            if !keys.iter().any(|k| k.id == v) {
                return Err(bad());
            }
            v.to_owned()
        }
        TargetType::Account if v == account_id => v.to_owned(),
        TargetType::Account => return Err(bad()),
    })
}

/// Who is making a suspension.
pub enum Maker<'a> {
    /// An account key of the account, in its mode.
    Key(&'a Principal),
    /// An operator, for any account and mode.
    Admin {
        /// The admin key's id.
        key_id: &'a str,
        /// The request's audit scope.
        audit: &'a Arc<AuditScope>,
    },
}

impl Maker<'_> {
    fn name(&self) -> String {
        match self {
            Self::Key(p) => format!("key:{}", p.key_id),
            Self::Admin { key_id, .. } => format!("admin:{key_id}"),
        }
    }

    fn audit(&self) -> &Arc<AuditScope> {
        match self {
            Self::Key(p) => &p.audit,
            Self::Admin { audit, .. } => audit,
        }
    }
}

/// Suspends a subject of `account_id`: by an account key in its own mode (not the
/// account itself), or by an operator in the mode the body names.
pub async fn create(
    state: &AppState,
    maker: Maker<'_>,
    account_id: &str,
    new: &NewSuspension,
) -> Result<SuspensionView> {
    let mode = match (&maker, new.mode.as_deref()) {
        (Maker::Key(p), None) => {
            p.require(Scope::RiskWrite)?;
            if new.target.kind == TargetType::Account {
                return Err(ServiceError::PermissionDenied);
            }
            p.mode
        }
        (Maker::Key(_), Some(_)) => return Err(ServiceError::InvalidParameter),
        (Maker::Admin { .. }, m) => match m.map(Mode::parse) {
            Some(Some(m)) => m,
            Some(None) => return Err(ServiceError::InvalidParameter),
            None => return Err(ServiceError::MissingField),
        },
    };
    if !printable(&new.reason, REASON_MAX) {
        return Err(ServiceError::InvalidParameter);
    }
    if !(MIN_DURATION_S..=MAX_DURATION_S).contains(&new.expires_in) {
        return Err(ServiceError::InvalidParameter);
    }
    if state.store().get_account(account_id).await?.is_none() {
        return Err(ServiceError::NotFound);
    }
    let target = stored_target(state, account_id, mode, &new.target).await?;
    let subject = Subject {
        account_id,
        mode,
        kind: new.target.kind,
        target,
    };
    store(
        state,
        maker.audit(),
        subject,
        &new.reason,
        &maker.name(),
        new.expires_in,
    )
    .await
}

/// A checked, stored-form subject of a suspension.
pub struct Subject<'a> {
    /// The account.
    pub account_id: &'a str,
    /// The mode it holds in.
    pub mode: Mode,
    /// What kind of subject.
    pub kind: TargetType,
    /// Its stored form (a fingerprint, a network, a digest, an id).
    pub target: String,
}

/// Stores a suspension of a checked subject, for `expires_in` seconds, with its event.
pub async fn store(
    state: &AppState,
    audit: &Arc<AuditScope>,
    subject: Subject<'_>,
    reason: &str,
    created_by: &str,
    expires_in: i64,
) -> Result<SuspensionView> {
    let now = state.now_ms();
    let record = SuspensionRecord {
        id: state.new_id(IdKind::Suspension)?,
        account_id: subject.account_id.to_owned(),
        mode: subject.mode,
        target_kind: subject.kind.as_str().to_owned(),
        target: subject.target,
        reason: reason.to_owned(),
        created_by: created_by.to_owned(),
        created_ms: now,
        expires_ms: now.saturating_add(expires_in.saturating_mul(1000)),
        lifted_ms: None,
        lifted_by: None,
    };
    let view = SuspensionView::new(&record, now);
    let event = state.event_of(
        &record.account_id,
        record.mode,
        EventType::SuspensionCreated,
        &view,
    )?;
    crate::audit::set_resource(audit, "suspension", &record.id);
    state
        .store()
        .audited(audit)
        .insert_suspension(&record, &[event])
        .await?;
    state.gateway().forget_suspensions(&record.account_id);
    Ok(view)
}

/// One suspension of the caller's account and mode.
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<SuspensionView> {
    who.require(Scope::RiskRead)?;
    let r = find(state, &who.account_id, id)
        .await?
        .filter(|r| r.mode == who.mode)
        .ok_or(ServiceError::NotFound)?;
    Ok(SuspensionView::new(&r, state.now_ms()))
}

async fn find(state: &AppState, account_id: &str, id: &str) -> Result<Option<SuspensionRecord>> {
    if strongroom_core::parse_id(IdKind::Suspension, id).is_err() {
        return Ok(None);
    }
    Ok(state.store().suspension(account_id, id).await?)
}

/// A page of the caller's suspensions in its mode, newest first.
pub async fn list(
    state: &AppState,
    who: &Principal,
    starting_after: Option<String>,
    limit: i64,
) -> Result<List<SuspensionView>> {
    who.require(Scope::RiskRead)?;
    if !(1..=100).contains(&limit) {
        return Err(ServiceError::InvalidParameter);
    }
    if let Some(after) = &starting_after {
        strongroom_core::parse_id(IdKind::Suspension, after)
            .map_err(|_| ServiceError::InvalidParameter)?;
    }
    let mut rows = state
        .store()
        .suspensions(
            &who.account_id,
            who.mode,
            starting_after.as_deref(),
            limit.saturating_add(1),
        )
        .await?;
    let has_more = crate::extract::page(&mut rows, limit);
    let now = state.now_ms();
    let views = rows.iter().map(|r| SuspensionView::new(r, now)).collect();
    Ok(List::page(views, has_more))
}

/// Lifts a suspension of `account_id` now: an account key may lift those of its mode
/// (not the account's own, which is the operator's); an operator any. Lifting one that
/// already ended answers it as it is.
pub async fn lift(
    state: &AppState,
    maker: Maker<'_>,
    account_id: &str,
    id: &str,
) -> Result<SuspensionView> {
    let r = find(state, account_id, id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    if let Maker::Key(p) = &maker {
        p.require(Scope::RiskWrite)?;
        if r.mode != p.mode {
            return Err(ServiceError::NotFound);
        }
        if r.target_kind == TargetType::Account.as_str() {
            return Err(ServiceError::PermissionDenied);
        }
    }
    let now = state.now_ms();
    crate::audit::set_resource(maker.audit(), "suspension", id);
    if !r.active(now) {
        return Ok(SuspensionView::new(&r, now));
    }
    let lifted = end(state, &r, now, &maker.name(), maker.audit()).await?;
    Ok(SuspensionView::new(lifted.as_ref().unwrap_or(&r), now))
}

/// Records the end of `r` (lifted by `by`, or `expiry`) with its `suspension.lifted`
/// event; `None` when another request or node ended it first.
async fn end(
    state: &AppState,
    r: &SuspensionRecord,
    now: i64,
    by: &str,
    audit: &Arc<AuditScope>,
) -> Result<Option<SuspensionRecord>> {
    let mut after = r.clone();
    after.lifted_ms = Some(now);
    after.lifted_by = Some(by.to_owned());
    let view = SuspensionView::new(&after, now);
    let event = state.event_of(&r.account_id, r.mode, EventType::SuspensionLifted, &view)?;
    let lifted = state
        .store()
        .audited(audit)
        .lift_suspension(&r.account_id, &r.id, now, by, &[event])
        .await?;
    state.gateway().forget_suspensions(&r.account_id);
    Ok(lifted)
}

/// Refuses a card whose number is suspended: `fingerprints` as the card object spells
/// them, under each usable fingerprint key.
pub async fn check_card<'f>(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    fingerprints: impl IntoIterator<Item = &'f [u8]>,
) -> Result<()> {
    let active = state
        .gateway()
        .suspensions(account_id)
        .await
        .map_err(|_| ServiceError::internal("suspensions unavailable"))?;
    if active.is_empty() {
        return Ok(());
    }
    let spelled: Vec<String> = fingerprints
        .into_iter()
        .map(|f| URL_SAFE_NO_PAD.encode(f))
        .collect();
    match active.card(mode, &spelled, state.now_ms()) {
        Some(retry_after) => Err(ServiceError::Suspended { retry_after }),
        None => Ok(()),
    }
}

/// One pass of the expiry sweep: records the end of suspensions past `expires_at`.
pub async fn sweep_once(state: &AppState) -> Result<usize> {
    let now = state.now_ms();
    let ended = state.store().ended_suspensions(now, SWEEP_BATCH).await?;
    for r in &ended {
        // A system record (actor `system`) commits with each end.
        let audit = crate::audit::Origin::System.scope(state.clock(), "suspension.expired");
        crate::audit::set_resource(&audit, "suspension", &r.id);
        end(state, r, now, "expiry", &audit).await?;
    }
    Ok(ended.len())
}

/// Runs the expiry sweep in the background. Each node sweeps; the write lifts only what
/// is not lifted yet, so a suspension's end is recorded (and announced) once.
pub fn spawn(state: AppState) {
    state.clone().spawn_worker(async move {
        loop {
            if let Err(e) = sweep_once(&state).await {
                tracing::warn!(error = ?e, "suspension sweep failed; will retry");
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    });
}
