//! Parsing and rendering the `{{card_…:field}}` expressions of a relayed request.

use std::ops::Range;

use zeroize::Zeroizing;

use super::escape::{self, Refused};
use super::json::Lexer;
use super::{Escape, Field, Invalid, RelayError};
use crate::{IdKind, parse_id};

/// The most bytes between `{{` and `}}`: a card id (37), a colon, the longest field
/// name and room for spaces. A `{{` with no `}}` within it is unterminated, which also
/// bounds the work a stray `{{` can cause.
const MAX_INNER: usize = 96;

/// A request body or header value with its expressions located, checked and bound to
/// the escaping of its context. Parse it before loading any card: every malformed
/// expression is refused here, so a request is refused before anything (a CVC above
/// all, which a relay uses once) is spent.
#[derive(Debug, Clone)]
pub struct Template<'a> {
    src: &'a str,
    escape: Escape,
    parts: Vec<Part>,
    cards: Vec<&'a str>,
    /// The translation each `pin_block:` names, by index in `cards`.
    pin_blocks: Vec<(usize, &'a str)>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(Range<usize>),
    /// `card` indexes `Template::cards`; `offset` is where the `{{` was.
    Expr {
        card: usize,
        field: Field,
        offset: usize,
    },
}

impl<'a> Template<'a> {
    /// Finds and checks every expression in `src`, to be rendered with `escape`.
    ///
    /// Every `{{` begins an expression; there is no escape for a literal `{{` (it can
    /// be written `{\u007b` in JSON, `%7B%7B` in a form, `&#123;{` in XML). `}}` alone
    /// is ordinary text. Spaces and tabs are allowed around the id and the field.
    pub fn parse(src: &'a str, escape: Escape) -> Result<Self, RelayError> {
        let bytes = src.as_bytes();
        let mut parts = Vec::new();
        let mut cards: Vec<&'a str> = Vec::new();
        let mut pin_blocks: Vec<(usize, &'a str)> = Vec::new();
        let mut lexer = Lexer::default();
        let mut lexed = 0;
        let mut at = 0;
        while let Some(open) = find(bytes, at, b"{{") {
            let invalid = |reason| RelayError::ExpressionInvalid {
                offset: open,
                reason,
            };
            if escape == Escape::Json {
                lexer.feed_all(bytes.get(lexed..open).unwrap_or_default());
                if !lexer.in_string_text() {
                    return Err(invalid(Invalid::NotInJsonString));
                }
            }
            let inner_start = open + 2;
            let window = bytes.get(inner_start..).unwrap_or_default();
            let window = window.get(..MAX_INNER + 2).unwrap_or(window);
            let close = find(window, 0, b"}}").ok_or(invalid(Invalid::Unterminated))?;
            let inner = src
                .get(inner_start..inner_start + close)
                .ok_or(invalid(Invalid::Unterminated))?;
            let (card, field, translation) = expression(inner).map_err(|e| match e {
                Parsed::Invalid(reason) => invalid(reason),
                Parsed::NotOffered => RelayError::FieldNotOffered { offset: open },
            })?;
            let card = match cards.iter().position(|c| *c == card) {
                Some(i) => i,
                None => {
                    cards.push(card);
                    cards.len() - 1
                }
            };
            if let Some(t) = translation {
                match pin_blocks.iter().find(|(c, _)| *c == card) {
                    Some((_, seen)) if *seen != t => return Err(invalid(Invalid::PinBlockInvalid)),
                    Some(_) => {}
                    None => pin_blocks.push((card, t)),
                }
            }
            if at < open {
                parts.push(Part::Literal(at..open));
            }
            parts.push(Part::Expr {
                card,
                field,
                offset: open,
            });
            at = inner_start + close + 2;
            lexed = at;
        }
        if at < src.len() {
            parts.push(Part::Literal(at..src.len()));
        }
        let t = Self {
            src,
            escape,
            parts,
            cards,
            pin_blocks,
        };
        t.check_cvc_stands_alone()?;
        Ok(t)
    }

    /// A CVC must not touch a digit or another expression: scrubbing removes a CVC
    /// from the response only where it is not part of a longer number (a CVC of `123`
    /// must not cut `1234` out of an amount), so a processor that echoed
    /// `9{{card_…:cvc}}` must never receive it in the first place.
    fn check_cvc_stands_alone(&self) -> Result<(), RelayError> {
        let touches = |part: Option<&Part>, last: bool| match part {
            None => false,
            Some(Part::Expr { .. }) => true,
            Some(Part::Literal(r)) => {
                let lit = self.src.as_bytes().get(r.clone()).unwrap_or_default();
                let edge = if last { lit.last() } else { lit.first() };
                edge.is_some_and(u8::is_ascii_digit)
            }
        };
        for (i, part) in self.parts.iter().enumerate() {
            if let Part::Expr {
                field: Field::Cvc,
                offset,
                ..
            } = part
            {
                let before = i.checked_sub(1).and_then(|j| self.parts.get(j));
                if touches(before, true) || touches(self.parts.get(i + 1), false) {
                    return Err(RelayError::ExpressionInvalid {
                        offset: *offset,
                        reason: Invalid::CvcNotStandalone,
                    });
                }
            }
        }
        Ok(())
    }

    /// The distinct card ids named, in order of first use: load each once, and refuse
    /// the request if any cannot be used, before rendering.
    pub fn cards(&self) -> &[&'a str] {
        &self.cards
    }

    /// The translated PIN blocks asked for, as (card id, `pint_…`): at most one per card.
    pub fn pin_blocks(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.pin_blocks
            .iter()
            .filter_map(|(c, t)| Some((*self.cards.get(*c)?, *t)))
    }

    /// Every expression as (card id, field), in order, repeats included.
    pub fn expressions(&self) -> impl Iterator<Item = (&'a str, Field)> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr { card, field, .. } => Some((*self.cards.get(*card)?, *field)),
            Part::Literal(_) => None,
        })
    }

    /// Whether any expression asks for `field` (a CVC is spent by its first use).
    pub fn uses(&self, field: Field) -> bool {
        self.expressions().any(|(_, f)| f == field)
    }

    /// Whether there is nothing to substitute: the source passes through as it is.
    pub fn is_literal(&self) -> bool {
        self.cards.is_empty()
    }

    /// The escaping the values get.
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// Substitutes each expression with `lookup(card_id, field)`, escaped. `None` from
    /// the lookup is [`RelayError::ValueUnavailable`]. The result is sized once and
    /// zeroized on drop; so are partial results on error.
    pub fn render<S: AsRef<str>>(
        &self,
        mut lookup: impl FnMut(&str, Field) -> Option<S>,
    ) -> Result<Zeroizing<String>, RelayError> {
        let mut values = Vec::with_capacity(self.parts.len());
        let mut cap = 0;
        for part in &self.parts {
            match part {
                Part::Literal(r) => cap += r.len(),
                Part::Expr { card, field, .. } => {
                    let id = self.cards.get(*card).copied().unwrap_or_default();
                    let v =
                        lookup(id, *field).ok_or(RelayError::ValueUnavailable { field: *field })?;
                    cap += v.as_ref().len() * escape::expansion(self.escape);
                    values.push(v);
                }
            }
        }
        let mut out = Zeroizing::new(String::with_capacity(cap));
        let mut values = values.iter();
        for part in &self.parts {
            match part {
                Part::Literal(r) => out.push_str(self.src.get(r.clone()).unwrap_or_default()),
                Part::Expr { field, .. } => {
                    let v = values.next().map(AsRef::as_ref).unwrap_or_default();
                    escape::push_escaped(&mut out, v, self.escape)
                        .map_err(|Refused| RelayError::ValueNotAllowed { field: *field })?;
                }
            }
        }
        Ok(out)
    }
}

