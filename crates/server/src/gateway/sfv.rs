//! The part of RFC 8941 (Structured Field Values) that request signatures need:
//! dictionaries whose members are items or inner lists, with parameters, and the
//! canonical serialization of an inner list (the `@signature-params` line of RFC 9421).
//! Anything outside the grammar is an error; nothing here echoes its input.

use base64::Engine;

/// A bare item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bare {
    /// `123`, `-5`
    Integer(i64),
    /// `"text"`
    String(String),
    /// `token`, `*tok/en`
    Token(String),
    /// `:base64:`
    Bytes(Vec<u8>),
    /// `?1`, `?0`
    Boolean(bool),
}

/// Parameters, in their order.
pub type Params = Vec<(String, Bare)>;

/// An item and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub bare: Bare,
    /// `;key=value` …
    pub params: Params,
}

/// A dictionary member's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// A single item.
    Item(Item),
    /// `(a b c);params`
    InnerList(Vec<Item>, Params),
}

/// The input does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Longest header value parsed (signature headers are small).
const MAX_LEN: usize = 8 * 1024;

/// Parses a dictionary (RFC 8941 §4.2.2). A repeated key keeps the last value, as the
/// RFC says.
pub fn parse_dictionary(input: &str) -> Result<Vec<(String, Member)>, Malformed> {
    if input.len() > MAX_LEN {
        return Err(Malformed);
    }
    let mut p = Parser {
        s: input.as_bytes(),
        i: 0,
    };
    p.skip_sp();
    let mut out: Vec<(String, Member)> = Vec::new();
    while !p.done() {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            p.member()?
        } else {
            Member::Item(Item {
                bare: Bare::Boolean(true),
                params: p.params()?,
            })
        };
        out.retain(|(k, _)| *k != key);
        out.push((key, member));
        p.skip_ows();
        if p.done() {
            break;
        }
        if !p.eat(b',') {
            return Err(Malformed);
        }
        p.skip_ows();
        if p.done() {
            return Err(Malformed);
        }
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Result<String, Malformed> {
        let start = self.i;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.i += 1,
            _ => return Err(Malformed),
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        self.text(start)
    }

    fn text(&self, start: usize) -> Result<String, Malformed> {
        self.s
            .get(start..self.i)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .ok_or(Malformed)
    }

    fn member(&mut self) -> Result<Member, Malformed> {
        if self.eat(b'(') {
            let mut items = Vec::new();
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    break;
                }
                items.push(self.item()?);
                match self.peek() {
                    Some(b' ' | b')') => {}
                    _ => return Err(Malformed),
                }
            }
            Ok(Member::InnerList(items, self.params()?))
        } else {
            Ok(Member::Item(self.item()?))
        }
    }

    fn item(&mut self) -> Result<Item, Malformed> {
        let bare = self.bare()?;
        Ok(Item {
            bare,
            params: self.params()?,
        })
    }

    fn params(&mut self) -> Result<Params, Malformed> {
        let mut out: Params = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            let value = if self.eat(b'=') {
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            out.retain(|(k, _)| *k != key);
            out.push((key, value));
        }
        Ok(out)
    }

    fn bare(&mut self) -> Result<Bare, Malformed> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => {
                self.i += 1;
                let v = match self.peek() {
                    Some(b'1') => true,
                    Some(b'0') => false,
                    _ => return Err(Malformed),
                };
                self.i += 1;
                Ok(Bare::Boolean(v))
            }
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'*') => self.token(),
            _ => Err(Malformed),
        }
    }

    fn integer(&mut self) -> Result<Bare, Malformed> {
        let start = self.i;
        self.eat(b'-');
        let digits = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        // Decimals are not used by signatures; integers have at most 15 digits.
        let n = self.i - digits;
        if n == 0 || n > 15 || self.peek() == Some(b'.') {
            return Err(Malformed);
        }
        self.text(start)?
            .parse::<i64>()
            .map(Bare::Integer)
            .map_err(|_| Malformed)
    }

    fn string(&mut self) -> Result<Bare, Malformed> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let b = self.peek().ok_or(Malformed)?;
            self.i += 1;
            match b {
                b'"' => return Ok(Bare::String(out)),
                b'\\' => {
                    let e = self.peek().ok_or(Malformed)?;
                    if e != b'"' && e != b'\\' {
                        return Err(Malformed);
                    }
                    self.i += 1;
                    out.push(char::from(e));
                }
                0x20..=0x7e => out.push(char::from(b)),
                _ => return Err(Malformed),
            }
        }
    }

    fn token(&mut self) -> Result<Bare, Malformed> {
        let start = self.i;
        self.i += 1;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
        {
            self.i += 1;
        }
        Ok(Bare::Token(self.text(start)?))
    }

    fn bytes(&mut self) -> Result<Bare, Malformed> {
        self.i += 1;
        let start = self.i;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
            self.i += 1;
        }
        let text = self.text(start)?;
        if !self.eat(b':') {
            return Err(Malformed);
        }
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bare::Bytes)
            .map_err(|_| Malformed)
    }
}

