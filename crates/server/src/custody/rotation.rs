//! Root-key rotation (docs/key-custody.md, "Rotating the root key"): a new root key,
//! under the same provider or a stronger one, takes over every wrapped key while the
//! API keeps serving.
//!
//! 1. The next root key is made (by the HSM for `pkcs11`; split into new shares for
//!    `shamir`) and recorded as the pending generation, with the digest key wrapped
//!    under it and itself wrapped under the key in force (`transit`). The record is
//!    written only if no other rotation runs: one re-wrapper at a time, across nodes.
//! 2. This node wraps under the next key from then on and unwraps under either; every
//!    other node does the same within [`crate::config::CustodyConfig::follow_interval`]
//!    (its [`spawn_follower`] reads the pending record and opens the transit).
//! 3. Every wrapped value (data keys, JWT signing keys, PIN transport keys, webhook
//!    secrets, sealed OTP codes awaiting delivery) moves under the next key, a batch per
//!    transaction; a value changed meanwhile is written only if still as read. Passes
//!    repeat until one moves nothing.
//! 4. The next key is made durable where its provider reads it (the file), then, in one
//!    transaction, the pending generation comes into force and the previous one is
//!    retired, keeping only its verifier. Every node drops the previous key.
//!
//! An interrupted rotation (a crash, a seal, a failed batch) stays pending: every node
//! that opens with the key in force takes up the next key too, and running the rotation
//! again with the same provider finishes it (new shares for `shamir`).

use super::pkcs11;
use super::provider::Provider;
use crate::audit;
use crate::error::{ApiError, ApiResult, codes};
use crate::startup::StartError;
use crate::state::AppState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use strongroom_crypto::shamir::{self, Share};
use strongroom_crypto::{KEY_LEN, RootKey, ct_eq, random};
use strongroom_store::{CustodyStore, RootKeyRecord, Store, WrappedKey, WrappedKind, WrappedQuery};
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// Values moved per transaction.
const BATCH: i64 = 200;
/// A rotation that still finds values under the previous key after this many passes
/// stops (and stays pending) rather than loop.
const MAX_PASSES: u32 = 5;
/// Sealed OTP codes older than this have expired: they are not moved.
const OTP_HORIZON_MS: i64 = 24 * 3600 * 1000;

/// What `POST /v1/sys/rotate_root` asks for.
#[derive(Debug, Clone, Copy)]
pub struct RotateRoot {
    /// The next key's provider; `None` keeps the one in force.
    pub provider: Option<Provider>,
    /// `shamir`: how many shares, and how many open the vault.
    pub shares: u8,
    /// See `shares`.
    pub threshold: u8,
}

/// A root rotation: what it moved so far and where it stands. Never a key; the new
/// Shamir shares only in the answer that starts the rotation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RootRotationView {
    /// Always `root_rotation`.
    #[schema(example = "root_rotation")]
    pub object: &'static str,
    /// The generation the rotation moves to (the first root key is 1).
    pub generation: i64,
    /// The next key's provider.
    #[schema(example = "pkcs11")]
    pub provider: &'static str,
    /// `running`, `finished` or `failed` (it stays pending: run it again).
    #[schema(example = "running")]
    pub state: &'static str,
    /// Values moved under the next key so far, per kind (`data_keys`,
    /// `jwt_signing_keys`, `pin_transport_keys`, `webhook_secrets`,
    /// `webhook_previous_secrets`, `otp_codes`).
    pub moved: BTreeMap<&'static str, u64>,
    /// Passes over every wrapped value so far.
    pub passes: u32,
    /// When it began (Unix seconds).
    pub started_at: i64,
    /// When it finished or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Why it failed (never a key or a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `shamir`, in the answer that starts (or takes up) the rotation only: the next
    /// key's shares, one per custodian. They are shown once and never again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub shares: Vec<String>,
}

impl RootRotationView {
    fn new(generation: i64, provider: &'static str, state: &'static str, started_ms: i64) -> Self {
        Self {
            object: "root_rotation",
            generation,
            provider,
            state,
            moved: BTreeMap::new(),
            passes: 0,
            started_at: crate::service::secs(started_ms),
            ended_at: None,
            error: None,
            shares: Vec::new(),
        }
    }
}

/// Whether a vault under `from` may move its root key to `to`: within a provider, or
/// to a stronger one (an HSM; a file to shares). Never back to a file.
fn allowed(from: Provider, to: Provider) -> bool {
    from == to || to == Provider::Pkcs11 || (from == Provider::File && to == Provider::Shamir)
}

