//! The audit trail, server side: the per-request scope, security events, system
//! records (start, stop, provisioning), signed checkpoints, and verification.
//!
//! How a request is recorded (fail closed):
//! 1. `request_context` makes the request's [`AuditScope`] and keeps it in the request
//!    extensions ([`RequestAudit`]) with a template record: the request id, method,
//!    route template and client IP.
//! 2. The gateway resolves the credential and arms the record with the actor and
//!    account ([`arm`]); the `Principal` or `Admin` it builds carries the scope
//!    (`who.audit`). A failed authentication arms a `failure` record with its code.
//! 3. A write made for the request names the scope where it is made:
//!    `state.store().audited(&who.audit).insert_card(…)`. It carries the record (and
//!    queued security events) in its own transaction (`strongroom_store::audit`): the
//!    change and its record commit together or not at all. The store's writes exist
//!    only on that handle or on `store.unaudited()`, which names a write that carries
//!    nothing (workers, keys made at start), so no write picks a scope up unseen.
//! 4. After the handler, what is still pending (reads, refusals, events) is appended
//!    before the response leaves. If any audit append failed, the response is replaced by
//!    `503 audit_unavailable`: a reveal's number never leaves unrecorded.

pub mod anchor;
pub mod failures;

use crate::error::{ApiError, ApiResult, codes};
use crate::extract::{INBOUND_ROUTE, INBOUND_ROUTE_ROOT};
use crate::metrics::Metrics;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strongroom_core::{Clock, IdKind};
use strongroom_crypto::RootKey;
use strongroom_crypto::audit::{
    AuditSigner, CheckpointBody, CheckpointLink as Link, GENESIS, chain_hash, verify_body,
};
use strongroom_store::{
    AuditCheckpoint, AuditRecord, AuditScope, AuditStore, CheckpointLink, HashFn, Store,
};

/// The chain's hash function (SHA-256, from the crypto crate).
pub const HASH: HashFn = chain_hash;

/// Outcome of a successful action.
pub const SUCCESS: &str = "success";
pub use failures::FAILURE;

/// The request's template record (no actor yet) and its audit scope, kept in the
/// request extensions by `request_context`. The gateway hands the scope to the
/// credential it resolves ([`crate::auth::Principal::audit`],
/// [`crate::auth::Admin::audit`]).
#[derive(Debug, Clone)]
pub struct RequestAudit {
    /// The record auth arms ([`arm`]).
    pub template: AuditRecord,
    /// The scope the request's writes carry (`store.audited(&scope)`).
    pub scope: Arc<AuditScope>,
}

/// The request's audit scope, for a handler without a credential (a `Principal` or
/// `Admin` carries it already): its writes go through `store.audited(&scope)`.
#[derive(Debug, Clone)]
pub struct RequestScope(pub Arc<AuditScope>);

impl<S: Send + Sync> FromRequestParts<S> for RequestScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<RequestAudit>()
            .map(|a| Self(a.scope.clone()))
            .ok_or_else(|| ApiError::internal(&"request outside request_context"))
    }
}

/// A new request scope; the record is armed by auth ([`arm`]).
pub fn request_scope() -> Arc<AuditScope> {
    AuditScope::new(HASH, None)
}

/// Arms the request's record for `actor` on `account` (called by the auth extractors).
pub fn arm(request: Option<&RequestAudit>, actor: &str, account: &str, failure: Option<&str>) {
    let Some(request) = request else {
        return;
    };
    let mut rec = request.template.clone();
    rec.actor = actor.to_owned();
    if !account.is_empty() {
        rec.account_id = account.to_owned();
    }
    if let Some(code) = failure {
        rec.action = "auth.failed".into();
        rec.outcome = FAILURE.into();
        rec.code = code.to_owned();
    }
    request.scope.set_request(rec);
}

/// Names the object the request of `scope` acts on (`card`, `card_…`). Only
/// well-formed ids are recorded.
pub fn set_resource(scope: &AuditScope, kind: &str, id: &str) {
    if !KINDS
        .iter()
        .any(|(k, _)| strongroom_core::parse_id(*k, id).is_ok())
    {
        return;
    }
    let r = format!("{kind}:{id}");
    scope.update(|rec| rec.resource = r);
}

