-- Risk rule sets (docs/risk.md, "Rules"): each PUT of an account's rules, per mode, kept
-- as a numbered version; the highest is in force, the others are the history. The set is
-- the JSON the operator put (checked whole before it is stored).
CREATE TABLE risk_rule_sets (
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    mode       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    rules      TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, mode, version)
);
-- A dry run reads an account's assessments of the last days.
CREATE INDEX risk_assessments_recent ON risk_assessments (account_id, mode, created_ms);
