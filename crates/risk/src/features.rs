//! The feature schema: what the server computes for each assessment and the model reads.
//!
//! The schema is versioned. A stored model records the version it was trained on and is
//! refused by a build that computes another one, since reordered or redefined columns would
//! be scored silently wrong. Change a name, its order or its definition: bump
//! [`FEATURES_VERSION`].
//!
//! Every window counts the uses *before* the one being assessed (the server scores a use
//! before it records it); [`crate::features_of`] is the reference definition of each.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::RiskError;

/// The number of features in the schema.
pub const N_FEATURES: usize = 20;

/// The version of the schema below; stored with every model.
pub const FEATURES_VERSION: u32 = 1;

/// Feature names in column order.
pub const FEATURE_NAMES: &[&str] = &[
    // log10(1 + amount in minor units); 0 when the use has no amount.
    "amount_log10",
    // Earlier uses of this card fingerprint.
    "card_uses_10m",
    "card_uses_24h",
    // Earlier uses from this exact IP address, and the distinct cards they carried.
    "ip_uses_1m",
    "ip_distinct_cards_10m",
    "ip_distinct_cards_1h",
    // Distinct cards from the client's network: its /24 (IPv4) or /64 (IPv6).
    "net_distinct_cards_1h",
    // Earlier uses by the same API key (the merchant account).
    "key_uses_1m",
    "email_distinct_cards_24h",
    "device_distinct_cards_1h",
    // Earlier declined authorizations and failed one-time passwords on this card.
    "card_declines_24h",
    "card_otp_failures_24h",
    // 1 when both countries are known and differ, else 0.
    "bin_ip_country_mismatch",
    "bin_billing_country_mismatch",
    "ip_billing_country_mismatch",
    // Amount over the mean of the card's (the account's) uses in the last 30 days; 1 when
    // there are none.
    "amount_vs_card_mean",
    "amount_vs_account_mean",
    // The client's local hour of day on the unit circle, so 23:00 and 01:00 are neighbours.
    "hour_sin",
    "hour_cos",
    // Identifiers of this use (card, IP, email, device) found on block lists.
    "block_list_hits",
];

const _: () = assert!(FEATURE_NAMES.len() == N_FEATURES);

/// One feature of the schema, for reading and writing [`Features`] by name in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(
    missing_docs,
    reason = "each variant is the feature of the same name in FEATURE_NAMES"
)]
pub enum Feature {
    AmountLog10,
    CardUses10m,
    CardUses24h,
    IpUses1m,
    IpDistinctCards10m,
    IpDistinctCards1h,
    NetDistinctCards1h,
    KeyUses1m,
    EmailDistinctCards24h,
    DeviceDistinctCards1h,
    CardDeclines24h,
    CardOtpFailures24h,
    BinIpCountryMismatch,
    BinBillingCountryMismatch,
    IpBillingCountryMismatch,
    AmountVsCardMean,
    AmountVsAccountMean,
    HourSin,
    HourCos,
    BlockListHits,
}

impl Feature {
    /// Every feature, in column order.
    pub const ALL: [Feature; N_FEATURES] = [
        Feature::AmountLog10,
        Feature::CardUses10m,
        Feature::CardUses24h,
        Feature::IpUses1m,
        Feature::IpDistinctCards10m,
        Feature::IpDistinctCards1h,
        Feature::NetDistinctCards1h,
        Feature::KeyUses1m,
        Feature::EmailDistinctCards24h,
        Feature::DeviceDistinctCards1h,
        Feature::CardDeclines24h,
        Feature::CardOtpFailures24h,
        Feature::BinIpCountryMismatch,
        Feature::BinBillingCountryMismatch,
        Feature::IpBillingCountryMismatch,
        Feature::AmountVsCardMean,
        Feature::AmountVsAccountMean,
        Feature::HourSin,
        Feature::HourCos,
        Feature::BlockListHits,
    ];

    /// The column of this feature in [`Features`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The feature's name in [`FEATURE_NAMES`].
    pub fn name(self) -> &'static str {
        // `FEATURE_NAMES` has one name per variant (checked above and in the tests), so the
        // fallback is never taken; it keeps this free of an indexing panic.
        FEATURE_NAMES.get(self.index()).copied().unwrap_or("")
    }

    /// The feature with this name, if the schema has one.
    pub fn from_name(name: &str) -> Option<Feature> {
        let i = FEATURE_NAMES.iter().position(|n| *n == name)?;
        Feature::ALL.get(i).copied()
    }
}

