-- The risk engine's velocity counters of a single node (docs/risk.md, "Assessments"): they
-- live in the node's memory, and are kept here across a restart (written at shutdown, read
-- back and cleared at start). Subjects are keys of fingerprints, addresses, digests and
-- device ids, never a card number or an email address.
CREATE TABLE velocity_snapshot (
    tbl      INTEGER NOT NULL,
    subject  TEXT NOT NULL,
    entries  BLOB NOT NULL
);
