-- Gateway controls (issue 3): per-account settings, per-key IP allowlists, request-signing
-- keys, signature nonces and idempotency records. Times are Unix milliseconds.

-- Settings an account (or an operator) changes; a missing row means the defaults.
CREATE TABLE account_controls (
    account_id              TEXT    COLLATE "C" NOT NULL PRIMARY KEY REFERENCES accounts (id),
    require_signed_requests BIGINT NOT NULL DEFAULT 0,
    -- CIDRs separated by spaces; empty = no restriction.
    ip_allowlist            TEXT    NOT NULL DEFAULT '',
    rate_limit_per_minute   BIGINT,
    updated_ms              BIGINT NOT NULL
);

CREATE TABLE api_key_controls (
    key_id       TEXT NOT NULL PRIMARY KEY REFERENCES api_keys (id),
    ip_allowlist TEXT NOT NULL DEFAULT ''
);

-- Ed25519 public keys that sign requests (RFC 9421); the id is the `keyid`.
CREATE TABLE signing_keys (
    id         TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    public_key BYTEA    NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX signing_keys_account ON signing_keys (account_id, id);

-- Nonces seen in signatures, kept until the signature could no longer be accepted.
CREATE TABLE signature_nonces (
    key_id     TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX signature_nonces_expiry ON signature_nonces (expires_ms);

-- Idempotency keys: scope is the account (or admin key) id. The body is a response
-- without secrets (responses that carry one are never stored).
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash BYTEA    NOT NULL,
    state        TEXT    NOT NULL,
    status       BIGINT,
    body         BYTEA,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_ms);