/// The vault's provider in force, and the root rotation this node runs or last ran.
pub struct Rotations {
    provider: RwLock<Provider>,
    view: Mutex<Option<RootRotationView>>,
}

impl Rotations {
    pub(crate) fn new(provider: Provider) -> Arc<Self> {
        Arc::new(Self {
            provider: RwLock::new(provider),
            view: Mutex::new(None),
        })
    }

    /// Where the root key in force is kept.
    pub fn provider(&self) -> Provider {
        self.provider
            .read()
            .map(|p| *p)
            .unwrap_or_else(|p| *p.into_inner())
    }

    fn set_provider(&self, provider: Provider) {
        if let Ok(mut p) = self.provider.write() {
            *p = provider;
        }
    }

    /// Starts a root rotation on the open `state` (or takes up an interrupted one) and
    /// returns at once; the values move in the background, which
    /// [`Rotations::status`] follows.
    pub async fn start(
        self: &Arc<Self>,
        state: &AppState,
        req: RotateRoot,
    ) -> ApiResult<RootRotationView> {
        let from = self.provider();
        let to = req.provider.unwrap_or(from);
        if !allowed(from, to) {
            return Err(codes::ROOT_PROVIDER_DOWNGRADE);
        }
        if to == Provider::Shamir
            && (req.threshold < 2 || req.threshold > req.shares || req.shares > shamir::MAX_SHARES)
        {
            return Err(codes::INVALID_PARAMETER);
        }
        let started = {
            let mut r = self.view.lock().map_err(|_| codes::INTERNAL)?;
            if r.as_ref().is_some_and(|v| v.state == "running") {
                return Err(codes::ROTATION_RUNNING);
            }
            let view = RootRotationView::new(0, to.as_str(), "running", state.now_ms());
            r.insert(view).clone()
        };
        match self.begin(state, to, req).await {
            Ok((next, generation, shares)) => {
                let mut view = self.progress(|v| v.generation = generation);
                view.shares = shares.iter().map(|s| s.text().to_string()).collect();
                let rotations = self.clone();
                let worker = state.clone();
                state.spawn_worker(async move {
                    let result = rotations.run(&worker, to, generation, next).await;
                    rotations.ended(worker.now_ms(), result);
                });
                Ok(view)
            }
            Err(e) => {
                // Nothing began: forget the attempt.
                if let Ok(mut r) = self.view.lock()
                    && r.as_ref()
                        .is_some_and(|v| v.started_at == started.started_at)
                {
                    *r = None;
                }
                Err(e)
            }
        }
    }

    /// The rotation this node runs or last ran; else the one pending in `store` (begun
    /// by another node, or interrupted).
    pub async fn status(&self, store: &Store) -> ApiResult<Option<RootRotationView>> {
        if let Some(v) = self.view.lock().ok().and_then(|r| r.clone()) {
            return Ok(Some(v));
        }
        Ok(store.pending_root_key().await?.map(|p| {
            let provider = Provider::parse(&p.provider).map_or("unknown", Provider::as_str);
            RootRotationView::new(p.generation, provider, "pending", p.created_ms)
        }))
    }

