//! Prefixed, time-ordered, unguessable ids: `card_` + 32 hex digits of a UUIDv7
//! (a 48-bit millisecond timestamp and 74 random bits). Time order keeps B-tree
//! inserts local; the random bits make ids unguessable; nothing in an id depends on
//! the data it names.

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
