-- Device integrity (docs/device-integrity.md). An account registers each mobile
-- application whose Play Integrity tokens it accepts: the token decryption key and the
-- verification key (both wrapped by the root key, like every other key) and what a verdict
-- must say. A challenge (`hash`) is kept only as its SHA-256, bound to the caller (the API
-- key) and the application, and deleted when used; an attestation is what a good token
-- earns: the step-ups an account names in `require_attestation` (space-separated actions)
-- need one.
CREATE TABLE integrity_apps (
    id                       TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id               TEXT    NOT NULL REFERENCES accounts (id),
    application_id           TEXT    NOT NULL,
    decryption_key           BYTEA   NOT NULL,
    verification_key         BYTEA   NOT NULL,
    allowed_certificates     TEXT    NOT NULL,
    min_version_code         BIGINT,
    required_device_verdicts TEXT    NOT NULL,
    require_licensed         BIGINT  NOT NULL,
    max_token_age_s          BIGINT  NOT NULL,
    attestation_ttl_s        BIGINT  NOT NULL,
    reusable_attestations    BIGINT  NOT NULL,
    created_ms               BIGINT  NOT NULL,
    updated_ms               BIGINT  NOT NULL
);
CREATE UNIQUE INDEX integrity_apps_application ON integrity_apps (account_id, application_id);

CREATE TABLE integrity_challenges (
    digest         BYTEA   NOT NULL PRIMARY KEY,
    account_id     TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    application_id TEXT    NOT NULL,
    expires_ms     BIGINT  NOT NULL
);
CREATE INDEX integrity_challenges_expiry ON integrity_challenges (expires_ms);

CREATE TABLE attestations (
    id             TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    account_id     TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    application_id TEXT    NOT NULL,
    reusable       BIGINT  NOT NULL,
    created_ms     BIGINT  NOT NULL,
    expires_ms     BIGINT  NOT NULL,
    used_ms        BIGINT
);
CREATE INDEX attestations_expiry ON attestations (expires_ms);

ALTER TABLE account_controls ADD COLUMN require_attestation TEXT;
