//! `/v1/admin/…`: operators manage accounts, API keys and data keys with the admin key.

use crate::audit::Origin;
use crate::auth::Admin;
use crate::error::{ApiResult, codes};
use crate::extract::{ApiJson, ApiPath, ApiQuery, EmptyBody};
use crate::gateway::client_ip::ClientIp;
use crate::openapi::ErrorResponse;
use crate::service::accounts::{
    ADMIN_KIND, AccountView, AdminKeyView, ApiKeyView, NewApiKeyView, NewKeyKind,
};
use crate::service::data_keys::{self, DataKeysView, Purpose};
use crate::service::{List, ServiceError, otp};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use strongroom_core::{IdKind, KeyKind, Mode, Scope, Scopes, parse_id};
use strongroom_store::{KeyPurpose, RetireOutcome, VaultStore};
use utoipa::ToSchema;

/// Body of `POST /v1/admin/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    /// Display name, 1–200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// HTTPS URL, to a public address and without credentials, that receives
    /// live-mode OTP codes.
    #[schema(max_length = 2048, pattern = "^https?://[!-~]+$")]
    pub otp_delivery_url: Option<String>,
}

fn check_name(name: &str) -> ApiResult<()> {
    let n = name.chars().count();
    if n == 0 || n > 200 || name.chars().any(char::is_control) {
        return Err(codes::INVALID_PARAMETER);
    }
    Ok(())
}

/// The OTP delivery URL gets a live-mode webhook's checks (HTTPS to a public address, no
/// credentials), and its deliveries the same checks again at send time: live-mode OTP
/// codes are what it receives. Returns the URL as it will be stored.
async fn check_url(state: &AppState, url: &str) -> ApiResult<String> {
    Ok(crate::service::webhooks::check_url(state, Mode::Live, url).await?)
}

/// The account's view with, when an OTP delivery URL is set, the secret OTP deliveries
/// are signed with (shown only in the responses of create, update and rotate).
async fn with_delivery_secret(
    state: &AppState,
    acct: &strongroom_store::AccountRecord,
    mut v: AccountView,
) -> ApiResult<AccountView> {
    if acct.otp_delivery_url.is_some() {
        use base64::Engine;
        let (version, overlap_ends) = otp::delivery_generation(state, &acct.id).await?;
        let secret = otp::delivery_secret(state, &acct.id, version)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret.as_slice());
        v.otp_signing_secret = Some(format!("whsec_{encoded}"));
        v.otp_signing_secret_version = Some(version);
        v.otp_signing_secret_rotation_ends_at = Some(overlap_ends.map(crate::service::secs));
    }
    Ok(v)
}

/// Create an account. `url_not_allowed` also refuses a schema-valid URL that is not HTTPS
/// to a public address (a rule on what the host resolves to).
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", security(("admin_key" = [])), request_body = CreateAccountBody,
    responses((status = 201, description = "The account; `otp_signing_secret` when an OTP delivery URL is set", body = AccountView),
        (status = 400, description = "idempotency_key_invalid, idempotency_not_supported (POST with Idempotency-Key: the response carries a secret), invalid_request, unknown_field, missing_field, invalid_parameter; url_not_allowed: the OTP delivery URL is not HTTPS to a public address, or carries credentials", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn create_account(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateAccountBody>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    check_name(&body.name)?;
    let url = match &body.otp_delivery_url {
        Some(u) => Some(check_url(&state, u).await?),
        None => None,
    };
    let accounts = state.accounts();
    let acct = accounts
        .create(Origin::Request(&admin.audit), &body.name, url)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(with_delivery_secret(&state, &acct, accounts.view(&acct).await?).await?),
    ))
}

/// Retrieve an account.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "The account", body = AccountView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get_account(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AccountView>> {
    let accounts = state.accounts();
    let acct = accounts.get(&id).await?;
    Ok(Json(accounts.view(&acct).await?))
}

