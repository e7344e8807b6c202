-- An account's time zone (IANA name, e.g. Europe/Paris): the risk signals' hour of day is
-- the account's local hour (docs/risk.md). NULL: UTC.
ALTER TABLE account_controls ADD COLUMN time_zone TEXT;
