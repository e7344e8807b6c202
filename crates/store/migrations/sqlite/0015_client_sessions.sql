-- Client sessions (docs/client-side.md): a merchant's back end fixes a browser's
-- payment parameters here, and the browser presents only the client secret, stored as
-- a keyed digest. `params` is the server's JSON (purpose, allowed origins, amount,
-- currency, order id, metadata, collect_cvc); nothing in it is secret.
CREATE TABLE client_sessions (
    id              TEXT    PRIMARY KEY,
    account_id      TEXT    NOT NULL REFERENCES accounts (id),
    mode            TEXT    NOT NULL,
    secret_digest   BLOB    NOT NULL,
    params          TEXT    NOT NULL,
    max_cards       INTEGER NOT NULL,
    cards_collected INTEGER NOT NULL DEFAULT 0,
    expires_ms      INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL
);
CREATE INDEX client_sessions_expiry ON client_sessions (expires_ms);
-- Every card a session collected (a number vaulted before is linked too).
CREATE TABLE client_session_cards (
    session_id TEXT    NOT NULL,
    card_id    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, card_id)
);