/// One assessment's feature vector, in the column order of [`FEATURE_NAMES`].
///
/// Serialized as an object keyed by feature name, so stored rows stay readable; reading one
/// back requires exactly the schema's names, each once, with finite values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features(pub [f64; N_FEATURES]);

impl Features {
    /// Builds a vector from `(name, value)` pairs, which must name every feature exactly once
    /// with a finite value.
    pub fn from_pairs<I, K>(pairs: I) -> Result<Self, RiskError>
    where
        I: IntoIterator<Item = (K, f64)>,
        K: AsRef<str>,
    {
        let mut values = [None; N_FEATURES];
        for (name, value) in pairs {
            let name = name.as_ref();
            let problem = |problem| RiskError::FeatureName {
                name: name.to_owned(),
                problem,
            };
            let feature = Feature::from_name(name).ok_or_else(|| problem("unknown feature"))?;
            if !value.is_finite() {
                return Err(problem("value is not a finite number"));
            }
            let slot = values
                .get_mut(feature.index())
                .ok_or_else(|| problem("unknown feature"))?;
            if slot.replace(value).is_some() {
                return Err(problem("given more than once"));
            }
        }
        let mut out = [0.0; N_FEATURES];
        for ((out, value), feature) in out.iter_mut().zip(values).zip(Feature::ALL) {
            *out = value.ok_or_else(|| RiskError::FeatureName {
                name: feature.name().to_owned(),
                problem: "missing",
            })?;
        }
        Ok(Features(out))
    }

    /// Builds a vector from a map keyed by feature name; see [`Features::from_pairs`].
    pub fn from_map(map: &BTreeMap<String, f64>) -> Result<Self, RiskError> {
        Self::from_pairs(map.iter().map(|(k, v)| (k, *v)))
    }

    /// The value of one feature.
    pub fn get(&self, feature: Feature) -> f64 {
        self.0.get(feature.index()).copied().unwrap_or(0.0)
    }

    /// Sets the value of one feature.
    pub fn set(&mut self, feature: Feature, value: f64) {
        if let Some(slot) = self.0.get_mut(feature.index()) {
            *slot = value;
        }
    }

    /// The value of the feature with this name, if the schema has one.
    pub fn by_name(&self, name: &str) -> Option<f64> {
        Feature::from_name(name).map(|f| self.get(f))
    }

    /// `(name, value)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        FEATURE_NAMES.iter().copied().zip(self.0.iter().copied())
    }

    /// The first feature whose value is NaN or infinite.
    pub fn first_non_finite(&self) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| !self.get(*f).is_finite())
    }
}