/// Body of `PATCH /v1/admin/accounts/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountBody {
    /// New display name, 1–200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    /// New OTP delivery URL.
    #[schema(max_length = 2048, pattern = "^https?://[!-~]+$")]
    pub otp_delivery_url: Option<String>,
    /// Per-credential rate limit of this account, requests per minute (the burst
    /// follows); 1–1000000.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<i64>,
    /// The step-ups that need a device attestation (`Strongroom-Attestation`, from
    /// `POST /v1/integrity/app`): any of `card.reveal`, `pin.set`, `pin.change`, `relay`,
    /// `otp.create`; the list replaces the account's, `[]` removes the requirement.
    #[schema(value_type = Option<Vec<crate::service::accounts::StepUpName>>, max_items = 5)]
    pub require_attestation: Option<Vec<String>>,
}

/// Update an account. `url_not_allowed` also refuses a schema-valid URL that is not HTTPS
/// to a public address (a rule on what the host resolves to).
#[utoipa::path(patch, path = "/v1/admin/accounts/{id}", tag = "admin", security(("admin_key" = [])), request_body = UpdateAccountBody,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "The account; `otp_signing_secret` when an OTP delivery URL is set", body = AccountView),
        (status = 400, description = "invalid_request, unknown_field, invalid_parameter; url_not_allowed: the OTP delivery URL is not HTTPS to a public address, or carries credentials", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "conflict", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn update_account(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateAccountBody>,
) -> ApiResult<Json<AccountView>> {
    parse_id(IdKind::Account, &id)?;
    if body
        .rate_limit_per_minute
        .is_some_and(|n| !(1..=1_000_000).contains(&n))
    {
        return Err(codes::INVALID_PARAMETER);
    }
    let attest = body
        .require_attestation
        .as_deref()
        .map(crate::service::integrity::checked_actions)
        .transpose()?;
    let accounts = state.accounts();
    let mut acct = accounts.get(&id).await?;
    if let Some(n) = body.name {
        check_name(&n)?;
        acct.name = n;
    }
    if let Some(u) = body.otp_delivery_url {
        acct.otp_delivery_url = Some(check_url(&state, &u).await?);
    }
    if !state
        .store()
        .audited(&admin.audit)
        .update_account(&acct)
        .await?
    {
        return Err(codes::NOT_FOUND);
    }
    let rate = crate::service::controls::set_rate_limit(
        &state,
        &admin.audit,
        &id,
        body.rate_limit_per_minute,
    )
    .await?;
    let attest = crate::service::integrity::set_required(&state, &admin.audit, &id, attest).await?;
    let v = AccountView::new(&acct, rate).with_attestation(attest);
    Ok(Json(with_delivery_secret(&state, &acct, v).await?))
}

/// Body of `POST /v1/admin/accounts/{id}/api_keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// `secret`, `publishable` or `restricted`.
    #[schema(value_type = crate::service::accounts::NewKeyKindName)]
    pub kind: String,
    /// `test` or `live`.
    #[schema(value_type = crate::service::ModeName)]
    pub mode: String,
    /// Restricted keys only: `cards:write`, `cards:read`, `cards:reveal`, `cards:delete`,
    /// `pins:write`, `pins:verify` and the other scope names; at most 15 (as many as there
    /// are scopes).
    #[schema(value_type = Option<Vec<crate::service::accounts::ScopeName>>, max_items = 15)]
    pub scopes: Option<Vec<String>>,
    /// CIDRs this key may be used from (at most 100); absent or empty: anywhere the
    /// account allows.
    #[schema(max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
}

