//! Primary account numbers: parsing, Luhn, brand, masking; and card expiry.

use crate::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A card brand, from the IIN table below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Brand {
    /// Visa.
    Visa,
    /// Mastercard, 51–55 and the 2-series.
    Mastercard,
    /// American Express.
    Amex,
    /// Discover.
    Discover,
    /// JCB.
    Jcb,
    /// Diners Club.
    Diners,
    /// China UnionPay.
    Unionpay,
    /// Maestro.
    Maestro,
    /// RuPay.
    Rupay,
    /// Mir.
    Mir,
    /// Elo.
    Elo,
}

impl Brand {
    /// The brand's name as the API shows it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Discover => "discover",
            Self::Jcb => "jcb",
            Self::Diners => "diners",
            Self::Unionpay => "unionpay",
            Self::Maestro => "maestro",
            Self::Rupay => "rupay",
            Self::Mir => "mir",
            Self::Elo => "elo",
        }
    }

    /// Parses [`Brand::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Visa,
            Self::Mastercard,
            Self::Amex,
            Self::Discover,
            Self::Jcb,
            Self::Diners,
            Self::Unionpay,
            Self::Maestro,
            Self::Rupay,
            Self::Mir,
            Self::Elo,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }

    /// The PAN lengths this brand issues (shortest, longest).
    pub const fn lengths(self) -> (usize, usize) {
        match self {
            Self::Amex => (15, 15),
            Self::Visa => (13, 19),
            Self::Diners => (14, 19),
            Self::Maestro => (12, 19),
            _ => (16, 19),
        }
    }
}

/// One row of the IIN table: PANs whose first `digits` digits lie in `lo..=hi`.
struct Iin {
    digits: u32,
    lo: u32,
    hi: u32,
    brand: Brand,
}

const fn iin(digits: u32, lo: u32, hi: u32, brand: Brand) -> Iin {
    Iin {
        digits,
        lo,
        hi,
        brand,
    }
}

/// The IIN table, most specific ranges first: the first match wins. Elo, RuPay and Mir
/// carve ranges out of prefixes that Visa, Discover, Maestro and Mastercard otherwise own.
const IIN_TABLE: &[Iin] = &[
    // Elo (its ranges sit inside Visa, Maestro and Discover prefixes)
    iin(6, 401178, 401179, Brand::Elo),
    iin(6, 431274, 431274, Brand::Elo),
    iin(6, 438935, 438935, Brand::Elo),
    iin(6, 451416, 451416, Brand::Elo),
    iin(6, 457393, 457393, Brand::Elo),
    iin(6, 457631, 457632, Brand::Elo),
    iin(6, 504175, 504175, Brand::Elo),
    iin(6, 506699, 506778, Brand::Elo),
    iin(6, 509000, 509999, Brand::Elo),
    iin(6, 627780, 627780, Brand::Elo),
    iin(6, 636297, 636297, Brand::Elo),
    iin(6, 636368, 636368, Brand::Elo),
    iin(6, 650031, 650033, Brand::Elo),
    iin(6, 650035, 650051, Brand::Elo),
    iin(6, 650405, 650439, Brand::Elo),
    iin(6, 650485, 650538, Brand::Elo),
    iin(6, 650541, 650598, Brand::Elo),
    iin(6, 650700, 650718, Brand::Elo),
    iin(6, 650720, 650727, Brand::Elo),
    iin(6, 650901, 650978, Brand::Elo),
    iin(6, 651652, 651679, Brand::Elo),
    iin(6, 655000, 655019, Brand::Elo),
    iin(6, 655021, 655058, Brand::Elo),
    // Mir
    iin(4, 2200, 2204, Brand::Mir),
    // Discover's 6011 sits inside RuPay's 60
    iin(4, 6011, 6011, Brand::Discover),
    // RuPay
    iin(4, 6521, 6522, Brand::Rupay),
    iin(3, 508, 508, Brand::Rupay),
    iin(2, 60, 60, Brand::Rupay),
    iin(2, 81, 82, Brand::Rupay),
    // Discover (its UnionPay co-brand range before UnionPay's 62)
    iin(6, 622126, 622925, Brand::Discover),
    iin(3, 644, 649, Brand::Discover),
    iin(2, 65, 65, Brand::Discover),
    // UnionPay
    iin(2, 62, 62, Brand::Unionpay),
    // Amex
    iin(2, 34, 34, Brand::Amex),
    iin(2, 37, 37, Brand::Amex),
    // JCB
    iin(4, 3528, 3589, Brand::Jcb),
    // Diners
    iin(3, 300, 305, Brand::Diners),
    iin(4, 3095, 3095, Brand::Diners),
    iin(2, 36, 36, Brand::Diners),
    iin(2, 38, 39, Brand::Diners),
    // Mastercard
    iin(2, 51, 55, Brand::Mastercard),
    iin(4, 2221, 2720, Brand::Mastercard),
    // Maestro
    iin(2, 50, 50, Brand::Maestro),
    iin(2, 56, 58, Brand::Maestro),
    iin(4, 6304, 6304, Brand::Maestro),
    iin(4, 6759, 6763, Brand::Maestro),
    // Visa
    iin(1, 4, 4, Brand::Visa),
];

