//! Device integrity (docs/device-integrity.md): the operator registers an account's
//! mobile applications (`/v1/admin/accounts/{id}/integrity_apps`); the app gets a hash
//! (`GET /v1/integrity/app`) and trades a Play Integrity token over it for an attestation
//! (`POST /v1/integrity/app`).

use crate::auth::{Admin, Principal};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::integrity::{
    self as svc, AttestationView, IntegrityAppSettings, IntegrityAppView, IntegrityHashView,
    Submitted,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use strongroom_core::Sensitive;
use utoipa::ToSchema;

/// Register an application whose Play Integrity tokens the account accepts.
/// `invalid_parameter` also refuses a schema-valid key that is not an AES-256 key or a
/// P-256 public key, and a digest that is not 32 bytes.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/integrity_apps", tag = "admin", security(("admin_key" = [])), request_body = IntegrityAppSettings,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 201, description = "The application (never its keys)", body = IntegrityAppView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, invalid_parameter, limit_reached", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "integrity_app_exists", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn create_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<IntegrityAppSettings>,
) -> ApiResult<(StatusCode, Json<IntegrityAppView>)> {
    let app = svc::create_app(&state, &admin.audit, &id, body).await?;
    Ok((StatusCode::CREATED, Json(app)))
}

/// The account's applications.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/integrity_apps", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$")),
    responses((status = 200, body = List<IntegrityAppView>),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn list_apps(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<List<IntegrityAppView>>> {
    Ok(Json(svc::list_apps(&state, &id).await?))
}

/// One application.
#[utoipa::path(get, path = "/v1/admin/accounts/{id}/integrity_apps/{app_id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$"), ("app_id" = String, Path, pattern = "^iapp_[0-9a-f]{32}$")),
    responses((status = 200, body = IntegrityAppView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get_app(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath((id, app_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<IntegrityAppView>> {
    Ok(Json(svc::get_app(&state, &id, &app_id).await?))
}

/// Change an application's settings or keys (a new key replaces the old at once). An
/// `application_id` other than the application's is `invalid_parameter`.
#[utoipa::path(patch, path = "/v1/admin/accounts/{id}/integrity_apps/{app_id}", tag = "admin", security(("admin_key" = [])), request_body = IntegrityAppSettings,
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$"), ("app_id" = String, Path, pattern = "^iapp_[0-9a-f]{32}$")),
    responses((status = 200, body = IntegrityAppView),
        (status = 400, description = "invalid_request, unknown_field, invalid_parameter", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn update_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((id, app_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<IntegrityAppSettings>,
) -> ApiResult<Json<IntegrityAppView>> {
    let app = svc::update_app(&state, &admin.audit, &id, &app_id, body).await?;
    Ok(Json(app))
}

/// Remove an application: its hashes and tokens are refused from then on.
#[utoipa::path(delete, path = "/v1/admin/accounts/{id}/integrity_apps/{app_id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, pattern = "^acct_[0-9a-f]{32}$"), ("app_id" = String, Path, pattern = "^iapp_[0-9a-f]{32}$")),
    responses((status = 200, description = "The application removed", body = IntegrityAppView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn delete_app(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((id, app_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<IntegrityAppView>> {
    Ok(Json(
        svc::delete_app(&state, &admin.audit, &id, &app_id).await?,
    ))
}

/// A single-use hash for the calling application (named by the `applicationid` header),
/// bound to the caller: pass it as the Play Integrity request hash. Valid 5 minutes.
/// `integrity_application_invalid` also refuses a schema-valid package name that is not
/// registered for the account.
#[utoipa::path(get, path = "/v1/integrity/app", tag = "integrity", security(("api_key" = [])),
    params(("applicationid" = String, Header, pattern = "^[A-Za-z][A-Za-z0-9_]*(\\.[A-Za-z][A-Za-z0-9_]*)+$")),
    responses((status = 200, body = IntegrityHashView),
        (status = 400, description = "integrity_application_invalid", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn new_hash(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> ApiResult<Json<IntegrityHashView>> {
    let app = headers
        .get(svc::APPLICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(Json(svc::new_hash(&state, &who, app).await?))
}

/// Body of `POST /v1/integrity/app` (the field names are the ones mobile clients of this
/// flow already send).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestBody {
    /// The hash from `GET /v1/integrity/app`.
    #[schema(max_length = 500)]
    pub hash: String,
    /// The Android package name.
    #[serde(rename = "applicationId")]
    #[schema(max_length = 255)]
    pub application_id: String,
    /// The Play Integrity token (a compact JWE). Never stored or logged.
    #[schema(value_type = String, max_length = 16384)]
    pub token: Sensitive<String>,
}

/// Trade a Play Integrity token over the hash for an attestation. The token is decrypted
/// and verified locally with the application's keys, then its verdicts are checked; each
/// failing check has its own code. The hash is used up by this call whatever its outcome.
#[utoipa::path(post, path = "/v1/integrity/app", tag = "integrity", security(("api_key" = [])), request_body = AttestBody,
    responses((status = 201, description = "The attestation", body = AttestationView),
        (status = 400, description = "invalid_request, unknown_field, missing_field, integrity_application_invalid, integrity_hash_invalid, integrity_token_invalid, integrity_token_expired", body = ErrorResponse),
        (status = 401, description = "authentication_required, invalid_api_key, api_key_revoked", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed, integrity_app_unrecognized, integrity_app_version, integrity_device, integrity_licensing", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn attest(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<AttestBody>,
) -> ApiResult<(StatusCode, Json<AttestationView>)> {
    let sent = Submitted {
        hash: &body.hash,
        application_id: &body.application_id,
        token: &body.token,
    };
    let att = svc::attest(&state, &who, sent).await?;
    Ok((StatusCode::CREATED, Json(att)))
}
