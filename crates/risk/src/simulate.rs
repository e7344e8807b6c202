//! A deterministic traffic simulator with planted fraud, and the reference computation of
//! the features from a stream of uses.
//!
//! The simulator lets the loop "simulate → features → train → compare with the rules" run
//! without production data, and gives tests a ground truth. Legitimate traffic is made
//! deliberately untidy (travellers, expatriates, shared carrier IPs, families sharing a
//! device, big one-off purchases, ordinary declines) so a single feature cannot separate
//! the classes. The planted patterns:
//!
//! - [`PATTERN_CARD_TESTING`]: one IP, or many IPs of one /24, tries 8–40 stolen cards
//!   within minutes for tiny amounts, mostly declined. Half the campaigns rotate through
//!   the /24, which an IP rule misses and the network feature catches.
//! - [`PATTERN_ACCOUNT_TAKEOVER`]: a customer's known card is used from a new device,
//!   usually from another country and at the attacker's night, for several times the card's
//!   usual amount, often after failed one-time passwords, sometimes with a changed billing
//!   country.
//! - [`PATTERN_CARD_CYCLING`]: one device or email runs 5–20 stolen cards over hours,
//!   through proxies in each card's own country, for ordinary amounts: no country rule
//!   fires.
//! - [`PATTERN_CHARGEBACK`]: a few customers' own ordinary uses are charged back. Nothing
//!   tells them apart, on purpose: labels in production are that noisy, and no score
//!   should look perfect.
//!
//! [`features_of`] is the reference definition of every feature in
//! [`crate::FEATURE_NAMES`]: what the server's queries must reproduce.

use std::collections::{HashMap, HashSet};
use std::f64::consts::TAU;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::{Feature, Features, LabeledRow, N_FEATURES, baseline_rules_score};

/// Pattern name of card testing (see the module docs).
pub const PATTERN_CARD_TESTING: &str = "card_testing";
/// Pattern name of account takeover (see the module docs).
pub const PATTERN_ACCOUNT_TAKEOVER: &str = "account_takeover";
/// Pattern name of one device or email cycling through stolen cards (see the module docs).
pub const PATTERN_CARD_CYCLING: &str = "card_cycling";
/// Pattern name of a chargeback on an ordinary-looking use (see the module docs).
pub const PATTERN_CHARGEBACK: &str = "chargeback";

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What became of a use; the features of later uses count declines and OTP failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Authorized.
    Approved,
    /// Declined by the issuer.
    Declined,
    /// The cardholder's one-time password step-up failed.
    OtpFailed,
}

/// One simulated card use, with its ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimEvent {
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// The merchant account, and so the API key, it came through.
    pub merchant: u32,
    /// The client's address.
    pub ip: IpAddr,
    /// The card, as an index; the server maps it to a test card number.
    pub card: u32,
    /// Country of the card's issuer (ISO 3166-1 alpha-2).
    pub bin_country: String,
    /// Country of the client's IP address.
    pub ip_country: String,
    /// Billing country given with the use, if any.
    pub billing_country: Option<String>,
    /// Email given with the use, if any.
    pub email: Option<String>,
    /// Device identifier, if the client sent one.
    pub device_id: Option<String>,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO 4217 currency of the merchant.
    pub currency: String,
    /// The client's offset from UTC in minutes, as the server would estimate it.
    pub utc_offset_min: i32,
    /// How many of the use's identifiers were on a block list at the time.
    pub block_list_hits: u32,
    /// What became of it.
    pub outcome: Outcome,
    /// Ground truth: fraud (or charged back).
    pub fraud: bool,
    /// Which planted pattern produced it; `None` for legitimate traffic.
    pub pattern: Option<&'static str>,
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// The whole stream follows from this.
    pub seed: u64,
    /// Start of the first day (Unix milliseconds).
    pub start_ms: i64,
    /// Days of traffic.
    pub days: u32,
    /// Merchant accounts (at least 1 is used).
    pub merchants: u32,
    /// Legitimate uses per day, over all merchants.
    pub legit_per_day: u32,
    /// Mean number of fraud campaigns started per day (Poisson), each one of the patterns.
    pub attacks_per_day: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            // 2026-01-01T00:00:00Z
            start_ms: 1_767_225_600_000,
            days: 14,
            merchants: 5,
            legit_per_day: 1_300,
            attacks_per_day: 7.0,
        }
    }
}

