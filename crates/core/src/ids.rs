//! Prefixed, time-ordered, unguessable ids: `card_` + 32 hex digits of a UUIDv7
//! (a 48-bit millisecond timestamp and 74 random bits, or, from [`next_id`], 12 bits
//! of a counter and 62 random bits). Time order keeps B-tree inserts local; the random
//! bits make ids unguessable; nothing in an id depends on the data it names.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::DomainError;

/// What an id names; each has its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `acct_`
    Account,
    /// `card_`
    Card,
    /// `key_`
    ApiKey,
    /// `evt_`
    Event,
    /// `we_`
    WebhookEndpoint,
    /// `otp_`
    Otp,
    /// `req_`
    Request,
    /// `inr_`: an inbound route (its id is also the capability in its URL).
    InboundRoute,
    /// `cs_`: a client session (a browser's one-time licence to tokenize cards).
    ClientSession,
    /// `susp_`: a suspension of a card, address, email, device, key or account.
    Suspension,
    /// `risk_`: a risk assessment.
    RiskAssessment,
    /// `rle_`: an entry of a risk allow or block list.
    RiskListEntry,
    /// `kimp_`: a dual-control key import ceremony.
    KeyImport,
    /// `bdk_`: an imported base derivation key.
    Bdk,
    /// `zpk_`: an imported zone PIN key.
    ZonePinKey,
    /// `kek_`: an imported key-encryption key.
    Kek,
    /// `term_`: a card-present terminal.
    Terminal,
    /// `pint_`: a PIN block translated from a terminal's key to a zone PIN key.
    PinTranslation,
    /// `iapp_`: an application whose Play Integrity tokens an account accepts.
    IntegrityApp,
    /// `att_`: a device attestation earned with a Play Integrity token.
    Attestation,
}

impl IdKind {
    /// The prefix, underscore included.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Account => "acct_",
            Self::Card => "card_",
            Self::ApiKey => "key_",
            Self::Event => "evt_",
            Self::WebhookEndpoint => "we_",
            Self::Otp => "otp_",
            Self::Request => "req_",
            Self::InboundRoute => "inr_",
            Self::ClientSession => "cs_",
            Self::Suspension => "susp_",
            Self::RiskAssessment => "risk_",
            Self::RiskListEntry => "rle_",
            Self::KeyImport => "kimp_",
            Self::Bdk => "bdk_",
            Self::ZonePinKey => "zpk_",
            Self::Kek => "kek_",
            Self::Terminal => "term_",
            Self::PinTranslation => "pint_",
            Self::IntegrityApp => "iapp_",
            Self::Attestation => "att_",
        }
    }
}

/// Makes a new id from the time and 10 random bytes (of which 74 bits are used).
pub fn new_id(kind: IdKind, unix_ms: i64, random: [u8; 10]) -> String {
    let ms = u64::try_from(unix_ms).unwrap_or(0);
    let uuid = uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid();
    let mut out = String::with_capacity(kind.prefix().len() + 32);
    out.push_str(kind.prefix());
    out.push_str(uuid.simple().encode_lower(&mut uuid::Uuid::encode_buffer()));
    out
}

/// The last (millisecond, counter) that [`next_id`] used, as `ms << 12 | counter`.
static LAST: AtomicU64 = AtomicU64::new(0);

