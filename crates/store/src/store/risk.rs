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

    async fn labelled_assessments(
        &self,
        account_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AssessmentRecord>> {
        labelled(&mut self.reader().await?, account_id, limit).await
    }

    async fn risk_models(&self) -> StoreResult<Vec<RiskModelRecord>> {
        models(&mut self.reader().await?).await
    }

    async fn assessments_since(
        &self,
        account_id: &str,
        mode: Mode,
        since_ms: i64,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<AssessmentRecord>> {
        let mut c = self.reader().await?;
        since(&mut c, account_id, mode, since_ms, before, limit).await
    }

    async fn rule_sets(
        &self,
        account_id: &str,
        mode: Mode,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<RuleSetRecord>> {
        rule_sets(&mut self.reader().await?, account_id, mode, before, limit).await
    }
}

impl Writes<'_> {
    /// Stores an assessment.
    pub async fn insert_assessment(self, record: &AssessmentRecord) -> StoreResult<()> {
        self.write(Write::risk(Op::Insert(Box::new(record.clone()))))
            .await
            .map(drop)
    }

    /// Puts a model in service in its state (`shadow` or `active`), retiring the one
    /// that held that state.
    pub async fn promote_risk_model(self, model: &RiskModelRecord) -> StoreResult<()> {
        self.write(Write::risk(Op::Promote(model.clone())))
            .await
            .map(drop)
    }

    /// Stores a new version of an account's rules; `false` (nothing written) when that
    /// version, or a later one, exists already.
    pub async fn put_rule_set(self, record: &RuleSetRecord) -> StoreResult<bool> {
        let n = self
            .write(Write::risk(Op::PutRules(record.clone())))
            .await?;
        Ok(n > 0)
    }

    /// Labels the account's assessments in this mode (one, or every one of a card);
    /// how many it labelled.
    pub async fn label_assessments(
        self,
        account_id: &str,
        mode: Mode,
        target: LabelTarget,
        label: &str,
        label_ms: i64,
    ) -> StoreResult<i64> {
        let op = Op::Label {
            account_id: account_id.to_owned(),
            mode,
            target,
            label: label.to_owned(),
            label_ms,
        };
        self.write(Write::risk(op)).await
    }
}