/// A country: its code, UTC offset (no daylight saving) and currency. Its index picks the
/// invented address space its IPs come from (see `Generator::ipv4_in`).
struct Country {
    code: &'static str,
    offset_min: i32,
    currency: &'static str,
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        offset_min: -300,
        currency: "USD",
    },
    Country {
        code: "GB",
        offset_min: 0,
        currency: "GBP",
    },
    Country {
        code: "DE",
        offset_min: 60,
        currency: "EUR",
    },
    Country {
        code: "FR",
        offset_min: 60,
        currency: "EUR",
    },
    Country {
        code: "BR",
        offset_min: -180,
        currency: "BRL",
    },
    Country {
        code: "CA",
        offset_min: -300,
        currency: "CAD",
    },
    Country {
        code: "AU",
        offset_min: 600,
        currency: "AUD",
    },
    Country {
        code: "JP",
        offset_min: 540,
        currency: "JPY",
    },
    Country {
        code: "IN",
        offset_min: 330,
        currency: "INR",
    },
    Country {
        code: "NG",
        offset_min: 60,
        currency: "NGN",
    },
    Country {
        code: "RU",
        offset_min: 180,
        currency: "RUB",
    },
    Country {
        code: "VN",
        offset_min: 420,
        currency: "VND",
    },
];

/// Merchants and their customers are in the first countries; attackers come from any.
const HOME_MARKETS: usize = 8;

/// Never used: every index here comes from `COUNTRIES`' own range.
const NOWHERE: Country = Country {
    code: "ZZ",
    offset_min: 0,
    currency: "XXX",
};

fn country(i: usize) -> &'static Country {
    COUNTRIES.get(i).unwrap_or(&NOWHERE)
}

struct Customer {
    card: u32,
    country: usize,
    billing: Option<usize>,
    email: Option<String>,
    device: Option<String>,
    /// Home IPv4 address, or the /64 prefix (upper 64 bits) of an IPv6 one.
    home: Home,
    /// On a mobile carrier: many of its uses come from the carrier's shared address.
    mobile: bool,
    merchant: u32,
    second_merchant: Option<u32>,
    typical_amount: f64,
}

#[derive(Clone, Copy)]
enum Home {
    V4(u32),
    V6(u64),
}

struct Generator {
    rng: fastrand::Rng,
    merchants: u32,
    next_card: u32,
    next_id: u64,
    customers: Vec<Customer>,
    /// One carrier-grade NAT address per home market, shared by its mobile customers.
    carrier_ips: Vec<Ipv4Addr>,
    events: Vec<SimEvent>,
}

/// Simulates `opts.days` of card uses across `opts.merchants` accounts, time-ordered, with
/// planted fraud. The same options always give the same stream.
pub fn simulate(opts: &SimOptions) -> Vec<SimEvent> {
    let mut g = Generator {
        rng: fastrand::Rng::with_seed(opts.seed),
        merchants: opts.merchants.max(1),
        next_card: 0,
        next_id: 0,
        customers: Vec::new(),
        carrier_ips: Vec::new(),
        events: Vec::new(),
    };
    // About ten uses per customer over the period: enough history for the per-card means.
    let customers = (u64::from(opts.legit_per_day) * u64::from(opts.days) / 10).max(50);
    for _ in 0..customers {
        let c = g.customer();
        g.customers.push(c);
    }
    for i in 0..HOME_MARKETS {
        let ip = g.ipv4_in(i);
        g.carrier_ips.push(ip);
    }
    for day in 0..i64::from(opts.days) {
        let day_ms = opts.start_ms + day * DAY_MS;
        for _ in 0..opts.legit_per_day {
            g.legit(day_ms);
        }
        for _ in 0..g.poisson(opts.attacks_per_day) {
            match g.rng.u8(0..4) {
                0 => g.card_testing(day_ms),
                1 | 2 => g.account_takeover(day_ms),
                _ => g.card_cycling(day_ms),
            }
        }
    }
    let mut events = g.events;
    // Stable, so uses at the same millisecond keep the order they were generated in.
    events.sort_by_key(|e| e.at_ms);
    events
}

impl Generator {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn device(&mut self) -> String {
        format!("dev-{:08x}", self.id())
    }

    fn email(&mut self) -> String {
        format!("u{}@mail.example", self.id())
    }

    fn stolen_card(&mut self) -> u32 {
        let c = self.next_card;
        self.next_card += 1;
        c
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    /// A standard normal sample (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.rng.f64()
    }

    /// A Poisson sample (Knuth's method; the means here are small).
    fn poisson(&mut self, mean: f64) -> u32 {
        if !(mean > 0.0 && mean.is_finite()) {
            return 0;
        }
        let limit = (-mean).exp();
        let mut k = 0;
        let mut p = self.rng.f64();
        while p > limit && k < 10_000 {
            k += 1;
            p *= self.rng.f64();
        }
        k
    }

