//! Accounts, API keys and admin keys: creating, issuing, revoking and looking keys up
//! (through a bounded cache), and the views the admin API shows of them.

use crate::audit::Origin;
use crate::cache::CacheSync;
use crate::keyring::Keyring;
use crate::service::events::EventType;
use crate::service::tokens::{ApiKeyCache, Tokens};
use crate::service::{ModeName, object_name, secs};
use crate::service::{Result, ServiceError};
use serde::Serialize;
use std::sync::Arc;
use strongroom_core::{Clock, DomainError, IdKind, KeyKind, Mode, Scopes, Sensitive};
use strongroom_crypto::{RootKey, random};
use strongroom_store::{AccountRecord, ApiKeyRecord, ControlStore, Store, VaultStore};
use utoipa::ToSchema;

pub use crate::auth::{ADMIN_KIND, ADMIN_PREFIX, API_KEY_DIGEST};

/// What kind of key to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeyKind {
    /// An account key of this kind.
    Account(KeyKind),
    /// An operator key for `/v1/admin/`.
    Admin,
}

/// A freshly issued key: the only moment its secret exists outside the client.
pub struct IssuedKey {
    /// The stored record (digest only).
    pub record: ApiKeyRecord,
    /// The secret, to show once.
    pub secret: Sensitive<String>,
}

/// Account and key operations, over the parts of the state they use (built by
/// `AppState::accounts`): the store, root key and clock, the API-key cache shared with
/// the gateway and the token service, and the components a key change must tell.
pub struct Accounts<'a> {
    /// The store.
    pub(crate) store: &'a Store,
    /// Digests API secrets.
    pub(crate) root: &'a RootKey,
    /// Ids and timestamps.
    pub(crate) clock: &'a dyn Clock,
    /// The generation cached rows must match.
    pub(crate) sync: &'a CacheSync,
    /// API keys by secret digest.
    pub(crate) keys: &'a ApiKeyCache,
    /// Makes a new account's first data keys.
    pub(crate) keyring: &'a Keyring,
    /// Forgets a revoked key's cached record.
    pub(crate) tokens: &'a Tokens,
}