/// Makes a new id, as [`new_id`], whose first 64 bits no earlier call in this process
/// gave: the UUID's 12 bits after the version (`rand_a`) hold a counter within the
/// millisecond (RFC 9562, section 6.2, method 1), started at a random value below 2,048
/// in each new millisecond and carried into the next one if it runs out, so ids stay in
/// order. The other 62 random bits keep the id unguessable. What the 64 bits are for:
/// [`row_hint`].
pub fn next_id(kind: IdKind, unix_ms: i64, mut random: [u8; 10]) -> String {
    let ms = u64::try_from(unix_ms).unwrap_or(0) & ((1 << 48) - 1);
    let start = (ms << 12) | (u64::from(u16::from_be_bytes([random[0], random[1]])) & 0x7ff);
    let mut last = LAST.load(Ordering::Relaxed);
    let next = loop {
        let next = if last >> 12 < ms { start } else { last + 1 };
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let [.., hi, lo] = next.to_be_bytes();
    random[0] = hi & 0x0f;
    random[1] = lo;
    new_id(kind, i64::try_from(next >> 12).unwrap_or(0), random)
}

/// The id's first 64 bits (its timestamp, version and `rand_a`) as a positive integer,
/// unique among the ids of one [`next_id`] and in the same order. SQLite stores a card
/// under it as its row id when no other card has it, so that a read by id walks the
/// table alone instead of the id index first (`crates/store`). `None` if malformed.
pub fn row_hint(s: &str) -> Option<i64> {
    let hex = s.rsplit('_').next()?.get(0..16)?;
    let v = u64::from_str_radix(hex, 16).ok()?;
    i64::try_from(v).ok().filter(|v| *v > 0)
}

/// Checks that `s` is a well-formed id of this kind. The error never echoes `s`.
pub fn parse_id(kind: IdKind, s: &str) -> Result<&str, DomainError> {
    let rest = s.strip_prefix(kind.prefix()).ok_or(DomainError::NotFound)?;
    if rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s)
    } else {
        Err(DomainError::NotFound)
    }
}

/// The millisecond timestamp inside an id, if it is well formed.
pub fn id_time_ms(s: &str) -> Option<i64> {
    let hex = s.rsplit('_').next()?;
    let ts = hex.get(0..12)?;
    i64::from_str_radix(ts, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_time_ordered_and_parse_back() {
        let a = new_id(IdKind::Card, 1_700_000_000_000, [1; 10]);
        let b = new_id(IdKind::Card, 1_700_000_000_001, [0; 10]);
        assert!(a.starts_with("card_"));
        assert_eq!(a.len(), 5 + 32);
        assert!(a < b, "later ids sort after earlier ones");
        assert_eq!(parse_id(IdKind::Card, &a).unwrap(), a);
        assert_eq!(id_time_ms(&a), Some(1_700_000_000_000));
    }

    #[test]
    fn next_ids_have_distinct_ordered_row_hints_within_a_millisecond() {
        let ms = 1_800_000_000_000;
        let ids: Vec<String> = (0..5000u32)
            .map(|i| {
                let mut r = [0x5a; 10];
                r[..4].copy_from_slice(&i.to_be_bytes());
                next_id(IdKind::Card, ms, r)
            })
            .collect();
        let hints: Vec<i64> = ids.iter().map(|id| row_hint(id).unwrap()).collect();
        assert!(hints.windows(2).all(|w| w[0] < w[1]), "hints out of order");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
        // 5,000 in one millisecond overflow the counter: the rest carry into the next.
        assert_eq!(id_time_ms(&ids[0]), Some(ms));
        assert_eq!(id_time_ms(&ids[4999]), Some(ms + 1));
        for id in &ids {
            assert_eq!(parse_id(IdKind::Card, id).unwrap(), id);
            // A UUIDv7: version 7, variant 10.
            assert_eq!(&id[17..18], "7");
            assert!(matches!(&id[21..22], "8" | "9" | "a" | "b"), "{id}");
        }
        // The hint is the id's first 16 hex digits.
        let hex = &ids[0][5..21];
        assert_eq!(row_hint(&ids[0]), i64::from_str_radix(hex, 16).ok());
        // An earlier clock (another thread's late call) still gets a later id.
        let late = next_id(IdKind::Card, ms - 5, [0; 10]);
        assert!(row_hint(&late).unwrap() > hints[4999]);
        assert!(row_hint("card_").is_none());
        assert!(row_hint("card_zz92f3a4b5c67d8e9f00112233445566").is_none());
    }

    #[test]
    fn random_bits_differ() {
        let a = new_id(IdKind::Card, 5, [1; 10]);
        let b = new_id(IdKind::Card, 5, [2; 10]);
        assert_ne!(a, b);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "card_",
            "acct_0192f3a4b5c67d8e9f00112233445566",
            "card_0192F3A4B5C67D8E9F00112233445566",
            "card_0192f3a4b5c67d8e9f0011223344556",
            "card_0192f3a4b5c67d8e9f001122334455zz",
            "card_0192f3a4b5c67d8e9f00112233445566/../x",
        ] {
            assert!(parse_id(IdKind::Card, bad).is_err(), "{bad}");
        }
    }
}
