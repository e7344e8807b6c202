//! Outbound webhooks: endpoint rules (URL checks, secrets), Standard Webhooks signing,
//! and the delivery worker pool.
//!
//! Every event commits together with one `pending` delivery row per matching endpoint
//! (see `strongroom_store::webhooks`). Workers claim due rows with a lease, POST them,
//! record each attempt and schedule the next with jitter. The `webhook-id` is the event
//! id, so it is stable across retries, restarts and redeliveries.

use crate::service::{ModeName, object_name, secs};
use crate::service::{Result, ServiceError};
use crate::state::AppState;
use bytes::Bytes;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strongroom_core::Mode;
use strongroom_crypto::{random, webhook as sig};
use strongroom_store::webhooks::{
    AttemptRecord, DeliveryOutcome, DeliveryRecord, RecordAttempt, WebhookEndpointRecord,
};
use strongroom_store::{VaultStore, WebhookStore};
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// `hmac-sha256`: `v1` signatures under a `whsec_` secret.
pub const SIGNING_HMAC: &str = "hmac-sha256";
/// `ed25519`: `v1a` signatures; the merchant gets the `whpk_` public key.
pub const SIGNING_ED25519: &str = "ed25519";
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 60 * 60 * 1000;
/// The most of a response body kept with an attempt.
pub const RESPONSE_BODY_MAX: usize = 1024;

pub use crate::config::{DEFAULT_MAX_ENDPOINTS, WebhookConfig};

// ---- URL rules ----

/// Whether deliveries for this mode must go to public HTTPS destinations: always in
/// live mode, and in every mode outside dev/test deployments.
pub fn strict(state: &AppState, mode: Mode) -> bool {
    mode == Mode::Live || !state.config().dev_mode
}

use crate::service::egress::{self, is_loopback_host, is_public};

/// Whether a URL carries credentials (`https://user:pass@…`): refused everywhere, so a
/// secret is never stored, shown or logged with a destination.
fn has_userinfo(url: &reqwest::Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Checks a webhook or OTP delivery URL at registration: HTTPS (plain HTTP only to
/// loopback outside strict mode), no credentials, and in strict mode a host that is not,
/// and does not resolve to, a non-public address. The OTP delivery URL is checked as a
/// live-mode endpoint.
pub async fn check_url(state: &AppState, mode: Mode, raw: &str) -> Result<String> {
    // What the schema states (`^https?://[!-~]+$`, at most 2048): the parser below would
    // otherwise trim spaces, encode others and lowercase the scheme, and so accept URLs
    // the schema refuses.
    let printable = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| (b'!'..=b'~').contains(&b)));
    if raw.len() > 2048 || !printable {
        return Err(ServiceError::UrlNotAllowed);
    }
    let url = reqwest::Url::parse(raw).map_err(|_| ServiceError::UrlNotAllowed)?;
    if has_userinfo(&url) || url.fragment().is_some() {
        return Err(ServiceError::UrlNotAllowed);
    }
    let host = url.host().ok_or(ServiceError::UrlNotAllowed)?;
    let test_loopback = state.config().webhooks.loopback_for_tests && is_loopback_host(&host);
    let strict = strict(state, mode) && !test_loopback;
    match url.scheme() {
        "https" => {}
        "http" if !strict && is_loopback_host(&host) => {}
        _ => return Err(ServiceError::UrlNotAllowed),
    }
    if strict {
        match host {
            url::Host::Ipv4(ip) if !is_public(IpAddr::V4(ip)) => {
                return Err(ServiceError::UrlNotAllowed);
            }
            url::Host::Ipv6(ip) if !is_public(IpAddr::V6(ip)) => {
                return Err(ServiceError::UrlNotAllowed);
            }
            url::Host::Domain(d) => {
                if egress::is_local_name(d) {
                    return Err(ServiceError::UrlNotAllowed);
                }
                let port = url.port_or_known_default().unwrap_or(443);
                // A name that does not resolve now is checked again at delivery time.
                if let Some(addrs) = egress::resolve(d, port).await
                    && !egress::all_allowed(&addrs, false)
                {
                    return Err(ServiceError::UrlNotAllowed);
                }
            }
            _ => {}
        }
    }
    Ok(url.to_string())
}

/// Event types an endpoint may ask for: `*` or types the server emits; never the OTP
/// event, which goes only to the account's OTP delivery endpoint.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>> {
    crate::service::events::check_subscriptions(types)
}

