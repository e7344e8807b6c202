//! Cleaning a processor's response of card data before the merchant sees it.

use std::ops::Range;

use zeroize::Zeroizing;

use super::Escape;
use super::escape::{push_escaped, push_json};
use super::json::Lexer;

/// How to treat the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (or `+json`): a mask or removal outside a string literal
    /// becomes a string (`"XXXX4242"`, `""`) so that a number field stays valid JSON.
    Json,
    /// Anything else: bytes are replaced where they are.
    Other,
}

/// A value to replace by a token: `range` from a [`super::PanField`], `token` what the
/// server stored its card as. The value becomes the JSON string `"<token>"`.
#[derive(Debug, Clone)]
pub struct Tokenized<'a> {
    /// The bytes of the body to replace.
    pub range: Range<usize>,
    /// The token to put there.
    pub token: &'a str,
}

/// Secrets shorter than this are not searched for: too short to tell from other text,
/// and no value the relay substitutes (a CVC has 3 or 4 digits) is so short.
const MIN_SECRET: usize = 3;
/// Secrets shorter than this (which could not be card numbers: a CVC) are removed only
/// where no digit touches them; longer ones (a card number) wherever they appear.
const BOUNDED_BELOW: usize = 13;
/// Card numbers have 13 to 19 digits.
const PAN_MIN: usize = 13;
const PAN_MAX: usize = 19;