    /// An address in country `i`'s invented space: eight /8s per country from 20.0.0.0.
    fn ipv4_in(&mut self, i: usize) -> Ipv4Addr {
        let first = 20 + (i as u32) * 8 + self.rng.u32(0..8);
        Ipv4Addr::from(first << 24 | self.rng.u32(0..1 << 16) << 8 | self.rng.u32(1..255))
    }

    fn ipv6_prefix_in(&mut self, i: usize) -> u64 {
        (0x2a00 + i as u64) << 48 | self.rng.u64(0..1 << 48)
    }

    fn ipv6_from(&mut self, prefix: u64) -> Ipv6Addr {
        // Privacy addresses: a fresh interface id in the same /64 for each use.
        Ipv6Addr::from(u128::from(prefix) << 64 | u128::from(self.rng.u64(..)))
    }

    fn customer(&mut self) -> Customer {
        let merchant = self.rng.u32(0..self.merchants);
        let second_merchant = self.chance(0.2).then(|| self.rng.u32(0..self.merchants));
        let merchant_home = merchant as usize % HOME_MARKETS;
        let country = if self.chance(0.8) {
            merchant_home
        } else {
            self.rng.usize(0..HOME_MARKETS)
        };
        let billing = if self.chance(0.1) {
            None
        } else if self.chance(0.03) {
            // Expatriates: a card from home, a billing address abroad.
            Some(self.rng.usize(0..HOME_MARKETS))
        } else {
            Some(country)
        };
        let home = if self.chance(0.2) {
            Home::V6(self.ipv6_prefix_in(country))
        } else {
            Home::V4(u32::from(self.ipv4_in(country)))
        };
        // Families sharing a tablet (a device id) or a mailbox across their cards.
        let shares_with_previous = self.chance(0.05);
        let previous = self.customers.last();
        let shared_device = previous.and_then(|p| p.device.clone());
        let shared_email = previous.and_then(|p| p.email.clone());
        let device = match shared_device {
            Some(d) if shares_with_previous => Some(d),
            _ => self.chance(0.7).then(|| self.device()),
        };
        let email = match shared_email {
            Some(e) if shares_with_previous => Some(e),
            _ => self.chance(0.85).then(|| self.email()),
        };
        let typical_amount = (8.3 + 0.8 * self.normal()).exp();
        Customer {
            card: self.stolen_card(),
            country,
            billing,
            email,
            device,
            home,
            mobile: self.chance(0.15),
            merchant,
            second_merchant,
            typical_amount,
        }
    }

    /// Milliseconds into the UTC day at which a client with this offset sees `local_hour`.
    fn utc_ms_of_local(local_hour: f64, offset_min: i32) -> i64 {
        let local_ms = (local_hour * HOUR_MS as f64) as i64;
        (local_ms - i64::from(offset_min) * MINUTE_MS).rem_euclid(DAY_MS)
    }

    fn legit(&mut self, day_ms: i64) {
        let n = self.customers.len();
        let pick = self.rng.usize(0..n.max(1));
        let Some(c) = self.customers.get(pick) else {
            return;
        };
        let (card, home_country, billing, email, device, home, mobile, typical, merchants) = (
            c.card,
            c.country,
            c.billing,
            c.email.clone(),
            c.device.clone(),
            c.home,
            c.mobile,
            c.typical_amount,
            (c.merchant, c.second_merchant),
        );
        let merchant = match merchants {
            (_, Some(m)) if self.chance(0.5) => m,
            (m, _) => m,
        };
        let travelling = self.chance(0.03);
        let (ip_country, ip) = if travelling {
            let mut abroad = self.rng.usize(0..COUNTRIES.len());
            if abroad == home_country {
                abroad = (abroad + 1) % COUNTRIES.len();
            }
            (abroad, IpAddr::V4(self.ipv4_in(abroad)))
        } else if mobile && self.chance(0.6) {
            let carrier = self.carrier_ips.get(home_country).copied();
            let ip = carrier.unwrap_or(Ipv4Addr::LOCALHOST);
            (home_country, IpAddr::V4(ip))
        } else {
            let ip = match home {
                Home::V4(a) => IpAddr::V4(Ipv4Addr::from(a)),
                Home::V6(prefix) => IpAddr::V6(self.ipv6_from(prefix)),
            };
            (home_country, ip)
        };
        // Mostly daytime, some at any hour.
        let local_hour = if self.chance(0.85) {
            (14.5 + 3.5 * self.normal()).clamp(6.0, 23.99)
        } else {
            self.uniform(0.0, 24.0)
        };
        let offset = country(ip_country).offset_min;
        let at_ms = day_ms + Self::utc_ms_of_local(local_hour, offset);
        let mut amount = typical * (0.4 * self.normal()).exp();
        if self.chance(0.02) {
            amount *= self.uniform(4.0, 10.0);
        }
        let outcome = if self.chance(0.03) {
            Outcome::Declined
        } else if self.chance(0.015) {
            Outcome::OtpFailed
        } else {
            Outcome::Approved
        };
        // Stale entries: a legitimate customer once listed by mistake.
        let block_list_hits = u32::from(self.chance(0.003));
        let charged_back = self.chance(0.005);
        self.events.push(SimEvent {
            at_ms,
            merchant,
            ip,
            card,
            bin_country: country(home_country).code.to_owned(),
            ip_country: country(ip_country).code.to_owned(),
            billing_country: billing.map(|b| country(b).code.to_owned()),
            email,
            device_id: device,
            amount: amount.round().max(50.0) as i64,
            currency: self.currency(merchant).to_owned(),
            utc_offset_min: offset,
            block_list_hits,
            outcome,
            fraud: charged_back,
            pattern: charged_back.then_some(PATTERN_CHARGEBACK),
        });
    }

