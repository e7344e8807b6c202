//! Webhook endpoints, deliveries and attempts (docs/design/0004-webhooks.md), and inbound
//! processor hooks.
//!
//! Fan-out is transactional: every event written through `insert_events` gets, in the
//! same transaction, one `pending` delivery row per enabled endpoint of its account and
//! mode that wants its type. Workers claim due rows (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; the single writer on SQLite) with a lease, so a crashed worker's rows
//! come back when the lease ends: delivery is at least once, and never for an event that
//! did not commit.

use crate::exec::{Exec, RowGet, args};
use crate::sql::{FromRow, insert_events, many, mode, one};
use crate::{EventRecord, Mode, StoreResult};

/// The event type that carries a live OTP code: never matched by `*`.
pub const OTP_EVENT: &str = "otp.created";

/// A webhook endpoint. The secret is stored only wrapped by the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpointRecord {
    /// `we_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Test or live: receives that mode's events.
    pub mode: Mode,
    /// Where to POST.
    pub url: String,
    /// `hmac-sha256` or `ed25519`.
    pub signing: String,
    /// Free text.
    pub description: Option<String>,
    /// HMAC secret or Ed25519 seed, wrapped by the root key.
    pub secret_wrapped: Vec<u8>,
    /// 1, 2, … (bound into the wrapping context).
    pub secret_version: i64,
    /// The previous secret, after a rotation.
    pub old_wrapped: Option<Vec<u8>>,
    /// Its version.
    pub old_version: Option<i64>,
    /// Until when the previous secret also signs.
    pub old_expires_ms: Option<i64>,
    /// When it was disabled, if it is.
    pub disabled_ms: Option<i64>,
    /// Why (`manual`, `gone`, `failing`).
    pub disabled_reason: Option<String>,
    /// Start of the current run of failures.
    pub failing_since_ms: Option<i64>,
    /// When it was created.
    pub created_ms: i64,
    /// The event types it wants (`*` for all but `otp.created`).
    pub enabled_events: Vec<String>,
    /// `webhook`, or `otp` for the account's OTP delivery endpoint (not listed, not
    /// editable through the endpoints API; receives only `otp.created`).
    pub kind: String,
}

/// One (event, endpoint) delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// `{event_id}:{endpoint_id}`.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The account.
    pub account_id: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts made since it was (re)queued.
    pub attempts: i64,
    /// When it is due.
    pub next_ms: i64,
    /// Lease of the worker that claimed it.
    pub claimed_until: Option<i64>,
    /// When it was queued.
    pub created_ms: i64,
    /// HTTP status of the last attempt.
    pub last_status: Option<i64>,
    /// When it succeeded.
    pub delivered_ms: Option<i64>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: String,
    /// 1, 2, … since the delivery was (re)queued.
    pub attempt: i64,
    /// When it started.
    pub at_ms: i64,
    /// HTTP status, if a response came.
    pub status: Option<i64>,
    /// Milliseconds until the response or the error.
    pub latency_ms: i64,
    /// `timeout`, `connect`, `refused_address`, `http_status`, … (never a message).
    pub error_class: Option<String>,
    /// At most 1 KiB of the response body.
    pub response_body: Option<String>,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx.
    Delivered,
    /// Try again at this time.
    Retry(i64),
    /// Given up.
    Failed,
}

/// An attempt and everything it changes, written in one transaction.
#[derive(Debug, Clone)]
pub struct RecordAttempt {
    /// The attempt.
    pub attempt: AttemptRecord,
    /// The delivery's new state.
    pub outcome: DeliveryOutcome,
    /// The endpoint.
    pub endpoint_id: String,
    /// If set: disable the endpoint with this reason, writing these events (only if it
    /// was enabled).
    pub disable: Option<(String, Vec<EventRecord>)>,
}

/// A verified or refused inbound processor hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// `evt_…`-style id of the record.
    pub id: String,
    /// The configured source name.
    pub source: String,
    /// Whether the signature verified.
    pub verified: bool,
    /// Why it was refused (`unsigned`, `bad_signature`, `stale`).
    pub reason: Option<String>,
    /// When it arrived.
    pub received_ms: i64,
    /// The raw body (verified hooks only).
    pub body: Option<String>,
}

