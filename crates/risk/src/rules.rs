//! A baseline rule set: what a hand-written configuration would score, so the model has
//! something honest to beat before it is trusted.

use crate::{Feature, Features};

/// The rules score at or above which the baseline declines a use.
pub const RULES_THRESHOLD: f64 = 70.0;

/// Scores a use 0..=100 with a few rules of the kind operators write first: card testing by
/// IP, country mismatches, repeated declines, block-list hits and large amounts.
///
/// It sees the same features as the model but only through fixed thresholds and weights,
/// and it ignores the device, email and amount-history signals a rule writer rarely tunes.
pub fn baseline_rules_score(f: &Features) -> f64 {
    let mut score = 0.0;
    if f.get(Feature::IpDistinctCards10m) >= 5.0 {
        score += 60.0;
    }
    for mismatch in [
        Feature::BinIpCountryMismatch,
        Feature::BinBillingCountryMismatch,
        Feature::IpBillingCountryMismatch,
    ] {
        if f.get(mismatch) >= 1.0 {
            score += 20.0;
        }
    }
    if f.get(Feature::CardDeclines24h) >= 3.0 {
        score += 30.0;
    }
    if f.get(Feature::BlockListHits) >= 1.0 {
        score += 50.0;
    }
    // 1 000.00 in a two-decimal currency.
    if f.get(Feature::AmountLog10) >= 5.0 {
        score += 10.0;
    }
    f64::min(score, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::N_FEATURES;

    #[test]
    fn rules_add_up_and_cap_at_100() {
        let mut f = Features([0.0; N_FEATURES]);
        assert_eq!(baseline_rules_score(&f), 0.0);
        f.set(Feature::IpDistinctCards10m, 5.0);
        assert_eq!(baseline_rules_score(&f), 60.0);
        f.set(Feature::BinIpCountryMismatch, 1.0);
        assert_eq!(baseline_rules_score(&f), 80.0);
        f.set(Feature::BlockListHits, 2.0);
        assert_eq!(baseline_rules_score(&f), 100.0);
    }
}
