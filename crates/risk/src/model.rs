//! The learned model: L2-regularized logistic regression on standardized features.
//!
//! Logistic regression rather than trees: its score is a sum of per-feature terms, so each
//! decision explains itself exactly ("model: ip_distinct_cards_10m"), it stores as twenty
//! weights an operator can read, and it scores in nanoseconds on the request path. The
//! optimizer is linfa-logistic's L-BFGS; only the fitted weights are stored, so a stored
//! model does not depend on linfa's own serialization.
//!
//! Training splits by time, never by shuffling: the newest rows are held out, as they would
//! be in production where the model only ever scores the future.

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::metrics::Evaluation;
use crate::{FEATURE_NAMES, FEATURES_VERSION, Features, N_FEATURES, RULES_THRESHOLD, RiskError};

/// The fewest rows the training slice may have.
pub const MIN_TRAINING_ROWS: usize = 50;

/// The `kind` a stored model names; the only one this build scores.
const KIND: &str = "logistic_regression";

/// One assessed use with its outcome, as the server stores it for training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabeledRow {
    /// When the use was assessed (Unix milliseconds); orders the time split.
    pub at_ms: i64,
    /// The features it was assessed on.
    pub features: Features,
    /// Reported as fraud by the merchant, or charged back.
    pub fraud: bool,
    /// What the rules alone scored it, 0..=100.
    pub rules_score: f64,
}

/// How to train, and where to draw the lines when reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// The newest share of rows (by `at_ms`) held out for evaluation; in (0, 1).
    pub holdout_fraction: f64,
    /// Model probability at or above which a use counts as flagged.
    pub model_threshold: f64,
    /// Rules score at or above which a use counts as flagged.
    pub rules_threshold: f64,
    /// L2 penalty on the weights (not the intercept), on the summed log-loss.
    pub l2: f64,
    /// Cap on L-BFGS iterations.
    pub max_iterations: u64,
    /// Stop once the gradient of the mean log-loss is this small.
    pub gradient_tolerance: f64,
    /// The model's name; `lr-<at_ms of the newest training row>` when `None`.
    pub version: Option<String>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            holdout_fraction: 0.2,
            model_threshold: 0.5,
            rules_threshold: RULES_THRESHOLD,
            l2: 1.0,
            max_iterations: 200,
            gradient_tolerance: 1e-4,
            version: None,
        }
    }
}

impl TrainOptions {
    fn validate(&self) -> Result<(), RiskError> {
        let invalid = |name, reason| Err(RiskError::InvalidOption { name, reason });
        if !(self.holdout_fraction > 0.0 && self.holdout_fraction < 1.0) {
            return invalid("holdout_fraction", "must be between 0 and 1, exclusive");
        }
        if !self.model_threshold.is_finite() || !self.rules_threshold.is_finite() {
            return invalid("threshold", "must be a finite number");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return invalid("l2", "must be a finite number, 0 or more");
        }
        if self.max_iterations == 0 {
            return invalid("max_iterations", "must be at least 1");
        }
        Ok(())
    }
}

/// Size and time span of a slice of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSummary {
    /// Rows in the slice.
    pub rows: usize,
    /// Of which fraud.
    pub frauds: usize,
    /// Oldest `at_ms`.
    pub from_ms: i64,
    /// Newest `at_ms`.
    pub to_ms: i64,
}

impl SliceSummary {
    fn of<'a>(rows: impl IntoIterator<Item = &'a LabeledRow>) -> Self {
        let mut s = SliceSummary {
            rows: 0,
            frauds: 0,
            from_ms: i64::MAX,
            to_ms: i64::MIN,
        };
        for r in rows {
            s.rows += 1;
            s.frauds += usize::from(r.fraud);
            s.from_ms = s.from_ms.min(r.at_ms);
            s.to_ms = s.to_ms.max(r.at_ms);
        }
        if s.rows == 0 {
            (s.from_ms, s.to_ms) = (0, 0);
        }
        s
    }

    fn require_both_classes(&self, slice: &'static str) -> Result<(), RiskError> {
        if self.frauds == 0 {
            return Err(RiskError::MissingClass {
                slice,
                class: "fraud",
            });
        }
        if self.frauds == self.rows {
            return Err(RiskError::MissingClass {
                slice,
                class: "legitimate",
            });
        }
        Ok(())
    }
}

