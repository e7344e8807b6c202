//! Rules as data: an operator's rule set, checked whole before it is used, and evaluated
//! over one use's signals.
//!
//! A rule is a condition in a small expression language (the `evalexpr` crate: numbers,
//! strings, booleans, comparison and logic, a few pure functions; no loops, no I/O, no
//! host code), a score contribution and an optional action. The language is narrowed
//! further here: a condition may only read the signals below, may only call the functions
//! in [`FUNCTIONS`], may not assign or chain, and must yield a boolean.
//!
//! The signals are the feature schema ([`crate::FEATURE_NAMES`]: counts as integers,
//! country mismatches as booleans, the rest as floats) and [`EXTRA_SIGNALS`]. Every one is
//! computed from what an assessment stores, so a new rule set can be tried on the
//! assessments of the last days (a dry run) exactly as it would have decided them.

use std::collections::HashSet;
use std::fmt;

use evalexpr::{
    Context, DefaultNumericTypes, EvalexprError, EvalexprResult, Node, Operator, Value,
};
use serde::{Deserialize, Serialize};

use crate::{Feature, Features, N_FEATURES};

/// At most this many rules in a set.
pub const MAX_RULES: usize = 100;
/// At most this many characters in a condition.
pub const MAX_CONDITION: usize = 1000;
/// At most this many characters in a description.
pub const MAX_DESCRIPTION: usize = 500;
/// Parentheses nest at most this deep (the parser recurses).
pub const MAX_NESTING: usize = 32;
/// A rule's score contribution lies in `-MAX_SCORE..=MAX_SCORE`.
pub const MAX_SCORE: i64 = 100;
/// The shortest and longest suspension a rule may make, in seconds (as the API allows).
pub const SUSPENSION_RANGE_S: (i64, i64) = (60, 7_776_000);

/// The functions a condition may call: pure, total and cheap.
pub const FUNCTIONS: &[&str] = &[
    "min",
    "max",
    "floor",
    "ceil",
    "round",
    "math::abs",
    "math::ln",
    "math::log",
    "math::sqrt",
    "contains",
    "contains_any",
    "str::to_lowercase",
];

/// Signals beyond the feature schema, each derived from the features and what an
/// assessment records.
pub const EXTRA_SIGNALS: &[&str] = &[
    // What is being done: "tokenize", "payment", "reveal", "relay", ...
    "action",
    // The amount in minor units (0 when none), from `amount_log10`.
    "amount",
    // The hour of day, 0 to 23, from `hour_sin` and `hour_cos`.
    "hour",
    // A subject of this use (card, address, email, device, key) is suspended.
    "suspended",
    // A subject of this use is on the allow list.
    "allow_listed",
];

const N_SIGNALS: usize = N_FEATURES + 5;

/// What a rule does besides adding its score, when its condition holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    /// The decision is at least `review`.
    Review,
    /// The decision is `block`.
    Block,
    /// The decision is `block`, and the subject is suspended for `duration` seconds.
    Suspend {
        /// What to suspend.
        target: SuspendTarget,
        /// Seconds, within [`SUSPENSION_RANGE_S`].
        duration: i64,
    },
}

/// The subject of a use that a rule suspends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspendTarget {
    /// The client's address.
    Ip,
    /// The client's network: its /24 (IPv4) or /64 (IPv6).
    Network,
    /// The card (its fingerprint).
    Card,
    /// The email (its keyed digest).
    Email,
    /// The device id.
    DeviceId,
}

/// One rule as the operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable and unique in the set: `[a-z0-9_]`, 1 to 64 characters. The reason code.
    pub id: String,
    /// What it catches, in words; shown as the reason's detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The condition over the signals.
    pub when: String,
    /// Points added to the score (negative lowers it).
    pub score: i64,
    /// What else it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
    /// A disabled rule is kept but never evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A whole rule set with its thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetSpec {
    /// The rules, evaluated in order (all of them: every hit counts).
    pub rules: Vec<RuleSpec>,
    /// A score at or above this asks for review.
    #[serde(default = "default_review_at")]
    pub review_at: i64,
    /// A score at or above this blocks.
    #[serde(default = "default_block_at")]
    pub block_at: i64,
}

