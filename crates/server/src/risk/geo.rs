//! Where a card and a request come from: the card's issuing country from a BIN table,
//! the client's country from an IP country database, and the mismatches between them
//! and the billing address that fraud scoring weighs.
//!
//! Both data sets are loaded by the operator, not shipped: BIN tables are licensed per
//! operator, and IP databases go stale within weeks. Each is parsed and checked once on
//! load, then shared read-only behind an [`Arc`] in [`Geo`], so a lookup never locks.

use maxminddb::{MaxMindDbError, PathElement, Reader, WithinOptions};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use thiserror::Error;

/// The most digits a BIN prefix may have: ISO/IEC 7812 issuer ranges are at most 8 digits,
/// but card schemes publish account ranges down to 11 digits.
pub const MAX_PREFIX_DIGITS: usize = 11;

/// The most data rows a BIN table may have; published tables hold a few hundred thousand.
pub const MAX_BIN_ROWS: usize = 500_000;

/// The largest BIN table accepted, in bytes.
pub const MAX_BIN_CSV_BYTES: usize = 16 * 1024 * 1024;

/// The largest IP database accepted, in bytes: a country database is under 10 MiB, a
/// city one well under this, and the whole file is held in memory.
pub const MAX_IP_DB_BYTES: usize = 256 * 1024 * 1024;

/// How many records with data [`IpCountryDb::from_bytes`] reads to see whether the
/// database carries country codes; enough to step over a few records without one.
const COUNTRY_SAMPLE: usize = 64;

const ISO_CODE_PATH: [PathElement<'static>; 2] =
    [PathElement::Key("country"), PathElement::Key("iso_code")];

/// Why geographic data could not be loaded. Messages name a line or a limit, never the
/// content of the file: a BIN table may come from a licensed source, and an uploaded
/// file may hold anything.
#[derive(Debug, Error)]
pub enum GeoError {
    /// The BIN table is larger than [`MAX_BIN_CSV_BYTES`].
    #[error("the BIN table is larger than {limit_bytes} bytes")]
    BinTableTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// The BIN table has more than [`MAX_BIN_ROWS`] rows.
    #[error("the BIN table has more than {limit} rows")]
    BinTableTooManyRows {
        /// The limit.
        limit: usize,
    },
    /// A line of the BIN table cannot be read.
    #[error("BIN table line {line}: {problem}")]
    BinTableLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: BinLineProblem,
    },
    /// A prefix appears twice with different countries.
    #[error("BIN table line {line}: the prefix was given another country on line {first_line}")]
    BinTableConflict {
        /// 1-based line number of the second occurrence.
        line: usize,
        /// 1-based line number of the first.
        first_line: usize,
    },
    /// The BIN table has no rows: loading it would silently turn the BIN checks off.
    #[error("the BIN table has no rows")]
    BinTableEmpty,
    /// The IP database is larger than [`MAX_IP_DB_BYTES`].
    #[error("the IP database is larger than {limit_bytes} bytes")]
    IpDbTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// The file is not a well-formed MaxMind DB. The source says where it broke; log it,
    /// don't return it (it may quote the file).
    #[error("the IP database is not a readable MaxMind DB file")]
    IpDbUnreadable {
        /// What the reader found.
        #[source]
        source: MaxMindDbError,
    },
    /// The check of the data stopped before it ended (the checker failed): the data is
    /// refused, as it could not be checked.
    #[error("the data could not be checked")]
    Unchecked,
    /// A well-formed MaxMind DB whose records carry no country code (an ASN or ISP
    /// database, say).
    #[error("the IP database holds no country codes")]
    IpDbNotCountry {
        /// The `database_type` its metadata gives, for the log (it comes from the file).
        database_type: String,
    },
}

