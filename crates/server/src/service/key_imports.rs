//! Dual-control key imports (docs/key-custody.md, "Importing keys"). Keys that enter
//! from outside (terminal BDKs, processor zone PIN keys, key-encryption keys) are never
//! taken from one person: a ceremony names the key, then each of its clear components
//! comes from a different admin key with its check value. The last component makes the
//! key, their XOR, stored wrapped by the root key like every other key. Until then the
//! XOR so far is kept only wrapped. No component, partial or key is ever in a response,
//! a log, an event or the database in clear.

use crate::custody::pkcs11::{HSM_KEY, Hsm};
use crate::service::{Result, ServiceError, secs};
use crate::state::AppState;
use serde::Serialize;
use strongroom_core::{IdKind, Sensitive};
use strongroom_crypto::components::{self, KeyAlgorithm};
use strongroom_store::{
    AuditScope, ImportedKeyRecord, KeyImportRecord, KeyImportStore, VaultStore,
};
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// The kinds of key an import makes, with the prefix of their ids.
const KINDS: [(&str, IdKind); 3] = [
    ("bdk", IdKind::Bdk),
    ("zone_pin_key", IdKind::ZonePinKey),
    ("kek", IdKind::Kek),
];

/// The id kind of the keys of an import kind.
fn id_kind(kind: &str) -> Option<IdKind> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

/// What the XOR of the components so far is wrapped under.
pub fn partial_context(import_id: &str) -> String {
    format!("strongroom/key-import/v1|{import_id}")
}

/// What an imported key is wrapped under.
pub fn wrap_context(key_id: &str) -> String {
    format!("strongroom/imported-key/v1|{key_id}")
}

/// A new ceremony.
pub struct NewImport<'a> {
    /// The account the key is for.
    pub account: &'a str,
    /// `bdk`, `zone_pin_key` or `kek`.
    pub kind: &'a str,
    /// The algorithm (components only: a TR-31 block says its own).
    pub algorithm: Option<KeyAlgorithm>,
    /// 2 or 3.
    pub components: i64,
    /// What the operators call it (1 to 100 characters).
    pub name: &'a str,
}

/// A ceremony as the admin API shows it: never a component or the key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyImportView {
    /// `kimp_…`
    pub id: String,
    /// Always `key_import`.
    #[schema(example = "key_import")]
    pub object: &'static str,
    /// The account the key is for.
    pub account: String,
    /// `bdk`, `zone_pin_key` or `kek`.
    pub kind: String,
    /// `aes128`, `aes192`, `aes256`, `tdes2` or `tdes3`.
    pub algorithm: String,
    /// What the operators call it.
    pub name: String,
    /// `awaiting_components` or `complete`.
    #[schema(example = "awaiting_components")]
    pub state: &'static str,
    /// How many components make the key.
    pub components_required: i64,
    /// How many have been given.
    pub components_received: i64,
    /// The admin keys that gave one, in order (`key_…`).
    pub custodians: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// The key made, once the last component is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<ImportedKeyView>,
}

/// A key made by an import: its id and check value, never the key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportedKeyView {
    /// `bdk_…`, `zpk_…` or `kek_…`
    pub id: String,
    /// The check value: the first three bytes of a zero block enciphered under the key
    /// (AES-ECB or TDES-ECB), hex.
    #[schema(example = "08D7B4")]
    pub kcv: String,
}

fn view(r: &KeyImportRecord, key: Option<ImportedKeyView>) -> KeyImportView {
    KeyImportView {
        id: r.id.clone(),
        object: "key_import",
        account: r.account_id.clone(),
        kind: r.kind.clone(),
        algorithm: r.algorithm.clone(),
        name: r.name.clone(),
        state: if r.completed_ms.is_some() {
            "complete"
        } else {
            "awaiting_components"
        },
        components_required: r.components,
        components_received: i64::try_from(r.custodians.len()).unwrap_or(i64::MAX),
        custodians: r.custodians.clone(),
        created: secs(r.created_ms),
        key,
    }
}

/// Begins a ceremony.
pub async fn create(
    state: &AppState,
    audit: &AuditScope,
    req: NewImport<'_>,
) -> Result<KeyImportView> {
    let name = crate::service::display_name(req.name)?;
    let (Some(_), Some(algorithm), true) = (
        id_kind(req.kind),
        req.algorithm,
        (2..=3).contains(&req.components),
    ) else {
        return Err(ServiceError::InvalidParameter);
    };
    strongroom_core::parse_id(IdKind::Account, req.account)?;
    state
        .store()
        .get_account(req.account)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let record = KeyImportRecord {
        id: crate::events::new_id(state.clock(), IdKind::KeyImport)?,
        account_id: req.account.to_owned(),
        kind: req.kind.to_owned(),
        algorithm: algorithm.as_str().to_owned(),
        name,
        components: req.components,
        custodians: Vec::new(),
        partial: None,
        created_ms: state.now_ms(),
        completed_ms: None,
        key_id: None,
    };
    crate::audit::set_resource(audit, "key_import", &record.id);
    state
        .store()
        .audited(audit)
        .create_key_import(record.clone())
        .await?;
    Ok(view(&record, None))
}

