-- Relay destinations (docs/relay.md): the hosts an operator approved for an account to
-- send card data to. An account's list is replaced as a whole; `position` keeps the
-- operator's order. Nothing secret: a CA certificate is public.
CREATE TABLE relay_destinations (
    account_id  TEXT    COLLATE "C" NOT NULL REFERENCES accounts (id),
    position    BIGINT  NOT NULL,
    host        TEXT    NOT NULL,
    port        BIGINT  NOT NULL,
    path_prefix TEXT    NOT NULL,
    ca_cert_pem TEXT,
    test_only   BIGINT  NOT NULL DEFAULT 0,
    created_ms  BIGINT  NOT NULL,
    PRIMARY KEY (account_id, position)
);
