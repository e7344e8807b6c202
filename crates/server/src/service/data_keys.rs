//! Data keys as operators see them: every version per purpose, its state, how many
//! records it protects, and what is left to re-wrap.

use crate::service::{Result, ServiceError};
use crate::service::{object_name, secs};
use crate::state::AppState;
use serde::Serialize;
use strongroom_store::{DataKeyRecord, KeyPurpose, KeyState, VaultStore};
use utoipa::ToSchema;

object_name!(
    /// `data_keys`.
    DataKeysObject = "data_keys"
);

/// `active` (the writer), `decrypt_only` (still decrypts records not yet re-wrapped) or
/// `retired` (erased).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataKeyState {
    /// The writer: new records use it.
    Active,
    /// Still decrypts records not yet re-wrapped.
    DecryptOnly,
    /// Gone: the wrapped key has been erased.
    Retired,
}

impl From<KeyState> for DataKeyState {
    fn from(s: KeyState) -> Self {
        match s {
            KeyState::Active => Self::Active,
            KeyState::DecryptOnly => Self::DecryptOnly,
            KeyState::Retired => Self::Retired,
        }
    }
}

/// `cards`, `fingerprint` or `pin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Encrypts card data.
    Cards,
    /// Keys the PAN fingerprint HMAC.
    Fingerprint,
    /// Enciphers PIN blocks.
    Pin,
}

impl From<Purpose> for KeyPurpose {
    fn from(p: Purpose) -> Self {
        match p {
            Purpose::Cards => Self::Cards,
            Purpose::Fingerprint => Self::Fingerprint,
            Purpose::Pin => Self::Pin,
        }
    }
}

/// One version of a data key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataKeyVersionView {
    /// The version, from 1.
    pub version: i64,
    /// Its state.
    pub state: DataKeyState,
    /// How many records it protects.
    pub records: i64,
    /// Unix seconds.
    pub created: i64,
    /// When it was retired (Unix seconds), or `null`.
    #[schema(required = true)]
    pub retired: Option<i64>,
}

/// The versions of one purpose's key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurposeKeysView {
    /// Every version, oldest first.
    pub versions: Vec<DataKeyVersionView>,
    /// Records still under a version that is not the writer.
    pub records_to_rewrap: i64,
}

/// Each purpose's key versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurposesView {
    /// The card-data key.
    pub cards: PurposeKeysView,
    /// The fingerprint key.
    pub fingerprint: PurposeKeysView,
    /// The PIN key.
    pub pin: PurposeKeysView,
}

/// An account's data keys and re-wrap progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataKeysView {
    /// Always `data_keys`.
    pub object: DataKeysObject,
    /// The account (`acct_…`).
    pub account: String,
    /// Per purpose.
    pub purposes: PurposesView,
}

fn purpose_view(records: &[DataKeyRecord], usage: &[(i64, i64)], p: KeyPurpose) -> PurposeKeysView {
    let count = |version: i64| {
        usage
            .iter()
            .find(|(v, _)| *v == version)
            .map_or(0, |(_, n)| *n)
    };
    let mine = || records.iter().filter(move |r| r.purpose == p);
    PurposeKeysView {
        versions: mine()
            .map(|r| DataKeyVersionView {
                version: r.version,
                state: r.state.into(),
                records: count(r.version),
                created: secs(r.created_ms),
                retired: r.retired_ms.map(secs),
            })
            .collect(),
        records_to_rewrap: mine()
            .filter(|r| r.state != KeyState::Active)
            .map(|r| count(r.version))
            .sum(),
    }
}

/// Per purpose: every version, its state, and how many records it protects;
/// `not_found` when the account has no keys.
pub async fn status(state: &AppState, account_id: &str) -> Result<DataKeysView> {
    let records = state.store().data_keys(account_id).await?;
    if records.is_empty() {
        return Err(ServiceError::NotFound);
    }
    let mut usage = Vec::with_capacity(KeyPurpose::ALL.len());
    for p in KeyPurpose::ALL {
        usage.push(state.store().key_usage(account_id, p).await?);
    }
    let view = |p: KeyPurpose| {
        let i = KeyPurpose::ALL.iter().position(|q| *q == p).unwrap_or(0);
        purpose_view(&records, usage.get(i).map_or(&[][..], Vec::as_slice), p)
    };
    Ok(DataKeysView {
        object: DataKeysObject::Value,
        account: account_id.to_owned(),
        purposes: PurposesView {
            cards: view(KeyPurpose::Cards),
            fingerprint: view(KeyPurpose::Fingerprint),
            pin: view(KeyPurpose::Pin),
        },
    })
}
