//! Bearer tokens: issuing JWTs from an API key, verifying them on every request (with a
//! bounded cache of verified tokens), the JWT signing keys and their rotation, and
//! revoke-all for incidents.
//!
//! Key schedule. Every key generation has an `active_from` time. The signer at time `t`
//! is the newest generation with `active_from <= t`. A rotation inserts the next
//! generation with `active_from = now + prepublish`, so it is in the JWKS before it
//! signs anything. A generation stays published (and accepted) until its successor has
//! been active for a whole token lifetime plus the leeway: by then every token it
//! signed has expired. Nothing changes state on a timer, so every node computes the
//! same schedule from the same rows.

use crate::auth::Principal;
use crate::cache::{Cache, CacheSync};
use crate::service::List;
use crate::service::{Result, ServiceError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use strongroom_core::{Clock, KeyKind, Mode, Scopes};
use strongroom_crypto::jwt::{
    Claims, Expectations, JwtAlg, JwtError, JwtPrivateKey, JwtSigner, JwtVerifier, token_digest,
};
use strongroom_crypto::{RootKey, random};
use strongroom_store::{ApiKeyRecord, AuditScope, JwtKeyRecord, Store, TokenStore};

/// Event written when every key of an account is revoked at once.
pub const KEYS_REVOKED_EVENT: crate::service::events::EventType =
    crate::service::events::EventType::AccountKeysRevoked;

pub use crate::config::TokenConfig;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A public key that signs bearer tokens (RFC 7517 JWK): `kty`, `crv` and `x` for
/// Ed25519 (`OKP`), `n` and `e` for RSA.
#[derive(Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JwtJwk {
    /// `OKP` (Ed25519) or `RSA`.
    pub kty: String,
    /// `Ed25519` (OKP keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The public key, base64url (OKP keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The modulus, base64url (RSA keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// The exponent, base64url (RSA keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// The `kid` of the tokens it signs.
    pub kid: String,
    /// `EdDSA` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The JWK Set of `/.well-known/jwks.json`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JwksView {
    /// Every key that is pending, signing, or may still have unexpired tokens.
    pub keys: Vec<JwtJwk>,
}

/// The state of a JWT signing key generation.
#[derive(Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JwtKeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing.
    Active,
    /// Published until the tokens it signed have expired.
    Retiring,
    /// No longer published.
    Expired,
}

/// A JWT signing key generation, for operators.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JwtKeyView {
    /// Always `jwt_key`.
    pub object: &'static str,
    /// The key id.
    pub kid: String,
    /// `EdDSA` or `RS256`.
    pub alg: String,
    /// Generation number, from 1.
    pub generation: i64,
    /// Its state now.
    pub state: JwtKeyState,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds: when it signs (or signed) first.
    pub signs_from: i64,
    /// Unix seconds: when it leaves the JWKS; null while it has no successor.
    pub published_until: Option<i64>,
}

/// An access token, as `POST /v1/auth/token` answers it (RFC 6749 §5.1).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccessTokenView {
    /// The compact JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its scopes, space-separated.
    pub scope: String,
}

impl From<IssuedToken> for AccessTokenView {
    fn from(t: IssuedToken) -> Self {
        Self {
            access_token: t.token.expose().clone(),
            token_type: "Bearer",
            expires_in: t.expires_in,
            scope: t.scope,
        }
    }
}

/// What revoke-all did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct KeysRevokedView {
    /// Always `account`.
    pub object: &'static str,
    /// `acct_…`
    pub id: String,
    /// How many keys were revoked (keys revoked before are not counted).
    pub revoked_keys: i64,
}

/// The object of the `account.keys_revoked` event.
#[derive(serde::Serialize)]
struct KeysRevokedEvent<'a> {
    id: &'a str,
    object: &'static str,
    keys_revoked_at: i64,
}

/// One loaded key generation.
struct LoadedKey {
    kid: String,
    generation: i64,
    alg: String,
    jwk: JwtJwk,
    created_ms: i64,
    active_from_ms: i64,
    /// When the next generation starts signing (None: no successor).
    superseded_ms: Option<i64>,
    signer: Option<Arc<JwtSigner>>,
}

/// Every key generation, as loaded from the store.
struct KeySet {
    loaded_ms: i64,
    keys: Vec<LoadedKey>,
    verifier: JwtVerifier,
}