const fn default_review_at() -> i64 {
    50
}

const fn default_block_at() -> i64 {
    80
}

/// Why a rule set was refused: the rule (by id or position) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule's id, or `rules[i]` when its id is the problem; `None` for the set.
    pub rule: Option<String>,
    /// What is wrong, in words.
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(r) => write!(f, "rule {r}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for RuleError {}

/// One use's signals, as a read-only context for the conditions.
#[derive(Debug, Clone)]
pub struct Signals {
    values: [Value<DefaultNumericTypes>; N_SIGNALS],
}

/// How a feature reads in a condition.
fn feature_value(feature: Feature, v: f64) -> Value<DefaultNumericTypes> {
    use Feature as F;
    match feature {
        F::AmountLog10 | F::AmountVsCardMean | F::AmountVsAccountMean | F::HourSin | F::HourCos => {
            Value::Float(v)
        }
        F::BinIpCountryMismatch | F::BinBillingCountryMismatch | F::IpBillingCountryMismatch => {
            Value::Boolean(v > 0.0)
        }
        // Counts: whole numbers by construction.
        #[allow(clippy::cast_possible_truncation)]
        _ => Value::Int(v.round() as i64),
    }
}

impl Signals {
    /// The signals of a use: its features, what was done, and whether a subject is
    /// suspended or allow-listed.
    pub fn new(features: &Features, action: &str, suspended: bool, allow_listed: bool) -> Self {
        let amount = (10f64.powf(features.get(Feature::AmountLog10)) - 1.0).round();
        let angle = features
            .get(Feature::HourSin)
            .atan2(features.get(Feature::HourCos));
        let hour = (angle.rem_euclid(std::f64::consts::TAU) / std::f64::consts::TAU * 24.0)
            .floor()
            .rem_euclid(24.0);
        #[allow(clippy::cast_possible_truncation)]
        let extra = [
            Value::String(action.to_owned()),
            Value::Int(amount.max(0.0) as i64),
            Value::Int(hour as i64),
            Value::Boolean(suspended),
            Value::Boolean(allow_listed),
        ];
        let mut values: [Value<DefaultNumericTypes>; N_SIGNALS] =
            std::array::from_fn(|_| Value::Empty);
        for (slot, feature) in values.iter_mut().zip(Feature::ALL) {
            *slot = feature_value(feature, features.get(feature));
        }
        for (slot, v) in values.iter_mut().skip(N_FEATURES).zip(extra) {
            *slot = v;
        }
        Self { values }
    }

    fn index(name: &str) -> Option<usize> {
        Feature::from_name(name).map(Feature::index).or_else(|| {
            EXTRA_SIGNALS
                .iter()
                .position(|n| *n == name)
                .map(|i| N_FEATURES + i)
        })
    }

    /// The value of a signal, as a condition reads it.
    pub fn get(&self, name: &str) -> Option<&Value<DefaultNumericTypes>> {
        Self::index(name).and_then(|i| self.values.get(i))
    }
}

impl Context for Signals {
    type NumericTypes = DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&Value<DefaultNumericTypes>> {
        self.get(identifier)
    }

    fn call_function(
        &self,
        identifier: &str,
        _argument: &Value<DefaultNumericTypes>,
    ) -> EvalexprResult<Value<DefaultNumericTypes>, DefaultNumericTypes> {
        Err(EvalexprError::FunctionIdentifierNotFound(
            identifier.to_owned(),
        ))
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(
        &mut self,
        disabled: bool,
    ) -> EvalexprResult<(), DefaultNumericTypes> {
        if disabled {
            Err(EvalexprError::BuiltinFunctionsCannotBeDisabled)
        } else {
            Ok(())
        }
    }
}

struct Compiled {
    spec: RuleSpec,
    node: Node<DefaultNumericTypes>,
    /// The signals it reads, in first-read order, for its reason's detail.
    reads: Vec<String>,
}

/// A checked rule set, ready to evaluate.
pub struct RuleSet {
    spec: RuleSetSpec,
    rules: Vec<Compiled>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// A rule whose condition held.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// The rule.
    pub rule: &'a RuleSpec,
    /// The signals its condition reads, in first-read order.
    reads: &'a [String],
}

impl Hit<'_> {
    /// The signals the rule read, with their values for `signals`: `name=value, …`.
    pub fn values_read(&self, signals: &Signals) -> String {
        self.reads
            .iter()
            .filter_map(|name| {
                signals.get(name).map(|v| match v {
                    Value::Float(x) => format!("{name}={x:.2}"),
                    Value::String(x) => format!("{name}={x}"),
                    other => format!("{name}={other}"),
                })
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn nesting(s: &str) -> usize {
    let (mut depth, mut most) = (0usize, 0usize);
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                most = most.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    most
}

/// Two contexts a condition is tried on: a quiet use and a busy one. A condition must
/// yield a boolean on at least one and nothing else on either (a division by zero on
/// the quiet one is tolerated: at run time an error means "did not hold").
fn samples() -> [Signals; 2] {
    let quiet = Features([0.0; N_FEATURES]);
    let mut busy = Features([0.0; N_FEATURES]);
    for f in Feature::ALL {
        busy.set(f, 7.0);
    }
    busy.set(Feature::HourSin, 0.5);
    busy.set(Feature::HourCos, -0.5);
    [
        Signals::new(&quiet, "tokenize", false, false),
        Signals::new(&busy, "payment", true, true),
    ]
}

fn compile(spec: &RuleSpec, tries: &[Signals; 2]) -> Result<Compiled, String> {
    if let Some(d) = &spec.description
        && (d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control))
    {
        return Err(format!(
            "description: at most {MAX_DESCRIPTION} characters, no control characters"
        ));
    }
    if !(-MAX_SCORE..=MAX_SCORE).contains(&spec.score) {
        return Err(format!(
            "score must be between -{MAX_SCORE} and {MAX_SCORE}"
        ));
    }
    if let Some(RuleAction::Suspend { duration, .. }) = spec.action {
        let (lo, hi) = SUSPENSION_RANGE_S;
        if !(lo..=hi).contains(&duration) {
            return Err(format!("suspension duration must be {lo} to {hi} seconds"));
        }
    }
    let when = spec.when.trim();
    if when.is_empty() || when.chars().count() > MAX_CONDITION {
        return Err(format!("when: 1 to {MAX_CONDITION} characters"));
    }
    if nesting(when) > MAX_NESTING {
        return Err(format!("when: parentheses nest deeper than {MAX_NESTING}"));
    }
    let node = evalexpr::build_operator_tree::<DefaultNumericTypes>(when)
        .map_err(|e| format!("when does not parse: {e}"))?;
    for n in node.iter() {
        match n.operator() {
            Operator::Assign
            | Operator::AddAssign
            | Operator::SubAssign
            | Operator::MulAssign
            | Operator::DivAssign
            | Operator::ModAssign
            | Operator::ExpAssign
            | Operator::AndAssign
            | Operator::OrAssign
            | Operator::VariableIdentifierWrite { .. } => {
                return Err("when may not assign".into());
            }
            Operator::Chain => return Err("when is one expression (no `;`)".into()),
            _ => {}
        }
    }
    let mut reads = Vec::new();
    for name in node.iter_read_variable_identifiers() {
        if Signals::index(name).is_none() {
            return Err(format!("unknown signal `{name}`"));
        }
        if !reads.iter().any(|r| r == name) {
            reads.push(name.to_owned());
        }
    }
    if let Some(f) = node
        .iter_function_identifiers()
        .find(|f| !FUNCTIONS.contains(f))
    {
        return Err(format!("function `{f}` is not allowed"));
    }
    let mut boolean = false;
    let mut first_error = None;
    for s in tries {
        match node.eval_with_context(s) {
            Ok(Value::Boolean(_)) => boolean = true,
            Ok(other) => {
                return Err(format!(
                    "when must be a condition (true or false), not {}",
                    type_name(&other)
                ));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if !boolean {
        let e = first_error.map_or_else(String::new, |e| e.to_string());
        return Err(format!("when cannot be evaluated: {e}"));
    }
    Ok(Compiled {
        spec: spec.clone(),
        node,
        reads,
    })
}

fn type_name(v: &Value<DefaultNumericTypes>) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Float(_) | Value::Int(_) => "a number",
        Value::Boolean(_) => "a boolean",
        Value::Tuple(_) => "a tuple",
        Value::Empty => "nothing",
    }
}

impl RuleSet {
    /// Checks a whole set: every rule, the ids, the thresholds. One problem refuses it all.
    pub fn compile(spec: RuleSetSpec) -> Result<RuleSet, RuleError> {
        let set_error = |problem: String| RuleError {
            rule: None,
            problem,
        };
        if spec.rules.len() > MAX_RULES {
            return Err(set_error(format!("at most {MAX_RULES} rules")));
        }
        if !(1..=100).contains(&spec.review_at) || !(1..=100).contains(&spec.block_at) {
            return Err(set_error("review_at and block_at must be 1 to 100".into()));
        }
        if spec.review_at > spec.block_at {
            return Err(set_error("review_at must not exceed block_at".into()));
        }
        let tries = samples();
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.iter().enumerate() {
            if !valid_id(&r.id) {
                return Err(RuleError {
                    rule: Some(format!("rules[{i}]")),
                    problem: "id must be 1 to 64 of a-z, 0-9 and _".into(),
                });
            }
            if !seen.insert(r.id.as_str()) {
                return Err(RuleError {
                    rule: Some(r.id.clone()),
                    problem: "id is used twice".into(),
                });
            }
            rules.push(compile(r, &tries).map_err(|problem| RuleError {
                rule: Some(r.id.clone()),
                problem,
            })?);
        }
        Ok(RuleSet { spec, rules })
    }

    /// The set as written.
    pub fn spec(&self) -> &RuleSetSpec {
        &self.spec
    }

    /// The enabled rules whose condition holds for `signals`, in set order. A condition
    /// that fails at run time (a division by zero) does not hold.
    pub fn evaluate(&self, signals: &Signals) -> Vec<Hit<'_>> {
        self.rules
            .iter()
            .filter(|r| r.spec.enabled)
            .filter(|r| matches!(r.node.eval_boolean_with_context(signals), Ok(true)))
            .map(|r| Hit {
                rule: &r.spec,
                reads: &r.reads,
            })
            .collect()
    }
}

/// What decides a use besides its rules: suspensions, lists and the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// A subject of the use is suspended: it blocks.
    pub suspended: bool,
    /// A subject is on the block list: it blocks.
    pub block_listed: bool,
    /// A subject is on the allow list: unless suspended or block-listed, it is allowed
    /// whatever its score, and no rule suspends anything.
    pub allow_listed: bool,
    /// The active model's points.
    pub model_points: i64,
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Go ahead, but a person should look.
    Review,
    /// Refuse.
    Block,
}

impl Decision {
    /// `allow`, `review` or `block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Review => "review",
            Self::Block => "block",
        }
    }
}

/// How a set decides one use.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    /// 0 to 100: the rules' points, the model's, and 100 for a suspension or a block-list
    /// hit.
    pub score: i64,
    /// The decision.
    pub decision: Decision,
    /// The rules whose `suspend` action applies.
    pub suspend: Vec<&'a RuleSpec>,
}

