-- Trained risk models (docs/risk.md, "Feedback and the model"): `strongroom risk promote`
-- puts one in service, in `shadow` (scored and recorded, never counted) or `active`
-- (its points count); the one it replaces is `retired`.
CREATE TABLE risk_models (
    version     TEXT    COLLATE "C" PRIMARY KEY,
    state       TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    promoted_ms BIGINT  NOT NULL
);
-- Every node keeps the models in service in memory; a promotion drops every node's copy.
CREATE TRIGGER risk_models_cache AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_models
    FOR EACH STATEMENT EXECUTE FUNCTION strongroom_cache_notify();