/// Names a numbered version (a rule set's) as the request's object (`kind:vN`).
pub fn set_version(scope: &AuditScope, kind: &str, version: i64) {
    let r = format!("{kind}:v{version}");
    scope.update(|rec| rec.resource = r);
}

/// Names a relay's destination as the request's object (`relay:host:port`); the host
/// is an operator-approved destination's, never input that was not checked.
pub fn set_relay_destination(scope: &AuditScope, host: &str, port: i64) {
    let r = format!("relay:{host}:{port}");
    scope.update(|rec| rec.resource = r);
}

/// Queues a security event in the request's `scope`; it commits with the request's
/// next write through `store.audited(scope)` or with its final record.
pub fn event(scope: &AuditScope, action: &str, resource: &str, outcome: &str, code: &str) {
    let Some(mut rec) = scope.request() else {
        return;
    };
    rec.action = action.to_owned();
    rec.resource = resource.to_owned();
    rec.outcome = outcome.to_owned();
    rec.code = code.to_owned();
    scope.event(rec);
}

/// The stable code a refused or failed service call is recorded with (the code its
/// response carries).
pub fn code_of(e: &crate::service::ServiceError) -> &'static str {
    crate::error::code_of(e)
}

/// The action a route stands for.
pub fn action_for(method: &str, route: &str) -> String {
    let named = match (method, route) {
        ("POST", "/v1/cards") => "card.create",
        ("GET", "/v1/cards") => "card.list",
        ("GET", "/v1/cards/{id}") => "card.retrieve",
        ("DELETE", "/v1/cards/{id}") => "card.delete",
        ("POST", "/v1/cards/{id}/reveal") => "card.reveal",
        ("POST", "/v1/otp") => "otp.create",
        ("POST", "/v1/card_tokens/redeem") => "card_token.redeem",
        ("POST", "/v1/admin/accounts") => "account.create",
        ("GET", "/v1/admin/accounts/{id}") => "account.retrieve",
        ("PATCH", "/v1/admin/accounts/{id}") => "account.update",
        ("POST", "/v1/admin/accounts/{id}/api_keys") => "api_key.create",
        ("GET", "/v1/admin/accounts/{id}/api_keys") => "api_key.list",
        ("DELETE", "/v1/admin/accounts/{id}/api_keys/{key_id}") => "api_key.revoke",
        ("GET", "/v1/admin/accounts/{id}/keys") => "data_key.list",
        ("GET", "/v1/admin/key_inventory") => "key_inventory.retrieve",
        ("POST", "/v1/admin/accounts/{id}/keys/rotate") => "data_key.rotate",
        ("POST", "/v1/admin/accounts/{id}/keys/retire") => "data_key.retire",
        ("GET", "/v1/admin/accounts/{id}/relay_destinations") => "relay_destinations.retrieve",
        ("PUT", "/v1/admin/accounts/{id}/relay_destinations") => "relay_destinations.update",
        ("GET", "/v1/admin/audit") => "audit.query",
        ("GET", "/v1/sys/seal_status") => "vault.seal_status",
        ("POST", "/v1/sys/unseal") => "vault.unseal",
        ("POST", "/v1/sys/seal") => "vault.seal",
        ("POST", "/v1/auth/token") => "token.issue",
        ("GET", "/v1/admin/jwt_keys") => "jwt_key.list",
        ("POST", "/v1/admin/jwt_keys/rotate") => "jwt_key.rotate",
        ("POST", "/v1/admin/accounts/{id}/revoke_all") => "account.revoke_all",
        ("POST", "/v1/signing_keys") => "signing_key.create",
        ("GET", "/v1/signing_keys") => "signing_key.list",
        ("DELETE", "/v1/signing_keys/{id}") => "signing_key.revoke",
        ("GET", "/v1/account") => "account_settings.retrieve",
        ("PATCH", "/v1/account") => "account_settings.update",
        ("GET", "/v1/ip_allowlist") => "ip_allowlist.retrieve",
        ("PUT", "/v1/ip_allowlist") => "ip_allowlist.update",
        ("GET", "/v1/pin/encryption_key") => "pin_transport_key.retrieve",
        ("PUT", "/v1/cards/{id}/pin") => "pin.set",
        ("POST", "/v1/cards/{id}/pin/verify") => "pin.verify",
        ("POST", "/v1/cards/{id}/pin/change") => "pin.change",
        ("POST", "/v1/admin/cards/{id}/pin/unlock") => "pin.unlock",
        ("POST", "/v1/admin/pin/encryption_key/rotate") => "pin_transport_key.rotate",
        ("GET", "/v1/admin/accounts/{id}/pin_settings") => "pin_settings.retrieve",
        ("POST", "/v1/admin/accounts/{id}/pin_settings") => "pin_settings.update",
        ("GET", "/v1/events") => "event.list",
        ("GET", "/v1/events/{id}") => "event.retrieve",
        ("GET", "/v1/events/{id}/deliveries") => "event.deliveries",
        ("POST", "/v1/events/{id}/redeliver") => "event.redeliver",
        ("POST", "/v1/webhook_endpoints") => "webhook_endpoint.create",
        ("GET", "/v1/webhook_endpoints") => "webhook_endpoint.list",
        ("GET", "/v1/webhook_endpoints/{id}") => "webhook_endpoint.retrieve",
        ("PATCH", "/v1/webhook_endpoints/{id}") => "webhook_endpoint.update",
        ("DELETE", "/v1/webhook_endpoints/{id}") => "webhook_endpoint.delete",
        ("POST", "/v1/webhook_endpoints/{id}/disable") => "webhook_endpoint.disable",
        ("POST", "/v1/webhook_endpoints/{id}/enable") => "webhook_endpoint.enable",
        ("POST", "/v1/webhook_endpoints/{id}/rotate_secret") => "webhook_endpoint.rotate_secret",
        ("POST", "/v1/webhook_endpoints/{id}/recover") => "webhook_endpoint.recover",
        ("GET", "/v1/webhook_endpoints/{id}/attempts") => "webhook_endpoint.attempts",
        ("POST", "/v1/inbound/{source}") => "inbound.receive",
        ("POST", "/v1/relay") => "relay.send",
        ("GET", "/v1/inbound_routes") => "inbound_route.list",
        ("POST", "/v1/inbound_routes") => "inbound_route.create",
        ("GET", "/v1/inbound_routes/{id}") => "inbound_route.retrieve",
        ("DELETE", "/v1/inbound_routes/{id}") => "inbound_route.delete",
        (_, INBOUND_ROUTE | INBOUND_ROUTE_ROOT) => "inbound_route.forward",
        ("POST", "/v1/terminals") => "terminal.create",
        ("GET", "/v1/terminals") => "terminal.list",
        ("GET", "/v1/terminals/{id}") => "terminal.retrieve",
        ("POST", "/v1/terminals/{id}/disable") => "terminal.disable",
        ("POST", "/v1/terminals/{id}/cards") => "terminal.card",
        ("POST", "/v1/terminals/{id}/pin_translations") => "terminal.pin_translation",
        ("GET", "/v1/risk/rules") => "risk_rules.retrieve",
        ("PUT", "/v1/risk/rules") => "risk_rules.update",
        ("GET", "/v1/risk/rules/versions") => "risk_rules.versions",
        ("GET", "/v1/risk/rules/versions/{version}") => "risk_rules.version",
        ("POST", "/v1/risk/card_failures") => "risk_card_failure.create",
        ("GET", "/v1/admin/risk/bin_table") => "risk_bin_table.retrieve",
        ("PUT", "/v1/admin/risk/bin_table") => "risk_bin_table.update",
        ("GET", "/v1/admin/risk/ip_database") => "risk_ip_database.retrieve",
        ("PUT", "/v1/admin/risk/ip_database") => "risk_ip_database.update",
        ("POST", "/v1/risk/lists/{list}/entries") => "risk_list_entry.create",
        ("GET", "/v1/risk/lists/{list}/entries") => "risk_list_entry.list",
        ("GET", "/v1/risk/lists/{list}/entries/{id}") => "risk_list_entry.retrieve",
        ("DELETE", "/v1/risk/lists/{list}/entries/{id}") => "risk_list_entry.delete",
        _ => "",
    };
    if named.is_empty() {
        format!("{} {route}", method.to_ascii_lowercase())
    } else {
        named.to_owned()
    }
}