/// The model and the rules side by side on one slice of labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backtest {
    /// The rows compared on.
    pub slice: SliceSummary,
    /// The model's AUC and its decisions at the model threshold.
    pub model: Evaluation,
    /// The rules' AUC and their decisions at the rules threshold.
    pub rules: Evaluation,
    /// `model.auc - rules.auc`: what the model adds over the rules in ranking.
    pub auc_gain: f64,
}

/// What training produced and how it did on the held-out newest rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// The fitted model.
    pub model: Model,
    /// The rows it was fitted on.
    pub training: SliceSummary,
    /// The model against the rules on the held-out rows, which it never saw.
    pub holdout: Backtest,
}

/// A trained fraud model. Serializes to a self-describing JSON blob (see [`Model::to_json`])
/// that names its feature schema version; loading refuses any other version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredModel", into = "StoredModel")]
pub struct Model {
    version: String,
    features_version: u32,
    intercept: f64,
    /// Per feature: training mean and standard deviation, and the weight of the
    /// standardized value.
    mean: [f64; N_FEATURES],
    std: [f64; N_FEATURES],
    weight: [f64; N_FEATURES],
    training: SliceSummary,
}

impl Model {
    /// The model's name, chosen at training.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The feature schema version it reads; always [`FEATURES_VERSION`] once loaded.
    pub fn features_version(&self) -> u32 {
        self.features_version
    }

    /// The rows it was trained on.
    pub fn training(&self) -> &SliceSummary {
        &self.training
    }

    /// The probability, 0..=1, that the use these features describe is fraud.
    ///
    /// A non-finite feature counts as its training mean, so one broken input cannot turn
    /// the score into NaN.
    pub fn score(&self, features: &Features) -> f64 {
        let logit = self.intercept + self.contributions(features).iter().sum::<f64>();
        sigmoid(logit)
    }

