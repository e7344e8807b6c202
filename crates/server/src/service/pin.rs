//! The PIN service: RSA-OAEP PIN transport, ISO 9564-1 format 4 blocks under the
//! account's `pin` key, set / reset / verify / change with OTPs, and lockout.
//!
//! A clear PIN exists only as a [`Pin`] (zeroizing, masked) during one request. Nothing
//! returns a PIN or a PIN block; events and logs name the card, never the PIN.

use crate::auth::{Admin, Principal};
use crate::keyring::AccountKeys;
use crate::service::{Result, ServiceError};
use crate::service::{cards, otp};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use strongroom_core::{Scope, Sensitive};
use strongroom_crypto::jwe::{CompactJwe, JweError, TransportKey};
use strongroom_crypto::pin::{self as blocks, Pin, PinBlock};
use strongroom_store::{
    AuditScope, CardRecord, EventRecord, KeyPurpose, PinOutcome, PinRecord, PinRewrap, PinStore,
    SetKind, SpendOtp, VaultStore,
};
use utoipa::ToSchema;

/// The PIN transport key (RFC 7517 JWK).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PinJwk {
    /// Always `RSA`.
    pub kty: String,
    /// Put it in the JWE header.
    pub kid: String,
    /// Always `enc`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `RSA-OAEP-256`.
    pub alg: String,
    /// Modulus (3072 bits), base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
}

impl PinJwk {
    fn of(key: &TransportKey, kid: &str) -> Result<Self> {
        serde_json::from_value(key.public_jwk(kid))
            .map_err(|_| ServiceError::internal("transport JWK lacks a member"))
    }
}

/// A card's PIN state (never the PIN).
#[derive(Serialize, ToSchema)]
pub struct PinView {
    /// Always `card_pin`.
    pub object: &'static str,
    /// `card_…`
    pub card: String,
    /// Always true after a set.
    pub set: bool,
    /// Whether a `pin.reset` OTP was used.
    pub reset: bool,
}

impl From<SetResult> for PinView {
    fn from(done: SetResult) -> Self {
        Self {
            object: "card_pin",
            card: done.card_id,
            set: true,
            reset: done.reset,
        }
    }
}

/// The result of a verification.
#[derive(Serialize, ToSchema)]
pub struct VerifyResult {
    /// Whether the PIN matched.
    #[serde(rename = "match")]
    pub matched: bool,
}

/// A card's PIN after an operator unlocked it.
#[derive(Serialize, ToSchema)]
pub struct PinUnlockedView {
    /// Always `card_pin`.
    pub object: &'static str,
    /// `card_…`
    pub card: String,
    /// Always false.
    pub locked: bool,
}

/// An account's PIN settings.
#[derive(Serialize, ToSchema)]
pub struct PinSettingsView {
    /// Always `pin_settings`.
    pub object: &'static str,
    /// `acct_…`
    pub account: String,
    /// Consecutive failures before a PIN locks.
    pub max_failures: i64,
}

pub use crate::config::{DEFAULT_DENY_LIST, DEFAULT_MAX_FAILURES};

/// The range an account may choose.
pub const MAX_FAILURES_RANGE: std::ops::RangeInclusive<i64> = 1..=10;
/// A payload's `iat` may be at most this old.
pub const PAYLOAD_MAX_AGE_S: i64 = 5 * 60;
const CLOCK_SKEW_S: i64 = 5;

/// Makes a new transport key the current one; older keys decrypt for the grace period.
pub async fn rotate_transport_key(state: &AppState, admin: &Admin) -> Result<PinJwk> {
    let (kid, key) = state.pin().rotate(&admin.audit).await?;
    PinJwk::of(&key, &kid)
}

/// The current transport key as a JWK, made on first use.
pub async fn current_jwk(state: &AppState, who: &Principal) -> Result<PinJwk> {
    let (kid, key) = state.pin().current(&who.audit).await?;
    PinJwk::of(&key, &kid)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    pin: Sensitive<String>,
    card: String,
    iat: i64,
    jti: String,
}

