-- Audit trail (issue 5): an append-only, hash-chained log; its head; signed checkpoints.
-- hash = SHA-256(previous hash || canonical record); see crates/store/src/audit.rs.

CREATE TABLE audit_log (
    seq        INTEGER NOT NULL PRIMARY KEY,
    time_ms    INTEGER NOT NULL,
    request_id TEXT    NOT NULL,
    account_id TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    resource   TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    code       TEXT    NOT NULL,
    client_ip  TEXT    NOT NULL,
    method     TEXT    NOT NULL,
    route      TEXT    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_ms);

-- One row: the chain head. Every append locks it (UPDATE) in the appending transaction,
-- so appends are serialised on every backend and by every node.
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
-- The head follows every insert inside the engine: one round trip fewer per append.
CREATE TRIGGER audit_log_head AFTER INSERT ON audit_log
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
END;

CREATE TABLE audit_checkpoints (
    seq        INTEGER NOT NULL PRIMARY KEY,
    hash       BLOB    NOT NULL,
    time_ms    INTEGER NOT NULL,
    public_key BLOB    NOT NULL,
    signature  BLOB    NOT NULL
);
