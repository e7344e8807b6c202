//! Escaping a card value for the body or header it is substituted into.

use super::Escape;

/// A value holds a character that cannot be carried in this context at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

/// The most bytes one input byte can become: an upper bound that lets the renderer size
/// its zeroizing buffer once, so that no reallocation leaves a copy of card data behind.
pub(crate) const fn expansion(escape: Escape) -> usize {
    match escape {
        // `\u001f` for a control byte; `&quot;` and `&apos;` for a quote.
        Escape::Json | Escape::Xml => 6,
        // `%XX`.
        Escape::Form => 3,
        Escape::None => 1,
    }
}

/// Appends `value` to `out`, escaped for `escape`.
pub(crate) fn push_escaped(out: &mut String, value: &str, escape: Escape) -> Result<(), Refused> {
    match escape {
        Escape::Json => push_json(out, value),
        Escape::Form => {
            form_urlencoded::byte_serialize(value.as_bytes()).for_each(|s| out.push_str(s));
        }
        Escape::Xml => {
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&apos;"),
                    // XML 1.0 cannot carry these at all, not even as character references.
                    '\t' | '\n' | '\r' => out.push(c),
                    '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => return Err(Refused),
                    c => out.push(c),
                }
            }
        }
        Escape::None => {
            // CR and LF would split a header (request smuggling); NUL and the other
            // controls have no place in a card value either.
            if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
                return Err(Refused);
            }
            out.push_str(value);
        }
    }
    Ok(())
}

/// The body of a JSON string literal holding `value` (RFC 8259, section 7).
pub(crate) fn push_json(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{0}'..='\u{1f}' => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX.get(b >> 4).copied().unwrap_or(b'0')));
                out.push(char::from(HEX.get(b & 0xf).copied().unwrap_or(b'0')));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(v: &str, e: Escape) -> Result<String, Refused> {
        let mut out = String::new();
        push_escaped(&mut out, v, e).map(|()| out)
    }

    #[test]
    fn json_escapes_round_trip_through_serde_json() {
        let nasty = "O'Brien \"Jr\" \\ é \u{1} \n\r\t\u{8}\u{c}\u{1f} 😀 </x>";
        let body = format!("{{\"name\":\"{}\"}}", esc(nasty, Escape::Json).unwrap());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["name"], nasty);
        assert_eq!(esc("\u{1}", Escape::Json).unwrap(), "\\u0001");
    }

    #[test]
    fn form_encoding_is_x_www_form_urlencoded() {
        let v = "Anne Marie & Co=1+2%/é";
        let e = esc(v, Escape::Form).unwrap();
        assert_eq!(e, "Anne+Marie+%26+Co%3D1%2B2%25%2F%C3%A9");
        let back: Vec<(String, String)> = form_urlencoded::parse(format!("name={e}").as_bytes())
            .into_owned()
            .collect();
        assert_eq!(back, vec![("name".to_string(), v.to_string())]);
    }

    #[test]
    fn xml_escapes_markup_and_refuses_forbidden_controls() {
        assert_eq!(
            esc("a&b<c>d\"e'f", Escape::Xml).unwrap(),
            "a&amp;b&lt;c&gt;d&quot;e&apos;f"
        );
        assert_eq!(esc("a\tb\nc", Escape::Xml).unwrap(), "a\tb\nc");
        for bad in ["\u{0}", "a\u{1}", "\u{b}", "\u{ffff}"] {
            assert_eq!(esc(bad, Escape::Xml), Err(Refused), "{bad:?}");
        }
    }

    #[test]
    fn none_refuses_header_breaking_bytes() {
        assert_eq!(
            esc("Anne \"Q\" O'Brien\t", Escape::None).unwrap(),
            "Anne \"Q\" O'Brien\t"
        );
        for bad in ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\u{0}b", "a\u{7f}"] {
            assert_eq!(esc(bad, Escape::None), Err(Refused), "{bad:?}");
        }
    }

    #[test]
    fn expansion_bounds_every_escape() {
        // Every byte value that can appear in a str, in every mode.
        let all: String =
            (0u32..0x80).filter_map(char::from_u32).collect::<String>() + "é😀\u{ffff}";
        for e in [Escape::Json, Escape::Form, Escape::Xml, Escape::None] {
            for c in all.chars() {
                let s = c.to_string();
                if let Ok(out) = esc(&s, e) {
                    assert!(out.len() <= s.len() * expansion(e), "{e:?} {c:?}");
                }
            }
        }
    }
}