/// What is wrong with one line of a BIN table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BinLineProblem {
    /// Not exactly two comma-separated fields.
    #[error("expected two fields, bin_prefix,country")]
    FieldCount,
    /// The prefix has a character other than a digit.
    #[error("the prefix must be digits only")]
    PrefixNotDigits,
    /// The prefix is empty or longer than [`MAX_PREFIX_DIGITS`].
    #[error("the prefix must be 1 to 11 digits")]
    PrefixLength,
    /// The country is not two letters.
    #[error("the country must be an ISO 3166-1 alpha-2 code")]
    Country,
}

/// An ISO 3166-1 alpha-2 code, upper case. Two bytes rather than a `String`, so a table
/// of half a million rows stays small.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CountryCode([u8; 2]);

impl CountryCode {
    /// Two ASCII letters, in either case. Only the form is checked: assigned codes change,
    /// and real data uses user-assigned ones (XK for Kosovo).
    fn parse(s: &[u8]) -> Option<Self> {
        match s {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    fn as_str(&self) -> &str {
        // Always ASCII letters, by construction.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Issuing country by BIN (IIN) prefix, longest prefix winning.
///
/// Held as one hash map per prefix length, keyed by the prefix's value, so a lookup is
/// at most one probe per length present (at most [`MAX_PREFIX_DIGITS`]). Maps beat a
/// sorted table with binary search on tables of real size, whose levels outgrow the
/// cache; the standard randomized hasher is kept so that a crafted table cannot make
/// its keys collide.
pub struct BinTable {
    /// Index `n` holds the prefixes of `n + 1` digits.
    levels: [HashMap<u64, CountryCode>; MAX_PREFIX_DIGITS],
    /// The lengths that have any prefix, longest first, so a lookup skips empty levels.
    lengths: Vec<usize>,
    len: usize,
}

impl fmt::Debug for BinTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinTable")
            .field("len", &self.len)
            .field("lengths", &self.lengths)
            .finish_non_exhaustive()
    }
}

impl BinTable {
    /// Parses a BIN table in CSV: one `bin_prefix,country` row a line (prefix of 1 to 11
    /// digits, ISO 3166-1 alpha-2 country in either case), an optional
    /// `bin_prefix,country` header as the first row, blank lines and `#` comment lines.
    /// Fields may be surrounded by spaces or double quotes, as spreadsheets write them,
    /// and a UTF-8 byte-order mark and CRLF line ends are accepted. The same prefix twice
    /// with the same country counts once; with another country it is an error.
    pub fn parse_csv(bytes: &[u8]) -> Result<BinTable, GeoError> {
        if bytes.len() > MAX_BIN_CSV_BYTES {
            return Err(GeoError::BinTableTooLarge {
                limit_bytes: MAX_BIN_CSV_BYTES,
            });
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);

        // One map per length because "4" and "04" are different prefixes; the line is
        // kept to name both lines of a conflict.
        let mut rows: [HashMap<u64, (CountryCode, usize)>; MAX_PREFIX_DIGITS] = Default::default();
        let mut data_rows = 0usize;
        let mut first_row = true;
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let text = raw.trim_ascii();
            if text.is_empty() || text.starts_with(b"#") {
                continue;
            }
            if std::mem::take(&mut first_row) && is_header(text) {
                continue;
            }
            data_rows += 1;
            if data_rows > MAX_BIN_ROWS {
                return Err(GeoError::BinTableTooManyRows {
                    limit: MAX_BIN_ROWS,
                });
            }
            let (digits, value, country) =
                parse_row(text).map_err(|problem| GeoError::BinTableLine { line, problem })?;
            // parse_row keeps digits within 1..=MAX_PREFIX_DIGITS, so the level exists.
            let Some(level) = digits.checked_sub(1).and_then(|i| rows.get_mut(i)) else {
                return Err(GeoError::BinTableLine {
                    line,
                    problem: BinLineProblem::PrefixLength,
                });
            };
            match level.entry(value) {
                Entry::Vacant(slot) => {
                    slot.insert((country, line));
                }
                Entry::Occupied(seen) => {
                    let (first_country, first_line) = *seen.get();
                    if first_country != country {
                        return Err(GeoError::BinTableConflict { line, first_line });
                    }
                }
            }
        }
        let len = rows.iter().map(HashMap::len).sum();
        if len == 0 {
            return Err(GeoError::BinTableEmpty);
        }
        let levels: [HashMap<u64, CountryCode>; MAX_PREFIX_DIGITS] = rows.map(|level| {
            level
                .into_iter()
                .map(|(value, (country, _))| (value, country))
                .collect()
        });
        let lengths = (1..=MAX_PREFIX_DIGITS)
            .rev()
            .filter(|&n| levels.get(n - 1).is_some_and(|l| !l.is_empty()))
            .collect();
        Ok(BinTable {
            levels,
            lengths,
            len,
        })
    }

    /// The issuing country (ISO 3166-1 alpha-2, upper case) of the longest prefix that
    /// matches the leading digits given: a card number, or only its BIN when that is all
    /// the caller has. At most [`MAX_PREFIX_DIGITS`] digits are used, and reading stops
    /// at the first non-digit; a prefix longer than the digits given does not match.
    pub fn country(&self, pan_digits_or_bin: &str) -> Option<&str> {
        // values[n] is the number formed by the first n + 1 digits.
        let mut values = [0u64; MAX_PREFIX_DIGITS];
        let mut have = 0usize;
        let mut acc = 0u64;
        for (slot, b) in values.iter_mut().zip(pan_digits_or_bin.bytes()) {
            if !b.is_ascii_digit() {
                break;
            }
            acc = acc * 10 + u64::from(b - b'0');
            *slot = acc;
            have += 1;
        }
        self.lengths
            .iter()
            .filter(|&&n| n <= have)
            .find_map(|&n| {
                let value = values.get(n - 1)?;
                self.levels.get(n - 1)?.get(value)
            })
            .map(CountryCode::as_str)
    }

    /// How many distinct prefixes the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no prefix (never true of a parsed table).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One field, without surrounding spaces or one pair of surrounding double quotes.
fn field(raw: &[u8]) -> &[u8] {
    let f = raw.trim_ascii();
    f.strip_prefix(b"\"")
        .and_then(|f| f.strip_suffix(b"\""))
        .unwrap_or(f)
}

fn is_header(text: &[u8]) -> bool {
    let mut fields = text.split(|&b| b == b',').map(field);
    matches!(
        (fields.next(), fields.next(), fields.next()),
        (Some(a), Some(b), None)
            if a.eq_ignore_ascii_case(b"bin_prefix") && b.eq_ignore_ascii_case(b"country")
    )
}

/// A row's prefix as (digit count, value) and its country.
fn parse_row(text: &[u8]) -> Result<(usize, u64, CountryCode), BinLineProblem> {
    let mut fields = text.split(|&b| b == b',').map(field);
    let (Some(prefix), Some(country), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(BinLineProblem::FieldCount);
    };
    if !prefix.iter().all(u8::is_ascii_digit) {
        return Err(BinLineProblem::PrefixNotDigits);
    }
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_DIGITS {
        return Err(BinLineProblem::PrefixLength);
    }
    // At most 11 digits: far below u64::MAX.
    let value = prefix
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let country = CountryCode::parse(country).ok_or(BinLineProblem::Country)?;
    Ok((prefix.len(), value, country))
}

/// What an IP database says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    /// The metadata's `database_type`, e.g. `GeoLite2-Country` or `DBIP-Country-Lite`.
    pub database_type: String,
    /// When the database was built, in seconds since the Unix epoch: how stale it is.
    pub build_epoch: u64,
    /// Nodes in the search tree, a rough measure of its size.
    pub node_count: u32,
    /// 4 for an IPv4-only database, 6 for one that holds both.
    pub ip_version: u16,
}

/// A MaxMind-format IP country database (GeoLite2-Country, DB-IP country lite, or a
/// city database, which carries the country too), held in memory.
pub struct IpCountryDb {
    reader: Reader<Vec<u8>>,
}

impl fmt::Debug for IpCountryDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpCountryDb")
            .field("info", &self.describe())
            .finish_non_exhaustive()
    }
}

