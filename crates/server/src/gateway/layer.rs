//! The gateway middleware itself (see [`super`]): it resolves the caller through the
//! application state, then runs the gateway's checks with the parts they need.

use super::browser;
use super::client_ip::{self, ClientIp};
use super::idempotency;
use super::ratelimit::{self, Decision, Quota, RateLimitBackend};
use super::signature;
use super::{
    Gateway, IDEMPOTENCY_EXCLUDED, Prefetched, RateLimitConfig, allowed_by, parse_stored_cidrs,
};
use crate::audit::RequestAudit;
use crate::auth::{self, Admin, Caller, Principal};
use crate::error::{ApiError, ApiResult, codes};
use crate::extract::{INBOUND_ROUTE, INBOUND_ROUTE_ROOT, RELAY_ROUTE};
use crate::metrics::Metrics;
use crate::routes::client_sessions::CARDS_ROUTE;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use strongroom_core::{IdKind, KeyKind};
use strongroom_store::{AccountControls, ApiKeyRecord, AuditScope};

/// Whether the route is an inbound route's (`/in/{route_id}/…`).
fn is_inbound(route: &str) -> bool {
    route == INBOUND_ROUTE || route == INBOUND_ROUTE_ROOT
}

/// Route of the token endpoint: limited per client address as well.
const TOKEN_ROUTE: &str = "/v1/auth/token";

/// An admin key's own IP allowlist (admin keys have no account, so no account list).
async fn admin_allowed(gw: &Gateway, admin: &Admin, ip: IpAddr) -> ApiResult<()> {
    let list = gw.key_allowlist(&admin.key_id).await?;
    if allowed_by(&list, ip) {
        Ok(())
    } else {
        Err(codes::IP_NOT_ALLOWED)
    }
}

/// Reads the whole body (bounded by the route's limit), or refuses with 413.
async fn read_body(body: Body, route: &str) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, crate::extract::body_limit(route))
        .await
        .map_err(|_| codes::BODY_TOO_LARGE)
}

/// The quotas a request counts against: `(bucket key, quota)`.
fn buckets(
    rl: &RateLimitConfig,
    caller: &Caller,
    controls: Option<&AccountControls>,
    route: &str,
    parts: &Parts,
    ip: IpAddr,
) -> Vec<(String, Quota)> {
    let method = &parts.method;
    let q = |per_minute: u32| Quota { per_minute };
    // Per-address buckets key an IPv6 client by its /64 (built only when used).
    let net = || ratelimit::client_network(ip);
    let mut out = Vec::new();
    match caller {
        // Cards from browsers: per session, per address and per publishable key (in
        // place of the key's own quota, which all of a merchant's shoppers share).
        Caller::Account(p) if route == CARDS_ROUTE => {
            let session = browser::session_of(parts.uri.path()).unwrap_or("unknown");
            out.push((format!("cs:{session}"), q(rl.browser_session_per_minute)));
            out.push((format!("ip:{}:{route}", net()), q(rl.browser_ip_per_minute)));
            out.push((
                format!("browser:{}", p.key_id),
                q(rl.browser_key_per_minute),
            ));
        }
        Caller::Account(p) => {
            let per_minute = controls
                .and_then(|c| c.rate_limit_per_minute)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(rl.per_minute);
            if route == "/v1/cards/{id}/reveal" {
                out.push((format!("reveal:{}", p.key_id), q(rl.reveal_per_minute)));
            }
            if route == RELAY_ROUTE {
                out.push((format!("relay:{}", p.account_id), q(rl.relay_per_minute)));
            }
            if route == "/v1/otp" && method == Method::POST {
                out.push((format!("otp:{}", p.key_id), q(rl.otp_per_minute)));
            }
            out.push((format!("key:{}", p.key_id), q(per_minute)));
        }
        Caller::Admin(a) => out.push((format!("key:{}", a.key_id), q(rl.per_minute))),
        // A partner's request to an inbound route: the relay's quota per route and per
        // address (the route id in the URL is the credential; the address's budget
        // holds a guesser of ids to the same pace as one route).
        Caller::Anonymous if is_inbound(route) => {
            let id = parts
                .uri
                .path()
                .strip_prefix("/in/")
                .and_then(|r| r.split('/').next())
                .filter(|id| strongroom_core::parse_id(IdKind::InboundRoute, id).is_ok())
                .unwrap_or("unknown");
            out.push((format!("inbound:{id}"), q(rl.relay_per_minute)));
            out.push((format!("ip:{}:/in", net()), q(rl.relay_per_minute)));
        }
        // A refused credential counts as no credential: per address.
        Caller::Anonymous | Caller::Refused { .. } => {
            // `/readyz` is limited too: its answer is cached, but it is no free probe.
            // The scripts are the same bytes for everyone, and cached by browsers.
            if route != "/healthz" && !browser::STATIC_ROUTES.contains(&route) {
                out.push((format!("ip:{}:{route}", net()), q(rl.ip_per_minute)));
            }
        }
    }
    if route == TOKEN_ROUTE && !matches!(caller, Caller::Anonymous | Caller::Refused { .. }) {
        out.push((format!("ip:{}:{route}", net()), q(rl.ip_per_minute)));
    }
    out
}

