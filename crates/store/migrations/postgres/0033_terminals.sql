-- Card-present terminals (docs/card-present.md). A terminal enciphers under keys derived
-- per transaction from a base derivation key (an imported `bdk_…`) and its own device
-- identity: the AES-DUKPT Initial Key ID, or the TDES-DUKPT initial KSN with the counter
-- cleared (`device`, hex). `counter` is the highest transaction counter accepted for
-- card data, `pin_counter` for PIN blocks (one transaction enciphers both under the
-- same KSN): one that does not move forward is a replay. Nothing of what a terminal
-- sends is stored.
CREATE TABLE terminals (
    id          TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    account_id  TEXT   NOT NULL REFERENCES accounts (id),
    mode        TEXT   NOT NULL,
    bdk_id      TEXT   NOT NULL REFERENCES imported_keys (id),
    scheme      TEXT   NOT NULL,
    device      TEXT   NOT NULL,
    serial      TEXT   NOT NULL,
    location    TEXT,
    counter     BIGINT NOT NULL,
    pin_counter BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    disabled_ms BIGINT
);
CREATE UNIQUE INDEX terminals_device ON terminals (bdk_id, device);
CREATE INDEX terminals_account ON terminals (account_id, mode, id);
