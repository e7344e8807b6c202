//! `/v1/admin/…`: operators manage accounts, API keys and data keys with the admin key.

use crate::auth::Admin;
use crate::error::{ApiResult, codes};
use crate::extract::EmptyBody;
use crate::extract::{ApiJson, ApiPath};
use crate::gateway::client_ip::ClientIp;
use crate::service::{account_json, api_key_json, otp, secs};
use crate::state::ADMIN_KIND;
use crate::state::{AppState, NewKeyKind};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_core::{IdKind, KeyKind, Mode, Scopes, parse_id};
use strongroom_store::{ControlStore, KeyPurpose, RetireOutcome, VaultStore};
use utoipa::ToSchema;

/// Body of `POST /v1/admin/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    /// Display name, 1–200 characters.
    pub name: String,
    /// HTTPS URL, to a public address and without credentials, that receives
    /// live-mode OTP codes.
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
    crate::service::webhooks::check_url(state, Mode::Live, url).await
}

async fn with_delivery_secret(
    state: &AppState,
    acct: &strongroom_store::AccountRecord,
) -> ApiResult<Value> {
    let mut v = account_json(acct);
    if acct.otp_delivery_url.is_some()
        && let Some(obj) = v.as_object_mut()
    {
        let (version, overlap_ends) = otp::delivery_generation(state, &acct.id).await?;
        let secret = otp::delivery_secret(state, &acct.id, version)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret.as_slice());
        obj.insert(
            "otp_signing_secret".into(),
            Value::String(format!("whsec_{encoded}")),
        );
        obj.insert("otp_signing_secret_version".into(), json!(version));
        obj.insert(
            "otp_signing_secret_rotation_ends_at".into(),
            json!(overlap_ends.map(secs)),
        );
    }
    Ok(v)
}

/// Create an account.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", security(("admin_key" = [])), request_body = CreateAccountBody,
    responses((status = 201, description = "The account; `otp_signing_secret` when an OTP delivery URL is set"),
        (status = 400, description = "invalid_parameter; url_not_allowed: the OTP delivery URL is not HTTPS to a public address, or carries credentials")))]
pub async fn create_account(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateAccountBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name(&body.name)?;
    let url = match &body.otp_delivery_url {
        Some(u) => Some(check_url(&state, u).await?),
        None => None,
    };
    let acct = state.create_account(&body.name, url).await?;
    Ok((
        StatusCode::CREATED,
        Json(with_delivery_secret(&state, &acct).await?),
    ))
}

/// Retrieve an account.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "The account"), (status = 404, description = "not_found")))]
pub async fn get_account(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(account_json(&state.account(&id).await?)))
}

/// Body of `PATCH /v1/admin/accounts/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountBody {
    /// New display name.
    pub name: Option<String>,
    /// New OTP delivery URL.
    pub otp_delivery_url: Option<String>,
    /// Per-credential rate limit of this account, requests per minute (the burst
    /// follows); 1–1000000.
    pub rate_limit_per_minute: Option<i64>,
}

/// Update an account.
#[utoipa::path(patch, path = "/v1/admin/accounts/{id}", tag = "admin", security(("admin_key" = [])), request_body = UpdateAccountBody,
    params(("id" = String, Path)), responses((status = 200, description = "The account"),
        (status = 400, description = "invalid_parameter; url_not_allowed: the OTP delivery URL is not HTTPS to a public address, or carries credentials")))]
pub async fn update_account(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateAccountBody>,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    if body
        .rate_limit_per_minute
        .is_some_and(|n| !(1..=1_000_000).contains(&n))
    {
        return Err(codes::INVALID_PARAMETER);
    }
    let mut acct = state.account(&id).await?;
    if let Some(n) = body.name {
        check_name(&n)?;
        acct.name = n;
    }
    if let Some(u) = body.otp_delivery_url {
        acct.otp_delivery_url = Some(check_url(&state, &u).await?);
    }
    if !state.store().update_account(&acct).await? {
        return Err(codes::NOT_FOUND);
    }
    let rate =
        crate::service::controls::set_rate_limit(&state, &id, body.rate_limit_per_minute).await?;
    let mut v = with_delivery_secret(&state, &acct).await?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("rate_limit_per_minute".into(), json!(rate));
    }
    Ok(Json(v))
}