// ---- secrets ----

/// The root-key wrapping context of an endpoint's secret version.
pub fn wrap_context(endpoint_id: &str, version: i64) -> String {
    format!("webhook|{endpoint_id}|{version}")
}

/// A fresh secret wrapped for (endpoint, version), and what the merchant is shown:
/// the `whsec_` secret (HMAC) or the `whpk_` public key (Ed25519).
pub fn new_secret(
    state: &AppState,
    signing: &str,
    endpoint_id: &str,
    version: i64,
) -> Result<(Vec<u8>, Zeroizing<String>)> {
    let secret = sig::new_secret()?;
    let wrapped = state
        .root()
        .wrap_bytes(secret.as_slice(), &wrap_context(endpoint_id, version))?;
    let shown = if signing == SIGNING_ED25519 {
        Zeroizing::new(sig::encode_public_key(&sig::ed25519_public_key(
            secret.as_slice(),
        )?))
    } else {
        sig::encode_hmac_secret(secret.as_slice())
    };
    Ok((wrapped, shown))
}

/// The `whpk_` public key of an Ed25519 endpoint (public, so always shown).
pub fn public_key(state: &AppState, ep: &WebhookEndpointRecord) -> Result<Option<String>> {
    if ep.signing != SIGNING_ED25519 {
        return Ok(None);
    }
    let seed = state
        .root()
        .unwrap_bytes(&ep.secret_wrapped, &wrap_context(&ep.id, ep.secret_version))?;
    Ok(Some(sig::encode_public_key(&sig::ed25519_public_key(
        &seed,
    )?)))
}

/// The `webhook-signature` header: one signature per live secret, space-separated.
pub fn signature_header(
    state: &AppState,
    ep: &WebhookEndpointRecord,
    msg_id: &str,
    ts: i64,
    body: &[u8],
    now_ms: i64,
) -> Result<String> {
    let mut secrets = vec![(ep.secret_wrapped.as_slice(), ep.secret_version)];
    if let (Some(w), Some(v), Some(until)) = (&ep.old_wrapped, ep.old_version, ep.old_expires_ms)
        && until > now_ms
    {
        secrets.push((w.as_slice(), v));
    }
    let mut out = Vec::with_capacity(secrets.len());
    for (wrapped, version) in secrets {
        let secret = state
            .root()
            .unwrap_bytes(wrapped, &wrap_context(&ep.id, version))?;
        out.push(if ep.signing == SIGNING_ED25519 {
            sig::sign_v1a(&secret, msg_id, ts, body)?
        } else {
            sig::sign_v1(&secret, msg_id, ts, body)
        });
    }
    Ok(out.join(" "))
}

object_name!(
    /// `webhook_endpoint`.
    EndpointObject = "webhook_endpoint"
);
object_name!(
    /// `webhook_delivery`.
    DeliveryObject = "webhook_delivery"
);
object_name!(
    /// `webhook_attempt`.
    AttemptObject = "webhook_attempt"
);
object_name!(
    /// `redelivery`.
    RedeliveryObject = "redelivery"
);
object_name!(
    /// `recovery`.
    RecoveryObject = "recovery"
);

/// How an endpoint's deliveries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum Signing {
    /// `v1` signatures under a `whsec_` secret.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// `v1a` signatures; the merchant gets the `whpk_` public key.
    #[serde(rename = "ed25519")]
    Ed25519,
}

/// Whether an endpoint receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    /// Deliveries are queued for it.
    Enabled,
    /// Nothing is queued for it until it is enabled.
    Disabled,
}

/// Why an endpoint was disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DisabledReason {
    /// By a request.
    Manual,
    /// It answered 410 Gone.
    Gone,
    /// It failed continuously for `[webhooks] disable_after`.
    Failing,
}