/// Cleans a processor's response so that no card number and no substituted value
/// reaches the caller. In order:
///
/// 1. Each `tokenized` range (sorted, not overlapping; others are ignored) becomes its
///    token as a JSON string.
/// 2. Each of `secrets` (pass every card number and CVC the request carried) is
///    removed wherever it appears raw or escaped for JSON, XML or a form. One shorter
///    than 13 bytes (a CVC) is removed only where it is not preceded or followed by
///    an ASCII digit: `123` is not cut out of `1234` or an amount (one standing alone
///    cannot be told from the CVC and goes); the template refuses a CVC that touches a
///    digit, so an echoed CVC always stands alone. Secrets shorter
///    than 3 bytes are ignored. Expiry dates and names are not secrets here: removing
///    every `12` would ruin the response.
/// 3. Every Luhn-valid run of 13–19 digits becomes `XXXX` and its last four digits, as
///    [`crate::Pan::masked`] shows a card. Digits may be grouped by single spaces or
///    single hyphens (`4242 4242 4242 4242`, `4242-4242-4242-4242`, `378282 246310005`);
///    any other byte, or two separators, ends a run. A group of more than 19 digits is
///    never a card number (an id, a nonce) and is never partly masked. Within a run of
///    groups, every Luhn-valid stretch of whole groups with 13–19 digits is masked, so
///    a card number printed beside other numbers (`qty 2 4242 4242 4242 4242 12/27`) is
///    still found; overlapping stretches become one mask, stretches that merely meet
///    stay two. Tokens written in step 1 are left alone.
///
/// Linear in the body's length (each position starts at most 19 digits of Luhn work
/// and is compared with the secrets whose first byte it matches).
pub fn scrub(
    body: &[u8],
    kind: BodyKind,
    secrets: &[&[u8]],
    tokenized: &[Tokenized<'_>],
) -> Vec<u8> {
    let (mid, tokens) = remove(body, kind, secrets, tokenized);
    mask(&mid, kind, &tokens)
}

struct Needle {
    bytes: Zeroizing<Vec<u8>>,
    /// Must not touch a digit.
    bounded: bool,
}

/// Every form in which `secret` may come back.
fn needles(secrets: &[&[u8]]) -> Vec<Needle> {
    let mut out: Vec<Needle> = Vec::new();
    for secret in secrets {
        let mut forms = vec![Zeroizing::new(secret.to_vec())];
        // Letters and digits read the same in every escaping: skip the work (and the
        // allocations) for card numbers and CVCs.
        let plain = secret.iter().all(u8::is_ascii_alphanumeric);
        if let Ok(s) = std::str::from_utf8(secret)
            && !plain
        {
            let mut json = Zeroizing::new(String::with_capacity(s.len() * 6));
            push_json(&mut json, s);
            forms.push(Zeroizing::new(json.as_bytes().to_vec()));
            for e in [Escape::Xml, Escape::Form] {
                let mut esc = Zeroizing::new(String::with_capacity(s.len() * 6));
                if push_escaped(&mut esc, s, e).is_ok() {
                    forms.push(Zeroizing::new(esc.as_bytes().to_vec()));
                }
            }
        }
        for bytes in forms {
            if bytes.len() >= MIN_SECRET && !out.iter().any(|n| n.bytes == bytes) {
                let bounded = bytes.len() < BOUNDED_BELOW;
                out.push(Needle { bytes, bounded });
            }
        }
    }
    // At one position the longest match wins.
    out.sort_by_key(|n| std::cmp::Reverse(n.bytes.len()));
    out
}

/// Steps 1 and 2. Returns the intermediate body (which may still hold card numbers,
/// hence zeroizing) and where the tokens lie in it.
fn remove(
    body: &[u8],
    kind: BodyKind,
    secrets: &[&[u8]],
    tokenized: &[Tokenized<'_>],
) -> (Zeroizing<Vec<u8>>, Vec<Range<usize>>) {
    let needles = needles(secrets);
    let mut first = [false; 256];
    for n in &needles {
        if let Some(slot) = n.bytes.first().and_then(|&b| first.get_mut(usize::from(b))) {
            *slot = true;
        }
    }
    // Keep only well-ordered replacements inside the body.
    let mut reps: Vec<&Tokenized<'_>> = Vec::with_capacity(tokenized.len());
    let mut end = 0;
    for t in tokenized {
        if t.range.start >= end && t.range.start < t.range.end && t.range.end <= body.len() {
            end = t.range.end;
            reps.push(t);
        }
    }
    // Removals only shrink the body (a removal of 3+ bytes leaves at most `""`); a token
    // may be longer than what it replaces. Sized once: no stray copies on growth.
    let cap = body.len() + reps.iter().map(|t| t.token.len() * 6 + 2).sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(cap));
    let mut tokens = Vec::with_capacity(reps.len());
    let mut reps = reps.into_iter().peekable();
    // Whether a removal is inside a JSON string: the lexer catches up only when asked.
    let mut lexer = Lexer::default();
    let mut lexed = 0;
    let json = kind == BodyKind::Json;
    let mut i = 0;
    loop {
        let next_rep = reps.peek().map_or(body.len(), |t| t.range.start);
        // Copy up to the next byte that may begin a secret, or the next replacement.
        let stretch = body.get(i..next_rep).unwrap_or_default();
        let plain = stretch
            .iter()
            .position(|&b| first.get(usize::from(b)).copied().unwrap_or(false))
            .unwrap_or(stretch.len());
        out.extend_from_slice(stretch.get(..plain).unwrap_or_default());
        i += plain;
        if i >= body.len() {
            break;
        }
        if i == next_rep
            && let Some(t) = reps.next()
        {
            let start = out.len();
            let mut s = Zeroizing::new(String::with_capacity(t.token.len() * 6 + 2));
            s.push('"');
            push_json(&mut s, t.token);
            s.push('"');
            out.extend_from_slice(s.as_bytes());
            tokens.push(start..out.len());
            if json {
                lexer.feed_all(body.get(lexed..t.range.end).unwrap_or_default());
                lexed = t.range.end;
            }
            i = t.range.end;
            continue;
        }
        if let Some(n) = needles.iter().find(|n| matches_at(body, i, n, next_rep)) {
            if json {
                lexer.feed_all(body.get(lexed..i).unwrap_or_default());
                if !lexer.in_string_text() {
                    out.extend_from_slice(b"\"\"");
                }
                lexer.feed_all(&n.bytes);
                lexed = i + n.bytes.len();
            }
            i += n.bytes.len();
            continue;
        }
        out.extend_from_slice(body.get(i..=i).unwrap_or_default());
        i += 1;
    }
    (out, tokens)
}

fn matches_at(body: &[u8], i: usize, n: &Needle, limit: usize) -> bool {
    let end = i + n.bytes.len();
    if end > limit || body.get(i..end) != Some(&n.bytes[..]) {
        return false;
    }
    if !n.bounded {
        return true;
    }
    let digit_at = |j: Option<usize>| j.and_then(|j| body.get(j)).is_some_and(u8::is_ascii_digit);
    let starts_digit = n.bytes.first().is_some_and(u8::is_ascii_digit);
    let ends_digit = n.bytes.last().is_some_and(u8::is_ascii_digit);
    !(starts_digit && digit_at(i.checked_sub(1)) || ends_digit && digit_at(Some(end)))
}

/// A run of digits.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
}

