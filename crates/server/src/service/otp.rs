//! One-time passwords for step-up, and the reveal they guard.
//!
//! A code is 6 digits, lives 5 minutes, is single use, dies after 3 wrong tries, and is
//! stored only as a keyed digest bound to its OTP id.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, codes};
use crate::service::cards::{self, RevealedCard};
use crate::service::secs;
use crate::state::AppState;
use strongroom_core::{IdKind, Mode, Scope};
use strongroom_crypto::{ct_eq, hmac_sha256, random};
use strongroom_store::{OtpRecord, VaultStore};
use zeroize::Zeroizing;

/// How long a code lives.
pub const OTP_TTL_MS: i64 = 5 * 60 * 1000;
/// Wrong codes before an OTP dies.
pub const OTP_MAX_ATTEMPTS: i64 = 3;
/// Purposes an OTP may have.
pub const PURPOSES: &[&str] = &["card.reveal"];

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

/// The secret an account uses to verify OTP deliveries; derived, never stored.
pub fn delivery_secret(state: &AppState, account_id: &str) -> ApiResult<Zeroizing<[u8; 32]>> {
    Ok(state
        .root()
        .derive_subkey(&format!("otp-delivery|{account_id}"))?)
}

/// Creates an OTP for `purpose` on `card_id`. In live mode the code is POSTed to the
/// account's OTP delivery URL and no API call can read it.
pub async fn create(
    state: &AppState,
    who: &Principal,
    purpose: &str,
    card_id: &str,
) -> ApiResult<CreatedOtp> {
    if !PURPOSES.contains(&purpose) {
        return Err(codes::INVALID_PARAMETER);
    }
    who.require(Scope::CardsReveal)?;
    let card = cards::get(state, who, card_id).await?;
    let account = state.account(&who.account_id).await?;
    if who.mode == Mode::Live && account.otp_delivery_url.is_none() {
        return Err(codes::OTP_DELIVERY_NOT_CONFIGURED);
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
    state.store().insert_otp(&record, &[]).await?;
    match (who.mode, account.otp_delivery_url.as_deref()) {
        (Mode::Test, _) => Ok(CreatedOtp {
            record,
            test_code: Some(code),
        }),
        (Mode::Live, Some(url)) => {
            deliver(state, url, &record, &code).await?;
            Ok(CreatedOtp {
                record,
                test_code: None,
            })
        }
        (Mode::Live, None) => Err(codes::OTP_DELIVERY_NOT_CONFIGURED),
    }
}

/// POSTs a live-mode code to the account's delivery URL, signed with HMAC-SHA256 in
/// `Strongroom-Signature: t=<unix>,v1=<hex>` over `"{t}.{body}"`.
async fn deliver(state: &AppState, url: &str, otp: &OtpRecord, code: &str) -> ApiResult<()> {
    let body = Zeroizing::new(
        serde_json::json!({
            "otp": otp.id,
            "code": code,
            "purpose": otp.purpose,
            "card": otp.card_id,
            "expires_at": secs(otp.expires_ms),
        })
        .to_string(),
    );
    let t = secs(state.now_ms());
    let secret = delivery_secret(state, &otp.account_id)?;
    let mut signed = Zeroizing::new(format!("{t}.").into_bytes());
    signed.extend_from_slice(body.as_bytes());
    let sig = hex::encode(hmac_sha256(secret.as_slice(), &signed));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| ApiError::internal(&e))?;
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("strongroom-signature", format!("t={t},v1={sig}"))
        .body(body.to_string())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            tracing::warn!(status = r.status().as_u16(), "OTP delivery refused");
            Err(codes::OTP_DELIVERY_FAILED)
        }
        Err(e) => {
            // reqwest errors may carry the URL; log only its kind.
            tracing::warn!(
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "OTP delivery failed"
            );
            Err(codes::OTP_DELIVERY_FAILED)
        }
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
) -> ApiResult<()> {
    let invalid = codes::OTP_INVALID;
    if strongroom_core::parse_id(IdKind::Otp, otp_id).is_err() || code.len() != 6 {
        return Err(invalid);
    }
    let otp = state
        .store()
        .get_otp(&who.account_id, otp_id)
        .await?
        .ok_or(invalid.clone())?;
    let now = state.now_ms();
    if otp.mode != who.mode
        || otp.purpose != purpose
        || otp.card_id.as_deref() != Some(card_id)
        || otp.used_ms.is_some()
        || otp.expires_ms <= now
        || otp.attempts >= OTP_MAX_ATTEMPTS
    {
        return Err(invalid);
    }
    if !ct_eq(&code_digest(state, &otp.id, code), &otp.code_digest) {
        state.store().otp_fail(&otp.id).await?;
        return Err(invalid);
    }
    if state
        .store()
        .otp_consume(&otp.id, now, OTP_MAX_ATTEMPTS, events)
        .await?
    {
        Ok(())
    } else {
        Err(invalid)
    }
}

/// Reveals a card's number after a valid `card.reveal` OTP.
pub async fn reveal(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    otp_id: &str,
    code: &str,
) -> ApiResult<(strongroom_store::CardRecord, RevealedCard)> {
    who.require(Scope::CardsReveal)?;
    let card = cards::get(state, who, card_id).await?;
    // The reveal is recorded in the outbox in the same transaction that spends the OTP.
    let event = state.event(
        &card.account_id,
        card.mode,
        "card.revealed",
        serde_json::json!({"id": card.id, "object": "card", "api_key": who.key_id}),
    )?;
    verify(
        state,
        who,
        otp_id,
        code,
        ("card.reveal", &card.id),
        &[event],
    )
    .await?;
    let keys = state.keyring().account(state, &who.account_id).await?;
    let clear = match cards::open(&keys, &card) {
        Ok(c) => c,
        // A rotation elsewhere may have retired the version we cached: reload once.
        Err(_) => {
            let fresh = state.keyring().reload(state, &who.account_id).await?;
            cards::open(&fresh, &card)?
        }
    };
    Ok((card, clear))
}
