//! Extractors whose rejections have the same error shape as everything else.

use crate::error::{ApiError, codes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Largest accepted request body, but on the relay.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The relay's route: its bodies may be larger ([`RELAY_BODY_LIMIT`]).
pub const RELAY_ROUTE: &str = "/v1/relay";
/// Largest request body the relay accepts (what it sends on is at most this too).
pub const RELAY_BODY_LIMIT: usize = 256 * 1024;

/// The route partners send to through an inbound route (any method the relay sends);
/// its bodies may be as large as the relay's.
pub const INBOUND_ROUTE: &str = "/in/{route_id}/{*rest}";
/// The same route without a path after the route id.
pub const INBOUND_ROUTE_ROOT: &str = "/in/{route_id}";

/// Whether a route is the relay or an inbound route: larger bodies, the relay's
/// timeout.
pub fn is_relay_route(route: &str) -> bool {
    route == RELAY_ROUTE || route == INBOUND_ROUTE || route == INBOUND_ROUTE_ROOT
}

/// The operators' BIN table upload (`text/csv`).
pub const BIN_TABLE_ROUTE: &str = "/v1/admin/risk/bin_table";
/// The operators' IP database upload (`application/octet-stream`).
pub const IP_DATABASE_ROUTE: &str = "/v1/admin/risk/ip_database";

/// Largest BIN table upload, in bytes (16 MiB).
pub const BIN_TABLE_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Largest IP database upload, in bytes (64 MiB; a country database is under 10 MiB).
pub const IP_DATABASE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The largest body a route accepts.
pub fn body_limit(route: &str) -> usize {
    match route {
        BIN_TABLE_ROUTE => BIN_TABLE_MAX_BYTES,
        IP_DATABASE_ROUTE => IP_DATABASE_MAX_BYTES,
        r if is_relay_route(r) => RELAY_BODY_LIMIT,
        _ => BODY_LIMIT,
    }
}

/// A file upload's body: its `Content-Type` must be `media_type` (any parameters), and
/// it is read up to `limit` bytes and no further (`413` past it, `415` for another type).
pub async fn upload(req: Request, media_type: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
    if declared_over(req.headers(), limit) {
        return Err(codes::BODY_TOO_LARGE);
    }
    let typed = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type));
    if !typed {
        return Err(codes::UNSUPPORTED_MEDIA_TYPE);
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| codes::BODY_TOO_LARGE)
}

/// A JSON body: `application/json`, at most [`BODY_LIMIT`] bytes, unknown fields refused
/// (the body types carry `deny_unknown_fields`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // A declared oversize body is 413 before its type is looked at.
        if !declared_too_large(req.headers()) && !is_json(req.headers()) {
            return Err(codes::UNSUPPORTED_MEDIA_TYPE);
        }
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// An empty body, a JSON `null`, or a JSON object with no fields: the optional body of
/// actions that take no input.
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// Whether the request says its body is JSON (`application/json`, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `Content-Length` announces more than [`BODY_LIMIT`].
fn declared_too_large(headers: &HeaderMap) -> bool {
    declared_over(headers, BODY_LIMIT)
}

/// Whether `Content-Length` announces more than `limit`.
fn declared_over(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// A body that may be absent (then `T::default()`); when present it must be JSON, and a
/// JSON `null` counts as absent. The bytes come from [`ApiBytes`], which holds them to
/// [`BODY_LIMIT`].
pub fn optional_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    if !is_json(headers) {
        return Err(codes::UNSUPPORTED_MEDIA_TYPE);
    }
    if body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    parse_object(body)
}

/// Parses a JSON body that must be an object. serde reads a struct from an array too
/// (its fields by position); the documented body is an object, so an array is refused.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(codes::INVALID_REQUEST);
    }
    parse_json(bytes)
}

/// Deserializes an integer that JSON may write as `8` or `8.0` (JSON Schema counts both
/// as integers); a fraction or a value outside `i64` is refused.
pub fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntegerVisitor)
}

/// [`integer`] for an optional field (absent or `null`: `None`).
pub fn integer_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(OptionalInteger)
}

struct IntegerVisitor;

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // 2^63 is exactly representable; every whole f64 below it in magnitude fits.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
            #[allow(clippy::cast_possible_truncation)]
            Ok(v as i64)
        } else {
            Err(E::custom("not an integer"))
        }
    }
}

struct OptionalInteger;

impl<'de> serde::de::Visitor<'de> for OptionalInteger {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        integer(d).map(Some)
    }
}

/// A raw body, read up to [`BODY_LIMIT`] bytes and no further: a larger declared length
/// is refused before reading, and a body that runs past the limit is refused with 413
/// `body_too_large` as soon as it does, never buffered whole. For handlers that verify
/// or parse the bytes themselves (inbound hooks, optional JSON bodies).
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if declared_too_large(req.headers()) {
            return Err(codes::BODY_TOO_LARGE);
        }
        axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map(ApiBytes)
            .map_err(|_| codes::BODY_TOO_LARGE)
    }
}

/// The relay's raw body: as [`ApiBytes`], up to [`RELAY_BODY_LIMIT`].
pub struct RelayBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RelayBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if declared_over(req.headers(), RELAY_BODY_LIMIT) {
            return Err(codes::BODY_TOO_LARGE);
        }
        axum::body::to_bytes(req.into_body(), RELAY_BODY_LIMIT)
            .await
            .map(RelayBytes)
            .map_err(|_| codes::BODY_TOO_LARGE)
    }
}

/// Parses JSON, classifying the failure without ever echoing the input.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's message names the field, never the value; we only classify it.
        let msg = e.to_string();
        if msg.starts_with("unknown field") {
            codes::UNKNOWN_FIELD
        } else if msg.starts_with("missing field") {
            codes::MISSING_FIELD
        } else {
            codes::INVALID_REQUEST
        }
    })
}

/// Query parameters; unknown parameters refused by `deny_unknown_fields` on `T`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q).map(ApiQuery).map_err(|e| {
            if e.to_string().starts_with("unknown field") {
                codes::UNKNOWN_FIELD
            } else {
                codes::INVALID_PARAMETER
            }
        })
    }
}

/// Query of a paged listing: `limit` (1–100, default 10) and `starting_after` (the id
/// of the last item of the previous page).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// An id from the previous page: return the items listed after it.
    pub starting_after: Option<String>,
}

impl PageQuery {
    /// The page size, checked (`invalid_parameter` outside 1–100).
    pub fn limit(&self) -> Result<i64, ApiError> {
        let limit = self.limit.unwrap_or(10);
        if (1..=100).contains(&limit) {
            Ok(limit)
        } else {
            Err(codes::INVALID_PARAMETER)
        }
    }
}

/// Cuts a page read with `limit + 1` rows to `limit`; whether more follow.
pub fn page<T>(rows: &mut Vec<T>, limit: i64) -> bool {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    more
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_| codes::NOT_FOUND)
    }
}
