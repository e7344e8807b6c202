-- Strongroom store, PostgreSQL. Ids are time-ordered text compared bytewise (COLLATE "C");
-- times are Unix milliseconds.

CREATE TABLE accounts (
    id               TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    otp_delivery_url TEXT,
    created_ms       BIGINT  NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id TEXT    REFERENCES accounts (id),
    kind       TEXT    NOT NULL,
    mode       TEXT    NOT NULL,
    prefix     TEXT    NOT NULL,
    digest     BYTEA   NOT NULL,
    scopes     TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    revoked_ms BIGINT
);
CREATE UNIQUE INDEX api_keys_digest ON api_keys (digest);
CREATE INDEX api_keys_account ON api_keys (account_id, id);

CREATE TABLE data_keys (
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    purpose    TEXT    NOT NULL,
    version    BIGINT  NOT NULL,
    wrapped    BYTEA   NOT NULL,
    state      TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    retired_ms BIGINT ,
    PRIMARY KEY (account_id, purpose, version)
);
-- One writer per account and purpose.
CREATE UNIQUE INDEX data_keys_one_active ON data_keys (account_id, purpose) WHERE state = 'active';

CREATE TABLE cards (
    id          TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    fingerprint BYTEA   NOT NULL,
    fp_version  BIGINT  NOT NULL,
    key_version BIGINT  NOT NULL,
    sealed      BYTEA   NOT NULL,
    brand       TEXT    NOT NULL,
    bin         TEXT    NOT NULL,
    last4       TEXT    NOT NULL,
    exp_month   BIGINT  NOT NULL,
    exp_year    BIGINT  NOT NULL,
    created_ms  BIGINT  NOT NULL
);
-- Dedup: one card per PAN fingerprint, account and mode.
CREATE UNIQUE INDEX cards_fingerprint ON cards (account_id, mode, fingerprint);
CREATE INDEX cards_list ON cards (account_id, mode, id);
CREATE INDEX cards_key_version ON cards (account_id, key_version);
CREATE INDEX cards_fp_version ON cards (account_id, fp_version);

CREATE TABLE otps (
    id          TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    purpose     TEXT    NOT NULL,
    card_id     TEXT,
    api_key_id  TEXT    NOT NULL,
    code_digest BYTEA   NOT NULL,
    created_ms  BIGINT  NOT NULL,
    expires_ms  BIGINT  NOT NULL,
    attempts    BIGINT  NOT NULL,
    used_ms     BIGINT
);

CREATE TABLE events (
    id         TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    mode       TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    created_ms BIGINT  NOT NULL,
    data       TEXT    NOT NULL
);
CREATE INDEX events_list ON events (account_id, mode, id);
