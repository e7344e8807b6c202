//! One-time passwords for step-up, and the reveal they guard.
//!
//! A code is 6 digits, lives 5 minutes, is single use, dies after 3 wrong tries, and is
//! stored only as a keyed digest bound to its OTP id.

use crate::auth::Principal;
use crate::service::cards::{self, RevealedCard};
use crate::service::otp_code::code_context;
use crate::service::secs;
use crate::service::webhooks;
use crate::service::{Result, ServiceError};
use crate::state::AppState;
use base64::Engine;
use strongroom_core::{IdKind, Mode, Scope};
use strongroom_crypto::{ct_eq, random};
use strongroom_store::webhooks::{OTP_EVENT, WebhookEndpointRecord};
use strongroom_store::{AuditScope, OtpRecord, VaultStore};
use strongroom_store::{StoreError, WebhookStore};
use zeroize::Zeroizing;

/// How long a code lives.
pub const OTP_TTL_MS: i64 = 5 * 60 * 1000;
/// Wrong codes before an OTP dies.
pub const OTP_MAX_ATTEMPTS: i64 = 3;
/// Purposes an OTP may have.
pub const PURPOSES: &[&str] = &["card.reveal", "pin.set", "pin.reset", "pin.change"];

/// The scope a key needs to create an OTP for `purpose`.
fn purpose_scope(purpose: &str) -> Scope {
    if purpose.starts_with("pin.") {
        Scope::PinsWrite
    } else {
        Scope::CardsReveal
    }
}

/// A created OTP.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OtpView {
    /// `otp_…`
    pub id: String,
    /// Always `otp`.
    pub object: &'static str,
    /// What it authorises.
    pub purpose: String,
    /// The card it is for.
    pub card: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// Test mode only: the code. In live mode it goes to the account's OTP delivery URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_code: Option<String>,
}

impl From<CreatedOtp> for OtpView {
    fn from(created: CreatedOtp) -> Self {
        let r = created.record;
        Self {
            id: r.id,
            object: "otp",
            purpose: r.purpose,
            card: r.card_id,
            expires_at: crate::service::secs(r.expires_ms),
            test_code: created.test_code.map(|c| c.to_string()),
        }
    }
}

/// The `object` of an `otp.created` event. Fields in alphabetical order, as the event
/// JSON has always had them; the delivery worker swaps `sealed_code` for the code
/// (`crate::service::otp_code`).
#[derive(serde::Serialize)]
struct OtpCreatedEvent<'a> {
    /// The card it is for (null when none).
    card: Option<&'a str>,
    /// Unix seconds.
    expires_at: i64,
    /// `otp_…`
    id: &'a str,
    /// Always `otp`.
    object: &'static str,
    /// What it authorises.
    purpose: &'a str,
    /// The code sealed under the root key, base64.
    sealed_code: String,
}

/// The `object` of a `card.revealed` event, fields in alphabetical order as above.
#[derive(serde::Serialize)]
struct CardRevealedEvent<'a> {
    /// The key that revealed the card.
    api_key: &'a str,
    /// The card.
    id: &'a str,
    /// Always `card`.
    object: &'static str,
}

/// A created OTP, with the code only when it may be shown (test mode).
pub struct CreatedOtp {
    /// The record.
    pub record: OtpRecord,
    /// The clear code, test mode only.
    pub test_code: Option<Zeroizing<String>>,
}

fn code_digest(state: &AppState, otp_id: &str, code: &str) -> Vec<u8> {
    let mut input = Zeroizing::new(Vec::with_capacity(otp_id.len() + 1 + code.len()));
    input.extend_from_slice(otp_id.as_bytes());
    input.push(b':');
    input.extend_from_slice(code.as_bytes());
    state.root().digest("otp", &input).to_vec()
}

/// The secret an account uses to verify OTP deliveries, of generation `version`;
/// derived, never stored in clear. Generation 1 keeps the label it always had, so the
/// secret of an account that never rotated is unchanged; each rotation derives the next
/// generation under a label of its own.
pub fn delivery_secret(
    state: &AppState,
    account_id: &str,
    version: i64,
) -> Result<Zeroizing<[u8; 32]>> {
    let label = if version <= 1 {
        format!("otp-delivery|{account_id}")
    } else {
        format!("otp-delivery|{account_id}|{version}")
    };
    Ok(state.root().derive_subkey(&label)?)
}