async fn peek(
    gw: &Gateway,
    caller: &Caller,
    parts: &Parts,
    route: &str,
    ip: IpAddr,
) -> Option<Decision> {
    let controls = match caller {
        Caller::Account(p) => gw.account_controls(&p.account_id).await.ok(),
        _ => None,
    };
    let rl = &gw.settings.rate_limit;
    let (key, quota) = buckets(rl, caller, controls.as_deref(), route, parts, ip)
        .into_iter()
        .next()?;
    let now = gw.now_ms();
    gw.limiter.peek(&key, quota, now).await.ok()
}

// Names built once: inserting a `&str` name that http does not know copies it into a
// fresh allocation on every response.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn set_rate_headers(res: &mut Response, d: &Decision) {
    let h = res.headers_mut();
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    h.insert(RATELIMIT_RESET, HeaderValue::from(d.reset_secs));
    if !d.allowed {
        h.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(d.retry_after_secs),
        );
    }
}

/// See the module docs.
pub async fn gateway(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    let (mut parts, body) = req.into_parts();
    if !browser::reachable(&route) && browser::from_page(&parts.headers) {
        return codes::BROWSER_NOT_ALLOWED.into_response();
    }
    let cors = browser::Cors::of(&route, &parts);
    // Resolved by `request_context`, which also records it in the audit template.
    let ip = match parts.extensions.get::<ClientIp>() {
        Some(c) => c.0,
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
            let ip = client_ip::client_ip(peer, &parts.headers, &state.config().trusted_proxies);
            parts.extensions.insert(ClientIp(ip));
            ip
        }
    };

    // A partner's request to an inbound route carries the partner's own credentials
    // for the merchant, never the vault's: the route id is its credential.
    let caller = if is_inbound(&route) {
        Caller::Anonymous
    } else {
        match authenticate(&mut parts, &state).await {
            Ok(c) => c,
            Err(e) => return unavailable(e),
        }
    };
    parts.extensions.insert(caller.clone());
    let mut decision: Option<Decision> = None;
    let gw = state.gateway();
    // Suspensions: of the account, of this key, of the client's network.
    if let Caller::Account(p) = &caller {
        let refusal = match gw.suspensions(&p.account_id).await {
            Ok(active) => active.refusal(p.mode, &p.key_id, ip, gw.now_ms()),
            Err(e) => Some(e),
        };
        if let Some(e) = refusal {
            let mut res = e.into_response();
            if let Some(cors) = cors {
                cors.answer(&state, &mut res).await;
            }
            return res;
        }
    }
    let checked = controls(
        gw,
        state.metrics(),
        &caller,
        &mut parts,
        body,
        &route,
        ip,
        &mut decision,
    )
    .await;
    let res = match checked {
        Ok((parts, body, idem)) => match idem {
            // Boxed, as the signature check below: both are rare and about 3 KB each,
            // and the gateway's future is moved into a box on every request.
            Some(idem) => {
                let ctx = gw.idempotency();
                Box::pin(idem.run(&ctx, Request::from_parts(parts, body), next)).await
            }
            None => next.run(Request::from_parts(parts, body)).await,
        },
        Err(e) => {
            if decision.is_none() && e.status.is_client_error() {
                // Refused before the limiter (allowlist, signature): show the quota
                // without spending it.
                decision = peek(gw, &caller, &parts, &route, ip).await;
            }
            e.into_response()
        }
    };
    let mut res = res;
    if let Some(d) = &decision {
        set_rate_headers(&mut res, d);
    }
    if let Some(cors) = cors {
        cors.answer(&state, &mut res).await;
    }
    res
}