/// Body of `POST /v1/admin/accounts/{id}/api_keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// `secret`, `publishable` or `restricted`.
    pub kind: String,
    /// `test` or `live`.
    pub mode: String,
    /// Restricted keys only: `cards:write`, `cards:read`, `cards:reveal`, `cards:delete`,
    /// `pins:write`, `pins:verify`.
    pub scopes: Option<Vec<String>>,
    /// CIDRs this key may be used from (at most 100); absent or empty: anywhere the
    /// account allows.
    pub ip_allowlist: Option<Vec<String>>,
}

/// Create an API key. The response carries `secret`; it is never shown again.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/api_keys", tag = "admin", security(("admin_key" = [])), request_body = CreateKeyBody,
    params(("id" = String, Path)), responses((status = 201, description = "{id, object, secret, prefix, kind, mode, scopes, created}"),
        (status = 400, description = "invalid_parameter, scope_unknown, scopes_required, scopes_not_allowed")))]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    parse_id(IdKind::Account, &id)?;
    let kind = KeyKind::parse(&body.kind).ok_or(codes::INVALID_PARAMETER)?;
    let mode = Mode::parse(&body.mode).ok_or(codes::INVALID_PARAMETER)?;
    let scopes = body
        .scopes
        .as_ref()
        .map(|s| Scopes::parse_list(s.iter().map(String::as_str)))
        .transpose()?;
    let allowlist = crate::gateway::parse_cidrs(body.ip_allowlist.as_deref().unwrap_or_default())?;
    let issued = state
        .create_api_key(Some(&id), NewKeyKind::Account(kind), mode, scopes)
        .await?;
    crate::service::controls::set_key_allowlist(&state, &issued.record, &allowlist).await?;
    let mut v = api_key_json(&issued.record);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "secret".into(),
            Value::String(issued.secret.expose().clone()),
        );
        obj.insert(
            "ip_allowlist".into(),
            json!(
                allowlist
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        );
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// List an account's API keys (prefixes and metadata only).
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/api_keys", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "{object: list, data: [api_key]}")))]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    state.account(&id).await?;
    let keys = state.store().list_api_keys(Some(&id)).await?;
    Ok(Json(
        json!({"object": "list", "data": keys.iter().map(api_key_json).collect::<Vec<_>>(), "has_more": false}),
    ))
}

/// Revoke an API key; effective on the next request.
#[utoipa::path(delete, path = "/v1/admin/accounts/{id}/api_keys/{key_id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path), ("key_id" = String, Path)), responses((status = 200, description = "The revoked key"), (status = 404, description = "not_found")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    parse_id(IdKind::ApiKey, &key_id)?;
    let key = state.revoke_api_key(Some(&id), &key_id).await?;
    Ok(Json(api_key_json(&key)))
}

/// Body naming a key purpose.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurposeBody {
    /// `cards`, `fingerprint` or `pin`.
    pub purpose: String,
    /// For retire: the version.
    pub version: Option<i64>,
}

fn purpose(s: &str) -> ApiResult<KeyPurpose> {
    KeyPurpose::parse(s).ok_or(codes::INVALID_PARAMETER)
}

/// Per purpose: every version, its state, and how many records it protects.
pub async fn key_status_json(state: &AppState, account_id: &str) -> ApiResult<Value> {
    let records = state.store().data_keys(account_id).await?;
    if records.is_empty() {
        return Err(codes::NOT_FOUND);
    }
    let mut out = serde_json::Map::new();
    for p in KeyPurpose::ALL {
        let usage = state.store().key_usage(account_id, p).await?;
        let versions: Vec<Value> = records
            .iter()
            .filter(|r| r.purpose == p)
            .map(|r| {
                let count = usage
                    .iter()
                    .find(|(v, _)| *v == r.version)
                    .map_or(0, |(_, n)| *n);
                json!({
                    "version": r.version,
                    "state": r.state.as_str(),
                    "records": count,
                    "created": secs(r.created_ms),
                    "retired": r.retired_ms.map(secs),
                })
            })
            .collect();
        let pending: i64 = records
            .iter()
            .filter(|r| r.purpose == p && r.state != strongroom_store::KeyState::Active)
            .map(|r| {
                usage
                    .iter()
                    .find(|(v, _)| *v == r.version)
                    .map_or(0, |(_, n)| *n)
            })
            .sum();
        out.insert(
            p.as_str().into(),
            json!({"versions": versions, "records_to_rewrap": pending}),
        );
    }
    Ok(json!({"object": "data_keys", "account": account_id, "purposes": out}))
}