const KINDS: &[(IdKind, &str)] = &[
    (IdKind::Card, "card"),
    (IdKind::Account, "account"),
    (IdKind::ApiKey, "api_key"),
    (IdKind::Otp, "otp"),
    (IdKind::Event, "event"),
    (IdKind::WebhookEndpoint, "webhook_endpoint"),
    (IdKind::InboundRoute, "inbound_route"),
    (IdKind::ClientSession, "client_session"),
    (IdKind::Suspension, "suspension"),
    (IdKind::RiskAssessment, "risk_assessment"),
    (IdKind::RiskListEntry, "risk_list_entry"),
    (IdKind::KeyImport, "key_import"),
    (IdKind::Terminal, "terminal"),
    (IdKind::PinTranslation, "pin_translation"),
    (IdKind::IntegrityApp, "integrity_app"),
    (IdKind::Attestation, "attestation"),
];

/// The resource a path names: the last path parameter that is a well-formed id.
/// Anything else (which could be a number someone pasted into a URL) is not recorded.
pub fn resource_from_path(route: &str, path: &str) -> String {
    let mut out = String::new();
    for (tpl, seg) in route.split('/').zip(path.split('/')) {
        if tpl.starts_with('{') {
            for (kind, name) in KINDS {
                if strongroom_core::parse_id(*kind, seg).is_ok() {
                    out = format!("{name}:{seg}");
                }
            }
        }
    }
    out
}

