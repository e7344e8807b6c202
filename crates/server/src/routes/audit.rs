//! `GET /v1/admin/audit`: query the audit trail (admin key).

use crate::audit::record_json;
use crate::auth::Admin;
use crate::error::{ApiResult, codes};
use crate::extract::ApiQuery;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_store::{AuditQuery, AuditStore};

/// Query of `GET /v1/admin/audit`. Records come oldest first.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only records about this account (`acct_…`).
    pub account: Option<String>,
    /// Only records by this actor (`key_…`, `admin:key_…`, `system`, `anonymous`).
    pub actor: Option<String>,
    /// Only this action (e.g. `card.reveal`, `auth.failed`).
    pub action: Option<String>,
    /// Only records at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only records before this time (Unix seconds).
    pub until: Option<i64>,
    /// Only records after this sequence number (paging: the last `seq` of a page).
    pub starting_after: Option<i64>,
    /// 1–1000, default 100.
    pub limit: Option<i64>,
}

fn bounded(v: Option<&String>) -> ApiResult<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.len() > 128 => Err(codes::INVALID_PARAMETER),
        other => Ok(other.cloned()),
    }
}

/// Query the audit trail.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("admin_key" = [])), params(AuditParams),
    responses((status = 200, description = "`{object: list, data: [audit_record], has_more}`"),
        (status = 400, description = "invalid_parameter, unknown_field", body = crate::openapi::ErrorResponse),
        (status = 403, description = "permission_denied", body = crate::openapi::ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) || q.starting_after.is_some_and(|s| s < 0) {
        return Err(codes::INVALID_PARAMETER);
    }
    let ms = |s: Option<i64>| -> ApiResult<Option<i64>> {
        s.map(|v| v.checked_mul(1000).ok_or(codes::INVALID_PARAMETER))
            .transpose()
    };
    let query = AuditQuery {
        account_id: bounded(q.account.as_ref())?,
        actor: bounded(q.actor.as_ref())?,
        action: bounded(q.action.as_ref())?,
        since_ms: ms(q.since)?,
        until_ms: ms(q.until)?,
        after_seq: q.starting_after,
        limit: limit + 1,
    };
    let mut rows = state.store().list_audit(&query).await?;
    let has_more = rows.len() > usize::try_from(limit).unwrap_or(0);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(Json(json!({
        "object": "list",
        "data": rows.iter().map(record_json).collect::<Vec<_>>(),
        "has_more": has_more,
    })))
}
