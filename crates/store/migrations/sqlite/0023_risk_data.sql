-- Country data an operator uploads for the risk engine (docs/risk.md, "Country data"): the
-- BIN table (CSV) and the IP country database (MaxMind DB), one row each, replaced whole by
-- each upload with its version counted up. Every node loads the newest at start and
-- follows later uploads; an upload wins over the files the configuration names.
CREATE TABLE risk_data (
    name        TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
