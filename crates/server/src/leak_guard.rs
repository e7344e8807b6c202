//! The leak guard: the last line of defence behind secret types. Every byte the log
//! writers emit (stderr, the log file) and every panic message passes through [`mask`],
//! which blanks
//! - any run of 12–19 digits (single spaces or dashes allowed between digits) that
//!   passes the Luhn check: a card number (Maestro numbers can be 12 digits), however it
//!   was spelled;
//! - anything shaped like one of our secrets: `sk_…`, `rk_…`, `pk_…` (with or without
//!   `test_`/`live_`/`admin_`) followed by 8 or more key characters, `whsec_…`, and a
//!   client session's secret `cs_<id>_secret_…` (its session id stays readable);
//! - a bearer JWT: `eyJ…` (a base64url JSON header), a dot, a payload, a dot and an
//!   optional signature;
//! - an OTP code: exactly 6 digits as the quoted value of a JSON key `code` or
//!   `test_code` (also inside an escaped JSON string, `\"code\":\"123456\"`). Other
//!   6-digit numbers stay: only that key carries a code in anything we write.
//! - a CVC: 3 or 4 digits as the quoted value of a JSON key `cvc`, `cvv`, `cvc2` or
//!   `csc` (plain or escaped). Strongroom never writes one; a request body or a processor's
//!   answer that reached a log by mistake would.
//!
//! Short prefixes such as an API key's display prefix (`sk_test_4f3a`) stay readable.

use std::borrow::Cow;
use std::io::{self, Write};

/// What a masked card number becomes.
pub const PAN_MASK: &str = "[REDACTED-PAN]";
/// What a masked secret's body becomes (its prefix is kept).
pub const SECRET_MASK: &str = "[REDACTED]";
/// What a masked bearer JWT becomes.
pub const JWT_MASK: &str = "[REDACTED-JWT]";
/// What a masked OTP code becomes (its quotes are kept).
pub const OTP_MASK: &str = "[REDACTED-OTP]";
/// What a masked CVC becomes (its quotes are kept).
pub const CVC_MASK: &str = "[REDACTED-CVC]";

const KEY_PREFIXES: &[&str] = &["sk_", "rk_", "pk_"];
const KEY_MODES: &[&str] = &["test_", "live_", "admin_"];
const WEBHOOK_PREFIX: &str = "whsec_";
/// A client secret: `cs_`, the session id's 32 hex digits, then this, then the secret.
const CLIENT_SECRET_PREFIX: &str = "cs_";
const CLIENT_SECRET_MARK: &str = "_secret_";
const MIN_SECRET_BODY: usize = 8;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn luhn(digits: &[u8]) -> bool {
    strongroom_core::pan::luhn_valid(digits)
}

/// Masks card numbers and secret-shaped strings. Borrows when there is nothing to mask.
///
/// Every log line passes through here, so the scan allocates only when it masks.
pub fn mask(input: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < input.len() {
        // Only a digit after a non-digit, or the first letter of a secret prefix
        // (`sk_`, `rk_`, `pk_`, `whsec_`) or of a JWT (`eyJ`) outside a word, can start a
        // match: skip everything else in one tight loop. Every log line comes through
        // here, and most of its letters and digits are inside words and numbers.
        let Some(at) = (i..input.len()).find(|&j| may_start(input, j)) else {
            break;
        };
        i = at;
        // Each kind of match starts with its own kind of byte.
        let found = match input.get(i) {
            Some(c) if c.is_ascii_digit() => pan_at(input, i)
                .map(|end| (end, 0, PAN_MASK))
                .or_else(|| otp_at(input, i).map(|end| (end, 0, OTP_MASK)))
                .or_else(|| cvc_at(input, i).map(|end| (end, 0, CVC_MASK))),
            Some(b'e') => jwt_at(input, i).map(|end| (end, 0, JWT_MASK)),
            _ => secret_at(input, i).map(|(end, keep)| (end, keep, SECRET_MASK)),
        };
        if let Some((end, keep, replacement)) = found {
            let o = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
            o.extend_from_slice(input.get(copied..i + keep).unwrap_or_default());
            o.extend_from_slice(replacement.as_bytes());
            i = end;
            copied = end;
        } else {
            i += 1;
        }
    }
    match out {
        None => Cow::Borrowed(input),
        Some(mut o) => {
            o.extend_from_slice(input.get(copied..).unwrap_or_default());
            Cow::Owned(o)
        }
    }
}