/// Everything before the handler. Returns the (possibly re-assembled) request, and
/// the idempotency claim when the request carries a key.
#[allow(clippy::too_many_arguments)]
async fn controls(
    gw: &Gateway,
    metrics: &Metrics,
    caller: &Caller,
    parts: &mut Parts,
    body: Body,
    route: &str,
    ip: IpAddr,
    decision: &mut Option<Decision>,
) -> ApiResult<(Parts, Body, Option<idempotency::Idem>)> {
    let mut body = Some(body);
    let mut bytes: Option<Bytes> = None;
    let mut controls: Option<Arc<AccountControls>> = None;

    if let Caller::Account(p) = caller {
        // IP allowlists: the account's and the key's; both must admit the address.
        let pre = parts.extensions.get::<Prefetched>().cloned();
        let c = match &pre {
            Some(pre) => pre.controls.clone(),
            None => gw.account_controls(&p.account_id).await?,
        };
        let key_list = match pre {
            Some(pre) => pre.key_allowlist,
            None => gw.key_allowlist(&p.key_id).await?,
        };
        // A publishable key posting a card from a shopper's browser: the account's
        // list and signature rule are for its own servers, which shoppers are not
        // (the key's own list, if it has one, still holds).
        let browser = route == CARDS_ROUTE && p.kind == KeyKind::Publishable;
        let account_list = parse_stored_cidrs(&c.ip_allowlist);
        if (!browser && !allowed_by(&account_list, ip)) || !allowed_by(&key_list, ip) {
            return Err(codes::IP_NOT_ALLOWED);
        }
        // Signatures: always verified when present; required when the account says so.
        if signature::is_signed(&parts.headers) {
            let b = read_body(body.take().unwrap_or_default(), route).await?;
            let view = signature::RequestView::new(parts, gw.scheme());
            let required = c.require_signed_requests;
            let window = gw.settings.signature_window;
            let verified =
                signature::verify(&gw.store, gw.now_ms(), window, p, &view, &b, required);
            Box::pin(verified).await?;
            bytes = Some(b);
        } else if c.require_signed_requests && !browser {
            return Err(codes::SIGNATURE_MISSING);
        }
        controls = Some(c);
    }
    if let Caller::Admin(a) = caller {
        admin_allowed(gw, a, ip).await?;
    }

    // Rate limits: every bucket must admit the request; the headers show the tightest.
    let now = gw.now_ms();
    let rl = &gw.settings.rate_limit;
    for (key, quota) in buckets(rl, caller, controls.as_deref(), route, parts, ip) {
        let d = gw.limiter.check(&key, quota, now).await?;
        let tighter = decision
            .as_ref()
            .is_none_or(|prev| !d.allowed || d.remaining < prev.remaining);
        if tighter {
            *decision = Some(d);
        }
        if !d.allowed {
            metrics.rate_limited();
            return Err(codes::RATE_LIMITED);
        }
    }

    // Idempotency.
    let idem = match idempotency::key_of(parts)? {
        Some(key) if parts.method == Method::POST => {
            let scope = match caller {
                // Per credential, not per account: a replay must not skip the
                // replaying credential's own checks, and a public `pk_` must not
                // claim the keys of the account's back end. A token also names its
                // scopes, so a narrower token never replays a wider one's answer.
                Caller::Account(p) => match &p.token_id {
                    None => format!("{}:{}:{}", p.account_id, p.mode.as_str(), p.key_id),
                    Some(_) => format!(
                        "{}:{}:{}:{}",
                        p.account_id,
                        p.mode.as_str(),
                        p.key_id,
                        p.scopes.to_storage()
                    ),
                },
                Caller::Admin(a) => a.key_id.clone(),
                // The handler will refuse it; nothing to remember.
                Caller::Anonymous | Caller::Refused { .. } => String::new(),
            };
            if scope.is_empty() {
                None
            } else {
                if IDEMPOTENCY_EXCLUDED.contains(&route) {
                    return Err(codes::IDEMPOTENCY_NOT_SUPPORTED);
                }
                let b = match bytes.take() {
                    Some(b) => b,
                    None => read_body(body.take().unwrap_or_default(), route).await?,
                };
                let idem = idempotency::Idem::new(gw.idem_mac()?, scope, key, parts, route, &b);
                bytes = Some(b);
                Some(idem)
            }
        }
        _ => None,
    };

    let body = match (bytes, body) {
        (Some(b), _) => Body::from(b),
        (None, Some(b)) => b,
        (None, None) => Body::empty(),
    };
    let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
    Ok((parts, body, idem))
}

