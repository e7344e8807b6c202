//! Fraud scoring. The risk engine grows here: signals computed from a request and the
//! vault's own records (country mismatches in [`geo`], counts of recent uses in
//! [`velocity`]; the rules in force in [`rules`]; the allow and block lists in [`lists`]) that assessments combine into a score, a
//! decision and its reasons.
//! Each signal module holds data the operator loads and pure functions over it, so the
//! routes that load the data and the assessments that read it stay thin.

pub mod country_data;
pub mod geo;
pub mod kept;
pub mod lists;
pub mod local_time;
pub mod models;
pub mod rules;
pub mod velocity;
