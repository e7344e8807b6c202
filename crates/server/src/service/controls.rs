//! Account-side gateway controls: request-signing keys, the account's gateway settings
//! (signed requests, rate-limit override) and IP allowlists. Every change forgets the
//! gateway's cached view of the account or key, so the next request sees it.

use crate::auth::Principal;
use crate::gateway::parse_cidrs;
use crate::service::events::EventType;
use crate::service::{List, secs};
use crate::service::{Result, ServiceError};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use strongroom_core::{IdKind, Mode};
use strongroom_crypto::httpsig;
use strongroom_store::{
    AccountControls, AuditScope, ControlStore, ControlsUpdate, SigningKeyRecord,
};
use utoipa::ToSchema;

/// Prefix of signing-key ids (the `keyid` of signatures).
pub const SIGNING_KEY_PREFIX: &str = "sigk_";
/// The most unrevoked signing keys an account may have.
pub const MAX_SIGNING_KEYS: i64 = 10;
/// The longest PEM accepted for a signing key.
pub const MAX_PEM_LEN: usize = 4096;

/// An Ed25519 public key as a JWK (RFC 8037). A private key (`d`) is refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ed25519Jwk {
    /// `OKP`
    #[schema(pattern = "^OKP$")]
    pub kty: String,
    /// `Ed25519`
    #[schema(pattern = "^Ed25519$")]
    pub crv: String,
    /// The public key (32 bytes), base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]=*$")]
    pub x: String,
    /// Ignored (the server assigns the id).
    pub kid: Option<String>,
    /// `EdDSA` or `Ed25519` if present.
    #[schema(pattern = "^(EdDSA|Ed25519)$")]
    pub alg: Option<String>,
    /// `sig` if present.
    #[serde(rename = "use")]
    #[schema(pattern = "^sig$")]
    pub use_: Option<String>,
    /// Ignored.
    pub key_ops: Option<Vec<String>>,
}

/// The public half of a signing key as a JWK.
#[derive(Serialize, ToSchema)]
pub struct SigningKeyJwk {
    /// Always `OKP`.
    pub kty: &'static str,
    /// Always `Ed25519`.
    pub crv: &'static str,
    /// The public key, base64url without padding.
    pub x: String,
    /// The key's id.
    pub kid: String,
}

/// A request-signing key (public part only).
#[derive(Serialize, ToSchema)]
pub struct SigningKeyView {
    /// `sigk_…`: the `keyid` to sign with.
    pub id: String,
    /// Always `signing_key`.
    pub object: &'static str,
    /// Always `ed25519`.
    pub algorithm: &'static str,
    /// The public key.
    pub jwk: SigningKeyJwk,
    /// Unix seconds.
    pub created: i64,
    /// Whether it is revoked.
    pub revoked: bool,
    /// Unix seconds; null while the key is not revoked.
    pub revoked_at: Option<i64>,
}

impl From<&SigningKeyRecord> for SigningKeyView {
    fn from(k: &SigningKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            object: "signing_key",
            algorithm: "ed25519",
            jwk: SigningKeyJwk {
                kty: "OKP",
                crv: "Ed25519",
                x: URL_SAFE_NO_PAD.encode(&k.public_key),
                kid: k.id.clone(),
            },
            created: secs(k.created_ms),
            revoked: k.revoked_ms.is_some(),
            revoked_at: k.revoked_ms.map(secs),
        }
    }
}

/// An account's gateway settings.
#[derive(Serialize, ToSchema)]
pub struct AccountControlsView {
    /// `acct_…`
    pub id: String,
    /// Always `account`.
    pub object: &'static str,
    /// Whether every request of the account must carry an RFC 9421 signature.
    pub require_signed_requests: bool,
    /// The account's IP allowlist (CIDRs); empty: no restriction.
    pub ip_allowlist: Vec<String>,
    /// The operator's rate-limit override (requests per minute); null: the default.
    pub rate_limit_per_minute: Option<i64>,
    /// The risk switch (docs/risk.md): `off`, `shadow` or `enforce`.
    pub risk_mode: RiskMode,
    /// The account's IANA time zone (the risk signals' hour of day); `UTC` by default.
    pub time_zone: String,
}

