//! The in-memory keyring: unwrapped data keys per account, purpose and version.
//! Unwrapped copies live only here; the store holds them wrapped by the root key. With
//! an HSM, the `pin` versions are keys on the token instead: the store holds a marker
//! ([`HSM_KEY`]), and PIN blocks are enciphered in the HSM ([`PinKeyRef`]).

use crate::custody::pkcs11::{HSM_KEY, Hsm, HsmPinKey};
use crate::service::{Result, ServiceError};
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use strongroom_core::{Clock, Mode};
use strongroom_crypto::pin::{BLOCK_LEN, PinCipher, PinKey};
use strongroom_crypto::{CryptoError, DataKey, RootKey};
use strongroom_store::{AuditScope, DataKeyRecord, KeyPurpose, KeyState, Store, VaultStore};
use tokio::sync::Notify;

/// The wrap context binds a wrapped key to its account, purpose and version.
pub fn wrap_context(account_id: &str, purpose: KeyPurpose, version: i64) -> String {
    format!(
        "strongroom/datakey/v1|{account_id}|{}|{version}",
        purpose.as_str()
    )
}

/// One account's unwrapped keys.
pub struct AccountKeys {
    account_id: String,
    loaded_ms: i64,
    keys: HashMap<(KeyPurpose, i64), Arc<DataKey>>,
    /// Versions that are keys on the HSM's token.
    on_hsm: HashSet<(KeyPurpose, i64)>,
    hsm: Option<Arc<Hsm>>,
    writers: HashMap<KeyPurpose, i64>,
}

/// A PIN-block key: unwrapped in memory, or on the HSM's token.
pub enum PinKeyRef {
    /// An AES-256 key in memory (from the account's `pin` data key).
    Memory(PinKey),
    /// A key that never leaves the HSM.
    Hsm(HsmPinKey),
}

impl PinCipher for PinKeyRef {
    fn encrypt_block(&self, block: &mut [u8; BLOCK_LEN]) -> std::result::Result<(), CryptoError> {
        match self {
            Self::Memory(k) => k.encrypt_block(block),
            Self::Hsm(k) => k.encrypt_block(block),
        }
    }

    fn decrypt_block(&self, block: &mut [u8; BLOCK_LEN]) -> std::result::Result<(), CryptoError> {
        match self {
            Self::Memory(k) => k.decrypt_block(block),
            Self::Hsm(k) => k.decrypt_block(block),
        }
    }
}

impl AccountKeys {
    /// The writer version of a purpose and its key.
    pub fn writer(&self, purpose: KeyPurpose) -> Result<(i64, Arc<DataKey>)> {
        let v = *self
            .writers
            .get(&purpose)
            .ok_or_else(|| missing("no active key"))?;
        Ok((v, self.version(purpose, v)?))
    }

    /// Whether the purpose has a writer (accounts made before a purpose existed may not).
    pub fn has_writer(&self, purpose: KeyPurpose) -> bool {
        self.writers.contains_key(&purpose)
    }

    /// Whether a version is here (in memory or on the HSM).
    pub fn has_version(&self, purpose: KeyPurpose, version: i64) -> bool {
        self.keys.contains_key(&(purpose, version)) || self.on_hsm.contains(&(purpose, version))
    }

    /// Whether a version is a key on the HSM's token.
    pub fn is_on_hsm(&self, purpose: KeyPurpose, version: i64) -> bool {
        self.on_hsm.contains(&(purpose, version))
    }

    /// A `pin` version, in memory or on the HSM.
    pub fn pin_key(&self, version: i64) -> Result<PinKeyRef> {
        if self.on_hsm.contains(&(KeyPurpose::Pin, version)) {
            let hsm = self.hsm.as_ref().ok_or_else(|| {
                missing("the PIN-block key is on an HSM this server is not configured for")
            })?;
            return Ok(PinKeyRef::Hsm(hsm.pin_key(&self.account_id, version)));
        }
        let key = self.version(KeyPurpose::Pin, version)?;
        Ok(PinKeyRef::Memory(PinKey::from_data_key(&key)))
    }

    /// The `pin` writer version and its key.
    pub fn pin_writer(&self) -> Result<(i64, PinKeyRef)> {
        let v = *self
            .writers
            .get(&KeyPurpose::Pin)
            .ok_or_else(|| missing("no active key"))?;
        Ok((v, self.pin_key(v)?))
    }

    /// A version's key; fails if it is retired or unknown.
    pub fn version(&self, purpose: KeyPurpose, version: i64) -> Result<Arc<DataKey>> {
        self.keys
            .get(&(purpose, version))
            .cloned()
            .ok_or_else(|| missing("key version not available"))
    }

    /// Every usable version of a purpose, writer first.
    pub fn usable(&self, purpose: KeyPurpose) -> Vec<(i64, Arc<DataKey>)> {
        let writer = self.writers.get(&purpose).copied();
        let mut out: Vec<_> = self
            .keys
            .iter()
            .filter(|((p, _), _)| *p == purpose)
            .map(|((_, v), k)| (*v, k.clone()))
            .collect();
        out.sort_by_key(|(v, _)| (Some(*v) != writer, -*v));
        out
    }
}

#[track_caller]
fn missing(what: &'static str) -> ServiceError {
    ServiceError::internal(what)
}