/// Writes of this module, carried by `WriteOp::Webhook`.
#[derive(Debug)]
pub(crate) enum Op {
    InsertEndpoint(WebhookEndpointRecord, Option<i64>),
    UpdateEndpoint(WebhookEndpointRecord, bool),
    DeleteEndpoint {
        account_id: String,
        id: String,
    },
    SetDisabled {
        account_id: String,
        id: String,
        disabled_ms: Option<i64>,
        reason: Option<String>,
        events: Vec<EventRecord>,
    },
    Rotate {
        endpoint: WebhookEndpointRecord,
        expect_version: i64,
    },
    Claim {
        now_ms: i64,
        until_ms: i64,
        limit: i64,
        skip_locked: bool,
    },
    Record(RecordAttempt),
    Requeue {
        account_id: String,
        mode: Mode,
        endpoint_id: Option<String>,
        event_id: Option<String>,
        since_ms: Option<i64>,
        now_ms: i64,
    },
    ReleaseClaims,
    Inbound(InboundRecord, Vec<EventRecord>),
    Prune {
        before_ms: i64,
    },
}

/// What an [`Op`] returns.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Flag(bool),
    Count(u64),
    Deliveries(Vec<DeliveryRecord>),
}

macro_rules! endpoint_cols {
    () => {
        "id, account_id, mode, url, signing, description, secret_wrapped, secret_version, \
         old_wrapped, old_version, old_expires_ms, disabled_ms, disabled_reason, \
         failing_since_ms, created_ms, kind"
    };
}
macro_rules! delivery_cols {
    () => {
        "id, event_id, endpoint_id, account_id, state, attempts, next_ms, claimed_until, \
         created_ms, last_status, delivered_ms"
    };
}
macro_rules! attempt_cols {
    () => {
        "delivery_id, attempt, at_ms, status, latency_ms, error_class, response_body"
    };
}

const INSERT_ENDPOINT: &str = concat!(
    "INSERT INTO webhook_endpoints (",
    endpoint_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
);
const INSERT_ENDPOINT_EVENT: &str =
    "INSERT INTO webhook_endpoint_events (endpoint_id, event_type) VALUES ($1, $2)";
const DELETE_ENDPOINT_EVENTS: &str = "DELETE FROM webhook_endpoint_events WHERE endpoint_id = $1";
const ENDPOINT_EVENTS: &str =
    "SELECT event_type FROM webhook_endpoint_events WHERE endpoint_id = $1 ORDER BY event_type";
const GET_ENDPOINT: &str = concat!(
    "SELECT ",
    endpoint_cols!(),
    " FROM webhook_endpoints WHERE account_id = $1 AND id = $2 AND kind = 'webhook'"
);
const OTP_ENDPOINT: &str = concat!(
    "SELECT ",
    endpoint_cols!(),
    " FROM webhook_endpoints WHERE account_id = $1 AND mode = $2 AND kind = 'otp'"
);
const ENDPOINT_BY_ID: &str = concat!(
    "SELECT ",
    endpoint_cols!(),
    " FROM webhook_endpoints WHERE id = $1"
);
const LIST_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_cols!(),
    " FROM webhook_endpoints WHERE account_id = $1 AND mode = $2 AND kind = 'webhook' \
     AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
);
const COUNT_ENDPOINTS: &str = "SELECT COUNT(*) FROM webhook_endpoints \
     WHERE account_id = $1 AND mode = $2 AND kind = 'webhook'";
const UPDATE_ENDPOINT: &str = "UPDATE webhook_endpoints SET url = $3, description = $4 \
     WHERE account_id = $1 AND id = $2";
const DELETE_ENDPOINT: &str = "DELETE FROM webhook_endpoints WHERE account_id = $1 AND id = $2";
const DISABLE_ENDPOINT: &str = "UPDATE webhook_endpoints SET disabled_ms = $3, disabled_reason = $4 \
     WHERE account_id = $1 AND id = $2 AND disabled_ms IS NULL";
const ENABLE_ENDPOINT: &str = "UPDATE webhook_endpoints SET disabled_ms = NULL, \
     disabled_reason = NULL, failing_since_ms = NULL WHERE account_id = $1 AND id = $2";
