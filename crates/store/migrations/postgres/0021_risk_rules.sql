-- Risk rule sets (docs/risk.md, "Rules"): each PUT of an account's rules, per mode, kept
-- as a numbered version; the highest is in force, the others are the history. The set is
-- the JSON the operator put (checked whole before it is stored).
CREATE TABLE risk_rule_sets (
    account_id TEXT    COLLATE "C" NOT NULL REFERENCES accounts (id),
    mode       TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    rules      TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    PRIMARY KEY (account_id, mode, version)
);
-- A dry run reads an account's assessments of the last days.
CREATE INDEX risk_assessments_recent ON risk_assessments (account_id, mode, created_ms);
-- Every node drops its cached rules when any node puts a set.
CREATE TRIGGER risk_rule_sets_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_rule_sets
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
