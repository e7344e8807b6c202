-- Webhooks (issue 4): endpoints, the event types each wants, one delivery row per
-- (event, endpoint) created in the same transaction as the event, and every attempt.

CREATE TABLE webhook_endpoints (
    id                 TEXT NOT NULL PRIMARY KEY,
    account_id         TEXT    NOT NULL REFERENCES accounts (id),
    mode               TEXT    NOT NULL,
    url                TEXT    NOT NULL,
    signing            TEXT    NOT NULL,
    description        TEXT,
    -- The signing secret (HMAC) or Ed25519 seed, wrapped by the root key.
    secret_wrapped     BLOB   NOT NULL,
    secret_version     INTEGER NOT NULL,
    -- The previous secret after a rotation, used alongside until old_expires_ms.
    old_wrapped        BLOB,
    old_version        INTEGER,
    old_expires_ms     INTEGER,
    disabled_ms        INTEGER,
    disabled_reason    TEXT,
    failing_since_ms   INTEGER,
    created_ms         INTEGER NOT NULL,
    -- 'webhook', or 'otp': the account's OTP delivery endpoint (receives only otp.created).
    kind               TEXT    NOT NULL DEFAULT 'webhook'
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, mode, id);
CREATE UNIQUE INDEX webhook_endpoints_one_otp ON webhook_endpoints (account_id, mode) WHERE kind = 'otp';

CREATE TABLE webhook_endpoint_events (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, event_type)
);

CREATE TABLE webhook_deliveries (
    id            TEXT NOT NULL PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    endpoint_id   TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    account_id    TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    attempts      INTEGER NOT NULL,
    next_ms       INTEGER NOT NULL,
    claimed_until INTEGER,
    created_ms    INTEGER NOT NULL,
    last_status   INTEGER,
    delivered_ms  INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id   TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    status        INTEGER,
    latency_ms    INTEGER NOT NULL,
    error_class   TEXT,
    response_body TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, at_ms);

CREATE TABLE inbound_hooks (
    id          TEXT NOT NULL PRIMARY KEY,
    source      TEXT    NOT NULL,
    verified    INTEGER NOT NULL,
    reason      TEXT,
    received_ms INTEGER NOT NULL,
    body        TEXT
);