const ROTATE_ENDPOINT: &str = "UPDATE webhook_endpoints SET secret_wrapped = $3, \
     secret_version = $4, old_wrapped = $5, old_version = $6, old_expires_ms = $7 \
     WHERE account_id = $1 AND id = $2 AND secret_version = $8";

// The endpoints an event goes to are chosen by the same predicate as at fan-out.
const REQUEUE: &str = concat!(
    "INSERT INTO webhook_deliveries \
     (id, event_id, endpoint_id, account_id, state, attempts, next_ms, created_ms) \
     SELECT ev.id || ':' || e.id, ev.id, e.id, ev.account_id, 'pending', 0, $1, $1 \
     FROM events ev JOIN webhook_endpoints e ON ",
    crate::sql::fan_out_match!("ev.account_id", "ev.mode", "ev.event_type"),
    " WHERE ev.account_id = $2 AND ev.mode = $3 \
     AND ($4 IS NULL OR e.id = $4) AND ($5 IS NULL OR ev.id = $5) \
     AND ($6 IS NULL OR ev.created_ms >= $6) \
     ON CONFLICT (id) DO UPDATE SET state = 'pending', attempts = 0, \
     next_ms = excluded.next_ms, claimed_until = NULL"
);

const CLAIM_PG: &str = concat!(
    "UPDATE webhook_deliveries SET claimed_until = $2 WHERE id IN (SELECT id FROM \
     webhook_deliveries WHERE state = 'pending' AND next_ms <= $1 \
     AND (claimed_until IS NULL OR claimed_until <= $1) ORDER BY next_ms LIMIT $3 \
     FOR UPDATE SKIP LOCKED) RETURNING ",
    delivery_cols!()
);
const CLAIM_SQLITE: &str = concat!(
    "UPDATE webhook_deliveries SET claimed_until = $2 WHERE id IN (SELECT id FROM \
     webhook_deliveries WHERE state = 'pending' AND next_ms <= $1 \
     AND (claimed_until IS NULL OR claimed_until <= $1) ORDER BY next_ms LIMIT $3) RETURNING ",
    delivery_cols!()
);
const RELEASE_CLAIMS: &str = "UPDATE webhook_deliveries SET claimed_until = NULL WHERE state = 'pending' \
     AND claimed_until IS NOT NULL";
const INSERT_ATTEMPT: &str = concat!(
    "INSERT INTO webhook_attempts (",
    attempt_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
);
const UPDATE_DELIVERY: &str = "UPDATE webhook_deliveries SET attempts = $2, state = $3, \
     next_ms = $4, claimed_until = NULL, last_status = $5, delivered_ms = $6 WHERE id = $1";
const ENDPOINT_OK: &str = "UPDATE webhook_endpoints SET failing_since_ms = NULL WHERE id = $1";
const ENDPOINT_FAILING: &str = "UPDATE webhook_endpoints \
     SET failing_since_ms = COALESCE(failing_since_ms, $2) WHERE id = $1";
const DISABLE_BY_ID: &str = "UPDATE webhook_endpoints SET disabled_ms = $2, disabled_reason = $3 \
     WHERE id = $1 AND disabled_ms IS NULL";
const ENDPOINT_ATTEMPTS: &str = "SELECT a.delivery_id, a.attempt, a.at_ms, a.status, \
     a.latency_ms, a.error_class, a.response_body FROM webhook_attempts a \
     JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = $1 \
     ORDER BY a.at_ms DESC, a.delivery_id DESC, a.attempt DESC LIMIT $2";
/// The page after attempt `($2, $3)` (delivery, attempt) in [`ENDPOINT_ATTEMPTS`]'s order;
/// empty once that attempt has been pruned.
const ENDPOINT_ATTEMPTS_AFTER: &str = "SELECT a.delivery_id, a.attempt, a.at_ms, a.status, \
     a.latency_ms, a.error_class, a.response_body FROM webhook_attempts a \
     JOIN webhook_deliveries d ON d.id = a.delivery_id \
     JOIN webhook_attempts c ON c.delivery_id = $2 AND c.attempt = $3 \
     WHERE d.endpoint_id = $1 AND (a.at_ms < c.at_ms OR (a.at_ms = c.at_ms \
     AND (a.delivery_id < c.delivery_id OR (a.delivery_id = c.delivery_id \
     AND a.attempt < c.attempt)))) \
     ORDER BY a.at_ms DESC, a.delivery_id DESC, a.attempt DESC LIMIT $4";