fn serialize_bare(b: &Bare, out: &mut String) {
    match b {
        Bare::Integer(n) => out.push_str(&n.to_string()),
        Bare::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Bare::Token(t) => out.push_str(t),
        Bare::Bytes(b) => {
            out.push(':');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push(':');
        }
        Bare::Boolean(v) => out.push_str(if *v { "?1" } else { "?0" }),
    }
}

fn serialize_params(params: &Params, out: &mut String) {
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        if *v != Bare::Boolean(true) {
            out.push('=');
            serialize_bare(v, out);
        }
    }
}

/// The canonical serialization of an inner list (RFC 8941 §4.1.1.1).
pub fn serialize_inner_list(items: &[Item], params: &Params) -> String {
    let mut out = String::from("(");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        serialize_bare(&item.bare, &mut out);
        serialize_params(&item.params, &mut out);
    }
    out.push(')');
    serialize_params(params, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc9421_example_and_reserializes_it() {
        // RFC 9421 §2.3 / B.2.
        let input = "sig-b21=();created=1618884473;keyid=\"test-key-rsa-pss\";nonce=\"b3k2pp5k7z-50gnwp.yemd\"";
        let d = parse_dictionary(input).unwrap();
        assert_eq!(d.len(), 1);
        let (k, m) = &d[0];
        assert_eq!(k, "sig-b21");
        let Member::InnerList(items, params) = m else {
            panic!("not an inner list")
        };
        assert!(items.is_empty());
        assert_eq!(params[0], ("created".into(), Bare::Integer(1_618_884_473)));
        assert_eq!(
            format!("sig-b21={}", serialize_inner_list(items, params)),
            input
        );

        let input = "sig1=(\"@method\" \"@authority\" \"@path\" \"content-digest\" \"content-length\" \"content-type\");created=1618884473;keyid=\"test-key-rsa-pss\"";
        let d = parse_dictionary(input).unwrap();
        let Member::InnerList(items, params) = &d[0].1 else {
            panic!()
        };
        assert_eq!(items.len(), 6);
        assert_eq!(items[0].bare, Bare::String("@method".into()));
        assert_eq!(
            format!("sig1={}", serialize_inner_list(items, params)),
            input
        );
    }

    #[test]
    fn byte_sequences_and_several_members() {
        let d = parse_dictionary(
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:AAAA:",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        let Member::Item(Item {
            bare: Bare::Bytes(b),
            ..
        }) = &d[0].1
        else {
            panic!()
        };
        assert_eq!(b.len(), 32);
    }

    #[test]
    fn malformed_inputs_are_refused() {
        for bad in [
            "",
            "Sig=()",
            "a=(",
            "a=(\"x\"",
            "a=\"unterminated",
            "a=:not base64!:",
            "a=1,",
            "a=1 b=2",
            "a=(\"x\"\"y\")",
            "a=1234567890123456",
            "a=1.5",
            "a=?2",
            "a=\"\\n\"",
        ] {
            assert!(
                parse_dictionary(bad).is_err() || bad.is_empty(),
                "accepted {bad:?}"
            );
        }
        assert!(parse_dictionary("").unwrap().is_empty());
        assert!(parse_dictionary(&"a".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn strings_round_trip_with_escapes() {
        let d = parse_dictionary(r#"a=("x\"y" "b\\c");k="v""#).unwrap();
        let Member::InnerList(items, params) = &d[0].1 else {
            panic!()
        };
        assert_eq!(items[0].bare, Bare::String("x\"y".into()));
        assert_eq!(
            serialize_inner_list(items, params),
            r#"("x\"y" "b\\c");k="v""#
        );
    }
}