/// Most records in one batched append.
const APPEND_BATCH: usize = 512;

type AppendReply = tokio::sync::oneshot::Sender<Result<i64, ()>>;

/// Batches the standalone appends of concurrent requests (reads, refusals) into one
/// transaction: one head lock and one commit for many records. On SQLite the writer's
/// group commit would share the fsync anyway; on PostgreSQL, where appends serialise on
/// the head row until commit, this is what keeps reads from queueing one commit each.
pub struct Appender {
    tx: tokio::sync::mpsc::Sender<(Vec<AuditRecord>, AppendReply)>,
    failures: failures::FailureCounter,
}

impl Appender {
    /// Starts the batching task on `store`.
    pub fn spawn(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<AuditRecord>, AppendReply)>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut records = first.0;
                let mut replies = vec![first.1];
                while records.len() < APPEND_BATCH {
                    match rx.try_recv() {
                        Ok((r, reply)) => {
                            records.extend(r);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let result = store.append_audit(records, HASH).await.map_err(|e| {
                    tracing::error!(error = %e, requests = replies.len(), "audit append failed");
                });
                for r in replies {
                    r.send(result).ok();
                }
            }
        });
        Self {
            tx,
            failures: failures::FailureCounter::default(),
        }
    }

    /// Repeated anonymous authentication failures (see [`failures`]).
    pub fn failures(&self) -> &failures::FailureCounter {
        &self.failures
    }

    /// Appends `records` (in order, possibly with other requests' records); the new head.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<i64, ()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send((records, tx)).await.map_err(drop)?;
        rx.await.map_err(drop)?
    }
}

/// The account an admin route names (`/v1/admin/accounts/{id}/…`), if well formed.
pub fn account_from_path(route: &str, path: &str) -> String {
    if !route.starts_with("/v1/admin/accounts/{id}") {
        return String::new();
    }
    path.split('/')
        .nth(4)
        .filter(|s| strongroom_core::parse_id(IdKind::Account, s).is_ok())
        .unwrap_or_default()
        .to_owned()
}

/// Appends a system record (actor `system`) on its own: start, stop, provisioning.
pub async fn system(
    store: &Store,
    metrics: &Metrics,
    now_ms: i64,
    action: &str,
    resource: &str,
) -> crate::ApiResult<()> {
    let rec = AuditRecord {
        time_ms: now_ms,
        actor: "system".into(),
        action: action.to_owned(),
        resource: resource.to_owned(),
        outcome: SUCCESS.into(),
        ..AuditRecord::default()
    };
    let head = store.append_audit(vec![rec], HASH).await?;
    metrics.audit_head(head);
    Ok(())
}

