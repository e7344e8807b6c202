//! Account-side gateway controls: request-signing keys (`/v1/signing_keys`), the
//! account settings (`/v1/account`) and the account's IP allowlist (`/v1/ip_allowlist`).
//! Reading them needs `account:read`; changing them needs `account:write` or
//! `signing_keys:write` on a live-mode key, since they protect live traffic.

use crate::auth::Principal;
use crate::error::{ApiResult, codes};
use crate::extract::{ApiJson, ApiPath, ApiQuery, PageQuery, page};
use crate::gateway::parse_cidrs;
use crate::service::secs;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_core::{IdKind, Mode, Scope};
use strongroom_crypto::httpsig;
use strongroom_store::{AccountControls, ControlStore, ControlsUpdate, SigningKeyRecord};
use utoipa::ToSchema;

/// Prefix of signing-key ids (the `keyid` of signatures).
pub const SIGNING_KEY_PREFIX: &str = "sigk_";
/// The most unrevoked signing keys an account may have.
pub const MAX_SIGNING_KEYS: i64 = 10;

/// An Ed25519 public key as a JWK (RFC 8037). A private key (`d`) is refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ed25519Jwk {
    /// `OKP`
    pub kty: String,
    /// `Ed25519`
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// Ignored (the server assigns the id).
    pub kid: Option<String>,
    /// `EdDSA` or `Ed25519` if present.
    pub alg: Option<String>,
    /// `sig` if present.
    #[serde(rename = "use")]
    pub use_: Option<String>,
    /// Ignored.
    pub key_ops: Option<Vec<String>>,
}

/// Body of `POST /v1/signing_keys`: exactly one of `jwk` and `pem`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSigningKeyBody {
    /// An Ed25519 public JWK.
    pub jwk: Option<Ed25519Jwk>,
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an Ed25519 key.
    pub pem: Option<String>,
}

fn key_from_jwk(jwk: &Ed25519Jwk) -> ApiResult<[u8; 32]> {
    let alg_ok = jwk
        .alg
        .as_deref()
        .is_none_or(|a| a == "EdDSA" || a == "Ed25519");
    if jwk.kty != "OKP"
        || jwk.crv != "Ed25519"
        || !alg_ok
        || jwk.use_.as_deref().is_some_and(|u| u != "sig")
    {
        return Err(codes::INVALID_PARAMETER);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk.x.trim_end_matches('='))
        .map_err(|_| codes::INVALID_PARAMETER)?;
    <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| codes::INVALID_PARAMETER)
}

fn key_from_pem(pem: &str) -> ApiResult<[u8; 32]> {
    if pem.len() > 4096 {
        return Err(codes::INVALID_PARAMETER);
    }
    let inner = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|r| r.strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or(codes::INVALID_PARAMETER)?;
    let b64: String = inner.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| codes::INVALID_PARAMETER)?;
    httpsig::ed25519_public_from_spki(&der).ok_or(codes::INVALID_PARAMETER)
}

/// The public view of a signing key.
pub fn signing_key_json(k: &SigningKeyRecord) -> Value {
    json!({
        "id": k.id,
        "object": "signing_key",
        "algorithm": "ed25519",
        "jwk": {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&k.public_key),
            "kid": k.id,
        },
        "created": secs(k.created_ms),
        "revoked": k.revoked_ms.is_some(),
        "revoked_at": k.revoked_ms.map(secs),
    })
}

/// Register an Ed25519 public key for RFC 9421 request signatures. Its `id` is the
/// `keyid` to sign with.
#[utoipa::path(post, path = "/v1/signing_keys", tag = "controls", security(("api_key" = [])), request_body = CreateSigningKeyBody,
    responses((status = 201, description = "{id, object: signing_key, algorithm, jwk, created, revoked}"),
        (status = 400, description = "invalid_parameter, missing_field, unknown_field"), (status = 403, description = "permission_denied (no signing_keys:write), live_mode_required (a test key)"),
        (status = 409, description = "limit_reached: the account has 10 unrevoked signing keys")))]
