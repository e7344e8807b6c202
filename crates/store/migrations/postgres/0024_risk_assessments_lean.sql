-- Assessments are written on the card paths (tokenize, reveal and relay), so each
-- index on them is paid there. No query reads assessments by (account, mode, id):
-- one is read by its id (the primary key), the recent ones by time
-- (risk_assessments_recent), a card's by fingerprint, the labelled ones by label.
DROP INDEX risk_assessments_account;
