-- Bearer tokens (issue 3): the JWT signing keys. One row per generation; the signer at
-- time t is the newest generation whose active_from_ms <= t (a rotation inserts the next
-- generation with active_from_ms in the future: pre-publication). `wrapped` is the
-- private key (PKCS#8) wrapped by the root key; emptied once the key can no longer sign.

CREATE TABLE jwt_keys (
    kid            TEXT    NOT NULL PRIMARY KEY,
    generation     INTEGER NOT NULL,
    alg            TEXT    NOT NULL,
    wrapped        BLOB    NOT NULL,
    public_jwk     TEXT    NOT NULL,
    created_ms     INTEGER NOT NULL,
    active_from_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX jwt_keys_generation ON jwt_keys (generation);
