//! Dual-control key imports (docs/key-custody.md, "Importing keys"): the ceremonies and
//! the keys they made. Writes go through the one writer as [`crate::sql::WriteOp::KeyImport`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};

/// One import ceremony.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyImportRecord {
    /// `kimp_…`
    pub id: String,
    /// The account the key is for.
    pub account_id: String,
    /// `bdk`, `zone_pin_key` or `kek`.
    pub kind: String,
    /// `aes128`, `aes192`, `aes256`, `tdes2` or `tdes3`.
    pub algorithm: String,
    /// What the operators call it.
    pub name: String,
    /// How many components make the key.
    pub components: i64,
    /// The admin keys that gave a component so far, in order.
    pub custodians: Vec<String>,
    /// The XOR of the components so far, wrapped by the root key.
    pub partial: Option<Vec<u8>>,
    /// When it began.
    pub created_ms: i64,
    /// When the last component made the key.
    pub completed_ms: Option<i64>,
    /// The key made.
    pub key_id: Option<String>,
}

/// A key made by an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedKeyRecord {
    /// `bdk_…`, `zpk_…` or `kek_…`
    pub id: String,
    /// Its account.
    pub account_id: String,
    /// `bdk`, `zone_pin_key` or `kek`.
    pub kind: String,
    /// See [`KeyImportRecord::algorithm`].
    pub algorithm: String,
    /// See [`KeyImportRecord::name`].
    pub name: String,
    /// Its check value (6 hex digits).
    pub kcv: String,
    /// The key, wrapped by the root key.
    pub wrapped: Vec<u8>,
    /// The ceremony that made it.
    pub import_id: String,
    /// When it was made.
    pub created_ms: i64,
}

/// The reads.
#[allow(async_fn_in_trait)]
pub trait KeyImportStore: Send + Sync {
    /// One ceremony.
    async fn key_import(&self, id: &str) -> StoreResult<Option<KeyImportRecord>>;
    /// Every imported key, of one account or of all.
    async fn imported_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ImportedKeyRecord>>;
    /// One imported key.
    async fn imported_key(&self, id: &str) -> StoreResult<Option<ImportedKeyRecord>>;
}

const GET_IMPORT: &str = "SELECT id, account_id, kind, algorithm, name, components, custodians, \
     partial, created_ms, completed_ms, key_id FROM key_imports WHERE id = $1";
const INSERT_IMPORT: &str = "INSERT INTO key_imports (id, account_id, kind, algorithm, name, \
     components, custodians, partial, created_ms, completed_ms, key_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// A component: only if the custodians are still those read (no other component came in
/// meanwhile) and the ceremony is not over.
const ADD_COMPONENT: &str = "UPDATE key_imports SET custodians = $2, partial = $3 \
     WHERE id = $1 AND custodians = $4 AND completed_ms IS NULL";
const COMPLETE: &str = "UPDATE key_imports SET custodians = $2, partial = NULL, \
     completed_ms = $3, key_id = $4 WHERE id = $1 AND custodians = $5 AND completed_ms IS NULL";
const INSERT_KEY: &str = "INSERT INTO imported_keys (id, account_id, kind, algorithm, name, kcv, \
     wrapped, import_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const KEYS_OF: &str = "SELECT id, account_id, kind, algorithm, name, kcv, wrapped, import_id, \
     created_ms FROM imported_keys WHERE account_id = $1 ORDER BY id";
const KEY: &str = "SELECT id, account_id, kind, algorithm, name, kcv, wrapped, import_id, \
     created_ms FROM imported_keys WHERE id = $1";
const ALL_KEYS: &str = "SELECT id, account_id, kind, algorithm, name, kcv, wrapped, import_id, \
     created_ms FROM imported_keys ORDER BY id";