    fn currency(&self, merchant: u32) -> &'static str {
        country(merchant as usize % HOME_MARKETS).currency
    }

    fn card_testing(&mut self, day_ms: i64) {
        let start = day_ms + self.rng.i64(0..DAY_MS);
        let cards = self.rng.i64(8..=40);
        let duration = self.rng.i64(2..=20) * MINUTE_MS;
        let origin = self.rng.usize(0..COUNTRIES.len());
        let net = u32::from(self.ipv4_in(origin)) & 0xffff_ff00;
        let single = net | self.rng.u32(1..255);
        let rotate = self.chance(0.5);
        let merchant = self.rng.u32(0..self.merchants);
        let listed = u32::from(self.chance(0.2));
        let device = self.chance(0.3).then(|| self.device());
        for k in 0..cards {
            let at_ms = start + duration * k / cards + self.rng.i64(0..10_000);
            let ip = if rotate {
                net | self.rng.u32(1..255)
            } else {
                single
            };
            let bin = self.rng.usize(0..COUNTRIES.len());
            let billing = self.chance(0.4).then(|| country(bin).code.to_owned());
            let email = if self.chance(0.5) {
                None
            } else {
                Some(self.email())
            };
            let amount = if self.chance(0.3) {
                0
            } else {
                self.rng.i64(50..=200)
            };
            let outcome = if self.chance(0.75) {
                Outcome::Declined
            } else {
                Outcome::Approved
            };
            let card = self.stolen_card();
            self.events.push(SimEvent {
                at_ms,
                merchant,
                ip: IpAddr::V4(Ipv4Addr::from(ip)),
                card,
                bin_country: country(bin).code.to_owned(),
                ip_country: country(origin).code.to_owned(),
                billing_country: billing,
                email,
                device_id: device.clone(),
                amount,
                currency: self.currency(merchant).to_owned(),
                utc_offset_min: country(origin).offset_min,
                block_list_hits: listed,
                outcome,
                fraud: true,
                pattern: Some(PATTERN_CARD_TESTING),
            });
        }
    }

    fn account_takeover(&mut self, day_ms: i64) {
        let n = self.customers.len();
        let pick = self.rng.usize(0..n.max(1));
        let Some(c) = self.customers.get(pick) else {
            return;
        };
        let (card, home_country, billing, email, typical, merchant) = (
            c.card,
            c.country,
            c.billing,
            c.email.clone(),
            c.typical_amount,
            c.merchant,
        );
        let origin = if self.chance(0.8) {
            let mut o = self.rng.usize(0..COUNTRIES.len());
            if o == home_country {
                o = (o + 1) % COUNTRIES.len();
            }
            o
        } else {
            home_country
        };
        let offset = country(origin).offset_min;
        // Usually in the small hours where the attacker is.
        let local_hour = if self.chance(0.7) {
            self.uniform(0.0, 6.0)
        } else {
            self.uniform(0.0, 24.0)
        };
        let start = day_ms + Self::utc_ms_of_local(local_hour, offset);
        let ip = IpAddr::V4(self.ipv4_in(origin));
        let device = Some(self.device());
        let email = if self.chance(0.5) {
            email
        } else {
            Some(self.email())
        };
        let billing = if self.chance(0.5) {
            billing
        } else {
            Some(origin)
        };
        let listed = u32::from(self.chance(0.1));
        let failures = self.rng.i64(0..=2);
        let attempts = failures + self.rng.i64(1..=2);
        let mut at_ms = start;
        for k in 0..attempts {
            let outcome = if k < failures {
                Outcome::OtpFailed
            } else if self.chance(0.2) {
                Outcome::Declined
            } else {
                Outcome::Approved
            };
            let amount = (typical * self.uniform(4.0, 15.0)).round() as i64;
            self.events.push(SimEvent {
                at_ms,
                merchant,
                ip,
                card,
                bin_country: country(home_country).code.to_owned(),
                ip_country: country(origin).code.to_owned(),
                billing_country: billing.map(|b| country(b).code.to_owned()),
                email: email.clone(),
                device_id: device.clone(),
                amount,
                currency: self.currency(merchant).to_owned(),
                utc_offset_min: offset,
                block_list_hits: listed,
                outcome,
                fraud: true,
                pattern: Some(PATTERN_ACCOUNT_TAKEOVER),
            });
            at_ms += self.rng.i64(1..=6) * MINUTE_MS;
        }
    }

    fn card_cycling(&mut self, day_ms: i64) {
        let start = day_ms + self.rng.i64(0..DAY_MS);
        let cards = self.rng.i64(5..=20);
        let duration = self.rng.i64(30..=240) * MINUTE_MS;
        let origin = self.rng.usize(0..COUNTRIES.len());
        let merchant = self.rng.u32(0..self.merchants);
        let by_device = self.chance(0.6);
        let device = by_device.then(|| self.device());
        let shared_email = (!by_device).then(|| self.email());
        let listed = u32::from(self.chance(0.25));
        for k in 0..cards {
            let at_ms = start + duration * k / cards + self.rng.i64(0..60_000);
            let bin = self.rng.usize(0..HOME_MARKETS);
            // Residential proxies in the card's own country, so no country rule fires.
            let ip_country = if self.chance(0.7) { bin } else { origin };
            let ip = IpAddr::V4(self.ipv4_in(ip_country));
            let email = match &shared_email {
                Some(e) => Some(e.clone()),
                None => self.chance(0.5).then(|| self.email()),
            };
            let amount = (8.9 + 0.5 * self.normal()).exp().round() as i64;
            let outcome = if self.chance(0.2) {
                Outcome::Declined
            } else {
                Outcome::Approved
            };
            let card = self.stolen_card();
            self.events.push(SimEvent {
                at_ms,
                merchant,
                ip,
                card,
                bin_country: country(bin).code.to_owned(),
                ip_country: country(ip_country).code.to_owned(),
                billing_country: Some(country(bin).code.to_owned()),
                email,
                device_id: device.clone(),
                amount,
                currency: self.currency(merchant).to_owned(),
                utc_offset_min: country(ip_country).offset_min,
                block_list_hits: listed,
                outcome,
                fraud: true,
                pattern: Some(PATTERN_CARD_CYCLING),
            });
        }
    }
}