/// A webhook endpoint (never its secret, except once in `secret`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointView {
    /// `we_…`
    #[schema(pattern = "^we_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: EndpointObject,
    /// Where deliveries go.
    pub url: String,
    /// Free text.
    #[schema(required = true)]
    pub description: Option<String>,
    /// `*` or event types.
    #[schema(value_type = Vec<crate::service::events::EventSelector>)]
    pub enabled_events: Vec<String>,
    /// `hmac-sha256` or `ed25519`.
    #[schema(value_type = Signing)]
    pub signing: String,
    /// Ed25519 endpoints: the `whpk_` public key that verifies deliveries; else `null`.
    #[schema(required = true)]
    pub public_key: Option<String>,
    /// `test` or `live`.
    pub mode: ModeName,
    /// `enabled` or `disabled`.
    pub status: EndpointStatus,
    /// Why it was disabled (`manual`, `gone`, `failing`), or `null`.
    #[schema(required = true, value_type = Option<DisabledReason>)]
    pub disabled_reason: Option<String>,
    /// When it was disabled (Unix seconds), or `null`.
    #[schema(required = true)]
    pub disabled_at: Option<i64>,
    /// Until when (Unix seconds) the previous secret also signs, or `null`.
    #[schema(required = true)]
    pub secret_rotation_ends_at: Option<i64>,
    /// Unix seconds.
    pub created: i64,
    /// HMAC endpoints, in the responses of create and rotate_secret only: the `whsec_`
    /// secret; it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    /// The public view of an endpoint (never a secret).
    pub fn new(state: &AppState, ep: &WebhookEndpointRecord) -> Result<Self> {
        Ok(Self {
            id: ep.id.clone(),
            object: EndpointObject::Value,
            url: ep.url.clone(),
            description: ep.description.clone(),
            enabled_events: ep.enabled_events.clone(),
            signing: ep.signing.clone(),
            public_key: public_key(state, ep)?,
            mode: ep.mode.into(),
            status: if ep.disabled_ms.is_some() {
                EndpointStatus::Disabled
            } else {
                EndpointStatus::Enabled
            },
            disabled_reason: ep.disabled_reason.clone(),
            disabled_at: ep.disabled_ms.map(secs),
            secret_rotation_ends_at: ep.old_expires_ms.filter(|t| *t > state.now_ms()).map(secs),
            created: secs(ep.created_ms),
            secret: None,
        })
    }

    /// With the secret shown once, for HMAC endpoints.
    pub fn with_secret(mut self, shown: &str) -> Self {
        if self.signing == SIGNING_HMAC {
            self.secret = Some(shown.to_owned());
        }
        self
    }
}

/// The answer to a delete.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointDeletedView {
    /// The endpoint's id.
    #[schema(pattern = "^we_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: EndpointObject,
    /// Always `true`.
    pub deleted: bool,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Accepted by the endpoint.
    Delivered,
    /// Given up on.
    Failed,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Always `webhook_delivery`.
    pub object: DeliveryObject,
    /// `evt_…`
    pub event: String,
    /// `we_…`
    pub endpoint: String,
    /// `pending`, `delivered` or `failed`.
    #[schema(value_type = DeliveryState)]
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Pending deliveries: when the next attempt is due (Unix seconds); else `null`.
    #[schema(required = true)]
    pub next_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt, or `null`.
    #[schema(required = true)]
    pub last_status: Option<i64>,
    /// When it was delivered (Unix seconds), or `null`.
    #[schema(required = true)]
    pub delivered_at: Option<i64>,
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            object: DeliveryObject::Value,
            event: d.event_id.clone(),
            endpoint: d.endpoint_id.clone(),
            state: d.state.clone(),
            attempts: d.attempts,
            next_attempt_at: (d.state == "pending").then(|| secs(d.next_ms)),
            last_status: d.last_status,
            delivered_at: d.delivered_ms.map(secs),
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The endpoint answered with a status outside 2xx.
    HttpStatus,
    /// No answer in time.
    Timeout,
    /// No connection.
    Connect,
    /// The endpoint redirected (redirects are not followed).
    Redirect,
    /// Another request failure.
    Request,
    /// The destination resolved to an address deliveries may not go to.
    RefusedAddress,
    /// The endpoint answered 410 Gone.
    Gone,
    /// The endpoint was disabled.
    EndpointDisabled,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// `evt_…:attempt`, the cursor for `starting_after`.
    #[schema(pattern = "^evt_[0-9a-f]{32}:[0-9]+$")]
    pub id: String,
    /// Always `webhook_attempt`.
    pub object: AttemptObject,
    /// The event delivered (`evt_…`).
    #[schema(required = true)]
    pub event: Option<String>,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// Unix seconds.
    pub at: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The HTTP status, or `null` when there was no answer.
    #[schema(required = true)]
    pub status: Option<i64>,
    /// Milliseconds until the answer (or the failure).
    pub latency_ms: i64,
    /// Why it failed, or `null`.
    #[schema(required = true, value_type = Option<ErrorClass>)]
    pub error_class: Option<String>,
    /// At most 1 KiB of the response body.
    #[schema(required = true)]
    pub response_body: Option<String>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        let event = a.delivery_id.split(':').next();
        Self {
            id: format!("{}:{}", event.unwrap_or_default(), a.attempt),
            object: AttemptObject::Value,
            event: event.map(str::to_owned),
            attempt: a.attempt,
            at: secs(a.at_ms),
            at_ms: a.at_ms,
            status: a.status,
            latency_ms: a.latency_ms,
            error_class: a.error_class.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

/// The answer to a redelivery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedeliveryView {
    /// Always `redelivery`.
    pub object: RedeliveryObject,
    /// `evt_…`
    pub event: String,
    /// Deliveries queued.
    pub queued: u64,
}