/// Decrypts and checks an encrypted PIN payload for `card`, and spends its `jti`.
async fn open_payload(
    state: &AppState,
    who: &Principal,
    card: &CardRecord,
    compact: &str,
) -> Result<Pin> {
    let jwe = CompactJwe::parse(compact).map_err(|e| match e {
        JweError::Unsupported => ServiceError::PinPayloadUnsupported,
        JweError::Malformed | JweError::Decrypt => ServiceError::PinPayloadInvalid,
    })?;
    let key = state.pin().key(&jwe.kid).await?;
    let plain = key
        .decrypt(&jwe)
        .map_err(|_| ServiceError::PinPayloadInvalid)?;
    let payload: Payload =
        serde_json::from_slice(&plain).map_err(|_| ServiceError::PinPayloadInvalid)?;
    if payload.card != card.id {
        return Err(ServiceError::PinPayloadCardMismatch);
    }
    let now_s = state.now_ms().div_euclid(1000);
    if payload.iat > now_s.saturating_add(CLOCK_SKEW_S)
        || now_s.saturating_sub(payload.iat) > PAYLOAD_MAX_AGE_S
    {
        return Err(ServiceError::PinPayloadStale);
    }
    if payload.jti.is_empty() || payload.jti.len() > 128 {
        return Err(ServiceError::PinPayloadInvalid);
    }
    let pin = Pin::new(payload.pin.expose()).ok_or(ServiceError::PinLength)?;
    // Kept until the payload would be stale anyway, so replays are refused across nodes
    // and restarts.
    let expires_ms = (payload.iat + PAYLOAD_MAX_AGE_S + CLOCK_SKEW_S + 1) * 1000;
    if !state
        .store()
        .audited(&who.audit)
        .spend_pin_jti(&who.account_id, &payload.jti, expires_ms, state.now_ms())
        .await?
    {
        return Err(ServiceError::PinPayloadReplayed);
    }
    Ok(pin)
}

/// Refuses trivial PINs: one digit repeated, an ascending or descending run, or a PIN
/// on the deny list.
///
/// ```text
/// 0000, 1234, 9876, 7890, 012345678901, 2109: too weak;  5803, 1357: accepted
/// ```
pub fn check_strength(state: &AppState, pin: &Pin) -> Result<()> {
    let d = pin.expose_digits().as_bytes();
    // Runs wrap around (7890, 2109), as they do on a keypad's digit sequence.
    let steps = |delta: i16| {
        d.windows(2)
            .all(|w| matches!(w, [a, b] if (i16::from(*b) - i16::from(*a)).rem_euclid(10) == delta))
    };
    let denied = state
        .config()
        .pin_deny_list
        .iter()
        .any(|p| strongroom_crypto::ct_eq(p.as_bytes(), d));
    if steps(0) || steps(1) || steps(9) || denied {
        return Err(ServiceError::PinTooWeak);
    }
    Ok(())
}

/// The account's keys with a `pin` writer, made now for accounts older than the PIN
/// service.
async fn pin_keys(state: &AppState, who: &Principal) -> Result<Arc<AccountKeys>> {
    let account_id = &who.account_id;
    let keys = state.keyring().account(account_id).await?;
    if keys.has_writer(KeyPurpose::Pin) {
        return Ok(keys);
    }
    let keys = state.keyring().reload(account_id).await?;
    if keys.has_writer(KeyPurpose::Pin) {
        return Ok(keys);
    }
    match state
        .keyring()
        .rotate(&who.audit, account_id, KeyPurpose::Pin)
        .await
    {
        Ok(_) => {}
        // Another request made it first.
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(e),
    }
    state.keyring().reload(account_id).await
}

fn pan_of(keys: &AccountKeys, card: &CardRecord) -> Result<cards::RevealedCard> {
    cards::open(keys, card)
}

/// Deciphers the stored PIN. Reloads the keyring once if the version is unknown here.
async fn stored_pin(
    state: &AppState,
    card: &CardRecord,
    rec: &PinRecord,
) -> Result<(Pin, Arc<AccountKeys>)> {
    let mut keys = state.keyring().account(&card.account_id).await?;
    if !keys.has_version(KeyPurpose::Pin, rec.key_version) {
        keys = state.keyring().reload(&card.account_id).await?;
    }
    let key = keys.pin_key(rec.key_version)?;
    let pan = pan_of(&keys, card)?;
    let block = PinBlock::from_bytes(&rec.block)?;
    let pin = blocks::decipher(&key, &block, &pan.number)?;
    Ok((pin, keys))
}

