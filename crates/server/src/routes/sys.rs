//! `/v1/sys`: the seal (docs/key-custody.md). The handlers find the vault in the
//! request's extensions, where the server's front puts it for these routes. `seal_status` and `unseal` answer whether
//! the vault is open or sealed and take no credential (a sealed vault cannot check one:
//! the digests of API keys are keyed by the root key); `seal` takes an admin key.
//!
//! A sealed vault serves [`sealed_router`]: these two routes, `/healthz`, and `503 sealed`
//! for everything else.

use crate::auth::Admin;
use crate::custody::rotation::{RootRotationView, RotateRoot};
use crate::custody::{Provider, SealStatusView, UnsealView, Vault};
use crate::error::{ApiResult, ErrorBody, codes, render};
use crate::extract::{ApiBytes, ApiJson, optional_json};
use crate::openapi::ErrorResponse;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use strongroom_core::{Clock, IdKind, Sensitive};
use utoipa::ToSchema;

/// Body of `POST /v1/sys/unseal`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsealBody {
    /// One custodian's share, as `strongroom operator init` printed it.
    #[schema(value_type = String, pattern = "^srshare1_[A-Za-z0-9_-]{44}$")]
    pub share: Sensitive<String>,
}

/// Whether the vault is sealed, and how it opens. Never how many shares are in.
#[utoipa::path(get, path = "/v1/sys/seal_status", tag = "sys",
    responses((status = 200, body = SealStatusView),
        (status = 503, description = "service_unavailable (store unreachable)", body = ErrorResponse)))]
pub async fn seal_status(
    Extension(vault): Extension<Arc<Vault>>,
) -> ApiResult<Json<SealStatusView>> {
    Ok(Json(vault.status().await?))
}

/// Hand in one custodian's unseal share. When the threshold is reached the root key is
/// rebuilt, checked against the vault's verifier, and the vault opens. Only this answer
/// says how many shares are in; an open vault answers `sealed: false`.
#[utoipa::path(post, path = "/v1/sys/unseal", tag = "sys", request_body = UnsealBody,
    responses((status = 200, body = UnsealView),
        (status = 400, description = "share_invalid (malformed, or not a share of this vault's root key), unknown_field, missing_field, invalid_request", body = ErrorResponse),
        (status = 409, description = "share_duplicate, unseal_by_restart (the root key comes from a file or an HSM)", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "service_unavailable", body = ErrorResponse)))]
pub async fn unseal(
    Extension(vault): Extension<Arc<Vault>>,
    ApiJson(body): ApiJson<UnsealBody>,
) -> ApiResult<Json<UnsealView>> {
    Ok(Json(vault.unseal(body.share.expose()).await?))
}

/// Seal the vault: every key leaves memory at once, and every route answers
/// `503 sealed` until it is unsealed (Shamir) or restarted (file, HSM).
#[utoipa::path(post, path = "/v1/sys/seal", tag = "sys", security(("admin_key" = [])),
    responses((status = 200, body = SealStatusView),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse)))]
pub async fn seal(
    Extension(vault): Extension<Arc<Vault>>,
    _admin: Admin,
) -> ApiResult<Json<SealStatusView>> {
    vault.seal().await;
    Ok(Json(vault.status().await?))
}

/// A root-key provider, in a request.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    /// A 0600 file (development and tests).
    File,
    /// Shamir shares held by custodians.
    Shamir,
    /// An HSM through PKCS#11.
    Pkcs11,
}

impl From<ProviderName> for Provider {
    fn from(p: ProviderName) -> Self {
        match p {
            ProviderName::File => Self::File,
            ProviderName::Shamir => Self::Shamir,
            ProviderName::Pkcs11 => Self::Pkcs11,
        }
    }
}

/// Body of `POST /v1/sys/rotate_root`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRootBody {
    /// The next root key's provider: the one in force (default), or a stronger one
    /// (`pkcs11`; `shamir` from `file`).
    pub provider: Option<ProviderName>,
    /// `shamir`: how many shares (default 5, at most 32).
    #[schema(minimum = 2, maximum = 32)]
    pub shares: Option<u8>,
    /// `shamir`: how many shares open the vault (default 3).
    #[schema(minimum = 2, maximum = 32)]
    pub threshold: Option<u8>,
}