impl KeySet {
    fn published_until(&self, k: &LoadedKey, lifetime_ms: i64, leeway_ms: i64) -> Option<i64> {
        k.superseded_ms
            .map(|s| s.saturating_add(lifetime_ms).saturating_add(leeway_ms))
    }

    fn signer(&self, now_ms: i64) -> Option<&LoadedKey> {
        self.keys
            .iter()
            .filter(|k| k.active_from_ms <= now_ms && k.signer.is_some())
            .max_by_key(|k| k.generation)
    }
}

/// A verified token, cached by digest until it expires.
struct Verified {
    claims: Arc<Claims>,
    kid: String,
}

const VERIFIED_MAX: usize = 50_000;
const KEY_IDS_MAX: usize = 10_000;

/// The API-key cache by secret digest, which a revoke-all must empty.
pub(crate) type ApiKeyCache = Cache<[u8; 32], Arc<ApiKeyRecord>>;

/// The token service, held in `AppState`. It reads signing keys and API keys from the
/// store, unwraps signing keys with the root key, and keeps its caches honest with the
/// shared [`CacheSync`].
pub struct Tokens {
    store: Store,
    root: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    sync: Arc<CacheSync>,
    api_keys: Arc<ApiKeyCache>,
    config: TokenConfig,
    keyset_ttl_ms: i64,
    keys: RwLock<Option<Arc<KeySet>>>,
    verified: RwLock<HashMap<[u8; 32], Verified>>,
    key_ids: Cache<String, Arc<ApiKeyRecord>>,
    last_unknown_kid_reload_ms: AtomicI64,
}

