-- Trained risk models (docs/risk.md, "Feedback and the model"): `strongroom risk promote`
-- puts one in service, in `shadow` (scored and recorded, never counted) or `active`
-- (its points count); the one it replaces is `retired`.
CREATE TABLE risk_models (
    version     TEXT    PRIMARY KEY,
    state       TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    promoted_ms INTEGER NOT NULL
);
