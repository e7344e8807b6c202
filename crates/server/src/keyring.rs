//! The in-memory keyring: unwrapped data keys per account, purpose and version.
//! Unwrapped copies live only here; the store holds them wrapped by the root key.

use crate::service::{Result, ServiceError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use strongroom_core::{Clock, Mode};
use strongroom_crypto::{DataKey, RootKey};
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
    loaded_ms: i64,
    keys: HashMap<(KeyPurpose, i64), Arc<DataKey>>,
    writers: HashMap<KeyPurpose, i64>,
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
        clock: Arc<dyn Clock>,
        rewrap_wake: Arc<Notify>,
        ttl: Duration,
    ) -> Self {
        Self {
            store,
            root,
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
        let mut writers = HashMap::new();
        for r in records.iter().filter(|r| r.state != KeyState::Retired) {
            let ctx = wrap_context(account_id, r.purpose, r.version);
            let key = self.root.unwrap_key(&r.wrapped, &ctx)?;
            keys.insert((r.purpose, r.version), Arc::new(key));
            if r.state == KeyState::Active {
                writers.insert(r.purpose, r.version);
            }
        }
        let loaded = Arc::new(AccountKeys {
            loaded_ms: self.clock.now_ms(),
            keys,
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
        let key = DataKey::generate()?;
        let wrapped = self
            .root
            .wrap(&key, &wrap_context(account_id, purpose, version))?;
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