/// The credential could not be checked (the store, a key-set reload): the request
/// stops here, as it would for a refused one, and the client is told when to retry.
fn unavailable(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(1));
    res
}

/// Resolves the request's credential, once (the gateway calls this; its answer is
/// kept in the request extensions). A lookup that fails for another reason than a bad
/// credential (the store, a key-set reload) is `503 service_unavailable`, never an
/// anonymous request.
pub async fn authenticate(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
    if !parts.headers.contains_key(AUTHORIZATION) {
        return Ok(Caller::Anonymous);
    }
    // The caller carries the request's audit scope to every write made for it.
    let audit = parts
        .extensions
        .get::<RequestAudit>()
        .map(|a| a.scope.clone())
        .ok_or_else(|| ApiError::internal(&"no audit scope: request outside request_context"))?;
    let account = match account_principal(parts, state, audit.clone()).await {
        Ok((p, pre)) => {
            if let Some(pre) = pre {
                parts.extensions.insert(pre);
            }
            auth::arm_actor(parts, &p.key_id, &p.account_id);
            return Ok(Caller::Account(p));
        }
        Err(e) => auth::unless_unavailable(e)?,
    };
    let admin = match admin_principal(parts, state, audit).await {
        Ok(a) => {
            auth::arm_actor(parts, &format!("admin:{}", a.key_id), "");
            return Ok(Caller::Admin(a));
        }
        Err(e) => auth::unless_unavailable(e)?,
    };
    auth::arm_failure(parts, &account);
    Ok(Caller::Refused { account, admin })
}

/// The API key a bearer secret names, if it is usable.
async fn api_key(
    parts: &Parts,
    state: &AppState,
) -> ApiResult<(Arc<ApiKeyRecord>, Option<Prefetched>)> {
    let token = auth::bearer(parts)?;
    let (key, pre) = state
        .accounts()
        .lookup_key(token)
        .await?
        .ok_or(codes::INVALID_API_KEY)?;
    auth::check_not_revoked(&key)?;
    Ok((key, pre))
}

/// An account credential: a bearer token, or an account's API key.
async fn account_principal(
    parts: &Parts,
    state: &AppState,
    audit: Arc<AuditScope>,
) -> ApiResult<(Principal, Option<Prefetched>)> {
    if let Some(jwt) = auth::bearer_jwt(parts)? {
        return Ok((state.tokens().authenticate(jwt, audit).await?, None));
    }
    let (key, pre) = api_key(parts, state).await?;
    Ok((Principal::of_key(&key, audit)?, pre))
}

/// An operator credential. An admin key has no account: nothing was prefetched.
async fn admin_principal(
    parts: &Parts,
    state: &AppState,
    audit: Arc<AuditScope>,
) -> ApiResult<Admin> {
    let (key, _) = api_key(parts, state).await?;
    Admin::of_key(&key, audit)
}