/// The IIN table as `(digits, lo, hi, brand)` rows, first match wins: for the hosted
/// fields, which detect the brand as the customer types with the same table.
pub fn iin_rows() -> impl Iterator<Item = (u32, u32, u32, Brand)> {
    IIN_TABLE.iter().map(|r| (r.digits, r.lo, r.hi, r.brand))
}

/// Published test card numbers, accepted only in test mode. Besides these, every
/// Luhn-valid 16-digit number that begins `40000000` is a test number (see
/// [`Pan::is_test_card`]).
pub const TEST_CARDS: &[&str] = &[
    "4242424242424242",
    "4111111111111111",
    "4012888888881881",
    "4000056655665556",
    "5555555555554444",
    "2223003122003222",
    "5200828282828210",
    "5105105105105100",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "6011000990139424",
    "3566002020360505",
    "3530111333300000",
    "36227206271667",
    "30569309025904",
    "6200000000000005",
    "6205500000000000004",
];

/// The prefix of the volume-testing range.
pub const TEST_RANGE_PREFIX: &str = "40000000";

/// A validated card number: digits only, Luhn-valid, of a known brand. Zeroized on
/// drop; `Debug` and `Display` show only the masked form.
pub struct Pan {
    digits: Zeroizing<String>,
    brand: Brand,
}

impl Pan {
    /// Parses a card number as a client sent it. Spaces and dashes are allowed between
    /// digits. Errors never include the input.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        if input.len() > 64 {
            return Err(DomainError::CardNumberInvalid);
        }
        let mut digits = Zeroizing::new(String::with_capacity(19));
        for c in input.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' => {}
                _ => return Err(DomainError::CardNumberInvalid),
            }
        }
        if !(12..=19).contains(&digits.len()) {
            return Err(DomainError::CardNumberInvalid);
        }
        if !luhn_valid(digits.as_bytes()) {
            return Err(DomainError::CardNumberLuhn);
        }
        let brand = brand_of(&digits).ok_or(DomainError::CardBrandUnknown)?;
        let (min, max) = brand.lengths();
        if !(min..=max).contains(&digits.len()) {
            return Err(DomainError::CardNumberInvalid);
        }
        Ok(Self { digits, brand })
    }

    /// The brand.
    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// The first six digits (the BIN), which PCI DSS allows to be shown.
    pub fn bin(&self) -> &str {
        self.digits.get(..6).unwrap_or_default()
    }

    /// The last four digits.
    pub fn last4(&self) -> &str {
        let n = self.digits.len();
        self.digits.get(n.saturating_sub(4)..).unwrap_or_default()
    }

    /// `XXXX` followed by the last four digits, the form card issuers display.
    pub fn masked(&self) -> String {
        format!("XXXX{}", self.last4())
    }

    /// Whether this is a published test card number (or in the `40000000` range).
    pub fn is_test_card(&self) -> bool {
        (self.digits.len() == 16 && self.digits.starts_with(TEST_RANGE_PREFIX))
            || TEST_CARDS.contains(&self.digits.as_str())
    }

    /// Checks the number against the mode of the credential that sent it.
    pub fn check_mode(&self, mode: crate::Mode) -> Result<(), DomainError> {
        match (mode, self.is_test_card()) {
            (crate::Mode::Live, true) => Err(DomainError::TestCardInLiveMode),
            (crate::Mode::Test, false) => Err(DomainError::LiveCardInTestMode),
            _ => Ok(()),
        }
    }

    /// The digits. The one way to the plaintext: call it only to encrypt or fingerprint.
    pub fn expose_digits(&self) -> &str {
        &self.digits
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn brand_of(digits: &str) -> Option<Brand> {
    IIN_TABLE.iter().find_map(|row| {
        let prefix: u32 = digits.get(..row.digits as usize)?.parse().ok()?;
        (row.lo..=row.hi).contains(&prefix).then_some(row.brand)
    })
}

/// A card's expiry month and year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// 1–12.
    pub month: u8,
    /// Four-digit year.
    pub year: u16,
}