/// Step 3.
fn mask(mid: &[u8], kind: BodyKind, tokens: &[Range<usize>]) -> Vec<u8> {
    let spans = pan_spans(mid, tokens);
    let mut out = Vec::with_capacity(mid.len());
    let mut lexer = Lexer::default();
    let mut at = 0;
    for span in spans {
        let before = mid.get(at..span.start).unwrap_or_default();
        out.extend_from_slice(before);
        let digits = mid.get(span.clone()).unwrap_or_default();
        let quote = kind == BodyKind::Json && {
            lexer.feed_all(before);
            let outside = !lexer.in_string_text();
            lexer.feed_all(digits);
            outside
        };
        let mut last4 = [b'0'; 4];
        let mut k = 4;
        for &d in digits.iter().rev().filter(|d| d.is_ascii_digit()) {
            k -= 1;
            if let Some(slot) = last4.get_mut(k) {
                *slot = d;
            }
            if k == 0 {
                break;
            }
        }
        if quote {
            out.push(b'"');
        }
        out.extend_from_slice(b"XXXX");
        out.extend_from_slice(&last4);
        if quote {
            out.push(b'"');
        }
        at = span.end;
    }
    out.extend_from_slice(mid.get(at..).unwrap_or_default());
    out
}

/// The byte ranges of `mid` to mask, in order, not overlapping.
fn pan_spans(mid: &[u8], tokens: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut run: Vec<Group> = Vec::new();
    let mut tokens = tokens.iter();
    let mut next_token = tokens.next();
    let mut i = 0;
    while i < mid.len() {
        let limit = next_token.map_or(mid.len(), |t| t.start).max(i);
        let rest = mid.get(i..limit).unwrap_or_default();
        let Some(p) = rest.iter().position(u8::is_ascii_digit) else {
            // At a token (opaque: it ends a run and is never masked) or the end.
            close_run(mid, &mut run, &mut spans);
            let Some(t) = next_token else { break };
            i = t.end.max(limit);
            next_token = tokens.next();
            continue;
        };
        let start = i + p;
        let digits = rest.get(p..).unwrap_or_default();
        i = start + digits.iter().take_while(|b| b.is_ascii_digit()).count();
        let g = Group { start, end: i };
        let joined = run.last().is_some_and(|last| {
            last.end + 1 == start && matches!(mid.get(last.end), Some(b' ' | b'-'))
        });
        if !joined {
            close_run(mid, &mut run, &mut spans);
        }
        if g.end - g.start > PAN_MAX {
            // Not a card number, and it ends the run.
            close_run(mid, &mut run, &mut spans);
        } else {
            run.push(g);
        }
    }
    close_run(mid, &mut run, &mut spans);
    spans
}

/// Masks every Luhn-valid stretch of whole groups of 13–19 digits in `run`, merging
/// stretches that share a group, and empties `run`.
fn close_run(mid: &[u8], run: &mut Vec<Group>, spans: &mut Vec<Range<usize>>) {
    // Most runs are an amount, a year or a short id: too few digits to hold a card.
    if run.iter().map(|g| g.end - g.start).sum::<usize>() < PAN_MIN {
        run.clear();
        return;
    }
    let mut cur: Option<(usize, usize)> = None;
    for i in 0..run.len() {
        // Luhn sums of the digits so far, read from the left, doubling the odd places
        // (`odd`) or the even ones (`even`): which applies depends on the final length.
        let (mut odd, mut even, mut n) = (0u32, 0u32, 0usize);
        let mut best = None;
        for (j, g) in run.iter().enumerate().skip(i) {
            for &d in mid.get(g.start..g.end).unwrap_or_default() {
                let v = u32::from(d - b'0');
                let dbl = if v > 4 { v * 2 - 9 } else { v * 2 };
                if n % 2 == 0 {
                    odd += v;
                    even += dbl;
                } else {
                    odd += dbl;
                    even += v;
                }
                n += 1;
            }
            if n > PAN_MAX {
                break;
            }
            // The rightmost digit is never doubled: with an even length the first one is.
            let sum = if n % 2 == 0 { even } else { odd };
            if n >= PAN_MIN && sum % 10 == 0 {
                best = Some(j);
            }
        }
        if let Some(j) = best {
            cur = match cur {
                Some((s, e)) if i <= e => Some((s, e.max(j))),
                other => {
                    push_span(run, other, spans);
                    Some((i, j))
                }
            };
        }
    }
    push_span(run, cur, spans);
    run.clear();
}

