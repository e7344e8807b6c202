//! The key inventory and the key-age policy (docs/key-custody.md, "Key-age policy").
//!
//! Every key the vault holds, of every kind, with its age against the policy's limit for
//! its purpose, and a key check value where the key is symmetric (the first 3 bytes of
//! AES enciphering a zero block; never the key). A worker checks the ages: it sends
//! `key.rotation_due` at each notice (30 and 7 days before the limit by default) and
//! `key.expired` at the limit, each once (the store remembers), keeps the oldest age per
//! purpose for `/metrics`, and rotates data keys and the JWT signing key on its own when
//! the policy says so.

use crate::audit::Origin;
use crate::config::KeyPolicy;
use crate::service::events::EventType;
use crate::service::{Result, object_name, secs};
use crate::state::AppState;
use serde::Serialize;
use std::collections::BTreeMap;
use strongroom_core::Mode;
use strongroom_store::{
    CustodyStore, KeyImportStore, KeyPurpose, KeyState, PinStore, TokenStore, VaultStore,
    WebhookStore,
};
use utoipa::ToSchema;

object_name!(
    /// `key_inventory`
    KeyInventoryObject = "key_inventory"
);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Where a key stands against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgeStatus {
    /// Younger than the first notice.
    Ok,
    /// Within the notice period: rotate it.
    RotationDue,
    /// Past the limit.
    Expired,
    /// No limit applies: the root key, or a version that only decrypts or verifies
    /// while it is replaced.
    NotApplicable,
}

/// One key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// `root`, `data_key`, `jwt_signing_key`, `pin_transport_key`, `api_key`,
    /// `admin_key`, `webhook_secret` or `imported_key`.
    pub kind: &'static str,
    /// Which key: `root/1`, `acct_…/cards/2`, a JWT or PIN key id, `key_…`, `we_…/3`.
    pub id: String,
    /// The policy's purpose: `root`, `cards`, `fingerprint`, `pin`, `jwt`, `api_key`,
    /// `webhook_secret`; for an imported key its kind, `bdk`, `zone_pin_key` or `kek`
    /// (no age limit).
    pub purpose: &'static str,
    /// The account it belongs to; none for the vault's own keys.
    #[schema(required = true)]
    pub account: Option<String>,
    /// Where it is kept: the root key's provider (`file`, `shamir`), `wrapped` (by the
    /// root key) or `digest` (only a keyed digest is stored: API keys).
    pub provider: String,
    /// `active`; `decrypt_only` / `verify_only` while a newer one takes over; `pending`
    /// for a JWT signing key published before it signs.
    pub state: &'static str,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When its purpose was last rotated: the newest key's creation (Unix seconds).
    pub last_rotated: i64,
    /// Whole days since it was made.
    pub age_days: i64,
    /// The policy's limit for its purpose.
    #[schema(required = true)]
    pub max_age_days: Option<i64>,
    /// Where it stands against the limit.
    pub status: AgeStatus,
    /// When it reaches the limit (Unix seconds).
    #[schema(required = true)]
    pub expires: Option<i64>,
    /// Key check value (6 hex digits) of a symmetric key; for the root key, the start of
    /// its verifier. Never the key.
    #[schema(required = true)]
    pub kcv: Option<String>,
}

/// `GET /v1/admin/key_inventory`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyInventoryView {
    /// Always `key_inventory`.
    pub object: KeyInventoryObject,
    /// Every key, the vault's own first, then by account.
    pub data: Vec<KeyView>,
}

impl KeyPolicy {
    /// The limit for a purpose, in days.
    pub fn max_age_days(&self, purpose: &str) -> Option<i64> {
        match purpose {
            "cards" => Some(self.cards_days),
            "fingerprint" => Some(self.fingerprint_days),
            "pin" => Some(self.pin_days),
            "jwt" => Some(self.jwt_days),
            "api_key" => Some(self.api_key_days),
            "webhook_secret" => Some(self.webhook_secret_days),
            _ => None,
        }
    }
}

/// What the inventory is built from, before the views.
struct Key {
    kind: &'static str,
    id: String,
    purpose: &'static str,
    account: Option<String>,
    modes: Vec<Mode>,
    provider: String,
    state: &'static str,
    created_ms: i64,
    last_rotated_ms: i64,
    kcv: Option<String>,
}

