-- The account's risk switch (docs/risk.md): `off`, `shadow` (assess, never refuse) or
-- `enforce` (a `block` refuses the request); NULL is the default, `enforce`.
ALTER TABLE account_controls ADD COLUMN risk_mode TEXT;
