//! Fraud scoring for Strongroom: the feature schema an assessment is scored on, a learned
//! model trained on merchants' fraud feedback and compared with the rules on later data, and
//! a traffic simulator with planted fraud patterns to exercise both. No I/O.
//!
//! The loop the CLI drives (`strongroom risk simulate|train|promote`):
//!
//! ```
//! use strongroom_risk::{SimOptions, TrainOptions, features_of, simulate, train};
//!
//! let events = simulate(&SimOptions { days: 3, legit_per_day: 600, ..SimOptions::default() });
//! let rows = features_of(&events);
//! let report = train(&rows, &TrainOptions::default()).unwrap();
//! let held_out = &report.holdout;
//! println!("model AUC {:.3}, rules AUC {:.3}", held_out.model.auc, held_out.rules.auc);
//! let blob = report.model.to_json().unwrap();
//! let model = strongroom_risk::Model::from_json(&blob).unwrap();
//! let p = model.score(&rows[0].features);
//! assert!((0.0..=1.0).contains(&p));
//! ```

pub mod error;
pub mod features;
pub mod lists;
pub mod metrics;
pub mod model;
pub mod rules;
pub mod ruleset;
pub mod simulate;

pub use error::RiskError;
pub use features::{FEATURE_NAMES, FEATURES_VERSION, Feature, Features, N_FEATURES};
pub use metrics::{Confusion, Evaluation, auc};
pub use model::{
    Backtest, LabeledRow, MIN_TRAINING_ROWS, Model, SliceSummary, TrainOptions, TrainReport, train,
};
pub use rules::{RULES_THRESHOLD, baseline_rules_score};
pub use ruleset::{
    BUILTIN_VERSION, Decision, RuleAction, RuleError, RuleSet, RuleSetSpec, RuleSpec, Signals,
    Standing, SuspendTarget, Verdict,
};
pub use simulate::{
    Outcome, PATTERN_ACCOUNT_TAKEOVER, PATTERN_CARD_CYCLING, PATTERN_CARD_TESTING,
    PATTERN_CHARGEBACK, SimEvent, SimOptions, features_of, network_of, simulate,
};