impl Expiry {
    /// Validates a month and year (two- or four-digit) against `now`: the card is valid
    /// through the last day of its expiry month.
    pub fn new(month: i64, year: i64, now: OffsetDateTime) -> Result<Self, DomainError> {
        let month = u8::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or(DomainError::ExpiryInvalid)?;
        let year = match year {
            0..=99 => 2000 + year,
            2000..=2199 => year,
            _ => return Err(DomainError::ExpiryInvalid),
        };
        let year = u16::try_from(year).map_err(|_| DomainError::ExpiryInvalid)?;
        let now_year = u16::try_from(now.year()).unwrap_or(u16::MAX);
        let now_month = u8::from(now.month());
        if year > now_year.saturating_add(50) {
            return Err(DomainError::ExpiryInvalid);
        }
        if (year, month) < (now_year, now_month) {
            return Err(DomainError::CardExpired);
        }
        Ok(Self { month, year })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_published_test_card_parses_with_its_brand() {
        let expected = [
            ("4242424242424242", Brand::Visa),
            ("4111111111111111", Brand::Visa),
            ("5555555555554444", Brand::Mastercard),
            ("2223003122003222", Brand::Mastercard),
            ("378282246310005", Brand::Amex),
            ("6011111111111117", Brand::Discover),
            ("3566002020360505", Brand::Jcb),
            ("36227206271667", Brand::Diners),
            ("6200000000000005", Brand::Unionpay),
            ("4000000000000002", Brand::Visa),
        ];
        for (n, brand) in expected {
            let pan = Pan::parse(n).unwrap();
            assert_eq!(pan.brand(), brand, "{n}");
            assert!(pan.is_test_card(), "{n}");
        }
        for n in TEST_CARDS {
            assert!(Pan::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn other_brands_are_known() {
        // Luhn-valid numbers built for each range.
        for (prefix, brand) in [
            ("2200", Brand::Mir),
            ("6521", Brand::Rupay),
            ("509000", Brand::Elo),
            ("6759", Brand::Maestro),
            ("5018", Brand::Maestro),
        ] {
            let n = with_check_digit(prefix, 16);
            assert_eq!(Pan::parse(&n).unwrap().brand(), brand, "{prefix}");
        }
    }

    fn with_check_digit(prefix: &str, len: usize) -> String {
        let mut body = prefix.to_string();
        while body.len() < len - 1 {
            body.push('1');
        }
        (0..10)
            .map(|d| format!("{body}{d}"))
            .find(|c| luhn_valid(c.as_bytes()))
            .unwrap()
    }

    #[test]
    fn spaces_and_dashes_are_accepted() {
        let p = Pan::parse("4242 4242-4242 4242").unwrap();
        assert_eq!(p.expose_digits(), "4242424242424242");
        assert_eq!(p.bin(), "424242");
        assert_eq!(p.last4(), "4242");
        assert_eq!(p.masked(), "XXXX4242");
    }

    #[test]
    fn bad_numbers_get_their_codes() {
        assert_eq!(
            Pan::parse("4242x424242424242").err(),
            Some(DomainError::CardNumberInvalid)
        );
        assert_eq!(
            Pan::parse("42424242424").err(),
            Some(DomainError::CardNumberInvalid)
        );
        assert_eq!(
            Pan::parse("42424242424242424242").err(),
            Some(DomainError::CardNumberInvalid)
        );
        assert_eq!(
            Pan::parse("4242424242424241").err(),
            Some(DomainError::CardNumberLuhn)
        );
        let unknown = with_check_digit("9", 16);
        assert_eq!(
            Pan::parse(&unknown).err(),
            Some(DomainError::CardBrandUnknown)
        );
        let short_amex = with_check_digit("37", 16);
        assert_eq!(
            Pan::parse(&short_amex).err(),
            Some(DomainError::CardNumberInvalid)
        );
    }

    #[test]
    fn debug_and_display_mask() {
        let p = Pan::parse("4242424242424242").unwrap();
        let shown = format!("{p:?} {p}");
        assert!(!shown.contains("4242424242424242"));
        assert!(shown.contains("XXXX4242"));
    }

    #[test]
    fn test_range_and_modes() {
        let t = Pan::parse(&with_check_digit("40000000", 16)).unwrap();
        assert!(t.is_test_card());
        assert_eq!(
            t.check_mode(crate::Mode::Live),
            Err(DomainError::TestCardInLiveMode)
        );
        assert!(t.check_mode(crate::Mode::Test).is_ok());
        let live = Pan::parse(&with_check_digit("4532", 16)).unwrap();
        assert!(!live.is_test_card());
        assert_eq!(
            live.check_mode(crate::Mode::Test),
            Err(DomainError::LiveCardInTestMode)
        );
    }

    #[test]
    fn expiry_rules() {
        let now = datetime!(2026-11-23 12:00 UTC);
        assert_eq!(
            Expiry::new(11, 2026, now).unwrap(),
            Expiry {
                month: 11,
                year: 2026
            }
        );
        assert_eq!(
            Expiry::new(12, 30, now).unwrap(),
            Expiry {
                month: 12,
                year: 2030
            }
        );
        assert_eq!(Expiry::new(10, 2026, now), Err(DomainError::CardExpired));
        assert_eq!(Expiry::new(0, 2030, now), Err(DomainError::ExpiryInvalid));
        assert_eq!(Expiry::new(13, 2030, now), Err(DomainError::ExpiryInvalid));
        assert_eq!(Expiry::new(1, 2300, now), Err(DomainError::ExpiryInvalid));
        assert_eq!(Expiry::new(1, -1, now), Err(DomainError::ExpiryInvalid));
    }
}
