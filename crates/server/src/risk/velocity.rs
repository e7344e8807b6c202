//! Velocity: how often a card, address, network, API key, email or device was used just
//! before this use. The counts are `strongroom_risk`'s velocity features, defined by its
//! `simulate::features_of`: each window counts only earlier uses (the current use is
//! counted, then recorded) and ends at this use's time, excluding its start, so a use
//! exactly one window old is out.
//!
//! Two backends, chosen by configuration: [`MemoryVelocity`] for one node (the embedded
//! deployment) and [`RedisVelocity`] when several nodes must share counts. Both key every
//! subject by account and mode, so test traffic never moves live scores, and both keep
//! each subject's trail only as long as its longest window and at most
//! [`MAX_PER_SUBJECT`] entries long: a count saturates there, which is already far past
//! any threshold worth scoring.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};

use strongroom_core::Mode;
use strongroom_crypto::httpsig::sha256;
use tokio::sync::OnceCell;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Most entries (uses, or distinct cards) one subject keeps; older ones are dropped first.
pub const MAX_PER_SUBJECT: usize = 10_000;
/// Most subjects of one kind (say, IP addresses) the in-memory counters hold.
pub const MEMORY_MAX_SUBJECTS: usize = 100_000;
/// Most entries over all subjects of one kind the in-memory counters hold.
pub const MEMORY_MAX_ENTRIES: usize = 1_000_000;

/// Redis keys outlive their longest window by this much, so a node whose clock runs a
/// little behind still finds what another node wrote.
const REDIS_TTL_SLACK_MS: i64 = 5 * MINUTE_MS;

/// Longer subject names than this are hashed, so keys stay bounded.
const MAX_PLAIN_NAME: usize = 64;

/// One use of a card, as the counters record it. Every subject but the time is optional:
/// an absent one is neither counted nor recorded.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    /// The merchant account the use came through.
    pub account_id: &'a str,
    /// Test or live: each has its own counts.
    pub mode: Mode,
    /// When it happened (Unix milliseconds, from the injected clock).
    pub at_ms: i64,
    /// The card's fingerprint as text (base64url).
    pub card: Option<&'a str>,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The API key it was made with.
    pub key_id: Option<&'a str>,
    /// The keyed digest of the email given with it (hex), never the address itself.
    pub email: Option<&'a str>,
    /// The device identifier the client sent.
    pub device: Option<&'a str>,
}

/// The counts before this use: `strongroom_risk`'s velocity features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Uses of this card in the last 10 minutes.
    pub card_uses_10m: u32,
    /// Uses of this card in the last 24 hours.
    pub card_uses_24h: u32,
    /// Uses from this IP address in the last minute.
    pub ip_uses_1m: u32,
    /// Distinct cards used from this IP address in the last 10 minutes.
    pub ip_distinct_cards_10m: u32,
    /// Distinct cards used from this IP address in the last hour.
    pub ip_distinct_cards_1h: u32,
    /// Distinct cards used from this address's /24 (IPv4) or /64 (IPv6) in the last hour.
    pub net_distinct_cards_1h: u32,
    /// Uses of this API key in the last minute.
    pub key_uses_1m: u32,
    /// Distinct cards used with this email in the last 24 hours.
    pub email_distinct_cards_24h: u32,
    /// Distinct cards used from this device in the last hour.
    pub device_distinct_cards_1h: u32,
    /// Declines of this card in the last 24 hours (see [`Failure`]).
    pub card_declines_24h: u32,
    /// Failed one-time passwords for this card in the last 24 hours.
    pub card_otp_failures_24h: u32,
}

/// How long amounts count toward a mean: 30 days, as `strongroom_risk`'s simulator
/// defines the amount-history features.
pub const AMOUNT_SPAN_MS: i64 = 30 * DAY_MS;

/// The amounts of a subject's earlier payments in the last 30 days: how many, their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// How many.
    pub n: u32,
    /// Their sum, in minor units.
    pub sum: i64,
}

impl Amounts {
    /// `amount` against their mean: 1 when there is none (a first payment), as the
    /// feature schema defines it.
    pub fn ratio(&self, amount: i64) -> f64 {
        if self.n == 0 {
            return 1.0;
        }
        let mean = self.sum as f64 / f64::from(self.n);
        if mean > 0.0 {
            amount as f64 / mean
        } else {
            1.0
        }
    }
}

/// One payment's amount, as the amount history records it.
#[derive(Debug, Clone, Copy)]
pub struct Payment<'a> {
    /// The merchant account.
    pub account_id: &'a str,
    /// Test or live.
    pub mode: Mode,
    /// When (Unix milliseconds).
    pub at_ms: i64,
    /// The card's fingerprint as text, when the payment names one.
    pub card: Option<&'a str>,
    /// In minor units.
    pub amount: i64,
}

/// The card's and the account's amount history before a payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// The card's earlier amounts.
    pub card: Amounts,
    /// The account's earlier amounts (its most recent [`MAX_PER_SUBJECT`] in the span).
    pub account: Amounts,
}

/// What went wrong with a card, counted in the windows of its later uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A payment with it was declined (reported by the merchant, or a relay answered
    /// `402 Payment Required`).
    Decline,
    /// A one-time password for it was wrong.
    OtpFailure,
}

/// One failure of a card, as the counters record it.
#[derive(Debug, Clone, Copy)]
pub struct FailureAt<'a> {
    /// The merchant account.
    pub account_id: &'a str,
    /// Test or live.
    pub mode: Mode,
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// The card's fingerprint as text (base64url).
    pub card: &'a str,
    /// What went wrong.
    pub failure: Failure,
}