impl Features {
    /// The compact form kept with each stored assessment: `[version, v0, v1, …]` in
    /// column order, a quarter the size of the named object (an assessment is written
    /// for every card use, so its size is paid on every tokenize). Read back by
    /// `Deserialize`, which takes this and the named object.
    pub fn to_stored(&self) -> String {
        let mut out = String::with_capacity(8 + N_FEATURES * 6);
        out.push('[');
        out.push_str(&FEATURES_VERSION.to_string());
        for v in self.0 {
            out.push(',');
            // Non-finite values have no JSON form: stored as 0, as serde_json would refuse.
            let v = if v.is_finite() { v } else { 0.0 };
            if v == v.trunc() && v.abs() < 1e15 {
                out.push_str(&format!("{}", v as i64));
            } else {
                out.push_str(&v.to_string());
            }
        }
        out.push(']');
        out
    }
}

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(N_FEATURES))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FeaturesVisitor;

        impl<'de> Visitor<'de> for FeaturesVisitor {
            type Value = Features;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with one number per feature name, or the stored array")
            }

            /// The stored form ([`Features::to_stored`]): the schema version, then each
            /// value in column order.
            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Features, A::Error> {
                let version: u32 = access
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("no features version"))?;
                if version != FEATURES_VERSION {
                    return Err(de::Error::custom(format!(
                        "features version {version}, not {FEATURES_VERSION}"
                    )));
                }
                let mut f = Features([0.0; N_FEATURES]);
                for (i, slot) in f.0.iter_mut().enumerate() {
                    *slot = access
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i + 1, &self))?;
                }
                if access.next_element::<f64>()?.is_some() {
                    return Err(de::Error::custom("more values than features"));
                }
                Ok(f)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Features, A::Error> {
                let mut pairs = Vec::with_capacity(N_FEATURES);
                while let Some(pair) = access.next_entry::<String, f64>()? {
                    pairs.push(pair);
                }
                Features::from_pairs(pairs).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(FeaturesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_and_names_agree() {
        for (i, f) in Feature::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(f.name(), FEATURE_NAMES[i]);
            assert_eq!(Feature::from_name(FEATURE_NAMES[i]), Some(f));
        }
        let mut names = FEATURE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), N_FEATURES, "feature names are unique");
    }

    fn sample() -> Features {
        let mut f = Features([0.0; N_FEATURES]);
        for (i, feature) in Feature::ALL.into_iter().enumerate() {
            f.set(feature, i as f64 * 0.5);
        }
        f
    }

    #[test]
    fn json_is_an_object_keyed_by_name_and_round_trips() {
        let f = sample();
        let json = serde_json::to_value(f).unwrap();
        assert_eq!(json["ip_distinct_cards_10m"], 2.0);
        assert_eq!(json.as_object().unwrap().len(), N_FEATURES);
        let back: Features = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn json_with_a_missing_unknown_or_repeated_name_is_refused() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json.as_object_mut().unwrap().remove("hour_cos");
        let err = serde_json::from_value::<Features>(json.clone()).unwrap_err();
        assert!(err.to_string().contains("hour_cos"), "{err}");

        json["hour_cos"] = 1.0.into();
        json["hour_tan"] = 1.0.into();
        let err = serde_json::from_value::<Features>(json).unwrap_err();
        assert!(err.to_string().contains("hour_tan"), "{err}");

        let repeated = format!(
            "{{{},\"amount_log10\":1}}",
            serde_json::to_string(&sample())
                .unwrap()
                .trim_matches(['{', '}'])
        );
        let err = serde_json::from_str::<Features>(&repeated).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn from_map_checks_values() {
        let mut map: BTreeMap<String, f64> =
            sample().iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(Features::from_map(&map).unwrap(), sample());
        map.insert("key_uses_1m".into(), f64::NAN);
        assert!(matches!(
            Features::from_map(&map),
            Err(RiskError::FeatureName { name, .. }) if name == "key_uses_1m"
        ));
    }

    #[test]
    fn named_access() {
        let f = sample();
        assert_eq!(f.get(Feature::BlockListHits), 9.5);
        assert_eq!(f.by_name("block_list_hits"), Some(9.5));
        assert_eq!(f.by_name("nope"), None);
        assert_eq!(f.first_non_finite(), None);
    }

    #[test]
    fn the_stored_form_reads_back_exactly_and_refuses_another_version() {
        let mut f = Features([0.0; N_FEATURES]);
        f.set(Feature::CardUses10m, 3.0);
        f.set(Feature::AmountLog10, 3.7_f64.log10());
        f.set(Feature::HourSin, -0.8660254037844386);
        let stored = f.to_stored();
        assert!(
            stored.starts_with(&format!("[{FEATURES_VERSION},")),
            "{stored}"
        );
        let back: Features = serde_json::from_str(&stored).unwrap();
        for (a, b) in f.0.iter().zip(back.0.iter()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        // The named object still reads, and is four times the size.
        let named = serde_json::to_string(&f).unwrap();
        assert!(
            named.len() > 3 * stored.len(),
            "{} vs {}",
            named.len(),
            stored.len()
        );
        let again: Features = serde_json::from_str(&named).unwrap();
        assert_eq!(again.0, f.0);
        let other = stored.replacen(&format!("[{FEATURES_VERSION},"), "[99,", 1);
        assert!(serde_json::from_str::<Features>(&other).is_err());
        let short = format!("[{FEATURES_VERSION},1,2]");
        assert!(serde_json::from_str::<Features>(&short).is_err());
    }
}