fn encipher(keys: &AccountKeys, card: &CardRecord, pin: &Pin) -> Result<(i64, Vec<u8>)> {
    let (version, key) = keys.pin_writer()?;
    let pan = pan_of(keys, card)?;
    let block = blocks::encipher(&key, pin, &pan.number)?;
    Ok((version, block.expose_bytes().to_vec()))
}

/// The `object` of a PIN event. Fields in alphabetical order, as the event JSON has
/// always had them.
#[derive(serde::Serialize)]
struct PinEvent<'a> {
    /// The key or token that acted.
    actor: &'a str,
    /// The card.
    card: &'a str,
    /// Always `card_pin`.
    object: &'static str,
    /// The failed operation (`pin.verification_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
    /// Whether the PIN was reset rather than set (`pin.set` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reset: Option<bool>,
}

impl<'a> PinEvent<'a> {
    fn new(card: &'a str, actor: &'a str) -> Self {
        Self {
            actor,
            card,
            object: "card_pin",
            operation: None,
            reset: None,
        }
    }
}

fn event(
    state: &AppState,
    card: &CardRecord,
    kind: crate::service::events::EventType,
    who: &str,
) -> Result<EventRecord> {
    state.event_of(
        &card.account_id,
        card.mode,
        kind,
        &PinEvent::new(&card.id, who),
    )
}

fn failure_event(
    state: &AppState,
    card: &CardRecord,
    who: &str,
    operation: &str,
) -> Result<EventRecord> {
    state.event_of(
        &card.account_id,
        card.mode,
        crate::service::events::EventType::PinVerificationFailed,
        &PinEvent {
            operation: Some(operation),
            ..PinEvent::new(&card.id, who)
        },
    )
}

/// One audit event per PIN operation, beside the request's own record: it names what
/// happened (`pin.reset` rather than the route's `pin.set`, `pin.verify.mismatch` for a
/// 200 that did not match) and commits with the request's write or its final record.
/// The actor and client come from the request; never a PIN.
fn audit(scope: &AuditScope, op: &str, card_id: &str, result: &Result<impl Sized>) {
    let (outcome, code) = match result {
        Ok(_) if op.ends_with(".mismatch") => (crate::audit::FAILURE, "pin_mismatch"),
        Ok(_) => (crate::audit::SUCCESS, ""),
        Err(e) => (crate::audit::FAILURE, crate::audit::code_of(e)),
    };
    // The id comes from the URL: record it only if it is a well-formed card id.
    let resource = if strongroom_core::parse_id(strongroom_core::IdKind::Card, card_id).is_ok() {
        format!("card:{card_id}")
    } else {
        String::new()
    };
    crate::audit::event(scope, op, &resource, outcome, code);
}

/// The account's lockout threshold.
pub async fn max_failures(state: &AppState, account_id: &str) -> Result<i64> {
    Ok(state
        .store()
        .pin_max_failures(account_id)
        .await?
        .unwrap_or(state.config().pin_max_failures))
}

/// An existing account's PIN settings (`not_found` for no such account).
pub async fn settings(state: &AppState, account_id: &str) -> Result<PinSettingsView> {
    state.accounts().get(account_id).await?;
    Ok(PinSettingsView {
        object: "pin_settings",
        account: account_id.to_owned(),
        max_failures: max_failures(state, account_id).await?,
    })
}

/// Sets an existing account's lockout threshold (`invalid_parameter` outside
/// [`MAX_FAILURES_RANGE`]). The write carries the operator's request scope.
pub async fn set_max_failures(
    state: &AppState,
    admin: &Admin,
    account_id: &str,
    max: i64,
) -> Result<PinSettingsView> {
    strongroom_core::parse_id(strongroom_core::IdKind::Account, account_id)?;
    if !MAX_FAILURES_RANGE.contains(&max) {
        return Err(ServiceError::InvalidParameter);
    }
    state.accounts().get(account_id).await?;
    state
        .store()
        .audited(&admin.audit)
        .set_pin_max_failures(account_id, max)
        .await?;
    settings(state, account_id).await
}

