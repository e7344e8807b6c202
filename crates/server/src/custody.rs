//! Key custody: where the root key comes from, and the seal (docs/key-custody.md).
//!
//! A [`Vault`] is the server's front. It holds the store, the configuration and, while it
//! is open, the [`AppState`] with every key in memory and the router that serves the API.
//! It opens when the root key is at hand: at start for a `file` (or HSM) provider, or
//! when enough Shamir shares are in for `shamir`. Until then every route but
//! `/healthz` and `/v1/sys/*` answers `503 sealed`. Sealing drops the open state: the
//! workers that hold it stop at once, and requests in flight finish with what they hold.
//!
//! The store keeps what the vault knows of its root key ([`RootKeyRecord`]): the
//! provider, a verifier (a one-way derivation that tells the right key from a wrong one)
//! and, for Shamir, the threshold and a digest of each share. A wrong root key file, or
//! the shares of another vault, are refused before any data is touched.

pub mod pkcs11;
mod provider;
pub mod rotation;

use crate::audit;
use crate::error::{ApiError, ApiResult, codes};
use crate::startup::StartError;
use crate::state::AppState;
use axum::Router;
use futures_util::future::BoxFuture;
pub use provider::Provider;
use std::sync::{Arc, RwLock};
use strongroom_core::Clock;
use strongroom_crypto::shamir::{self, Share};
use strongroom_crypto::{KEY_LEN, RootKey, random};
use strongroom_store::{CustodyStore, RootKeyRecord, Store};
use zeroize::Zeroizing;

/// Shares handed in are forgotten if the rest do not follow within this time.
const COLLECT_FOR_MS: i64 = 15 * 60 * 1000;

/// How the server starts.
#[allow(
    clippy::large_enum_variant,
    reason = "made once at start; boxing the key would only add an allocation"
)]
pub enum Custody {
    /// The root key is at hand (a file, an HSM): the vault opens at start.
    Open {
        /// The key.
        root: RootKey,
        /// Where it came from.
        provider: Provider,
    },
    /// The vault was initialised with Shamir shares: it starts sealed.
    Sealed,
}

/// Makes a root key for a Shamir vault, records its verifier and share digests, and
/// returns the shares: the only time they exist together. Refused when the store
/// already knows a root key.
pub async fn init_shamir(
    store: &Store,
    now_ms: i64,
    shares: u8,
    threshold: u8,
) -> Result<Vec<Share>, InitError> {
    if threshold < 2 || threshold > shares || shares > shamir::MAX_SHARES {
        return Err(InitError::Parameters);
    }
    if store.root_key().await?.is_some() {
        return Err(InitError::AlreadyInitialised);
    }
    let secret = Zeroizing::new(random::bytes::<KEY_LEN>().map_err(|_| InitError::Crypto)?);
    let root = RootKey::from_bytes(secret.as_slice()).map_err(|_| InitError::Crypto)?;
    let split = shamir::split(&secret, shares, threshold).map_err(|_| InitError::Crypto)?;
    let record = RootKeyRecord {
        generation: 1,
        provider: Provider::Shamir.as_str().to_owned(),
        verifier: root.verifier().to_vec(),
        threshold: Some(i64::from(threshold)),
        shares: Some(i64::from(shares)),
        share_digests: split.iter().map(Share::digest).collect(),
        created_ms: now_ms,
        ..RootKeyRecord::default()
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "initialisation runs before any request, from the operator's CLI"
    )]
    let stored = store.unaudited().init_root_key(record).await?;
    if !stored {
        return Err(InitError::AlreadyInitialised);
    }
    Ok(split)
}

