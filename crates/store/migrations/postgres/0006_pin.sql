-- PIN service (issue 6). PINs are held only as ISO 9564-1 format 4 blocks enciphered
-- under the account's `pin` data key; nothing here is a clear PIN.

-- One PIN per card. The failure counter and the lock live beside the block and are
-- updated atomically, so they hold across restarts and nodes.
CREATE TABLE pins (
    card_id     TEXT    COLLATE "C" NOT NULL PRIMARY KEY REFERENCES cards (id) ON DELETE CASCADE,
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    key_version BIGINT  NOT NULL,
    block       BYTEA   NOT NULL,
    failures    BIGINT  NOT NULL,
    locked      BIGINT  NOT NULL,
    updated_ms  BIGINT  NOT NULL
);
CREATE INDEX pins_key_version ON pins (account_id, key_version);

-- Per-account lockout threshold (absent: the default).
CREATE TABLE pin_settings (
    account_id   TEXT    NOT NULL PRIMARY KEY REFERENCES accounts (id),
    max_failures BIGINT  NOT NULL
);

-- Spent payload ids, kept until the payload could no longer be accepted anyway.
CREATE TABLE pin_jtis (
    account_id TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_ms BIGINT  NOT NULL,
    PRIMARY KEY (account_id, jti)
);
CREATE INDEX pin_jtis_expiry ON pin_jtis (expires_ms);

-- RSA transport keys (PKCS#8 wrapped by the root key). The newest is current; an
-- older one decrypts until retire_after_ms.
CREATE TABLE pin_transport_keys (
    kid             TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    wrapped         BYTEA   NOT NULL,
    created_ms      BIGINT  NOT NULL,
    retire_after_ms BIGINT 
);