impl Accounts<'_> {
    fn new_id(&self, kind: IdKind) -> Result<String> {
        crate::events::new_id(self.clock, kind)
    }

    /// The account, after checking the id's shape (a malformed id is refused as
    /// [`strongroom_core::parse_id`] refuses it; an unknown one is `not_found`).
    pub async fn get(&self, id: &str) -> Result<AccountRecord> {
        strongroom_core::parse_id(IdKind::Account, id)?;
        self.store
            .get_account(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Creates an account and its first data keys. Its record is `origin`'s.
    pub async fn create(
        &self,
        origin: Origin<'_>,
        name: &str,
        otp_delivery_url: Option<String>,
    ) -> Result<AccountRecord> {
        let account = AccountRecord {
            id: self.new_id(IdKind::Account)?,
            name: name.to_owned(),
            otp_delivery_url,
            created_ms: self.clock.now_ms(),
        };
        let keys = self.keyring.initial_keys(&account.id)?;
        let audit = origin.scope(self.clock, "account.create");
        crate::audit::set_resource(&audit, "account", &account.id);
        self.store
            .audited(&audit)
            .create_account(&account, &keys, &[])
            .await?;
        Ok(account)
    }

    /// Issues a key. Account keys need an existing account; admin keys have none. Its
    /// record is `origin`'s.
    pub async fn create_key(
        &self,
        origin: Origin<'_>,
        account_id: Option<&str>,
        kind: NewKeyKind,
        mode: Mode,
        scopes: Option<Scopes>,
    ) -> Result<IssuedKey> {
        self.create_named_key(origin, account_id, kind, mode, scopes, None)
            .await
    }

    /// An admin key for a named custodian (`name`: 1 to 100 printable characters).
    pub async fn create_admin_key(
        &self,
        origin: Origin<'_>,
        name: Option<&str>,
    ) -> Result<IssuedKey> {
        let name = name.map(crate::service::display_name).transpose()?;
        self.create_named_key(origin, None, NewKeyKind::Admin, Mode::Live, None, name)
            .await
    }

    async fn create_named_key(
        &self,
        origin: Origin<'_>,
        account_id: Option<&str>,
        kind: NewKeyKind,
        mode: Mode,
        scopes: Option<Scopes>,
        name: Option<String>,
    ) -> Result<IssuedKey> {
        let (prefix, scopes, kind_name, mode) = match kind {
            NewKeyKind::Account(k) => {
                let scopes = k.effective_scopes(scopes)?;
                (k.secret_prefix(mode), scopes.to_storage(), k.as_str(), mode)
            }
            NewKeyKind::Admin => {
                if scopes.is_some() {
                    return Err(DomainError::ScopesNotAllowed.into());
                }
                (ADMIN_PREFIX, String::new(), ADMIN_KIND, Mode::Live)
            }
        };
        if let Some(acct) = account_id {
            self.store
                .get_account(acct)
                .await?
                .ok_or(ServiceError::NotFound)?;
        }
        let body = random::base62(40)?;
        let secret = Sensitive::new(format!("{prefix}{}", body.as_str()));
        let record = ApiKeyRecord {
            id: self.new_id(IdKind::ApiKey)?,
            account_id: account_id.map(str::to_owned),
            kind: kind_name.to_owned(),
            mode,
            prefix: secret.expose().chars().take(prefix.len() + 4).collect(),
            digest: self
                .root
                .digest(API_KEY_DIGEST, secret.expose().as_bytes())
                .to_vec(),
            scopes,
            created_ms: self.clock.now_ms(),
            revoked_ms: None,
            name,
        };
        let events = match account_id {
            Some(acct) => vec![crate::events::event_of(
                self.clock,
                acct,
                mode,
                EventType::ApiKeyCreated,
                &ApiKeyView::from(&record),
            )?],
            None => vec![],
        };
        let audit = origin.scope(self.clock, "api_key.create");
        crate::audit::set_resource(&audit, "api_key", &record.id);
        self.store
            .audited(&audit)
            .insert_api_key(&record, &events)
            .await?;
        Ok(IssuedKey { record, secret })
    }

    /// Revokes a key; effective on the next request. Its record is `origin`'s.
    pub async fn revoke_key(
        &self,
        origin: Origin<'_>,
        account_id: Option<&str>,
        key_id: &str,
    ) -> Result<ApiKeyRecord> {
        let now = self.clock.now_ms();
        let existing = self.store.list_api_keys(account_id).await?;
        let key = existing
            .iter()
            .find(|k| k.id == key_id)
            .ok_or(ServiceError::NotFound)?;
        let events = match account_id {
            Some(acct) => vec![crate::events::event_of(
                self.clock,
                acct,
                key.mode,
                EventType::ApiKeyRevoked,
                &ApiKeyView::from(key),
            )?],
            None => vec![],
        };
        let audit = origin.scope(self.clock, "api_key.revoke");
        crate::audit::set_resource(&audit, "api_key", key_id);
        let revoked = self
            .store
            .audited(&audit)
            .revoke_api_key(account_id, key_id, now, &events)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if let Ok(d) = <[u8; 32]>::try_from(revoked.digest.as_slice()) {
            self.keys.forget(self.sync, &d);
        }
        self.tokens.forget_key(key_id);
        Ok(revoked)
    }

    /// Looks a presented secret up by its keyed digest, through the bounded cache. When
    /// nothing is cached (a database shared by several nodes), the key's account controls
    /// and allowlist come in the same read, for the gateway to use for this request.
    pub async fn lookup_key(
        &self,
        secret: &str,
    ) -> Result<Option<(Arc<ApiKeyRecord>, Option<crate::gateway::Prefetched>)>> {
        let digest = self.root.digest(API_KEY_DIGEST, secret.as_bytes());
        let now = self.clock.now_ms();
        let (cache, sync) = (self.keys, self.sync);
        if let Some(hit) = cache.get(sync, &digest, now) {
            return Ok(Some((hit, None)));
        }
        // On a miss: one round trip instead of three (key, controls, allowlist).
        let epoch = cache.epoch(sync);
        let found = self.store.key_with_controls(&digest).await?;
        Ok(found.map(|f| {
            let pre = f
                .controls
                .map(|c| crate::gateway::Prefetched::new(c, &f.key_allowlist));
            let key = Arc::new(f.key);
            cache.put(sync, digest, key.clone(), now, epoch);
            (key, pre)
        }))
    }

    /// Forgets cached API keys (after an incident, or when another node may have revoked).
    pub fn clear_key_cache(&self) {
        self.tokens.clear_keys();
    }

    /// The admin key `key_id`, or `not_found` (an account key is not an admin key).
    pub async fn admin_key(&self, key_id: &str) -> Result<ApiKeyRecord> {
        strongroom_core::parse_id(IdKind::ApiKey, key_id)?;
        self.store
            .list_api_keys(None)
            .await?
            .into_iter()
            .find(|k| k.id == key_id && k.kind == ADMIN_KIND)
            .ok_or(ServiceError::NotFound)
    }

    /// The view of an admin key, with its allowlist read from the store.
    pub async fn admin_key_view(&self, key: &ApiKeyRecord) -> Result<AdminKeyView> {
        let list = self.store.key_ip_allowlist(&key.id).await?;
        Ok(AdminKeyView {
            key: ApiKeyView::from(key),
            ip_allowlist: list,
        })
    }

    /// The account's view, its per-credential rate limit read from its controls
    /// (without the OTP signing secret, which the admin routes add where they show it).
    pub async fn view(&self, acct: &AccountRecord) -> Result<AccountView> {
        let controls = self.store.account_controls(&acct.id).await?;
        Ok(AccountView::new(acct, controls.rate_limit_per_minute)
            .with_attestation(controls.require_attestation))
    }
}

// ---- views ----

object_name!(
    /// `account`.
    AccountObject = "account"
);
object_name!(
    /// `api_key`.
    ApiKeyObject = "api_key"
);

/// A URL with any `user:password@` taken out: a row stored before credentials were
/// refused is never echoed with them.
fn without_userinfo(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which these do not.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// An account, as operators see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    /// `acct_…`
    #[schema(pattern = "^acct_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `account`.
    pub object: AccountObject,
    /// Display name.
    pub name: String,
    /// Where live-mode OTP codes are delivered, if anywhere.
    #[schema(required = true)]
    pub otp_delivery_url: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// Per-credential rate limit, requests per minute; `null`: the server's default.
    #[schema(required = true)]
    pub rate_limit_per_minute: Option<i64>,
    /// The step-ups that need a device attestation (docs/device-integrity.md).
    #[schema(value_type = Vec<StepUpName>)]
    pub require_attestation: Vec<String>,
    /// When an OTP delivery URL is set, in the responses of create, update and rotate:
    /// the secret (`whsec_…`) OTP deliveries are signed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_signing_secret: Option<String>,
    /// With `otp_signing_secret`: its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_signing_secret_version: Option<i64>,
    /// With `otp_signing_secret`: until when (Unix seconds) the previous secret also
    /// signs, or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub otp_signing_secret_rotation_ends_at: Option<Option<i64>>,
}

impl AccountView {
    /// The view of an account, without its OTP signing secret.
    /// The view with the step-ups that need an attestation.
    pub fn with_attestation(self, require_attestation: Vec<String>) -> Self {
        Self {
            require_attestation,
            ..self
        }
    }

    pub fn new(a: &AccountRecord, rate_limit_per_minute: Option<i64>) -> Self {
        Self {
            id: a.id.clone(),
            object: AccountObject::Value,
            name: a.name.clone(),
            otp_delivery_url: a.otp_delivery_url.as_deref().map(without_userinfo),
            created: secs(a.created_ms),
            rate_limit_per_minute,
            require_attestation: Vec::new(),
            otp_signing_secret: None,
            otp_signing_secret_version: None,
            otp_signing_secret_rotation_ends_at: None,
        }
    }
}

/// `secret`, `publishable`, `restricted` or `admin`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyKind {
    /// A secret key.
    Secret,
    /// A publishable key.
    Publishable,
    /// A restricted key.
    Restricted,
    /// An operator key.
    Admin,
}

