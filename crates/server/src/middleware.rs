//! The request-context middleware, outermost on every route: gives each request an id,
//! renders every error (ours, the framework's, timeouts, panics) as the one JSON shape,
//! sets the security headers (and `WWW-Authenticate` on a 401), and writes the access log
//! with the route template only; and reads what is left of a request body nothing read
//! ([`drain_unread`]), so that an early refusal reaches the client.

use crate::audit;
use crate::error::{ApiError, ErrorBody, codes, render};
use crate::gateway::client_ip::{ClientIp, client_ip};
use crate::state::AppState;
use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use strongroom_core::IdKind;
use strongroom_store::AuditRecord;

/// Built once (a `&str` name http does not know is copied into an allocation per insert).
const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

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
    let (route, method) = tag(&mut req, &request_id);
    // The client's address, resolved once here (X-Forwarded-For counts only from a
    // trusted proxy) so that the audit record names the same address the gateway's
    // controls apply to, and not the proxy's.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = peer.map(|p| client_ip(p, req.headers(), &state.config().trusted_proxies));
    req.extensions_mut()
        .insert(ClientIp(ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))));
    // The request's audit template; the auth extractors arm it with the actor.
    let template = AuditRecord {
        time_ms: state.now_ms(),
        request_id: request_id.clone(),
        action: audit::action_for(method.as_str(), &route),
        resource: audit::resource_from_path(&route, req.uri().path()),
        account_id: audit::account_from_path(&route, req.uri().path()),
        client_ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        method: crate::metrics::method_label(method.as_str()).to_owned(),
        route: route.clone(),
        ..AuditRecord::default()
    };
    // The scope is handed on explicitly: the credential the gateway resolves carries
    // it, and every write made for the request names it (`store.audited(&scope)`).
    let scope = audit::request_scope();
    req.extensions_mut().insert(audit::RequestAudit {
        template,
        scope: scope.clone(),
    });
    let (req, unread) = watch_body(req);

    let mut res = next.run(req).await;
    drain_unread(unread);

    let mut error = res
        .extensions_mut()
        .remove::<ErrorBody>()
        .map(|e| e.0)
        .or_else(|| framework_error(&res));
    if !record(&state, &scope, res.status().as_u16(), error.as_ref()).await {
        // Nothing unrecorded leaves: not the body (a revealed number), not the status.
        state.metrics().audit_failure();
        res = Response::new(Body::empty());
        *res.status_mut() = codes::AUDIT_UNAVAILABLE.status;
        error = Some(codes::AUDIT_UNAVAILABLE);
    }
    if let Some(err) = &error {
        *res.body_mut() = Body::from(render(err, &request_id));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut().remove(header::CONTENT_LENGTH);
    }
    if res.status() == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, www_authenticate(error.as_ref()));
    }
    security_headers(&mut res, &request_id);

    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    state
        .metrics()
        .request(method.as_str(), &route, status, elapsed.as_secs_f64());
    match &error {
        Some(e) => {
            tracing::info!(target: "access", request_id, %method, route, status, latency_us, code = e.code)
        }
        None => tracing::info!(target: "access", request_id, %method, route, status, latency_us),
    }
    res
}

/// A request's route template and method, with its request id put in its extensions
/// for the handlers.
pub(crate) fn tag(req: &mut Request, request_id: &str) -> (String, axum::http::Method) {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    req.extensions_mut()
        .insert(RequestId(request_id.to_owned()));
    (route, req.method().clone())
}

/// The headers every response carries: its request id, HSTS, `no-store` (unless the
/// handler set its own caching) and `nosniff`.
pub(crate) fn security_headers(res: &mut Response, request_id: &str) {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID, v);
    }
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains; preload"),
    );
    // Only the hosted field scripts say otherwise (long-lived, integrity-pinned).
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Commits what the request still owes the audit log: its own record if no write
/// carried it (reads, refusals), queued security events, and a failure record when a
/// committed action still ended in an error. False if the log could not be written.
async fn record(
    state: &AppState,
    scope: &strongroom_store::AuditScope,
    status: u16,
    error: Option<&ApiError>,
) -> bool {
    if scope.failed() {
        return false;
    }
    let (outcome, code) = match error {
        Some(e) => (audit::FAILURE, e.code.to_owned()),
        None if status >= 400 => (audit::FAILURE, status.to_string()),
        None => (audit::SUCCESS, status.to_string()),
    };
    let mut pending = scope.take_pending(|r| {
        if r.outcome.is_empty() {
            r.outcome = outcome.to_owned();
            r.code.clone_from(&code);
        }
    });
    if scope.committed()
        && outcome == audit::FAILURE
        && let Some(mut r) = scope.request()
    {
        r.outcome = outcome.to_owned();
        r.code = code;
        pending.push(r);
    }
    let now = state.now_ms();
    // Repeated anonymous auth failures are counted, not written each (audit/failures.rs).
    let mut pending = state.audit_appender().failures().absorb(pending, now);
    if pending.is_empty() {
        return true;
    }
    for r in &mut pending {
        r.time_ms = now;
    }
    match state.audit_appender().append(pending).await {
        Ok(head) => {
            state.metrics().audit_head(head);
            true
        }
        // Logged by the appender; the response is refused.
        Err(()) => false,
    }
}

