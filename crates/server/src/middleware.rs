//! The request-context middleware, outermost on every route: gives each request an id,
//! renders every error (ours, the framework's, timeouts, panics) as the one JSON shape,
//! sets the security headers, and writes the access log with the route template only.

use crate::error::{ApiError, ErrorBody, codes, render};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use strongroom_core::IdKind;

/// The request id of the current request, for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// See the module docs.
pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = state
        .new_id(IdKind::Request)
        .unwrap_or_else(|_| String::from("req_unavailable"));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(request_id.clone()));

    let mut res = next.run(req).await;

    let error = res
        .extensions_mut()
        .remove::<ErrorBody>()
        .map(|e| e.0)
        .or_else(|| framework_error(&res));
    if let Some(err) = &error {
        *res.body_mut() = Body::from(render(err, &request_id));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains; preload"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    let status = res.status().as_u16();
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match &error {
        Some(e) => {
            tracing::info!(target: "access", request_id, %method, route, status, latency_us, code = e.code)
        }
        None => tracing::info!(target: "access", request_id, %method, route, status, latency_us),
    }
    res
}

/// An error response produced outside our handlers (routing, timeout, panic): give it
/// our shape. Responses that already carry JSON are left alone.
fn framework_error(res: &Response) -> Option<ApiError> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return None;
    }
    Some(match status.as_u16() {
        404 => codes::NOT_FOUND,
        405 => codes::METHOD_NOT_ALLOWED,
        408 => codes::TIMEOUT,
        413 => codes::BODY_TOO_LARGE,
        415 => codes::UNSUPPORTED_MEDIA_TYPE,
        400..=499 => codes::INVALID_REQUEST,
        503 => codes::SERVICE_UNAVAILABLE,
        _ => codes::INTERNAL,
    })
}