/// Whose record an operation that runs both for requests and outside them (an admin
/// route, and CLI provisioning or test setup) carries.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A request: its writes carry the request's scope.
    Request(&'a Arc<AuditScope>),
    /// No request: its writes carry a system record of their own (actor `system`).
    System,
}

impl Origin<'_> {
    /// The scope the operation's writes carry: the request's, or a new system scope
    /// whose record names `action`, so that the record commits with the write.
    pub fn scope(self, clock: &dyn Clock, action: &str) -> Arc<AuditScope> {
        match self {
            Self::Request(scope) => Arc::clone(scope),
            Self::System => {
                let rec = AuditRecord {
                    time_ms: clock.now_ms(),
                    actor: "system".into(),
                    action: action.to_owned(),
                    outcome: SUCCESS.into(),
                    ..AuditRecord::default()
                };
                AuditScope::new(HASH, Some(rec))
            }
        }
    }
}

/// What a checkpoint signs, in the crypto crate's terms.
pub fn body(cp: &AuditCheckpoint) -> CheckpointBody<'_> {
    CheckpointBody {
        seq: cp.seq,
        hash: &cp.hash,
        time_ms: cp.time_ms,
        link: cp.link.as_ref().map(|l| Link {
            prev: &l.prev,
            count: l.count,
        }),
    }
}

/// What [`checkpoint_store`] did.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// The head's sequence number when it looked.
    pub head: i64,
    /// The checkpoint it stored (and anchored), if the head had moved past the latest.
    pub new: Option<AuditCheckpoint>,
    /// The latest checkpoint afterwards.
    pub latest: Option<AuditCheckpoint>,
}

/// Signs the current head into a checkpoint chained to the latest one, unless that one
/// is at the head already; stores it, then appends it to `anchor` (if any). The anchor
/// is written only after the database has it: an anchored checkpoint the database never
/// held would read as a cut tail. A checkpoint another node stored first (same seq, or
/// the same predecessor) wins, and this one is dropped.
pub async fn checkpoint_store(
    store: &Store,
    signer: &AuditSigner,
    time_ms: i64,
    anchor: Option<&Path>,
) -> ApiResult<Checkpointed> {
    let (seq, hash) = store.audit_head().await?;
    let latest = store.latest_checkpoint().await?;
    if seq == 0 || latest.as_ref().is_some_and(|c| c.seq >= seq) {
        return Ok(Checkpointed {
            head: seq,
            new: None,
            latest,
        });
    }
    let link = match &latest {
        None => CheckpointLink {
            prev: GENESIS.to_vec(),
            count: 1,
        },
        Some(prev) => CheckpointLink {
            prev: body(prev).digest().to_vec(),
            count: match &prev.link {
                Some(l) => l.count,
                // The first chained checkpoint after unchained ones counts them.
                None => store.checkpoint_count().await?,
            }
            .saturating_add(1),
        },
    };
    let mut cp = AuditCheckpoint {
        seq,
        hash,
        time_ms,
        public_key: signer.public_key(),
        signature: Vec::new(),
        link: Some(link),
    };
    cp.signature = signer.sign_body(&body(&cp));
    if !store.insert_checkpoint(&cp).await? {
        let latest = store.latest_checkpoint().await?;
        return Ok(Checkpointed {
            head: seq,
            new: None,
            latest,
        });
    }
    if let Some(path) = anchor {
        append_anchor(path.to_path_buf(), cp.clone()).await?;
    }
    Ok(Checkpointed {
        head: seq,
        new: Some(cp.clone()),
        latest: Some(cp),
    })
}

async fn append_anchor(path: PathBuf, cp: AuditCheckpoint) -> ApiResult<()> {
    let seq = cp.seq;
    let written = tokio::task::spawn_blocking(move || anchor::append(&path, &cp))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    written.map_err(|e| {
        tracing::error!(error = %e, seq, "could not append the audit checkpoint to the anchor");
        codes::AUDIT_UNAVAILABLE
    })
}

