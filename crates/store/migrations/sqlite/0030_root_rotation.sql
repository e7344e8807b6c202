-- Root-key rotation (docs/key-custody.md). A generation after the first carries the
-- digest key (which keys the stored digests of API secrets, so it outlives the root key
-- that made it) wrapped under its own root key. While a rotation runs, the next
-- generation's row also holds the next root key wrapped under the one in force
-- (`transit`), so that an interrupted rotation can be taken up again; its end clears it
-- and retires the previous generation.
ALTER TABLE root_key ADD COLUMN digest_wrapped BLOB;
ALTER TABLE root_key ADD COLUMN transit BLOB;