/// One ceremony.
pub async fn get(state: &AppState, id: &str) -> Result<KeyImportView> {
    strongroom_core::parse_id(IdKind::KeyImport, id)?;
    let r = state
        .store()
        .key_import(id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let key = match &r.key_id {
        Some(k) => state
            .store()
            .imported_keys(Some(&r.account_id))
            .await?
            .into_iter()
            .find(|i| &i.id == k)
            .map(|i| ImportedKeyView {
                id: i.id,
                kcv: i.kcv,
            }),
        None => None,
    };
    Ok(view(&r, key))
}

/// One custodian's component (`admin_key`: the admin key that gives it), with the check
/// value the custodian read off the component's form. A wrong length or check value is
/// refused, as is a second component from the same admin key; the last one makes the key.
pub async fn add_component(
    state: &AppState,
    audit: &AuditScope,
    admin_key: &str,
    id: &str,
    component: &Sensitive<String>,
    kcv: &str,
) -> Result<KeyImportView> {
    strongroom_core::parse_id(IdKind::KeyImport, id)?;
    let r = state
        .store()
        .key_import(id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    crate::audit::set_resource(audit, "key_import", &r.id);
    if r.completed_ms.is_some() {
        return Err(ServiceError::Conflict);
    }
    let alg = KeyAlgorithm::parse(&r.algorithm)
        .ok_or_else(|| ServiceError::internal("stored key algorithm unknown"))?;
    let clear = Zeroizing::new(
        hex::decode(component.expose().trim()).map_err(|_| ServiceError::InvalidParameter)?,
    );
    if clear.len() != alg.key_len() {
        return Err(ServiceError::InvalidParameter);
    }
    let given = hex::decode(kcv.trim()).map_err(|_| ServiceError::InvalidParameter)?;
    if given.len() != 3 {
        return Err(ServiceError::InvalidParameter);
    }
    if !strongroom_crypto::ct_eq(&components::kcv(alg, &clear)?, &given) {
        return Err(ServiceError::KcvMismatch);
    }
    if r.custodians.iter().any(|c| c == admin_key) {
        return Err(ServiceError::CustodianRepeated);
    }
    let root = state.root();
    let so_far = match &r.partial {
        Some(p) => Some(root.unwrap_bytes(p, &partial_context(&r.id))?),
        None => None,
    };
    let mut custodians = r.custodians.clone();
    custodians.push(admin_key.to_owned());
    let received = i64::try_from(custodians.len()).unwrap_or(i64::MAX);
    let mut parts: Vec<&[u8]> = vec![clear.as_slice()];
    if let Some(p) = &so_far {
        parts.push(p.as_slice());
    }
    let writes = || state.store().audited(audit);
    if received < r.components {
        // Not the last: keep the XOR so far, wrapped. One component alone is not checked
        // for being zero: its check value already says it is what the custodian holds.
        let xor = components::xor(alg, &parts)?;
        let wrapped = root.wrap_bytes(&xor, &partial_context(&r.id))?;
        let ok = writes()
            .key_import_component(&r.id, r.custodians.clone(), custodians.clone(), wrapped)
            .await?;
        if !ok {
            return Err(ServiceError::Conflict);
        }
        let now = KeyImportRecord { custodians, ..r };
        return Ok(view(&now, None));
    }
    let key = components::combine(alg, &parts).map_err(|_| ServiceError::InvalidParameter)?;
    let kcv_hex = hex::encode_upper(components::kcv(alg, &key)?);
    let prefix =
        id_kind(&r.kind).ok_or_else(|| ServiceError::internal("stored key kind unknown"))?;
    let key_id = crate::events::new_id(state.clock(), prefix)?;
    let record = ImportedKeyRecord {
        id: key_id.clone(),
        account_id: r.account_id.clone(),
        kind: r.kind.clone(),
        algorithm: r.algorithm.clone(),
        name: r.name.clone(),
        kcv: kcv_hex.clone(),
        wrapped: keep(state, &key_id, &r.kind, alg, &key)?,
        import_id: r.id.clone(),
        created_ms: state.now_ms(),
    };
    drop(key);
    let ok = writes()
        .complete_key_import(&r.id, r.custodians.clone(), custodians.clone(), record)
        .await?;
    if !ok {
        return Err(ServiceError::Conflict);
    }
    let done = KeyImportRecord {
        custodians,
        completed_ms: Some(state.now_ms()),
        key_id: Some(key_id.clone()),
        ..r
    };
    Ok(view(
        &done,
        Some(ImportedKeyView {
            id: key_id,
            kcv: kcv_hex,
        }),
    ))
}

/// What the record of a new imported key holds of it: with the `pkcs11` provider, a BDK
/// or zone PIN key the HSM can use ([`Hsm::holds`]) goes onto the token and the record
/// holds only [`HSM_KEY`]; any other key is wrapped by the root key.
fn keep(
    state: &AppState,
    key_id: &str,
    kind: &str,
    alg: KeyAlgorithm,
    key: &[u8],
) -> Result<Vec<u8>> {
    match state.hsm() {
        Some(hsm) if Hsm::holds(kind, alg) => {
            hsm.import_key(key_id, kind, alg, key)?;
            Ok(HSM_KEY.to_vec())
        }
        _ => Ok(state.root().wrap_bytes(key, &wrap_context(key_id))?),
    }
}

/// A key that comes whole: a TR-31 key block (version B or D) under `kbpk`, a `kek_…`
/// of the same account imported under dual control. Its header must say the kind
/// imported (`B0` BDK, `P0` zone PIN key, `K0`/`K1` KEK); the algorithm is the block's.
pub async fn import_block(
    state: &AppState,
    audit: &AuditScope,
    admin_key: &str,
    req: NewImport<'_>,
    block: &Sensitive<String>,
    kbpk: &str,
) -> Result<KeyImportView> {
    let prefix = id_kind(req.kind).ok_or(ServiceError::InvalidParameter)?;
    let name = crate::service::display_name(req.name)?;
    strongroom_core::parse_id(IdKind::Account, req.account)?;
    strongroom_core::parse_id(IdKind::Kek, kbpk)?;
    let kek = state
        .store()
        .imported_keys(Some(req.account))
        .await?
        .into_iter()
        .find(|k| k.id == kbpk && k.kind == "kek")
        .ok_or(ServiceError::NotFound)?;
    let root = state.root();
    let kek_bytes = root.unwrap_bytes(&kek.wrapped, &wrap_context(&kek.id))?;
    let (header, key) = strongroom_crypto::tr31::unwrap(&kek_bytes, block.expose().trim())
        .map_err(|_| ServiceError::KeyBlockInvalid)?;
    drop(kek_bytes);
    let usage_fits = match req.kind {
        "bdk" => header.key_usage == "B0",
        "zone_pin_key" => header.key_usage == "P0",
        _ => header.key_usage == "K0" || header.key_usage == "K1",
    };
    let alg = match (header.algorithm, key.len()) {
        ('T', 16) => Some(KeyAlgorithm::Tdes2),
        ('T', 24) => Some(KeyAlgorithm::Tdes3),
        ('A', 16) => Some(KeyAlgorithm::Aes128),
        ('A', 24) => Some(KeyAlgorithm::Aes192),
        ('A', 32) => Some(KeyAlgorithm::Aes256),
        _ => None,
    };
    let (Some(alg), true) = (alg, usage_fits) else {
        return Err(ServiceError::KeyBlockUsage);
    };
    let kcv_hex = hex::encode_upper(components::kcv(alg, &key)?);
    let now = state.now_ms();
    let import_id = crate::events::new_id(state.clock(), IdKind::KeyImport)?;
    let key_id = crate::events::new_id(state.clock(), prefix)?;
    crate::audit::set_resource(audit, "key_import", &import_id);
    let record = KeyImportRecord {
        id: import_id,
        account_id: req.account.to_owned(),
        kind: req.kind.to_owned(),
        algorithm: alg.as_str().to_owned(),
        name,
        components: 1,
        custodians: vec![admin_key.to_owned()],
        partial: None,
        created_ms: now,
        completed_ms: Some(now),
        key_id: Some(key_id.clone()),
    };
    let imported = ImportedKeyRecord {
        id: key_id.clone(),
        account_id: record.account_id.clone(),
        kind: record.kind.clone(),
        algorithm: record.algorithm.clone(),
        name: record.name.clone(),
        kcv: kcv_hex.clone(),
        wrapped: keep(state, &key_id, &record.kind, alg, &key)?,
        import_id: record.id.clone(),
        created_ms: now,
    };
    drop(key);
    state
        .store()
        .audited(audit)
        .imported_key(record.clone(), imported)
        .await?;
    Ok(view(
        &record,
        Some(ImportedKeyView {
            id: key_id,
            kcv: kcv_hex,
        }),
    ))
}
