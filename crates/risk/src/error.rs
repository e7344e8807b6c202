//! Errors of the risk layer: bad training input, bad options, a stored model that does not fit.

use thiserror::Error;

/// Why training, evaluation or loading a model was refused.
#[derive(Debug, Error)]
pub enum RiskError {
    /// Too little history to learn from: a model fitted on a handful of rows would only
    /// memorize them.
    #[error("too few rows to train on: {have} in the training slice, at least {need} needed")]
    TooFewRows { have: usize, need: usize },
    /// A slice holds only one class, so the model cannot learn it or AUC is undefined there.
    #[error("the {slice} slice has no {class} rows")]
    MissingClass {
        slice: &'static str,
        class: &'static str,
    },
    /// An option is out of its range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        name: &'static str,
        reason: &'static str,
    },
    /// A feature value or rules score is NaN or infinite.
    #[error("row at {at_ms} has a non-finite {field}")]
    NonFinite { at_ms: i64, field: &'static str },
    /// A named feature map does not match the schema.
    #[error("feature {name:?}: {problem}")]
    FeatureName { name: String, problem: &'static str },
    /// A model computed on another feature schema would read the wrong columns.
    #[error("model uses features version {found}, this build computes version {expected}")]
    FeaturesVersion { found: u32, expected: u32 },
    /// A stored model is not one this build can score with.
    #[error("invalid model: {0}")]
    InvalidModel(&'static str),
    /// The optimizer failed (it reports non-finite data or a failed line search).
    #[error("training failed: {0}")]
    Fit(String),
    /// The model blob is not valid JSON of the right shape.
    #[error("model JSON: {0}")]
    Json(#[from] serde_json::Error),
}