/// Why the inside of `{{…}}` was refused.
enum Parsed {
    Invalid(Invalid),
    NotOffered,
}

/// Parses `card_<id>:<field>` (or `card_<id>:pin_block:pint_<id>`) with optional spaces
/// and tabs around each part.
fn expression(inner: &str) -> Result<(&str, Field, Option<&str>), Parsed> {
    let ws: &[char] = &[' ', '\t'];
    let inner = inner.trim_matches(ws);
    if inner.is_empty() {
        return Err(Parsed::Invalid(Invalid::Empty));
    }
    let (id, field) = inner
        .split_once(':')
        .ok_or(Parsed::Invalid(Invalid::Syntax))?;
    let id = parse_id(IdKind::Card, id.trim_matches(ws))
        .map_err(|_| Parsed::Invalid(Invalid::CardIdInvalid))?;
    let (field, translation) = match field.split_once(':') {
        Some((f, t)) if f.trim_matches(ws) == Field::PinBlock.as_str() => {
            let t = parse_id(IdKind::PinTranslation, t.trim_matches(ws))
                .map_err(|_| Parsed::Invalid(Invalid::PinBlockInvalid))?;
            return Ok((id, Field::PinBlock, Some(t)));
        }
        Some(_) => return Err(Parsed::Invalid(Invalid::Syntax)),
        None => (field.trim_matches(ws), None::<&str>),
    };
    if field.is_empty()
        || !field
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
    {
        return Err(Parsed::Invalid(Invalid::Syntax));
    }
    let field = Field::parse(field).ok_or(Parsed::NotOffered)?;
    Ok((id, field, translation))
}