impl IpCountryDb {
    /// Opens a database from its bytes. It must be well formed throughout (checked now,
    /// so a damaged upload is refused rather than failing lookups later) and carry
    /// `country.iso_code` in its records; a database with no records at all is accepted
    /// only if its type names a country database.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        if bytes.len() > MAX_IP_DB_BYTES {
            return Err(GeoError::IpDbTooLarge {
                limit_bytes: MAX_IP_DB_BYTES,
            });
        }
        let unreadable = |source| GeoError::IpDbUnreadable { source };
        let reader = Reader::from_source(bytes).map_err(unreadable)?;
        reader.verify().map_err(unreadable)?;

        let mut sampled = 0usize;
        for network in reader
            .networks(WithinOptions::default())
            .map_err(unreadable)?
            .take(COUNTRY_SAMPLE)
        {
            let network = network.map_err(unreadable)?;
            sampled += 1;
            if let Ok(Some(code)) = network.decode_path::<&str>(&ISO_CODE_PATH)
                && CountryCode::parse(code.as_bytes()).is_some()
            {
                return Ok(Self { reader });
            }
        }
        let database_type = reader.metadata().database_type.clone();
        // A database whose records all lack a country code would answer None to every
        // lookup; refuse it even if its type says Country.
        if sampled == 0 && database_type.contains("Country") {
            return Ok(Self { reader });
        }
        Err(GeoError::IpDbNotCountry { database_type })
    }

    /// The country (ISO 3166-1 alpha-2, upper case) the database places the address in.
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack listener reports
    /// IPv4 clients) is looked up as the IPv4 address. Private and loopback addresses
    /// give `None` unless the database maps them. Only `country` is read, not
    /// `registered_country`: the second says who holds the block, not where the client is.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        let code: &str = found.decode_path(&ISO_CODE_PATH).ok()??;
        CountryCode::parse(code.as_bytes()).map(|c| c.as_str().to_owned())
    }

    /// The database's metadata, for the operator to see what is loaded and how old it is.
    pub fn describe(&self) -> DbInfo {
        let m = self.reader.metadata();
        DbInfo {
            database_type: m.database_type.clone(),
            build_epoch: m.build_epoch,
            node_count: m.node_count,
            ip_version: m.ip_version,
        }
    }
}