/// Creates the configured anchor (or checks it can be appended to) at start: a service
/// that cannot anchor its checkpoints does not start.
pub async fn prepare_anchor(anchor: Option<PathBuf>) -> ApiResult<()> {
    let Some(path) = anchor else {
        return Ok(());
    };
    let done = tokio::task::spawn_blocking(move || anchor::prepare(&path))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    done.map_err(|e| {
        tracing::error!(error = %e, "cannot open the audit anchor");
        codes::AUDIT_UNAVAILABLE
    })
}

/// Signs the current head into a checkpoint, unless the latest checkpoint is at it, and
/// anchors it outside the database. The checkpoint-age metric moves only once both are
/// done, so a failing anchor shows there as well as in the log.
pub async fn checkpoint(
    store: &Store,
    root: &RootKey,
    metrics: &Metrics,
    now_ms: i64,
    anchor: Option<&Path>,
) -> ApiResult<Option<AuditCheckpoint>> {
    let signer = AuditSigner::derive(root)?;
    let done = checkpoint_store(store, &signer, now_ms, anchor).await?;
    metrics.audit_head(done.head);
    if let Some(c) = &done.latest {
        metrics.audit_checkpoint(c.time_ms);
    }
    Ok(done.new)
}

/// Appends the counts of repeated authentication failures whose window ended before
/// `due_ms` (all of them with `due_ms = i64::MAX`, at shutdown), stamped `now_ms`.
pub async fn flush_failures(appender: &Appender, metrics: &Metrics, now_ms: i64, due_ms: i64) {
    let mut due = appender.failures().due(due_ms);
    if due.is_empty() {
        return;
    }
    for r in &mut due {
        r.time_ms = now_ms;
    }
    match appender.append(due).await {
        Ok(head) => metrics.audit_head(head),
        Err(()) => tracing::error!("could not record the counts of repeated auth failures"),
    }
}

/// Where verification found the log broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The record at this position does not hash to what the chain says (modified,
    /// reordered or inserted).
    Hash(i64),
    /// The record expected at this position is missing (deleted), the next one found
    /// has another sequence number.
    Gap {
        /// The position expected.
        expected: i64,
        /// The sequence number found.
        found: i64,
    },
    /// The log ends at `end`, behind a checkpoint at `checkpoint` (truncated tail).
    Truncated {
        /// Last position present.
        end: i64,
        /// The checkpointed position.
        checkpoint: i64,
    },
    /// A checkpoint's hash differs from the chain at its position (the chain was
    /// rewritten, hashes and all).
    CheckpointMismatch(i64),
    /// A checkpoint's signature does not verify under the expected key.
    BadSignature(i64),
    /// The checkpoint at this position does not follow from the one before it (a
    /// checkpoint was deleted, inserted or replaced), or is unchained after chained ones.
    CheckpointChain(i64),
    /// The log ends at `end`, behind checkpoint `count` at `seq` that is anchored outside
    /// the database (the tail was cut together with its checkpoints).
    AnchorTruncated {
        /// Last position present.
        end: i64,
        /// The anchored checkpoint's place in the chain of checkpoints.
        count: i64,
        /// The position it covers.
        seq: i64,
    },
    /// An anchored checkpoint is not in the database as anchored: missing (deleted) or
    /// different (replaced).
    AnchorDisagrees {
        /// The anchored checkpoint's place in the chain of checkpoints.
        count: i64,
        /// The position it covers.
        seq: i64,
        /// Whether the database has no checkpoint in that place at all.
        missing: bool,
    },
    /// A line of the anchor file is not a chained checkpoint signed by the audit key
    /// (the anchor was edited).
    BadAnchorLine(usize),
}

