-- Feedback on a card labels every assessment of its fingerprint (docs/risk.md); training
-- reads the labelled rows in time order.
CREATE INDEX risk_assessments_fingerprint ON risk_assessments (account_id, mode, fingerprint);
CREATE INDEX risk_assessments_labelled ON risk_assessments (created_ms) WHERE label IS NOT NULL;