    /// Each feature's contribution to the score's log-odds (weight × standardized value),
    /// largest first. The leading positive entries are the reasons to give: they pushed the
    /// score up the most relative to an average training row.
    pub fn explain(&self, features: &Features) -> Vec<(&'static str, f64)> {
        let mut out: Vec<(&'static str, f64)> = FEATURE_NAMES
            .iter()
            .copied()
            .zip(self.contributions(features))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    /// The model against the rules on labelled rows it has not been trained on, e.g. the
    /// uses since it was trained, before promoting it over the current one.
    pub fn backtest(
        &self,
        rows: &[LabeledRow],
        model_threshold: f64,
        rules_threshold: f64,
    ) -> Result<Backtest, RiskError> {
        check_finite(rows)?;
        self.backtest_slice(rows.iter(), "back-test", model_threshold, rules_threshold)
    }

    /// The model as a JSON blob for storage.
    pub fn to_json(&self) -> Result<String, RiskError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Loads a stored model, refusing one made for another feature schema or malformed.
    pub fn from_json(json: &str) -> Result<Self, RiskError> {
        let stored: StoredModel = serde_json::from_str(json)?;
        Model::try_from(stored)
    }

    fn contributions(&self, features: &Features) -> [f64; N_FEATURES] {
        let mut out = [0.0; N_FEATURES];
        for ((((out, x), mean), std), weight) in out
            .iter_mut()
            .zip(features.0)
            .zip(self.mean)
            .zip(self.std)
            .zip(self.weight)
        {
            let z = (x - mean) / std;
            *out = if z.is_finite() { weight * z } else { 0.0 };
        }
        out
    }

    fn backtest_slice<'a>(
        &self,
        rows: impl Iterator<Item = &'a LabeledRow> + Clone,
        slice: &'static str,
        model_threshold: f64,
        rules_threshold: f64,
    ) -> Result<Backtest, RiskError> {
        let summary = SliceSummary::of(rows.clone());
        summary.require_both_classes(slice)?;
        let model_pairs: Vec<(f64, bool)> = rows
            .clone()
            .map(|r| (self.score(&r.features), r.fraud))
            .collect();
        let rules_pairs: Vec<(f64, bool)> = rows.map(|r| (r.rules_score, r.fraud)).collect();
        // Both classes are present and every score is finite, so AUC is defined; the error
        // stands for a broken invariant rather than bad input.
        let undefined = || RiskError::MissingClass {
            slice,
            class: "fraud or legitimate",
        };
        let model = Evaluation::of(&model_pairs, model_threshold).ok_or_else(undefined)?;
        let rules = Evaluation::of(&rules_pairs, rules_threshold).ok_or_else(undefined)?;
        Ok(Backtest {
            slice: summary,
            auc_gain: model.auc - rules.auc,
            model,
            rules,
        })
    }
}

fn sigmoid(x: f64) -> f64 {
    // Split by sign so exp never overflows.
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn check_finite(rows: &[LabeledRow]) -> Result<(), RiskError> {
    for r in rows {
        if let Some(f) = r.features.first_non_finite() {
            return Err(RiskError::NonFinite {
                at_ms: r.at_ms,
                field: f.name(),
            });
        }
        if !r.rules_score.is_finite() {
            return Err(RiskError::NonFinite {
                at_ms: r.at_ms,
                field: "rules_score",
            });
        }
    }
    Ok(())
}

/// Trains a model on the older rows and compares it with the rules on the newest
/// `holdout_fraction` of them.
///
/// Refuses fewer than [`MIN_TRAINING_ROWS`] training rows, a slice without both frauds and
/// legitimate uses, and non-finite values. Deterministic: the same rows and options give
/// the same model, whatever their input order among equal timestamps.
pub fn train(rows: &[LabeledRow], opts: &TrainOptions) -> Result<TrainReport, RiskError> {
    opts.validate()?;
    check_finite(rows)?;

    let mut ordered: Vec<&LabeledRow> = rows.iter().collect();
    ordered.sort_by_key(|r| r.at_ms);
    let n = ordered.len();
    let holdout_len = ((n as f64) * opts.holdout_fraction).ceil() as usize;
    let mut cut = n.saturating_sub(holdout_len);
    // Rows sharing a timestamp go to the held-out side together, so nothing the model
    // trained on is as new as what it is judged on.
    while cut > 0 && ordered.get(cut - 1).map(|r| r.at_ms) == ordered.get(cut).map(|r| r.at_ms) {
        cut -= 1;
    }
    let (training_rows, holdout_rows) = ordered.split_at(cut);

    let training = SliceSummary::of(training_rows.iter().copied());
    if training.rows < MIN_TRAINING_ROWS {
        return Err(RiskError::TooFewRows {
            have: training.rows,
            need: MIN_TRAINING_ROWS,
        });
    }
    training.require_both_classes("training")?;
    SliceSummary::of(holdout_rows.iter().copied()).require_both_classes("held-out")?;

    let (mean, std) = standardization(training_rows);
    let mut x = Vec::with_capacity(training_rows.len() * N_FEATURES);
    for r in training_rows {
        for ((v, m), s) in r.features.0.iter().zip(mean).zip(std) {
            x.push((v - m) / s);
        }
    }
    let x = Array2::from_shape_vec((training_rows.len(), N_FEATURES), x)
        .map_err(|e| RiskError::Fit(e.to_string()))?;
    let y: Array1<bool> = training_rows.iter().map(|r| r.fraud).collect();
    let fitted = LogisticRegression::default()
        .alpha(opts.l2)
        .max_iterations(opts.max_iterations)
        .gradient_tolerance(opts.gradient_tolerance * training_rows.len() as f64)
        .fit(&Dataset::new(x, y))
        .map_err(|e| RiskError::Fit(e.to_string()))?;

    // linfa labels as "positive" whichever class it decides (the more frequent one, in
    // 0.8), so orient the weights to mean "towards fraud" explicitly.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let mut weight = [0.0; N_FEATURES];
    for (w, p) in weight.iter_mut().zip(fitted.params().iter()) {
        *w = sign * p;
    }
    let model = Model {
        version: opts
            .version
            .clone()
            .unwrap_or_else(|| format!("lr-{}", training.to_ms)),
        features_version: FEATURES_VERSION,
        intercept: sign * fitted.intercept(),
        mean,
        std,
        weight,
        training: training.clone(),
    };
    let holdout = model.backtest_slice(
        holdout_rows.iter().copied(),
        "held-out",
        opts.model_threshold,
        opts.rules_threshold,
    )?;
    Ok(TrainReport {
        model,
        training,
        holdout,
    })
}

/// Per-feature mean and (population) standard deviation; a constant feature gets 1 so it
/// standardizes to 0 instead of dividing by zero.
fn standardization(rows: &[&LabeledRow]) -> ([f64; N_FEATURES], [f64; N_FEATURES]) {
    let n = rows.len().max(1) as f64;
    let mut mean = [0.0; N_FEATURES];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r.features.0) {
            *m += v / n;
        }
    }
    let mut var = [0.0; N_FEATURES];
    for r in rows {
        for ((s, v), m) in var.iter_mut().zip(r.features.0).zip(mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    let std = var.map(|v| {
        let s = v.sqrt();
        if s > 1e-12 { s } else { 1.0 }
    });
    (mean, std)
}

/// The stored shape: one entry per feature, by name, so a blob is readable on its own and a
/// reordered schema cannot be misread.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredModel {
    kind: String,
    version: String,
    features_version: u32,
    intercept: f64,
    features: Vec<StoredFeature>,
    training: SliceSummary,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredFeature {
    name: String,
    mean: f64,
    std: f64,
    weight: f64,
}

impl From<Model> for StoredModel {
    fn from(m: Model) -> Self {
        let features = FEATURE_NAMES
            .iter()
            .zip(m.mean)
            .zip(m.std)
            .zip(m.weight)
            .map(|(((name, mean), std), weight)| StoredFeature {
                name: (*name).to_owned(),
                mean,
                std,
                weight,
            })
            .collect();
        StoredModel {
            kind: KIND.to_owned(),
            version: m.version,
            features_version: m.features_version,
            intercept: m.intercept,
            features,
            training: m.training,
        }
    }
}

impl TryFrom<StoredModel> for Model {
    type Error = RiskError;

    fn try_from(s: StoredModel) -> Result<Self, RiskError> {
        if s.features_version != FEATURES_VERSION {
            return Err(RiskError::FeaturesVersion {
                found: s.features_version,
                expected: FEATURES_VERSION,
            });
        }
        if s.kind != KIND {
            return Err(RiskError::InvalidModel("unknown model kind"));
        }
        if s.features.len() != N_FEATURES
            || s.features
                .iter()
                .zip(FEATURE_NAMES)
                .any(|(f, n)| f.name != *n)
        {
            return Err(RiskError::InvalidModel(
                "features do not match this build's schema",
            ));
        }
        if !s.intercept.is_finite() {
            return Err(RiskError::InvalidModel("intercept is not finite"));
        }
        let (mut mean, mut std, mut weight) =
            ([0.0; N_FEATURES], [0.0; N_FEATURES], [0.0; N_FEATURES]);
        for (((f, m), sd), w) in s
            .features
            .iter()
            .zip(mean.iter_mut())
            .zip(std.iter_mut())
            .zip(weight.iter_mut())
        {
            if !(f.mean.is_finite() && f.weight.is_finite() && f.std.is_finite() && f.std > 0.0) {
                return Err(RiskError::InvalidModel(
                    "a feature's mean, std or weight is out of range",
                ));
            }
            (*m, *sd, *w) = (f.mean, f.std, f.weight);
        }
        Ok(Model {
            version: s.version,
            features_version: s.features_version,
            intercept: s.intercept,
            mean,
            std,
            weight,
            training: s.training,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::{Feature, SimOptions, features_of, simulate};

    fn small_sim(seed: u64) -> Vec<LabeledRow> {
        features_of(&simulate(&SimOptions {
            seed,
            days: 6,
            legit_per_day: 1_000,
            ..SimOptions::default()
        }))
    }

    /// One small trained model shared by the tests that only read it.
    fn small() -> &'static (Vec<LabeledRow>, TrainReport) {
        static SMALL: OnceLock<(Vec<LabeledRow>, TrainReport)> = OnceLock::new();
        SMALL.get_or_init(|| {
            let rows = small_sim(7);
            let report = train(&rows, &TrainOptions::default()).unwrap();
            (rows, report)
        })
    }

    #[test]
    fn model_beats_the_rules_on_held_out_simulated_traffic() {
        let rows = features_of(&simulate(&SimOptions {
            seed: 42,
            ..SimOptions::default()
        }));
        assert!(rows.len() > 18_000, "{} rows", rows.len());
        let report = train(&rows, &TrainOptions::default()).unwrap();
        let h = &report.holdout;
        println!(
            "held out: {} rows, {} frauds; model AUC {:.4} (precision {:.3}, recall {:.3} at {}), \
             rules AUC {:.4} (precision {:.3}, recall {:.3} at {}); gain {:.4}",
            h.slice.rows,
            h.slice.frauds,
            h.model.auc,
            h.model.precision,
            h.model.recall,
            h.model.threshold,
            h.rules.auc,
            h.rules.precision,
            h.rules.recall,
            h.rules.threshold,
            h.auc_gain,
        );
        assert!(h.auc_gain >= 0.02, "model adds too little: {h:?}");
        assert!(h.model.recall > h.rules.recall);
        // The split is by time: every held-out row is newer than every training row.
        assert!(report.training.to_ms < h.slice.from_ms);
        assert_eq!(report.training.rows + h.slice.rows, rows.len());
        let share = h.slice.rows as f64 / rows.len() as f64;
        assert!((0.19..=0.21).contains(&share), "{share}");
    }

    #[test]
    fn training_is_deterministic() {
        let (_, first) = small();
        let again = train(&small_sim(7), &TrainOptions::default()).unwrap();
        assert_eq!(
            first.model.to_json().unwrap(),
            again.model.to_json().unwrap()
        );
        assert_eq!(first.holdout, again.holdout);
    }

    #[test]
    fn stored_model_scores_identically() {
        let (rows, report) = small();
        let blob = report.model.to_json().unwrap();
        let loaded = Model::from_json(&blob).unwrap();
        assert_eq!(loaded, report.model);
        for r in rows {
            let p = loaded.score(&r.features);
            assert!((0.0..=1.0).contains(&p));
            assert_eq!(p.to_bits(), report.model.score(&r.features).to_bits());
        }
        // The blob names its features, in schema order.
        let value: serde_json::Value = serde_json::from_str(&blob).unwrap();
        assert_eq!(value["features"][4]["name"], "ip_distinct_cards_10m");
        assert_eq!(value["features_version"], FEATURES_VERSION);
    }

    #[test]
    fn a_model_for_another_schema_is_refused() {
        let (_, report) = small();
        let mut value = serde_json::to_value(&report.model).unwrap();
        value["features_version"] = (FEATURES_VERSION + 1).into();
        let err = Model::from_json(&value.to_string()).unwrap_err();
        assert!(
            matches!(err, RiskError::FeaturesVersion { found, expected }
                if found == FEATURES_VERSION + 1 && expected == FEATURES_VERSION),
            "{err}"
        );
        // Serde's own path refuses it too.
        assert!(serde_json::from_value::<Model>(value).is_err());

        let mut renamed = serde_json::to_value(&report.model).unwrap();
        renamed["features"][0]["name"] = "amount".into();
        assert!(matches!(
            Model::from_json(&renamed.to_string()),
            Err(RiskError::InvalidModel(_))
        ));
        let mut zero_std = serde_json::to_value(&report.model).unwrap();
        zero_std["features"][3]["std"] = 0.0.into();
        assert!(matches!(
            Model::from_json(&zero_std.to_string()),
            Err(RiskError::InvalidModel(_))
        ));
    }

    #[test]
    fn explanations_add_up_to_the_score() {
        let (rows, report) = small();
        let model = &report.model;
        let testing = rows
            .iter()
            .find(|r| r.features.get(Feature::DeviceDistinctCards1h) >= 5.0)
            .unwrap();
        let why = model.explain(&testing.features);
        assert_eq!(why.len(), N_FEATURES);
        assert!(why.windows(2).all(|w| w[0].1 >= w[1].1), "sorted: {why:?}");
        assert_eq!(why[0].0, "device_distinct_cards_1h", "{why:?}");
        let logit = model.intercept + why.iter().map(|(_, c)| c).sum::<f64>();
        assert!((sigmoid(logit) - model.score(&testing.features)).abs() < 1e-12);
        // A broken input does not poison the score.
        let mut broken = testing.features;
        broken.set(Feature::HourSin, f64::NAN);
        assert!(model.score(&broken).is_finite());
    }

    fn row(at_ms: i64, fraud: bool) -> LabeledRow {
        let mut features = Features([0.0; N_FEATURES]);
        features.set(Feature::IpDistinctCards10m, if fraud { 6.0 } else { 0.0 });
        features.set(Feature::AmountLog10, (at_ms % 7) as f64);
        LabeledRow {
            at_ms,
            features,
            fraud,
            rules_score: if fraud { 60.0 } else { 0.0 },
        }
    }

    #[test]
    fn refuses_what_it_cannot_learn_from() {
        let opts = TrainOptions::default();
        let few: Vec<LabeledRow> = (0..40).map(|i| row(i, i % 5 == 0)).collect();
        assert!(matches!(
            train(&few, &opts),
            Err(RiskError::TooFewRows { have: 32, need: 50 })
        ));

        // Frauds only in the oldest rows: the held-out slice has none.
        let no_recent_fraud: Vec<LabeledRow> = (0..100).map(|i| row(i, i < 10)).collect();
        assert!(matches!(
            train(&no_recent_fraud, &opts),
            Err(RiskError::MissingClass {
                slice: "held-out",
                class: "fraud"
            })
        ));
        let all_fraud: Vec<LabeledRow> = (0..100).map(|i| row(i, true)).collect();
        assert!(matches!(
            train(&all_fraud, &opts),
            Err(RiskError::MissingClass {
                slice: "training",
                class: "legitimate"
            })
        ));

        let ok: Vec<LabeledRow> = (0..100).map(|i| row(i, i % 4 == 0)).collect();
        let mut nan = ok.clone();
        nan[3].features.set(Feature::KeyUses1m, f64::INFINITY);
        assert!(matches!(
            train(&nan, &opts),
            Err(RiskError::NonFinite {
                at_ms: 3,
                field: "key_uses_1m"
            })
        ));
        for bad in [0.0, 1.0, f64::NAN] {
            let opts = TrainOptions {
                holdout_fraction: bad,
                ..TrainOptions::default()
            };
            assert!(matches!(
                train(&ok, &opts),
                Err(RiskError::InvalidOption {
                    name: "holdout_fraction",
                    ..
                })
            ));
        }
        let report = train(&ok, &opts).unwrap();
        assert_eq!(report.holdout.slice.rows, 20);
    }

    #[test]
    fn rows_sharing_a_timestamp_stay_on_one_side_of_the_split() {
        // 100 rows, the newest 30 at one instant: a 20% hold-out takes all 30.
        let rows: Vec<LabeledRow> = (0..100).rev().map(|i| row(i.min(70), i % 4 == 0)).collect();
        let report = train(&rows, &TrainOptions::default()).unwrap();
        assert_eq!(report.holdout.slice.rows, 30);
        assert_eq!(report.training.to_ms, 69);
        assert_eq!(report.model.version(), "lr-69");
    }
}