/// Create an API key. The response carries `secret`; it is never shown again.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/api_keys", tag = "admin", security(("admin_key" = [])), request_body = CreateKeyBody,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 201, description = "The key, with its `secret`", body = NewApiKeyView),
        (status = 400, description = "idempotency_key_invalid, idempotency_not_supported (POST with Idempotency-Key: the response carries a secret), invalid_request, unknown_field, missing_field, invalid_parameter (a malformed CIDR among them), scope_unknown, scopes_required, scopes_not_allowed", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn create_key(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<(StatusCode, Json<NewApiKeyView>)> {
    parse_id(IdKind::Account, &id)?;
    let kind = KeyKind::parse(&body.kind).ok_or(codes::INVALID_PARAMETER)?;
    let mode = Mode::parse(&body.mode).ok_or(codes::INVALID_PARAMETER)?;
    // The schema's maxItems: a longer list can only repeat a scope.
    if body
        .scopes
        .as_ref()
        .is_some_and(|s| s.len() > Scope::ALL.len())
    {
        return Err(codes::INVALID_PARAMETER);
    }
    let scopes = body
        .scopes
        .as_ref()
        .map(|s| Scopes::parse_list(s.iter().map(String::as_str)))
        .transpose()?;
    let allowlist = crate::gateway::parse_cidrs(body.ip_allowlist.as_deref().unwrap_or_default())?;
    let accounts = state.accounts();
    let issued = accounts
        .create_key(
            Origin::Request(&admin.audit),
            Some(&id),
            NewKeyKind::Account(kind),
            mode,
            scopes,
        )
        .await?;
    crate::service::controls::set_key_allowlist(&state, &admin.audit, &issued.record, &allowlist)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewApiKeyView::new(&issued, &allowlist)),
    ))
}

/// Query of the admin listings: they take no parameter, and refuse any
/// (`unknown_field`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// List an account's API keys (prefixes and metadata only).
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/api_keys", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$"), NoQuery),
    responses((status = 200, description = "Every key of the account", body = List<ApiKeyView>),
        (status = 400, description = "unknown_field", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> ApiResult<Json<List<ApiKeyView>>> {
    state.accounts().get(&id).await?;
    let keys = state.store().list_api_keys(Some(&id)).await?;
    Ok(Json(List::all(keys.iter().map(ApiKeyView::from).collect())))
}

/// Revoke an API key; effective on the next request.
#[utoipa::path(delete, path = "/v1/admin/accounts/{id}/api_keys/{key_id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$"), ("key_id" = String, Path, pattern = "^key_[0-9a-f]{32}$")),
    responses((status = 200, description = "The revoked key", body = ApiKeyView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ApiKeyView>> {
    parse_id(IdKind::Account, &id)?;
    parse_id(IdKind::ApiKey, &key_id)?;
    let key = state
        .accounts()
        .revoke_key(Origin::Request(&admin.audit), Some(&id), &key_id)
        .await?;
    Ok(Json(ApiKeyView::from(&key)))
}

/// Body of `POST /v1/admin/accounts/{id}/keys/rotate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// `cards`, `fingerprint` or `pin`.
    #[schema(value_type = Purpose)]
    pub purpose: String,
}

/// Body of `POST /v1/admin/accounts/{id}/keys/retire`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireBody {
    /// `cards`, `fingerprint` or `pin`.
    #[schema(value_type = Purpose)]
    pub purpose: String,
    /// The version to retire.
    #[serde(deserialize_with = "crate::extract::integer")]
    #[schema(minimum = 1)]
    pub version: i64,
}

fn purpose(s: &str) -> ApiResult<KeyPurpose> {
    KeyPurpose::parse(s).ok_or(codes::INVALID_PARAMETER)
}

/// Every key the vault holds, of every kind: its purpose, where it is kept, its age
/// against the key-age policy, and a key check value where the key is symmetric (never
/// the key).
#[utoipa::path(get, path = "/v1/admin/key_inventory", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The vault's own keys first, then each account's", body = crate::service::key_inventory::KeyInventoryView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn key_inventory(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<crate::service::key_inventory::KeyInventoryView>> {
    Ok(Json(
        crate::service::key_inventory::inventory(&state).await?,
    ))
}

/// Data-key versions and re-wrap progress.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/keys", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "Per purpose, every version, its state and how many records it protects", body = DataKeysView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn key_status(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DataKeysView>> {
    parse_id(IdKind::Account, &id)?;
    Ok(Json(data_keys::status(&state, &id).await?))
}