/// The account's risk switch: whether card uses are assessed implicitly, and whether a
/// `block` refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskMode {
    /// No implicit assessment.
    Off,
    /// Assessed and recorded; never refused.
    Shadow,
    /// Assessed; a `block` refuses with `403 risk_blocked`.
    #[default]
    Enforce,
}

impl RiskMode {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Shadow => "shadow",
            Self::Enforce => "enforce",
        }
    }

    /// The stored switch (anything unknown reads as the default).
    pub fn of(stored: Option<&str>) -> Self {
        match stored {
            Some("off") => Self::Off,
            Some("shadow") => Self::Shadow,
            _ => Self::Enforce,
        }
    }
}

impl From<&AccountControls> for AccountControlsView {
    fn from(c: &AccountControls) -> Self {
        Self {
            id: c.account_id.clone(),
            object: "account",
            require_signed_requests: c.require_signed_requests,
            ip_allowlist: c.ip_allowlist.clone(),
            rate_limit_per_minute: c.rate_limit_per_minute,
            risk_mode: RiskMode::of(c.risk_mode.as_deref()),
            time_zone: c.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
        }
    }
}

/// An IP allowlist.
#[derive(Serialize, ToSchema)]
pub struct IpAllowlistView {
    /// Always `ip_allowlist`.
    pub object: &'static str,
    /// IPv4/IPv6 CIDRs; empty: no restriction.
    pub cidrs: Vec<String>,
}

impl IpAllowlistView {
    fn of(cidrs: &[String]) -> Self {
        Self {
            object: "ip_allowlist",
            cidrs: cidrs.to_vec(),
        }
    }
}

fn key_from_jwk(jwk: &Ed25519Jwk) -> Result<[u8; 32]> {
    let alg_ok = jwk
        .alg
        .as_deref()
        .is_none_or(|a| a == "EdDSA" || a == "Ed25519");
    if jwk.kty != "OKP"
        || jwk.crv != "Ed25519"
        || !alg_ok
        || jwk.use_.as_deref().is_some_and(|u| u != "sig")
    {
        return Err(ServiceError::InvalidParameter);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(jwk.x.trim_end_matches('='))
        .map_err(|_| ServiceError::InvalidParameter)?;
    <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| ServiceError::InvalidParameter)
}

fn key_from_pem(pem: &str) -> Result<[u8; 32]> {
    if pem.len() > MAX_PEM_LEN {
        return Err(ServiceError::InvalidParameter);
    }
    let inner = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|r| r.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or(ServiceError::InvalidParameter)?;
    let b64: String = inner.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| ServiceError::InvalidParameter)?;
    httpsig::ed25519_public_from_spki(&der).ok_or(ServiceError::InvalidParameter)
}

/// Checks the form of a signing-key id (`not_found` otherwise).
pub fn check_signing_key_id(id: &str) -> Result<()> {
    let rest = id
        .strip_prefix(SIGNING_KEY_PREFIX)
        .ok_or(ServiceError::NotFound)?;
    if rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(ServiceError::NotFound)
    }
}

/// Registers the caller's account's Ed25519 public key, given as exactly one of a JWK
/// and a PEM; emits `signing_key.created`.
pub async fn create_signing_key(
    state: &AppState,
    who: &Principal,
    jwk: Option<&Ed25519Jwk>,
    pem: Option<&str>,
) -> Result<SigningKeyView> {
    let public = match (jwk, pem) {
        (Some(j), None) => key_from_jwk(j)?,
        (None, Some(p)) => key_from_pem(p)?,
        (None, None) => return Err(ServiceError::MissingField),
        (Some(_), Some(_)) => return Err(ServiceError::InvalidParameter),
    };
    let base = state.new_id(IdKind::ApiKey)?;
    let id = format!(
        "{SIGNING_KEY_PREFIX}{}",
        base.strip_prefix(IdKind::ApiKey.prefix()).unwrap_or(&base)
    );
    let rec = SigningKeyRecord {
        id,
        account_id: who.account_id.clone(),
        public_key: public.to_vec(),
        created_ms: state.now_ms(),
        revoked_ms: None,
    };
    let view = SigningKeyView::from(&rec);
    let event = state.event_of(
        &who.account_id,
        who.mode,
        EventType::SigningKeyCreated,
        &view,
    )?;
    if !state
        .store()
        .audited(&who.audit)
        .insert_signing_key(&rec, Some(MAX_SIGNING_KEYS), &[event])
        .await?
    {
        return Err(ServiceError::LimitReached);
    }
    let resource = format!("account:{}", who.account_id);
    crate::audit::event(
        &who.audit,
        "security.signing_key_created",
        &resource,
        crate::audit::SUCCESS,
        "",
    );
    Ok(view)
}