/// The OTP signing secret's generation in force for an account: its live OTP
/// endpoint's secret version, 1 before the first live OTP or rotation. With the end of
/// the overlap in which the previous generation still signs too, if one is running.
pub async fn delivery_generation(state: &AppState, account_id: &str) -> Result<(i64, Option<i64>)> {
    Ok(
        match state.store().otp_endpoint(account_id, Mode::Live).await? {
            Some(ep) => (
                ep.secret_version,
                ep.old_expires_ms.filter(|t| *t > state.now_ms()),
            ),
            None => (1, None),
        },
    )
}

/// Rotates the account's OTP signing secret: the next generation signs every delivery
/// from now on, and for [`webhooks::ROTATION_OVERLAP_MS`] the previous one signs too
/// (a second `v1,` signature in `webhook-signature`), so the receiver can switch over
/// without losing a code. Needs an OTP delivery URL (the secret signs nothing without).
/// The writes carry `audit`, the operator's request scope.
pub async fn rotate_delivery_secret(
    state: &AppState,
    audit: &AuditScope,
    account_id: &str,
) -> Result<()> {
    let account = state.accounts().get(account_id).await?;
    let url = account
        .otp_delivery_url
        .as_deref()
        .ok_or(ServiceError::OtpDeliveryNotConfigured)?;
    let mut ep = otp_endpoint(state, audit, account_id, Mode::Live, url).await?;
    let prev = ep.secret_version;
    let version = prev.saturating_add(1);
    let secret = delivery_secret(state, account_id, version)?;
    let wrapped = state
        .root()
        .wrap_bytes(secret.as_slice(), &webhooks::wrap_context(&ep.id, version))?;
    ep.old_wrapped = Some(std::mem::replace(&mut ep.secret_wrapped, wrapped));
    ep.old_version = Some(prev);
    ep.old_expires_ms = Some(state.now_ms().saturating_add(webhooks::ROTATION_OVERLAP_MS));
    ep.secret_version = version;
    if !state
        .store()
        .audited(audit)
        .rotate_endpoint_secret(&ep, prev)
        .await?
    {
        // A concurrent rotation won.
        return Err(ServiceError::Conflict);
    }
    Ok(())
}

/// Creates an OTP for `purpose` on `card_id`. In live mode the code is delivered to the
/// account's OTP delivery URL as an `otp.created` webhook, and no API call can read it.
pub async fn create(
    state: &AppState,
    who: &Principal,
    purpose: &str,
    card_id: &str,
) -> Result<CreatedOtp> {
    if !PURPOSES.contains(&purpose) {
        return Err(ServiceError::InvalidParameter);
    }
    who.require(purpose_scope(purpose))?;
    let card = cards::get(state, who, card_id).await?;
    crate::service::integrity::require(state, who, "otp.create").await?;
    let account = state.accounts().get(&who.account_id).await?;
    if who.mode == Mode::Live && account.otp_delivery_url.is_none() {
        return Err(ServiceError::OtpDeliveryNotConfigured);
    }
    let id = state.new_id(IdKind::Otp)?;
    let code = random::decimal_code(6)?;
    let now = state.now_ms();
    let record = OtpRecord {
        code_digest: code_digest(state, &id, &code),
        id,
        account_id: who.account_id.clone(),
        mode: who.mode,
        purpose: purpose.to_owned(),
        card_id: Some(card.id),
        api_key_id: who.key_id.clone(),
        created_ms: now,
        expires_ms: now + OTP_TTL_MS,
        attempts: 0,
        used_ms: None,
    };
    crate::audit::set_resource(&who.audit, "otp", &record.id);
    let otps = state.store().audited(&who.audit);
    match (who.mode, account.otp_delivery_url.as_deref()) {
        (Mode::Test, _) => {
            otps.insert_otp(&record, &[]).await?;
            Ok(CreatedOtp {
                record,
                test_code: Some(code),
            })
        }
        (Mode::Live, Some(url)) => {
            // The code leaves only as an `otp.created` event, committed with the OTP and
            // delivered (retried, signed like every webhook) to the OTP endpoint alone.
            otp_endpoint(state, &who.audit, &account.id, who.mode, url).await?;
            let sealed = state
                .root()
                .wrap_bytes(code.as_bytes(), &code_context(&record.id))?;
            let event = state.event_of(
                &record.account_id,
                record.mode,
                crate::service::events::EventType::OtpCreated,
                &OtpCreatedEvent {
                    card: record.card_id.as_deref(),
                    expires_at: secs(record.expires_ms),
                    id: &record.id,
                    object: "otp",
                    purpose: &record.purpose,
                    sealed_code: base64::engine::general_purpose::STANDARD.encode(sealed),
                },
            )?;
            otps.insert_otp(&record, &[event]).await?;
            Ok(CreatedOtp {
                record,
                test_code: None,
            })
        }
        (Mode::Live, None) => Err(ServiceError::OtpDeliveryNotConfigured),
    }
}