impl RuleSet {
    /// Decides a use from the rules that held for it and its standing; the live path and
    /// a dry run both decide through here, so a dry run decides as the live path would.
    pub fn decide<'a>(&self, hits: &[Hit<'a>], standing: Standing) -> Verdict<'a> {
        let forced = [standing.suspended, standing.block_listed]
            .iter()
            .filter(|b| **b)
            .count();
        let points = hits.iter().map(|h| h.rule.score).sum::<i64>()
            + standing.model_points
            + 100 * i64::try_from(forced).unwrap_or(2);
        let score = points.clamp(0, 100);
        if forced == 0 && standing.allow_listed {
            return Verdict {
                score,
                decision: Decision::Allow,
                suspend: Vec::new(),
            };
        }
        let suspend: Vec<&RuleSpec> = hits
            .iter()
            .filter(|h| matches!(h.rule.action, Some(RuleAction::Suspend { .. })))
            .map(|h| h.rule)
            .collect();
        let acts = |want: fn(&RuleAction) -> bool| {
            hits.iter()
                .any(|h| h.rule.action.as_ref().is_some_and(want))
        };
        let decision = if forced > 0
            || score >= self.spec.block_at
            || acts(|a| matches!(a, RuleAction::Block | RuleAction::Suspend { .. }))
        {
            Decision::Block
        } else if score >= self.spec.review_at || acts(|a| matches!(a, RuleAction::Review)) {
            Decision::Review
        } else {
            Decision::Allow
        };
        Verdict {
            score,
            decision,
            suspend,
        }
    }
}