/// Data-key versions and re-wrap progress.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/keys", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path)), responses((status = 200, description = "{purposes: {cards: {versions: [{version, state, records}], records_to_rewrap}, fingerprint: …}}")))]
pub async fn key_status(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    Ok(Json(key_status_json(&state, &id).await?))
}

/// Rotate a data key: a new version becomes the writer at once; re-wrap starts.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/keys/rotate", tag = "admin", security(("admin_key" = [])), request_body = PurposeBody,
    params(("id" = String, Path)), responses((status = 200, description = "Key status after rotation")))]
pub async fn rotate_keys(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PurposeBody>,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    if body.version.is_some() {
        return Err(codes::UNKNOWN_FIELD);
    }
    state.keyring().rotate(&id, purpose(&body.purpose)?).await?;
    Ok(Json(key_status_json(&state, &id).await?))
}

/// Retire a data-key version that protects no record; afterwards nothing can use it.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/keys/retire", tag = "admin", security(("admin_key" = [])), request_body = PurposeBody,
    params(("id" = String, Path)), responses((status = 200, description = "Key status after retiring"), (status = 409, description = "key_in_use")))]
pub async fn retire_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PurposeBody>,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    let version = body.version.ok_or(codes::MISSING_FIELD)?;
    let outcome = state
        .store()
        .retire_data_key(&id, purpose(&body.purpose)?, version, state.now_ms())
        .await?;
    match outcome {
        RetireOutcome::Retired => {
            state.keyring().forget(&id);
            Ok(Json(key_status_json(&state, &id).await?))
        }
        RetireOutcome::InUse(_) | RetireOutcome::Active => Err(codes::KEY_IN_USE),
        RetireOutcome::NotFound => Err(codes::NOT_FOUND),
    }
}

/// Rotate the account's OTP signing secret. The response carries the new
/// `otp_signing_secret`; for 24 hours every OTP delivery is signed under both the new
/// and the previous secret, so the receiver can switch over without losing a code.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/otp_signing_secret/rotate", tag = "admin", security(("admin_key" = [])),
    request_body(content = EmptyBody, description = "Optional"),
    params(("id" = String, Path)), responses((status = 200, description = "The account with the new `otp_signing_secret`, `otp_signing_secret_version` and `otp_signing_secret_rotation_ends_at`"),
        (status = 404, description = "not_found"), (status = 409, description = "otp_delivery_not_configured, conflict")))]
pub async fn rotate_otp_secret(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    headers: axum::http::HeaderMap,
    crate::extract::ApiBytes(body): crate::extract::ApiBytes,
) -> ApiResult<Json<Value>> {
    parse_id(IdKind::Account, &id)?;
    let _: EmptyBody = crate::extract::optional_json(&headers, &body)?;
    otp::rotate_delivery_secret(&state, &id).await?;
    let acct = state.account(&id).await?;
    Ok(Json(with_delivery_secret(&state, &acct).await?))
}

/// Body of `POST /v1/admin/admin_keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminKeyBody {
    /// CIDRs the key may be used from (at most 100); absent or empty: anywhere.
    pub ip_allowlist: Option<Vec<String>>,
}

/// Body of `PUT /v1/admin/admin_keys/{key_id}/ip_allowlist`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminAllowlistBody {
    /// IPv4/IPv6 CIDRs (or single addresses), at most 100. Empty: no restriction.
    pub cidrs: Vec<String>,
}

fn admin_key_json(key: &strongroom_store::ApiKeyRecord, allowlist: &[String]) -> Value {
    let mut v = api_key_json(key);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("ip_allowlist".into(), json!(allowlist));
    }
    v
}

/// The admin key `key_id`, or `not_found` (an account key is not an admin key).
async fn admin_key(state: &AppState, key_id: &str) -> ApiResult<strongroom_store::ApiKeyRecord> {
    parse_id(IdKind::ApiKey, key_id)?;
    state
        .store()
        .list_api_keys(None)
        .await?
        .into_iter()
        .find(|k| k.id == key_id && k.kind == ADMIN_KIND)
        .ok_or(codes::NOT_FOUND)
}

