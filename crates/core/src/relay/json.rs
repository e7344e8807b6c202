//! Just enough JSON for the relay, without building a document tree: whether a byte
//! sits inside a string, and where the values that JSON pointers name lie in a body, so
//! that the server can tokenize those card numbers in place, leaving every other byte of
//! the processor's response as it was (key order, number formatting, whitespace).

use std::ops::Range;

use zeroize::Zeroizing;

use super::RelayError;
use crate::Pan;

/// Tracks whether the bytes fed so far leave us inside a JSON string literal.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lexer {
    in_string: bool,
    escaped: bool,
}

impl Lexer {
    /// One byte at a time: the reference for [`Lexer::feed_all`].
    #[cfg(test)]
    fn feed(&mut self, b: u8) {
        if self.escaped {
            self.escaped = false;
        } else if self.in_string && b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_string = !self.in_string;
        }
    }

    /// Feeds `bytes`: a `"` opens or closes a string, a `\` in a string escapes the
    /// next byte. Skips quickly to the bytes that matter.
    pub(crate) fn feed_all(&mut self, mut bytes: &[u8]) {
        loop {
            if self.escaped {
                let Some((_, rest)) = bytes.split_first() else {
                    return;
                };
                self.escaped = false;
                bytes = rest;
            }
            let next = if self.in_string {
                bytes.iter().position(|&b| b == b'"' || b == b'\\')
            } else {
                bytes.iter().position(|&b| b == b'"')
            };
            let Some(p) = next else { return };
            if bytes.get(p) == Some(&b'\\') {
                self.escaped = true;
            } else {
                self.in_string = !self.in_string;
            }
            bytes = bytes.get(p + 1..).unwrap_or_default();
        }
    }

    /// Inside a string, and not right after a backslash.
    pub(crate) fn in_string_text(self) -> bool {
        self.in_string && !self.escaped
    }
}

/// The longest pointer accepted, in bytes, and the most reference tokens in one.
const MAX_POINTER: usize = 256;
const MAX_TOKENS: usize = 32;
/// Deeper documents are not searched (they are still scrubbed).
const MAX_DEPTH: usize = 256;

/// An RFC 6901 JSON pointer, such as `/card/number` or `/sources/0/pan`, naming a
/// response field whose card number is to be tokenized rather than masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// The member name, with `~1` and `~0` decoded.
    name: String,
    /// The array index this token also names, if it is one (`0`, `12`; not `01`).
    index: Option<usize>,
}

impl JsonPointer {
    /// Parses a pointer: empty (the whole document) or `/`-separated tokens with `~0`
    /// for `~` and `~1` for `/`. At most 256 bytes and 32 tokens. The error
    /// ([`RelayError::PointerInvalid`]) does not echo the input.
    pub fn parse(s: &str) -> Result<Self, RelayError> {
        if s.len() > MAX_POINTER {
            return Err(RelayError::PointerInvalid);
        }
        let Some(rest) = s.strip_prefix('/') else {
            return if s.is_empty() {
                Ok(Self { tokens: Vec::new() })
            } else {
                Err(RelayError::PointerInvalid)
            };
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut name = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    name.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => name.push('~'),
                    Some('1') => name.push('/'),
                    _ => return Err(RelayError::PointerInvalid),
                }
            }
            let decimal = name.bytes().all(|b| b.is_ascii_digit());
            let index = (decimal && (name == "0" || !name.starts_with('0')))
                .then(|| name.parse::<usize>().ok())
                .flatten();
            tokens.push(Token { name, index });
        }
        if tokens.len() > MAX_TOKENS {
            return Err(RelayError::PointerInvalid);
        }
        Ok(Self { tokens })
    }
}

/// A card number found at a field a [`JsonPointer`] names.
#[derive(Debug)]
pub struct PanField {
    /// The whole JSON value in the body, quotes included: the bytes that
    /// [`super::Tokenized`] replaces with a JSON string holding the token.
    pub range: Range<usize>,
    /// The card number, to tokenize.
    pub pan: Pan,
}