/// The first `needle` in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::testkit::Rng;

    const A: &str = "card_0192f3a4b5c67d8e9f00112233445566";
    const B: &str = "card_0192f3a4b5c67d8e9f001122334455ff";

    #[test]
    fn a_pin_block_names_its_translation() {
        const T: &str = "pint_0192f3a4b5c67d8e9f00112233445566";
        const U: &str = "pint_0192f3a4b5c67d8e9f001122334455ff";
        let src = format!("{{{{{A}:pin_block:{T}}}}}|{{{{ {A} : pin_block : {T} }}}}");
        let t = Template::parse(&src, Escape::None).unwrap();
        assert_eq!(t.pin_blocks().collect::<Vec<_>>(), vec![(A, T)]);
        let out = t
            .render(|_, f| (f == Field::PinBlock).then_some("0123456789ABCDEF"))
            .unwrap();
        assert_eq!(out.as_str(), "0123456789ABCDEF|0123456789ABCDEF");
        let missing = t.render(|_, _| None::<&str>).unwrap_err();
        assert_eq!(missing.code(), "pin_block_unavailable");
        // Two translations for one card, a malformed id, another kind of id, none.
        for (src, code) in [
            (
                format!("{{{{{A}:pin_block:{T}}}}}{{{{{A}:pin_block:{U}}}}}"),
                "relay_expression_invalid",
            ),
            (
                format!("{{{{{A}:pin_block:pint_12}}}}"),
                "relay_expression_invalid",
            ),
            (
                format!("{{{{{A}:pin_block:{B}}}}}"),
                "relay_expression_invalid",
            ),
            (
                format!("{{{{{A}:number:{T}}}}}"),
                "relay_expression_invalid",
            ),
            (format!("{{{{{A}:pin_block}}}}"), "relay_field_not_offered"),
        ] {
            let e = Template::parse(&src, Escape::None).unwrap_err();
            assert_eq!(e.code(), code, "{src}");
        }
        // One translation for each of two cards.
        let src = format!("{{{{{A}:pin_block:{T}}}}}{{{{{B}:pin_block:{U}}}}}");
        let t = Template::parse(&src, Escape::None).unwrap();
        assert_eq!(t.pin_blocks().collect::<Vec<_>>(), vec![(A, T), (B, U)]);
    }

    fn card(id: &str, f: Field) -> Option<&'static str> {
        match (id, f) {
            (A, Field::Number) => Some("4242424242424242"),
            (A, Field::ExpMonth) => Some("07"),
            (A, Field::ExpYear) => Some("2031"),
            (A, Field::ExpYear2) => Some("31"),
            (A, Field::CardholderName) => Some("Zoë \"Q\" O'Brien & <Co>"),
            (A, Field::Cvc) => Some("123"),
            (B, Field::Number) => Some("5555555555554444"),
            _ => None,
        }
    }

    fn render(src: &str, e: Escape) -> Result<String, RelayError> {
        Ok(Template::parse(src, e)?.render(card)?.to_string())
    }

    fn err(src: &str, e: Escape) -> RelayError {
        let error = Template::parse(src, e).unwrap_err();
        let shown = error.to_string();
        assert!(!shown.contains("card_") && !shown.contains("{{"), "{shown}");
        error
    }

    #[test]
    fn text_without_expressions_passes_through() {
        for src in ["", "plain", "{ } {x} }} }}{ {\"a\":{\"b\":1}}", "é😀"] {
            let t = Template::parse(src, Escape::Json).unwrap();
            assert!(t.is_literal());
            assert_eq!(t.render(card).unwrap().as_str(), src);
        }
    }

    #[test]
    fn renders_json_and_lists_distinct_cards() {
        let src = format!(
            r#"{{"n":"{{{{{A}:number}}}}","m":"{{{{ {A}:exp_month }}}}/{{{{	{A} : exp_year2	}}}}","y":"{{{{{A}:exp_year}}}}","b":"{{{{{B}:number}}}}","c":"{{{{{A}:cvc}}}}","h":"{{{{{A}:cardholder_name}}}}"}}"#
        );
        let t = Template::parse(&src, Escape::Json).unwrap();
        assert_eq!(t.cards(), [A, B]);
        assert_eq!(t.expressions().count(), 7);
        assert!(t.uses(Field::Cvc) && !t.is_literal());
        assert_eq!(t.escape(), Escape::Json);
        let out = t.render(card).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["n"], "4242424242424242");
        assert_eq!(v["m"], "07/31");
        assert_eq!(v["y"], "2031");
        assert_eq!(v["b"], "5555555555554444");
        assert_eq!(v["c"], "123");
        assert_eq!(v["h"], "Zoë \"Q\" O'Brien & <Co>");
    }

    #[test]
    fn each_escape_mode() {
        let name = format!("{{{{{A}:cardholder_name}}}}");
        assert_eq!(
            render(&format!("name={name}&n={{{{{A}:number}}}}"), Escape::Form).unwrap(),
            "name=Zo%C3%AB+%22Q%22+O%27Brien+%26+%3CCo%3E&n=4242424242424242"
        );
        assert_eq!(
            render(&format!("<c name=\"{name}\">{name}</c>"), Escape::Xml).unwrap(),
            "<c name=\"Zoë &quot;Q&quot; O&apos;Brien &amp; &lt;Co&gt;\">Zoë &quot;Q&quot; O&apos;Brien &amp; &lt;Co&gt;</c>"
        );
        assert_eq!(
            render(&format!("Card {name}"), Escape::None).unwrap(),
            "Card Zoë \"Q\" O'Brien & <Co>"
        );
    }

    #[test]
    fn values_that_break_their_context_are_refused() {
        let t_src = format!("x {{{{{A}:cardholder_name}}}}");
        let t = Template::parse(&t_src, Escape::None).unwrap();
        for bad in ["Anne\r\nX-Injected: 1", "a\u{0}", "a\n"] {
            let e = t.render(|_, _| Some(bad)).unwrap_err();
            assert_eq!(
                e,
                RelayError::ValueNotAllowed {
                    field: Field::CardholderName
                }
            );
            assert_eq!(e.code(), "relay_value_not_allowed");
            assert!(!e.to_string().contains("Anne"));
        }
        let x_src = format!("<a>{{{{{A}:cardholder_name}}}}</a>");
        let x = Template::parse(&x_src, Escape::Xml).unwrap();
        assert!(x.render(|_, _| Some("a\u{1}")).is_err());
    }

    #[test]
    fn missing_values_name_the_field_only() {
        let t_src = format!("\"{{{{{B}:cvc}}}}\"");
        let t = Template::parse(&t_src, Escape::Json).unwrap();
        let e = t.render(card).unwrap_err();
        assert_eq!(e.code(), "cvc_unavailable");
        assert_eq!(e.to_string(), "The card's cvc is not available.");
        let t_src = format!("\"{{{{{B}:cardholder_name}}}}\"");
        let t = Template::parse(&t_src, Escape::Json).unwrap();
        assert_eq!(
            t.render(card).unwrap_err().code(),
            "relay_value_unavailable"
        );
    }

    #[test]
    fn malformed_expressions_are_refused_with_their_offset() {
        use Invalid::*;
        let cases: Vec<(String, Invalid, usize)> = vec![
            (format!("ab {{{{{A}:number"), Unterminated, 3),
            (format!("{{{{{A}:number}}"), Unterminated, 0),
            (
                format!("{{{{{A}:number{}}}}}", " ".repeat(60)),
                Unterminated,
                0,
            ),
            ("x{{}}".into(), Empty, 1),
            ("{{ \t }}".into(), Empty, 0),
            ("{{card_12:number}}".into(), CardIdInvalid, 0),
            (
                "{{CARD_0192f3a4b5c67d8e9f00112233445566:number}}".into(),
                CardIdInvalid,
                0,
            ),
            (
                "{{card_0192F3A4B5C67D8E9F00112233445566:number}}".into(),
                CardIdInvalid,
                0,
            ),
            (
                "{{acct_0192f3a4b5c67d8e9f00112233445566:number}}".into(),
                CardIdInvalid,
                0,
            ),
            ("{{:number}}".into(), CardIdInvalid, 0),
            (format!("{{{{{{{A}:number}}}}}}"), CardIdInvalid, 0),
            (format!("{{{{{A}}}}}"), Syntax, 0),
            (format!("{{{{{A}:}}}}"), Syntax, 0),
            (format!("{{{{{A}:Number}}}}"), Syntax, 0),
            (format!("{{{{{A}:num-ber}}}}"), Syntax, 0),
            (format!("{{{{{A}:number:x}}}}"), Syntax, 0),
            (format!("ok {{{{{A}:number}}}} then {{{{}}}}"), Empty, 57),
        ];
        for (src, reason, offset) in cases {
            let e = err(&src, Escape::None);
            assert_eq!(e, RelayError::ExpressionInvalid { offset, reason }, "{src}");
            assert_eq!(e.code(), "relay_expression_invalid");
            assert!(e.to_string().contains(&format!("byte {offset}")));
        }
        for f in ["pin_block", "pan", "cvv", "number2"] {
            let e = err(&format!("--{{{{{A}:{f}}}}}"), Escape::None);
            assert_eq!(e, RelayError::FieldNotOffered { offset: 2 });
            assert_eq!(e.code(), "relay_field_not_offered");
            assert!(!e.to_string().contains(f));
        }
    }

    #[test]
    fn json_expressions_must_sit_in_strings() {
        let ok = format!(
            r#"{{"a":"x{{{{{A}:number}}}}y","{{{{{A}:exp_month}}}}":"\"{{{{{A}:cvc}}}}"}}"#
        );
        assert!(Template::parse(&ok, Escape::Json).is_ok());
        for (src, offset) in [
            (format!(r#"{{"a":{{{{{A}:number}}}}}}"#), 5),
            (format!(r#"{{"a":"b","c":{{{{{A}:exp_month}}}}}}"#), 13),
            (format!(r#"{{"a":"\{{{{{A}:number}}}}"}}"#), 7),
            (
                format!(r#"{{"a":"{{{{{A}:number}}}}", {{{{{A}:number}}}}:1}}"#),
                57,
            ),
        ] {
            assert_eq!(
                err(&src, Escape::Json),
                RelayError::ExpressionInvalid {
                    offset,
                    reason: Invalid::NotInJsonString
                },
                "{src}"
            );
        }
        // Outside JSON the same text is fine.
        assert!(Template::parse(&format!("{{\"a\":{{{{{A}:number}}}}}}"), Escape::None).is_ok());
    }

    #[test]
    fn a_cvc_must_stand_alone() {
        let cvc = format!("{{{{{A}:cvc}}}}");
        let num = format!("{{{{{A}:number}}}}");
        for ok in [
            format!("cvc={cvc}&n={num}"),
            format!("x{cvc}x"),
            cvc.clone(),
            format!("{num} {cvc}"),
        ] {
            assert!(Template::parse(&ok, Escape::Form).is_ok(), "{ok}");
        }
        for (bad, offset) in [
            (format!("9{cvc}"), 1),
            (format!("{cvc}0"), 0),
            (format!("{num}{cvc}"), 48),
            (format!("{cvc}{num}"), 0),
        ] {
            assert_eq!(
                err(&bad, Escape::Form),
                RelayError::ExpressionInvalid {
                    offset,
                    reason: Invalid::CvcNotStandalone
                },
                "{bad}"
            );
        }
    }

    #[test]
    fn rendering_never_reallocates() {
        // The buffer is sized once from the worst-case escape: a reallocation would
        // leave an unzeroized copy of card data in freed memory.
        let worst = "\u{1}\"<'&\n\u{1f}é";
        for e in [Escape::Json, Escape::Form, Escape::Xml] {
            let src = format!("\"{{{{{A}:cardholder_name}}}}\"");
            let t = Template::parse(&src, e).unwrap();
            let lookup = |_: &str, _| Some(worst);
            let Ok(out) = t.render(lookup) else { continue };
            let want = 2 + worst.len() * escape::expansion(e);
            assert_eq!(out.capacity(), want, "{e:?}");
        }
    }

    #[test]
    fn property_parse_never_panics_and_names_are_json_safe() {
        let mut rng = Rng(31);
        let pieces = [
            "{{", "}}", "{", "}", A, ":", "number", "cvc", " ", "\"", "\\", "x", "9", "é",
        ];
        for _ in 0..20_000 {
            let src: String = (0..rng.below(12)).map(|_| rng.pick(&pieces)).collect();
            for e in [Escape::Json, Escape::Form, Escape::Xml, Escape::None] {
                if let Ok(t) = Template::parse(&src, e) {
                    let _ = t.render(|_, _| Some("v"));
                }
            }
        }
        // Any name survives JSON escaping.
        let chars = [
            'a', 'é', '"', '\\', '\u{0}', '\n', '\u{1f}', '😀', '/', '\u{2028}', '<',
        ];
        let t_src = format!("{{\"n\":\"{{{{{A}:cardholder_name}}}}\"}}");
        let t = Template::parse(&t_src, Escape::Json).unwrap();
        for _ in 0..5_000 {
            let name: String = (0..rng.below(20)).map(|_| rng.pick(&chars)).collect();
            let out = t.render(|_, _| Some(name.as_str())).unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["n"], name.as_str());
            let form_src = format!("n={{{{{A}:cardholder_name}}}}");
            let form = Template::parse(&form_src, Escape::Form).unwrap();
            let out = form.render(|_, _| Some(name.as_str())).unwrap();
            let back: Vec<(String, String)> = form_urlencoded::parse(out.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(back, vec![("n".to_string(), name.clone())]);
        }
    }

    #[test]
    fn a_flood_of_open_braces_is_refused_quickly() {
        let src = "{{".repeat(500_000);
        assert!(Template::parse(&src, Escape::None).is_err());
        let src = "x{".repeat(500_000);
        assert!(Template::parse(&src, Escape::None).unwrap().is_literal());
    }
}