    /// Records the pending generation (or takes up the one pending) and switches this
    /// node to the next key: the key's bytes, its generation and, for Shamir, its shares.
    async fn begin(
        &self,
        state: &AppState,
        to: Provider,
        req: RotateRoot,
    ) -> ApiResult<(Zeroizing<[u8; KEY_LEN]>, i64, Vec<Share>)> {
        let root = state.root();
        let current = state
            .store()
            .root_key()
            .await?
            .ok_or_else(|| ApiError::internal(&"the vault has no root key record"))?;
        let split = |next: &[u8; KEY_LEN]| -> ApiResult<(Vec<Share>, Vec<[u8; 32]>)> {
            if to != Provider::Shamir {
                return Ok((Vec::new(), Vec::new()));
            }
            let s = shamir::split(next, req.shares, req.threshold)?;
            let d = s.iter().map(Share::digest).collect();
            Ok((s, d))
        };
        let (next, generation, shares) = match state.store().pending_root_key().await? {
            Some(p) => {
                if p.provider != to.as_str() {
                    return Err(codes::ROTATION_PENDING);
                }
                let transit = p.transit.as_deref().unwrap_or_default();
                let next = key_bytes(&root.open_transit(transit)?)?;
                if !ct_eq(&RootKey::verifier_of(next.as_slice())?, &p.verifier) {
                    return Err(ApiError::internal(&"the pending root key does not match"));
                }
                let (shares, digests) = split(&next)?;
                if to == Provider::Shamir {
                    let old = p.share_digests.clone();
                    let replaced = RootKeyRecord {
                        threshold: Some(i64::from(req.threshold)),
                        shares: Some(i64::from(req.shares)),
                        share_digests: digests,
                        ..p.clone()
                    };
                    let stored = writes(state.store()).rekey_root_key(replaced, old).await?;
                    if !stored {
                        return Err(codes::ROTATION_RUNNING);
                    }
                }
                (next, p.generation, shares)
            }
            None => {
                let (next, wrapped_root) = match to {
                    Provider::Pkcs11 => {
                        // The open state has the HSM exactly when `[pkcs11]` is configured.
                        let hsm = state.hsm().ok_or(codes::PROVIDER_NOT_CONFIGURED)?.clone();
                        let made = tokio::task::spawn_blocking(move || hsm.make_root())
                            .await
                            .map_err(|e| StartError::Custody(e.to_string()))
                            .and_then(|r| r);
                        let (bytes, wrapping) = made.map_err(|e| {
                            tracing::error!(error = %e, "the HSM could not make the next root key");
                            codes::SERVICE_UNAVAILABLE
                        })?;
                        (bytes, Some(wrapping))
                    }
                    Provider::File | Provider::Shamir => {
                        if to == Provider::File && state.config().custody.root_file.is_none() {
                            return Err(codes::PROVIDER_NOT_CONFIGURED);
                        }
                        let bytes = random::bytes::<KEY_LEN>().map_err(ApiError::from)?;
                        (Zeroizing::new(bytes), None)
                    }
                };
                let prepared = root.prepare_rotation(next.as_slice())?;
                let (shares, digests) = split(&next)?;
                let record = RootKeyRecord {
                    generation: current.generation + 1,
                    provider: to.as_str().to_owned(),
                    verifier: prepared.verifier.to_vec(),
                    threshold: (to == Provider::Shamir).then_some(i64::from(req.threshold)),
                    shares: (to == Provider::Shamir).then_some(i64::from(req.shares)),
                    share_digests: digests,
                    created_ms: state.now_ms(),
                    wrapped_root,
                    digest_wrapped: Some(prepared.digest_wrapped),
                    transit: Some(prepared.transit),
                };
                let stored = writes(state.store()).begin_root_rotation(record).await?;
                if !stored {
                    return Err(codes::ROTATION_RUNNING);
                }
                (next, current.generation + 1, shares)
            }
        };
        root.begin_rotation(next.as_slice())?;
        audit::system(
            state.store(),
            state.metrics(),
            state.now_ms(),
            "vault.root_rotation_started",
            &format!("root_key/{generation}"),
        )
        .await?;
        tracing::warn!(
            generation,
            provider = to.as_str(),
            "root rotation begun: moving every wrapped key"
        );
        Ok((next, generation, shares))
    }

