-- Inbound routes (docs/relay.md, "Inbound routes"): `/in/{id}/…` accepts a partner's
-- request, tokenizes the card numbers it names into the route's account and mode, and
-- forwards the cleaned request to `forward_to`, an approved relay destination. Nothing
-- secret: the tokenize rules are JSON pointers, never card data.
CREATE TABLE inbound_routes (
    id          TEXT    COLLATE "C" PRIMARY KEY,
    account_id  TEXT    COLLATE "C" NOT NULL REFERENCES accounts (id),
    mode        TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    forward_to  TEXT    NOT NULL,
    tokenize    TEXT    NOT NULL,
    description TEXT,
    created_ms  BIGINT  NOT NULL
);
CREATE INDEX inbound_routes_account ON inbound_routes (account_id, mode, id);
