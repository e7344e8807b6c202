-- Relay destinations (docs/relay.md): the hosts an operator approved for an account to
-- send card data to. An account's list is replaced as a whole; `position` keeps the
-- operator's order. Nothing secret: a CA certificate is public.
CREATE TABLE relay_destinations (
    account_id  TEXT    NOT NULL REFERENCES accounts (id),
    position    INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    path_prefix TEXT    NOT NULL,
    ca_cert_pem TEXT,
    test_only   INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (account_id, position)
);