    /// Moves every wrapped value, makes the next key durable and puts it in force.
    async fn run(
        &self,
        state: &AppState,
        to: Provider,
        generation: i64,
        next: Zeroizing<[u8; KEY_LEN]>,
    ) -> Result<(), String> {
        // Every node wraps under the next key before the passes that must find nothing
        // left under the previous one.
        let settle = state.config().custody.follow_interval * 2;
        tokio::time::sleep(settle).await;
        let mut passes = 0;
        loop {
            passes += 1;
            let moved = self.pass(state).await.map_err(|e| e.message.to_string())?;
            self.progress(|v| v.passes = passes);
            if moved == 0 {
                break;
            }
            if passes >= MAX_PASSES {
                return Err(format!(
                    "values were still under the previous key after {MAX_PASSES} passes"
                ));
            }
            tokio::time::sleep(settle).await;
        }
        if to == Provider::File {
            let writer = state
                .config()
                .custody
                .root_file
                .clone()
                .ok_or("no root key file to write")?;
            let bytes = next.clone();
            tokio::task::spawn_blocking(move || (writer.0)(Some(bytes.as_slice())))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("the root key file could not be written: {e}"))?;
        }
        drop(next);
        let done = writes(state.store())
            .finish_root_rotation(generation, state.now_ms())
            .await
            .map_err(|e| e.to_string())?;
        if !done {
            return Err("the pending root key is gone (another node finished it?)".into());
        }
        state.root().finish_rotation();
        let from = self.provider();
        self.set_provider(to);
        if from == Provider::File
            && to != Provider::File
            && let Some(writer) = state.config().custody.root_file.clone()
        {
            // The old key opens nothing any more; its file goes too.
            let removed = tokio::task::spawn_blocking(move || (writer.0)(None)).await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::error!("the previous root key file could not be removed: remove it");
            }
        }
        audit::system(
            state.store(),
            state.metrics(),
            state.now_ms(),
            "vault.root_rotated",
            &format!("root_key/{generation}"),
        )
        .await
        .map_err(|e| e.message.to_string())?;
        tracing::warn!(
            generation,
            provider = to.as_str(),
            "root rotation finished: the previous root key is retired"
        );
        Ok(())
    }

    /// One pass over every kind of wrapped value: how many moved.
    async fn pass(&self, state: &AppState) -> ApiResult<u64> {
        let mut total = 0;
        let since_ms = state.now_ms().saturating_sub(OTP_HORIZON_MS);
        for kind in WrappedKind::ALL {
            let mut after: Option<WrappedKey> = None;
            loop {
                let q = WrappedQuery {
                    kind,
                    after: after.as_ref(),
                    limit: BATCH,
                    since_ms,
                };
                let page = state.store().wrapped_keys(q).await?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                let mut updates = Vec::new();
                for v in page {
                    if let Some(new) = rewrap(state.root(), kind, &v)? {
                        updates.push((v, new));
                    }
                }
                if !updates.is_empty() {
                    let n = writes(state.store())
                        .rewrap_under_root(kind, updates)
                        .await?;
                    total += n;
                    self.progress(|p| *p.moved.entry(kind.as_str()).or_default() += n);
                    tracing::info!(
                        kind = kind.as_str(),
                        moved = n,
                        "root rotation: batch moved"
                    );
                }
                after = Some(last);
            }
        }
        Ok(total)
    }

    /// Changes this node's rotation view and returns a copy.
    fn progress(&self, f: impl FnOnce(&mut RootRotationView)) -> RootRotationView {
        let mut r = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match r.as_mut() {
            Some(v) => {
                f(v);
                v.clone()
            }
            None => RootRotationView::new(0, "unknown", "failed", 0),
        }
    }

    fn ended(&self, now_ms: i64, result: Result<(), String>) {
        let now = crate::service::secs(now_ms);
        if let Err(e) = &result {
            tracing::error!(error = %e, "root rotation failed; it stays pending: run it again");
        }
        self.progress(|v| {
            v.ended_at = Some(now);
            match result {
                Ok(()) => v.state = "finished",
                Err(e) => {
                    v.state = "failed";
                    v.error = Some(e);
                }
            }
        });
    }
}

/// The rotation's writes. It is audited as a system action when it begins and when it
/// ends, not at each batch.
#[allow(
    clippy::disallowed_methods,
    reason = "the rotation is audited as a system action, begun and ended"
)]
fn writes(store: &Store) -> strongroom_store::Writes<'_> {
    store.unaudited()
}

/// 32 bytes of a root key, or an internal error.
fn key_bytes(b: &[u8]) -> ApiResult<Zeroizing<[u8; KEY_LEN]>> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if b.len() != KEY_LEN {
        return Err(ApiError::internal(&"a root key of the wrong length"));
    }
    out.copy_from_slice(b);
    Ok(out)
}

/// The context a stored value of `kind` is wrapped under; `None` for a sealed OTP code,
/// whose context is inside the value (see [`crate::service::otp_code`]).
pub fn context_of(kind: WrappedKind, v: &WrappedKey) -> ApiResult<Option<String>> {
    use crate::service::{tokens, webhooks};
    Ok(Some(match kind {
        WrappedKind::DataKey => {
            let purpose = strongroom_store::KeyPurpose::parse(&v.sub)
                .ok_or_else(|| ApiError::internal(&"unknown data key purpose"))?;
            crate::keyring::wrap_context(&v.id, purpose, v.version)
        }
        WrappedKind::JwtKey => {
            let alg = strongroom_crypto::jwt::JwtAlg::parse(&v.sub)
                .ok_or_else(|| ApiError::internal(&"unknown JWT algorithm"))?;
            tokens::wrap_context(&v.id, v.version, alg)
        }
        WrappedKind::PinTransportKey => crate::pin_keys::transport_context(&v.id),
        WrappedKind::WebhookSecret | WrappedKind::WebhookOldSecret => {
            webhooks::wrap_context(&v.id, v.version)
        }
        WrappedKind::ImportedKey => crate::service::key_imports::wrap_context(&v.id),
        WrappedKind::KeyImportPartial => crate::service::key_imports::partial_context(&v.id),
        WrappedKind::OtpEvent => return Ok(None),
    }))
}