/// Rotate the root key: a new one (under the same provider or a stronger one) takes
/// over every wrapped key while the API keeps serving, and the old one is retired. The
/// answer comes at once, with the new Shamir shares if the next key is kept by shares
/// (shown only here); `GET /v1/sys/rotate_root` follows the progress.
#[utoipa::path(post, path = "/v1/sys/rotate_root", tag = "sys", security(("admin_key" = [])),
    request_body = RotateRootBody,
    responses((status = 202, body = RootRotationView),
        (status = 400, description = "root_provider_downgrade, invalid_parameter (shares, threshold), unknown_field, invalid_request", body = ErrorResponse),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 409, description = "rotation_running, rotation_pending (an interrupted rotation to another provider), provider_not_configured", body = ErrorResponse),
        (status = 413, description = "body_too_large", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type", body = ErrorResponse),
        (status = 503, description = "sealed, service_unavailable (the HSM)", body = ErrorResponse)))]
pub async fn rotate_root(
    Extension(vault): Extension<Arc<Vault>>,
    _admin: Admin,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(axum::http::StatusCode, Json<RootRotationView>)> {
    let body: RotateRootBody = optional_json(&headers, &body)?;
    let req = RotateRoot {
        provider: body.provider.map(Provider::from),
        shares: body.shares.unwrap_or(5),
        threshold: body.threshold.unwrap_or(3),
    };
    let view = vault.rotate_root(req).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(view)))
}

/// The root rotation this node runs or last ran, or one pending in the store.
#[utoipa::path(get, path = "/v1/sys/rotate_root", tag = "sys", security(("admin_key" = [])),
    responses((status = 200, body = RootRotationView),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse),
        (status = 404, description = "not_found (no rotation ran on this node since it started, and none is pending)", body = ErrorResponse)))]
pub async fn rotation(
    Extension(vault): Extension<Arc<Vault>>,
    _admin: Admin,
) -> ApiResult<Json<RootRotationView>> {
    vault.rotation().await?.map(Json).ok_or(codes::NOT_FOUND)
}

/// What a sealed vault serves. It keeps only the clock (request ids): the vault comes
/// with each `/v1/sys` request, so that the vault, which keeps this router, is not kept
/// alive by it.
pub(crate) fn sealed_router(clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route("/healthz", get(crate::routes::meta::healthz))
        .route("/v1/sys/seal_status", get(seal_status))
        .route("/v1/sys/unseal", post(unseal))
        .fallback(|| async { codes::SEALED })
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::extract::BODY_LIMIT,
        ))
        .layer(axum::middleware::from_fn_with_state(clock, sealed_context))
}

/// The open vault's request context, reduced to what a sealed vault has: a request id,
/// the error body, the security headers and the access log line. Refused shares are
/// audited by [`Vault::unseal`] itself.
async fn sealed_context(
    State(clock): State<Arc<dyn Clock>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = crate::events::new_id(clock.as_ref(), IdKind::Request)
        .unwrap_or_else(|_| String::from("req_unavailable"));
    let (route, method) = crate::middleware::tag(&mut req, &request_id);
    let mut res = next.run(req).await;
    let error = res.extensions_mut().remove::<ErrorBody>().map(|e| e.0);
    if let Some(err) = &error {
        *res.body_mut() = axum::body::Body::from(render(err, &request_id));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut().remove(header::CONTENT_LENGTH);
        if err.code == codes::SEALED.code {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
    }
    crate::middleware::security_headers(&mut res, &request_id);
    let status = res.status().as_u16();
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let route = route.as_str();
    match &error {
        Some(e) => {
            tracing::info!(target: "access", request_id, %method, route, status, latency_us, code = e.code)
        }
        None => tracing::info!(target: "access", request_id, %method, route, status, latency_us),
    }
    res.into_response()
}