/// Issues new shares for the root key of a Shamir vault (a rekey): `old` must hold at
/// least the threshold of the current shares; they rebuild the key, which is checked
/// against the verifier, and split anew. The old shares stop opening the vault: only the
/// new shares' digests are kept. The key, and so every wrapped key, stays the same.
pub async fn rekey_shamir(
    store: &Store,
    old: &[&str],
    shares: u8,
    threshold: u8,
) -> Result<Vec<Share>, InitError> {
    if threshold < 2 || threshold > shares || shares > shamir::MAX_SHARES {
        return Err(InitError::Parameters);
    }
    let record = store
        .root_key()
        .await?
        .filter(|r| r.provider == Provider::Shamir.as_str())
        .ok_or(InitError::NotShamir)?;
    let old_threshold = record
        .threshold
        .and_then(|t| u8::try_from(t).ok())
        .ok_or(InitError::Crypto)?;
    let mut given: Vec<Share> = Vec::new();
    for text in old {
        let share = Share::parse(text).map_err(|_| InitError::WrongShares)?;
        let digest = share.digest();
        if !record
            .share_digests
            .iter()
            .any(|d| strongroom_crypto::ct_eq(d, &digest))
        {
            return Err(InitError::WrongShares);
        }
        if !given.iter().any(|g| g.digest() == digest) {
            given.push(share);
        }
    }
    if given.len() < usize::from(old_threshold) {
        return Err(InitError::TooFewShares(old_threshold));
    }
    let secret = shamir::combine(old_threshold, &given).map_err(|_| InitError::WrongShares)?;
    let root = RootKey::from_bytes(secret.as_slice()).map_err(|_| InitError::Crypto)?;
    if !strongroom_crypto::ct_eq(&root.verifier(), &record.verifier) {
        return Err(InitError::WrongShares);
    }
    let split = shamir::split(&secret, shares, threshold).map_err(|_| InitError::Crypto)?;
    let old_digests = record.share_digests.clone();
    let replaced = RootKeyRecord {
        threshold: Some(i64::from(threshold)),
        shares: Some(i64::from(shares)),
        share_digests: split.iter().map(Share::digest).collect(),
        ..record
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "a rekey is an operator's offline ceremony, outside any request"
    )]
    let stored = store
        .unaudited()
        .rekey_root_key(replaced, old_digests)
        .await?;
    if !stored {
        return Err(InitError::Changed);
    }
    Ok(split)
}

/// Why [`init_shamir`] or [`rekey_shamir`] refused.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The vault already has a root key.
    #[error(
        "this vault already has a root key; to issue new shares for it, use `strongroom operator rekey`"
    )]
    AlreadyInitialised,
    /// The vault's root key is not kept by Shamir shares.
    #[error("this vault's root key is not kept by Shamir shares")]
    NotShamir,
    /// A share given is not one of the vault's, or they do not rebuild its key.
    #[error("a share given is not a share of this vault's root key")]
    WrongShares,
    /// Fewer distinct shares than the threshold.
    #[error("{0} distinct shares of the vault are needed")]
    TooFewShares(u8),
    /// The record changed while the rekey ran (another rekey or a rotation).
    #[error("the vault's root key changed meanwhile; run the rekey again")]
    Changed,
    /// Threshold and share count out of range.
    #[error(
        "shares must be between 2 and {}, and the threshold between 2 and the number of shares",
        shamir::MAX_SHARES
    )]
    Parameters,
    /// The store could not be read or written.
    #[error("database: {0}")]
    Store(#[from] strongroom_store::StoreError),
    /// Randomness or the split failed.
    #[error("the root key could not be made")]
    Crypto,
}

/// `root` as the vault uses it: a root key made by a rotation takes the digest key it
/// carries (see [`rotation`]). `record` is the vault's record of `root`, checked.
pub fn with_carried_digest(
    record: &RootKeyRecord,
    mut root: RootKey,
) -> Result<RootKey, StartError> {
    if let Some(carried) = &record.digest_wrapped {
        root.carry_digest(carried).map_err(|_| {
            StartError::Custody("the root key does not open the digest key it carries".into())
        })?;
    }
    Ok(root)
}

