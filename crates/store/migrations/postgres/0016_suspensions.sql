-- Suspensions (docs/risk.md): a card fingerprint, address or network, email (as a keyed
-- digest, never the address), device id, API key or account refused until `expires_ms`,
-- unless lifted before. Rows stay after they end: they are the record of who suspended
-- what, and why.
CREATE TABLE suspensions (
    id          TEXT    COLLATE "C" PRIMARY KEY,
    account_id  TEXT    COLLATE "C" NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    target_kind TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT  NOT NULL,
    lifted_ms   BIGINT,
    lifted_by   TEXT
);
CREATE INDEX suspensions_account ON suspensions (account_id, mode, id);
-- What the gateway loads per account, and what the expiry sweep finds.
CREATE INDEX suspensions_active ON suspensions (expires_ms) WHERE lifted_ms IS NULL;
-- Nodes keep each account's active suspensions in memory (the gateway reads them on every
-- request); a change, by any node, drops every node's caches (0007_cache_notify.sql).
CREATE TRIGGER suspensions_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON suspensions
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