/// Whether a match ([`pan_at`], [`otp_at`], [`jwt_at`], [`secret_at`]) can start at `i`:
/// each of them refuses a start whose previous byte is a digit (numbers) or a word
/// character (secrets, JWTs), so those are not even tried.
fn may_start(b: &[u8], i: usize) -> bool {
    let Some(&c) = b.get(i) else {
        return false;
    };
    let prev = i.checked_sub(1).and_then(|p| b.get(p)).copied();
    if c.is_ascii_digit() {
        !prev.is_some_and(|p| p.is_ascii_digit())
    } else {
        matches!(c, b's' | b'r' | b'p' | b'w' | b'e' | b'c') && !prev.is_some_and(is_word)
    }
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// The end of a JWT starting at `i`: `eyJ` and at least 8 more base64url characters,
/// `.`, a payload of at least 2, `.`, and a signature (possibly empty).
fn jwt_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b.get(i - 1).copied().is_some_and(is_b64url) {
        return None;
    }
    let rest = b.get(i..)?;
    if !rest.starts_with(b"eyJ") {
        return None;
    }
    let header = rest.iter().take_while(|c| is_b64url(**c)).count();
    if header < 11 || rest.get(header) != Some(&b'.') {
        return None;
    }
    let after = rest.get(header + 1..)?;
    let payload = after.iter().take_while(|c| is_b64url(**c)).count();
    if payload < 2 || after.get(payload) != Some(&b'.') {
        return None;
    }
    let sig = after
        .get(payload + 1..)?
        .iter()
        .take_while(|c| is_b64url(**c))
        .count();
    Some(i + header + 1 + payload + 1 + sig)
}

/// The end of an OTP code starting at `i`: exactly 6 digits, quoted, the value of a
/// JSON key `code` or `test_code` (quotes possibly escaped, spaces around the colon).
fn otp_at(b: &[u8], i: usize) -> Option<usize> {
    quoted_value_at(b, i, 6..=6, &[b"code", b"test_code"])
}

/// The end of a CVC starting at `i`: 3 or 4 digits, quoted, the value of a JSON key
/// `cvc`, `cvv`, `cvc2` or `csc`.
fn cvc_at(b: &[u8], i: usize) -> Option<usize> {
    quoted_value_at(b, i, 3..=4, &[b"cvc", b"cvv", b"cvc2", b"csc"])
}

/// The end of a run of digits starting at `i`, of a length in `len`, quoted, the value
/// of a JSON key named in `keys` (quotes possibly escaped, spaces around the colon).
fn quoted_value_at(
    b: &[u8],
    i: usize,
    len: std::ops::RangeInclusive<usize>,
    keys: &[&[u8]],
) -> Option<usize> {
    let digits = b
        .get(i..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !len.contains(&digits) {
        return None;
    }
    let end = i + digits;
    // After: a closing quote, escaped or not.
    let close = b.get(end..)?;
    if !(close.starts_with(b"\"") || close.starts_with(b"\\\"")) {
        return None;
    }
    // Before, right to left: the opening quote, the colon, the key's closing quote.
    let mut j = i;
    let quote = |j: &mut usize| -> Option<()> {
        *j = j.checked_sub(1)?;
        (b.get(*j) == Some(&b'"')).then_some(())?;
        if b.get(j.wrapping_sub(1)) == Some(&b'\\') {
            *j -= 1;
        }
        Some(())
    };
    quote(&mut j)?;
    while j > 0 && b.get(j - 1) == Some(&b' ') {
        j -= 1;
    }
    j = j.checked_sub(1)?;
    (b.get(j) == Some(&b':')).then_some(())?;
    while j > 0 && b.get(j - 1) == Some(&b' ') {
        j -= 1;
    }
    quote(&mut j)?;
    let key = b.get(..j)?;
    let named = |name: &[u8]| key.strip_suffix(name).is_some_and(|k| k.ends_with(b"\""));
    keys.iter().any(|k| named(k)).then_some(end)
}

/// Masks a string (for panic messages).
pub fn mask_str(s: &str) -> String {
    String::from_utf8_lossy(&mask(s.as_bytes())).into_owned()
}

/// Replaces every card number in `input` with `with`: the same runs [`mask`] finds
/// (12–19 digits, single spaces or dashes allowed between them, Luhn-valid), and nothing
/// else. Borrows when there is none. For redacting data that is kept, not logged (inbound
/// notifications), where a secret-shaped word is the sender's business.
pub fn mask_pans<'a>(input: &'a str, with: &str) -> Cow<'a, str> {
    let b = input.as_bytes();
    let mut out: Option<String> = None;
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        match pan_at(b, i) {
            // A match starts and ends on an ASCII digit: both are character boundaries.
            Some(end) => {
                let o = out.get_or_insert_with(|| String::with_capacity(input.len()));
                o.push_str(input.get(copied..i).unwrap_or_default());
                o.push_str(with);
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(input),
        Some(mut o) => {
            o.push_str(input.get(copied..).unwrap_or_default());
            Cow::Owned(o)
        }
    }
}

