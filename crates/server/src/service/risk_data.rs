//! Operators load the risk engine's country data at run time (docs/risk.md, "Country
//! data"): a BIN table (`text/csv`) and an IP country database (a MaxMind DB file).
//! Each upload is checked whole before anything is stored; a refused one leaves the data
//! in force untouched. A stored upload wins over the configuration's file, on every node
//! (each checks the stored versions every 2 seconds, see [`spawn`]).

use crate::auth::Admin;
use crate::risk::country_data::{self, InForce, Parsed, Part, Source};
use crate::risk::geo::GeoError;
use crate::service::{Result, ServiceError, secs};
use crate::state::AppState;
use serde::Serialize;
use strongroom_store::{DataBytes, RiskDataInfo, RiskDataStore};
use utoipa::ToSchema;

crate::service::object_name!(
    /// `risk_bin_table`.
    BinTableObject = "risk_bin_table"
);
crate::service::object_name!(
    /// `risk_ip_database`.
    IpDatabaseObject = "risk_ip_database"
);

/// Where the data in force came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceName {
    /// An operator's upload through this API (it wins over the configuration's file).
    Upload,
    /// The file the configuration names (`[risk] bin_table`, `[risk] ip_database`).
    Config,
    /// None loaded: the signals that need it are absent.
    None,
}

impl From<Source> for SourceName {
    fn from(s: Source) -> Self {
        match s {
            Source::Upload => Self::Upload,
            Source::Config => Self::Config,
            Source::None => Self::None,
        }
    }
}

/// What an upload was; absent when the data in force is not an upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadView {
    /// 1 for the first upload, then one more for each.
    pub version: i64,
    /// SHA-256 of the bytes, hex: compare it with the file you sent.
    pub sha256: String,
    /// Its size.
    pub size_bytes: i64,
    /// `admin:<key id>`.
    pub uploaded_by: String,
    /// Unix seconds.
    pub uploaded_at: i64,
}

impl UploadView {
    fn of(i: &RiskDataInfo) -> Self {
        Self {
            version: i.version,
            sha256: i.sha256.clone(),
            size_bytes: i.size_bytes,
            uploaded_by: i.created_by.clone(),
            uploaded_at: secs(i.created_ms),
        }
    }
}

/// The BIN table in force on the node that answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BinTableView {
    /// Always `risk_bin_table`.
    pub object: BinTableObject,
    /// Where it came from.
    pub source: SourceName,
    /// How many prefixes it holds (0 when none is loaded).
    pub prefixes: i64,
    /// The upload in force, when it is one.
    pub upload: Option<UploadView>,
    /// Unix seconds: when this node put it in force.
    pub loaded_at: i64,
}

/// The IP country database in force on the node that answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct IpDatabaseView {
    /// Always `risk_ip_database`.
    pub object: IpDatabaseObject,
    /// Where it came from.
    pub source: SourceName,
    /// The metadata's `database_type` (e.g. `GeoLite2-Country`); null when none is loaded.
    pub database_type: Option<String>,
    /// Unix seconds: when the database was built (how stale it is); null when none.
    pub built_at: Option<i64>,
    /// 4 (IPv4 only) or 6 (both); null when none.
    pub ip_version: Option<u16>,
    /// The upload in force, when it is one.
    pub upload: Option<UploadView>,
    /// Unix seconds: when this node put it in force.
    pub loaded_at: i64,
}

fn bin_table_view(state: &AppState, f: &InForce) -> BinTableView {
    let prefixes = state
        .geo()
        .bins()
        .map_or(0, |t| i64::try_from(t.len()).unwrap_or(i64::MAX));
    BinTableView {
        object: BinTableObject::Value,
        source: f.source.into(),
        prefixes,
        upload: f.upload.as_ref().map(UploadView::of),
        loaded_at: secs(f.loaded_ms),
    }
}

