-- The audit head is set once per append by the appending transaction (store audit.rs),
-- no longer by a trigger per inserted row: a batch of N records made N new versions of
-- the head row. Appends still lock the head first, so the chain stays one sequence
-- across nodes.
DROP TRIGGER audit_log_head ON audit_log;
DROP FUNCTION audit_log_head();