fn outcome_err(o: PinOutcome) -> ServiceError {
    match o {
        PinOutcome::Locked => ServiceError::PinLocked,
        PinOutcome::Missing => ServiceError::PinNotSet,
        PinOutcome::AlreadySet => ServiceError::PinAlreadySet,
        PinOutcome::OtpInvalid => ServiceError::OtpInvalid,
        PinOutcome::Changed | PinOutcome::Done | PinOutcome::Failed { .. } => {
            ServiceError::Conflict
        }
    }
}

/// What `PUT /v1/cards/{id}/pin` did.
pub struct SetResult {
    /// The card.
    pub card_id: String,
    /// Whether a `pin.reset` OTP was used.
    pub reset: bool,
}

/// Sets the card's PIN with a `pin.set` OTP (first PIN) or a `pin.reset` OTP (replaces
/// and unlocks).
async fn set_inner(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    encrypted_pin: &str,
    otp_id: &str,
    code: &str,
) -> Result<SetResult> {
    who.require(Scope::PinsWrite)?;
    let card = cards::get(state, who, card_id).await?;
    crate::service::integrity::require(state, who, "pin.set").await?;
    let purpose = match state.store().get_otp(&who.account_id, otp_id).await? {
        Some(o) if o.purpose == "pin.set" || o.purpose == "pin.reset" => o.purpose,
        _ => return Err(ServiceError::OtpInvalid),
    };
    let kind = if purpose == "pin.reset" {
        SetKind::Reset
    } else {
        SetKind::Initial
    };
    if kind == SetKind::Initial
        && let Some(existing) = state
            .store()
            .get_pin(&who.account_id, who.mode, &card.id)
            .await?
    {
        return Err(if existing.locked {
            ServiceError::PinLocked
        } else {
            ServiceError::PinAlreadySet
        });
    }
    otp::check(state, who, otp_id, code, (&purpose, &card.id)).await?;
    let pin = open_payload(state, who, &card, encrypted_pin).await?;
    check_strength(state, &pin)?;
    let keys = pin_keys(state, who).await?;
    let (key_version, block) = encipher(&keys, &card, &pin)?;
    drop(pin);
    let now = state.now_ms();
    let record = PinRecord {
        card_id: card.id.clone(),
        account_id: card.account_id.clone(),
        mode: card.mode,
        key_version,
        block,
        failures: 0,
        locked: false,
        updated_ms: now,
    };
    let spend = SpendOtp {
        id: otp_id.to_owned(),
        purpose: purpose.clone(),
        now_ms: now,
        max_attempts: otp::OTP_MAX_ATTEMPTS,
    };
    let set_event = state.event_of(
        &card.account_id,
        card.mode,
        crate::service::events::EventType::PinSet,
        &PinEvent {
            reset: Some(kind == SetKind::Reset),
            ..PinEvent::new(&card.id, &who.key_id)
        },
    )?;
    let unlocked = event(
        state,
        &card,
        crate::service::events::EventType::PinUnlocked,
        &who.key_id,
    )?;
    let outcome = state
        .store()
        .audited(&who.audit)
        .set_pin(&record, kind, &spend, &[set_event], Some(&unlocked))
        .await?;
    match outcome {
        PinOutcome::Done => Ok(SetResult {
            card_id: card.id,
            reset: kind == SetKind::Reset,
        }),
        other => Err(outcome_err(other)),
    }
}

async fn unlocked_pin(state: &AppState, who: &Principal, card: &CardRecord) -> Result<PinRecord> {
    let rec = state
        .store()
        .get_pin(&who.account_id, who.mode, &card.id)
        .await?
        .ok_or(ServiceError::PinNotSet)?;
    if rec.locked {
        return Err(ServiceError::PinLocked);
    }
    Ok(rec)
}