/// The value moved under the key in force, if the previous one wrapped it. A PIN-block
/// key or an imported key on the HSM is not wrapped by the root key: it stays where it is.
fn rewrap(root: &RootKey, kind: WrappedKind, v: &WrappedKey) -> ApiResult<Option<Vec<u8>>> {
    if matches!(kind, WrappedKind::DataKey | WrappedKind::ImportedKey)
        && v.wrapped == pkcs11::HSM_KEY
    {
        return Ok(None);
    }
    match context_of(kind, v)? {
        Some(context) => Ok(root.rewrap(&v.wrapped, &context)?),
        None => Ok(crate::service::otp_code::rewrap_event(root, &v.wrapped)?),
    }
}

/// At open, after the root key in force is checked: with a rotation pending, this node
/// takes up the next key (wraps under it, unwraps under both); with the rotation ended,
/// it drops the previous one. Whether anything changed.
pub(crate) async fn follow(store: &Store, root: &RootKey) -> Result<bool, String> {
    let pending = store.pending_root_key().await.map_err(|e| e.to_string())?;
    match pending {
        Some(p) if !ct_eq(&p.verifier, &root.verifier()) => {
            let transit = p.transit.as_deref().unwrap_or_default();
            let next = root
                .open_transit(transit)
                .map_err(|_| "the pending root key does not open under this one".to_string())?;
            if !ct_eq(
                &RootKey::verifier_of(&next).map_err(|e| e.to_string())?,
                &p.verifier,
            ) {
                return Err("the pending root key does not match its record".into());
            }
            root.begin_rotation(&next).map_err(|e| e.to_string())?;
            tracing::warn!(
                generation = p.generation,
                "root rotation taken up from the store"
            );
            Ok(true)
        }
        Some(_) => Ok(false),
        None if root.rotating() => {
            let current = store.root_key().await.map_err(|e| e.to_string())?;
            if current.is_some_and(|c| ct_eq(&c.verifier, &root.verifier())) {
                root.finish_rotation();
                tracing::warn!("root rotation ended elsewhere: the previous root key is dropped");
                return Ok(true);
            }
            Ok(false)
        }
        None => Ok(false),
    }
}

/// Follows rotations begun or ended by other nodes, every
/// [`crate::config::CustodyConfig::follow_interval`].
pub fn spawn_follower(state: AppState) {
    state.clone().spawn_worker(async move {
        loop {
            tokio::time::sleep(state.config().custody.follow_interval).await;
            if let Err(e) = follow(state.store(), state.root()).await {
                tracing::error!(error = %e, "cannot follow the root rotation");
            }
        }
    });
}

/// A root key that is not the one in force, at start: the next key of a rotation whose
/// every value had moved and whose key file was written, when it stopped before the
/// last step. That step is taken now. Any other key is refused.
pub(crate) async fn finish_at_start(
    store: &Store,
    mut root: RootKey,
    provider: Provider,
    now_ms: i64,
) -> Result<RootKey, StartError> {
    let wrong = || {
        StartError::Custody(
            "the root key does not open this vault's database (a different key, or another vault's)"
                .into(),
        )
    };
    let pending = store.pending_root_key().await?.ok_or_else(wrong)?;
    if provider != Provider::File
        || pending.provider != provider.as_str()
        || !ct_eq(&pending.verifier, &root.verifier())
    {
        return Err(wrong());
    }
    let carried = pending.digest_wrapped.as_deref().ok_or_else(wrong)?;
    root.carry_digest(carried).map_err(|_| wrong())?;
    #[allow(
        clippy::disallowed_methods,
        reason = "the end of an interrupted rotation, at start, before any request"
    )]
    let done = store
        .unaudited()
        .finish_root_rotation(pending.generation, now_ms)
        .await?;
    if !done {
        return Err(wrong());
    }
    tracing::warn!(
        generation = pending.generation,
        "an interrupted root rotation is finished: its key file was written"
    );
    Ok(root)
}