/// The network a velocity feature groups an address by: its /24 for IPv4, its /64 for IPv6
/// (one customer's privacy addresses, or one attacker's block).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
        )),
    }
}

/// One earlier use, as the windows see it.
#[derive(Clone, Copy)]
struct PastUse {
    at_ms: i64,
    card: u32,
    amount: i64,
    outcome: Outcome,
}

/// Every earlier use of one identifier, oldest first, with running amount totals so a
/// window's mean costs two lookups.
#[derive(Default)]
struct Trail {
    uses: Vec<PastUse>,
    /// `amount_prefix[i]` is the sum of the first `i` amounts.
    amount_prefix: Vec<i128>,
}

impl Trail {
    /// Index of the first use inside the window of `span_ms` ending at `now_ms`: a use
    /// counts when `now_ms - span_ms < at_ms`.
    fn window_start(&self, now_ms: i64, span_ms: i64) -> usize {
        let from = now_ms - span_ms;
        self.uses.partition_point(|u| u.at_ms <= from)
    }

    fn window(&self, now_ms: i64, span_ms: i64) -> &[PastUse] {
        let start = self.window_start(now_ms, span_ms);
        self.uses.get(start..).unwrap_or(&[])
    }

    fn count(&self, now_ms: i64, span_ms: i64) -> usize {
        self.window(now_ms, span_ms).len()
    }

    fn distinct_cards(&self, now_ms: i64, span_ms: i64) -> usize {
        self.window(now_ms, span_ms)
            .iter()
            .map(|u| u.card)
            .collect::<HashSet<_>>()
            .len()
    }

