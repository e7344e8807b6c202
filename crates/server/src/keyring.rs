//! The in-memory keyring: unwrapped data keys per account, purpose and version.
//! Unwrapped copies live only here; the store holds them wrapped by the root key.

use crate::error::{ApiError, ApiResult, codes};
use crate::state::AppState;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use strongroom_crypto::DataKey;
use strongroom_store::{DataKeyRecord, KeyPurpose, KeyState, VaultStore};

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
    pub fn writer(&self, purpose: KeyPurpose) -> ApiResult<(i64, Arc<DataKey>)> {
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
    pub fn version(&self, purpose: KeyPurpose, version: i64) -> ApiResult<Arc<DataKey>> {
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
fn missing(what: &'static str) -> ApiError {
    ApiError::internal(&what)
}

/// Cache of [`AccountKeys`], refreshed after a TTL so rotations by other nodes show up.
pub struct Keyring {
    ttl_ms: i64,
    accounts: RwLock<HashMap<String, Arc<AccountKeys>>>,
}

impl Keyring {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            accounts: RwLock::new(HashMap::new()),
        }
    }

    /// Version 1 of every purpose for a new account, wrapped.
    pub fn initial_keys(
        &self,
        state: &AppState,
        account_id: &str,
    ) -> ApiResult<Vec<DataKeyRecord>> {
        KeyPurpose::ALL
            .into_iter()
            .map(|p| new_wrapped(state, account_id, p, 1))
            .collect()
    }

    /// The account's keys, loading and unwrapping them if needed.
    pub async fn account(&self, state: &AppState, account_id: &str) -> ApiResult<Arc<AccountKeys>> {
        let now = state.now_ms();
        if let Ok(map) = self.accounts.read()
            && let Some(k) = map.get(account_id)
            && now.saturating_sub(k.loaded_ms) < self.ttl_ms
        {
            return Ok(k.clone());
        }
        self.reload(state, account_id).await
    }

    /// Forgets every account's keys (another node may have rotated one).
    pub fn clear(&self) {
        if let Ok(mut map) = self.accounts.write() {
            map.clear();
        }
    }

    /// Re-reads the account's keys from the store.
    pub async fn reload(&self, state: &AppState, account_id: &str) -> ApiResult<Arc<AccountKeys>> {
        let records = state.store().data_keys(account_id).await?;
        if records.is_empty() {
            return Err(codes::NOT_FOUND);
        }
        let mut keys = HashMap::new();
        let mut writers = HashMap::new();
        for r in records.iter().filter(|r| r.state != KeyState::Retired) {
            let ctx = wrap_context(account_id, r.purpose, r.version);
            let key = state.root().unwrap_key(&r.wrapped, &ctx)?;
            keys.insert((r.purpose, r.version), Arc::new(key));
            if r.state == KeyState::Active {
                writers.insert(r.purpose, r.version);
            }
        }
        let loaded = Arc::new(AccountKeys {
            loaded_ms: state.now_ms(),
            keys,
            writers,
        });
        if let Ok(mut map) = self.accounts.write() {
            map.insert(account_id.to_owned(), loaded.clone());
        }
        Ok(loaded)
    }

    /// Makes a new version of `purpose` the writer. Older versions still decrypt.
    pub async fn rotate(
        &self,
        state: &AppState,
        account_id: &str,
        purpose: KeyPurpose,
    ) -> ApiResult<i64> {
        let records = state.store().data_keys(account_id).await?;
        if records.is_empty() {
            return Err(codes::NOT_FOUND);
        }
        let next = records
            .iter()
            .filter(|r| r.purpose == purpose)
            .map(|r| r.version)
            .max()
            .unwrap_or(0)
            + 1;
        let rec = new_wrapped(state, account_id, purpose, next)?;
        let acct = state.accounts().get(account_id).await?;
        // Data keys serve both modes, so each mode's event stream hears of the rotation.
        let events = [strongroom_core::Mode::Test, strongroom_core::Mode::Live]
            .into_iter()
            .map(|mode| {
                state.event_of(
                    &acct.id,
                    mode,
                    crate::service::events::EventType::DataKeyRotated,
                    &crate::service::data_keys::DataKeyRotated {
                        object: "data_key",
                        purpose: purpose.as_str(),
                        version: next,
                    },
                )
            })
            .collect::<ApiResult<Vec<_>>>()?;
        state.store().rotate_data_key(&rec, &events).await?;
        self.reload(state, account_id).await?;
        state.wake_rewrap();
        Ok(next)
    }

    /// Drops the cached keys of an account (after a retire).
    pub fn forget(&self, account_id: &str) {
        if let Ok(mut map) = self.accounts.write() {
            map.remove(account_id);
        }
    }
}

fn new_wrapped(
    state: &AppState,
    account_id: &str,
    purpose: KeyPurpose,
    version: i64,
) -> ApiResult<DataKeyRecord> {
    let key = DataKey::generate()?;
    let wrapped = state
        .root()
        .wrap(&key, &wrap_context(account_id, purpose, version))?;
    Ok(DataKeyRecord {
        account_id: account_id.to_owned(),
        purpose,
        version,
        wrapped,
        state: KeyState::Active,
        created_ms: state.now_ms(),
        retired_ms: None,
    })
}