const EVENT_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_cols!(),
    " FROM webhook_deliveries WHERE event_id = $1 AND account_id = $2 ORDER BY id"
);
const INSERT_INBOUND: &str = "INSERT INTO inbound_hooks \
     (id, source, verified, reason, received_ms, body) VALUES ($1, $2, $3, $4, $5, $6)";
const PRUNE_ATTEMPTS: &str = "DELETE FROM webhook_attempts WHERE delivery_id IN \
     (SELECT d.id FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id \
     WHERE ev.created_ms < $1)";
const PRUNE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE event_id IN \
     (SELECT id FROM events WHERE created_ms < $1)";
const PRUNE_EVENTS: &str = "DELETE FROM events WHERE created_ms < $1";
const PRUNE_INBOUND: &str = "DELETE FROM inbound_hooks WHERE received_ms < $1";

impl FromRow for WebhookEndpointRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: mode(&r.text(2)?)?,
            url: r.text(3)?,
            signing: r.text(4)?,
            description: r.opt_text(5)?,
            secret_wrapped: r.blob(6)?,
            secret_version: r.int(7)?,
            old_wrapped: r.opt_blob(8)?,
            old_version: r.opt_int(9)?,
            old_expires_ms: r.opt_int(10)?,
            disabled_ms: r.opt_int(11)?,
            disabled_reason: r.opt_text(12)?,
            failing_since_ms: r.opt_int(13)?,
            created_ms: r.int(14)?,
            enabled_events: Vec::new(),
            kind: r.text(15)?,
        })
    }
}

impl FromRow for DeliveryRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            event_id: r.text(1)?,
            endpoint_id: r.text(2)?,
            account_id: r.text(3)?,
            state: r.text(4)?,
            attempts: r.int(5)?,
            next_ms: r.int(6)?,
            claimed_until: r.opt_int(7)?,
            created_ms: r.int(8)?,
            last_status: r.opt_int(9)?,
            delivered_ms: r.opt_int(10)?,
        })
    }
}

impl FromRow for AttemptRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            delivery_id: r.text(0)?,
            attempt: r.int(1)?,
            at_ms: r.int(2)?,
            status: r.opt_int(3)?,
            latency_ms: r.int(4)?,
            error_class: r.opt_text(5)?,
            response_body: r.opt_text(6)?,
        })
    }
}

async fn with_types<C: Exec>(
    c: &mut C,
    ep: Option<WebhookEndpointRecord>,
) -> StoreResult<Option<WebhookEndpointRecord>> {
    match ep {
        None => Ok(None),
        Some(mut ep) => {
            let rows = c.all(ENDPOINT_EVENTS, args![&ep.id]).await?;
            ep.enabled_events = rows.iter().map(|r| r.text(0)).collect::<StoreResult<_>>()?;
            Ok(Some(ep))
        }
    }
}

async fn insert_types<C: Exec>(c: &mut C, ep: &WebhookEndpointRecord) -> StoreResult<()> {
    for t in &ep.enabled_events {
        c.exec(INSERT_ENDPOINT_EVENT, args![&ep.id, t]).await?;
    }
    Ok(())
}

