-- How many cards each account holds under each pair of key versions, kept by triggers in
-- the transaction that changes the cards. Key usage, the re-wrap backlog (a metric, read
-- on every scrape) and the retire check read these few rows instead of two indexes over
-- every card, `(account_id, key_version)` and `(account_id, fp_version)`, which each
-- tokenization had to update: two B-tree inserts and their WAL pages per card, for
-- queries that run a few times a minute. The re-wrap worker walks `cards_list` instead.
CREATE TABLE card_key_counts (
    account_id  TEXT    NOT NULL,
    key_version INTEGER NOT NULL,
    fp_version  INTEGER NOT NULL,
    cards       INTEGER NOT NULL,
    PRIMARY KEY (account_id, key_version, fp_version)
) WITHOUT ROWID;

INSERT INTO card_key_counts (account_id, key_version, fp_version, cards)
    SELECT account_id, key_version, fp_version, COUNT(*) FROM cards
    GROUP BY account_id, key_version, fp_version;

CREATE TRIGGER cards_count_insert AFTER INSERT ON cards
BEGIN
    INSERT INTO card_key_counts (account_id, key_version, fp_version, cards)
        VALUES (NEW.account_id, NEW.key_version, NEW.fp_version, 1)
        ON CONFLICT (account_id, key_version, fp_version) DO UPDATE SET cards = cards + 1;
END;

CREATE TRIGGER cards_count_delete AFTER DELETE ON cards
BEGIN
    UPDATE card_key_counts SET cards = cards - 1
        WHERE account_id = OLD.account_id AND key_version = OLD.key_version
          AND fp_version = OLD.fp_version;
END;

CREATE TRIGGER cards_count_update AFTER UPDATE OF account_id, key_version, fp_version ON cards
    WHEN OLD.account_id IS NOT NEW.account_id OR OLD.key_version IS NOT NEW.key_version
      OR OLD.fp_version IS NOT NEW.fp_version
BEGIN
    UPDATE card_key_counts SET cards = cards - 1
        WHERE account_id = OLD.account_id AND key_version = OLD.key_version
          AND fp_version = OLD.fp_version;
    INSERT INTO card_key_counts (account_id, key_version, fp_version, cards)
        VALUES (NEW.account_id, NEW.key_version, NEW.fp_version, 1)
        ON CONFLICT (account_id, key_version, fp_version) DO UPDATE SET cards = cards + 1;
END;

DROP INDEX cards_key_version;
DROP INDEX cards_fp_version;
