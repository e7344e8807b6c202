//! [`crate::risk`]'s trait, implemented for [`Store`], and its writes on [`Writes`].

use crate::StoreResult;
use crate::risk::*;
use crate::sql::Write;
use crate::store::{Store, Writes};
use strongroom_core::Mode;

impl RiskStore for Store {
    async fn assessment(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
    ) -> StoreResult<Option<AssessmentRecord>> {
        assessment(&mut self.reader().await?, account_id, mode, id).await
    }
}

impl Writes<'_> {
    /// Stores an assessment.
    pub async fn insert_assessment(self, record: &AssessmentRecord) -> StoreResult<()> {
        self.write(Write::risk(Op::Insert(record.clone()))).await
    }
}
