-- What the vault knows of its root key (docs/key-custody.md): which provider holds it, a
-- verifier (a one-way derivation that tells the right key from a wrong one and reveals
-- nothing of it), and for a sealed start the Shamir threshold, the number of shares and a
-- digest of each share. Never the key, never a share. One row per generation; the row
-- without `retired_ms` is the key in force.
CREATE TABLE root_key (
    generation     INTEGER PRIMARY KEY,
    provider       TEXT NOT NULL,
    verifier       BLOB NOT NULL,
    threshold      INTEGER,
    shares         INTEGER,
    share_digests  BLOB,
    created_ms     INTEGER NOT NULL,
    retired_ms     INTEGER
);