/// A page of the account's signing keys, oldest first.
pub async fn list_signing_keys(
    state: &AppState,
    account_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<List<SigningKeyView>> {
    if let Some(after) = starting_after {
        check_signing_key_id(after).map_err(|_| ServiceError::InvalidParameter)?;
    }
    let mut keys = state
        .store()
        .list_signing_keys(account_id, starting_after, limit.saturating_add(1))
        .await?;
    let has_more = crate::extract::page(&mut keys, limit);
    Ok(List::page(
        keys.iter().map(SigningKeyView::from).collect(),
        has_more,
    ))
}

/// Revokes one of the caller's account's signing keys; emits `signing_key.revoked`.
pub async fn revoke_signing_key(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<SigningKeyView> {
    check_signing_key_id(id)?;
    let existing = state
        .store()
        .signing_key(&who.account_id, id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let event = state.event_of(
        &who.account_id,
        who.mode,
        EventType::SigningKeyRevoked,
        &SigningKeyView::from(&existing),
    )?;
    let resource = format!("account:{}", who.account_id);
    crate::audit::event(
        &who.audit,
        "security.signing_key_revoked",
        &resource,
        crate::audit::SUCCESS,
        "",
    );
    let revoked = state
        .store()
        .audited(&who.audit)
        .revoke_signing_key(&who.account_id, id, state.now_ms(), &[event])
        .await?
        .ok_or(ServiceError::NotFound)?;
    Ok(SigningKeyView::from(&revoked))
}

/// The account's gateway settings.
pub async fn account_controls(state: &AppState, account_id: &str) -> Result<AccountControlsView> {
    let c = state.store().account_controls(account_id).await?;
    Ok(AccountControlsView::from(&c))
}

/// What `PATCH /v1/account` changes; `None` keeps a setting.
#[derive(Debug, Default)]
pub struct AccountChange {
    /// Whether every request must be signed.
    pub require_signed_requests: Option<bool>,
    /// The risk switch.
    pub risk_mode: Option<RiskMode>,
    /// The IANA time zone (`invalid_parameter` for a name that is not one).
    pub time_zone: Option<String>,
}

/// Changes the caller's account's settings that `change` names, keeping the others.
pub async fn update_account_controls(
    state: &AppState,
    who: &Principal,
    change: AccountChange,
) -> Result<AccountControlsView> {
    if let Some(tz) = &change.time_zone
        && crate::risk::local_time::zone(tz).is_none()
    {
        return Err(ServiceError::InvalidParameter);
    }
    let event = if change.require_signed_requests.is_some() {
        "security.signatures_setting_changed"
    } else if change.risk_mode.is_some() {
        "security.risk_mode_changed"
    } else {
        "account.time_zone_changed"
    };
    let update = ControlsUpdate {
        account_id: who.account_id.clone(),
        require_signed_requests: change.require_signed_requests,
        risk_mode: change.risk_mode.map(|m| m.as_str().to_owned()),
        time_zone: change.time_zone,
        now_ms: state.now_ms(),
        ..Default::default()
    };
    let c = change_controls(state, who, update, event).await?;
    Ok(AccountControlsView::from(&c))
}

/// The account's IP allowlist.
pub async fn ip_allowlist(state: &AppState, account_id: &str) -> Result<IpAllowlistView> {
    let c = state.store().account_controls(account_id).await?;
    Ok(IpAllowlistView::of(&c.ip_allowlist))
}

/// Replaces the caller's account's IP allowlist (`invalid_parameter` for a CIDR that
/// does not parse or for more than the allowed number).
pub async fn set_ip_allowlist(
    state: &AppState,
    who: &Principal,
    cidrs: &[String],
) -> Result<IpAllowlistView> {
    let nets = parse_cidrs(cidrs)?;
    let update = ControlsUpdate {
        account_id: who.account_id.clone(),
        ip_allowlist: Some(nets.iter().map(ToString::to_string).collect()),
        now_ms: state.now_ms(),
        ..Default::default()
    };
    let c = change_controls(state, who, update, "security.ip_allowlist_changed").await?;
    Ok(IpAllowlistView::of(&c.ip_allowlist))
}

/// Applies a change of the account's security settings with its `account.updated`
/// event in the live stream (the settings protect live traffic) and a security event
/// in the audit log.
async fn change_controls(
    state: &AppState,
    who: &Principal,
    mut update: ControlsUpdate,
    security_event: &str,
) -> Result<AccountControls> {
    let mut next = state.store().account_controls(&who.account_id).await?;
    if let Some(r) = update.require_signed_requests {
        next.require_signed_requests = r;
    }
    if let Some(l) = &update.ip_allowlist {
        next.ip_allowlist.clone_from(l);
    }
    if let Some(m) = &update.risk_mode {
        next.risk_mode = Some(m.clone());
    }
    if let Some(tz) = &update.time_zone {
        next.time_zone = Some(tz.clone());
    }
    update.events = vec![state.event_of(
        &who.account_id,
        Mode::Live,
        EventType::AccountUpdated,
        &AccountControlsView::from(&next),
    )?];
    let resource = format!("account:{}", who.account_id);
    crate::audit::event(
        &who.audit,
        security_event,
        &resource,
        crate::audit::SUCCESS,
        "",
    );
    let c = state
        .store()
        .audited(&who.audit)
        .update_account_controls(&update)
        .await?;
    state.gateway().forget_account(&who.account_id);
    Ok(c)
}

/// Operator: sets (or, with `None`, keeps) an account's rate-limit override; returns
/// the override in force. The write carries `audit`, the operator's request scope.
pub async fn set_rate_limit(
    state: &AppState,
    audit: &AuditScope,
    account_id: &str,
    per_minute: Option<i64>,
) -> Result<Option<i64>> {
    let Some(n) = per_minute else {
        return Ok(state
            .store()
            .account_controls(account_id)
            .await?
            .rate_limit_per_minute);
    };
    let c = state
        .store()
        .audited(audit)
        .update_account_controls(&ControlsUpdate {
            account_id: account_id.to_owned(),
            rate_limit_per_minute: Some(n),
            now_ms: state.now_ms(),
            ..Default::default()
        })
        .await?;
    state.gateway().forget_account(account_id);
    Ok(c.rate_limit_per_minute)
}

/// Operator: stores a new key's IP allowlist. If that fails the key is revoked, so a
/// key meant to be restricted never works unrestricted. The writes carry `audit`, the
/// operator's request scope.
pub async fn set_key_allowlist(
    state: &AppState,
    audit: &Arc<AuditScope>,
    key: &strongroom_store::ApiKeyRecord,
    nets: &[ipnet::IpNet],
) -> Result<()> {
    if nets.is_empty() {
        return Ok(());
    }
    let cidrs: Vec<String> = nets.iter().map(ToString::to_string).collect();
    let allowlist = state.store().audited(audit);
    if let Err(e) = allowlist.set_key_ip_allowlist(&key.id, &cidrs).await {
        // Failures are mapped (and logged) only where they are returned: log this one.
        let origin = crate::audit::Origin::Request(audit);
        if let Err(revoke) = state
            .accounts()
            .revoke_key(origin, key.account_id.as_deref(), &key.id)
            .await
        {
            tracing::error!(error = %revoke, "could not revoke a key left without its allowlist");
        }
        return Err(e.into());
    }
    state.gateway().forget_key(&key.id);
    Ok(())
}
