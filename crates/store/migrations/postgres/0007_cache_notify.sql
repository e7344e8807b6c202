-- Cache invalidation across nodes (issue 7). Each node keeps API keys, account controls,
-- key allowlists, data keys and JWT keys in memory; any change to those tables, by any
-- node or by hand, notifies channel `strongroom_cache` when its transaction commits, with
-- the schema as payload (nodes on other schemas of the same database ignore it). A node
-- that hears it drops its caches; a node whose listening connection is down reads
-- through to the database until it listens again.
CREATE FUNCTION strongroom_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('strongroom_cache', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
CREATE TRIGGER api_keys_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
CREATE TRIGGER data_keys_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON data_keys
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
CREATE TRIGGER account_controls_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON account_controls
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
CREATE TRIGGER api_key_controls_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_key_controls
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
CREATE TRIGGER jwt_keys_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON jwt_keys
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