/// Why counts could not be had.
#[derive(Debug, thiserror::Error)]
pub enum VelocityError {
    /// Redis failed or did not answer in time; the source says how (log it, never show it).
    #[error("velocity store unavailable")]
    Unavailable(#[source] redis::RedisError),
    /// The Redis URL in the configuration does not parse.
    #[error("velocity store URL is invalid")]
    InvalidUrl(#[source] redis::RedisError),
}

/// The velocity counters chosen by configuration.
pub enum Velocity {
    /// In this process (one node).
    Memory(MemoryVelocity),
    /// In Redis, shared by every node that uses it.
    Redis(RedisVelocity),
    /// In Redis and, while Redis is unreachable, in this process: the node keeps counting
    /// what it sees (a card tested across N nodes is seen 1/N at a time, never not at all),
    /// with a warning and `strongroom_redis_degraded{feature="velocity"}`.
    Shared {
        redis: Box<RedisVelocity>,
        local: Box<MemoryVelocity>,
        health: std::sync::Arc<crate::metrics::RedisHealth>,
    },
}

impl Velocity {
    /// In-process counters with the default bounds.
    pub fn memory() -> Self {
        Self::Memory(MemoryVelocity::default())
    }

    /// Counters in the Redis at `url` (`redis://127.0.0.1:6379`); connects on first use.
    pub fn redis(url: &str) -> Result<Self, VelocityError> {
        RedisVelocity::new(url).map(Self::Redis)
    }

    /// Counters in Redis that fall back to this process's while Redis is unreachable.
    pub fn redis_or_local(
        url: &str,
        health: std::sync::Arc<crate::metrics::RedisHealth>,
    ) -> Result<Self, VelocityError> {
        Ok(Self::Shared {
            redis: Box::new(RedisVelocity::new(url)?),
            local: Box::default(),
            health,
        })
    }

    /// Counts the earlier uses of each subject in its windows, then records this use.
    /// Atomic per subject: of two concurrent uses, exactly one counts the other.
    pub async fn observe(&self, u: &Use<'_>) -> Result<Counts, VelocityError> {
        match self {
            Self::Memory(m) => Ok(m.observe(u)),
            Self::Redis(r) => r.observe(u).await,
            Self::Shared {
                redis,
                local,
                health,
            } => Ok(health
                .risk_velocity
                .run(FEATURE, u.at_ms, redis.observe(u), async {
                    local.observe(u)
                })
                .await),
        }
    }

    /// The card's and the account's earlier amounts in the last 30 days, then records
    /// this payment's. Atomic per subject, like [`Velocity::observe`].
    pub async fn amounts(&self, p: &Payment<'_>) -> Result<History, VelocityError> {
        match self {
            Self::Memory(m) => Ok(m.amounts(p)),
            Self::Redis(r) => r.amounts(p).await,
            Self::Shared {
                redis,
                local,
                health,
            } => Ok(health
                .risk_velocity
                .run(FEATURE, p.at_ms, redis.amounts(p), async {
                    local.amounts(p)
                })
                .await),
        }
    }

    /// Records a card's failure: later uses of the card count it for a day.
    pub async fn record_failure(&self, f: &FailureAt<'_>) -> Result<(), VelocityError> {
        match self {
            Self::Memory(m) => {
                m.record_failure(f);
                Ok(())
            }
            Self::Redis(r) => r.record_failure(f).await,
            Self::Shared {
                redis,
                local,
                health,
            } => {
                let at = f.at_ms;
                let local = async { local.record_failure(f) };
                health
                    .risk_velocity
                    .run(FEATURE, at, redis.record_failure(f), local)
                    .await;
                Ok(())
            }
        }
    }
}

/// The feature's name in `strongroom_redis_degraded`.
const FEATURE: &str = "velocity";

/// What is counted per subject. Each kind has its own trail per subject, so one trail's
/// bound and eviction never costs another kind its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CardUses,
    IpUses,
    IpCards,
    NetCards,
    KeyUses,
    EmailCards,
    DeviceCards,
    CardDeclines,
    CardOtpFailures,
}

const KINDS: usize = 9;

impl Kind {
    const ALL: [Kind; KINDS] = [
        Kind::CardUses,
        Kind::IpUses,
        Kind::IpCards,
        Kind::NetCards,
        Kind::KeyUses,
        Kind::EmailCards,
        Kind::DeviceCards,
        Kind::CardDeclines,
        Kind::CardOtpFailures,
    ];

    /// The kind's part of a Redis key.
    fn name(self) -> &'static str {
        match self {
            Kind::CardUses => "card",
            Kind::IpUses => "ip",
            Kind::IpCards => "ip-cards",
            Kind::NetCards => "net-cards",
            Kind::KeyUses => "key",
            Kind::EmailCards => "email-cards",
            Kind::DeviceCards => "device-cards",
            Kind::CardDeclines => "card-declines",
            Kind::CardOtpFailures => "card-otp-failures",
        }
    }

    /// A use counts these but records nothing in them: their entries are failures
    /// ([`Velocity::record_failure`]).
    fn counted_only(self) -> bool {
        matches!(self, Kind::CardDeclines | Kind::CardOtpFailures)
    }

    /// The kind a failure is recorded in.
    fn of_failure(f: Failure) -> Self {
        match f {
            Failure::Decline => Kind::CardDeclines,
            Failure::OtpFailure => Kind::CardOtpFailures,
        }
    }

    /// Counts distinct cards (a card's entry is its last use) rather than uses.
    fn distinct(self) -> bool {
        matches!(
            self,
            Kind::IpCards | Kind::NetCards | Kind::EmailCards | Kind::DeviceCards
        )
    }

    /// The windows counted, shortest first (at most two).
    fn windows(self) -> &'static [i64] {
        match self {
            Kind::CardUses => &[10 * MINUTE_MS, DAY_MS],
            Kind::IpUses | Kind::KeyUses => &[MINUTE_MS],
            Kind::IpCards => &[10 * MINUTE_MS, HOUR_MS],
            Kind::NetCards | Kind::DeviceCards => &[HOUR_MS],
            Kind::EmailCards | Kind::CardDeclines | Kind::CardOtpFailures => &[DAY_MS],
        }
    }

    /// How long an entry matters: the longest window.
    fn retention(self) -> i64 {
        self.windows().last().copied().unwrap_or(DAY_MS)
    }
}

/// The window counts of every kind, in [`Kind::ALL`] order.
type Tally = [[u32; 2]; KINDS];

fn counts(t: Tally) -> Counts {
    let [
        [card_uses_10m, card_uses_24h],
        [ip_uses_1m, _],
        [ip_distinct_cards_10m, ip_distinct_cards_1h],
        [net_distinct_cards_1h, _],
        [key_uses_1m, _],
        [email_distinct_cards_24h, _],
        [device_distinct_cards_1h, _],
        [card_declines_24h, _],
        [card_otp_failures_24h, _],
    ] = t;
    Counts {
        card_uses_10m,
        card_uses_24h,
        ip_uses_1m,
        ip_distinct_cards_10m,
        ip_distinct_cards_1h,
        net_distinct_cards_1h,
        key_uses_1m,
        email_distinct_cards_24h,
        device_distinct_cards_1h,
        card_declines_24h,
        card_otp_failures_24h,
    }
}

/// The /24 (IPv4) or /64 (IPv6) an address is grouped in, as `strongroom_risk` defines it.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
        )),
    }
}

/// Each kind's subject in this use, in [`Kind::ALL`] order.
fn subjects<'a>(u: &Use<'a>) -> [Option<Cow<'a, str>>; KINDS] {
    // An IPv4 client seen through an IPv6 socket is the same client.
    let ip = u.ip.map(|ip| ip.to_canonical());
    let ip_text = ip.map(|ip| Cow::Owned(ip.to_string()));
    let net = ip.map(|ip| {
        let bits = if ip.is_ipv4() { 24 } else { 64 };
        Cow::Owned(format!("{}/{bits}", network_of(ip)))
    });
    [
        u.card.map(Cow::Borrowed),
        ip_text.clone(),
        ip_text,
        net,
        u.key_id.map(Cow::Borrowed),
        u.email.map(Cow::Borrowed),
        u.device.map(Cow::Borrowed),
        u.card.map(Cow::Borrowed),
        u.card.map(Cow::Borrowed),
    ]
}

