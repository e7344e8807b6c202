-- How many cards each account holds under each pair of key versions, kept by statement
-- triggers in the transaction that changes the cards (one upsert per statement, so a
-- batch's multi-row card insert adds one row update, not one per card). Key usage, the
-- re-wrap backlog (a metric, read on every scrape) and the retire check read these few
-- rows instead of two indexes over every card, `(account_id, key_version)` and
-- `(account_id, fp_version)`, which every tokenization had to update. The re-wrap worker
-- walks `cards_list` instead. Deltas are applied in key order, so two transactions that
-- change the same counts lock their rows in the same order.
CREATE TABLE card_key_counts (
    account_id  TEXT   NOT NULL,
    key_version BIGINT NOT NULL,
    fp_version  BIGINT NOT NULL,
    cards       BIGINT NOT NULL,
    PRIMARY KEY (account_id, key_version, fp_version)
);

INSERT INTO card_key_counts (account_id, key_version, fp_version, cards)
    SELECT account_id, key_version, fp_version, COUNT(*) FROM cards
    GROUP BY account_id, key_version, fp_version;

-- Inserts and deletes: the trigger names its transition table `changed` and passes the
-- sign of the change (1 or -1) as its argument.
CREATE FUNCTION card_key_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO card_key_counts AS k (account_id, key_version, fp_version, cards)
        SELECT account_id, key_version, fp_version, COUNT(*) * TG_ARGV[0]::BIGINT FROM changed
        GROUP BY account_id, key_version, fp_version
        ORDER BY account_id, key_version, fp_version
        ON CONFLICT (account_id, key_version, fp_version)
        DO UPDATE SET cards = k.cards + EXCLUDED.cards;
    RETURN NULL;
END
$$;

CREATE FUNCTION card_key_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO card_key_counts AS k (account_id, key_version, fp_version, cards)
        SELECT account_id, key_version, fp_version, SUM(delta) FROM (
            SELECT account_id, key_version, fp_version, 1 AS delta FROM added
            UNION ALL
            SELECT account_id, key_version, fp_version, -1 AS delta FROM removed
        ) d
        GROUP BY account_id, key_version, fp_version
        HAVING SUM(delta) <> 0
        ORDER BY account_id, key_version, fp_version
        ON CONFLICT (account_id, key_version, fp_version)
        DO UPDATE SET cards = k.cards + EXCLUDED.cards;
    RETURN NULL;
END
$$;

CREATE FUNCTION card_key_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM card_key_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER cards_count_insert AFTER INSERT ON cards
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION card_key_counts_add('1');
CREATE TRIGGER cards_count_delete AFTER DELETE ON cards
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION card_key_counts_add('-1');
CREATE TRIGGER cards_count_update AFTER UPDATE ON cards
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION card_key_counts_update();
CREATE TRIGGER cards_count_truncate AFTER TRUNCATE ON cards
    FOR EACH STATEMENT EXECUTE FUNCTION card_key_counts_truncate();

DROP INDEX cards_key_version;
DROP INDEX cards_fp_version;