pub async fn create_signing_key(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateSigningKeyBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    who.require_live(Scope::SigningKeysWrite)?;
    let public = match (&body.jwk, &body.pem) {
        (Some(j), None) => key_from_jwk(j)?,
        (None, Some(p)) => key_from_pem(p)?,
        (None, None) => return Err(codes::MISSING_FIELD),
        (Some(_), Some(_)) => return Err(codes::INVALID_PARAMETER),
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
    let view = signing_key_json(&rec);
    let event = state.event(
        &who.account_id,
        who.mode,
        crate::service::events::EventType::SigningKeyCreated,
        view.clone(),
    )?;
    if !state
        .store()
        .insert_signing_key(&rec, Some(MAX_SIGNING_KEYS), &[event])
        .await?
    {
        return Err(codes::LIMIT_REACHED);
    }
    let resource = format!("account:{}", who.account_id);
    crate::audit::event(
        "security.signing_key_created",
        &resource,
        crate::audit::SUCCESS,
        "",
    );
    Ok((StatusCode::CREATED, Json(view)))
}

/// List the account's signing keys, oldest first; page with `starting_after`.
#[utoipa::path(get, path = "/v1/signing_keys", tag = "controls", security(("api_key" = [])), params(PageQuery),
    responses((status = 200, description = "{object: list, data: [signing_key], has_more}"), (status = 400, description = "invalid_parameter")))]
pub async fn list_signing_keys(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    who.require(Scope::AccountRead)?;
    let limit = q.limit()?;
    if let Some(after) = &q.starting_after {
        check_signing_key_id(after).map_err(|_| codes::INVALID_PARAMETER)?;
    }
    let mut keys = state
        .store()
        .list_signing_keys(&who.account_id, q.starting_after.as_deref(), limit + 1)
        .await?;
    let has_more = page(&mut keys, limit);
    Ok(Json(json!({
        "object": "list",
        "data": keys.iter().map(signing_key_json).collect::<Vec<_>>(),
        "has_more": has_more,
    })))
}

fn check_signing_key_id(id: &str) -> ApiResult<()> {
    let rest = id
        .strip_prefix(SIGNING_KEY_PREFIX)
        .ok_or(codes::NOT_FOUND)?;
    if rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(codes::NOT_FOUND)
    }
}

/// Revoke a signing key; signatures made with it fail from the next request on.
#[utoipa::path(delete, path = "/v1/signing_keys/{id}", tag = "controls", security(("api_key" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "The revoked key"), (status = 403, description = "permission_denied (no signing_keys:write), live_mode_required (a test key)"), (status = 404, description = "not_found")))]
pub async fn revoke_signing_key(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    who.require_live(Scope::SigningKeysWrite)?;
    check_signing_key_id(&id)?;
    let existing = state
        .store()
        .signing_key(&who.account_id, &id)
        .await?
        .ok_or(codes::NOT_FOUND)?;
    let event = state.event(
        &who.account_id,
        who.mode,
        crate::service::events::EventType::SigningKeyRevoked,
        signing_key_json(&existing),
    )?;
    let resource = format!("account:{}", who.account_id);
    crate::audit::event(
        "security.signing_key_revoked",
        &resource,
        crate::audit::SUCCESS,
        "",
    );
    let revoked = state
        .store()
        .revoke_signing_key(&who.account_id, &id, state.now_ms(), &[event])
        .await?
        .ok_or(codes::NOT_FOUND)?;
    Ok(Json(signing_key_json(&revoked)))
}

/// The account's gateway settings as JSON.
pub fn controls_json(c: &AccountControls) -> Value {
    json!({
        "id": c.account_id,
        "object": "account",
        "require_signed_requests": c.require_signed_requests,
        "ip_allowlist": c.ip_allowlist,
        "rate_limit_per_minute": c.rate_limit_per_minute,
    })
}

/// The calling account's gateway settings.
#[utoipa::path(get, path = "/v1/account", tag = "controls", security(("api_key" = [])),
    responses((status = 200, description = "{id, object: account, require_signed_requests, ip_allowlist, rate_limit_per_minute}")))]
pub async fn get_account(State(state): State<AppState>, who: Principal) -> ApiResult<Json<Value>> {
    who.require(Scope::AccountRead)?;
    let c = state.store().account_controls(&who.account_id).await?;
    Ok(Json(controls_json(&c)))
}

/// Body of `PATCH /v1/account`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountControlsBody {
    /// Require an RFC 9421 signature on every request of this account.
    pub require_signed_requests: Option<bool>,
}

/// Change the calling account's gateway settings.
#[utoipa::path(patch, path = "/v1/account", tag = "controls", security(("api_key" = [])), request_body = UpdateAccountControlsBody,
    responses((status = 200, description = "The account's settings; emits `account.updated` in live mode"), (status = 403, description = "permission_denied (no account:write), live_mode_required (a test key)")))]
