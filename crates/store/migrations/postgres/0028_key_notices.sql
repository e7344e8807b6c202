-- The key-age notices already sent (docs/key-custody.md, "Key-age policy"): one row per key
-- and notice (`due_30`, `due_7`, `expired`), so that each event goes out once however many
-- nodes sweep. A key is named by kind and id (`data_key:acct_…:cards:2`), never by its
-- material.
CREATE TABLE key_notices (
    key_ref     TEXT NOT NULL,
    notice      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (key_ref, notice)
);
