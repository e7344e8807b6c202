//! Card failures the risk engine counts (docs/risk.md, "Declines and failed one-time
//! passwords"): a declined payment or a wrong one-time password for a card counts in the
//! card's later assessments for a day (`card_declines_24h`, `card_otp_failures_24h`; the
//! built-in rule `declines` holds at three of either). The vault learns of them itself
//! where it can (a wrong OTP code for a card; a relay the destination answered `402
//! Payment Required`), and the merchant reports the rest: the declines its processor
//! gave outside the relay, the step-ups it ran elsewhere.

use crate::auth::Principal;
use crate::risk::velocity::{Failure, FailureAt};
use crate::service::{ModeName, Result, ServiceError, secs};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use strongroom_core::{Mode, Scope};
use utoipa::ToSchema;

/// How far back a reported failure may be dated: its window is a day.
const MAX_AGE_S: i64 = 24 * 3600;

crate::service::object_name!(
    /// `risk_card_failure`.
    FailureObject = "risk_card_failure"
);

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// A payment with the card was declined.
    Decline,
    /// A one-time password (a 3-D Secure or other step-up) for the card failed.
    OtpFailure,
}

impl From<FailureType> for Failure {
    fn from(t: FailureType) -> Self {
        match t {
            FailureType::Decline => Failure::Decline,
            FailureType::OtpFailure => Failure::OtpFailure,
        }
    }
}

/// Body of `POST /v1/risk/card_failures`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCardFailure {
    /// What went wrong.
    #[serde(rename = "type")]
    pub kind: FailureType,
    /// The card (`card_…`) of this account and mode; or give `fingerprint`.
    #[schema(pattern = "^card_[0-9a-f]{32}$")]
    pub card: Option<String>,
    /// A card fingerprint as the card object shows it, instead of `card`.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub fingerprint: Option<String>,
    /// Unix seconds: when it happened (default now; at most a day ago, not later than
    /// now).
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 0, maximum = 32_503_680_000_i64)]
    pub at: Option<i64>,
}

/// A failure as counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardFailureView {
    /// Always `risk_card_failure`.
    pub object: FailureObject,
    /// What went wrong.
    #[serde(rename = "type")]
    pub kind: FailureType,
    /// `test` or `live`.
    pub mode: ModeName,
    /// The card's fingerprint.
    pub fingerprint: String,
    /// Unix seconds: when it happened.
    pub at: i64,
}

/// Counts a failure the merchant reports for a card of its account and mode
/// (`risk:write`).
pub async fn report(
    state: &AppState,
    who: &Principal,
    new: &NewCardFailure,
) -> Result<CardFailureView> {
    who.require(Scope::RiskWrite)?;
    let (fingerprint, _) =
        crate::service::assessments::card_named(state, who, &new.card, &new.fingerprint)
            .await?
            .ok_or(ServiceError::MissingField)?;
    let now = state.now_ms();
    let at_ms = match new.at {
        None => now,
        Some(s) => {
            let ms = s.checked_mul(1000).ok_or(ServiceError::InvalidParameter)?;
            if ms > now || ms <= now - MAX_AGE_S * 1000 {
                return Err(ServiceError::InvalidParameter);
            }
            ms
        }
    };
    record(
        state,
        &who.account_id,
        who.mode,
        &fingerprint,
        new.kind.into(),
        at_ms,
    )
    .await
    .map_err(|e| ServiceError::internal(e.to_string()))?;
    Ok(CardFailureView {
        object: FailureObject::Value,
        kind: new.kind,
        mode: who.mode.into(),
        fingerprint,
        at: secs(at_ms),
    })
}

async fn record(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    fingerprint: &str,
    failure: Failure,
    at_ms: i64,
) -> std::result::Result<(), crate::risk::velocity::VelocityError> {
    let f = FailureAt {
        account_id,
        mode,
        at_ms,
        card: fingerprint,
        failure,
    };
    state.velocity().record_failure(&f).await
}

/// Counts a failure the vault saw itself (a wrong OTP code, a relay answered `402`) for a
/// card, now. The request it happened in goes on as it would have: a counter that cannot
/// be reached is logged, not returned.
pub async fn card_failed(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    fingerprint: &[u8],
    failure: Failure,
) {
    let fp = URL_SAFE_NO_PAD.encode(fingerprint);
    let now = state.now_ms();
    if let Err(e) = record(state, account_id, mode, &fp, failure, now).await {
        tracing::warn!(error = %e, "a card failure was not counted");
    }
}