fn kcv_hex(b: [u8; 3]) -> String {
    hex::encode_upper(b)
}

/// Every key. With `check_values`, data keys are unwrapped to compute theirs.
async fn keys(state: &AppState, check_values: bool) -> Result<Vec<Key>> {
    let store = state.store();
    let mut out = Vec::new();
    let root = store.root_key().await?;
    let provider = root
        .as_ref()
        .map_or_else(|| "file".to_owned(), |r| r.provider.clone());
    if let Some(r) = &root {
        out.push(Key {
            kind: "root",
            id: format!("root/{}", r.generation),
            purpose: "root",
            account: None,
            modes: Vec::new(),
            provider: provider.clone(),
            state: "active",
            created_ms: r.created_ms,
            last_rotated_ms: r.created_ms,
            kcv: r.verifier.get(..3).map(hex::encode_upper),
        });
    }
    let now = state.now_ms();
    let jwt = store.jwt_keys().await?;
    let signer = jwt
        .iter()
        .filter(|k| k.active_from_ms <= now && !k.wrapped.is_empty())
        .map(|k| k.generation)
        .max();
    let jwt_rotated = jwt.iter().map(|k| k.created_ms).max().unwrap_or(0);
    for k in jwt.iter().filter(|k| !k.wrapped.is_empty()) {
        out.push(Key {
            kind: "jwt_signing_key",
            id: k.kid.clone(),
            purpose: "jwt",
            account: None,
            modes: Vec::new(),
            provider: "wrapped".into(),
            state: if k.active_from_ms > now {
                "pending"
            } else if Some(k.generation) == signer {
                "active"
            } else {
                "verify_only"
            },
            created_ms: k.created_ms,
            last_rotated_ms: jwt_rotated,
            kcv: None,
        });
    }
    let pin = store.pin_transport_keys().await?;
    let pin_rotated = pin.iter().map(|k| k.created_ms).max().unwrap_or(0);
    for k in pin
        .iter()
        .filter(|k| k.retire_after_ms.is_none_or(|t| t > now))
    {
        out.push(Key {
            kind: "pin_transport_key",
            id: k.kid.clone(),
            purpose: "pin",
            account: None,
            modes: Vec::new(),
            provider: "wrapped".into(),
            state: if k.retire_after_ms.is_none() {
                "active"
            } else {
                "decrypt_only"
            },
            created_ms: k.created_ms,
            last_rotated_ms: pin_rotated,
            kcv: None,
        });
    }
    for k in store
        .list_api_keys(None)
        .await?
        .into_iter()
        .filter(|k| k.revoked_ms.is_none())
    {
        out.push(api_key(k, "admin_key"));
    }
    for acct in store.list_accounts().await? {
        let records = store.data_keys(&acct.id).await?;
        let mut ring = if check_values {
            Some(state.keyring().account(&acct.id).await?)
        } else {
            None
        };
        // A version made since the keyring was cached (another node's rotation): read
        // the keys again, once.
        let cached_all = |ring: &crate::keyring::AccountKeys| {
            records
                .iter()
                .filter(|r| r.state != KeyState::Retired)
                .all(|r| ring.has_version(r.purpose, r.version))
        };
        if ring.as_ref().is_some_and(|r| !cached_all(r)) {
            ring = Some(state.keyring().reload(&acct.id).await?);
        }
        for r in records.iter().filter(|r| r.state != KeyState::Retired) {
            let rotated = records
                .iter()
                .filter(|o| o.purpose == r.purpose)
                .map(|o| o.created_ms)
                .max()
                .unwrap_or(r.created_ms);
            let on_hsm = r.wrapped == crate::custody::pkcs11::HSM_KEY;
            let kcv = match (&ring, state.hsm()) {
                (Some(_), Some(hsm)) if on_hsm => {
                    Some(kcv_hex(hsm.pin_key_check_value(&acct.id, r.version)?))
                }
                (Some(ring), _) if !on_hsm => {
                    Some(kcv_hex(ring.version(r.purpose, r.version)?.check_value()?))
                }
                _ => None,
            };
            out.push(Key {
                kind: "data_key",
                id: format!("{}/{}/{}", acct.id, r.purpose.as_str(), r.version),
                purpose: purpose_name(r.purpose),
                account: Some(acct.id.clone()),
                modes: vec![Mode::Test, Mode::Live],
                provider: if on_hsm { "pkcs11" } else { "wrapped" }.into(),
                state: if r.state == KeyState::Active {
                    "active"
                } else {
                    "decrypt_only"
                },
                created_ms: r.created_ms,
                last_rotated_ms: rotated,
                kcv,
            });
        }
        for k in store.imported_keys(Some(&acct.id)).await? {
            out.push(Key {
                kind: "imported_key",
                id: k.id,
                purpose: match k.kind.as_str() {
                    "bdk" => "bdk",
                    "zone_pin_key" => "zone_pin_key",
                    _ => "kek",
                },
                account: Some(acct.id.clone()),
                modes: vec![Mode::Test, Mode::Live],
                provider: if k.wrapped == crate::custody::pkcs11::HSM_KEY {
                    "pkcs11"
                } else {
                    "wrapped"
                }
                .into(),
                state: "active",
                created_ms: k.created_ms,
                last_rotated_ms: k.created_ms,
                kcv: Some(k.kcv),
            });
        }
        for k in store
            .list_api_keys(Some(&acct.id))
            .await?
            .into_iter()
            .filter(|k| k.revoked_ms.is_none())
        {
            out.push(api_key(k, "api_key"));
        }
        for mode in [Mode::Test, Mode::Live] {
            for ep in store
                .list_endpoints(&acct.id, mode, None, i64::from(u16::MAX))
                .await?
            {
                let rotated = ep.old_expires_ms.map_or(ep.created_ms, |t| {
                    t.saturating_sub(crate::service::webhooks::ROTATION_OVERLAP_MS)
                });
                out.push(Key {
                    kind: "webhook_secret",
                    id: format!("{}/{}", ep.id, ep.secret_version),
                    purpose: "webhook_secret",
                    account: Some(acct.id.clone()),
                    modes: vec![mode],
                    provider: "wrapped".into(),
                    state: "active",
                    created_ms: rotated,
                    last_rotated_ms: rotated,
                    kcv: None,
                });
            }
        }
    }
    Ok(out)
}