/// Finds, in a JSON body, the string (or integer) values at `pointers` that hold a card
/// number [`Pan::parse`] accepts, in body order. A value that is no card number, an
/// object or an array is not returned (scrubbing masks any PAN in it as usual); nor is
/// anything in a body that is not one well-formed JSON document, which is then masked.
/// Linear in the body's length times the pointers' total length.
pub fn find_json_pans(body: &[u8], pointers: &[JsonPointer]) -> Vec<PanField> {
    if pointers.is_empty() {
        return Vec::new();
    }
    let mut hits = Vec::new();
    let walked = Walker { b: body, i: 0 }.walk(pointers, |_, range, text| {
        if let Ok(pan) = Pan::parse(text) {
            hits.push(PanField { range, pan });
        }
    });
    if walked.is_some() { hits } else { Vec::new() }
}

/// A scalar value found at a field a [`JsonPointer`] names.
#[derive(Debug)]
pub struct JsonField {
    /// Which of the pointers named it (its index; the first if several did).
    pub pointer: usize,
    /// The whole JSON value in the body, quotes included.
    pub range: Range<usize>,
    /// A string's contents, unescaped, or an integer's digits, in a zeroizing buffer
    /// (it may be a card number).
    pub text: Zeroizing<String>,
}

/// Finds, in a JSON body, the string and integer values at `pointers`, in body order.
/// Objects, arrays, `true`, `false`, `null` and non-integer numbers are not returned.
/// `None` when the body is not one well-formed JSON document (nothing can be said to
/// be at a pointer). Linear as [`find_json_pans`].
pub fn find_json_fields(body: &[u8], pointers: &[JsonPointer]) -> Option<Vec<JsonField>> {
    let mut hits = Vec::new();
    Walker { b: body, i: 0 }.walk(pointers, |pointer, range, text| {
        hits.push(JsonField {
            pointer,
            range,
            text: Zeroizing::new(text.to_owned()),
        });
    })?;
    Some(hits)
}

/// One open container: an object with its current member name, or an array with its
/// current index.
enum Frame {
    Object { key: Range<usize>, escaped: bool },
    Array { index: usize },
}

struct Walker<'b> {
    b: &'b [u8],
    i: usize,
}