/// The answer to a recovery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecoveryView {
    /// Always `recovery`.
    pub object: RecoveryObject,
    /// `we_…`
    pub endpoint: String,
    /// Deliveries queued.
    pub queued: u64,
}

// ---- delivery ----

/// The two HTTP clients: strict (public destinations only) and dev (loopback allowed).
#[derive(Clone)]
pub struct Clients {
    strict: reqwest::Client,
    dev: reqwest::Client,
    /// Deliveries go through an explicitly configured proxy.
    proxied: bool,
}

impl Clients {
    /// Builds both clients: no redirects, the configured timeout, and no proxy but
    /// `egress_proxy` (the environment's proxy variables are ignored). Without a proxy the
    /// strict client resolves names itself and connects only to public addresses; with
    /// one, the proxy resolves and connects, and [`post`] checks what it can first.
    pub fn new(timeout: Duration, egress_proxy: Option<&str>) -> Result<Self, reqwest::Error> {
        let base = || -> Result<reqwest::ClientBuilder, reqwest::Error> {
            let b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .user_agent("Strongroom-Webhooks/1")
                .no_proxy();
            Ok(match egress_proxy {
                Some(p) => b.proxy(reqwest::Proxy::all(p)?),
                None => b,
            })
        };
        let strict = match egress_proxy {
            // The resolver would check the proxy's name, not the destination's.
            Some(_) => base()?,
            None => base()?.dns_resolver(Arc::new(egress::CheckedResolver { loopback: false })),
        };
        Ok(Self {
            strict: strict.build()?,
            dev: base()?.build()?,
            proxied: egress_proxy.is_some(),
        })
    }
}

impl Clients {
    /// Sends a bare `HEAD` with the strict client and returns `ok` or the error class
    /// (what an attempt would record); for diagnostics and tests.
    pub async fn probe_strict(&self, url: &str) -> &'static str {
        match self.strict.head(url).send().await {
            Ok(_) => "ok",
            Err(e) => error_class(&e),
        }
    }
}

fn error_class(e: &reqwest::Error) -> &'static str {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<egress::RefusedAddress>() {
            return "refused_address";
        }
        src = s.source();
    }
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_redirect() {
        "redirect"
    } else {
        "request"
    }
}