fn push_span(run: &[Group], groups: Option<(usize, usize)>, spans: &mut Vec<Range<usize>>) {
    if let Some((s, e)) = groups
        && let (Some(first), Some(last)) = (run.get(s), run.get(e))
    {
        spans.push(first.start..last.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pan::{TEST_CARDS, luhn_valid};
    use crate::relay::testkit::Rng;
    use crate::relay::{JsonPointer, find_json_pans};

    fn s(body: &str, kind: BodyKind, secrets: &[&str]) -> String {
        let secrets: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
        String::from_utf8(scrub(body.as_bytes(), kind, &secrets, &[])).unwrap()
    }

    fn other(body: &str) -> String {
        s(body, BodyKind::Other, &[])
    }

    #[test]
    fn card_numbers_are_masked_in_any_single_spacing() {
        for (body, want) in [
            ("4242424242424242", "XXXX4242"),
            ("pan=4242 4242 4242 4242&x=1", "pan=XXXX4242&x=1"),
            ("<pan>4242-4242-4242-4242</pan>", "<pan>XXXX4242</pan>"),
            ("3782 822463 10005.", "XXXX0005."),
            ("4 2 4 2 4 2 4 2 4 2 4 2 4 2 4 2", "XXXX4242"),
            ("4222222222222", "XXXX2222"),
            ("6205500000000000004", "XXXX0004"),
            ("card4242424242424242x", "cardXXXX4242x"),
            (
                "a 4242424242424242 5555555555554444 b",
                "a XXXX4242 XXXX4444 b",
            ),
            ("4242424242424242-5555555555554444", "XXXX4242-XXXX4444"),
        ] {
            assert_eq!(other(body), want, "{body}");
        }
    }

    #[test]
    fn non_card_numbers_are_left_alone() {
        for body in [
            "4242424242424241",                  // Luhn fails
            "424242424242",                      // 12 digits
            "42424242424242424242",              // 20 digits: not a card number
            "order 700000424242424242424242 ok", // a 16-digit PAN inside a 24-digit id
            "4242  4242 4242 4242",              // two spaces end a run: 4 + 12 digits
            "4242 4242 4242\t4242",              // so does a tab
            "4242.4242.4242.4242",
            "2026-12-05 12:00:01",
            r#"{"amount":1099,"created":1733400000123}"#,
        ] {
            assert_eq!(other(body), body, "{body}");
        }
        // A 20-digit group beside a card number ends the run and is not touched.
        assert_eq!(
            other("12345678901234567890 4242 4242 4242 4242"),
            "12345678901234567890 XXXX4242"
        );
    }

    #[test]
    fn a_card_number_beside_other_numbers_is_still_found() {
        let body = "qty 2 4242 4242 4242 4242 12 2027";
        let out = other(body);
        assert!(!stripped(&out).contains("4242424242424242"), "{out}");
        assert!(out.contains("XXXX"), "{out}");
        assert!(out.starts_with("qty ") && out.ends_with(" 2027"), "{out}");
    }

    #[test]
    fn json_masks_stay_valid_json() {
        let body =
            r#"{"pan":4242424242424242,"s":"card 4242 4242 4242 4242!","n":[5555555555554444, 1]}"#;
        let out = s(body, BodyKind::Json, &[]);
        assert_eq!(
            out,
            r#"{"pan":"XXXX4242","s":"card XXXX4242!","n":["XXXX4444", 1]}"#
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        // The same body, not declared JSON, is masked in place.
        assert!(other(body).starts_with(r#"{"pan":XXXX4242,"#));
    }

    #[test]
    fn secrets_are_removed_where_they_stand_alone() {
        let body = r#"{"cvc":"123","amount":1234,"id":"x9123","echo":"cvc=123&x","c2":123}"#;
        let out = s(body, BodyKind::Json, &["123"]);
        assert_eq!(
            out,
            r#"{"cvc":"","amount":1234,"id":"x9123","echo":"cvc=&x","c2":""}"#
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        // Letters do not protect: `cvv123` is the CVC.
        assert_eq!(s("cvv123;", BodyKind::Other, &["123"]), "cvv;");
        // Too short to search for.
        assert_eq!(s("a 12 b", BodyKind::Other, &["12"]), "a 12 b");
    }

    #[test]
    fn escaped_forms_of_secrets_are_removed() {
        let name = "Zoë \"Q\" O'Brien & Co";
        let json = r#"{"name":"Zoë \"Q\" O'Brien & Co"}"#;
        assert_eq!(s(json, BodyKind::Json, &[name]), r#"{"name":""}"#);
        let xml = "<n>Zoë &quot;Q&quot; O&apos;Brien &amp; Co</n>";
        assert_eq!(s(xml, BodyKind::Other, &[name]), "<n></n>");
        let form = "n=Zo%C3%AB+%22Q%22+O%27Brien+%26+Co&x=1";
        assert_eq!(s(form, BodyKind::Other, &[name]), "n=&x=1");
        let raw = "name: Zoë \"Q\" O'Brien & Co.";
        assert_eq!(s(raw, BodyKind::Other, &[name]), "name: .");
    }

    #[test]
    fn a_substituted_card_number_is_removed_even_when_glued_to_digits() {
        // An echo of `{{number}}` right after literal digits: no run boundary, so only
        // the exact value finds it.
        let pan = "4242424242424242";
        let out = s("ref 9974242424242424242 end", BodyKind::Other, &[pan]);
        assert_eq!(out, "ref 997 end");
        // And in the adversarial order number-then-cvc, both go.
        assert_eq!(
            s("x4242424242424242 123x", BodyKind::Other, &[pan, "123"]),
            "x x"
        );
    }

    #[test]
    fn tokenized_fields_get_their_tokens_and_the_rest_is_masked() {
        let body = r#"{"card":{"number":"4242 4242 4242 4242","cvc":"123"},"echo":"4242424242424242","n":5555555555554444}"#;
        let ptrs = [
            JsonPointer::parse("/card/number").unwrap(),
            JsonPointer::parse("/n").unwrap(),
        ];
        let hits = find_json_pans(body.as_bytes(), &ptrs);
        assert_eq!(hits.len(), 2);
        // A token that looks like a card number is still not masked.
        let tokens = [
            "card_0192f3a4b5c67d8e9f00112233445566",
            "tok_4242424242424242",
        ];
        let reps: Vec<Tokenized<'_>> = hits
            .iter()
            .zip(tokens)
            .map(|(h, token)| Tokenized {
                range: h.range.clone(),
                token,
            })
            .collect();
        let out = scrub(
            body.as_bytes(),
            BodyKind::Json,
            &[b"4242424242424242", b"123"],
            &reps,
        );
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            r#"{"card":{"number":"card_0192f3a4b5c67d8e9f00112233445566","cvc":""},"echo":"","n":"tok_4242424242424242"}"#
        );
        // Without the number among the secrets the echo is masked instead.
        let out = scrub(body.as_bytes(), BodyKind::Json, &[], &reps);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains(r#""echo":"XXXX4242""#)
        );
    }

    #[test]
    fn bad_replacements_are_ignored_not_trusted() {
        let body = b"4242424242424242 and 5555555555554444";
        for range in [Range { start: 5, end: 2 }, 0..100, 3..3] {
            let reps = [Tokenized { range, token: "t" }];
            let out = scrub(body, BodyKind::Other, &[], &reps);
            assert_eq!(out, b"XXXX4242 and XXXX4444");
        }
        // Overlapping: the second is dropped; the first still applies.
        let reps = [
            Tokenized {
                range: 0..16,
                token: "a",
            },
            Tokenized {
                range: 10..20,
                token: "b",
            },
        ];
        let out = scrub(body, BodyKind::Other, &[], &reps);
        assert_eq!(out, b"\"a\" and XXXX4444");
    }

    #[test]
    fn masks_read_like_pan_masked() {
        let pan = crate::Pan::parse("378282246310005").unwrap();
        assert_eq!(other("378282246310005"), pan.masked());
    }

    fn stripped(s: &str) -> String {
        s.chars().filter(|c| *c != ' ' && *c != '-').collect()
    }

    #[test]
    fn property_masked_iff_luhn_valid_13_to_19_digits() {
        let mut rng = Rng(7);
        for _ in 0..50_000 {
            let len = 10 + rng.below(12);
            let digits: String = (0..len)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            let out = other(&format!("<{digits}>"));
            let card = (13..=19).contains(&len) && luhn_valid(digits.as_bytes());
            if card {
                assert_eq!(out, format!("<XXXX{}>", &digits[len - 4..]));
            } else {
                assert_eq!(out, format!("<{digits}>"));
            }
        }
    }

    #[test]
    fn property_no_card_number_survives_in_any_spacing() {
        let mut rng = Rng(42);
        let filler = [
            "a", "\"", ":", ",", "{", "}", " ", "-", "1", "23", "x 7 ", "é", "\n", "cvc", "\\",
        ];
        let mut cards: Vec<&str> = TEST_CARDS.to_vec();
        cards.push("4000000000000002");
        for round in 0..20_000 {
            let pan = rng.pick(&cards);
            // The card number in random groups, joined by a space or a hyphen.
            let mut shown = String::new();
            for (i, d) in pan.chars().enumerate() {
                if i > 0 && rng.below(4) == 0 {
                    shown.push(rng.pick(&[' ', '-']));
                }
                shown.push(d);
            }
            let mut body = String::new();
            for _ in 0..rng.below(6) {
                body.push_str(rng.pick(&filler));
            }
            // A non-digit, non-separator on each side (otherwise the digits beside it
            // would be part of the number).
            body.push_str(rng.pick(&["\"", "=", "x", ">", ":"]));
            body.push_str(&shown);
            body.push_str(rng.pick(&["\"", "&", "x", "<", ","]));
            for _ in 0..rng.below(6) {
                body.push_str(rng.pick(&filler));
            }
            let kind = if round % 2 == 0 {
                BodyKind::Json
            } else {
                BodyKind::Other
            };
            let out = String::from_utf8(scrub(body.as_bytes(), kind, &[b"123"], &[])).unwrap();
            assert!(!stripped(&out).contains(pan), "{body:?} -> {out:?}");
            assert!(out.len() <= body.len() + 2, "{body:?} -> {out:?}");
        }
    }

    #[test]
    fn property_arbitrary_bytes_never_panic() {
        let mut rng = Rng(99);
        let alphabet = b"0123456789 -\"\\{}[]:,x\xc3\xa9\x00";
        for _ in 0..20_000 {
            let body: Vec<u8> = (0..rng.below(64)).map(|_| rng.pick(alphabet)).collect();
            let reps = [Tokenized {
                range: rng.below(70)..rng.below(70),
                token: "t\"",
            }];
            for kind in [BodyKind::Json, BodyKind::Other] {
                let _ = scrub(&body, kind, &[b"12\"3", b"4242424242424242", b"99"], &reps);
            }
        }
    }

    #[test]
    fn worst_case_bodies_finish() {
        // Single-digit groups are the most Luhn work per byte; not a timed test, but a
        // quadratic scrub would not finish here.
        let body = "1 ".repeat(500_000);
        assert!(!scrub(body.as_bytes(), BodyKind::Other, &[b"111"], &[]).is_empty());
        let body = "1".repeat(1_000_000);
        let out = scrub(body.as_bytes(), BodyKind::Other, &[b"1111111111111"], &[]);
        assert!(out == b"1", "1,000,000 = 13 * 76,923 + 1");
    }
}