/// Records a failed comparison; the error to return.
async fn count_failure(
    state: &AppState,
    who: &Principal,
    card: &CardRecord,
    rec: &PinRecord,
    operation: &str,
) -> Result<PinOutcome> {
    let max = max_failures(state, &card.account_id).await?;
    let failed = failure_event(state, card, &who.key_id, operation)?;
    let locked = event(
        state,
        card,
        crate::service::events::EventType::PinLocked,
        &who.key_id,
    )?;
    let outcome = state
        .store()
        .audited(&who.audit)
        .record_pin_attempt(rec, false, max, &[failed], Some(&locked))
        .await?;
    if let PinOutcome::Failed { locked: true, .. } = outcome {
        tracing::warn!(card = %card.id, "PIN locked after too many failures");
        crate::audit::event(
            &who.audit,
            "pin.locked",
            &format!("card:{}", card.id),
            crate::audit::FAILURE,
            crate::audit::code_of(&ServiceError::PinLocked),
        );
    }
    Ok(outcome)
}

/// Verifies a PIN. `Ok(true)` on a match, `Ok(false)` otherwise (counted).
async fn verify_inner(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    encrypted_pin: &str,
) -> Result<bool> {
    who.require(Scope::PinsVerify)?;
    let card = cards::get(state, who, card_id).await?;
    let rec = unlocked_pin(state, who, &card).await?;
    let given = open_payload(state, who, &card, encrypted_pin).await?;
    let (stored, _) = stored_pin(state, &card, &rec).await?;
    let matched = stored.ct_matches(&given);
    drop((stored, given));
    let outcome = if matched {
        let max = max_failures(state, &card.account_id).await?;
        state
            .store()
            .audited(&who.audit)
            .record_pin_attempt(&rec, true, max, &[], None)
            .await?
    } else {
        count_failure(state, who, &card, &rec, "verify").await?
    };
    match outcome {
        PinOutcome::Done => Ok(true),
        PinOutcome::Failed { .. } => Ok(false),
        other => Err(outcome_err(other)),
    }
}

/// Changes a PIN: the current PIN, a new PIN and a `pin.change` OTP.
async fn change_inner(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    encrypted_current: &str,
    encrypted_new: &str,
    otp_id: &str,
    code: &str,
) -> Result<()> {
    who.require(Scope::PinsWrite)?;
    let card = cards::get(state, who, card_id).await?;
    crate::service::integrity::require(state, who, "pin.change").await?;
    let rec = unlocked_pin(state, who, &card).await?;
    otp::check(state, who, otp_id, code, ("pin.change", &card.id)).await?;
    let current = open_payload(state, who, &card, encrypted_current).await?;
    let new = open_payload(state, who, &card, encrypted_new).await?;
    check_strength(state, &new)?;
    let (stored, _) = stored_pin(state, &card, &rec).await?;
    let matched = stored.ct_matches(&current);
    drop((stored, current));
    if !matched {
        return match count_failure(state, who, &card, &rec, "change").await? {
            PinOutcome::Failed { .. } => Err(ServiceError::PinIncorrect),
            other => Err(outcome_err(other)),
        };
    }
    let keys = pin_keys(state, who).await?;
    let (key_version, block) = encipher(&keys, &card, &new)?;
    drop(new);
    let now = state.now_ms();
    let next = PinRecord {
        key_version,
        block,
        failures: 0,
        locked: false,
        updated_ms: now,
        ..rec.clone()
    };
    let spend = SpendOtp {
        id: otp_id.to_owned(),
        purpose: "pin.change".to_owned(),
        now_ms: now,
        max_attempts: otp::OTP_MAX_ATTEMPTS,
    };
    let changed = event(
        state,
        &card,
        crate::service::events::EventType::PinChanged,
        &who.key_id,
    )?;
    match state
        .store()
        .audited(&who.audit)
        .change_pin(&rec, &next, &spend, &[changed])
        .await?
    {
        PinOutcome::Done => Ok(()),
        other => Err(outcome_err(other)),
    }
}

/// Operator unlock of a card's PIN (any account). Returns the card id.
async fn admin_unlock_inner(state: &AppState, admin: &Admin, card_id: &str) -> Result<()> {
    strongroom_core::parse_id(strongroom_core::IdKind::Card, card_id)?;
    let (account_id, mode) = state
        .store()
        .pin_owner(card_id)
        .await?
        .ok_or(ServiceError::PinNotSet)?;
    let ev = state.event_of(
        &account_id,
        mode,
        crate::service::events::EventType::PinUnlocked,
        &PinEvent::new(card_id, &admin.key_id),
    )?;
    match state
        .store()
        .audited(&admin.audit)
        .unlock_pin(&account_id, mode, card_id, state.now_ms(), &[ev])
        .await?
    {
        // Not locked: nothing to do, and nothing announced.
        PinOutcome::Done | PinOutcome::Changed => Ok(()),
        other => Err(outcome_err(other)),
    }
}

