//! `/v1/admin/risk/…`: operators load the risk engine's country data at run time
//! (docs/risk.md, "Country data").

use crate::auth::Admin;
use crate::error::ApiResult;
use crate::extract::{BIN_TABLE_MAX_BYTES, IP_DATABASE_MAX_BYTES, upload};
use crate::openapi::ErrorResponse;
use crate::service::risk_data::{self as svc, BinTableView, IpDatabaseView};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Request, State};

/// The bytes of a MaxMind DB file, as the IP database upload takes them (for the
/// document: the handler reads the raw body).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct MmdbFile(pub Vec<u8>);

/// Replace the BIN table on every node: `text/csv`, one `bin_prefix,country` row a line
/// (a prefix of 1 to 11 digits, an ISO 3166-1 alpha-2 country; the longest prefix wins),
/// an optional header, `#` comments; at most 16 MiB and 500 000 rows. It is checked
/// whole first: a bad line is `400 bin_table_invalid` naming the line, and the table in
/// force stays. An upload wins over the configuration's file; other nodes take it within
/// 2 seconds. Audit: `risk_bin_table.update`, resource `risk_bin_table:v<n>`.
#[utoipa::path(put, path = "/v1/admin/risk/bin_table", tag = "admin", security(("admin_key" = [])),
    request_body(content = String, content_type = "text/csv", description = "bin_prefix,country rows"),
    responses((status = 200, description = "The table now in force", body = BinTableView),
        (status = 400, description = "bin_table_invalid", body = ErrorResponse),
        (status = 409, description = "conflict (another upload came first; retry)", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large (over 16 MiB)", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type (not text/csv)", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn put_bin_table(
    State(state): State<AppState>,
    admin: Admin,
    req: Request,
) -> ApiResult<Json<BinTableView>> {
    let csv = upload(req, "text/csv", BIN_TABLE_MAX_BYTES).await?;
    Ok(Json(svc::put_bin_table(&state, &admin, csv).await?))
}

/// The BIN table in force on the node that answers: where it came from (an upload, the
/// configuration's file, or none), how many prefixes it holds, and the upload's version,
/// digest and author.
#[utoipa::path(get, path = "/v1/admin/risk/bin_table", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The table in force", body = BinTableView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn bin_table(State(state): State<AppState>, _admin: Admin) -> Json<BinTableView> {
    Json(svc::bin_table(&state))
}

/// Replace the IP country database on every node: the bytes of a MaxMind DB file
/// (GeoLite2-Country, DB-IP country lite, or a city database) as
/// `application/octet-stream`, at most 64 MiB. It is verified whole and must carry
/// country codes: otherwise `400 ip_database_invalid`, and the database in force stays.
/// An upload wins over the configuration's file; other nodes take it within 2 seconds.
/// Audit: `risk_ip_database.update`, resource `risk_ip_database:v<n>`.
#[utoipa::path(put, path = "/v1/admin/risk/ip_database", tag = "admin", security(("admin_key" = [])),
    request_body(content = MmdbFile, content_type = "application/octet-stream", description = "a MaxMind DB file"),
    responses((status = 200, description = "The database now in force", body = IpDatabaseView),
        (status = 400, description = "ip_database_invalid", body = ErrorResponse),
        (status = 409, description = "conflict (another upload came first; retry)", body = ErrorResponse),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 413, description = "body_too_large (over 64 MiB)", body = ErrorResponse),
        (status = 415, description = "unsupported_media_type (not application/octet-stream)", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn put_ip_database(
    State(state): State<AppState>,
    admin: Admin,
    req: Request,
) -> ApiResult<Json<IpDatabaseView>> {
    let mmdb = upload(req, "application/octet-stream", IP_DATABASE_MAX_BYTES).await?;
    Ok(Json(svc::put_ip_database(&state, &admin, mmdb).await?))
}

/// The IP database in force on the node that answers: where it came from, its type and
/// build date (how stale it is), and the upload's version, digest and author.
#[utoipa::path(get, path = "/v1/admin/risk/ip_database", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "The database in force", body = IpDatabaseView),
        (status = 403, description = "ip_not_allowed", body = ErrorResponse),
        (status = 503, description = "service_unavailable, audit_unavailable", body = ErrorResponse)))]
pub async fn ip_database(State(state): State<AppState>, _admin: Admin) -> Json<IpDatabaseView> {
    Json(svc::ip_database(&state))
}
