-- Allow and block lists of risk assessments (docs/risk.md, "Lists"): a card fingerprint,
-- an address or network, an email (as a keyed digest, never the address), a BIN prefix or
-- a device id, per account and mode, until `expires_ms` (NULL: until deleted). A
-- deleted entry stays, with who deleted it and when, as the record of what was listed.
CREATE TABLE risk_list_entries (
    id          TEXT    COLLATE "C" PRIMARY KEY,
    account_id  TEXT    COLLATE "C" NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    list        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    note        TEXT,
    created_by  TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT,
    deleted_ms  BIGINT,
    deleted_by  TEXT
);
-- Pages of one list, newest first.
CREATE INDEX risk_list_entries_account ON risk_list_entries (account_id, mode, list, id);
-- What assessments load per account and mode, and the duplicate check of a new entry.
CREATE INDEX risk_list_entries_live ON risk_list_entries (account_id, mode, list, kind, value)
    WHERE deleted_ms IS NULL;
-- Nodes keep each account's live entries in memory; a change, by any node, drops every
-- node's caches (0007_cache_notify.sql).
CREATE TRIGGER risk_list_entries_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON risk_list_entries FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