/// Re-enciphers an account's PINs under its newest `pin` key version (re-wrap worker).
pub async fn rewrap(
    state: &AppState,
    keys: &AccountKeys,
    account_id: &str,
    batch: i64,
) -> Result<u64> {
    if !keys.has_writer(KeyPurpose::Pin) {
        return Ok(0);
    }
    let (writer, _) = keys.writer(KeyPurpose::Pin)?;
    let mut moved = 0;
    loop {
        let pins = state
            .store()
            .pins_for_rewrap(account_id, writer, batch)
            .await?;
        if pins.is_empty() {
            break;
        }
        let mut updates = Vec::with_capacity(pins.len());
        for rec in &pins {
            let Some(card) = state
                .store()
                .get_card(account_id, rec.mode, &rec.card_id)
                .await?
            else {
                continue;
            };
            let old = keys.pin_key(rec.key_version)?;
            let pan = pan_of(keys, &card)?;
            let pin = blocks::decipher(&old, &PinBlock::from_bytes(&rec.block)?, &pan.number)?;
            let (key_version, block) = encipher(keys, &card, &pin)?;
            updates.push(PinRewrap {
                card_id: rec.card_id.clone(),
                expect_key_version: rec.key_version,
                expect_block: rec.block.clone(),
                key_version,
                block,
            });
        }
        // The re-wrap worker's own write, outside any request: it carries no record.
        #[allow(clippy::disallowed_methods)]
        let applied = state.store().unaudited().rewrap_pins(&updates).await?;
        moved += applied;
        if applied == 0 && pins.len() < usize::try_from(batch).unwrap_or(usize::MAX) {
            break;
        }
        if applied == 0 {
            // Nothing could move (all changed under us); try again next pass.
            break;
        }
    }
    Ok(moved)
}

/// Sets or resets a card's PIN (see `set_inner`), with an audit record.
pub async fn set(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    encrypted_pin: &str,
    otp_id: &str,
    code: &str,
) -> Result<SetResult> {
    let r = set_inner(state, who, card_id, encrypted_pin, otp_id, code).await;
    let op = match &r {
        Ok(SetResult { reset: true, .. }) => "pin.reset",
        _ => "pin.set",
    };
    audit(&who.audit, op, card_id, &r);
    r
}

/// Verifies a card's PIN (see `verify_inner`), with an audit record.
pub async fn verify(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    encrypted_pin: &str,
) -> Result<bool> {
    let r = verify_inner(state, who, card_id, encrypted_pin).await;
    let op = match &r {
        Ok(false) => "pin.verify.mismatch",
        _ => "pin.verify",
    };
    audit(&who.audit, op, card_id, &r);
    r
}

/// Changes a card's PIN (see `change_inner`), with an audit record.
pub async fn change(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    encrypted_current: &str,
    encrypted_new: &str,
    otp_id: &str,
    code: &str,
) -> Result<PinView> {
    let r = change_inner(
        state,
        who,
        card_id,
        encrypted_current,
        encrypted_new,
        otp_id,
        code,
    )
    .await;
    audit(&who.audit, "pin.change", card_id, &r);
    r.map(|_| {
        PinView::from(SetResult {
            card_id: card_id.to_owned(),
            reset: false,
        })
    })
}

/// Operator unlock (see `admin_unlock_inner`), with an audit record.
pub async fn admin_unlock(
    state: &AppState,
    admin: &Admin,
    card_id: &str,
) -> Result<PinUnlockedView> {
    let r = admin_unlock_inner(state, admin, card_id).await;
    audit(&admin.audit, "pin.unlock", card_id, &r);
    r.map(|()| PinUnlockedView {
        object: "card_pin",
        card: card_id.to_owned(),
        locked: false,
    })
}