    fn outcomes(&self, now_ms: i64, span_ms: i64, outcome: Outcome) -> usize {
        self.window(now_ms, span_ms)
            .iter()
            .filter(|u| u.outcome == outcome)
            .count()
    }

    fn mean_amount(&self, now_ms: i64, span_ms: i64) -> Option<f64> {
        let start = self.window_start(now_ms, span_ms);
        let count = self.uses.len().checked_sub(start).filter(|c| *c > 0)?;
        let total = self.amount_prefix.last()? - self.amount_prefix.get(start)?;
        Some(total as f64 / count as f64)
    }

    fn push(&mut self, u: PastUse) {
        if self.amount_prefix.is_empty() {
            self.amount_prefix.push(0);
        }
        let total = self.amount_prefix.last().copied().unwrap_or(0) + i128::from(u.amount);
        self.amount_prefix.push(total);
        self.uses.push(u);
    }
}

fn trail<'a, K: Eq + Hash>(map: &'a HashMap<K, Trail>, key: &K) -> &'a Trail {
    static EMPTY: Trail = Trail {
        uses: Vec::new(),
        amount_prefix: Vec::new(),
    };
    map.get(key).unwrap_or(&EMPTY)
}

/// The span over which amount means are taken.
const MEAN_SPAN_MS: i64 = 30 * DAY_MS;