impl Broken {
    /// The first broken record position (0 when the problem is a line of the anchor).
    pub fn position(&self) -> i64 {
        match self {
            Self::Hash(p)
            | Self::CheckpointMismatch(p)
            | Self::BadSignature(p)
            | Self::CheckpointChain(p)
            | Self::AnchorDisagrees { seq: p, .. } => *p,
            Self::Gap { expected, .. } => *expected,
            Self::Truncated { end, .. } | Self::AnchorTruncated { end, .. } => {
                end.saturating_add(1)
            }
            Self::BadAnchorLine(_) => 0,
        }
    }
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hash(p) => write!(
                f,
                "record {p}: hash mismatch (modified, reordered or inserted)"
            ),
            Self::Gap { expected, found } => write!(
                f,
                "record {expected}: missing (next record found is {found}; deleted?)"
            ),
            Self::Truncated { end, checkpoint } => write!(
                f,
                "record {}: missing; the log ends at {end} but a signed checkpoint covers {checkpoint} (tail truncated)",
                end.saturating_add(1)
            ),
            Self::CheckpointMismatch(p) => write!(
                f,
                "record {p}: the chain differs from the signed checkpoint at {p} (rewritten)"
            ),
            Self::BadSignature(p) => {
                write!(f, "checkpoint {p}: signature does not verify")
            }
            Self::CheckpointChain(p) => write!(
                f,
                "checkpoint {p}: does not follow from the checkpoint before it (a checkpoint was deleted, inserted or replaced)"
            ),
            Self::AnchorTruncated { end, count, seq } => write!(
                f,
                "record {}: missing; the log ends at {end} but checkpoint #{count}, anchored outside the database, covers {seq} (tail truncated with its checkpoints)",
                end.saturating_add(1)
            ),
            Self::AnchorDisagrees {
                count,
                seq,
                missing: true,
            } => write!(
                f,
                "checkpoint {seq}: checkpoint #{count} is anchored outside the database but missing from it (checkpoints deleted)"
            ),
            Self::AnchorDisagrees { count, seq, .. } => write!(
                f,
                "checkpoint {seq}: the database's checkpoint #{count} differs from the anchored one (checkpoints replaced)"
            ),
            Self::BadAnchorLine(line) => write!(
                f,
                "anchor line {line}: not a checkpoint signed by the audit key (the anchor was edited)"
            ),
        }
    }
}

/// What verification found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Records checked.
    pub records: i64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Chained checkpoints among them.
    pub chained: usize,
    /// The newest checkpoint in the database.
    pub newest: Option<AuditCheckpoint>,
    /// Anchored checkpoints checked against the database (`None`: no anchor given).
    pub anchored: Option<usize>,
    /// The newest anchored checkpoint.
    pub newest_anchored: Option<AuditCheckpoint>,
    /// The first problem, if any.
    pub broken: Option<Broken>,
}

/// Walks the whole chain and every checkpoint. `public_key`: the audit key checkpoints
/// must verify under (derived from the root key); `None` trusts the key recorded in
/// each checkpoint (detects accidents, not a forger who also rewrote checkpoints).
pub async fn verify(store: &Store, public_key: Option<&[u8]>) -> ApiResult<Verified> {
    verify_anchored(store, public_key, None).await
}

/// [`verify`], then holds the database to every checkpoint in `anchor`: each line must
/// be a chained checkpoint signed by the audit key, the log must reach the newest, and
/// the database must hold each one unchanged in its place. Since each database
/// checkpoint is checked against the chain, and each against the one before it, this
/// catches a tail cut together with its checkpoints and a replaced checkpoint chain.
pub async fn verify_anchored(
    store: &Store,
    public_key: Option<&[u8]>,
    anchor: Option<&anchor::Anchor>,
) -> ApiResult<Verified> {
    const PAGE: i64 = 1000;
    let cps = store.checkpoints().await?;
    let mut at: HashMap<i64, &AuditCheckpoint> = cps.iter().map(|c| (c.seq, c)).collect();
    let mut prev = GENESIS;
    let mut expected: i64 = 1;
    let mut first: Option<Broken> = None;
    'pages: loop {
        let rows = store.audit_range(expected.saturating_sub(1), PAGE).await?;
        let n = rows.len();
        for r in rows {
            if r.seq != expected {
                first = Some(if r.seq > expected {
                    Broken::Gap {
                        expected,
                        found: r.seq,
                    }
                } else {
                    Broken::Hash(expected)
                });
                break 'pages;
            }
            let h = chain_hash(&prev, &r.canonical(r.seq));
            if !strongroom_crypto::ct_eq(&h, &r.hash) {
                first = Some(Broken::Hash(r.seq));
                break 'pages;
            }
            if let Some(cp) = at.remove(&r.seq)
                && !strongroom_crypto::ct_eq(&cp.hash, &h)
            {
                first = Some(Broken::CheckpointMismatch(r.seq));
                break 'pages;
            }
            prev = h;
            expected = expected.saturating_add(1);
        }
        if n < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
    }
    let end = expected.saturating_sub(1);
    if first.is_none()
        && let Some(cp) = cps.iter().rev().find(|c| c.seq > end)
    {
        first = Some(Broken::Truncated {
            end,
            checkpoint: cp.seq,
        });
    }
    if first.is_none() {
        first = check_checkpoints(&cps, public_key);
    }
    let mut anchored = None;
    let mut newest_anchored = None;
    if let Some(a) = anchor {
        let (n, newest, broken) = check_anchor(a, &cps, end, public_key);
        anchored = Some(n);
        newest_anchored = newest;
        if first.is_none() {
            first = broken;
        }
    }
    Ok(Verified {
        records: end,
        checkpoints: cps.len(),
        chained: cps.iter().filter(|c| c.link.is_some()).count(),
        newest: cps.last().cloned(),
        anchored,
        newest_anchored,
        broken: first,
    })
}