/// Applies one [`Op`] inside the caller's transaction.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Reply> {
    match op {
        Op::InsertEndpoint(ep, max) => {
            // Inside the writer's transaction (on PostgreSQL every batch first locks the
            // audit head, so batches of all nodes run one at a time): no other insert can
            // come between this count and the insert.
            if let Some(max) = max {
                let a = args![&ep.account_id, ep.mode.as_str()];
                let n = match c.opt(COUNT_ENDPOINTS, a).await? {
                    Some(row) => row.int(0)?,
                    None => 0,
                };
                if n >= *max {
                    return Ok(Reply::Flag(false));
                }
            }
            let a = args![
                &ep.id,
                &ep.account_id,
                ep.mode.as_str(),
                &ep.url,
                &ep.signing,
                ep.description.as_deref(),
                &ep.secret_wrapped,
                ep.secret_version,
                ep.old_wrapped.as_deref(),
                ep.old_version,
                ep.old_expires_ms,
                ep.disabled_ms,
                ep.disabled_reason.as_deref(),
                ep.failing_since_ms,
                ep.created_ms,
                &ep.kind
            ];
            c.exec(INSERT_ENDPOINT, a).await?;
            insert_types(c, ep).await?;
            Ok(Reply::Flag(true))
        }
        Op::UpdateEndpoint(ep, types) => {
            let a = args![&ep.account_id, &ep.id, &ep.url, ep.description.as_deref()];
            let n = c.exec(UPDATE_ENDPOINT, a).await?;
            if n > 0 && *types {
                c.exec(DELETE_ENDPOINT_EVENTS, args![&ep.id]).await?;
                insert_types(c, ep).await?;
            }
            Ok(Reply::Flag(n > 0))
        }
        Op::DeleteEndpoint { account_id, id } => {
            let n = c.exec(DELETE_ENDPOINT, args![account_id, id]).await?;
            Ok(Reply::Flag(n > 0))
        }
        Op::SetDisabled {
            account_id,
            id,
            disabled_ms,
            reason,
            events,
        } => {
            let n = match disabled_ms {
                Some(at) => {
                    let a = args![account_id, id, *at, reason.as_deref()];
                    c.exec(DISABLE_ENDPOINT, a).await?
                }
                None => c.exec(ENABLE_ENDPOINT, args![account_id, id]).await?,
            };
            if n > 0 {
                insert_events(c, events).await?;
            }
            Ok(Reply::Flag(n > 0))
        }
        Op::Rotate {
            endpoint: ep,
            expect_version,
        } => {
            let a = args![
                &ep.account_id,
                &ep.id,
                &ep.secret_wrapped,
                ep.secret_version,
                ep.old_wrapped.as_deref(),
                ep.old_version,
                ep.old_expires_ms,
                *expect_version
            ];
            Ok(Reply::Flag(c.exec(ROTATE_ENDPOINT, a).await? > 0))
        }
        Op::Claim {
            now_ms,
            until_ms,
            limit,
            skip_locked,
        } => {
            let sql = if *skip_locked { CLAIM_PG } else { CLAIM_SQLITE };
            let rows = many(c, sql, args![*now_ms, *until_ms, (*limit).max(0)]).await?;
            Ok(Reply::Deliveries(rows))
        }
        Op::Record(rec) => {
            let at = &rec.attempt;
            let a = args![
                &at.delivery_id,
                at.attempt,
                at.at_ms,
                at.status,
                at.latency_ms,
                at.error_class.as_deref(),
                at.response_body.as_deref()
            ];
            c.exec(INSERT_ATTEMPT, a).await?;
            let (state, next, delivered) = match rec.outcome {
                DeliveryOutcome::Delivered => ("delivered", at.at_ms, Some(at.at_ms)),
                DeliveryOutcome::Retry(next) => ("pending", next, None),
                DeliveryOutcome::Failed => ("failed", at.at_ms, None),
            };
            let a = args![
                &at.delivery_id,
                at.attempt,
                state,
                next,
                at.status,
                delivered
            ];
            c.exec(UPDATE_DELIVERY, a).await?;
            if rec.outcome == DeliveryOutcome::Delivered {
                c.exec(ENDPOINT_OK, args![&rec.endpoint_id]).await?;
            } else {
                c.exec(ENDPOINT_FAILING, args![&rec.endpoint_id, at.at_ms])
                    .await?;
            }
            if let Some((reason, events)) = &rec.disable {
                let a = args![&rec.endpoint_id, at.at_ms, reason];
                if c.exec(DISABLE_BY_ID, a).await? > 0 {
                    insert_events(c, events).await?;
                }
            }
            Ok(Reply::Done)
        }
        Op::Requeue {
            account_id,
            mode,
            endpoint_id,
            event_id,
            since_ms,
            now_ms,
        } => {
            let a = args![
                *now_ms,
                account_id,
                mode.as_str(),
                endpoint_id.as_deref(),
                event_id.as_deref(),
                *since_ms
            ];
            Ok(Reply::Count(c.exec(REQUEUE, a).await?))
        }
        Op::ReleaseClaims => {
            c.exec(RELEASE_CLAIMS, &[]).await?;
            Ok(Reply::Done)
        }
        Op::Inbound(rec, events) => {
            let a = args![
                &rec.id,
                &rec.source,
                i64::from(rec.verified),
                rec.reason.as_deref(),
                rec.received_ms,
                rec.body.as_deref()
            ];
            c.exec(INSERT_INBOUND, a).await?;
            insert_events(c, events).await?;
            Ok(Reply::Done)
        }
        Op::Prune { before_ms } => {
            let mut n = c.exec(PRUNE_ATTEMPTS, args![*before_ms]).await?;
            n += c.exec(PRUNE_DELIVERIES, args![*before_ms]).await?;
            n += c.exec(PRUNE_EVENTS, args![*before_ms]).await?;
            n += c.exec(PRUNE_INBOUND, args![*before_ms]).await?;
            Ok(Reply::Count(n))
        }
    }
}

