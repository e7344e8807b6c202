//! The pure heart of the detokenizing relay: no I/O, no store, no HTTP.
//!
//! On the way out, a [`Template`] finds the `{{card_<id>:<field>}}` expressions in a
//! request body or header value, refuses malformed ones before any card is loaded, and
//! renders the request with each value escaped for its context ([`Escape`]) into a
//! zeroizing buffer. On the way back, [`scrub`] masks every card number in the
//! processor's response, removes every secret the request carried, and puts tokens in
//! the JSON fields the caller named ([`JsonPointer`], [`find_json_pans`]).
//!
//! The server's order of work:
//!
//! ```text
//! Template::parse(body, escape)?          // 4xx, nothing loaded, nothing spent
//! for id in template.cards() { load }     // 4xx if any is unknown, foreign, deleted
//! template.render(|id, field| value)?     // one buffer, zeroized on drop
//! send; read the response
//! hits = find_json_pans(resp, pointers)   // JSON and tokenize_response_fields only
//! tokens = tokenize each hit.pan          // async: a store write
//! scrub(resp, kind, &[pan, cvc, …], &tokens)
//! ```
//!
//! Tokenizing is split from scrubbing because storing a card is asynchronous I/O,
//! which this crate does not do: [`find_json_pans`] says where the named card numbers
//! are, the server stores them, and [`scrub`] writes the tokens in and cleans the rest.

mod escape;
mod json;
mod scrub;
mod template;
#[cfg(test)]
mod testkit;

use thiserror::Error;

pub use json::{JsonField, JsonPointer, PanField, find_json_fields, find_json_pans};
pub use scrub::{BodyKind, Tokenized, scrub};
pub use template::Template;

/// A card field an expression may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `number`: the PAN's digits.
    Number,
    /// `exp_month`.
    ExpMonth,
    /// `exp_year`: four digits.
    ExpYear,
    /// `exp_year2`: two digits.
    ExpYear2,
    /// `cardholder_name`.
    CardholderName,
    /// `cvc`: held for a short time and spent by its first use.
    Cvc,
    /// `pin_block:pint_…`: a PIN block a terminal's PIN was translated into, under the
    /// processor's zone PIN key; held for 60 seconds and spent by its first use. The
    /// expression names the translation ([`Template::pin_blocks`]).
    PinBlock,
}

impl Field {
    const ALL: [Self; 6] = [
        Self::Number,
        Self::ExpMonth,
        Self::ExpYear,
        Self::ExpYear2,
        Self::CardholderName,
        Self::Cvc,
    ];

    /// The name used in expressions.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::ExpMonth => "exp_month",
            Self::ExpYear => "exp_year",
            Self::ExpYear2 => "exp_year2",
            Self::CardholderName => "cardholder_name",
            Self::Cvc => "cvc",
            Self::PinBlock => "pin_block",
        }
    }

    /// Parses [`Field::as_str`], but for `pin_block`, which is offered only with the
    /// translation it names (`pin_block:pint_…`, parsed by [`Template`]).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// How substituted values are escaped, by the context they land in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// A JSON body. Every expression must sit inside a string literal
    /// (`"number": "{{card_…:number}}"`); one outside is refused rather than emitted
    /// as a string, so the merchant decides the type (`"12"` or `12` is a processor's
    /// choice, and a bare expression would be ambiguous). Quotes, backslashes and
    /// control characters are escaped.
    Json,
    /// An `application/x-www-form-urlencoded` body: percent-encoded, space as `+`.
    Form,
    /// An XML body, in text or an attribute value (not in CDATA): `&`, `<`, `>`, `"`
    /// and `'` become entities; a control character XML 1.0 cannot carry is refused.
    Xml,
    /// A header value or a `text/plain` body: the value as it is, but any ASCII control
    /// character other than tab (CR, LF, NUL above all) is refused.
    None,
}

/// Why an expression is malformed. Part of [`RelayError::ExpressionInvalid`]'s message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// No `}}` within 96 bytes of the `{{`.
    Unterminated,
    /// Nothing but spaces between the braces.
    Empty,
    /// Not `card_` and 32 lower-case hex digits.
    CardIdInvalid,
    /// No `:` or a field name that is not lower-case letters, digits and `_`.
    Syntax,
    /// In a JSON body, outside a string literal.
    NotInJsonString,
    /// A CVC touching a digit or another expression.
    CvcNotStandalone,
    /// A `pin_block:` whose translation id is malformed, or a card given two.
    PinBlockInvalid,
}

impl Invalid {
    /// A short, stable description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unterminated => "it has no closing braces",
            Self::Empty => "it is empty",
            Self::CardIdInvalid => "the card id is malformed",
            Self::Syntax => "it is not an id, a colon and a field name",
            Self::NotInJsonString => "in a JSON body it must be inside a string",
            Self::CvcNotStandalone => "a cvc must not touch a digit or another expression",
            Self::PinBlockInvalid => {
                "a pin_block names one translation (pint_ and 32 hex digits) per card"
            }
        }
    }
}

