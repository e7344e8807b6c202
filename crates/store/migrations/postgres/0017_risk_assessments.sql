-- Risk assessments (docs/risk.md): the score, decision and reasons of one card use,
-- with the features they came from (what a model is later trained on) and the subjects
-- they concern. No card number and no email address: a fingerprint and a keyed digest.
CREATE TABLE risk_assessments (
    id            TEXT    COLLATE "C" PRIMARY KEY,
    account_id    TEXT    COLLATE "C" NOT NULL REFERENCES accounts (id),
    mode          TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    score         BIGINT  NOT NULL,
    decision      TEXT    NOT NULL,
    reasons       TEXT    NOT NULL,
    features      TEXT    NOT NULL,
    rules_version TEXT    NOT NULL,
    model_version TEXT,
    fingerprint   TEXT,
    ip            TEXT,
    email_digest  TEXT,
    device_id     TEXT,
    key_id        TEXT,
    suspension_id TEXT,
    label         TEXT,
    label_ms      BIGINT,
    created_ms    BIGINT  NOT NULL
);
CREATE INDEX risk_assessments_account ON risk_assessments (account_id, mode, id);
