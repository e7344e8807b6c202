//! `GET /v1/admin/audit`: query the audit trail (admin key).

use crate::auth::Admin;
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::openapi::ErrorResponse;
use crate::service::List;
use crate::service::audit::{self as svc, AuditFilter, AuditRecordView};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;

/// Query of `GET /v1/admin/audit`. Records come oldest first.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only records about this account (`acct_…`).
    #[param(min_length = 1, max_length = 128)]
    pub account: Option<String>,
    /// Only records by this actor (`key_…`, `admin:key_…`, `system`, `anonymous`).
    #[param(min_length = 1, max_length = 128)]
    pub actor: Option<String>,
    /// Only this action (e.g. `card.reveal`, `auth.failed`).
    #[param(min_length = 1, max_length = 128)]
    pub action: Option<String>,
    /// Only records at or after this time (Unix seconds).
    #[param(minimum = -9_223_372_036_854_775_i64, maximum = 9_223_372_036_854_775_i64)]
    pub since: Option<i64>,
    /// Only records before this time (Unix seconds).
    #[param(minimum = -9_223_372_036_854_775_i64, maximum = 9_223_372_036_854_775_i64)]
    pub until: Option<i64>,
    /// Only records after this sequence number (paging: the last `seq` of a page).
    #[param(minimum = 0)]
    pub starting_after: Option<i64>,
    /// 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Query the audit trail.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("admin_key" = [])), params(AuditParams),
    responses((status = 200, body = List<AuditRecordView>),
        (status = 400, description = "invalid_parameter, unknown_field", body = ErrorResponse),
        (status = 403, description = "permission_denied (not an admin key)", body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> ApiResult<Json<List<AuditRecordView>>> {
    let filter = AuditFilter {
        account: q.account,
        actor: q.actor,
        action: q.action,
        since: q.since,
        until: q.until,
        starting_after: q.starting_after,
    };
    Ok(Json(
        svc::list(&state, filter, q.limit.unwrap_or(100)).await?,
    ))
}