fn purpose_name(p: KeyPurpose) -> &'static str {
    match p {
        KeyPurpose::Cards => "cards",
        KeyPurpose::Fingerprint => "fingerprint",
        KeyPurpose::Pin => "pin",
    }
}

fn api_key(k: strongroom_store::ApiKeyRecord, kind: &'static str) -> Key {
    Key {
        kind,
        id: k.id,
        purpose: "api_key",
        modes: k
            .account_id
            .as_ref()
            .map(|_| vec![k.mode])
            .unwrap_or_default(),
        account: k.account_id,
        provider: "digest".into(),
        state: "active",
        created_ms: k.created_ms,
        last_rotated_ms: k.created_ms,
        kcv: None,
    }
}

/// Where `k` stands at `now`, and when it expires.
fn standing(policy: &KeyPolicy, k: &Key, now: i64) -> (AgeStatus, Option<i64>, Option<i64>) {
    let max = policy.max_age_days(k.purpose);
    let Some(max) = max.filter(|_| k.state == "active") else {
        return (AgeStatus::NotApplicable, max, None);
    };
    let expires = k.created_ms.saturating_add(max.saturating_mul(DAY_MS));
    let first_notice = policy.notice_days.iter().copied().max().unwrap_or(0);
    let status = if now >= expires {
        AgeStatus::Expired
    } else if now >= expires.saturating_sub(first_notice.saturating_mul(DAY_MS)) {
        AgeStatus::RotationDue
    } else {
        AgeStatus::Ok
    };
    (status, Some(max), Some(expires))
}

/// The inventory, with check values.
pub async fn inventory(state: &AppState) -> Result<KeyInventoryView> {
    let now = state.now_ms();
    let policy = &state.config().key_policy;
    let keys = keys(state, true).await?;
    record_oldest(state, &keys);
    let data = keys
        .into_iter()
        .map(|k| {
            let (status, max_age_days, expires) = standing(policy, &k, now);
            KeyView {
                kind: k.kind,
                purpose: k.purpose,
                account: k.account,
                provider: k.provider,
                state: k.state,
                created: secs(k.created_ms),
                last_rotated: secs(k.last_rotated_ms),
                age_days: now.saturating_sub(k.created_ms).div_euclid(DAY_MS),
                max_age_days,
                status,
                expires: expires.map(secs),
                kcv: k.kcv,
                id: k.id,
            }
        })
        .collect();
    Ok(KeyInventoryView {
        object: KeyInventoryObject::Value,
        data,
    })
}

