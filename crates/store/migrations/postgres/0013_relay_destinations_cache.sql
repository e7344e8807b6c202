-- Nodes keep each account's relay destinations in memory (the relay reads them on every
-- send); a change to them, by any node, drops every node's caches as for the tables of
-- 0007_cache_notify.sql.
CREATE TRIGGER relay_destinations_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON relay_destinations
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