/// Cache of [`AccountKeys`], refreshed after a TTL so rotations by other nodes show up.
/// It reads wrapped keys from the store and unwraps them with the root key.
pub struct Keyring {
    store: Store,
    root: Arc<RootKey>,
    /// Where new `pin` versions are made, when the vault has an HSM.
    hsm: Option<Arc<Hsm>>,
    clock: Arc<dyn Clock>,
    /// Woken after a rotation: the re-wrap worker moves records to the new version.
    rewrap_wake: Arc<Notify>,
    ttl_ms: i64,
    accounts: RwLock<HashMap<String, Arc<AccountKeys>>>,
}

impl Keyring {
    pub(crate) fn new(
        store: Store,
        root: Arc<RootKey>,
        hsm: Option<Arc<Hsm>>,
        clock: Arc<dyn Clock>,
        rewrap_wake: Arc<Notify>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            root,
            hsm,
            clock,
            rewrap_wake,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            accounts: RwLock::new(HashMap::new()),
        }
    }

    /// Version 1 of every purpose for a new account, wrapped.
    pub fn initial_keys(&self, account_id: &str) -> Result<Vec<DataKeyRecord>> {
        KeyPurpose::ALL
            .into_iter()
            .map(|p| self.new_wrapped(account_id, p, 1))
            .collect()
    }

    /// The account's keys, loading and unwrapping them if needed.
    pub async fn account(&self, account_id: &str) -> Result<Arc<AccountKeys>> {
        let now = self.clock.now_ms();
        if let Ok(map) = self.accounts.read()
            && let Some(k) = map.get(account_id)
            && now.saturating_sub(k.loaded_ms) < self.ttl_ms
        {
            return Ok(k.clone());
        }
        self.reload(account_id).await
    }

    /// Forgets every account's keys (another node may have rotated one).
    pub fn clear(&self) {
        if let Ok(mut map) = self.accounts.write() {
            map.clear();
        }
    }

    /// Re-reads the account's keys from the store.
    pub async fn reload(&self, account_id: &str) -> Result<Arc<AccountKeys>> {
        let records = self.store.data_keys(account_id).await?;
        if records.is_empty() {
            return Err(ServiceError::NotFound);
        }
        let mut keys = HashMap::new();
        let mut on_hsm = HashSet::new();
        let mut writers = HashMap::new();
        for r in records.iter().filter(|r| r.state != KeyState::Retired) {
            if r.wrapped == HSM_KEY {
                on_hsm.insert((r.purpose, r.version));
            } else {
                let ctx = wrap_context(account_id, r.purpose, r.version);
                let key = self.root.unwrap_key(&r.wrapped, &ctx)?;
                keys.insert((r.purpose, r.version), Arc::new(key));
            }
            if r.state == KeyState::Active {
                writers.insert(r.purpose, r.version);
            }
        }
        let loaded = Arc::new(AccountKeys {
            account_id: account_id.to_owned(),
            loaded_ms: self.clock.now_ms(),
            keys,
            on_hsm,
            hsm: self.hsm.clone(),
            writers,
        });
        if let Ok(mut map) = self.accounts.write() {
            map.insert(account_id.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }

    /// Makes a new version of `purpose` the writer. Older versions still decrypt. The
    /// write carries `audit`, the scope of the request that rotates.
    pub async fn rotate(
        &self,
        audit: &AuditScope,
        account_id: &str,
        purpose: KeyPurpose,
    ) -> Result<i64> {
        let records = self.store.data_keys(account_id).await?;
        if records.is_empty() {
            return Err(ServiceError::NotFound);
        }
        let next = records
            .iter()
            .filter(|r| r.purpose == purpose)
            .map(|r| r.version)
            .max()
            .unwrap_or(0)
            + 1;
        let rec = self.new_wrapped(account_id, purpose, next)?;
        strongroom_core::parse_id(strongroom_core::IdKind::Account, account_id)?;
        let acct = self
            .store
            .get_account(account_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        // Data keys serve both modes, so each mode's event stream hears of the rotation.
        let events = [Mode::Test, Mode::Live]
            .into_iter()
            .map(|mode| {
                crate::events::event_of(
                    self.clock.as_ref(),
                    &acct.id,
                    mode,
                    crate::service::events::EventType::DataKeyRotated,
                    &DataKeyRotated {
                        object: "data_key",
                        purpose: purpose.as_str(),
                        version: next,
                    },
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.store
            .audited(audit)
            .rotate_data_key(&rec, &events)
            .await?;
        self.reload(account_id).await?;
        self.rewrap_wake.notify_one();
        Ok(next)
    }

    /// Drops the cached keys of an account (after a retire).
    pub fn forget(&self, account_id: &str) {
        if let Ok(mut map) = self.accounts.write() {
            map.remove(account_id);
        }
    }

    fn new_wrapped(
        &self,
        account_id: &str,
        purpose: KeyPurpose,
        version: i64,
    ) -> Result<DataKeyRecord> {
        let wrapped = match &self.hsm {
            // With an HSM, a PIN-block key is made on its token and never leaves it.
            Some(hsm) if purpose == KeyPurpose::Pin => {
                hsm.make_pin_key(account_id, version)?;
                HSM_KEY.to_vec()
            }
            _ => {
                let key = DataKey::generate()?;
                self.root
                    .wrap(&key, &wrap_context(account_id, purpose, version))?
            }
        };
        Ok(DataKeyRecord {
            account_id: account_id.to_owned(),
            purpose,
            version,
            wrapped,
            state: KeyState::Active,
            created_ms: self.clock.now_ms(),
            retired_ms: None,
        })
    }
}

/// The `object` of a `data_key.rotated` event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DataKeyRotated {
    /// Always `data_key`.
    pub object: &'static str,
    /// `cards`, `fingerprint` or `pin`.
    pub purpose: &'static str,
    /// The new version.
    pub version: i64,
}