/// The challenge on a 401 (RFC 9110 §11.6.1 requires one; RFC 6750 §3 gives its form).
/// A rejected bearer token adds `error="invalid_token"` so that OAuth clients know to get
/// a new one; a missing credential (and every other 401: API keys, signatures) gets the
/// bare challenge. Nothing from the request is echoed.
fn www_authenticate(error: Option<&ApiError>) -> HeaderValue {
    let token_error = error.is_some_and(|e| {
        [
            codes::TOKEN_INVALID,
            codes::TOKEN_EXPIRED,
            codes::TOKEN_REVOKED,
        ]
        .iter()
        .any(|t| t.code == e.code)
    });
    if token_error {
        HeaderValue::from_static(r#"Bearer realm="strongroom", error="invalid_token""#)
    } else {
        HeaderValue::from_static(r#"Bearer realm="strongroom""#)
    }
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

/// How much of a request body left unread [`drain_unread`] still reads, and for how long.
const DRAIN_LIMIT: usize = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a request body that nothing read to its end comes back; `None` for a request
/// without a body, which passes untouched.
type Unread = Option<std::sync::Arc<std::sync::Mutex<Option<Body>>>>;

/// Wraps the request's body so that it comes back to [`drain_unread`] if whoever takes
/// it drops it unfinished.
fn watch_body(req: Request) -> (Request, Unread) {
    if req.body().is_end_stream() {
        return (req, None);
    }
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let req = req.map(|inner| {
        Body::new(Returned {
            inner: Some(inner),
            slot: slot.clone(),
        })
    });
    (req, Some(slot))
}

/// Reads and drops what is left of a request body that nothing read (a request refused
/// before its body: 401, 404, 413, 415, 429, ...), up to [`DRAIN_LIMIT`] and
/// [`DRAIN_TIME`], beside the answer. Otherwise the connection is closed with the
/// client's bytes unread, the kernel answers them with a reset, and the client may lose
/// the answer with it (HTTP/1.1), or the stream is reset while the client still sends
/// (HTTP/2).
fn drain_unread(unread: Unread) {
    let left = unread.and_then(|slot| slot.lock().ok().and_then(|mut s| s.take()));
    if let Some(body) = left {
        // Beside the answer, not before it: the connection writes the answer while it
        // still feeds this body, and a client that stalls delays nothing.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DRAIN_TIME, discard(body)).await;
        });
    }
}

/// Reads `body` to its end or to [`DRAIN_LIMIT`] bytes, keeping nothing.
async fn discard(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read = read.saturating_add(chunk.len());
        if read > DRAIN_LIMIT {
            break;
        }
    }
}

/// A request body that puts itself back in `slot` when dropped before its end, so that
/// [`drain_unread`] can finish reading it.
struct Returned {
    inner: Option<Body>,
    slot: std::sync::Arc<std::sync::Mutex<Option<Body>>>,
}

impl hyper::body::Body for Returned {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map(hyper::body::Body::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let Some(b) = self.inner.take().filter(|b| !b.is_end_stream())
            && let Ok(mut s) = self.slot.lock()
        {
            *s = Some(b);
        }
    }
}

/// Abandons a request that runs past its deadline with `408 request_timeout`: the
/// configured `request_timeout`, except on the relay, whose own timeout ends a slow
/// destination first (`504 relay_upstream_timeout`), so its deadline is that timeout
/// plus a margin when longer.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let config = state.config();
    let relay = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| crate::extract::is_relay_route(m.as_str()));
    let limit = if relay {
        config
            .request_timeout
            .max(config.relay.timeout + std::time::Duration::from_secs(5))
    } else {
        config.request_timeout
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(codes::TIMEOUT),
    }
}
