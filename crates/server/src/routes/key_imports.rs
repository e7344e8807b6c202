//! `/v1/admin/key_imports`: dual-control key imports (see [`crate::service::key_imports`]).

use crate::auth::Admin;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::ErrorResponse;
use crate::service::key_imports::{self, KeyImportView, NewImport};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use strongroom_core::Sensitive;
use strongroom_crypto::components::KeyAlgorithm;
use utoipa::ToSchema;

/// What kind of key an import makes.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// A base derivation key of card-present terminals (`bdk_…`).
    Bdk,
    /// A processor's zone PIN key (`zpk_…`).
    ZonePinKey,
    /// A key-encryption key (`kek_…`).
    Kek,
}

impl ImportKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Bdk => "bdk",
            Self::ZonePinKey => "zone_pin_key",
            Self::Kek => "kek",
        }
    }
}

/// The imported key's algorithm.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportAlgorithm {
    /// AES-128.
    Aes128,
    /// AES-192.
    Aes192,
    /// AES-256.
    Aes256,
    /// Double-length TDES.
    Tdes2,
    /// Triple-length TDES.
    Tdes3,
}

impl From<ImportAlgorithm> for KeyAlgorithm {
    fn from(a: ImportAlgorithm) -> Self {
        match a {
            ImportAlgorithm::Aes128 => Self::Aes128,
            ImportAlgorithm::Aes192 => Self::Aes192,
            ImportAlgorithm::Aes256 => Self::Aes256,
            ImportAlgorithm::Tdes2 => Self::Tdes2,
            ImportAlgorithm::Tdes3 => Self::Tdes3,
        }
    }
}

/// Body of `POST /v1/admin/key_imports`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImportBody {
    /// The account the key is for (`acct_…`).
    pub account: String,
    /// `bdk`, `zone_pin_key` or `kek`.
    pub kind: ImportKind,
    /// Components: `aes128`, `aes192`, `aes256`, `tdes2` or `tdes3`. Not with `tr31`
    /// (the block says it).
    pub algorithm: Option<ImportAlgorithm>,
    /// Components: how many make the key, 2 or 3, each from a different admin key.
    #[schema(minimum = 2, maximum = 3)]
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    pub components: Option<i64>,
    /// What the operators call the key (1 to 100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Instead of components: the key as one TR-31 key block (version B or D) under
    /// `kbpk`. The key is made at once.
    #[schema(value_type = Option<String>, max_length = 8192)]
    pub tr31: Option<Sensitive<String>>,
    /// With `tr31`: the key-encryption key it is wrapped under (`kek_…` of the same
    /// account, itself imported under dual control).
    pub kbpk: Option<String>,
}

/// Body of `POST /v1/admin/key_imports/{id}/components`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentBody {
    /// One clear component, hex (the key's length).
    #[schema(value_type = String, pattern = "^[0-9A-Fa-f]{32,64}$")]
    pub component: Sensitive<String>,
    /// Its check value as printed with it: 6 hex digits.
    #[schema(pattern = "^[0-9A-Fa-f]{6}$")]
    pub kcv: String,
}

/// Begin a dual-control key import. The key is made when each of `components` admin keys
/// has given one clear component (`POST …/components`); no single person ever holds it.
/// Or import a key whole, as a TR-31 key block (`tr31`) under a KEK imported that way
/// (`kbpk`): the key is made at once.
#[utoipa::path(post, path = "/v1/admin/key_imports", tag = "admin", security(("admin_key" = [])),
    request_body = CreateImportBody,
    responses((status = 201, body = KeyImportView),
        (status = 400, description = "invalid_parameter (components not 2 or 3, an empty name, neither or both of components and tr31), key_block_invalid, key_block_usage, invalid_request, unknown_field, missing_field", body = ErrorResponse),
        (status = 403, description = "permission_denied, ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found (no such account, or no such KEK in it)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<CreateImportBody>,
) -> ApiResult<(StatusCode, Json<KeyImportView>)> {
    let req = NewImport {
        account: &body.account,
        kind: body.kind.as_str(),
        algorithm: body.algorithm.map(KeyAlgorithm::from),
        components: body.components.unwrap_or(0),
        name: &body.name,
    };
    let view = match (&body.tr31, &body.kbpk, body.algorithm, body.components) {
        (Some(block), Some(kbpk), None, None) => {
            key_imports::import_block(&state, &admin.audit, &admin.key_id, req, block, kbpk).await?
        }
        (None, None, Some(_), Some(_)) => key_imports::create(&state, &admin.audit, req).await?,
        _ => return Err(crate::error::codes::INVALID_PARAMETER),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// A key import: who has given a component, and the key's id and check value once made.
#[utoipa::path(get, path = "/v1/admin/key_imports/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "kimp_…")),
    responses((status = 200, body = KeyImportView),
        (status = 403, description = "permission_denied, ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<KeyImportView>> {
    Ok(Json(key_imports::get(&state, &id).await?))
}

/// Give one clear component, from an admin key that has not given one to this import,
/// with its check value. The last component makes the key (`key: {id, kcv}`).
#[utoipa::path(post, path = "/v1/admin/key_imports/{id}/components", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "kimp_…")),
    request_body = ComponentBody,
    responses((status = 200, body = KeyImportView),
        (status = 400, description = "kcv_mismatch, invalid_parameter (not hex, the wrong length, or components that cancel out), invalid_request, unknown_field, missing_field", body = ErrorResponse),
        (status = 403, description = "permission_denied, ip_not_allowed", body = ErrorResponse),
        (status = 404, description = "not_found", body = ErrorResponse),
        (status = 409, description = "custodian_repeated (this admin key gave one already), conflict (the import is complete, or another component came in at the same time)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn add_component(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ComponentBody>,
) -> ApiResult<Json<KeyImportView>> {
    let view = key_imports::add_component(
        &state,
        &admin.audit,
        &admin.key_id,
        &id,
        &body.component,
        &body.kcv,
    )
    .await?;
    Ok(Json(view))
}