pub(crate) async fn get_endpoint<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<WebhookEndpointRecord>> {
    let ep = one(c, GET_ENDPOINT, args![account_id, id]).await?;
    with_types(c, ep).await
}

pub(crate) async fn otp_endpoint<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
) -> StoreResult<Option<WebhookEndpointRecord>> {
    let ep = one(c, OTP_ENDPOINT, args![account_id, mode.as_str()]).await?;
    with_types(c, ep).await
}

pub(crate) async fn endpoint_by_id<C: Exec>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<WebhookEndpointRecord>> {
    let ep = one(c, ENDPOINT_BY_ID, args![id]).await?;
    with_types(c, ep).await
}

pub(crate) async fn list_endpoints<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    starting_after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<WebhookEndpointRecord>> {
    let a = args![account_id, mode.as_str(), starting_after, limit.max(0)];
    let eps: Vec<WebhookEndpointRecord> = many(c, LIST_ENDPOINTS, a).await?;
    let mut out = Vec::with_capacity(eps.len());
    for ep in eps {
        if let Some(ep) = with_types(c, Some(ep)).await? {
            out.push(ep);
        }
    }
    Ok(out)
}

pub(crate) async fn endpoint_attempts<C: Exec>(
    c: &mut C,
    endpoint_id: &str,
    after: Option<(&str, i64)>,
    limit: i64,
) -> StoreResult<Vec<AttemptRecord>> {
    let limit = limit.max(0);
    match after {
        None => many(c, ENDPOINT_ATTEMPTS, args![endpoint_id, limit]).await,
        Some((delivery, attempt)) => {
            let a = args![endpoint_id, delivery, attempt, limit];
            many(c, ENDPOINT_ATTEMPTS_AFTER, a).await
        }
    }
}

pub(crate) async fn event_deliveries<C: Exec>(
    c: &mut C,
    event_id: &str,
    account_id: &str,
) -> StoreResult<Vec<DeliveryRecord>> {
    many(c, EVENT_DELIVERIES, args![event_id, account_id]).await
}

/// Webhook persistence.
#[allow(async_fn_in_trait)]
pub trait WebhookStore {
    /// One endpoint of an account.
    async fn get_endpoint(
        &self,
        account_id: &str,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpointRecord>>;
    /// The account's OTP delivery endpoint for a mode, if one was set up.
    async fn otp_endpoint(
        &self,
        account_id: &str,
        mode: Mode,
    ) -> StoreResult<Option<WebhookEndpointRecord>>;
    /// One endpoint by id (workers).
    async fn endpoint_by_id(&self, id: &str) -> StoreResult<Option<WebhookEndpointRecord>>;
    /// The endpoints of an account and mode, oldest first: at most `limit`, after the
    /// endpoint `starting_after` (an id) if given.
    async fn list_endpoints(
        &self,
        account_id: &str,
        mode: Mode,
        starting_after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookEndpointRecord>>;
    /// The latest attempts to an endpoint, newest first; with `after` (a delivery id
    /// and attempt number), the ones listed after that attempt.
    async fn endpoint_attempts(
        &self,
        endpoint_id: &str,
        after: Option<(&str, i64)>,
        limit: i64,
    ) -> StoreResult<Vec<AttemptRecord>>;
    /// The deliveries of an event.
    async fn event_deliveries(
        &self,
        account_id: &str,
        event_id: &str,
    ) -> StoreResult<Vec<DeliveryRecord>>;
}
