-- The audit head is set once per append by the appending transaction (store audit.rs),
-- no longer by a trigger per inserted row: a batch of N records rewrote the head row N
-- times. Appends still lock the head first, so the chain stays one sequence.
DROP TRIGGER audit_log_head;