/// The geographic data loaded now, either part possibly absent. Cheap to clone: a new
/// table or database is swapped in whole, and lookups in flight keep the old one.
#[derive(Debug, Clone, Default)]
pub struct Geo {
    bins: Option<Arc<BinTable>>,
    ips: Option<Arc<IpCountryDb>>,
}

/// Countries found for a card and a request, and which pairs disagree. A pair counts as
/// a mismatch only when both sides are known: missing data is not evidence of fraud.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mismatches {
    /// The card's issuing country, from the BIN table.
    pub bin_country: Option<String>,
    /// The client's country, from the IP database.
    pub ip_country: Option<String>,
    /// The card was issued in another country than the client is in.
    pub bin_ip: bool,
    /// The card was issued in another country than the billing address.
    pub bin_billing: bool,
    /// The client is in another country than the billing address.
    pub ip_billing: bool,
}

impl Mismatches {
    /// Compares three countries, each an ISO 3166-1 alpha-2 code in either case; anything
    /// else (absent, blank, malformed) counts as unknown. For callers that know a country
    /// from elsewhere; [`Geo::mismatches`] looks them up.
    pub fn between(
        bin_country: Option<&str>,
        ip_country: Option<&str>,
        billing_country: Option<&str>,
    ) -> Self {
        let code = |c: Option<&str>| c.and_then(|c| CountryCode::parse(c.trim().as_bytes()));
        let (bin, ip, billing) = (code(bin_country), code(ip_country), code(billing_country));
        let differ = |a: Option<CountryCode>, b: Option<CountryCode>| matches!((a, b), (Some(a), Some(b)) if a != b);
        Mismatches {
            bin_ip: differ(bin, ip),
            bin_billing: differ(bin, billing),
            ip_billing: differ(ip, billing),
            bin_country: bin.map(|c| c.as_str().to_owned()),
            ip_country: ip.map(|c| c.as_str().to_owned()),
        }
    }
}

