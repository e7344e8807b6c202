-- Country data an operator uploads for the risk engine (docs/risk.md, "Country data"): the
-- BIN table (CSV) and the IP country database (MaxMind DB), one row each, replaced whole by
-- each upload with its version counted up. Every node loads the newest at start and
-- follows later uploads; an upload wins over the files the configuration names.
CREATE TABLE risk_data (
    name        TEXT COLLATE "C" PRIMARY KEY,
    version     BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
