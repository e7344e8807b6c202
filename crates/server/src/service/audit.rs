//! Reading the audit trail: the record view that the listing and the CLI's export
//! show, and the listing itself.

use crate::service::List;
use crate::service::{Result, ServiceError};
use crate::state::AppState;
use serde::Serialize;
use strongroom_store::{AuditQuery, AuditRecord, AuditStore};
use utoipa::ToSchema;

/// One record of the audit trail. Empty fields of the stored record are null here.
#[derive(Serialize, ToSchema)]
pub struct AuditRecordView {
    /// Always `audit_record`.
    pub object: &'static str,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// RFC 3339 time.
    #[schema(format = DateTime)]
    pub time: Option<String>,
    /// `req_…`; null for a system event.
    pub request_id: Option<String>,
    /// `acct_…` the request acted on, if any.
    pub account: Option<String>,
    /// `key_…`, `admin:key_…`, `system` or `anonymous`.
    pub actor: String,
    /// What was done, e.g. `card.reveal`, `auth.failed`.
    pub action: String,
    /// `type:id` of the object, e.g. `card:card_…`.
    pub resource: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// The error code of a failure, or the HTTP status of a success.
    pub code: Option<String>,
    /// The client's IP address, if known.
    pub client_ip: Option<String>,
    /// HTTP method, if a request.
    pub method: Option<String>,
    /// Route template (`/v1/cards/{id}`).
    pub route: Option<String>,
    /// The chain hash after this record, hex.
    pub hash: String,
}

impl From<&AuditRecord> for AuditRecordView {
    fn from(r: &AuditRecord) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let time =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.time_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
        Self {
            object: "audit_record",
            seq: r.seq,
            time,
            request_id: opt(&r.request_id),
            account: opt(&r.account_id),
            actor: r.actor.clone(),
            action: r.action.clone(),
            resource: opt(&r.resource),
            outcome: r.outcome.clone(),
            code: opt(&r.code),
            client_ip: opt(&r.client_ip),
            method: opt(&r.method),
            route: opt(&r.route),
            hash: hex::encode(&r.hash),
        }
    }
}

/// The longest filter value accepted.
pub const MAX_FILTER_LEN: usize = 128;

/// Filters of a listing (times in Unix seconds).
#[derive(Default)]
pub struct AuditFilter {
    /// Only records about this account.
    pub account: Option<String>,
    /// Only records by this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// At or after (Unix seconds).
    pub since: Option<i64>,
    /// Before (Unix seconds).
    pub until: Option<i64>,
    /// After this sequence number.
    pub starting_after: Option<i64>,
}

fn bounded(v: Option<String>) -> Result<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > MAX_FILTER_LEN => {
            Err(ServiceError::InvalidParameter)
        }
        other => Ok(other),
    }
}

/// A page of the audit trail, oldest first (`invalid_parameter` for a limit outside
/// 1–1000, a negative `starting_after`, an empty or overlong filter).
pub async fn list(state: &AppState, f: AuditFilter, limit: i64) -> Result<List<AuditRecordView>> {
    if !(1..=1000).contains(&limit) || f.starting_after.is_some_and(|s| s < 0) {
        return Err(ServiceError::InvalidParameter);
    }
    let ms = |s: Option<i64>| -> Result<Option<i64>> {
        s.map(|v| v.checked_mul(1000).ok_or(ServiceError::InvalidParameter))
            .transpose()
    };
    let query = AuditQuery {
        account_id: bounded(f.account)?,
        actor: bounded(f.actor)?,
        action: bounded(f.action)?,
        since_ms: ms(f.since)?,
        until_ms: ms(f.until)?,
        after_seq: f.starting_after,
        limit: limit.saturating_add(1),
    };
    let mut rows = state.store().list_audit(&query).await?;
    let has_more = crate::extract::page(&mut rows, limit);
    Ok(List::page(
        rows.iter().map(AuditRecordView::from).collect(),
        has_more,
    ))
}
