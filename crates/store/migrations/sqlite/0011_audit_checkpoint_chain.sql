-- Chained audit checkpoints: each signs the digest of the checkpoint before it
-- (prev_hash) and its own place in the chain (count), so deleting, replacing or
-- inserting a checkpoint breaks the next one. Both NULL: a checkpoint made before
-- chaining, still verified by its signature alone.
ALTER TABLE audit_checkpoints ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_checkpoints ADD COLUMN count INTEGER;
-- Two checkpoints naming the same predecessor would fork the chain (two nodes
-- checkpointing at once): the second insert is refused instead. NULLs do not collide.
CREATE UNIQUE INDEX audit_checkpoints_prev ON audit_checkpoints (prev_hash);
