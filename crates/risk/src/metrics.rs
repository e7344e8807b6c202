//! Ranking and threshold metrics for comparing the model with the rules.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Area under the ROC curve of `(score, is_fraud)` pairs: the probability that a random fraud
/// scores above a random legitimate use, a tie counting one half (the Mann–Whitney U
/// statistic over the two classes' sizes).
///
/// Ties matter here: the rules give few distinct scores, and counting a tie as a win or a
/// loss would flatter or wrong them. `None` when either class is absent or a score is not
/// finite.
pub fn auc(pairs: &[(f64, bool)]) -> Option<f64> {
    if pairs.iter().any(|(s, _)| !s.is_finite()) {
        return None;
    }
    let positives = pairs.iter().filter(|(_, y)| *y).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks (1-based), each tied group sharing its average rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    for group in sorted.chunk_by(|a, b| a.0.total_cmp(&b.0) == Ordering::Equal) {
        let end = start + group.len();
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let group_positives = group.iter().filter(|(_, y)| *y).count();
        rank_sum += average_rank * group_positives as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    let u = rank_sum - p * (p + 1.0) / 2.0;
    Some(u / (p * n))
}

/// Counts of a threshold decision: a use is flagged when its score is at least the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// Frauds flagged.
    pub true_positives: usize,
    /// Legitimate uses flagged.
    pub false_positives: usize,
    /// Legitimate uses passed.
    pub true_negatives: usize,
    /// Frauds passed.
    pub false_negatives: usize,
}

impl Confusion {
    /// Tallies `(score, is_fraud)` pairs against `threshold` (flag when `score >= threshold`).
    pub fn at(pairs: &[(f64, bool)], threshold: f64) -> Self {
        let mut c = Confusion::default();
        for &(score, fraud) in pairs {
            match (score >= threshold, fraud) {
                (true, true) => c.true_positives += 1,
                (true, false) => c.false_positives += 1,
                (false, false) => c.true_negatives += 1,
                (false, true) => c.false_negatives += 1,
            }
        }
        c
    }

    /// Share of flagged uses that were fraud; 0 when nothing was flagged.
    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    /// Share of frauds that were flagged; 0 when there were none.
    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// How one scorer (the model or the rules) did on a slice of labelled uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// ROC AUC with ties counted as halves; see [`auc`].
    pub auc: f64,
    /// The threshold the counts below were taken at.
    pub threshold: f64,
    /// See [`Confusion::precision`].
    pub precision: f64,
    /// See [`Confusion::recall`].
    pub recall: f64,
    /// The decisions at `threshold`.
    pub confusion: Confusion,
}

impl Evaluation {
    /// Evaluates `(score, is_fraud)` pairs; `None` when AUC is undefined (see [`auc`]).
    pub fn of(pairs: &[(f64, bool)], threshold: f64) -> Option<Self> {
        let confusion = Confusion::at(pairs, threshold);
        Some(Evaluation {
            auc: auc(pairs)?,
            threshold,
            precision: confusion.precision(),
            recall: confusion.recall(),
            confusion,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_without_ties() {
        // Positives 0.9, 0.4; negatives 0.8, 0.3, 0.1. Pairs won: (0.9 beats all 3) +
        // (0.4 beats 0.3 and 0.1) = 5 of 6.
        let pairs = [
            (0.9, true),
            (0.8, false),
            (0.4, true),
            (0.3, false),
            (0.1, false),
        ];
        assert!(close(auc(&pairs).unwrap(), 5.0 / 6.0));
    }

    #[test]
    fn auc_counts_ties_as_halves() {
        // Positives 0.5, 0.5, 0.2; negatives 0.5, 0.2, 0.1.
        // 0.5 (pos) vs negatives: tie, win, win = 2.5; twice = 5.
        // 0.2 (pos) vs negatives: loss, tie, win = 1.5. Total 6.5 of 9.
        let pairs = [
            (0.5, true),
            (0.5, true),
            (0.2, true),
            (0.5, false),
            (0.2, false),
            (0.1, false),
        ];
        assert!(close(auc(&pairs).unwrap(), 6.5 / 9.0));
        // Order of the input does not matter.
        let mut reversed = pairs;
        reversed.reverse();
        assert!(close(auc(&reversed).unwrap(), 6.5 / 9.0));
    }

    #[test]
    fn auc_of_constant_and_perfect_scores() {
        let constant = [(70.0, true), (70.0, false), (70.0, false), (70.0, true)];
        assert!(close(auc(&constant).unwrap(), 0.5));
        let perfect = [(1.0, true), (0.0, false), (0.5, true), (0.4, false)];
        assert!(close(auc(&perfect).unwrap(), 1.0));
        let inverted = [(0.0, true), (1.0, false)];
        assert!(close(auc(&inverted).unwrap(), 0.0));
    }

    #[test]
    fn auc_is_undefined_without_both_classes_or_with_nan() {
        assert_eq!(auc(&[]), None);
        assert_eq!(auc(&[(0.3, true), (0.5, true)]), None);
        assert_eq!(auc(&[(0.3, false)]), None);
        assert_eq!(auc(&[(f64::NAN, true), (0.1, false)]), None);
    }

    #[test]
    fn precision_and_recall_at_a_threshold() {
        // At 0.5: flagged 0.9 (fraud), 0.7 (legit), 0.5 (fraud); passed 0.4 (fraud), 0.1 (legit).
        let pairs = [
            (0.9, true),
            (0.7, false),
            (0.5, true),
            (0.4, true),
            (0.1, false),
        ];
        let c = Confusion::at(&pairs, 0.5);
        assert_eq!(
            c,
            Confusion {
                true_positives: 2,
                false_positives: 1,
                true_negatives: 1,
                false_negatives: 1,
            }
        );
        assert!(close(c.precision(), 2.0 / 3.0));
        assert!(close(c.recall(), 2.0 / 3.0));

        let none_flagged = Confusion::at(&pairs, 2.0);
        assert_eq!(none_flagged.precision(), 0.0);
        assert_eq!(none_flagged.recall(), 0.0);

        let e = Evaluation::of(&pairs, 0.5).unwrap();
        // Frauds 0.9, 0.5, 0.4 against legitimate 0.7, 0.1: 2 + 1 + 1 of 6 pairs won.
        assert!(close(e.auc, 4.0 / 6.0));
        assert!(close(e.precision, 2.0 / 3.0));
    }
}