/// Starts the worker pool on the runtime.
pub fn spawn(state: AppState) {
    state.clone().spawn_worker(async move {
        let cfg = state.config().webhooks.clone();
        let clients = match Clients::new(cfg.timeout, cfg.egress_proxy.as_deref()) {
            Ok(c) => c,
            Err(_) => {
                tracing::error!("cannot build the webhook HTTP client; deliveries stopped");
                return;
            }
        };
        // The delivery workers act for no request: their writes carry no audit record.
        #[allow(clippy::disallowed_methods)]
        let unaudited = state.store().unaudited();
        if state.store().backend_name() == "sqlite" {
            // One process owns an embedded store: leases left by a crash are ours.
            if let Err(e) = unaudited.release_claims().await {
                tracing::warn!(error = %e, "cannot release webhook leases");
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(cfg.workers.max(1)));
        let mut last_prune = i64::MIN;
        loop {
            let now = state.now_ms();
            if now.saturating_sub(last_prune) > 3_600_000 {
                last_prune = now;
                let keep = i64::try_from(cfg.event_retention.as_millis()).unwrap_or(i64::MAX);
                if let Err(e) = unaudited.prune(now.saturating_sub(keep)).await {
                    tracing::warn!(error = %e, "pruning old events failed");
                }
            }
            let free = permits.available_permits();
            if free == 0 {
                // Wait for a worker to finish before claiming more.
                if let Ok(p) = permits.clone().acquire_owned().await {
                    drop(p);
                }
                continue;
            }
            let lease = i64::try_from(cfg.lease.as_millis()).unwrap_or(60_000);
            let claimed = unaudited
                .claim_deliveries(
                    now,
                    now.saturating_add(lease),
                    i64::try_from(free).unwrap_or(1),
                )
                .await;
            match claimed {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let (state, clients) = (state.clone(), clients.clone());
                        tokio::spawn(async move {
                            if let Err(e) = deliver(&state, &clients, &row).await {
                                tracing::warn!(
                                    error = %e,
                                    "webhook delivery could not be recorded; it will be retried"
                                );
                            }
                            drop(permit);
                        });
                    }
                    continue;
                }
                Ok(_) => tokio::time::sleep(cfg.poll_interval).await,
                Err(strongroom_store::StoreError::Unavailable(m)) if m.ends_with("closed") => {
                    // The server shut its store down: the workers end with it.
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed");
                    tokio::time::sleep(cfg.poll_interval.max(Duration::from_secs(2))).await;
                }
            }
        }
    });
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date read against `now_ms`
/// (the injected clock, not the wall clock), a date already past meaning "retry now". Anything
/// else is ignored and the schedule applies. The caller caps the result.
fn retry_after(h: &reqwest::header::HeaderMap, now_ms: i64) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a very long time": the cap applies.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let wait = u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0);
    Some(Duration::from_millis(wait))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `d` scaled by a random factor in [0.8, 1.2).
fn jitter(d: Duration) -> Result<Duration> {
    if d.is_zero() {
        return Ok(d);
    }
    let r = u16::from_be_bytes(random::bytes::<2>()?);
    let factor = 0.8 + 0.4 * (f64::from(r) / 65536.0);
    Ok(d.mul_f64(factor))
}

struct Sent {
    status: Option<u16>,
    retry_after: Option<Duration>,
    error_class: Option<&'static str>,
    body: Option<String>,
}

async fn post(
    state: &AppState,
    clients: &Clients,
    ep: &WebhookEndpointRecord,
    msg_id: &str,
    body: Bytes,
) -> Result<Sent> {
    let now = state.now_ms();
    let ts = secs(now);
    let signature = signature_header(state, ep, msg_id, ts, &body, now)?;
    let refused = |class: &'static str| Sent {
        status: None,
        retry_after: None,
        error_class: Some(class),
        body: None,
    };
    let url = reqwest::Url::parse(&ep.url).map_err(|_| ServiceError::UrlNotAllowed)?;
    // A row stored before credentials were refused is not sent with them.
    if has_userinfo(&url) {
        return Ok(refused("url_not_allowed"));
    }
    // OTP endpoints follow the same rules as every other endpoint of their mode (OTP
    // codes travel in live mode only).
    let test_loopback = state.config().webhooks.loopback_for_tests
        && url.host().is_some_and(|h| is_loopback_host(&h));
    let strict = strict(state, ep.mode) && !test_loopback;
    if strict {
        // IP literals bypass the resolver: check them here.
        let ok = match url.host() {
            Some(url::Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => {
                url.scheme() == "https" && (!clients.proxied || public_now(d, &url).await)
            }
            None => false,
        };
        if !ok {
            return Ok(refused("refused_address"));
        }
    }
    let client = if strict {
        &clients.strict
    } else {
        &clients.dev
    };
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match res {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let retry_after = retry_after(r.headers(), state.now_ms());
            let mut kept = Vec::new();
            while kept.len() < RESPONSE_BODY_MAX {
                match r.chunk().await {
                    Ok(Some(c)) => kept.extend_from_slice(&c),
                    _ => break,
                }
            }
            kept.truncate(RESPONSE_BODY_MAX);
            Ok(Sent {
                status: Some(status),
                retry_after,
                error_class: (!(200..300).contains(&status)).then_some("http_status"),
                body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
            })
        }
        Err(e) => Ok(Sent {
            status: None,
            retry_after: None,
            error_class: Some(error_class(&e)),
            body: None,
        }),
    }
}