impl FromRow for KeyImportRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            kind: r.text(2)?,
            algorithm: r.text(3)?,
            name: r.text(4)?,
            components: r.int(5)?,
            custodians: r.text(6)?.split_whitespace().map(str::to_owned).collect(),
            partial: r.opt_blob(7)?,
            created_ms: r.int(8)?,
            completed_ms: r.opt_int(9)?,
            key_id: r.opt_text(10)?,
        })
    }
}

impl FromRow for ImportedKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            kind: r.text(2)?,
            algorithm: r.text(3)?,
            name: r.text(4)?,
            kcv: r.text(5)?,
            wrapped: r.blob(6)?,
            import_id: r.text(7)?,
            created_ms: r.int(8)?,
        })
    }
}

pub(crate) async fn get<C: Exec>(c: &mut C, id: &str) -> StoreResult<Option<KeyImportRecord>> {
    sql::one(c, GET_IMPORT, args![id]).await
}

pub(crate) async fn key<C: Exec>(c: &mut C, id: &str) -> StoreResult<Option<ImportedKeyRecord>> {
    sql::one(c, KEY, args![id]).await
}

pub(crate) async fn keys<C: Exec>(
    c: &mut C,
    account_id: Option<&str>,
) -> StoreResult<Vec<ImportedKeyRecord>> {
    match account_id {
        Some(a) => sql::many(c, KEYS_OF, args![a]).await,
        None => sql::many(c, ALL_KEYS, &[]).await,
    }
}

/// A change to a ceremony.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new ceremony.
    Create(KeyImportRecord),
    /// A component that is not the last: the custodians (were `expect`) and the partial.
    Component {
        id: String,
        expect: Vec<String>,
        custodians: Vec<String>,
        partial: Vec<u8>,
    },
    /// A key that came whole (a TR-31 key block under an imported KEK): the finished
    /// ceremony and the key, together.
    Imported {
        import: KeyImportRecord,
        key: ImportedKeyRecord,
    },
    /// The last component: the ceremony ends and the key is stored, together.
    Complete {
        id: String,
        expect: Vec<String>,
        custodians: Vec<String>,
        key: ImportedKeyRecord,
    },
}

/// Applies `op`: how many ceremonies it changed.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<u64> {
    match op {
        Op::Create(r) => insert_import(c, r).await,
        Op::Imported { import, key } => {
            let n = insert_import(c, import).await?;
            insert_key(c, key).await?;
            Ok(n)
        }
        Op::Component {
            id,
            expect,
            custodians,
            partial,
        } => {
            let (now, was) = (custodians.join(" "), expect.join(" "));
            let a = args![id, now.as_str(), partial.as_slice(), was.as_str()];
            c.exec(ADD_COMPONENT, a).await
        }
        Op::Complete {
            id,
            expect,
            custodians,
            key,
        } => {
            let (now, was) = (custodians.join(" "), expect.join(" "));
            let a = args![id, now.as_str(), key.created_ms, &key.id, was.as_str()];
            let n = c.exec(COMPLETE, a).await?;
            if n == 1 {
                insert_key(c, key).await?;
            }
            Ok(n)
        }
    }
}

async fn insert_import<C: Exec>(c: &mut C, r: &KeyImportRecord) -> StoreResult<u64> {
    let custodians = r.custodians.join(" ");
    let a = args![
        &r.id,
        &r.account_id,
        &r.kind,
        &r.algorithm,
        &r.name,
        r.components,
        custodians.as_str(),
        r.partial.as_deref(),
        r.created_ms,
        r.completed_ms,
        r.key_id.as_deref()
    ];
    c.exec(INSERT_IMPORT, a).await
}

async fn insert_key<C: Exec>(c: &mut C, key: &ImportedKeyRecord) -> StoreResult<u64> {
    let k = args![
        &key.id,
        &key.account_id,
        &key.kind,
        &key.algorithm,
        &key.name,
        &key.kcv,
        key.wrapped.as_slice(),
        &key.import_id,
        key.created_ms
    ];
    c.exec(INSERT_KEY, k).await
}
