//! An account's local time (docs/risk.md, "Assessments"): the hour-of-day signals are
//! taken in the account's IANA time zone, so a rule's `hour < 5` means five in the
//! morning where the merchant is, daylight saving included.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Longest zone name accepted (the longest IANA names are about 30 characters).
const NAME_MAX: usize = 64;

/// The zone an IANA name (`Europe/Paris`, `UTC`) stands for; `None` for anything else,
/// fixed offsets included (they cannot follow daylight saving).
pub fn zone(name: &str) -> Option<TimeZone> {
    let plain = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if !plain {
        return None;
    }
    jiff::tz::db().get(name).ok()
}

/// `now_ms` moved to the wall clock of the zone `name` (UTC when absent or unknown): the
/// milliseconds whose time of day is the local one.
pub fn local_ms(name: Option<&str>, now_ms: i64) -> i64 {
    let Some(tz) = name.and_then(zone) else {
        return now_ms;
    };
    let Ok(ts) = Timestamp::from_millisecond(now_ms) else {
        return now_ms;
    };
    let offset_s = i64::from(tz.to_offset(ts).seconds());
    now_ms.saturating_add(offset_s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-15 12:00 UTC and 2026-07-15 12:00 UTC.
    const WINTER: i64 = 1_768_478_400_000;
    const SUMMER: i64 = 1_784_116_800_000;

    fn hour(ms: i64) -> i64 {
        ms.rem_euclid(86_400_000) / 3_600_000
    }

    #[test]
    fn local_hours_follow_daylight_saving() {
        assert_eq!(hour(WINTER), 12);
        assert_eq!(hour(local_ms(Some("Europe/Paris"), WINTER)), 13);
        assert_eq!(hour(local_ms(Some("Europe/Paris"), SUMMER)), 14);
        assert_eq!(hour(local_ms(Some("America/New_York"), WINTER)), 7);
        assert_eq!(hour(local_ms(Some("America/New_York"), SUMMER)), 8);
        assert_eq!(hour(local_ms(Some("Asia/Kolkata"), WINTER)), 17);
        assert_eq!(local_ms(None, WINTER), WINTER);
        assert_eq!(local_ms(Some("UTC"), WINTER), WINTER);
    }

    #[test]
    fn only_iana_names_are_zones() {
        for ok in [
            "Europe/Paris",
            "UTC",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(zone(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "+02:00",
            "Mars/Olympus",
            "../etc/passwd",
            "Europe/Paris\n",
            "/UTC",
        ] {
            assert!(zone(bad).is_none(), "{bad:?}");
        }
    }
}