/// The account's OTP endpoint for `mode`, created on first use and kept pointing at the
/// account's current OTP delivery URL. Signed with the account's OTP signing secret.
/// Its writes carry `audit`.
async fn otp_endpoint(
    state: &AppState,
    audit: &AuditScope,
    account_id: &str,
    mode: Mode,
    url: &str,
) -> Result<WebhookEndpointRecord> {
    if let Some(mut ep) = state.store().otp_endpoint(account_id, mode).await? {
        if ep.url != url {
            ep.url = url.to_owned();
            state
                .store()
                .audited(audit)
                .update_endpoint(&ep, false)
                .await?;
        }
        if ep.disabled_ms.is_some() {
            state
                .store()
                .audited(audit)
                .set_endpoint_disabled(account_id, &ep.id, None, None, &[])
                .await?;
        }
        return Ok(ep);
    }
    let id = state.new_id(IdKind::WebhookEndpoint)?;
    let secret = delivery_secret(state, account_id, 1)?;
    let wrapped = state
        .root()
        .wrap_bytes(secret.as_slice(), &webhooks::wrap_context(&id, 1))?;
    let ep = WebhookEndpointRecord {
        id,
        account_id: account_id.to_owned(),
        mode,
        url: url.to_owned(),
        signing: webhooks::SIGNING_HMAC.to_owned(),
        description: Some("OTP delivery".into()),
        secret_wrapped: wrapped,
        secret_version: 1,
        old_wrapped: None,
        old_version: None,
        old_expires_ms: None,
        disabled_ms: None,
        disabled_reason: None,
        failing_since_ms: None,
        created_ms: state.now_ms(),
        enabled_events: vec![OTP_EVENT.to_owned()],
        kind: "otp".into(),
    };
    // Not capped: one per account and mode, and not an API-managed endpoint.
    match state
        .store()
        .audited(audit)
        .insert_endpoint(&ep, None)
        .await
    {
        Ok(_) => Ok(ep),
        // A concurrent request created it first.
        Err(StoreError::Conflict(_)) => state
            .store()
            .otp_endpoint(account_id, mode)
            .await?
            .ok_or(ServiceError::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// Checks and consumes an OTP for `purpose` on `card_id`, writing `events` in the same
/// transaction as the consumption. Any failure is `otp_invalid`.
pub async fn verify(
    state: &AppState,
    who: &Principal,
    otp_id: &str,
    code: &str,
    (purpose, card_id): (&str, &str),
    events: &[strongroom_store::EventRecord],
) -> Result<()> {
    let otp = check(state, who, otp_id, code, (purpose, card_id)).await?;
    if state
        .store()
        .audited(&who.audit)
        .otp_consume(&otp.id, state.now_ms(), OTP_MAX_ATTEMPTS, events)
        .await?
    {
        Ok(())
    } else {
        Err(ServiceError::OtpInvalid)
    }
}

/// Checks an OTP for `purpose` on `card_id` without spending it (a wrong code is
/// counted). The caller spends it in the transaction of the change it authorises.
pub async fn check(
    state: &AppState,
    who: &Principal,
    otp_id: &str,
    code: &str,
    (purpose, card_id): (&str, &str),
) -> Result<OtpRecord> {
    if strongroom_core::parse_id(IdKind::Otp, otp_id).is_err() || code.len() != 6 {
        return Err(ServiceError::OtpInvalid);
    }
    let otp = state
        .store()
        .get_otp(&who.account_id, otp_id)
        .await?
        .ok_or(ServiceError::OtpInvalid)?;
    let now = state.now_ms();
    // Bound to the key that created it: another key of the account (a leaked one, or
    // one without the scope's history) cannot spend a code it did not ask for.
    if otp.mode != who.mode
        || otp.api_key_id != who.key_id
        || otp.purpose != purpose
        || otp.card_id.as_deref() != Some(card_id)
        || otp.used_ms.is_some()
        || otp.expires_ms <= now
        || otp.attempts >= OTP_MAX_ATTEMPTS
    {
        return Err(ServiceError::OtpInvalid);
    }
    if !ct_eq(&code_digest(state, &otp.id, code), &otp.code_digest) {
        // Security events: the wrong code commits with the attempt count.
        let resource = format!("otp:{}", otp.id);
        crate::audit::event(
            &who.audit,
            "otp.failed",
            &resource,
            crate::audit::FAILURE,
            crate::audit::code_of(&ServiceError::OtpInvalid),
        );
        let attempts = state.store().audited(&who.audit).otp_fail(&otp.id).await?;
        // A wrong code for a card counts in the card's later assessments.
        if let Some(card) = state
            .store()
            .get_card(&who.account_id, who.mode, card_id)
            .await?
        {
            let failure = crate::risk::velocity::Failure::OtpFailure;
            let fp = &card.fingerprint;
            crate::service::risk_failures::card_failed(
                state,
                &who.account_id,
                who.mode,
                fp,
                failure,
            )
            .await;
        }
        if attempts >= OTP_MAX_ATTEMPTS {
            crate::audit::event(
                &who.audit,
                "otp.exhausted",
                &resource,
                crate::audit::FAILURE,
                crate::audit::code_of(&ServiceError::OtpInvalid),
            );
        }
        return Err(ServiceError::OtpInvalid);
    }
    Ok(otp)
}

/// Reveals a card's number after a valid `card.reveal` OTP.
pub async fn reveal(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    otp_id: &str,
    code: &str,
) -> Result<(strongroom_store::CardRecord, RevealedCard)> {
    who.require(Scope::CardsReveal)?;
    let card = cards::get(state, who, card_id).await?;
    crate::service::integrity::require(state, who, "card.reveal").await?;
    let fingerprint = [card.fingerprint.as_slice()];
    crate::service::suspensions::check_card(state, &who.account_id, who.mode, fingerprint).await?;
    // Assessed before the OTP is spent: a blocked reveal leaves the code usable.
    let risk = crate::service::assessments::Implicit {
        action: crate::service::assessments::Action::Reveal,
        ip: None,
    };
    let recording =
        crate::service::assessments::implicit(state, who, &risk, &card.fingerprint, &card.bin)
            .await?;
    // The reveal is recorded in the outbox in the same transaction that spends the OTP.
    let event = state.event_of(
        &card.account_id,
        card.mode,
        crate::service::events::EventType::CardRevealed,
        &CardRevealedEvent {
            api_key: &who.key_id,
            id: &card.id,
            object: "card",
        },
    )?;
    let verified = verify(
        state,
        who,
        otp_id,
        code,
        ("card.reveal", &card.id),
        &[event],
    )
    .await;
    recording.settle().await;
    verified?;
    let keys = state.keyring().account(&who.account_id).await?;
    let clear = match cards::open(&keys, &card) {
        Ok(c) => c,
        // A rotation elsewhere may have retired the version we cached: reload once.
        Err(_) => {
            let fresh = state.keyring().reload(&who.account_id).await?;
            cards::open(&fresh, &card)?
        }
    };
    Ok((card, clear))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed payloads write the bytes the `json!` maps (sorted keys) wrote.
    #[test]
    fn event_payloads_keep_their_json() {
        for card in [Some("card_1"), None] {
            let typed = OtpCreatedEvent {
                card,
                expires_at: 1_767_000_300,
                id: "otp_1",
                object: "otp",
                purpose: "card.reveal",
                sealed_code: "AAAA".into(),
            };
            let before = serde_json::json!({
                "id": "otp_1",
                "object": "otp",
                "purpose": "card.reveal",
                "card": card,
                "expires_at": 1_767_000_300,
                "sealed_code": "AAAA",
            });
            assert_eq!(serde_json::to_string(&typed).unwrap(), before.to_string());
        }
        let typed = CardRevealedEvent {
            api_key: "key_1",
            id: "card_1",
            object: "card",
        };
        let before = serde_json::json!({"id": "card_1", "object": "card", "api_key": "key_1"});
        assert_eq!(serde_json::to_string(&typed).unwrap(), before.to_string());
    }
}