pub async fn update_account(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<UpdateAccountControlsBody>,
) -> ApiResult<Json<Value>> {
    who.require_live(Scope::AccountWrite)?;
    let update = ControlsUpdate {
        account_id: who.account_id.clone(),
        require_signed_requests: body.require_signed_requests,
        now_ms: state.now_ms(),
        ..Default::default()
    };
    let c = change_controls(&state, &who, update, "security.signatures_setting_changed").await?;
    Ok(Json(controls_json(&c)))
}

/// Body of `PUT /v1/ip_allowlist`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpAllowlistBody {
    /// IPv4/IPv6 CIDRs (or single addresses), at most 100. Empty: no restriction.
    pub cidrs: Vec<String>,
}

fn allowlist_json(cidrs: &[String]) -> Value {
    json!({"object": "ip_allowlist", "cidrs": cidrs})
}

/// The account's IP allowlist.
#[utoipa::path(get, path = "/v1/ip_allowlist", tag = "controls", security(("api_key" = [])),
    responses((status = 200, description = "{object: ip_allowlist, cidrs: [...]}")))]
pub async fn get_ip_allowlist(
    State(state): State<AppState>,
    who: Principal,
) -> ApiResult<Json<Value>> {
    who.require(Scope::AccountRead)?;
    let c = state.store().account_controls(&who.account_id).await?;
    Ok(Json(allowlist_json(&c.ip_allowlist)))
}

/// Replace the account's IP allowlist. Requests from elsewhere get `403 ip_not_allowed`.
#[utoipa::path(put, path = "/v1/ip_allowlist", tag = "controls", security(("api_key" = [])), request_body = IpAllowlistBody,
    responses((status = 200, description = "{object: ip_allowlist, cidrs: [...]}; emits `account.updated` in live mode"), (status = 400, description = "invalid_parameter"), (status = 403, description = "permission_denied (no account:write), live_mode_required (a test key)")))]
pub async fn put_ip_allowlist(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<IpAllowlistBody>,
) -> ApiResult<Json<Value>> {
    who.require_live(Scope::AccountWrite)?;
    let nets = parse_cidrs(&body.cidrs)?;
    let update = ControlsUpdate {
        account_id: who.account_id.clone(),
        ip_allowlist: Some(nets.iter().map(ToString::to_string).collect()),
        now_ms: state.now_ms(),
        ..Default::default()
    };
    let c = change_controls(&state, &who, update, "security.ip_allowlist_changed").await?;
    Ok(Json(allowlist_json(&c.ip_allowlist)))
}

/// Applies a change of the account's security settings with its `account.updated`
/// event in the live stream (the settings protect live traffic) and a security event
/// in the audit log.
async fn change_controls(
    state: &AppState,
    who: &Principal,
    mut update: ControlsUpdate,
    security_event: &str,
) -> ApiResult<AccountControls> {
    let mut next = state.store().account_controls(&who.account_id).await?;
    if let Some(r) = update.require_signed_requests {
        next.require_signed_requests = r;
    }
    if let Some(l) = &update.ip_allowlist {
        next.ip_allowlist.clone_from(l);
    }
    update.events = vec![state.event(
        &who.account_id,
        Mode::Live,
        crate::service::events::EventType::AccountUpdated,
        controls_json(&next),
    )?];
    let resource = format!("account:{}", who.account_id);
    crate::audit::event(security_event, &resource, crate::audit::SUCCESS, "");
    let c = state.store().update_account_controls(&update).await?;
    state.gateway().forget_account(state, &who.account_id);
    Ok(c)
}

/// Operator: sets (or, with `None`, keeps) an account's rate-limit override; returns
/// the override in force.
pub async fn set_rate_limit(
    state: &AppState,
    account_id: &str,
    per_minute: Option<i64>,
) -> ApiResult<Option<i64>> {
    let Some(n) = per_minute else {
        return Ok(state
            .store()
            .account_controls(account_id)
            .await?
            .rate_limit_per_minute);
    };
    let c = state
        .store()
        .update_account_controls(&ControlsUpdate {
            account_id: account_id.to_owned(),
            rate_limit_per_minute: Some(n),
            now_ms: state.now_ms(),
            ..Default::default()
        })
        .await?;
    state.gateway().forget_account(state, account_id);
    Ok(c.rate_limit_per_minute)
}