/// A name safe as one part of a key: short plain text as it is, anything else (a client's
/// arbitrary device id) as `#` and its SHA-256 in hex, so keys stay short and printable.
/// `#` never appears in plain text, so the two forms cannot meet. An account part must
/// not hold `:` (it is followed by the mode); a subject, the last part, may (IPv6).
fn key_part(s: &str, colon: bool) -> Cow<'_, str> {
    let plain = s.len() <= MAX_PLAIN_NAME
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'/')
                || (colon && b == b':')
        });
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("#{}", hex::encode(sha256(s.as_bytes()))))
    }
}

/// A card's number in a distinct-cards trail: FNV-1a of its fingerprint. Stable across
/// restarts (a kept trail must name a card as the next process will), and not a
/// collision risk: the fingerprint is a keyed digest no client chooses.
fn card_id(card: &str) -> u64 {
    card.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One subject's trail as kept across a restart (see [`MemoryVelocity::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptTrail {
    /// Which table: a kind's index, or the amounts'.
    pub table: i64,
    /// The subject's key.
    pub subject: String,
    /// Its entries, oldest first: `(time, card or amount)`.
    pub entries: Vec<(i64, u64)>,
}

/// The in-memory key of one subject: the account length-prefixed, the mode fixed, so no
/// two uses' keys meet.
fn subject_key(key: &mut String, account_id: &str, mode: Mode, subject: &str) {
    key.clear();
    let _ = write!(
        key,
        "{}:{}:{}:{}",
        account_id.len(),
        account_id,
        mode.as_str(),
        key_part(subject, true)
    );
}

// ---------------------------------------------------------------------------------------
// In memory.

/// Partitions of each kind's table: observes of unrelated subjects rarely wait on each
/// other.
const SHARDS: usize = 16;

/// One subject's entries, oldest first: `(time, 0)` per use, or `(last seen, card)` per
/// distinct card.
#[derive(Default)]
struct Trail(VecDeque<(i64, u64)>);

impl Trail {
    /// Entries inside the window of `span_ms` ending at `now_ms` (`at > now - span`).
    fn count(&self, now_ms: i64, span_ms: i64) -> u32 {
        let from = now_ms.saturating_sub(span_ms);
        let inside = self.0.len() - self.0.partition_point(|e| e.0 <= from);
        u32::try_from(inside).unwrap_or(u32::MAX)
    }

    fn newest(&self) -> i64 {
        self.0.back().map_or(i64::MIN, |e| e.0)
    }

    /// Adds an entry in time order (uses normally arrive in order: then it is a push).
    fn insert(&mut self, entry: (i64, u64)) {
        let at = self.0.partition_point(|e| e.0 <= entry.0);
        self.0.insert(at, entry);
    }

    /// Records a use; `card` keeps one entry per card at its latest time.
    fn record(&mut self, at_ms: i64, card: Option<u64>) {
        if let Some(card) = card {
            // The card, if here, was most likely seen recently: search from the newest.
            if let Some(i) = self.0.iter().rposition(|e| e.1 == card) {
                if self.0.get(i).is_some_and(|e| e.0 >= at_ms) {
                    return;
                }
                self.0.remove(i);
            }
            self.insert((at_ms, card));
        } else {
            self.insert((at_ms, 0));
        }
    }

    /// Drops what no window reaches any more, then the oldest beyond `max`.
    fn trim(&mut self, now_ms: i64, retention_ms: i64, max: usize) {
        let from = now_ms.saturating_sub(retention_ms);
        while self.0.front().is_some_and(|e| e.0 <= from) {
            self.0.pop_front();
        }
        while self.0.len() > max {
            self.0.pop_front();
        }
    }
}

#[derive(Default)]
struct Shard {
    trails: HashMap<String, Trail>,
    /// Entries over all trails.
    entries: usize,
}

impl Shard {
    /// Makes room: drops trails no window reaches, then the least recently used down to
    /// 7/8 of both bounds, so the work is rare and its cost spread over the inserts after.
    fn make_room(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        max_subjects: usize,
        max_entries: usize,
    ) {
        let from = now_ms.saturating_sub(retention_ms);
        self.trails.retain(|_, t| t.newest() > from);
        let mut entries: usize = self.trails.values().map(|t| t.0.len()).sum();
        let mut subjects = self.trails.len();
        let keep_subjects = max_subjects - max_subjects / 8;
        let keep_entries = max_entries - max_entries / 8;
        if subjects > keep_subjects || entries > keep_entries {
            let mut by_age: Vec<(i64, usize, &String)> = self
                .trails
                .iter()
                .map(|(k, t)| (t.newest(), t.0.len(), k))
                .collect();
            by_age.sort_unstable_by_key(|e| e.0);
            let mut victims = Vec::new();
            for (_, len, key) in by_age {
                if subjects <= keep_subjects && entries <= keep_entries {
                    break;
                }
                subjects -= 1;
                entries -= len;
                victims.push(key.clone());
            }
            for key in victims {
                self.trails.remove(&key);
            }
        }
        self.entries = entries;
    }
}

/// One kind's trails, by subject.
struct Table {
    shards: Vec<Mutex<Shard>>,
}

impl Table {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, hash: u64) -> Option<MutexGuard<'_, Shard>> {
        let i = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        // A panic elsewhere while holding the lock leaves counts at worst slightly off:
        // carry on with them rather than fail every later use.
        self.shards
            .get(i)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// In-process counters, bounded per subject ([`MAX_PER_SUBJECT`]), per kind in subjects
/// and in entries, so a flood of fresh addresses costs bounded memory and evicts only
/// other addresses' trails (each kind has its own table).
pub struct MemoryVelocity {
    tables: [Table; KINDS],
    /// Amount trails: entries `(time, amount)`, per card and per account.
    amounts: Table,
    hasher: RandomState,
    max_subjects: usize,
    max_entries: usize,
    max_per_subject: usize,
}

impl Default for MemoryVelocity {
    fn default() -> Self {
        Self::with_limits(MEMORY_MAX_SUBJECTS, MEMORY_MAX_ENTRIES, MAX_PER_SUBJECT)
    }
}