/// Builds the open state from a checked root key and starts it (its workers, its
/// start-up records): the state and the router that serves it. The action names the
/// audit record of the opening (`service.start`, `vault.unsealed`).
pub type Opener = Box<
    dyn Fn(RootKey, &'static str) -> BoxFuture<'static, Result<(AppState, Router), StartError>>
        + Send
        + Sync,
>;

/// The vault: open (keys in memory, the API served) or sealed.
pub struct Vault {
    store: Store,
    clock: Arc<dyn Clock>,
    opener: Opener,
    metrics: crate::metrics::Metrics,
    /// The provider in force, and the root rotation that may change it.
    rotations: Arc<rotation::Rotations>,
    open: RwLock<Option<Opened>>,
    opened: tokio::sync::watch::Sender<bool>,
    /// Serialises opening and sealing.
    turn: tokio::sync::Mutex<()>,
    collecting: tokio::sync::Mutex<Option<Collecting>>,
    sealed_router: RwLock<Option<Router>>,
}

/// What an open vault serves with.
struct Opened {
    state: AppState,
    router: Router,
}

/// Shares handed in so far, in memory only.
struct Collecting {
    started_ms: i64,
    shares: Vec<Share>,
}

/// What `/v1/sys/seal_status` says: never how many shares are in.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SealStatusView {
    /// Always `seal_status`.
    #[schema(example = "seal_status")]
    pub object: &'static str,
    /// Whether the keys are out of memory and the API answers `503 sealed`.
    pub sealed: bool,
    /// Where the root key is kept: `file`, `shamir` or `pkcs11`.
    #[schema(example = "shamir")]
    pub provider: &'static str,
    /// Shamir: how many shares open the vault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// Shamir: how many shares exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<i64>,
}

/// What `POST /v1/sys/unseal` says to the custodian who handed in a share.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UnsealView {
    /// Always `unseal`.
    #[schema(example = "unseal")]
    pub object: &'static str,
    /// Whether the vault is still sealed.
    pub sealed: bool,
    /// Shares in so far (0 once open).
    pub progress: u8,
    /// Shares needed.
    pub threshold: u8,
}