/// The end of a Luhn-valid 12–19 digit run starting at `i` (not inside a longer run of
/// digits).
fn pan_at(b: &[u8], i: usize) -> Option<usize> {
    let first = *b.get(i)?;
    if !first.is_ascii_digit() || (i > 0 && b.get(i - 1).is_some_and(u8::is_ascii_digit)) {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut n = 0;
    let mut j = i;
    let mut end = i;
    while let Some(&c) = b.get(j) {
        if c.is_ascii_digit() {
            *digits.get_mut(n)? = c; // a 20th digit: too long for a card number
            n += 1;
            j += 1;
            end = j;
        } else if (c == b' ' || c == b'-')
            && b.get(j + 1).is_some_and(u8::is_ascii_digit)
            && b.get(j.wrapping_sub(1)).is_some_and(u8::is_ascii_digit)
        {
            j += 1;
        } else {
            break;
        }
    }
    let digits = digits.get(..n)?;
    ((12..=19).contains(&n) && luhn(digits)).then_some(end)
}

/// A secret-shaped string starting at `i`: its end, and the length of the prefix that
/// stays readable (the body is blanked).
fn secret_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if i > 0 && b.get(i - 1).copied().is_some_and(is_word) {
        return None;
    }
    let rest = b.get(i..)?;
    let (prefix_len, body_ok): (usize, fn(u8) -> bool) =
        if let Some(keep) = client_secret_prefix(rest) {
            (keep, is_b64url)
        } else if rest.starts_with(WEBHOOK_PREFIX.as_bytes()) {
            (WEBHOOK_PREFIX.len(), |c| {
                c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_')
            })
        } else {
            let p = KEY_PREFIXES
                .iter()
                .find(|p| rest.starts_with(p.as_bytes()))?
                .len();
            let after = rest.get(p..)?;
            let mode = KEY_MODES
                .iter()
                .find(|m| after.starts_with(m.as_bytes()))
                .map_or(0, |m| m.len());
            (p + mode, |c| c.is_ascii_alphanumeric())
        };
    let body = rest.get(prefix_len..)?;
    let n = body.iter().take_while(|c| body_ok(**c)).count();
    if n < MIN_SECRET_BODY {
        return None;
    }
    Some((i + prefix_len + n, prefix_len))
}

/// The readable part of a client secret at the start of `rest` (`cs_<32 hex>_secret_`).
fn client_secret_prefix(rest: &[u8]) -> Option<usize> {
    let after = rest.strip_prefix(CLIENT_SECRET_PREFIX.as_bytes())?;
    let hex = after.get(..32)?;
    let mark = after.get(32..)?;
    (hex.iter().all(u8::is_ascii_hexdigit) && mark.starts_with(CLIENT_SECRET_MARK.as_bytes()))
        .then_some(CLIENT_SECRET_PREFIX.len() + 32 + CLIENT_SECRET_MARK.len())
}

/// An `io::Write` that masks everything before passing it on. The tracing formatter
/// writes each event with one `write_all`, so a whole line is masked at once.
pub struct Guarded<W: Write>(pub W);

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&mask(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Replaces the panic hook: the message and location go to the log (and stderr)
/// through [`mask`], never the default hook's raw text.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = mask_str(&panic_text(info));
        tracing::error!(target: "panic", message = %msg, "panic");
        let _ = writeln!(io::stderr(), "panic: {msg}");
    }));
}