impl Walker<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// Scans a string literal at `self.i`; returns its contents' range and whether it
    /// holds an escape.
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some((start..self.i - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    fn key(&mut self) -> Option<Frame> {
        self.skip_ws();
        let (key, escaped) = self.string()?;
        self.skip_ws();
        self.eat(b':')?;
        Some(Frame::Object { key, escaped })
    }

    /// Walks the document, calling `found(pointer index, value range, text)` for each
    /// string or integer at a pointer. `None`: not one well-formed document.
    fn walk<F: FnMut(usize, Range<usize>, &str)>(
        mut self,
        pointers: &[JsonPointer],
        mut found: F,
    ) -> Option<()> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            // A value.
            self.skip_ws();
            if stack.len() > MAX_DEPTH {
                return None;
            }
            let start = self.i;
            match self.peek()? {
                b'{' => {
                    self.i += 1;
                    self.skip_ws();
                    if self.eat(b'}').is_none() {
                        stack.push(self.key()?);
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.skip_ws();
                    if self.eat(b']').is_none() {
                        stack.push(Frame::Array { index: 0 });
                        continue;
                    }
                }
                b'"' => {
                    let (inner, escaped) = self.string()?;
                    if let Some(p) = self.named(&stack, pointers) {
                        let text = self.text(inner, escaped)?;
                        found(p, start..self.i, &text);
                    }
                }
                b'-' | b'0'..=b'9' => {
                    while matches!(
                        self.peek(),
                        Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                    ) {
                        self.i += 1;
                    }
                    let digits = self.b.get(start..self.i)?;
                    if digits.iter().all(u8::is_ascii_digit)
                        && let Some(p) = self.named(&stack, pointers)
                    {
                        let text = std::str::from_utf8(digits).ok()?;
                        found(p, start..self.i, text);
                    }
                }
                b't' | b'f' | b'n' => {
                    let word: &[u8] = match self.peek()? {
                        b't' => b"true",
                        b'f' => b"false",
                        _ => b"null",
                    };
                    if !self.b.get(self.i..)?.starts_with(word) {
                        return None;
                    }
                    self.i += word.len();
                }
                _ => return None,
            }
            // After a value: close containers until the next value.
            loop {
                self.skip_ws();
                match stack.last_mut() {
                    None => return (self.i == self.b.len()).then_some(()),
                    Some(Frame::Object { .. }) => match self.peek()? {
                        b',' => {
                            self.i += 1;
                            let next = self.key()?;
                            if let Some(top) = stack.last_mut() {
                                *top = next;
                            }
                            break;
                        }
                        b'}' => {
                            self.i += 1;
                            stack.pop();
                        }
                        _ => return None,
                    },
                    Some(Frame::Array { index }) => match self.peek()? {
                        b',' => {
                            self.i += 1;
                            *index += 1;
                            break;
                        }
                        b']' => {
                            self.i += 1;
                            stack.pop();
                        }
                        _ => return None,
                    },
                }
            }
        }
    }

    /// Which of `pointers` (the first) the current path is, if any.
    fn named(&self, stack: &[Frame], pointers: &[JsonPointer]) -> Option<usize> {
        pointers.iter().position(|p| {
            p.tokens.len() == stack.len()
                && p.tokens.iter().zip(stack).all(|(t, f)| match f {
                    Frame::Array { index } => t.index == Some(*index),
                    Frame::Object {
                        key,
                        escaped: false,
                    } => self.b.get(key.clone()) == Some(t.name.as_bytes()),
                    Frame::Object { key, escaped: true } => self
                        .text(key.clone(), true)
                        .is_some_and(|k| k.as_str() == t.name),
                })
        })
    }

    /// A string literal's contents, unescaped, in a zeroizing buffer (it may be a PAN).
    fn text(&self, inner: Range<usize>, escaped: bool) -> Option<Zeroizing<String>> {
        let raw = self.b.get(inner)?;
        let mut out = Zeroizing::new(String::with_capacity(raw.len()));
        if !escaped {
            out.push_str(std::str::from_utf8(raw).ok()?);
            return Some(out);
        }
        let s = std::str::from_utf8(raw).ok()?;
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            out.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let hi = hex4(&mut chars)?;
                    if (0xd800..0xdc00).contains(&hi) {
                        if chars.next()? != '\\' || chars.next()? != 'u' {
                            return None;
                        }
                        let lo = hex4(&mut chars)?;
                        if !(0xdc00..0xe000).contains(&lo) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                    } else {
                        char::from_u32(hi)?
                    }
                }
                _ => return None,
            });
        }
        Some(out)
    }
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptrs(ps: &[&str]) -> Vec<JsonPointer> {
        ps.iter().map(|p| JsonPointer::parse(p).unwrap()).collect()
    }

    fn found(body: &str, ps: &[&str]) -> Vec<(String, String)> {
        find_json_pans(body.as_bytes(), &ptrs(ps))
            .into_iter()
            .map(|h| (body[h.range].to_string(), h.pan.expose_digits().to_string()))
            .collect()
    }

    #[test]
    fn fields_at_pointers_are_found_with_their_pointer() {
        let body = r#"{"card":{"number":"4242 4242 4242 4242","exp_month":3,"exp_year":"20\u00330","tags":[1,"x"],"ok":true,"amt":1.5}}"#;
        let ps = ptrs(&[
            "/card/exp_year",
            "/card/number",
            "/card/exp_month",
            "/card/tags/1",
            "/card/ok",
            "/card/amt",
            "/nope",
        ]);
        let got: Vec<(usize, String, String)> = find_json_fields(body.as_bytes(), &ps)
            .unwrap()
            .into_iter()
            .map(|f| (f.pointer, body[f.range].to_string(), f.text.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    1,
                    "\"4242 4242 4242 4242\"".to_string(),
                    "4242 4242 4242 4242".to_string()
                ),
                (2, "3".to_string(), "3".to_string()),
                (0, "\"20\\u00330\"".to_string(), "2030".to_string()),
                (3, "\"x\"".to_string(), "x".to_string()),
            ]
        );
        assert!(find_json_fields(b"{\"a\":", &ps).is_none());
        assert!(find_json_fields(b"[] []", &ps).is_none());
        assert_eq!(find_json_fields(b"{}", &[]).unwrap().len(), 0);
    }

    #[test]
    fn pointers_parse_per_rfc_6901() {
        assert_eq!(JsonPointer::parse("").unwrap().tokens.len(), 0);
        let p = JsonPointer::parse("/a~1b/m~0n/0/01/").unwrap();
        let names: Vec<_> = p.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a/b", "m~n", "0", "01", ""]);
        let idx: Vec<_> = p.tokens.iter().map(|t| t.index).collect();
        assert_eq!(idx, [None, None, Some(0), None, None]);
        for bad in [
            "zzz",
            "/zzz~",
            "/zzz~2",
            &format!("/{}", "z".repeat(300)),
            &"/zzz".repeat(33),
        ] {
            let err = JsonPointer::parse(bad).unwrap_err();
            assert_eq!(err.code(), "relay_pointer_invalid");
            assert!(!err.to_string().contains(bad));
        }
    }

    #[test]
    fn finds_named_pans_only() {
        let body = r#"{"card":{"number":"4242 4242 4242 4242","last4":"4242"},
            "other":{"number":"4111111111111111"},
            "list":[{"pan":5555555555554444},{"pan":"n/a"},{"pan":"4000056655665556"}],
            "t\u0061g":"378282246310005", "a/b":"6011111111111117", "bad":"4242424242424241"}"#;
        let got = found(
            body,
            &[
                "/card/number",
                "/list/0/pan",
                "/list/1/pan",
                "/list/2/pan",
                "/tag",
                "/a~1b",
                "/bad",
            ],
        );
        assert_eq!(
            got,
            vec![
                ("\"4242 4242 4242 4242\"".into(), "4242424242424242".into()),
                ("5555555555554444".into(), "5555555555554444".into()),
                ("\"4000056655665556\"".into(), "4000056655665556".into()),
                ("\"378282246310005\"".into(), "378282246310005".into()),
                ("\"6011111111111117\"".into(), "6011111111111117".into()),
            ]
        );
        // Escaped digits in the value are decoded.
        assert_eq!(found(r#"{"n":"\u0034242424242424242"}"#, &["/n"]).len(), 1);
        assert!(found(body, &[]).is_empty());
        assert!(
            found(body, &["/card"]).is_empty(),
            "objects are not values to tokenize"
        );
    }

    #[test]
    fn malformed_json_yields_nothing() {
        for bad in [
            r#"{"n":"4242424242424242""#,
            r#"{"n":"4242424242424242"} x"#,
            r#"{"n" "4242424242424242"}"#,
            r#"{"n":"4242424242424242",}"#,
            r#"["4242424242424242" "x"]"#,
            r#"{"n":tru}"#,
            "{\"n\":\"4242424242424242\u{1}\"}",
            r#"{"n\u12":"4242424242424242"}"#,
        ] {
            assert!(found(bad, &["/n", "/0"]).is_empty(), "{bad}");
        }
        assert!(found(&"[".repeat(10_000), &["/0"]).is_empty());
        assert_eq!(
            found(
                r#"["4242424242424242", true, false, null, -1.5e3]"#,
                &["/0"]
            )
            .len(),
            1
        );
    }

    #[test]
    fn lexer_feed_all_agrees_with_feed() {
        let mut rng = crate::relay::testkit::Rng(5);
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..rng.below(24)).map(|_| rng.pick(b"\"\\ax")).collect();
            let (mut a, mut b) = (Lexer::default(), Lexer::default());
            let cut = rng.below(bytes.len() + 1);
            a.feed_all(&bytes[..cut]);
            a.feed_all(&bytes[cut..]);
            bytes.iter().for_each(|&x| b.feed(x));
            assert_eq!(
                (a.in_string, a.escaped),
                (b.in_string, b.escaped),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn lexer_tracks_strings() {
        let mut l = Lexer::default();
        l.feed_all(br#"{"a":"x\"y\\"#);
        assert!(l.in_string_text());
        l.feed(b'"');
        assert!(!l.in_string_text());
        l.feed_all(br#","b":"\"#);
        assert!(!l.in_string_text(), "right after a backslash");
    }
}