/// When the oldest active key of each purpose was made, for `/metrics`.
fn record_oldest(state: &AppState, keys: &[Key]) {
    let mut oldest: BTreeMap<&'static str, i64> = BTreeMap::new();
    for k in keys.iter().filter(|k| k.state == "active") {
        let e = oldest.entry(k.purpose).or_insert(k.created_ms);
        *e = (*e).min(k.created_ms);
    }
    state.metrics().key_oldest(oldest);
}

/// The `object` of `key.rotation_due` and `key.expired` events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyAgeNotice {
    /// Always `key`.
    pub object: &'static str,
    /// As in the inventory: `data_key`, `api_key`, `webhook_secret`.
    pub kind: &'static str,
    /// As in the inventory.
    pub id: String,
    /// The policy's purpose.
    pub purpose: &'static str,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When it reaches (or reached) its limit (Unix seconds).
    pub expires: i64,
}

/// One check of every key's age: the notices that are due go out (each once), the
/// metric is updated, and with `auto_rotate` the data keys and the JWT signing key that
/// are due are rotated.
pub async fn sweep(state: &AppState) -> Result<()> {
    let now = state.now_ms();
    let policy = state.config().key_policy.clone();
    let keys = keys(state, false).await?;
    record_oldest(state, &keys);
    let mut rotate_jwt = false;
    for k in &keys {
        let (status, _, expires) = standing(&policy, k, now);
        let Some(expires) = expires else { continue };
        let notices: Vec<String> = match status {
            AgeStatus::Expired => vec!["expired".to_owned()],
            AgeStatus::RotationDue => policy
                .notice_days
                .iter()
                .filter(|d| now >= expires.saturating_sub(d.saturating_mul(DAY_MS)))
                .map(|d| format!("due_{d}"))
                .collect(),
            _ => Vec::new(),
        };
        for notice in notices {
            let (ty, action) = if notice == "expired" {
                (EventType::KeyExpired, "key.expired")
            } else {
                (EventType::KeyRotationDue, "key.rotation_due")
            };
            let body = KeyAgeNotice {
                object: "key",
                kind: k.kind,
                id: k.id.clone(),
                purpose: k.purpose,
                created: secs(k.created_ms),
                expires: secs(expires),
            };
            let events = match &k.account {
                Some(acct) => k
                    .modes
                    .iter()
                    .map(|m| state.event_of(acct, *m, ty, &body))
                    .collect::<Result<Vec<_>>>()?,
                None => Vec::new(),
            };
            let scope = Origin::System.scope(state.clock(), action);
            let key_ref = format!("{}:{}", k.kind, k.id);
            let first = state
                .store()
                .audited(&scope)
                .key_notice(&key_ref, &notice, now, events)
                .await?;
            if first {
                tracing::warn!(kind = k.kind, purpose = k.purpose, notice, "key age notice");
            }
        }
        if policy.auto_rotate && status != AgeStatus::Ok && k.state == "active" {
            match (k.kind, &k.account) {
                ("data_key", Some(acct)) => {
                    let purpose = KeyPurpose::parse(k.purpose);
                    if let Some(purpose) = purpose {
                        let scope = Origin::System.scope(state.clock(), "data_key.rotate");
                        state.keyring().rotate(&scope, acct, purpose).await?;
                    }
                }
                ("jwt_signing_key", _) => rotate_jwt = true,
                _ => {}
            }
        }
    }
    // A key already published and waiting to sign is the rotation: not another.
    let pending = keys
        .iter()
        .any(|k| k.kind == "jwt_signing_key" && k.state == "pending");
    if rotate_jwt && !pending {
        let scope = Origin::System.scope(state.clock(), "jwt_key.rotate");
        state.tokens().rotate(Some(&scope)).await?;
    }
    Ok(())
}

/// Checks the keys' ages every `check_interval`, from the first minute.
pub fn spawn(state: AppState) {
    state.clone().spawn_worker(async move {
        let every = state.config().key_policy.check_interval;
        let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(50)));
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&state).await {
                tracing::warn!(error = %e, "key age check failed; will retry");
            }
        }
    });
}