impl Vault {
    pub(crate) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        opener: Opener,
        provider: Provider,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            opener,
            metrics: crate::metrics::Metrics::default(),
            rotations: rotation::Rotations::new(provider),
            open: RwLock::new(None),
            opened: tokio::sync::watch::channel(false).0,
            turn: tokio::sync::Mutex::new(()),
            collecting: tokio::sync::Mutex::new(None),
            sealed_router: RwLock::new(None),
        })
    }

    /// The open state, or `None` while sealed.
    pub fn state(&self) -> Option<AppState> {
        self.open
            .read()
            .ok()
            .and_then(|o| o.as_ref().map(|o| o.state.clone()))
    }

    /// Whether the vault is sealed.
    pub fn is_sealed(&self) -> bool {
        self.open.read().map(|o| o.is_none()).unwrap_or(true)
    }

    /// Waits until the vault is open and returns its state.
    pub async fn opened(&self) -> AppState {
        let mut rx = self.opened.subscribe();
        loop {
            if let Some(s) = self.state() {
                return s;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The router that serves a request now.
    pub(crate) fn router(&self) -> Option<Router> {
        match self.open.read() {
            Ok(o) => match o.as_ref() {
                Some(o) => Some(o.router.clone()),
                None => self.sealed_router.read().ok().and_then(|r| r.clone()),
            },
            Err(_) => None,
        }
    }

    pub(crate) fn set_sealed_router(&self, router: Router) {
        if let Ok(mut r) = self.sealed_router.write() {
            *r = Some(router);
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Where the root key is kept.
    pub fn provider(&self) -> Provider {
        self.rotations.provider()
    }

    /// Starts a root rotation (see [`rotation`]), or takes up an interrupted one; the
    /// answer comes at once and the keys move in the background.
    pub async fn rotate_root(
        &self,
        req: rotation::RotateRoot,
    ) -> ApiResult<rotation::RootRotationView> {
        let state = self.state().ok_or(codes::SEALED)?;
        self.rotations.start(&state, req).await
    }

    /// The root rotation this node runs or last ran, or one pending in the store.
    pub async fn rotation(&self) -> ApiResult<Option<rotation::RootRotationView>> {
        self.rotations.status(&self.store).await
    }

    /// Opens the vault with `root`: checks it against the store's record (recording it
    /// first if the store has none and the provider is not Shamir), then builds the
    /// state, starts the workers and serves the API.
    pub(crate) async fn open(&self, root: RootKey, action: &'static str) -> Result<(), StartError> {
        let _turn = self.turn.lock().await;
        if !self.is_sealed() {
            return Ok(());
        }
        let root = self.check_root(root).await?;
        let (state, router) = (self.opener)(root, action).await?;
        if let Ok(mut o) = self.open.write() {
            *o = Some(Opened { state, router });
        }
        self.opened.send_replace(true);
        Ok(())
    }

    /// Seals: the open state leaves memory, its workers stop, and every route answers
    /// `503 sealed` until the vault opens again. `false` if it was sealed already.
    pub async fn seal(&self) -> bool {
        let _turn = self.turn.lock().await;
        let taken = self.open.write().ok().and_then(|mut o| o.take());
        self.opened.send_replace(false);
        match taken {
            Some(o) => {
                o.state.stop_workers();
                let now = self.now_ms();
                if let Err(e) =
                    audit::system(&self.store, &self.metrics, now, "vault.sealed", "").await
                {
                    tracing::error!(code = e.code, "could not record the seal");
                }
                tracing::warn!("vault sealed: keys dropped from memory");
                true
            }
            None => false,
        }
    }

    /// Takes the open state out for a shutdown: what the stop still has to write.
    pub(crate) fn close(&self) -> Option<AppState> {
        let taken = self.open.write().ok().and_then(|mut o| o.take());
        taken.map(|o| {
            o.state.stop_workers();
            o.state
        })
    }

    /// What `/v1/sys/seal_status` says.
    pub async fn status(&self) -> ApiResult<SealStatusView> {
        let record = self.store.root_key().await?;
        Ok(SealStatusView {
            object: "seal_status",
            sealed: self.is_sealed(),
            provider: self.provider().as_str(),
            threshold: record.as_ref().and_then(|r| r.threshold),
            shares: record.as_ref().and_then(|r| r.shares),
        })
    }

    /// Takes one custodian's share. With the threshold reached, rebuilds the root key,
    /// checks it and opens. A malformed share, or one that is not a share of this
    /// vault's key, is `share_invalid`; one given before, `share_duplicate`; neither
    /// says how many are in.
    pub async fn unseal(&self, text: &str) -> ApiResult<UnsealView> {
        let record = self
            .store
            .root_key()
            .await?
            .filter(|r| r.provider == Provider::Shamir.as_str());
        let Some(record) = record else {
            return Err(if self.is_sealed() {
                codes::UNSEAL_BY_RESTART
            } else {
                codes::CONFLICT
            });
        };
        let threshold = record
            .threshold
            .and_then(|t| u8::try_from(t).ok())
            .ok_or_else(|| ApiError::internal(&"stored threshold out of range"))?;
        if !self.is_sealed() {
            return Ok(UnsealView {
                object: "unseal",
                sealed: false,
                progress: 0,
                threshold,
            });
        }
        let share = Share::parse(text).map_err(|_| codes::SHARE_INVALID)?;
        let digest = share.digest();
        if !record
            .share_digests
            .iter()
            .any(|d| strongroom_crypto::ct_eq(d, &digest))
        {
            self.refused("share_invalid").await;
            return Err(codes::SHARE_INVALID);
        }
        let mut collecting = self.collecting.lock().await;
        let now = self.now_ms();
        let c = match collecting.take() {
            Some(c) if now.saturating_sub(c.started_ms) < COLLECT_FOR_MS => c,
            _ => Collecting {
                started_ms: now,
                shares: Vec::new(),
            },
        };
        let c = collecting.insert(c);
        if c.shares.iter().any(|s| s.digest() == digest) {
            return Err(codes::SHARE_DUPLICATE);
        }
        c.shares.push(share);
        let progress = u8::try_from(c.shares.len()).unwrap_or(u8::MAX);
        if progress < threshold {
            return Ok(UnsealView {
                object: "unseal",
                sealed: true,
                progress,
                threshold,
            });
        }
        // Enough are in: whatever happens next, they leave memory.
        let shares = collecting.take().map(|c| c.shares).unwrap_or_default();
        drop(collecting);
        let secret = shamir::combine(threshold, &shares).map_err(|_| codes::SHARE_INVALID)?;
        drop(shares);
        let root = RootKey::from_bytes(secret.as_slice()).map_err(ApiError::from)?;
        drop(secret);
        if !strongroom_crypto::ct_eq(&root.verifier(), &record.verifier) {
            self.refused("shares_mismatch").await;
            return Err(codes::SHARE_INVALID);
        }
        match self.open(root, "vault.unsealed").await {
            Ok(()) => Ok(UnsealView {
                object: "unseal",
                sealed: false,
                progress: 0,
                threshold,
            }),
            Err(e) => {
                tracing::error!(error = %e, "the vault could not open after unseal");
                Err(codes::SERVICE_UNAVAILABLE)
            }
        }
    }

    /// Records a refused share (never the share).
    async fn refused(&self, why: &str) {
        tracing::warn!(reason = why, "unseal share refused");
        let now = self.now_ms();
        if let Err(e) =
            audit::system(&self.store, &self.metrics, now, "vault.unseal_refused", "").await
        {
            tracing::error!(code = e.code, "could not record a refused unseal share");
        }
    }

    /// Refuses a root key the store does not know, or that another provider holds;
    /// records the first key of a vault that opens from a file or an HSM. A root key
    /// after the first takes the digest key it carries; one whose rotation is still
    /// running takes up the next key too (see [`rotation`]).
    async fn check_root(&self, mut root: RootKey) -> Result<RootKey, StartError> {
        let provider = self.provider();
        let verifier = root.verifier();
        let record = match self.store.root_key().await? {
            Some(r) => r,
            None if provider == Provider::Shamir => {
                return Err(StartError::Custody(
                    "this vault has no root key yet: run `strongroom operator init`".into(),
                ));
            }
            None => {
                let record = RootKeyRecord {
                    generation: 1,
                    provider: provider.as_str().to_owned(),
                    verifier: verifier.to_vec(),
                    created_ms: self.now_ms(),
                    ..RootKeyRecord::default()
                };
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the root key's first record is written at start, before any request"
                )]
                let stored = self.store.unaudited().init_root_key(record).await?;
                if stored {
                    return Ok(root);
                }
                // Another node recorded first: check against its record.
                self.store.root_key().await?.ok_or_else(|| {
                    StartError::Custody("the root key record could not be read".into())
                })?
            }
        };
        if record.provider != provider.as_str() {
            return Err(StartError::Custody(format!(
                "this vault's root key is kept by the `{}` provider, not `{}`",
                record.provider,
                provider.as_str()
            )));
        }
        if !strongroom_crypto::ct_eq(&record.verifier, &verifier) {
            return rotation::finish_at_start(&self.store, root, provider, self.now_ms()).await;
        }
        root = with_carried_digest(&record, root)?;
        rotation::follow(&self.store, &root)
            .await
            .map_err(|e| StartError::Custody(format!("a root rotation is running: {e}")))?;
        Ok(root)
    }
}