/// The version name of [`builtin`], the set an account has until it puts its own.
pub const BUILTIN_VERSION: &str = "builtin-1";

fn builtin_rule(
    id: &str,
    description: &str,
    when: &str,
    score: i64,
    action: Option<RuleAction>,
) -> RuleSpec {
    RuleSpec {
        id: id.into(),
        description: Some(description.into()),
        when: when.into(),
        score,
        action,
        enabled: true,
    }
}

/// The built-in rules: a card-testing run (ten other cards from one address in ten
/// minutes, as a bot trying stolen numbers through a publishable key makes) blocks and
/// suspends the address for an hour; busy networks, cards, devices and emails and the
/// three country mismatches add points.
pub fn builtin() -> RuleSetSpec {
    RuleSetSpec {
        rules: vec![
            builtin_rule(
                "card_testing_ip",
                "card testing: many different cards from one address",
                "ip_distinct_cards_10m >= 10",
                80,
                Some(RuleAction::Suspend {
                    target: SuspendTarget::Ip,
                    duration: 3600,
                }),
            ),
            builtin_rule(
                "card_testing_network",
                "card testing: many different cards from one network",
                "net_distinct_cards_1h >= 30",
                50,
                None,
            ),
            builtin_rule(
                "card_velocity",
                "one card used many times",
                "card_uses_10m >= 5",
                30,
                None,
            ),
            builtin_rule(
                "device_cycling",
                "many different cards on one device",
                "device_distinct_cards_1h >= 5",
                60,
                None,
            ),
            builtin_rule(
                "email_cycling",
                "many different cards with one email",
                "email_distinct_cards_24h >= 5",
                50,
                None,
            ),
            builtin_rule(
                "bin_ip_country_mismatch",
                "the card's country is not the address's",
                "bin_ip_country_mismatch",
                20,
                None,
            ),
            builtin_rule(
                "bin_billing_country_mismatch",
                "the card's country is not the billing country",
                "bin_billing_country_mismatch",
                15,
                None,
            ),
            builtin_rule(
                "ip_billing_country_mismatch",
                "the address's country is not the billing country",
                "ip_billing_country_mismatch",
                15,
                None,
            ),
            builtin_rule(
                "declines",
                "repeated declines or failed one-time passwords on the card",
                "card_declines_24h >= 3 || card_otp_failures_24h >= 3",
                30,
                None,
            ),
        ],
        review_at: default_review_at(),
        block_at: default_block_at(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, when: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            description: None,
            when: when.into(),
            score: 10,
            action: None,
            enabled: true,
        }
    }

    fn set(rules: Vec<RuleSpec>) -> RuleSetSpec {
        RuleSetSpec {
            rules,
            review_at: 50,
            block_at: 80,
        }
    }

    fn err(rules: Vec<RuleSpec>) -> RuleError {
        RuleSet::compile(set(rules)).unwrap_err()
    }

    #[test]
    fn conditions_read_counts_flags_floats_and_extras() {
        let mut f = Features([0.0; N_FEATURES]);
        f.set(Feature::IpDistinctCards10m, 12.0);
        f.set(Feature::BinIpCountryMismatch, 1.0);
        f.set(Feature::AmountLog10, (1.0f64 + 250_000.0).log10());
        // 18:00 on the unit circle.
        let a = std::f64::consts::TAU * 18.0 / 24.0;
        f.set(Feature::HourSin, a.sin());
        f.set(Feature::HourCos, a.cos());
        let s = Signals::new(&f, "relay", false, true);
        let rs = RuleSet::compile(set(vec![
            rule("testing", "ip_distinct_cards_10m >= 10"),
            rule(
                "mismatch",
                "bin_ip_country_mismatch && !ip_billing_country_mismatch",
            ),
            rule("big", "amount > 200000 && amount_log10 > 5.3"),
            rule("evening", "hour >= 18 && hour < 23"),
            rule("relay", "action == \"relay\" && allow_listed && !suspended"),
            rule("quiet", "card_uses_24h > 0"),
            rule(
                "fn",
                "max(card_uses_10m, ip_uses_1m) < 1 && contains((\"relay\", \"reveal\"), action)",
            ),
        ]))
        .unwrap();
        let hits = rs.evaluate(&s);
        let ids: Vec<&str> = hits.iter().map(|h| h.rule.id.as_str()).collect();
        assert_eq!(
            ids,
            ["testing", "mismatch", "big", "evening", "relay", "fn"]
        );
        assert_eq!(hits[0].values_read(&s), "ip_distinct_cards_10m=12");
        assert_eq!(s.get("amount"), Some(&Value::Int(250_000)));
        assert_eq!(s.get("hour"), Some(&Value::Int(18)));
    }

    #[test]
    fn the_built_in_set_compiles() {
        let rs = RuleSet::compile(builtin()).unwrap();
        let mut f = Features([0.0; N_FEATURES]);
        f.set(Feature::IpDistinctCards10m, 10.0);
        let hits = rs.evaluate(&Signals::new(&f, "tokenize", false, false));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].rule.id, "card_testing_ip");
    }

    #[test]
    fn decisions_follow_scores_actions_suspensions_and_lists() {
        let mut review = rule("review", "card_uses_10m >= 1");
        review.action = Some(RuleAction::Review);
        let mut susp = rule("susp", "ip_uses_1m >= 1");
        susp.action = Some(RuleAction::Suspend {
            target: SuspendTarget::Ip,
            duration: 600,
        });
        let mut big = rule("big", "key_uses_1m >= 1");
        big.score = 60;
        let rs = RuleSet::compile(set(vec![review, susp, big])).unwrap();
        let decide = |feature: Option<Feature>, standing: Standing| {
            let mut f = Features([0.0; N_FEATURES]);
            if let Some(feature) = feature {
                f.set(feature, 1.0);
            }
            let s = Signals::new(&f, "tokenize", standing.suspended, standing.allow_listed);
            let hits = rs.evaluate(&s);
            let o = rs.decide(&hits, standing);
            (o.score, o.decision, o.suspend.len())
        };
        let none = Standing::default();
        assert_eq!(decide(None, none), (0, Decision::Allow, 0));
        // An action decides even below the thresholds.
        assert_eq!(
            decide(Some(Feature::CardUses10m), none),
            (10, Decision::Review, 0)
        );
        assert_eq!(
            decide(Some(Feature::IpUses1m), none),
            (10, Decision::Block, 1)
        );
        // Points alone: 60 reviews; with the model's 25, 85 blocks.
        assert_eq!(
            decide(Some(Feature::KeyUses1m), none),
            (60, Decision::Review, 0)
        );
        let model = Standing {
            model_points: 25,
            ..none
        };
        assert_eq!(
            decide(Some(Feature::KeyUses1m), model),
            (85, Decision::Block, 0)
        );
        // Allow-listed: allowed, nothing suspended; suspended or block-listed: blocked.
        let allow = Standing {
            allow_listed: true,
            ..none
        };
        assert_eq!(
            decide(Some(Feature::IpUses1m), allow),
            (10, Decision::Allow, 0)
        );
        let both = Standing {
            suspended: true,
            ..allow
        };
        assert_eq!(decide(None, both), (100, Decision::Block, 0));
        let listed = Standing {
            block_listed: true,
            ..none
        };
        assert_eq!(decide(None, listed), (100, Decision::Block, 0));
    }

    #[test]
    fn a_disabled_rule_and_a_run_time_error_do_not_hold() {
        let mut off = rule("off", "true");
        off.enabled = false;
        let rs = RuleSet::compile(set(vec![
            off,
            rule("div", "card_uses_24h / card_uses_10m > 2"),
        ]))
        .unwrap();
        let s = Signals::new(&Features([0.0; N_FEATURES]), "tokenize", false, false);
        assert!(rs.evaluate(&s).is_empty());
    }

    #[test]
    fn bad_sets_are_refused_whole_with_the_rule_named() {
        let cases: Vec<(Vec<RuleSpec>, &str, &str)> = vec![
            (
                vec![rule("a", "card_uses_10m >=")],
                "a",
                "cannot be evaluated",
            ),
            (vec![rule("a", "card_uses_10m >= (")], "a", "does not parse"),
            (vec![rule("a", "cvv == 1")], "a", "unknown signal `cvv`"),
            (vec![rule("a", "x = 1")], "a", "may not assign"),
            (vec![rule("a", "card_uses_10m += 1")], "a", "may not assign"),
            (vec![rule("a", "true; false")], "a", "no `;`"),
            (vec![rule("a", "card_uses_10m + 1")], "a", "not a number"),
            (vec![rule("a", "random() > 0.5")], "a", "not allowed"),
            (
                vec![rule("a", "str::regex_matches(action, \"x\")")],
                "a",
                "not allowed",
            ),
            (vec![rule("a", "action > 1")], "a", "cannot be evaluated"),
            (vec![rule("a", "")], "a", "1 to 1000"),
            (vec![rule("a", &"(".repeat(40))], "a", "nest"),
            (vec![rule("A-b", "true")], "rules[0]", "id must be"),
            (
                vec![rule("a", "true"), rule("a", "false")],
                "a",
                "used twice",
            ),
        ];
        for (rules, who, problem) in cases {
            let e = err(rules);
            assert_eq!(e.rule.as_deref(), Some(who), "{e}");
            assert!(e.problem.contains(problem), "{e} lacks {problem}");
        }
        let mut r = rule("a", "true");
        r.score = 101;
        assert!(err(vec![r]).problem.contains("score"));
        let mut r = rule("a", "true");
        r.action = Some(RuleAction::Suspend {
            target: SuspendTarget::Ip,
            duration: 59,
        });
        assert!(err(vec![r]).problem.contains("duration"));
        let many = (0..=MAX_RULES)
            .map(|i| rule(&format!("r{i}"), "true"))
            .collect();
        assert_eq!(err(many).rule, None);
        let mut s = set(vec![]);
        s.review_at = 90;
        assert!(RuleSet::compile(s).unwrap_err().problem.contains("exceed"));
    }

    #[test]
    fn specs_read_as_json_with_defaults_and_refuse_unknown_fields() {
        let s: RuleSetSpec = serde_json::from_str(
            r#"{"rules": [{"id": "x", "when": "true", "score": 5,
                 "action": {"type": "suspend", "target": "network", "duration": 600}}]}"#,
        )
        .unwrap();
        assert_eq!((s.review_at, s.block_at), (50, 80));
        assert!(s.rules[0].enabled);
        assert_eq!(
            s.rules[0].action,
            Some(RuleAction::Suspend {
                target: SuspendTarget::Network,
                duration: 600
            })
        );
        assert!(
            serde_json::from_str::<RuleSpec>(r#"{"id":"x","when":"true","score":1,"eval":1}"#)
                .is_err()
        );
    }
}