/// Create another admin key (to hand over, or to replace one before revoking it). The
/// response carries `secret`; it is never shown again.
#[utoipa::path(post, path = "/v1/admin/admin_keys", tag = "admin", security(("admin_key" = [])), request_body = CreateAdminKeyBody,
    responses((status = 201, description = "{id, object, secret, prefix, kind: admin, ip_allowlist, created}"),
        (status = 400, description = "invalid_parameter, allowlist_excludes_caller")))]
pub async fn create_admin_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateAdminKeyBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let nets = crate::gateway::parse_cidrs(body.ip_allowlist.as_deref().unwrap_or_default())?;
    let issued = state
        .create_api_key(None, NewKeyKind::Admin, Mode::Live, None)
        .await?;
    crate::service::controls::set_key_allowlist(&state, &issued.record, &nets).await?;
    let cidrs: Vec<String> = nets.iter().map(ToString::to_string).collect();
    let mut v = admin_key_json(&issued.record, &cidrs);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "secret".into(),
            Value::String(issued.secret.expose().clone()),
        );
    }
    Ok((StatusCode::CREATED, Json(v)))
}

/// List the admin keys (prefixes, metadata and allowlists only).
#[utoipa::path(get, path = "/v1/admin/admin_keys", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "{object: list, data: [api_key with ip_allowlist]}")))]
pub async fn list_admin_keys(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Value>> {
    let keys = state.store().list_api_keys(None).await?;
    let mut data = Vec::with_capacity(keys.len());
    for k in keys.iter().filter(|k| k.kind == ADMIN_KIND) {
        let list = state.store().key_ip_allowlist(&k.id).await?;
        data.push(admin_key_json(k, &list));
    }
    Ok(Json(
        json!({"object": "list", "data": data, "has_more": false}),
    ))
}

/// Revoke an admin key; effective on the next request. The last admin key that is not
/// revoked cannot be revoked (`409 last_admin_key`): create its replacement first.
#[utoipa::path(delete, path = "/v1/admin/admin_keys/{key_id}", tag = "admin", security(("admin_key" = [])),
    params(("key_id" = String, Path)), responses((status = 200, description = "The revoked key"), (status = 404, description = "not_found"),
        (status = 409, description = "last_admin_key")))]
pub async fn revoke_admin_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    admin_key(&state, &key_id).await?;
    // The store refuses to revoke the last admin key that is not revoked, in the
    // writer's transaction (so two racing revocations cannot both pass); the key exists,
    // so a refusal here is that.
    let revoked = match state.revoke_api_key(None, &key_id).await {
        Err(e) if e.code == codes::NOT_FOUND.code => return Err(codes::LAST_ADMIN_KEY),
        other => other?,
    };
    let list = state.store().key_ip_allowlist(&key_id).await?;
    Ok(Json(admin_key_json(&revoked, &list)))
}

/// Replace an admin key's IP allowlist (empty: anywhere). Requests with the key from
/// elsewhere get `403 ip_not_allowed`. A key cannot shut itself out: a list that does
/// not admit the address of the request making the change is refused.
#[utoipa::path(put, path = "/v1/admin/admin_keys/{key_id}/ip_allowlist", tag = "admin", security(("admin_key" = [])), request_body = AdminAllowlistBody,
    params(("key_id" = String, Path)), responses((status = 200, description = "The key with its `ip_allowlist`"), (status = 404, description = "not_found"),
        (status = 400, description = "invalid_parameter, allowlist_excludes_caller")))]
pub async fn set_admin_key_allowlist(
    State(state): State<AppState>,
    admin: Admin,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    ApiPath(key_id): ApiPath<String>,
    ApiJson(body): ApiJson<AdminAllowlistBody>,
) -> ApiResult<Json<Value>> {
    let nets = crate::gateway::parse_cidrs(&body.cidrs)?;
    let key = admin_key(&state, &key_id).await?;
    if key.id == admin.key_id && !nets.is_empty() && !nets.iter().any(|n| n.contains(&ip)) {
        return Err(codes::ALLOWLIST_EXCLUDES_CALLER);
    }
    let cidrs: Vec<String> = nets.iter().map(ToString::to_string).collect();
    state.store().set_key_ip_allowlist(&key.id, &cidrs).await?;
    state.gateway().forget_key(&key.id);
    Ok(Json(admin_key_json(&key, &cidrs)))
}