/// Rotate a data key: a new version becomes the writer at once; re-wrap starts.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/keys/rotate", tag = "admin", security(("admin_key" = [])), request_body = RotateBody,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "Key status after rotation", body = DataKeysView),
        (status = 400, description = "idempotency_key_invalid, invalid_request, unknown_field, missing_field, invalid_parameter", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "conflict; idempotency_in_progress", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 422, description = "idempotency_key_reused", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn rotate_keys(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RotateBody>,
) -> ApiResult<Json<DataKeysView>> {
    parse_id(IdKind::Account, &id)?;
    state
        .keyring()
        .rotate(&admin.audit, &id, purpose(&body.purpose)?)
        .await?;
    Ok(Json(data_keys::status(&state, &id).await?))
}

/// Retire a data-key version that protects no record; afterwards nothing can use it.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/keys/retire", tag = "admin", security(("admin_key" = [])), request_body = RetireBody,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "Key status after retiring", body = DataKeysView),
        (status = 400, description = "idempotency_key_invalid, invalid_request, unknown_field, missing_field, invalid_parameter", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "key_in_use: the version still protects records or is the writer; idempotency_in_progress", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 422, description = "idempotency_key_reused", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn retire_key(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RetireBody>,
) -> ApiResult<Json<DataKeysView>> {
    parse_id(IdKind::Account, &id)?;
    let outcome = state
        .store()
        .audited(&admin.audit)
        .retire_data_key(&id, purpose(&body.purpose)?, body.version, state.now_ms())
        .await?;
    match outcome {
        RetireOutcome::Retired => {
            state.keyring().forget(&id);
            Ok(Json(data_keys::status(&state, &id).await?))
        }
        RetireOutcome::InUse(_) | RetireOutcome::Active => Err(codes::KEY_IN_USE),
        RetireOutcome::NotFound => Err(codes::NOT_FOUND),
    }
}

/// Rotate the account's OTP signing secret. The response carries the new
/// `otp_signing_secret`; for 24 hours every OTP delivery is signed under both the new
/// and the previous secret, so the receiver can switch over without losing a code.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/otp_signing_secret/rotate", tag = "admin", security(("admin_key" = [])),
    request_body(content = Option<EmptyBody>, description = "Optional"),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, description = "The account with the new `otp_signing_secret`, `otp_signing_secret_version` and `otp_signing_secret_rotation_ends_at`", body = AccountView),
        (status = 400, description = "idempotency_key_invalid, idempotency_not_supported (POST with Idempotency-Key: the response carries a secret), invalid_request, unknown_field", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "otp_delivery_not_configured, conflict", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn rotate_otp_secret(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    headers: axum::http::HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<AccountView>> {
    parse_id(IdKind::Account, &id)?;
    let _: EmptyBody = crate::extract::optional_json(&headers, &body)?;
    otp::rotate_delivery_secret(&state, &admin.audit, &id).await?;
    let accounts = state.accounts();
    let acct = accounts.get(&id).await?;
    Ok(Json(
        with_delivery_secret(&state, &acct, accounts.view(&acct).await?).await?,
    ))
}

/// Body of `POST /v1/admin/admin_keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminKeyBody {
    /// The custodian the key belongs to (1 to 100 characters): dual-control key imports
    /// name who keyed in each component.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// CIDRs the key may be used from (at most 100); absent or empty: anywhere.
    #[schema(max_items = 100)]
    pub ip_allowlist: Option<Vec<String>>,
}

/// Body of `PUT /v1/admin/admin_keys/{key_id}/ip_allowlist`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminAllowlistBody {
    /// IPv4/IPv6 CIDRs (or single addresses), at most 100. Empty: no restriction.
    #[schema(max_items = 100)]
    pub cidrs: Vec<String>,
}

/// Create another admin key (to hand over, or to replace one before revoking it). The
/// response carries `secret`; it is never shown again.
#[utoipa::path(post, path = "/v1/admin/admin_keys", tag = "admin", security(("admin_key" = [])), request_body = CreateAdminKeyBody,
    responses((status = 201, description = "The key (`kind: admin`), with its `secret` and `ip_allowlist`", body = NewApiKeyView),
        (status = 400, description = "idempotency_key_invalid, idempotency_not_supported (POST with Idempotency-Key: the response carries a secret), invalid_request, unknown_field, invalid_parameter (a malformed CIDR, an empty or over-long name)", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn create_admin_key(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateAdminKeyBody>,
) -> ApiResult<(StatusCode, Json<NewApiKeyView>)> {
    let nets = crate::gateway::parse_cidrs(body.ip_allowlist.as_deref().unwrap_or_default())?;
    let accounts = state.accounts();
    let issued = accounts
        .create_admin_key(Origin::Request(&admin.audit), body.name.as_deref())
        .await?;
    crate::service::controls::set_key_allowlist(&state, &admin.audit, &issued.record, &nets)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewApiKeyView::new(&issued, &nets)),
    ))
}

