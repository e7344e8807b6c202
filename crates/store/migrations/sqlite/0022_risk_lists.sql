-- Allow and block lists of risk assessments (docs/risk.md, "Lists"): a card fingerprint,
-- an address or network, an email (as a keyed digest, never the address), a BIN prefix or
-- a device id, per account and mode, until `expires_ms` (NULL: until deleted). A
-- deleted entry stays, with who deleted it and when, as the record of what was listed.
CREATE TABLE risk_list_entries (
    id          TEXT    PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    list        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    note        TEXT,
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER,
    deleted_ms  INTEGER,
    deleted_by  TEXT
);
-- Pages of one list, newest first.
CREATE INDEX risk_list_entries_account ON risk_list_entries (account_id, mode, list, id);
-- What assessments load per account and mode, and the duplicate check of a new entry.
CREATE INDEX risk_list_entries_live ON risk_list_entries (account_id, mode, list, kind, value)
    WHERE deleted_ms IS NULL;