fn ip_database_view(state: &AppState, f: &InForce) -> IpDatabaseView {
    let info = state.geo().ips().map(|db| db.describe());
    IpDatabaseView {
        object: IpDatabaseObject::Value,
        source: f.source.into(),
        database_type: info.as_ref().map(|i| i.database_type.clone()),
        built_at: info
            .as_ref()
            .map(|i| i64::try_from(i.build_epoch).unwrap_or(i64::MAX)),
        ip_version: info.as_ref().map(|i| i.ip_version),
        upload: f.upload.as_ref().map(UploadView::of),
        loaded_at: secs(f.loaded_ms),
    }
}

/// The BIN table in force.
pub fn bin_table(state: &AppState) -> BinTableView {
    let f = state.country_data().in_force(Part::BinTable);
    bin_table_view(state, &f)
}

/// The IP database in force.
pub fn ip_database(state: &AppState) -> IpDatabaseView {
    let f = state.country_data().in_force(Part::IpDatabase);
    ip_database_view(state, &f)
}

/// Why an upload was refused, as the client sees it (a line number and a problem, never
/// the data).
fn refused(part: Part, e: &GeoError) -> ServiceError {
    let problem = e.to_string();
    match (part, e) {
        (Part::BinTable, GeoError::BinTableLine { line, problem }) => {
            ServiceError::BinTableInvalid {
                line: Some(*line),
                problem: problem.to_string(),
            }
        }
        (Part::BinTable, GeoError::BinTableConflict { line, .. }) => {
            ServiceError::BinTableInvalid {
                line: Some(*line),
                problem,
            }
        }
        (Part::BinTable, _) => ServiceError::BinTableInvalid {
            line: None,
            problem,
        },
        (Part::IpDatabase, _) => ServiceError::IpDatabaseInvalid { problem },
    }
}

/// Checks, stores and puts in force an upload of `part`: the info of the stored upload.
async fn put(state: &AppState, admin: &Admin, part: Part, bytes: Vec<u8>) -> Result<InForce> {
    let sha256 = hex::encode(strongroom_crypto::httpsig::sha256(&bytes));
    // Checked whole before anything is stored; the bytes are kept for the other nodes.
    let parsed: Parsed = country_data::parse(part, bytes.clone())
        .await
        .map_err(|e| refused(part, &e))?;
    let now = state.now_ms();
    let by = format!("admin:{}", admin.key_id);
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let version = state
        .store()
        .risk_data_info(part.name())
        .await?
        .map_or(1, |i| i.version.saturating_add(1));
    // Named before the write, which commits the request's audit record with it.
    crate::audit::set_version(&admin.audit, &format!("risk_{}", part.name()), version);
    let stored = state
        .store()
        .audited(&admin.audit)
        .put_risk_data(part.name(), version, &sha256, DataBytes(bytes), (&by, now))
        .await?;
    if !stored {
        // Another operator's upload took this version: theirs is in force; retry.
        return Err(ServiceError::Conflict);
    }
    let info = RiskDataInfo {
        name: part.name().to_owned(),
        version,
        sha256,
        size_bytes: size,
        created_by: by,
        created_ms: now,
    };
    state.country_data().install(parsed, info, now);
    Ok(state.country_data().in_force(part))
}

/// Replaces the BIN table (CSV rows `bin_prefix,country`) on every node.
pub async fn put_bin_table(state: &AppState, admin: &Admin, csv: Vec<u8>) -> Result<BinTableView> {
    let f = put(state, admin, Part::BinTable, csv).await?;
    Ok(bin_table_view(state, &f))
}

/// Replaces the IP country database (a MaxMind DB file) on every node.
pub async fn put_ip_database(
    state: &AppState,
    admin: &Admin,
    mmdb: Vec<u8>,
) -> Result<IpDatabaseView> {
    let f = put(state, admin, Part::IpDatabase, mmdb).await?;
    Ok(ip_database_view(state, &f))
}

/// Follows other nodes' uploads: every 2 seconds, swaps in a newer stored version.
pub fn spawn(state: AppState) {
    state.clone().spawn_worker(async move {
        loop {
            tokio::time::sleep(country_data::CHECK_EVERY).await;
            let now = state.now_ms();
            if let Err(e) = state.country_data().follow(state.store(), now).await {
                tracing::warn!(error = %e, "risk country data check failed; will retry");
            }
        }
    });
}