/// A relay request or response could not be handled. Messages name a byte offset and a
/// field at most: never card data, never the expression's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RelayError {
    /// A malformed expression; `offset` is the byte offset of its `{{` in the body or
    /// header value.
    #[error("The relay expression at byte {offset} is invalid: {}.", reason.as_str())]
    ExpressionInvalid {
        /// Where the `{{` is.
        offset: usize,
        /// What is wrong.
        reason: Invalid,
    },
    /// A well-formed expression asking for a field the relay does not offer (any unknown
    /// name, or `pin_block` without the translation it is).
    #[error("The relay expression at byte {offset} asks for a field the relay does not offer.")]
    FieldNotOffered {
        /// Where the `{{` is.
        offset: usize,
    },
    /// The card has no such value (no name on file; a CVC already used or expired).
    #[error("The card's {} is not available.", field.as_str())]
    ValueUnavailable {
        /// The field asked for.
        field: Field,
    },
    /// The value holds a character its context cannot carry (a line break in a header).
    #[error("The card's {} cannot be placed here.", field.as_str())]
    ValueNotAllowed {
        /// The field asked for.
        field: Field,
    },
    /// A JSON pointer in `tokenize_response_fields` is malformed.
    #[error("A field to tokenize is not a valid JSON pointer.")]
    PointerInvalid,
}

impl RelayError {
    /// The stable error code sent to clients.
    pub const fn code(self) -> &'static str {
        match self {
            Self::ExpressionInvalid { .. } => "relay_expression_invalid",
            Self::FieldNotOffered { .. } => "relay_field_not_offered",
            Self::ValueUnavailable { field: Field::Cvc } => "cvc_unavailable",
            Self::ValueUnavailable {
                field: Field::PinBlock,
            } => "pin_block_unavailable",
            Self::ValueUnavailable { .. } => "relay_value_unavailable",
            Self::ValueNotAllowed { .. } => "relay_value_not_allowed",
            Self::PointerInvalid => "relay_pointer_invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "card_0192f3a4b5c67d8e9f00112233445566";

    fn lookup(_: &str, f: Field) -> Option<&'static str> {
        Some(match f {
            Field::Number => "378282246310005",
            Field::ExpMonth => "03",
            Field::ExpYear => "2030",
            Field::ExpYear2 => "30",
            Field::CardholderName => "Anne \"Q\" Example",
            Field::Cvc => "7373",
            Field::PinBlock => "0123456789ABCDEF",
        })
    }

    /// What the issue's echo processor does: the number, expiry and CVC reach it; the
    /// caller gets its echo back with neither.
    #[test]
    fn an_echoed_request_comes_back_without_number_or_cvc() {
        let src = format!(
            r#"{{"card":{{"number":"{{{{{CARD}:number}}}}","exp":"{{{{{CARD}:exp_month}}}}/{{{{{CARD}:exp_year2}}}}","cvc":"{{{{{CARD}:cvc}}}}","name":"{{{{{CARD}:cardholder_name}}}}"}},"amount":17373,"qty":7373}}"#
        );
        let t = Template::parse(&src, Escape::Json).unwrap();
        let sent = t.render(lookup).unwrap();
        let seen: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(seen["card"]["number"], "378282246310005");
        assert_eq!(seen["card"]["cvc"], "7373");
        assert_eq!(seen["card"]["name"], "Anne \"Q\" Example");

        // The echo, with the number also spaced the way a processor might print it.
        let echo = format!(
            r#"{{"echo":{},"display":"3782 822463 10005"}}"#,
            sent.as_str()
        );
        let secrets: [&[u8]; 2] = [b"378282246310005", b"7373"];
        let back =
            String::from_utf8(scrub(echo.as_bytes(), BodyKind::Json, &secrets, &[])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&back).unwrap();
        assert_eq!(v["echo"]["card"]["number"], "");
        assert_eq!(v["echo"]["card"]["cvc"], "");
        assert_eq!(
            v["echo"]["amount"], 17373,
            "a longer number holding it stays"
        );
        // A number standing alone that equals the CVC cannot be told from it: it goes,
        // as a string so the JSON stays valid.
        assert_eq!(v["echo"]["qty"], "");
        assert_eq!(v["display"], "XXXX0005");
        assert_eq!(v["echo"]["card"]["exp"], "03/30");
        let digits: String = back.chars().filter(char::is_ascii_digit).collect();
        assert!(!digits.contains("378282246310005"));

        // Asked to tokenize the echoed number instead.
        let ptr = [JsonPointer::parse("/echo/card/number").unwrap()];
        let hits = find_json_pans(echo.as_bytes(), &ptr);
        assert_eq!(hits.len(), 1);
        let reps = [Tokenized {
            range: hits[0].range.clone(),
            token: CARD,
        }];
        let back = scrub(echo.as_bytes(), BodyKind::Json, &secrets, &reps);
        let v: serde_json::Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(v["echo"]["card"]["number"], CARD);
    }

    #[test]
    fn codes_are_stable_and_fields_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::parse(f.as_str()), Some(f));
        }
        assert_eq!(Field::parse("pin_block"), None);
        let codes = [
            (
                RelayError::ExpressionInvalid {
                    offset: 0,
                    reason: Invalid::Empty,
                },
                "relay_expression_invalid",
            ),
            (
                RelayError::FieldNotOffered { offset: 0 },
                "relay_field_not_offered",
            ),
            (
                RelayError::ValueUnavailable { field: Field::Cvc },
                "cvc_unavailable",
            ),
            (
                RelayError::ValueUnavailable {
                    field: Field::CardholderName,
                },
                "relay_value_unavailable",
            ),
            (
                RelayError::ValueNotAllowed {
                    field: Field::CardholderName,
                },
                "relay_value_not_allowed",
            ),
            (RelayError::PointerInvalid, "relay_pointer_invalid"),
        ];
        for (e, code) in codes {
            assert_eq!(e.code(), code);
        }
    }
}