/// The panic's message and location, unmasked (masked by the caller).
pub fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_default();
    match info.location() {
        Some(l) => format!("{payload} at {}:{}", l.file(), l.line()),
        None => payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skip in [`mask`] must stop at every byte a match can start with.
    #[test]
    fn the_skip_stops_at_every_prefix_and_digit() {
        for p in KEY_PREFIXES
            .iter()
            .chain([&WEBHOOK_PREFIX, &CLIENT_SECRET_PREFIX, &"eyJ"])
        {
            assert!(may_start(p.as_bytes(), 0), "{p}");
            let after = format!(" \"{p}");
            assert!(may_start(after.as_bytes(), 2), "{p} after a quote");
            let inside = format!("x{p}");
            assert!(!may_start(inside.as_bytes(), 1), "{p} inside a word");
        }
        for d in b'0'..=b'9' {
            assert!(may_start(&[d], 0) && may_start(&[b'x', d], 1) && may_start(&[b'"', d], 1));
            assert!(!may_start(&[b'4', d], 1), "inside a number");
        }
        assert!(!may_start(b"a", 0) && !may_start(b"\"", 0) && !may_start(b" ", 0));
        // A secret and a card number after a long stretch of bytes that cannot start one.
        let line = format!(
            "{{\"a\":\"{}\",\"k\":\"sk_test_abcdefgh12\",\"n\":\"4111 1111 1111 1111\"}}",
            "x".repeat(300)
        );
        let out = m(&line);
        assert!(out.contains("sk_test_[REDACTED]"), "{out}");
        assert!(out.contains(PAN_MASK), "{out}");
        assert!(!out.contains("4111 1111"), "{out}");
    }

    fn m(s: &str) -> String {
        String::from_utf8(mask(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn card_numbers_are_masked_in_any_spelling() {
        for pan in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "378282246310005",
            "6200000000000005",
            "4000000000000000006",
        ] {
            let line = format!("{{\"msg\":\"saw {pan} here\"}}");
            let out = m(&line);
            assert_eq!(out, format!("{{\"msg\":\"saw {PAN_MASK} here\"}}"), "{pan}");
        }
        assert_eq!(m("x=4242424242424242"), format!("x={PAN_MASK}"));
    }

    #[test]
    fn other_numbers_are_left_alone() {
        for s in [
            "4242424242424241",         // fails Luhn
            "42424242424",              // 11 digits
            "42424242424242424242",     // 20 digits
            "2026-11-23T18:25:12.123Z", // a timestamp
            "latency_us=1234",
            "4111  1111 1111 1111", // a double space breaks the run
        ] {
            assert_eq!(m(s), s);
        }
        assert!(matches!(mask(b"nothing here"), Cow::Borrowed(_)));
        // An access-log line has digits and hex everywhere and nothing to mask: no copy.
        let line = br#"{"timestamp":"2026-11-27T00:10:26.759512Z","level":"INFO","fields":{"request_id":"req_01a21a56d036750690cf75b693fde88e","method":"GET","route":"/v1/cards/{id}","status":200,"latency_us":1722},"target":"access"}"#;
        assert!(matches!(mask(line), Cow::Borrowed(_)));
    }

    #[test]
    fn mask_pans_finds_what_mask_finds_and_keeps_the_rest() {
        for pan in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "5555-5555-5555-4444",
        ] {
            assert_eq!(mask_pans(&format!("é {pan}."), "[X]"), "é [X].");
        }
        // 12 digits that pass Luhn are a PAN too (the shortest ISO/IEC 7812 allows).
        assert_eq!(mask_pans("424242424242", "[X]"), "[X]");
        for s in ["4242424242424241", "42424242424", "sk_test_abcdefghijkl"] {
            assert!(matches!(mask_pans(s, "[X]"), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn secret_shaped_strings_are_masked_but_display_prefixes_stay() {
        let sk = "sk_test_4eC39HqLyjWDarjtT1zdp7dc0000000000000000";
        assert_eq!(m(&format!("key {sk}.")), "key sk_test_[REDACTED].");
        assert_eq!(m("Bearer rk_live_abcdefgh12"), "Bearer rk_live_[REDACTED]");
        assert_eq!(m("pk_test_ABCDEFGHIJ"), "pk_test_[REDACTED]");
        assert_eq!(m("sk_admin_0123456789abcdef"), "sk_admin_[REDACTED]");
        assert_eq!(
            m("\"whsec_dGhpcyBpcyBhIHNlY3JldA==\""),
            "\"whsec_[REDACTED]\""
        );
        assert_eq!(m("sk_abcdefgh"), "sk_[REDACTED]");
        // A client secret: the session id stays, the secret goes.
        let cs = "cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6_secret_Zm9vYmFyYmF6cXV4LWJs_c2";
        assert_eq!(
            m(&format!("{{\"client_secret\":\"{cs}\"}}")),
            "{\"client_secret\":\"cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6_secret_[REDACTED]\"}"
        );
        // A session id alone is no secret.
        assert_eq!(
            m("cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6"),
            "cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6"
        );
        // A key's display prefix, and words that merely contain the letters.
        for s in [
            "sk_test_4f3a",
            "prefix=pk_live_ab12",
            "task_sk_12345678",
            "disk_rk_abcdefghij",
        ] {
            assert_eq!(m(s), s);
        }
    }

    #[test]
    fn the_writer_masks_what_passes_through() {
        let mut w = Guarded(Vec::new());
        write!(w, "a 5555 5555 5555 4444 b sk_live_0123456789").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            format!("a {PAN_MASK} b sk_live_[REDACTED]")
        );
    }

    #[test]
    fn panic_messages_are_masked() {
        let prev = std::panic::take_hook();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let s2 = seen.clone();
        std::panic::set_hook(Box::new(move |info| {
            *s2.lock().unwrap() = mask_str(&panic_text(info));
        }));
        let r = std::panic::catch_unwind(|| {
            std::panic::panic_any(String::from(
                "bad card 4111111111111111 with sk_test_abcdefghijkl",
            ))
        });
        std::panic::set_hook(prev);
        assert!(r.is_err());
        let msg = seen.lock().unwrap().clone();
        assert!(
            msg.starts_with(&format!("bad card {PAN_MASK} with sk_test_[REDACTED] at ")),
            "{msg}"
        );
    }

    #[test]
    fn twelve_digit_pans_jwts_and_otp_codes_are_masked() {
        // A Luhn-valid 12-digit (Maestro-length) number, plain and spaced.
        assert_eq!(m("n=424242424242 x"), "n=[REDACTED-PAN] x");
        assert_eq!(m("n=4242 4242 4242"), "n=[REDACTED-PAN]");
        assert_eq!(m("n=424242424241"), "n=424242424241"); // not Luhn-valid
        // A bearer JWT, in a header and bare; its signature may be empty.
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJrZXlfMSJ9.c2lnbmF0dXJlLXNpZw";
        assert_eq!(m(&format!("Bearer {jwt} end")), "Bearer [REDACTED-JWT] end");
        assert_eq!(
            m("t=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. z"),
            "t=[REDACTED-JWT] z"
        );
        assert_eq!(m("eyJhbGciOi without dots"), "eyJhbGciOi without dots");
        // OTP codes as the value of `code` / `test_code`, plain or escaped JSON.
        assert_eq!(
            m(r#"{"code":"123456","n":1}"#),
            r#"{"code":"[REDACTED-OTP]","n":1}"#
        );
        assert_eq!(
            m(r#"{"test_code": "654321"}"#),
            r#"{"test_code": "[REDACTED-OTP]"}"#
        );
        assert_eq!(
            m(r#"{"body":"{\"code\":\"123456\"}"}"#),
            r#"{"body":"{\"code\":\"[REDACTED-OTP]\"}"}"#
        );
        // Other 6-digit numbers stay: not a code's value, another key, not 6 digits.
        // CVCs as the value of `cvc` and its other names.
        assert_eq!(
            m(r#"{"cvc":"737","cvv": "7319","n":1}"#),
            r#"{"cvc":"[REDACTED-CVC]","cvv": "[REDACTED-CVC]","n":1}"#
        );
        assert_eq!(
            m(r#"{"body":"{\"csc\":\"123\",\"cvc2\":\"0123\"}"}"#),
            r#"{"body":"{\"csc\":\"[REDACTED-CVC]\",\"cvc2\":\"[REDACTED-CVC]\"}"}"#
        );
        for keep in [
            r#"{"cvc":"12345"}"#,
            r#"{"cvc":"12"}"#,
            r#"{"cvc_available":true}"#,
            r#"{"xcvc":"737"}"#,
            r#"{"cvc_result":"737"}"#,
            r#"{"code":"737"}"#,
            r#"{"cvc":"123456"}"#,
            r#"{"latency_us":"123456"}"#,
            r#"{"zipcode":"123456"}"#,
            r#"{"code":"1234567"}"#,
            r#"{"code":123456}"#,
            r#"{"code":"otp_invalid"}"#,
            "took 123456 us",
        ] {
            assert_eq!(m(keep), keep);
        }
    }
}