impl Geo {
    /// Geographic data from the parts the operator has loaded.
    pub fn new(bins: Option<Arc<BinTable>>, ips: Option<Arc<IpCountryDb>>) -> Self {
        Self { bins, ips }
    }

    /// The same, with another BIN table (or none).
    pub fn with_bins(&self, bins: Option<Arc<BinTable>>) -> Self {
        Self {
            bins,
            ips: self.ips.clone(),
        }
    }

    /// The same, with another IP database (or none).
    pub fn with_ips(&self, ips: Option<Arc<IpCountryDb>>) -> Self {
        Self {
            bins: self.bins.clone(),
            ips,
        }
    }

    /// The BIN table, if loaded.
    pub fn bins(&self) -> Option<&Arc<BinTable>> {
        self.bins.as_ref()
    }

    /// The IP database, if loaded.
    pub fn ips(&self) -> Option<&Arc<IpCountryDb>> {
        self.ips.as_ref()
    }

    /// Compares the card's issuing country (from `bin`, the card's leading digits), the
    /// client's country (from `ip`) and the billing country given with the request.
    pub fn mismatches(&self, bin: &str, ip: IpAddr, billing_country: Option<&str>) -> Mismatches {
        let bin_country = self.bins.as_ref().and_then(|t| t.country(bin));
        let ip_country = self.ips.as_ref().and_then(|db| db.country(ip));
        Mismatches::between(bin_country, ip_country.as_deref(), billing_country)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn table(csv: &str) -> BinTable {
        BinTable::parse_csv(csv.as_bytes()).unwrap()
    }

    fn line_error(csv: &str) -> (usize, BinLineProblem) {
        match BinTable::parse_csv(csv.as_bytes()) {
            Err(GeoError::BinTableLine { line, problem }) => (line, problem),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table("4,US\n41,GB\n4111,FR\n411111,DE\n41111122,NL\n4111112233,BE\n");
        assert_eq!(t.len(), 6);
        assert_eq!(t.country("4000000000000002"), Some("US"));
        assert_eq!(t.country("4100000000000000"), Some("GB"));
        assert_eq!(t.country("4111000000000000"), Some("FR"));
        assert_eq!(t.country("4111110000000000"), Some("DE"));
        assert_eq!(t.country("4111112200000000"), Some("NL"));
        assert_eq!(t.country("4111112233000000"), Some("BE"));
        assert_eq!(t.country("5100000000000000"), None);
    }

    #[test]
    fn lookups_on_a_bin_only_match_shorter_prefixes() {
        let t = table("41111122,NL\n411111,DE\n4111112233,BE\n");
        // Six and eight digits, as the vault passes a BIN: the 10-digit range is out of reach.
        assert_eq!(t.country("411111"), Some("DE"));
        assert_eq!(t.country("41111122"), Some("NL"));
        assert_eq!(t.country("41111"), None);
        assert_eq!(t.country(""), None);
        // Reading stops at a non-digit, and at 11 digits.
        assert_eq!(t.country("411111-22"), Some("DE"));
        assert_eq!(t.country("x41111122"), None);
        let eleven = table("41111122334,IE\n");
        assert_eq!(eleven.country("4111112233455555"), Some("IE"));
        assert_eq!(eleven.country("4111112233"), None);
    }

    #[test]
    fn leading_zeros_make_different_prefixes() {
        let t = table("4,US\n04,GB\n004,FR\n");
        assert_eq!(t.len(), 3);
        assert_eq!(t.country("4999"), Some("US"));
        assert_eq!(t.country("0499"), Some("GB"));
        assert_eq!(t.country("0049"), Some("FR"));
        assert_eq!(t.country("0000"), None);
    }

    #[test]
    fn header_comments_blank_lines_and_spreadsheet_quirks() {
        let csv = "\u{feff}# issuer ranges, 2026\r\n\r\nBIN_prefix , Country\r\n\
                   # a comment between rows\r\n  411111 , de \r\n\"520000\",\"gb\"\r\n\n   \n";
        let t = table(csv);
        assert_eq!(t.len(), 2);
        assert_eq!(t.country("4111111111111111"), Some("DE"));
        assert_eq!(t.country("5200000000000007"), Some("GB"));
        assert_eq!(table("411111,DE").len(), 1, "no final newline");
    }

    #[test]
    fn a_header_is_only_allowed_first() {
        assert_eq!(
            line_error("411111,DE\nbin_prefix,country\n"),
            (2, BinLineProblem::PrefixNotDigits)
        );
    }

    #[test]
    fn every_malformed_line_names_its_number_and_not_its_content() {
        let cases: [(&str, BinLineProblem); 13] = [
            ("4111", BinLineProblem::FieldCount),
            ("4111,DE,extra", BinLineProblem::FieldCount),
            ("4111,DE,", BinLineProblem::FieldCount),
            ("4111;DE", BinLineProblem::FieldCount),
            (",DE", BinLineProblem::PrefixLength),
            ("123456789012,DE", BinLineProblem::PrefixLength),
            ("4111 1111,DE", BinLineProblem::PrefixNotDigits),
            ("41x1,DE", BinLineProblem::PrefixNotDigits),
            ("-4111,DE", BinLineProblem::PrefixNotDigits),
            ("4111,", BinLineProblem::Country),
            ("4111,DEU", BinLineProblem::Country),
            ("4111,D1", BinLineProblem::Country),
            ("4111,\u{e9}\u{e9}", BinLineProblem::Country),
        ];
        for (row, problem) in cases {
            let csv = format!("# header comment\nbin_prefix,country\n520000,GB\n\n{row}\n");
            let err = BinTable::parse_csv(csv.as_bytes()).unwrap_err();
            assert!(
                matches!(err, GeoError::BinTableLine { line: 5, problem: p } if p == problem),
                "{row:?}: {err:?}"
            );
            let message = err.to_string();
            assert!(message.starts_with("BIN table line 5: "), "{message}");
            for part in row.split(',').filter(|p| p.len() > 1) {
                assert!(!message.contains(part), "{message} echoes {part:?}");
            }
        }
        // Bytes that are not UTF-8 are refused, not decoded.
        let err = BinTable::parse_csv(b"411111,D\xff\n").unwrap_err();
        assert!(matches!(
            err,
            GeoError::BinTableLine {
                line: 1,
                problem: BinLineProblem::Country
            }
        ));
    }

    #[test]
    fn a_prefix_with_two_countries_is_refused_naming_both_lines() {
        let err = BinTable::parse_csv(b"411111,DE\n520000,GB\n411111,FR\n").unwrap_err();
        assert!(matches!(
            err,
            GeoError::BinTableConflict {
                line: 3,
                first_line: 1
            }
        ));
        assert_eq!(
            err.to_string(),
            "BIN table line 3: the prefix was given another country on line 1"
        );
        // The same country twice is only a repetition; case does not make it different.
        let t = table("411111,DE\n411111,de\n");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_table_without_rows_is_refused() {
        for csv in ["", "\n\n", "# only a comment\n", "bin_prefix,country\n"] {
            assert!(
                matches!(
                    BinTable::parse_csv(csv.as_bytes()),
                    Err(GeoError::BinTableEmpty)
                ),
                "{csv:?}"
            );
        }
    }

    #[test]
    fn size_and_row_limits() {
        let at_limit: String = (0..MAX_BIN_ROWS)
            .map(|i| format!("{:07},GB\n", i))
            .collect();
        let t = BinTable::parse_csv(at_limit.as_bytes()).unwrap();
        assert_eq!(t.len(), MAX_BIN_ROWS);
        assert_eq!(t.country("0499999"), Some("GB"));

        // Comments and blank lines are not rows; one more data row is.
        let with_comments = format!("# c\n\nbin_prefix,country\n{at_limit}# end\n");
        assert!(BinTable::parse_csv(with_comments.as_bytes()).is_ok());
        let over = format!("{at_limit}9999999,GB\n");
        assert!(matches!(
            BinTable::parse_csv(over.as_bytes()),
            Err(GeoError::BinTableTooManyRows {
                limit: MAX_BIN_ROWS
            })
        ));

        let mut big = vec![b'#'; MAX_BIN_CSV_BYTES];
        big.extend_from_slice(b"\n411111,DE\n");
        assert!(matches!(
            BinTable::parse_csv(&big),
            Err(GeoError::BinTableTooLarge { .. })
        ));
        big.truncate(MAX_BIN_CSV_BYTES - 11);
        big.extend_from_slice(b"\n411111,DE\n");
        assert_eq!(big.len(), MAX_BIN_CSV_BYTES);
        assert_eq!(BinTable::parse_csv(&big).unwrap().len(), 1);
    }

    #[test]
    fn mismatches_count_only_when_both_sides_are_known() {
        let m = Mismatches::between(Some("US"), Some("GB"), Some("us"));
        assert_eq!(
            m,
            Mismatches {
                bin_country: Some("US".into()),
                ip_country: Some("GB".into()),
                bin_ip: true,
                bin_billing: false,
                ip_billing: true,
            }
        );
        assert_eq!(
            Mismatches::between(Some("de"), Some("DE"), Some(" De ")),
            Mismatches {
                bin_country: Some("DE".into()),
                ip_country: Some("DE".into()),
                ..Mismatches::default()
            }
        );
        // Unknown on one side: nothing counts, whatever the other two say.
        for unknown in [None, Some(""), Some("  "), Some("USA"), Some("1A")] {
            let m = Mismatches::between(unknown, Some("GB"), Some("FR"));
            assert!(!m.bin_ip && !m.bin_billing && m.ip_billing, "{unknown:?}");
            assert_eq!(m.bin_country, None);
            let m = Mismatches::between(Some("US"), unknown, Some("FR"));
            assert!(!m.bin_ip && m.bin_billing && !m.ip_billing, "{unknown:?}");
            let m = Mismatches::between(Some("US"), Some("GB"), unknown);
            assert!(m.bin_ip && !m.bin_billing && !m.ip_billing, "{unknown:?}");
        }
        assert_eq!(Mismatches::between(None, None, None), Mismatches::default());
    }

    #[test]
    fn geo_looks_up_what_is_loaded() {
        let ip: IpAddr = Ipv4Addr::new(81, 2, 69, 1).into();
        let none = Geo::default();
        assert_eq!(
            none.mismatches("411111", ip, Some("GB")),
            Mismatches::default()
        );

        let bins = Arc::new(table("411111,DE\n"));
        let geo = Geo::new(Some(bins.clone()), None);
        let clone = geo.clone();
        assert!(
            Arc::ptr_eq(clone.bins().unwrap(), &bins),
            "a clone shares the table"
        );
        let m = geo.mismatches("4111111111111111", ip, Some("gb"));
        assert_eq!(m.bin_country.as_deref(), Some("DE"));
        assert_eq!(m.ip_country, None);
        assert!(m.bin_billing && !m.bin_ip && !m.ip_billing);
        assert!(geo.with_bins(None).bins().is_none());
    }

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Writes a database with the independent writer (mmdb-writer, from PyPI).
    fn make_mmdb(dir: &Path, kind: &str) -> Vec<u8> {
        let path = dir.join(format!("{kind}.mmdb"));
        let out = Command::new("python3")
            .arg(repo_root().join("tests/interop/geo/make_mmdb.py"))
            .arg(&path)
            .arg(kind)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "python3 is needed to write the test database \
                     (then pip install -r tests/interop/requirements.txt): {e}"
                )
            });
        assert!(
            out.status.success(),
            "make_mmdb.py failed ({}); pip install -r tests/interop/requirements.txt\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn reads_a_country_database_from_an_independent_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = IpCountryDb::from_bytes(make_mmdb(dir.path(), "country")).unwrap();

        let info = db.describe();
        assert_eq!(info.database_type, "GeoLite2-Country");
        assert_eq!(info.ip_version, 6);
        assert!(info.node_count > 0);
        assert!(info.build_epoch > 1_700_000_000, "{info:?}");

        let v4 = |a, b, c, d| IpAddr::from(Ipv4Addr::new(a, b, c, d));
        assert_eq!(db.country(v4(81, 2, 69, 160)).as_deref(), Some("GB"));
        assert_eq!(db.country(v4(2, 125, 160, 216)).as_deref(), Some("GB"));
        assert_eq!(db.country(v4(89, 160, 20, 112)).as_deref(), Some("SE"));
        assert_eq!(db.country(v4(216, 160, 83, 56)).as_deref(), Some("US"));
        let v6: IpAddr = "2a02:8100:1234::1".parse().unwrap();
        assert_eq!(db.country(v6).as_deref(), Some("DE"));

        // A dual-stack listener reports IPv4 clients as mapped addresses.
        let mapped = IpAddr::from(Ipv4Addr::new(89, 160, 20, 112).to_ipv6_mapped());
        assert_eq!(db.country(mapped).as_deref(), Some("SE"));

        for unknown in [
            v4(81, 2, 70, 1),
            v4(127, 0, 0, 1),
            v4(10, 0, 0, 1),
            v4(192, 168, 1, 1),
            IpAddr::from(Ipv6Addr::LOCALHOST),
            "2a03::1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
        ] {
            assert_eq!(db.country(unknown), None, "{unknown}");
        }

        let bins = Arc::new(table("411111,DE\n520000,SE\n"));
        let geo = Geo::new(Some(bins), Some(Arc::new(db)));
        let m = geo.mismatches("411111", mapped, Some("DE"));
        assert_eq!(
            m,
            Mismatches {
                bin_country: Some("DE".into()),
                ip_country: Some("SE".into()),
                bin_ip: true,
                bin_billing: false,
                ip_billing: true,
            }
        );
        let m = geo.mismatches("520000", v4(89, 160, 20, 1), None);
        assert!(!m.bin_ip && !m.bin_billing && !m.ip_billing);
        // An address the database does not know makes no mismatch.
        let m = geo.mismatches("411111", v4(10, 0, 0, 1), Some("DE"));
        assert_eq!(m.ip_country, None);
        assert!(!m.bin_ip && !m.ip_billing);
    }

    #[test]
    fn refuses_a_database_without_countries_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let asn = IpCountryDb::from_bytes(make_mmdb(dir.path(), "asn")).unwrap_err();
        assert!(
            matches!(&asn, GeoError::IpDbNotCountry { database_type } if database_type == "GeoLite2-ASN"),
            "{asn:?}"
        );
        assert_eq!(asn.to_string(), "the IP database holds no country codes");

        for garbage in [
            Vec::new(),
            b"411111,DE\n".to_vec(),
            (0..=255u8).cycle().take(4096).collect(),
        ] {
            let err = IpCountryDb::from_bytes(garbage).unwrap_err();
            assert!(matches!(err, GeoError::IpDbUnreadable { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                "the IP database is not a readable MaxMind DB file"
            );
        }

        // A real database cut short, or with its search tree overwritten.
        let good = make_mmdb(dir.path(), "country");
        let cut = good.get(..good.len() / 2).unwrap().to_vec();
        assert!(matches!(
            IpCountryDb::from_bytes(cut),
            Err(GeoError::IpDbUnreadable { .. })
        ));
        let mut scrambled = good.clone();
        for b in scrambled.iter_mut().take(64) {
            *b = 0xff;
        }
        assert!(matches!(
            IpCountryDb::from_bytes(scrambled),
            Err(GeoError::IpDbUnreadable { .. })
        ));
    }
}