fn signed(cp: &AuditCheckpoint, public_key: Option<&[u8]>) -> bool {
    verify_body(
        public_key.unwrap_or(&cp.public_key),
        &body(cp),
        &cp.signature,
    )
}

/// Signatures and links of the database's checkpoints, oldest first: each chained one
/// must name the digest of the one before it (zeros for the first) and its own place;
/// unchained ones (made before chaining) may only come first.
fn check_checkpoints(cps: &[AuditCheckpoint], public_key: Option<&[u8]>) -> Option<Broken> {
    let mut prev = GENESIS;
    let mut chained = false;
    for (i, cp) in cps.iter().enumerate() {
        if !signed(cp, public_key) {
            return Some(Broken::BadSignature(cp.seq));
        }
        match &cp.link {
            None if chained => return Some(Broken::CheckpointChain(cp.seq)),
            None => {}
            Some(l) => {
                let place = i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1);
                if l.count != place || !strongroom_crypto::ct_eq(&l.prev, &prev) {
                    return Some(Broken::CheckpointChain(cp.seq));
                }
                chained = true;
            }
        }
        prev = body(cp).digest();
    }
    None
}

/// The anchor against the database: how many anchored checkpoints were checked, the
/// newest, and the first disagreement.
fn check_anchor(
    a: &anchor::Anchor,
    cps: &[AuditCheckpoint],
    end: i64,
    public_key: Option<&[u8]>,
) -> (usize, Option<AuditCheckpoint>, Option<Broken>) {
    let mut good: Vec<(i64, &AuditCheckpoint)> = Vec::with_capacity(a.entries.len());
    let mut first = None;
    for e in &a.entries {
        match &e.checkpoint {
            Some(cp) if signed(cp, public_key) => {
                if let Some(l) = &cp.link {
                    good.push((l.count, cp));
                    continue;
                }
            }
            _ => {}
        }
        first = first.or(Some(Broken::BadAnchorLine(e.line)));
    }
    good.sort_by_key(|(count, _)| *count);
    let newest = good.last().map(|(_, cp)| (*cp).clone());
    if first.is_none()
        && let Some((count, cp)) = good.last()
        && cp.seq > end
    {
        first = Some(Broken::AnchorTruncated {
            end,
            count: *count,
            seq: cp.seq,
        });
    }
    if first.is_none() {
        let by_count: HashMap<i64, &AuditCheckpoint> = cps
            .iter()
            .filter_map(|c| c.link.as_ref().map(|l| (l.count, c)))
            .collect();
        first = good.iter().find_map(|(count, cp)| {
            let missing = match by_count.get(count) {
                None => true,
                Some(db) if db.seq == cp.seq && body(db).digest() == body(cp).digest() => {
                    return None;
                }
                Some(_) => false,
            };
            Some(Broken::AnchorDisagrees {
                count: *count,
                seq: cp.seq,
                missing,
            })
        });
    }
    (good.len(), newest, first)
}