/// Computes each event's features from the events before it, as the server defines them,
/// with the baseline rules' score, in the events' order (which should be by time).
///
/// Definitions, all over uses strictly before this one (earlier in the stream), within the
/// window ending at this use's time and excluding its start: counts of uses, or of distinct
/// card indices, by the same card, IP address, network ([`network_of`]), merchant key,
/// email or device; declines and OTP failures of the same card; amount ratios to the mean
/// amount of the card's and the merchant's uses in the last 30 days (1 without such uses
/// or when that mean is 0). A missing email or device counts 0. Country mismatches need
/// both countries. The hour is the client's local time of day, `at_ms + utc_offset_min`.
pub fn features_of(events: &[SimEvent]) -> Vec<LabeledRow> {
    let mut by_card: HashMap<u32, Trail> = HashMap::new();
    let mut by_ip: HashMap<IpAddr, Trail> = HashMap::new();
    let mut by_net: HashMap<IpAddr, Trail> = HashMap::new();
    let mut by_key: HashMap<u32, Trail> = HashMap::new();
    let mut by_email: HashMap<&str, Trail> = HashMap::new();
    let mut by_device: HashMap<&str, Trail> = HashMap::new();

    let mut rows = Vec::with_capacity(events.len());
    for e in events {
        let now = e.at_ms;
        let card = trail(&by_card, &e.card);
        let ip = trail(&by_ip, &e.ip);
        let net = trail(&by_net, &network_of(e.ip));
        let key = trail(&by_key, &e.merchant);
        let email = e.email.as_deref().map(|k| trail(&by_email, &k));
        let device = e.device_id.as_deref().map(|k| trail(&by_device, &k));

        let mismatch = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (Some(a), Some(b)) if a != b => 1.0,
            _ => 0.0,
        };
        let ratio = |mean: Option<f64>| match mean {
            Some(m) if m > 0.0 => e.amount as f64 / m,
            _ => 1.0,
        };
        let local_ms = (now + i64::from(e.utc_offset_min) * MINUTE_MS).rem_euclid(DAY_MS);
        let angle = TAU * local_ms as f64 / DAY_MS as f64;
        let count = |n: usize| n as f64;

        let mut f = Features([0.0; N_FEATURES]);
        // Typed with the schema's length, so a feature left out fails to compile.
        let values: [(Feature, f64); N_FEATURES] = [
            (Feature::AmountLog10, (1.0 + e.amount.max(0) as f64).log10()),
            (Feature::CardUses10m, count(card.count(now, 10 * MINUTE_MS))),
            (Feature::CardUses24h, count(card.count(now, DAY_MS))),
            (Feature::IpUses1m, count(ip.count(now, MINUTE_MS))),
            (
                Feature::IpDistinctCards10m,
                count(ip.distinct_cards(now, 10 * MINUTE_MS)),
            ),
            (
                Feature::IpDistinctCards1h,
                count(ip.distinct_cards(now, HOUR_MS)),
            ),
            (
                Feature::NetDistinctCards1h,
                count(net.distinct_cards(now, HOUR_MS)),
            ),
            (Feature::KeyUses1m, count(key.count(now, MINUTE_MS))),
            (
                Feature::EmailDistinctCards24h,
                count(email.map_or(0, |t| t.distinct_cards(now, DAY_MS))),
            ),
            (
                Feature::DeviceDistinctCards1h,
                count(device.map_or(0, |t| t.distinct_cards(now, HOUR_MS))),
            ),
            (
                Feature::CardDeclines24h,
                count(card.outcomes(now, DAY_MS, Outcome::Declined)),
            ),
            (
                Feature::CardOtpFailures24h,
                count(card.outcomes(now, DAY_MS, Outcome::OtpFailed)),
            ),
            (
                Feature::BinIpCountryMismatch,
                mismatch(Some(&e.bin_country), Some(&e.ip_country)),
            ),
            (
                Feature::BinBillingCountryMismatch,
                mismatch(Some(&e.bin_country), e.billing_country.as_deref()),
            ),
            (
                Feature::IpBillingCountryMismatch,
                mismatch(Some(&e.ip_country), e.billing_country.as_deref()),
            ),
            (
                Feature::AmountVsCardMean,
                ratio(card.mean_amount(now, MEAN_SPAN_MS)),
            ),
            (
                Feature::AmountVsAccountMean,
                ratio(key.mean_amount(now, MEAN_SPAN_MS)),
            ),
            (Feature::HourSin, angle.sin()),
            (Feature::HourCos, angle.cos()),
            (Feature::BlockListHits, f64::from(e.block_list_hits)),
        ];
        for (feature, value) in values {
            f.set(feature, value);
        }
        rows.push(LabeledRow {
            at_ms: now,
            rules_score: baseline_rules_score(&f),
            features: f,
            fraud: e.fraud,
        });

        let past = PastUse {
            at_ms: now,
            card: e.card,
            amount: e.amount,
            outcome: e.outcome,
        };
        by_card.entry(e.card).or_default().push(past);
        by_ip.entry(e.ip).or_default().push(past);
        by_net.entry(network_of(e.ip)).or_default().push(past);
        by_key.entry(e.merchant).or_default().push(past);
        if let Some(k) = e.email.as_deref() {
            by_email.entry(k).or_default().push(past);
        }
        if let Some(k) = e.device_id.as_deref() {
            by_device.entry(k).or_default().push(past);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            days: 3,
            legit_per_day: 800,
            attacks_per_day: 10.0,
            ..SimOptions::default()
        }
    }

    #[test]
    fn a_seed_fixes_the_stream() {
        let a = simulate(&opts(3));
        assert_eq!(a, simulate(&opts(3)));
        assert_ne!(a, simulate(&opts(4)));
        assert!(
            a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
            "time-ordered"
        );
        for pattern in [
            PATTERN_CARD_TESTING,
            PATTERN_ACCOUNT_TAKEOVER,
            PATTERN_CARD_CYCLING,
            PATTERN_CHARGEBACK,
        ] {
            assert!(a.iter().any(|e| e.pattern == Some(pattern)), "{pattern}");
        }
        assert!(a.iter().all(|e| e.fraud == e.pattern.is_some()));
        let frauds = a.iter().filter(|e| e.fraud).count() as f64 / a.len() as f64;
        assert!((0.02..0.2).contains(&frauds), "fraud share {frauds}");
        assert!(a.iter().all(|e| e.merchant < 5 && e.amount >= 0));
    }

    #[test]
    fn nothing_to_simulate_is_empty() {
        let none = SimOptions {
            days: 0,
            ..SimOptions::default()
        };
        assert!(simulate(&none).is_empty());
    }

    #[test]
    fn networks() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(network_of(v4), "203.0.113.0".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        assert_eq!(network_of(v6), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }

    fn event(at_ms: i64, ip: &str, card: u32, amount: i64) -> SimEvent {
        SimEvent {
            at_ms,
            merchant: 0,
            ip: ip.parse().unwrap(),
            card,
            bin_country: "US".into(),
            ip_country: "US".into(),
            billing_country: None,
            email: None,
            device_id: None,
            amount,
            currency: "USD".into(),
            utc_offset_min: 0,
            block_list_hits: 0,
            outcome: Outcome::Approved,
            fraud: false,
            pattern: None,
        }
    }

    #[test]
    fn features_follow_their_definitions() {
        let t0 = 1_767_225_600_000 + 6 * HOUR_MS; // 06:00 UTC
        let mut e = vec![
            event(t0, "198.51.100.1", 1, 1_000),
            event(t0 + 30_000, "198.51.100.1", 2, 3_000),
            event(t0 + MINUTE_MS, "198.51.100.2", 1, 0),
            // Exactly 10 minutes after the first: the first falls out of 10-minute windows.
            event(t0 + 10 * MINUTE_MS, "198.51.100.1", 1, 4_000),
        ];
        e[1].outcome = Outcome::Declined;
        e[2].outcome = Outcome::OtpFailed;
        e[3].ip_country = "GB".into();
        e[3].billing_country = Some("GB".into());
        e[3].utc_offset_min = 60;
        e[3].email = Some("a@example.com".into());
        e[3].device_id = Some("d".into());
        e[3].block_list_hits = 2;
        let rows = features_of(&e);
        let f = |i: usize, feature: Feature| rows[i].features.get(feature);

        // The first use has no history.
        assert_eq!(f(0, Feature::AmountLog10), 1_001f64.log10());
        assert_eq!(f(0, Feature::CardUses24h), 0.0);
        assert_eq!(f(0, Feature::AmountVsCardMean), 1.0);
        assert_eq!(f(0, Feature::AmountVsAccountMean), 1.0);
        assert!(
            (f(0, Feature::HourSin) - 1.0).abs() < 1e-12,
            "06:00 is a quarter turn"
        );
        assert!(f(0, Feature::HourCos).abs() < 1e-12);

        // Second: same IP, another card, half a minute later.
        assert_eq!(f(1, Feature::IpUses1m), 1.0);
        assert_eq!(f(1, Feature::IpDistinctCards10m), 1.0);
        assert_eq!(f(1, Feature::KeyUses1m), 1.0);
        assert_eq!(f(1, Feature::CardUses24h), 0.0);
        assert_eq!(f(1, Feature::AmountVsAccountMean), 3.0);

        // Third: card 1 again from a neighbour in the /24; no amount.
        assert_eq!(f(2, Feature::AmountLog10), 0.0);
        assert_eq!(f(2, Feature::IpUses1m), 0.0);
        assert_eq!(
            f(2, Feature::KeyUses1m),
            1.0,
            "the first use is exactly 1 min old: out"
        );
        assert_eq!(f(2, Feature::NetDistinctCards1h), 2.0);
        assert_eq!(f(2, Feature::CardUses10m), 1.0);
        assert_eq!(f(2, Feature::AmountVsCardMean), 0.0);

        // Fourth, at t0 + 10 min: the first use is out of the 10-minute windows only.
        assert_eq!(f(3, Feature::CardUses10m), 1.0);
        assert_eq!(f(3, Feature::CardUses24h), 2.0);
        assert_eq!(f(3, Feature::IpDistinctCards10m), 1.0);
        assert_eq!(f(3, Feature::IpDistinctCards1h), 2.0);
        assert_eq!(f(3, Feature::NetDistinctCards1h), 2.0);
        assert_eq!(
            f(3, Feature::CardDeclines24h),
            0.0,
            "the decline was card 2's"
        );
        assert_eq!(f(3, Feature::CardOtpFailures24h), 1.0);
        assert_eq!(f(3, Feature::AmountVsCardMean), 4_000.0 / 500.0);
        assert_eq!(
            f(3, Feature::AmountVsAccountMean),
            4_000.0 / (4_000.0 / 3.0)
        );
        assert_eq!(f(3, Feature::BinIpCountryMismatch), 1.0);
        assert_eq!(f(3, Feature::BinBillingCountryMismatch), 1.0);
        assert_eq!(f(3, Feature::IpBillingCountryMismatch), 0.0);
        assert_eq!(f(3, Feature::EmailDistinctCards24h), 0.0);
        assert_eq!(f(3, Feature::DeviceDistinctCards1h), 0.0);
        assert_eq!(f(3, Feature::BlockListHits), 2.0);
        // 07:10 local.
        let angle = TAU * (7.0 + 10.0 / 60.0) / 24.0;
        assert!((f(3, Feature::HourSin) - angle.sin()).abs() < 1e-12);
        assert_eq!(
            rows[3].rules_score, 90.0,
            "two mismatches and a block-list hit"
        );
        assert!(rows.iter().all(|r| r.at_ms >= t0 && !r.fraud));
    }

    #[test]
    fn email_and_device_count_distinct_cards() {
        let t0 = 1_767_225_600_000;
        let e: Vec<SimEvent> = (0..4)
            .map(|i| {
                let mut e = event(t0 + i * 20 * MINUTE_MS, "192.0.2.1", (i % 3) as u32, 100);
                e.email = Some("x@example.com".into());
                e.device_id = Some("dev".into());
                e
            })
            .collect();
        let rows = features_of(&e);
        let last = &rows[3].features;
        // Cards 0, 1, 2 before; the device window (1 h) no longer holds the first use.
        assert_eq!(last.get(Feature::EmailDistinctCards24h), 3.0);
        assert_eq!(last.get(Feature::DeviceDistinctCards1h), 2.0);
    }
}
