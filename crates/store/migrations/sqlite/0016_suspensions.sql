-- Suspensions (docs/risk.md): a card fingerprint, address or network, email (as a keyed
-- digest, never the address), device id, API key or account refused until `expires_ms`,
-- unless lifted before. Rows stay after they end: they are the record of who suspended
-- what, and why.
CREATE TABLE suspensions (
    id          TEXT    PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    target_kind TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    lifted_ms   INTEGER,
    lifted_by   TEXT
);
CREATE INDEX suspensions_account ON suspensions (account_id, mode, id);
-- What the gateway loads per account, and what the expiry sweep finds.
CREATE INDEX suspensions_active ON suspensions (expires_ms) WHERE lifted_ms IS NULL;
