-- Strongroom store, SQLite. Ids are time-ordered text; times are Unix milliseconds.

CREATE TABLE accounts (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    otp_delivery_url TEXT,
    created_ms       INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    account_id TEXT    REFERENCES accounts (id),
    kind       TEXT    NOT NULL,
    mode       TEXT    NOT NULL,
    prefix     TEXT    NOT NULL,
    digest     BLOB    NOT NULL,
    scopes     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX api_keys_digest ON api_keys (digest);
CREATE INDEX api_keys_account ON api_keys (account_id, id);

CREATE TABLE data_keys (
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    purpose    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    wrapped    BLOB    NOT NULL,
    state      TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    retired_ms INTEGER,
    PRIMARY KEY (account_id, purpose, version)
);
-- One writer per account and purpose.
CREATE UNIQUE INDEX data_keys_one_active ON data_keys (account_id, purpose) WHERE state = 'active';

CREATE TABLE cards (
    id          TEXT    NOT NULL PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    fp_version  INTEGER NOT NULL,
    key_version INTEGER NOT NULL,
    sealed      BLOB    NOT NULL,
    brand       TEXT    NOT NULL,
    bin         TEXT    NOT NULL,
    last4       TEXT    NOT NULL,
    exp_month   INTEGER NOT NULL,
    exp_year    INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
-- Dedup: one card per PAN fingerprint, account and mode.
CREATE UNIQUE INDEX cards_fingerprint ON cards (account_id, mode, fingerprint);
CREATE INDEX cards_list ON cards (account_id, mode, id);
CREATE INDEX cards_key_version ON cards (account_id, key_version);
CREATE INDEX cards_fp_version ON cards (account_id, fp_version);

CREATE TABLE otps (
    id          TEXT    NOT NULL PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    card_id     TEXT,
    api_key_id  TEXT    NOT NULL,
    code_digest BLOB    NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    used_ms     INTEGER
);

CREATE TABLE events (
    id         TEXT    NOT NULL PRIMARY KEY,
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    mode       TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    data       TEXT    NOT NULL
);
CREATE INDEX events_list ON events (account_id, mode, id);