/// An API key (never its secret or digest).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// `key_…`
    #[schema(pattern = "^key_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `api_key`.
    pub object: ApiKeyObject,
    /// The account (`null` for admin keys).
    #[schema(required = true)]
    pub account: Option<String>,
    /// `secret`, `publishable`, `restricted` or `admin`.
    #[schema(value_type = ApiKeyKind)]
    pub kind: String,
    /// `test` or `live`.
    pub mode: ModeName,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// The scopes the key holds.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// When it was revoked (Unix seconds), or `null`.
    #[schema(required = true)]
    pub revoked_at: Option<i64>,
    /// Admin keys: the custodian it belongs to, when named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            object: ApiKeyObject::Value,
            account: k.account_id.clone(),
            kind: k.kind.clone(),
            mode: k.mode.into(),
            prefix: k.prefix.clone(),
            scopes: match KeyKind::parse(&k.kind) {
                Some(kind) => kind
                    .held_scopes(&k.scopes)
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                None => k.scopes.split_whitespace().map(str::to_owned).collect(),
            },
            created: secs(k.created_ms),
            revoked: k.revoked_ms.is_some(),
            revoked_at: k.revoked_ms.map(secs),
            name: k.name.clone(),
        }
    }
}

/// An admin key, with its IP allowlist.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminKeyView {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// CIDRs the key may be used from; empty: anywhere.
    pub ip_allowlist: Vec<String>,
}

/// A key just issued: the only response that carries its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewApiKeyView {
    /// The key.
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The secret; it is never shown again.
    pub secret: String,
    /// CIDRs the key may be used from; empty: anywhere the account allows.
    pub ip_allowlist: Vec<String>,
}

impl NewApiKeyView {
    /// The view of a key just issued, with its allowlist.
    pub fn new(issued: &IssuedKey, nets: &[ipnet::IpNet]) -> Self {
        Self {
            key: ApiKeyView::from(&issued.record),
            secret: issued.secret.expose().clone(),
            ip_allowlist: nets.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A scope name, for the schema: every scope a key can hold.
pub struct ScopeName;

impl utoipa::PartialSchema for ScopeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(strongroom_core::Scope::ALL.iter().map(|s| s.as_str())))
            .into()
    }
}

impl ToSchema for ScopeName {}

/// A step-up that may need an attestation.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum StepUpName {
    /// Revealing a card's number.
    #[serde(rename = "card.reveal")]
    CardReveal,
    /// Setting a PIN.
    #[serde(rename = "pin.set")]
    PinSet,
    /// Changing a PIN.
    #[serde(rename = "pin.change")]
    PinChange,
    /// Sending card data through the relay.
    #[serde(rename = "relay")]
    Relay,
    /// Creating a one-time password.
    #[serde(rename = "otp.create")]
    OtpCreate,
}

/// The kind of a new account key.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NewKeyKindName {
    /// Full access to the account's own data.
    Secret,
    /// Tokenize only, for browsers and apps.
    Publishable,
    /// Only the scopes named.
    Restricted,
}