/// List the admin keys (prefixes, metadata and allowlists only).
#[utoipa::path(get, path = "/v1/admin/admin_keys", tag = "admin", security(("admin_key" = [])), params(NoQuery),
    responses((status = 200, description = "Every admin key", body = List<AdminKeyView>),
        (status = 400, description = "unknown_field", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list_admin_keys(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> ApiResult<Json<List<AdminKeyView>>> {
    let keys = state.store().list_api_keys(None).await?;
    let accounts = state.accounts();
    let mut data = Vec::with_capacity(keys.len());
    for k in keys.iter().filter(|k| k.kind == ADMIN_KIND) {
        data.push(accounts.admin_key_view(k).await?);
    }
    Ok(Json(List::all(data)))
}

/// Revoke an admin key; effective on the next request. The last admin key that is not
/// revoked cannot be revoked (`409 last_admin_key`): create its replacement first.
#[utoipa::path(delete, path = "/v1/admin/admin_keys/{key_id}", tag = "admin", security(("admin_key" = [])),
    params(("key_id" = String, Path, pattern = "^key_[0-9a-f]{32}$")),
    responses((status = 200, description = "The revoked key", body = AdminKeyView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "last_admin_key", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn revoke_admin_key(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<Json<AdminKeyView>> {
    let accounts = state.accounts();
    accounts.admin_key(&key_id).await?;
    // The store refuses to revoke the last admin key that is not revoked, in the
    // writer's transaction (so two racing revocations cannot both pass); the key exists,
    // so a refusal here is that.
    let revoked = match accounts
        .revoke_key(Origin::Request(&admin.audit), None, &key_id)
        .await
    {
        Err(ServiceError::NotFound) => return Err(codes::LAST_ADMIN_KEY),
        other => other?,
    };
    Ok(Json(accounts.admin_key_view(&revoked).await?))
}

/// Replace an admin key's IP allowlist (empty: anywhere). Requests with the key from
/// elsewhere get `403 ip_not_allowed`. A key cannot shut itself out: a list that does
/// not admit the address of the request making the change is refused.
#[utoipa::path(put, path = "/v1/admin/admin_keys/{key_id}/ip_allowlist", tag = "admin", security(("admin_key" = [])), request_body = AdminAllowlistBody,
    params(("key_id" = String, Path, pattern = "^key_[0-9a-f]{32}$")),
    responses((status = 200, description = "The key with its `ip_allowlist`", body = AdminKeyView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter (a malformed CIDR), allowlist_excludes_caller", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn set_admin_key_allowlist(
    State(state): State<AppState>,
    admin: Admin,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    ApiPath(key_id): ApiPath<String>,
    ApiJson(body): ApiJson<AdminAllowlistBody>,
) -> ApiResult<Json<AdminKeyView>> {
    let nets = crate::gateway::parse_cidrs(&body.cidrs)?;
    let key = state.accounts().admin_key(&key_id).await?;
    if key.id == admin.key_id && !nets.is_empty() && !nets.iter().any(|n| n.contains(&ip)) {
        return Err(codes::ALLOWLIST_EXCLUDES_CALLER);
    }
    let cidrs: Vec<String> = nets.iter().map(ToString::to_string).collect();
    state
        .store()
        .audited(&admin.audit)
        .set_key_ip_allowlist(&key.id, &cidrs)
        .await?;
    state.gateway().forget_key(&key.id);
    Ok(Json(AdminKeyView {
        key: ApiKeyView::from(&key),
        ip_allowlist: cidrs,
    }))
}
