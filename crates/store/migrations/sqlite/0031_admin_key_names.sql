-- Named admin keys (docs/key-custody.md, "Importing keys"): the custodian an admin key
-- belongs to, so that a dual-control ceremony can say who keyed in each component.
ALTER TABLE api_keys ADD COLUMN name TEXT;
