//! Country data an operator uploads for the risk engine (docs/risk.md, "Country data"):
//! the BIN table and the IP country database, one current row each. Reads of the small
//! description run on every node's version check; the bytes are read only when the
//! version moved. Writes go through the one writer as [`crate::sql::WriteOp::RiskData`].

use crate::StoreResult;
use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use std::fmt;

/// What an upload is, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskDataInfo {
    /// `bin_table` or `ip_database`.
    pub name: String,
    /// 1 for the first upload, then one more for each.
    pub version: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// How many bytes.
    pub size_bytes: i64,
    /// `admin:<id>`.
    pub created_by: String,
    /// When it was uploaded.
    pub created_ms: i64,
}

/// The bytes of an upload. Its `Debug` gives the length only: the data may be licensed.
#[derive(Clone, PartialEq, Eq)]
pub struct DataBytes(pub Vec<u8>);

impl fmt::Debug for DataBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataBytes({} bytes)", self.0.len())
    }
}

/// The uploads' storage reads.
#[allow(async_fn_in_trait)]
pub trait RiskDataStore: Send + Sync {
    /// What the current upload of `name` is; `None` before the first.
    async fn risk_data_info(&self, name: &str) -> StoreResult<Option<RiskDataInfo>>;
    /// The current upload of `name` with its bytes.
    async fn risk_data(&self, name: &str) -> StoreResult<Option<(RiskDataInfo, DataBytes)>>;
}

macro_rules! cols {
    () => {
        "name, version, sha256, size_bytes, created_by, created_ms"
    };
}

const INFO: &str = concat!("SELECT ", cols!(), " FROM risk_data WHERE name = $1");
const WITH_DATA: &str = concat!("SELECT ", cols!(), ", data FROM risk_data WHERE name = $1");
/// Stores version `$2` unless the current one is not `$2 - 1` (another upload came
/// first): then no row is returned.
const PUT: &str = "INSERT INTO risk_data \
     (name, version, sha256, size_bytes, data, created_by, created_ms) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE $2 = 1 ON CONFLICT (name) DO NOTHING";
const REPLACE: &str = "UPDATE risk_data SET version = $2, sha256 = $3, size_bytes = $4, \
     data = $5, created_by = $6, created_ms = $7 WHERE name = $1 AND version = $2 - 1";

impl FromRow for RiskDataInfo {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            name: r.text(0)?,
            version: r.int(1)?,
            sha256: r.text(2)?,
            size_bytes: r.int(3)?,
            created_by: r.text(4)?,
            created_ms: r.int(5)?,
        })
    }
}

struct WithData(RiskDataInfo, DataBytes);

impl FromRow for WithData {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self(RiskDataInfo::from_row(r)?, DataBytes(r.blob(6)?)))
    }
}

pub(crate) async fn info<C: Exec>(c: &mut C, name: &str) -> StoreResult<Option<RiskDataInfo>> {
    sql::one(c, INFO, args![name]).await
}

pub(crate) async fn with_data<C: Exec>(
    c: &mut C,
    name: &str,
) -> StoreResult<Option<(RiskDataInfo, DataBytes)>> {
    let row: Option<WithData> = sql::one(c, WITH_DATA, args![name]).await?;
    Ok(row.map(|WithData(i, d)| (i, d)))
}

/// An upload, applied by the one writer: it replaces the current one of its name, whose
/// version must be one less than its own.
#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) sha256: String,
    pub(crate) data: DataBytes,
    pub(crate) created_by: String,
    pub(crate) created_ms: i64,
}

/// Applies `op`: whether it was stored (`false`: another upload took its version).
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<bool> {
    let size = i64::try_from(op.data.0.len()).unwrap_or(i64::MAX);
    let a = args![
        &op.name,
        op.version,
        &op.sha256,
        size,
        op.data.0.as_slice(),
        &op.created_by,
        op.created_ms
    ];
    let sql = if op.version == 1 { PUT } else { REPLACE };
    Ok(c.exec(sql, a).await? == 1)
}