impl Tokens {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        root: Arc<RootKey>,
        clock: Arc<dyn Clock>,
        sync: Arc<CacheSync>,
        api_keys: Arc<ApiKeyCache>,
        config: TokenConfig,
        keyset_ttl: Duration,
        key_ttl: Duration,
    ) -> Self {
        Self {
            store,
            root,
            clock,
            sync,
            api_keys,
            config,
            keyset_ttl_ms: ms(keyset_ttl),
            keys: RwLock::new(None),
            verified: RwLock::new(HashMap::new()),
            key_ids: Cache::new(key_ttl, KEY_IDS_MAX),
            last_unknown_kid_reload_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    fn expectations(&self) -> Expectations {
        Expectations {
            issuer: self.config.issuer.clone(),
            audience: self.config.audience.clone(),
            leeway_s: i64::try_from(self.config.leeway.as_secs()).unwrap_or(0),
        }
    }

    /// Forgets a cached key record (after it was revoked on this node).
    pub fn forget_key(&self, key_id: &str) {
        self.key_ids.forget(&self.sync, key_id);
    }

    /// Forgets every cached key record, by id and by secret.
    pub fn clear_keys(&self) {
        self.api_keys.clear(&self.sync);
        self.key_ids.clear(&self.sync);
    }

    /// Forgets the signing key set (another node may have rotated it); the next use
    /// reloads it.
    pub fn clear_keyset(&self) {
        if let Ok(mut slot) = self.keys.write() {
            *slot = None;
        }
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<Arc<ApiKeyRecord>>> {
        let (now, sync) = (self.clock.now_ms(), self.sync.as_ref());
        if let Some(rec) = self.key_ids.get(sync, id, now) {
            return Ok(Some(rec));
        }
        let epoch = self.key_ids.epoch(sync);
        let Some(rec) = self.store.api_key_by_id(id).await? else {
            return Ok(None);
        };
        let rec = Arc::new(rec);
        self.key_ids
            .put(sync, id.to_owned(), rec.clone(), now, epoch);
        Ok(Some(rec))
    }

    /// Loads every key generation from the store and replaces the cached set.
    async fn reload(&self) -> Result<Arc<KeySet>> {
        let rows = self.store.jwt_keys().await?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut verifier = JwtVerifier::new();
        for (i, r) in rows.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(&r.public_jwk)
                .map_err(|_| ServiceError::internal("stored JWK is not JSON"))?;
            verifier.add_jwk(&value)?;
            let jwk: JwtJwk = serde_json::from_value(value)
                .map_err(|_| ServiceError::internal("stored JWK lacks a member"))?;
            let signer = if r.wrapped.is_empty() {
                None
            } else {
                let alg = JwtAlg::parse(&r.alg)
                    .ok_or_else(|| ServiceError::internal("stored JWT key has an unknown alg"))?;
                let pkcs8 = self
                    .root
                    .unwrap_bytes(&r.wrapped, &wrap_context(&r.kid, r.generation, alg))?;
                let key = JwtPrivateKey::from_pkcs8(alg, &pkcs8)?;
                Some(Arc::new(key.signer(&r.kid)?))
            };
            let superseded_ms = rows
                .iter()
                .skip(i.saturating_add(1))
                .map(|n| n.active_from_ms)
                .min();
            keys.push(LoadedKey {
                kid: r.kid.clone(),
                generation: r.generation,
                alg: r.alg.clone(),
                jwk,
                created_ms: r.created_ms,
                active_from_ms: r.active_from_ms,
                superseded_ms,
                signer,
            });
        }
        let set = Arc::new(KeySet {
            loaded_ms: self.clock.now_ms(),
            keys,
            verifier,
        });
        if let Ok(mut slot) = self.keys.write() {
            *slot = Some(set.clone());
        }
        Ok(set)
    }

    /// The key set, reloaded when older than the keyring TTL (so a rotation made on
    /// another node is seen well within the pre-publication period).
    async fn keyset(&self) -> Result<Arc<KeySet>> {
        let cached = self.keys.read().ok().and_then(|s| s.clone());
        match cached {
            Some(set) if self.clock.now_ms().saturating_sub(set.loaded_ms) < self.keyset_ttl_ms => {
                Ok(set)
            }
            _ => self.reload().await,
        }
    }

    /// At startup: creates the first signing key if there is none, and rotates to the
    /// configured algorithm if the newest key uses another one.
    pub async fn ensure_keys(&self) -> Result<()> {
        let set = self.reload().await?;
        let newest_alg = set.keys.last().map(|k| k.alg.clone());
        if newest_alg.as_deref() == Some(self.config.alg.as_str()) {
            return Ok(());
        }
        // At start, outside any request: the new key's write carries no record.
        match self.rotate(None).await {
            Ok(_) => Ok(()),
            // Another node did it at the same moment.
            Err(e) if e.is_conflict() => self.reload().await.map(drop),
            Err(e) => Err(e),
        }
    }

    /// Generates the next signing key. The first key signs at once; later ones after the
    /// pre-publication period. Returns the key list. The write carries `audit`, the
    /// operator's request scope; `None` only at start, outside any request.
    pub async fn rotate(&self, audit: Option<&AuditScope>) -> Result<List<JwtKeyView>> {
        let set = self.reload().await?;
        let now = self.clock.now_ms();
        let generation = set
            .keys
            .last()
            .map_or(1, |k| k.generation.saturating_add(1));
        let active_from_ms = if set.keys.is_empty() {
            now
        } else {
            now.saturating_add(ms(self.config.prepublish))
        };
        let erase_below = set.signer(now).map_or(0, |k| k.generation);
        let alg = self.config.alg;
        let kid = format!(
            "{}-{}",
            crate::events::new_id(self.clock.as_ref(), strongroom_core::IdKind::ApiKey)?
                .trim_start_matches("key_")
                .get(..12)
                .unwrap_or("k"),
            hex::encode(random::bytes::<4>()?)
        );
        let key = JwtPrivateKey::generate(alg)?;
        let record = JwtKeyRecord {
            kid: kid.clone(),
            generation,
            alg: alg.as_str().to_owned(),
            wrapped: self
                .root
                .wrap_bytes(key.expose_pkcs8(), &wrap_context(&kid, generation, alg))?,
            public_jwk: key.public_jwk(&kid)?.to_string(),
            created_ms: now,
            active_from_ms,
        };
        // A conflict (another node rotated at the same moment) is `conflict`, as every
        // store conflict is (see `error.rs`); `ensure_keys` relies on it.
        let writes = match audit {
            Some(scope) => self.store.audited(scope),
            // At start, outside any request: nothing to carry.
            #[allow(clippy::disallowed_methods)]
            None => self.store.unaudited(),
        };
        writes.insert_jwt_key(&record, erase_below).await?;
        // Seconds, not milliseconds: a 13-digit number in a log line can look like a PAN.
        let signs_from = active_from_ms.div_euclid(1000);
        tracing::info!(kid = %kid, generation, alg = alg.as_str(), signs_from, "JWT signing key created");
        self.list(true).await
    }

    /// The key list for operators: each generation's state and times.
    pub async fn list(&self, fresh: bool) -> Result<List<JwtKeyView>> {
        let set = if fresh {
            self.reload().await?
        } else {
            self.keyset().await?
        };
        let now = self.clock.now_ms();
        let lifetime = ms(self.config.lifetime);
        let leeway = ms(self.config.leeway);
        let signer = set.signer(now).map(|k| k.generation);
        let data: Vec<_> = set
            .keys
            .iter()
            .map(|k| {
                let until = set.published_until(k, lifetime, leeway);
                let st = if Some(k.generation) == signer {
                    JwtKeyState::Active
                } else if k.active_from_ms > now {
                    JwtKeyState::Pending
                } else if until.is_none_or(|u| now < u) {
                    JwtKeyState::Retiring
                } else {
                    JwtKeyState::Expired
                };
                JwtKeyView {
                    object: "jwt_key",
                    kid: k.kid.clone(),
                    alg: k.alg.clone(),
                    generation: k.generation,
                    state: st,
                    created: k.created_ms.div_euclid(1000),
                    signs_from: k.active_from_ms.div_euclid(1000),
                    published_until: until.map(|u| u.div_euclid(1000)),
                }
            })
            .collect();
        Ok(List::all(data))
    }

    /// The JWKS: every generation that is pending, signing, or may still have unexpired
    /// tokens.
    pub async fn jwks(&self) -> Result<JwksView> {
        let set = self.keyset().await?;
        let now = self.clock.now_ms();
        let (lifetime, leeway) = (ms(self.config.lifetime), ms(self.config.leeway));
        let keys: Vec<_> = set
            .keys
            .iter()
            .filter(|k| {
                set.published_until(k, lifetime, leeway)
                    .is_none_or(|u| now < u)
            })
            .map(|k| k.jwk.clone())
            .collect();
        Ok(JwksView { keys })
    }

    fn is_published(&self, set: &KeySet, kid: &str, now: i64) -> bool {
        let (lifetime, leeway) = (ms(self.config.lifetime), ms(self.config.leeway));
        set.keys.iter().any(|k| {
            k.kid == kid
                && set
                    .published_until(k, lifetime, leeway)
                    .is_none_or(|u| now < u)
        })
    }

    /// Issues an access token for an API-key principal, with its scopes or the
    /// requested subset.
    pub async fn issue(&self, p: &Principal, requested: Option<Scopes>) -> Result<IssuedToken> {
        let scopes = p.token_scopes(requested)?;
        let now = self.clock.now_ms();
        let set = self.keyset().await?;
        let signer = match set.signer(now) {
            Some(k) => k.signer.clone(),
            None => None,
        }
        .ok_or_else(|| ServiceError::internal("no JWT signing key is active"))?;
        let now_s = now.div_euclid(1000);
        let lifetime_s = i64::try_from(self.config.lifetime.as_secs()).unwrap_or(3600);
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: p.key_id.clone(),
            acct: p.account_id.clone(),
            mode: p.mode.as_str().to_owned(),
            scope: scopes.to_storage(),
            iat: now_s,
            nbf: now_s,
            exp: now_s.saturating_add(lifetime_s),
            jti: format!("tok_{}", random::base62(24)?.as_str()),
        };
        let token = signer.sign(&claims)?;
        Ok(IssuedToken {
            token: strongroom_core::Sensitive::new(token),
            expires_in: lifetime_s,
            scope: claims.scope,
        })
    }

    /// Signs arbitrary claims with the current key (operators' tooling and tests).
    pub async fn sign_claims(&self, claims: &Claims) -> Result<String> {
        let set = self.keyset().await?;
        let signer = set
            .signer(self.clock.now_ms())
            .and_then(|k| k.signer.clone())
            .ok_or_else(|| ServiceError::internal("no JWT signing key is active"))?;
        Ok(signer.sign(claims)?)
    }

    async fn verify(&self, token: &str) -> Result<Arc<Claims>> {
        let now = self.clock.now_ms();
        let now_s = now.div_euclid(1000);
        let leeway_s = i64::try_from(self.config.leeway.as_secs()).unwrap_or(0);
        let digest = token_digest(token);
        let mut set = self.keyset().await?;
        if let Ok(m) = self.verified.read()
            && let Some(v) = m.get(&digest)
        {
            if now_s >= v.claims.exp.saturating_add(leeway_s) {
                return Err(ServiceError::TokenExpired);
            }
            if self.is_published(&set, &v.kid, now) {
                return Ok(v.claims.clone());
            }
        }
        let exp = self.expectations();
        let mut result = set.verifier.verify(token, &exp, now_s);
        if result == Err(JwtError::UnknownKey) {
            // Perhaps another node rotated and we have not reloaded yet; at most once a
            // second, so unknown kids cannot be used to hammer the store.
            let last = self.last_unknown_kid_reload_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000 {
                self.last_unknown_kid_reload_ms
                    .store(now, Ordering::Relaxed);
                set = self.reload().await?;
                result = set.verifier.verify(token, &exp, now_s);
            }
        }
        let claims = match result {
            Ok(c) => Arc::new(c),
            Err(JwtError::Expired) => return Err(ServiceError::TokenExpired),
            Err(JwtError::Invalid | JwtError::UnknownKey) => {
                return Err(ServiceError::TokenInvalid);
            }
        };
        let kid = jsonwebtoken_kid(token).unwrap_or_default();
        if !self.is_published(&set, &kid, now) {
            return Err(ServiceError::TokenInvalid);
        }
        if let Ok(mut m) = self.verified.write() {
            if m.len() >= VERIFIED_MAX {
                // Bounded: drop what has expired, and start over if that was not enough.
                m.retain(|_, v| now_s < v.claims.exp.saturating_add(leeway_s));
                if m.len() >= VERIFIED_MAX {
                    m.clear();
                }
            }
            m.insert(
                digest,
                Verified {
                    claims: claims.clone(),
                    kid,
                },
            );
        }
        Ok(claims)
    }

    /// Resolves a bearer JWT to a principal: signature, algorithm, issuer, audience and
    /// times (cached until expiry), then the issuing key's current state (revocation is
    /// seen on the next request). The principal acts in the request whose audit scope is
    /// `audit`.
    pub async fn authenticate(&self, token: &str, audit: Arc<AuditScope>) -> Result<Principal> {
        let claims = self.verify(token).await?;
        let key = self
            .key_by_id(&claims.sub)
            .await?
            .ok_or(ServiceError::TokenInvalid)?;
        if key.revoked_ms.is_some() {
            return Err(ServiceError::TokenRevoked);
        }
        let mode = Mode::parse(&claims.mode).ok_or(ServiceError::TokenInvalid)?;
        let account_id = key.account_id.clone().ok_or(ServiceError::TokenInvalid)?;
        let kind = KeyKind::parse(&key.kind).ok_or(ServiceError::TokenInvalid)?;
        if account_id != claims.acct || mode != key.mode {
            return Err(ServiceError::TokenInvalid);
        }
        let scopes = crate::auth::token_grants(kind, &key.scopes, &claims.scope);
        Ok(Principal {
            key_id: key.id.clone(),
            account_id,
            mode,
            kind,
            scopes,
            token_id: Some(claims.jti.clone()),
            attestation: None,
            application: None,
            audit,
        })
    }

    /// Revokes every key of an account (and so every token issued from them) and
    /// writes `account.keys_revoked` in both modes, in one transaction. Returns how many
    /// keys it revoked. The write carries `audit`, the operator's request scope.
    pub async fn revoke_all(
        &self,
        audit: &AuditScope,
        account_id: &str,
    ) -> Result<KeysRevokedView> {
        let now = self.clock.now_ms();
        let object = KeysRevokedEvent {
            id: account_id,
            object: "account",
            keys_revoked_at: now.div_euclid(1000),
        };
        let events = Mode::ALL
            .into_iter()
            .map(|m| {
                crate::events::event_of(
                    self.clock.as_ref(),
                    account_id,
                    m,
                    KEYS_REVOKED_EVENT,
                    &object,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let n = self
            .store
            .audited(audit)
            .revoke_all_api_keys(account_id, now, &events)
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.clear_keys();
        tracing::warn!(account = %account_id, revoked = n, "every API key of the account revoked");
        Ok(KeysRevokedView {
            object: "account",
            id: account_id.to_owned(),
            revoked_keys: n,
        })
    }
}

/// The `kid` of a token's header (already verified by the caller).
fn jsonwebtoken_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("kid")?.as_str().map(str::to_owned)
}

/// The wrap context binds a wrapped JWT key to its kid, generation and algorithm.
pub fn wrap_context(kid: &str, generation: i64, alg: JwtAlg) -> String {
    format!("strongroom/jwtkey/v1|{kid}|{generation}|{}", alg.as_str())
}

/// A freshly issued access token.
pub struct IssuedToken {
    /// The compact JWT.
    pub token: strongroom_core::Sensitive<String>,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its scopes, space-separated.
    pub scope: String,
}