impl MemoryVelocity {
    /// Counters holding at most about `max_subjects` subjects and `max_entries` entries
    /// of each kind (split over the shards, at least one each), `max_per_subject` entries
    /// per subject.
    pub fn with_limits(max_subjects: usize, max_entries: usize, max_per_subject: usize) -> Self {
        Self {
            tables: std::array::from_fn(|_| Table::new()),
            amounts: Table::new(),
            hasher: RandomState::new(),
            max_subjects: (max_subjects / SHARDS).max(1),
            max_entries: (max_entries / SHARDS).max(1),
            max_per_subject: max_per_subject.max(1),
        }
    }

    /// Subjects held now, over all kinds.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|t| self.table_len(t)).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table_len(&self, t: &Table) -> usize {
        t.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .trails
                    .len()
            })
            .sum()
    }

    fn observe(&self, u: &Use<'_>) -> Counts {
        let now = u.at_ms;
        let card = u.card.map(card_id);
        let mut key = String::new();
        let mut tally: Tally = Default::default();
        let each = Kind::ALL.iter().zip(&self.tables).zip(subjects(u));
        for (slot, ((&kind, table), subject)) in tally.iter_mut().zip(each) {
            let Some(subject) = subject else { continue };
            subject_key(&mut key, u.account_id, u.mode, &subject);
            // A use counts in every use trail, but only a use with a card in a card
            // trail, and in a failure trail not at all.
            let entry = if kind.counted_only() {
                None
            } else if kind.distinct() {
                card.map(Some)
            } else {
                Some(None)
            };
            *slot = self.observe_one(kind, table, &key, now, entry);
        }
        counts(tally)
    }

    /// Every trail still inside its retention at `now_ms`: what a single node keeps in
    /// its store across a restart.
    pub fn snapshot(&self, now_ms: i64) -> Vec<KeptTrail> {
        let amounts = i64::try_from(KINDS).unwrap_or(i64::MAX);
        let tables = Kind::ALL
            .iter()
            .map(|k| k.retention())
            .zip(&self.tables)
            .chain(std::iter::once((AMOUNT_SPAN_MS, &self.amounts)));
        let mut out = Vec::new();
        for (i, (retention, table)) in (0_i64..).zip(tables) {
            let index = if i < amounts { i } else { amounts };
            for shard in &table.shards {
                let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                for (subject, trail) in &mut shard.trails {
                    trail.trim(now_ms, retention, self.max_per_subject);
                    if !trail.0.is_empty() {
                        out.push(KeptTrail {
                            table: index,
                            subject: subject.clone(),
                            entries: trail.0.iter().copied().collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Puts kept trails back (at start, before any use), within the bounds.
    pub fn restore(&self, kept: Vec<KeptTrail>) {
        for k in kept {
            let table = usize::try_from(k.table)
                .ok()
                .and_then(|i| self.tables.get(i))
                .unwrap_or(&self.amounts);
            let Some(mut shard) = table.shard(self.hasher.hash_one(&k.subject)) else {
                continue;
            };
            if shard.trails.len() >= self.max_subjects || shard.entries >= self.max_entries {
                continue;
            }
            let mut entries: VecDeque<(i64, u64)> = k.entries.into_iter().collect();
            while entries.len() > self.max_per_subject {
                entries.pop_front();
            }
            shard.entries += entries.len();
            shard.trails.insert(k.subject, Trail(entries));
        }
    }

    fn amounts(&self, p: &Payment<'_>) -> History {
        let mut key = String::new();
        let mut one = |subject: &str| {
            subject_key(&mut key, p.account_id, p.mode, subject);
            self.amount_one(&key, p.at_ms, p.amount)
        };
        // The account's trail: a subject no card fingerprint can spell (`*`).
        History {
            card: p.card.map(&mut one).unwrap_or_default(),
            account: one("*"),
        }
    }

    /// Sums one subject's amounts in the span, then records `amount`.
    fn amount_one(&self, key: &str, now: i64, amount: i64) -> Amounts {
        let Some(mut guard) = self.amounts.shard(self.hasher.hash_one(key)) else {
            return Amounts::default();
        };
        let shard = &mut *guard;
        // Amounts are at least 0 (the request's schema): stored as they are.
        let entry = (now, u64::try_from(amount.max(0)).unwrap_or(0));
        let mut out = Amounts::default();
        if let Some(trail) = shard.trails.get_mut(key) {
            let before = trail.0.len();
            trail.trim(now, AMOUNT_SPAN_MS, self.max_per_subject);
            let from = now.saturating_sub(AMOUNT_SPAN_MS);
            for e in trail.0.iter().filter(|e| e.0 > from) {
                out.n += 1;
                out.sum = out
                    .sum
                    .saturating_add(i64::try_from(e.1).unwrap_or(i64::MAX));
            }
            trail.insert(entry);
            trail.trim(now, AMOUNT_SPAN_MS, self.max_per_subject);
            shard.entries = (shard.entries + trail.0.len()).saturating_sub(before);
        } else {
            if shard.trails.len() >= self.max_subjects || shard.entries >= self.max_entries {
                shard.make_room(now, AMOUNT_SPAN_MS, self.max_subjects, self.max_entries);
            }
            let mut trail = Trail::default();
            trail.insert(entry);
            shard.entries += 1;
            shard.trails.insert(key.to_owned(), trail);
        }
        if shard.entries > self.max_entries {
            shard.make_room(now, AMOUNT_SPAN_MS, self.max_subjects, self.max_entries);
        }
        out
    }

    fn record_failure(&self, f: &FailureAt<'_>) {
        let kind = Kind::of_failure(f.failure);
        let Some(table) = Kind::ALL
            .iter()
            .zip(&self.tables)
            .find_map(|(k, t)| (*k == kind).then_some(t))
        else {
            return;
        };
        let mut key = String::new();
        subject_key(&mut key, f.account_id, f.mode, f.card);
        self.observe_one(kind, table, &key, f.at_ms, Some(None));
    }

    /// Counts one subject's windows and records `entry` (a use's, or a card's last use;
    /// `None`: nothing) under its shard's lock.
    fn observe_one(
        &self,
        kind: Kind,
        table: &Table,
        key: &str,
        now: i64,
        entry: Option<Option<u64>>,
    ) -> [u32; 2] {
        let Some(mut guard) = table.shard(self.hasher.hash_one(key)) else {
            return [0, 0];
        };
        let shard = &mut *guard;
        let retention = kind.retention();
        let (records, entry_card) = match entry {
            Some(card) => (true, card),
            None => (false, None),
        };
        let mut out = [0, 0];
        if let Some(trail) = shard.trails.get_mut(key) {
            let before = trail.0.len();
            trail.trim(now, retention, self.max_per_subject);
            for (n, &span) in out.iter_mut().zip(kind.windows()) {
                *n = trail.count(now, span);
            }
            if records {
                trail.record(now, entry_card);
                trail.trim(now, retention, self.max_per_subject);
            }
            shard.entries = (shard.entries + trail.0.len()).saturating_sub(before);
        } else if records {
            // A first use: nothing to count, and a new trail to make room for.
            if shard.trails.len() >= self.max_subjects || shard.entries >= self.max_entries {
                shard.make_room(now, retention, self.max_subjects, self.max_entries);
            }
            let mut trail = Trail::default();
            trail.record(now, entry_card);
            shard.entries += trail.0.len();
            shard.trails.insert(key.to_owned(), trail);
        }
        if shard.entries > self.max_entries {
            shard.make_room(now, retention, self.max_subjects, self.max_entries);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// In Redis.

/// One observe in one atomic step. KEYS[1] is the account's use counter, whose value
/// names each use uniquely; then one sorted set per subject, of use ids by time or of
/// cards by last-seen time. ARGV: key TTL (ms) for the counter, now, 1 if a card comes
/// with the use, the card, the most entries per set; then per set: `u` (uses), `c`
/// (cards) or `n` (counted, nothing added: failures), the score at and below which
/// entries are dropped, its TTL, the number of
/// windows and each window's exclusive lower bound. Returns each set's window counts,
/// taken before this use is added. Times come from the caller (never Redis TIME), so
/// tests can move the clock and every node counts on the same clock as its rules.
const OBSERVE_LUA: &str = r"
local seq = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local now = ARGV[2]
local has_card = ARGV[3] == '1'
local card = ARGV[4]
local keep = tonumber(ARGV[5])
-- As an integer string: Lua's default number formatting keeps only 14 digits.
local id = string.format('%d', seq)
local out = {}
local a = 6
for k = 2, #KEYS do
  local key = KEYS[k]
  local what = ARGV[a]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[a + 1])
  local ttl = ARGV[a + 2]
  local windows = tonumber(ARGV[a + 3])
  a = a + 4
  for _ = 1, windows do
    out[#out + 1] = redis.call('ZCOUNT', key, ARGV[a], '+inf')
    a = a + 1
  end
  local added = false
  if what == 'u' then
    redis.call('ZADD', key, now, id)
    added = true
  elseif what == 'c' and has_card then
    -- GT: a card's score is its latest use, even if uses arrive out of order.
    redis.call('ZADD', key, 'GT', now, card)
    added = true
  end
  if added then
    redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
    redis.call('PEXPIRE', key, ttl)
  end
end
return out
";

/// The amount history in one atomic step. KEYS[1] is the account's use counter; then a
/// pair per subject: the sorted set of its payments (members `seq:amount` by time) and the
/// running sum of their amounts. ARGV: the counter's TTL, now, the score at and below
/// which payments are dropped (their amounts taken off the sum), the sets' TTL, the most
/// payments per set, the amount. Returns each subject's count and sum before this one.
const AMOUNTS_LUA: &str = r"
local seq = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local now = ARGV[2]
local cutoff = ARGV[3]
local ttl = ARGV[4]
local keep = tonumber(ARGV[5])
local amount = ARGV[6]
local member = string.format('%d', seq) .. ':' .. amount
local function take_off(sum, members)
  for _, m in ipairs(members) do
    local a = tonumber(string.match(m, ':(%d+)$'))
    if a then redis.call('DECRBY', sum, a) end
  end
end
local out = {}
for k = 2, #KEYS, 2 do
  local set, sum = KEYS[k], KEYS[k + 1]
  take_off(sum, redis.call('ZRANGEBYSCORE', set, '-inf', cutoff))
  redis.call('ZREMRANGEBYSCORE', set, '-inf', cutoff)
  out[#out + 1] = redis.call('ZCARD', set)
  out[#out + 1] = tonumber(redis.call('GET', sum) or '0')
  redis.call('ZADD', set, now, member)
  redis.call('INCRBY', sum, amount)
  local extra = redis.call('ZCARD', set) - keep
  if extra > 0 then
    take_off(sum, redis.call('ZRANGE', set, 0, extra - 1))
    redis.call('ZREMRANGEBYRANK', set, 0, extra - 1)
  end
  redis.call('PEXPIRE', set, ttl)
  redis.call('PEXPIRE', sum, ttl)
end
return out
";

/// Counters in Redis, shared by every node that uses the same Redis: one script call
/// (one round trip) per observe. Keys are `sr:v1:{account}:{mode}:{kind}:{subject}`, the
/// account in braces as a cluster hash tag, so one script's keys share a slot.
pub struct RedisVelocity {
    client: redis::Client,
    conn: OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    amounts_script: redis::Script,
}

impl RedisVelocity {
    /// Counters for this URL; connects on first use.
    pub fn new(url: &str) -> Result<Self, VelocityError> {
        let client = redis::Client::open(url).map_err(VelocityError::InvalidUrl)?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            script: redis::Script::new(OBSERVE_LUA),
            amounts_script: redis::Script::new(AMOUNTS_LUA),
        })
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager, VelocityError> {
        self.conn
            .get_or_try_init(|| async {
                // Fail fast: a use waits for Redis at most a couple of seconds.
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
                    .set_response_timeout(Some(std::time::Duration::from_secs(2)));
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg).await
            })
            .await
            .cloned()
            .map_err(VelocityError::Unavailable)
    }

    async fn observe(&self, u: &Use<'_>) -> Result<Counts, VelocityError> {
        let now = u.at_ms;
        let prefix = format!(
            "sr:v1:{{{}}}:{}:",
            key_part(u.account_id, false),
            u.mode.as_str()
        );
        let mut call = self.script.prepare_invoke();
        call.key(format!("{prefix}seq"))
            .arg(DAY_MS + REDIS_TTL_SLACK_MS)
            .arg(now)
            .arg(u8::from(u.card.is_some()))
            .arg(&*u.card.map(|c| key_part(c, true)).unwrap_or_default())
            .arg(MAX_PER_SUBJECT);
        let present: Vec<Kind> = Kind::ALL
            .iter()
            .zip(subjects(u))
            .filter_map(|(&kind, subject)| {
                let subject = subject?;
                call.key(format!(
                    "{prefix}{}:{}",
                    kind.name(),
                    key_part(&subject, true)
                ))
                .arg(if kind.counted_only() {
                    "n"
                } else if kind.distinct() {
                    "c"
                } else {
                    "u"
                })
                .arg(now.saturating_sub(kind.retention()))
                .arg(kind.retention() + REDIS_TTL_SLACK_MS)
                .arg(kind.windows().len());
                for span in kind.windows() {
                    call.arg(format!("({}", now.saturating_sub(*span)));
                }
                Some(kind)
            })
            .collect();
        let mut conn = self.conn().await?;
        let reply: Vec<i64> = call
            .invoke_async(&mut conn)
            .await
            .map_err(VelocityError::Unavailable)?;

        let mut reply = reply.into_iter();
        let mut tally: Tally = Default::default();
        for (slot, kind) in tally.iter_mut().zip(Kind::ALL) {
            if !present.contains(&kind) {
                continue;
            }
            for (n, _) in slot.iter_mut().zip(kind.windows()) {
                let count = reply.next().ok_or_else(|| {
                    VelocityError::Unavailable(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "velocity script returned too few counts",
                    )))
                })?;
                *n = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
            }
        }
        Ok(counts(tally))
    }

    async fn amounts(&self, p: &Payment<'_>) -> Result<History, VelocityError> {
        let prefix = format!(
            "sr:v1:{{{}}}:{}:",
            key_part(p.account_id, false),
            p.mode.as_str()
        );
        let mut call = self.amounts_script.prepare_invoke();
        call.key(format!("{prefix}seq"))
            .arg(DAY_MS + REDIS_TTL_SLACK_MS)
            .arg(p.at_ms)
            .arg(p.at_ms.saturating_sub(AMOUNT_SPAN_MS))
            .arg(AMOUNT_SPAN_MS + REDIS_TTL_SLACK_MS)
            .arg(MAX_PER_SUBJECT)
            .arg(p.amount.max(0));
        let subjects: Vec<String> = p
            .card
            .map(|c| format!("amounts:{}", key_part(c, true)))
            .into_iter()
            .chain(std::iter::once("amounts-account".to_owned()))
            .collect();
        for s in &subjects {
            call.key(format!("{prefix}{s}"))
                .key(format!("{prefix}{s}:sum"));
        }
        let mut conn = self.conn().await?;
        let reply: Vec<i64> = call
            .invoke_async(&mut conn)
            .await
            .map_err(VelocityError::Unavailable)?;
        let mut pairs = reply.chunks_exact(2).map(|c| match c {
            [n, sum] => Amounts {
                n: u32::try_from((*n).max(0)).unwrap_or(u32::MAX),
                sum: (*sum).max(0),
            },
            _ => Amounts::default(),
        });
        let card = if p.card.is_some() {
            pairs.next().unwrap_or_default()
        } else {
            Amounts::default()
        };
        Ok(History {
            card,
            account: pairs.next().unwrap_or_default(),
        })
    }

    /// Adds a failure to its card's set, through the same script: one set, `u`, no
    /// window counted.
    async fn record_failure(&self, f: &FailureAt<'_>) -> Result<(), VelocityError> {
        let kind = Kind::of_failure(f.failure);
        let prefix = format!(
            "sr:v1:{{{}}}:{}:",
            key_part(f.account_id, false),
            f.mode.as_str()
        );
        let mut call = self.script.prepare_invoke();
        call.key(format!("{prefix}seq"))
            .arg(DAY_MS + REDIS_TTL_SLACK_MS)
            .arg(f.at_ms)
            .arg(0)
            .arg("")
            .arg(MAX_PER_SUBJECT);
        call.key(format!(
            "{prefix}{}:{}",
            kind.name(),
            key_part(f.card, true)
        ))
        .arg("u")
        .arg(f.at_ms.saturating_sub(kind.retention()))
        .arg(kind.retention() + REDIS_TTL_SLACK_MS)
        .arg(0);
        let mut conn = self.conn().await?;
        let _: Vec<i64> = call
            .invoke_async(&mut conn)
            .await
            .map_err(VelocityError::Unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;
    use std::sync::Arc;
    use strongroom_risk::Feature;
    use strongroom_risk::simulate::{Outcome, SimEvent, SimOptions, features_of, simulate};

    const REDIS_URL: &str = "redis://127.0.0.1:6379";
    const T0: i64 = 1_767_225_600_000;

    /// An account id no other test run uses, so runs against one Redis never meet.
    fn fresh_account(name: &str) -> String {
        format!("acct_{name}_{:016x}", RandomState::new().hash_one(name))
    }

    /// The Redis counters, or a failure that says what is missing: these tests never skip.
    async fn redis() -> Velocity {
        let v = Velocity::redis(REDIS_URL).unwrap();
        let Velocity::Redis(r) = &v else {
            unreachable!()
        };
        let ping: Result<String, _> = match r.conn().await {
            Ok(mut c) => redis::cmd("PING")
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{:?}", std::error::Error::source(&e))),
        };
        assert!(
            ping.is_ok(),
            "the Redis velocity tests need Redis at {REDIS_URL} (scripts/test starts \
             redis-server): {ping:?}"
        );
        v
    }

    /// Deletes what a test wrote under `account` (keys would expire anyway, in a day).
    async fn forget(v: &Velocity, account: &str) {
        let Velocity::Redis(r) = v else { return };
        let mut c = r.conn().await.unwrap();
        let pattern = format!("sr:v1:{{{}}}:*", key_part(account, false));
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }

    /// A simulated use's subjects as the server would give them.
    struct Owned {
        card: String,
        key: String,
        email: Option<String>,
    }

    fn owned(e: &SimEvent) -> Owned {
        Owned {
            card: format!("card{}", e.card),
            key: format!("key{}", e.merchant),
            email: e
                .email
                .as_deref()
                .map(|m| hex::encode(sha256(m.as_bytes()))),
        }
    }

    fn use_of<'a>(account: &'a str, e: &'a SimEvent, o: &'a Owned) -> Use<'a> {
        Use {
            account_id: account,
            mode: Mode::Test,
            at_ms: e.at_ms,
            card: Some(&o.card),
            ip: Some(e.ip),
            key_id: Some(&o.key),
            email: o.email.as_deref(),
            device: e.device_id.as_deref(),
        }
    }

    /// The reference's velocity features of each event, as counts.
    fn reference(events: &[SimEvent]) -> Vec<Counts> {
        features_of(events)
            .iter()
            .map(|r| {
                let f = |x: Feature| r.features.get(x) as u32;
                Counts {
                    card_uses_10m: f(Feature::CardUses10m),
                    card_uses_24h: f(Feature::CardUses24h),
                    ip_uses_1m: f(Feature::IpUses1m),
                    ip_distinct_cards_10m: f(Feature::IpDistinctCards10m),
                    ip_distinct_cards_1h: f(Feature::IpDistinctCards1h),
                    net_distinct_cards_1h: f(Feature::NetDistinctCards1h),
                    key_uses_1m: f(Feature::KeyUses1m),
                    email_distinct_cards_24h: f(Feature::EmailDistinctCards24h),
                    device_distinct_cards_1h: f(Feature::DeviceDistinctCards1h),
                    card_declines_24h: f(Feature::CardDeclines24h),
                    card_otp_failures_24h: f(Feature::CardOtpFailures24h),
                }
            })
            .collect()
    }

    /// Runs `events` through `v` under one account and checks every count against the
    /// reference. Returns the counts.
    async fn check_against_reference(v: &Velocity, events: &[SimEvent]) -> Vec<Counts> {
        let account = fresh_account("reference");
        let want = reference(events);
        let refs = features_of(events);
        let mut amounts_seen = 0;
        let mut got = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let o = owned(e);
            let c = v.observe(&use_of(&account, e, &o)).await.unwrap();
            assert_eq!(c, want[i], "use {i}: {e:?}");
            got.push(c);
            // The amount history: the card's across merchants, the merchant's own (the
            // simulator's merchant is the server's account).
            let pay = |account_id, card| Payment {
                account_id,
                mode: Mode::Test,
                at_ms: e.at_ms,
                card,
                amount: e.amount,
            };
            let card = v.amounts(&pay(&account, Some(&o.card))).await.unwrap().card;
            let merchant = format!("{account}-m{}", e.merchant);
            let own = v.amounts(&pay(&merchant, None)).await.unwrap().account;
            let r = &refs[i].features;
            assert_eq!(
                card.ratio(e.amount).to_bits(),
                r.get(Feature::AmountVsCardMean).to_bits(),
                "use {i}: card mean"
            );
            assert_eq!(
                own.ratio(e.amount).to_bits(),
                r.get(Feature::AmountVsAccountMean).to_bits(),
                "use {i}: account mean"
            );
            amounts_seen += usize::from(card.n > 0);
            // The use's outcome, as the server learns it after the use.
            let failure = match e.outcome {
                Outcome::Declined => Some(Failure::Decline),
                Outcome::OtpFailed => Some(Failure::OtpFailure),
                Outcome::Approved => None,
            };
            if let Some(failure) = failure {
                let f = FailureAt {
                    account_id: &account,
                    mode: Mode::Test,
                    at_ms: e.at_ms,
                    card: &o.card,
                    failure,
                };
                v.record_failure(&f).await.unwrap();
            }
        }
        assert!(amounts_seen > 0, "some card paid twice");
        forget(v, &account).await;
        for m in 0..8 {
            forget(v, &format!("{account}-m{m}")).await;
        }
        got
    }

    fn sim() -> Vec<SimEvent> {
        simulate(&SimOptions {
            seed: 11,
            days: 2,
            merchants: 3,
            legit_per_day: 300,
            attacks_per_day: 12.0,
            ..SimOptions::default()
        })
    }

    fn assert_interesting(counts: &[Counts]) {
        let max = |f: fn(&Counts) -> u32| counts.iter().map(f).max().unwrap_or(0);
        assert!(max(|c| c.card_uses_10m) >= 1);
        assert!(max(|c| c.card_uses_24h) >= 2);
        assert!(max(|c| c.ip_uses_1m) >= 2);
        assert!(max(|c| c.ip_distinct_cards_10m) >= 5);
        // A campaign rotating through a /24: its network sees more cards than any address.
        assert!(
            counts
                .iter()
                .any(|c| c.net_distinct_cards_1h >= c.ip_distinct_cards_1h + 5)
        );
        assert!(max(|c| c.key_uses_1m) >= 1);
        assert!(max(|c| c.email_distinct_cards_24h) >= 3);
        assert!(max(|c| c.device_distinct_cards_1h) >= 3);
        // Cards that failed before, counted in their later uses.
        assert!(max(|c| c.card_declines_24h) >= 1);
        assert!(max(|c| c.card_otp_failures_24h) >= 1);
    }

    #[tokio::test]
    async fn memory_matches_the_reference() {
        let counts = check_against_reference(&Velocity::memory(), &sim()).await;
        assert_interesting(&counts);
    }

    #[tokio::test]
    async fn redis_matches_the_reference() {
        let counts = check_against_reference(&redis().await, &sim()).await;
        assert_interesting(&counts);
    }

    fn event(at_ms: i64, ip: &str, card: u32) -> SimEvent {
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
            amount: 100,
            currency: "USD".into(),
            utc_offset_min: 0,
            block_list_hits: 0,
            outcome: Outcome::Approved,
            fraud: false,
            pattern: None,
        }
    }

    /// Window edges: a use exactly one window old is out; same-millisecond uses count.
    fn edges() -> Vec<SimEvent> {
        let mut e = vec![
            event(T0, "198.51.100.1", 1),
            event(T0 + 30_000, "198.51.100.1", 2),
            event(T0 + MINUTE_MS, "198.51.100.2", 1),
            event(T0 + 10 * MINUTE_MS, "198.51.100.1", 1),
            event(T0 + 10 * MINUTE_MS, "2001:db8:1:2::7", 3),
            event(T0 + 10 * MINUTE_MS, "2001:db8:1:2::8", 3),
            event(T0 + HOUR_MS + MINUTE_MS, "198.51.100.3", 4),
            event(T0 + DAY_MS + MINUTE_MS, "198.51.100.3", 1),
        ];
        for (i, x) in e.iter_mut().enumerate() {
            x.device_id = Some(if i % 2 == 0 {
                "dev/\u{1F4F1} any bytes".repeat(9)
            } else {
                "d".into()
            });
            x.email = Some("a@example.com".into());
        }
        e
    }

    #[tokio::test]
    async fn window_edges_match_the_reference() {
        for v in [Velocity::memory(), redis().await] {
            let got = check_against_reference(&v, &edges()).await;
            // The 4th, exactly 10 minutes after the first: card 1's first use is out of
            // the 10-minute windows, in the hour ones.
            assert_eq!(got[3].card_uses_10m, 1);
            assert_eq!(got[3].card_uses_24h, 2);
            assert_eq!(got[3].ip_distinct_cards_10m, 1);
            assert_eq!(got[3].ip_distinct_cards_1h, 2);
            // Same millisecond, same /64, same card: counted once as a card.
            assert_eq!(got[5].net_distinct_cards_1h, 1);
            assert_eq!(got[5].ip_uses_1m, 0);
        }
    }

    fn plain<'a>(account: &'a str, mode: Mode, at_ms: i64, card: &'a str) -> Use<'a> {
        Use {
            account_id: account,
            mode,
            at_ms,
            card: Some(card),
            ip: Some("203.0.113.9".parse().unwrap()),
            key_id: Some("key_1"),
            email: Some("ab12"),
            device: Some("dev"),
        }
    }

    #[tokio::test]
    async fn modes_and_accounts_are_apart() {
        for v in [Velocity::memory(), redis().await] {
            let a = fresh_account("a");
            let b = fresh_account("b");
            let first = v.observe(&plain(&a, Mode::Test, T0, "c1")).await.unwrap();
            assert_eq!(first, Counts::default());
            let live = v
                .observe(&plain(&a, Mode::Live, T0 + 1, "c2"))
                .await
                .unwrap();
            assert_eq!(live, Counts::default(), "live never sees test uses");
            let other = v
                .observe(&plain(&b, Mode::Test, T0 + 2, "c2"))
                .await
                .unwrap();
            assert_eq!(other, Counts::default(), "nor one account another's");
            let again = v
                .observe(&plain(&a, Mode::Test, T0 + 3, "c2"))
                .await
                .unwrap();
            assert_eq!(
                again,
                Counts {
                    card_uses_10m: 0,
                    card_uses_24h: 0,
                    ip_uses_1m: 1,
                    ip_distinct_cards_10m: 1,
                    ip_distinct_cards_1h: 1,
                    net_distinct_cards_1h: 1,
                    key_uses_1m: 1,
                    email_distinct_cards_24h: 1,
                    device_distinct_cards_1h: 1,
                    ..Counts::default()
                }
            );
            // A use without subjects counts and records nothing but its time.
            let bare = Use {
                card: None,
                ip: None,
                key_id: None,
                email: None,
                device: None,
                ..plain(&a, Mode::Test, T0 + 4, "c2")
            };
            assert_eq!(v.observe(&bare).await.unwrap(), Counts::default());
            // A use without a card counts the address's uses, not its cards.
            let cardless = Use {
                card: None,
                ..plain(&a, Mode::Test, T0 + 5, "c2")
            };
            let c = v.observe(&cardless).await.unwrap();
            assert_eq!((c.ip_uses_1m, c.ip_distinct_cards_10m), (2, 2));
            let c = v
                .observe(&plain(&a, Mode::Test, T0 + 6, "c3"))
                .await
                .unwrap();
            assert_eq!((c.ip_uses_1m, c.ip_distinct_cards_10m), (3, 2));
            forget(&v, &a).await;
            forget(&v, &b).await;
        }
    }

    #[tokio::test]
    async fn a_flood_of_addresses_stays_bounded() {
        let m = MemoryVelocity::default();
        let legit = m.observe(&Use {
            card: Some("legit"),
            ..plain("acct", Mode::Live, T0, "legit")
        });
        assert_eq!(legit, Counts::default());
        for i in 0..200_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            m.observe(&Use {
                account_id: "acct",
                mode: Mode::Live,
                at_ms: T0 + i64::from(i),
                card: Some("stolen"),
                ip: Some(ip),
                key_id: Some("key_1"),
                email: None,
                device: None,
            });
        }
        for (kind, table) in Kind::ALL.iter().zip(&m.tables) {
            let n = m.table_len(table);
            assert!(n <= MEMORY_MAX_SUBJECTS, "{kind:?}: {n} subjects");
        }
        assert!(m.len() <= 3 * MEMORY_MAX_SUBJECTS + 2, "{}", m.len());
        // Each trail stops at its bound, and the flood evicted only addresses.
        let after = m.observe(&Use {
            card: Some("stolen"),
            ..plain("acct", Mode::Live, T0 + 200_000, "stolen")
        });
        assert_eq!(after.card_uses_24h, MAX_PER_SUBJECT as u32);
        assert_eq!(after.key_uses_1m, MAX_PER_SUBJECT as u32);
        let legit = m.observe(&Use {
            card: Some("legit"),
            ..plain("acct", Mode::Live, T0 + 200_001, "legit")
        });
        assert_eq!(legit.card_uses_24h, 1);
    }

    #[tokio::test]
    async fn eviction_drops_the_least_recently_used() {
        let m = MemoryVelocity::with_limits(SHARDS * 8, SHARDS * 1_000, 1_000);
        let only_ip = |ip: IpAddr, at_ms: i64| Use {
            ip: Some(ip),
            card: None,
            key_id: None,
            email: None,
            device: None,
            ..plain("acct", Mode::Live, at_ms, "x")
        };
        let regular: IpAddr = "198.51.100.1".parse().unwrap();
        // All within one minute, so nothing expires: room is made by eviction alone.
        for i in 0..1_000u32 {
            let at = T0 + i64::from(i);
            m.observe(&only_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), at));
            if i % 10 == 0 {
                let c = m.observe(&only_ip(regular, at));
                assert_eq!(c.ip_uses_1m, i / 10, "the regular caller kept its trail");
            }
            let n = m.table_len(&m.tables[1]);
            assert!(n <= SHARDS * 8, "{n} addresses after {i}");
        }
    }

    async fn fifty_cards_from_one_ip(v: Velocity) {
        let v = Arc::new(v);
        let account = Arc::new(fresh_account("concurrent"));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (v, account) = (v.clone(), account.clone());
                tokio::spawn(async move {
                    let card = format!("card{i}");
                    let u = Use {
                        account_id: &account,
                        mode: Mode::Live,
                        at_ms: T0,
                        card: Some(&card),
                        ip: Some("192.0.2.50".parse().unwrap()),
                        key_id: None,
                        email: None,
                        device: None,
                    };
                    v.observe(&u).await.unwrap().ip_distinct_cards_10m
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<u32>>());
        forget(&v, &account).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn concurrent_uses_each_see_the_ones_before() {
        fifty_cards_from_one_ip(Velocity::memory()).await;
        fifty_cards_from_one_ip(redis().await).await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_says_only_that() {
        let v = Velocity::redis("redis://127.0.0.1:1/").unwrap();
        let err = v
            .observe(&plain("a", Mode::Live, T0, "c"))
            .await
            .unwrap_err();
        assert!(matches!(err, VelocityError::Unavailable(_)));
        assert_eq!(err.to_string(), "velocity store unavailable");
        assert!(matches!(
            Velocity::redis("not a url"),
            Err(VelocityError::InvalidUrl(_))
        ));
    }

    #[test]
    fn networks_and_key_parts() {
        for ip in ["203.0.113.77", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(network_of(ip), strongroom_risk::simulate::network_of(ip));
        }
        let u = plain("a", Mode::Live, T0, "c");
        let s = subjects(&Use {
            ip: Some("::ffff:203.0.113.77".parse().unwrap()),
            ..u
        });
        assert_eq!(s[1].as_deref(), Some("203.0.113.77"));
        assert_eq!(s[3].as_deref(), Some("203.0.113.0/24"));
        let s = subjects(&Use {
            ip: Some("2001:db8:1:2::5".parse().unwrap()),
            ..u
        });
        assert_eq!(s[3].as_deref(), Some("2001:db8:1:2::/64"));

        assert_eq!(key_part("acct_01H-x.y", false), "acct_01H-x.y");
        assert_eq!(key_part("2001:db8::1", true), "2001:db8::1");
        for odd in ["a:b", "a}b{", "sp ace", "ü", &"x".repeat(65)] {
            let p = key_part(odd, false);
            assert!(p.starts_with('#') && p.len() == 65, "{odd}: {p}");
        }
        assert_ne!(key_part("a:b", false), key_part("a:b", true));
    }
}
