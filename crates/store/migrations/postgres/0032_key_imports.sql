-- Dual-control key imports (docs/key-custody.md, "Importing keys"). A ceremony collects
-- clear components from different admin keys; until the last arrives, their XOR so far
-- is kept only wrapped by the root key (`partial`), never in clear. The key it makes is
-- kept wrapped like every other key, with its check value.
CREATE TABLE key_imports (
    id           TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    account_id   TEXT   NOT NULL REFERENCES accounts (id),
    kind         TEXT   NOT NULL,
    algorithm    TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    components   BIGINT NOT NULL,
    -- The admin keys that gave a component, in order, space-separated.
    custodians   TEXT   NOT NULL,
    partial      BYTEA,
    created_ms   BIGINT NOT NULL,
    completed_ms BIGINT,
    key_id       TEXT
);

CREATE TABLE imported_keys (
    id          TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    account_id  TEXT   NOT NULL REFERENCES accounts (id),
    kind        TEXT   NOT NULL,
    algorithm   TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    kcv         TEXT   NOT NULL,
    wrapped     BYTEA  NOT NULL,
    import_id   TEXT   NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX imported_keys_account ON imported_keys (account_id, id);