/// Through a proxy the proxy resolves the name; refuse it here if it resolves to a
/// non-public address now (a name that does not resolve here is left to the proxy).
async fn public_now(host: &str, url: &reqwest::Url) -> bool {
    let port = url.port_or_known_default().unwrap_or(443);
    egress::resolve(host, port)
        .await
        .is_none_or(|addrs| egress::all_allowed(&addrs, false))
}

/// One attempt of one claimed delivery, and its record.
async fn deliver(state: &AppState, clients: &Clients, d: &DeliveryRecord) -> Result<()> {
    let cfg = &state.config().webhooks;
    let ep = state.store().endpoint_by_id(&d.endpoint_id).await?;
    let event = state.store().get_event(&d.account_id, &d.event_id).await?;
    let attempt_no = d.attempts.saturating_add(1);
    let started = state.now_ms();
    let (Some(ep), Some(event)) = (ep, event) else {
        // The endpoint or the event is gone: nothing left to deliver.
        return record(
            state,
            d,
            attempt_no,
            started,
            None,
            Some("gone"),
            None,
            DeliveryOutcome::Failed,
            None,
        )
        .await;
    };
    if ep.disabled_ms.is_some() {
        return record(
            state,
            d,
            attempt_no,
            started,
            None,
            Some("endpoint_disabled"),
            None,
            DeliveryOutcome::Failed,
            None,
        )
        .await;
    }
    // An OTP body holds the clear code: it stays in the zeroizing buffer, which the
    // request body owns (no copy of ours), and is cleared when the client drops it.
    let body = if event.event_type == strongroom_store::webhooks::OTP_EVENT {
        crate::secret_body::into_bytes(crate::service::otp_code::delivery_body(
            state.root(),
            &event.data,
        )?)
    } else {
        Bytes::from(event.data.clone())
    };
    let t0 = Instant::now();
    let sent = post(state, clients, &ep, &event.id, body).await?;
    let latency = i64::try_from(t0.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = state.now_ms();
    let ok = sent.status.is_some_and(|s| (200..300).contains(&s));
    let gone = sent.status == Some(410);
    let outcome = if ok {
        DeliveryOutcome::Delivered
    } else if gone {
        DeliveryOutcome::Failed
    } else {
        let n = usize::try_from(attempt_no).unwrap_or(usize::MAX);
        match cfg.retry_schedule.get(n) {
            Some(delay) => {
                let delay = match sent.retry_after {
                    Some(ra) => ra.min(cfg.retry_after_cap),
                    None => jitter(*delay)?,
                };
                DeliveryOutcome::Retry(now.saturating_add(ms(delay)))
            }
            None => DeliveryOutcome::Failed,
        }
    };
    let failing_for = now.saturating_sub(ep.failing_since_ms.unwrap_or(now));
    let disable = if gone {
        Some("gone")
    } else if !ok && failing_for >= ms(cfg.disable_after) {
        Some("failing")
    } else {
        None
    };
    let disable = match disable {
        Some(reason) => {
            let mut view = EndpointView::new(state, &ep)?;
            view.status = EndpointStatus::Disabled;
            view.disabled_reason = Some(reason.to_owned());
            view.disabled_at = Some(secs(now));
            let ev = state.event_of(
                &ep.account_id,
                ep.mode,
                crate::service::events::EventType::WebhookEndpointDisabled,
                &view,
            )?;
            tracing::warn!(endpoint = %ep.id, reason, "webhook endpoint disabled");
            Some((reason.to_owned(), vec![ev]))
        }
        None => None,
    };
    tracing::info!(
        event = %d.event_id,
        endpoint = %d.endpoint_id,
        attempt = attempt_no,
        status = sent.status,
        latency_ms = latency,
        "webhook attempt"
    );
    record(
        state,
        d,
        attempt_no,
        started,
        sent.status.map(i64::from),
        sent.error_class,
        sent.body,
        outcome,
        disable,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn record(
    state: &AppState,
    d: &DeliveryRecord,
    attempt: i64,
    at_ms: i64,
    status: Option<i64>,
    error_class: Option<&str>,
    body: Option<String>,
    outcome: DeliveryOutcome,
    disable: Option<(String, Vec<strongroom_store::EventRecord>)>,
) -> Result<()> {
    let rec = RecordAttempt {
        attempt: AttemptRecord {
            delivery_id: d.id.clone(),
            attempt,
            at_ms,
            status,
            latency_ms: state.now_ms().saturating_sub(at_ms).max(0),
            error_class: error_class.map(str::to_owned),
            response_body: body,
        },
        outcome,
        endpoint_id: d.endpoint_id.clone(),
        disable,
    };
    // A delivery worker's write, outside any request: it carries no audit record.
    #[allow(clippy::disallowed_methods)]
    state.store().unaudited().record_attempt(&rec).await?;
    Ok(())
}

#[cfg(test)]
mod proxy_tests {
    use super::Clients;
    use std::time::Duration;

    /// Set in the child process of [`the_environment_proxy_is_ignored`].
    const CHILD: &str = "STRONGROOM_TEST_PROXY_CHILD";

    /// With `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` pointing at a listener, neither client
    /// connects to it: the address checks would otherwise see only the proxy. The
    /// variables are read when a client is built, and this process's environment is not
    /// ours to change, so the clients are built in a child process (this test again).
    #[test]
    fn the_environment_proxy_is_ignored() {
        if std::env::var_os(CHILD).is_some() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = Clients::new(Duration::from_secs(2), None).unwrap();
                // Names only a proxy could reach: without one, they fail at once.
                let _ = c
                    .strict
                    .post("https://strongroom-proxy.invalid/")
                    .send()
                    .await;
                let _ = c.dev.post("http://strongroom-proxy.invalid/").send().await;
            });
            return;
        }
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let url = format!("http://{}", proxy.local_addr().unwrap());
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "service::webhooks::proxy_tests::the_environment_proxy_is_ignored",
        ])
        .env(CHILD, "1")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
        for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
            cmd.env(var, &url).env(var.to_ascii_lowercase(), &url);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child ran nothing: {out:?}"
        );
        assert!(
            proxy.accept().is_err(),
            "a webhook client connected to the environment's proxy"
        );
    }

    /// An explicitly configured egress proxy is used.
    #[tokio::test]
    async fn a_configured_egress_proxy_is_used() {
        use tokio::io::AsyncReadExt;
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", proxy.local_addr().unwrap());
        let c = Clients::new(Duration::from_secs(2), Some(&url)).unwrap();
        let send = tokio::spawn(async move {
            let _ = c
                .dev
                .post("http://strongroom-proxy.invalid/hook")
                .send()
                .await;
        });
        let (mut sock, _) = tokio::time::timeout(Duration::from_secs(5), proxy.accept())
            .await
            .expect("no connection to the configured proxy")
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = sock.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            head.starts_with("POST http://strongroom-proxy.invalid/hook"),
            "{head}"
        );
        drop(sock);
        send.await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::retry_after;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use std::time::Duration;

    /// 2015-10-21T07:28:00Z, the RFC 9110 example date, in ms since the epoch.
    const EXAMPLE_MS: i64 = 1_445_412_480_000;

    fn parse(v: &str, now_ms: i64) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        retry_after(&h, now_ms)
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse("120", EXAMPLE_MS), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", EXAMPLE_MS), Some(Duration::ZERO));
        // Overflowing digits mean "very long"; the delivery loop caps it.
        assert_eq!(
            parse("99999999999999999999999", EXAMPLE_MS),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn http_date() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            parse(date, EXAMPLE_MS - 90_000),
            Some(Duration::from_secs(90))
        );
        // Past (or present) dates mean retry now.
        assert_eq!(parse(date, EXAMPLE_MS), Some(Duration::ZERO));
        assert_eq!(parse(date, EXAMPLE_MS + 5_000), Some(Duration::ZERO));
        // The obsolete forms RFC 9110 says recipients must accept.
        assert_eq!(
            parse("Wednesday, 21-Oct-15 07:28:00 GMT", EXAMPLE_MS - 1_000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse("Wed Oct 21 07:28:00 2015", EXAMPLE_MS - 1_000),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for v in [
            "",
            "soon",
            "-5",
            "+5",
            "1.5",
            "5s",
            "0x10",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "2015-10-21T07:28:00Z",
        ] {
            assert_eq!(parse(v, EXAMPLE_MS), None, "{v:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), EXAMPLE_MS), None);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff12").unwrap());
        assert_eq!(retry_after(&h, EXAMPLE_MS), None);
    }
}
