-- Cards are found by fingerprint through the fingerprint's first 8 bytes, not through a
-- unique index on (account_id, mode, fingerprint).
--
-- Fingerprints are random, so every new card lands on a random leaf of this index, and
-- each group commit writes one index page per card it carries; the checkpoint copies
-- them all again. Entries of 8 bytes (about 14 with the row id) instead of about 75
-- make the index a fifth of the size: a commit's cards share leaves more often, fewer
-- leaves split, and the index of a million cards fits in the writer's cache.
--
-- Every lookup says `substr(fingerprint, 1, 8) = substr(?, 1, 8)` beside the full
-- comparison (crates/store/src/sql.rs, `fp_prefix!`). Uniqueness per account and mode is
-- kept by the insert, which looks the fingerprint up first, inside the writer's
-- transaction; SQLite runs one write transaction at a time.
DROP INDEX cards_fingerprint;
CREATE INDEX cards_fp_prefix ON cards (substr(fingerprint, 1, 8));
