//! [`crate::risk_data`]'s trait, implemented for [`Store`], and its write on [`Writes`].

use crate::StoreResult;
use crate::risk_data::*;
use crate::sql::Write;
use crate::store::{Store, Writes};

impl RiskDataStore for Store {
    async fn risk_data_info(&self, name: &str) -> StoreResult<Option<RiskDataInfo>> {
        info(&mut self.reader().await?, name).await
    }

    async fn risk_data(&self, name: &str) -> StoreResult<Option<(RiskDataInfo, DataBytes)>> {
        with_data(&mut self.reader().await?, name).await
    }
}

impl Writes<'_> {
    /// Stores `data` as version `version` of the upload `name` (`bin_table`,
    /// `ip_database`), checked by the caller, replacing version `version - 1`: `false`
    /// (nothing written) when another upload took the version first.
    pub async fn put_risk_data(
        self,
        name: &str,
        version: i64,
        sha256: &str,
        data: DataBytes,
        (created_by, created_ms): (&str, i64),
    ) -> StoreResult<bool> {
        let op = Op {
            name: name.to_owned(),
            version,
            sha256: sha256.to_owned(),
            data,
            created_by: created_by.to_owned(),
            created_ms,
        };
        self.write(Write::risk_data(op)).await
    }
}
