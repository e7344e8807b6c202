//! What a card-present terminal enciphers (docs/card-present.md): magnetic-stripe track
//! 1 or 2 (ISO/IEC 7813), a bare PAN and expiry, or EMV BER-TLV data. Parsing keeps the
//! PAN, expiry, service code and name and nothing else: discretionary data (where the
//! CVV/iCVV lives) is never copied out of the deciphered buffer, which the caller holds in
//! zeroizing memory.
//!
//! Every failure is the same `None`: the caller answers one generic error, whatever part
//! was wrong, so that no answer tells a padding error from a parse error.

use zeroize::Zeroizing;

/// What kind of data the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// Track 2: `;PAN=YYMMSSS…?` (sentinels optional).
    Track2,
    /// Track 1: `%BPAN^NAME^YYMMSSS…?` (sentinels optional).
    Track1,
    /// `PAN=YYMM`.
    PanExpiry,
    /// EMV BER-TLV: tags 5A, 5F24, 5F20, 5F30 or 57 (track 2 equivalent data).
    EmvTlv,
}

impl TrackKind {
    /// The kind of an API name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "track2" => Some(Self::Track2),
            "track1" => Some(Self::Track1),
            "pan_expiry" => Some(Self::PanExpiry),
            "emv_tlv" => Some(Self::EmvTlv),
            _ => None,
        }
    }
}

/// The card data kept from a track.
pub struct CardData {
    /// The PAN's digits.
    pub pan: Zeroizing<String>,
    /// 1–12.
    pub exp_month: i64,
    /// Four digits.
    pub exp_year: i64,
    /// The three-digit service code, where the data carries one.
    pub service_code: Option<String>,
    /// The cardholder name, as `FIRST SURNAME`, where the data carries one.
    pub name: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for CardData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardData(..)")
    }
}

/// Parses deciphered data of `kind` padded to `block` bytes with zeros or PKCS#7.
pub fn parse(kind: TrackKind, data: &[u8], block: usize) -> Option<CardData> {
    unpadded(data, block).find_map(|d| match kind {
        TrackKind::Track2 => track2(d, b'='),
        TrackKind::Track1 => track1(d),
        TrackKind::PanExpiry => pan_expiry(d),
        TrackKind::EmvTlv => emv(d),
    })
}

/// The data without its padding: PKCS#7 removed where it is valid, and with trailing
/// zeros removed.
fn unpadded(data: &[u8], block: usize) -> impl Iterator<Item = &[u8]> {
    let pkcs7 = data.last().and_then(|&n| {
        let n = usize::from(n);
        let body = data.len().checked_sub(n)?;
        let pad = data.get(body..)?;
        (n >= 1 && n <= block && pad.iter().all(|&b| usize::from(b) == n))
            .then(|| data.get(..body))
            .flatten()
    });
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    pkcs7.into_iter().chain(data.get(..end))
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

fn number(s: &[u8]) -> Option<i64> {
    if !digits(s) {
        return None;
    }
    s.iter().try_fold(0i64, |n, d| {
        n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })
}

/// `YYMM` as (month, four-digit year).
fn yymm(s: &[u8]) -> Option<(i64, i64)> {
    let (yy, mm) = (number(s.get(..2)?)?, number(s.get(2..4)?)?);
    (1..=12).contains(&mm).then_some((mm, 2000 + yy))
}

fn pan(s: &[u8]) -> Option<Zeroizing<String>> {
    if !(12..=19).contains(&s.len()) || !digits(s) {
        return None;
    }
    Some(Zeroizing::new(std::str::from_utf8(s).ok()?.to_owned()))
}

/// Strips an optional start sentinel, and an end sentinel with the LRC after it.
fn framed(data: &[u8], start: u8) -> &[u8] {
    let data = data.strip_prefix(&[start]).unwrap_or(data);
    match data.iter().position(|&b| b == b'?') {
        Some(end) if data.len() <= end + 2 => data.get(..end).unwrap_or(data),
        _ => data,
    }
}

fn track2(data: &[u8], separator: u8) -> Option<CardData> {
    let body = framed(data, b';');
    let sep = body.iter().position(|&b| b == separator)?;
    let (number, rest) = (body.get(..sep)?, body.get(sep + 1..)?);
    let (exp_month, exp_year) = yymm(rest)?;
    let service = rest.get(4..7)?;
    if !digits(service) || !rest.iter().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(CardData {
        pan: pan(number)?,
        exp_month,
        exp_year,
        service_code: Some(std::str::from_utf8(service).ok()?.to_owned()),
        name: None,
    })
}

fn track1(data: &[u8]) -> Option<CardData> {
    let body = framed(data, b'%');
    let body = body.strip_prefix(b"B")?;
    let mut fields = body.splitn(3, |&b| b == b'^');
    let (number, name, rest) = (fields.next()?, fields.next()?, fields.next()?);
    let (exp_month, exp_year) = yymm(rest)?;
    let service = rest.get(4..7)?;
    let printable = |b: &u8| (0x20..0x5F).contains(b);
    if !digits(service) || !rest.iter().all(printable) || !(2..=26).contains(&name.len()) {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" /.-'".contains(&b))
    {
        return None;
    }
    // `SURNAME/FIRST` reads `FIRST SURNAME`.
    let name = match name.split_once('/') {
        Some((surname, first)) => format!("{} {}", first.trim(), surname.trim()),
        None => name.to_owned(),
    };
    let name = Zeroizing::new(name.trim().to_owned());
    Some(CardData {
        pan: pan(number)?,
        exp_month,
        exp_year,
        service_code: Some(std::str::from_utf8(service).ok()?.to_owned()),
        name: (!name.is_empty()).then_some(name),
    })
}

fn pan_expiry(data: &[u8]) -> Option<CardData> {
    let sep = data.iter().position(|&b| b == b'=')?;
    let rest = data.get(sep + 1..)?;
    if rest.len() != 4 {
        return None;
    }
    let (exp_month, exp_year) = yymm(rest)?;
    Some(CardData {
        pan: pan(data.get(..sep)?)?,
        exp_month,
        exp_year,
        service_code: None,
        name: None,
    })
}

/// One BER-TLV object: its tag (up to 3 bytes), whether it is constructed, its value,
/// and what follows.
fn tlv(data: &[u8]) -> Option<(u32, bool, &[u8], &[u8])> {
    let (&first, mut rest) = data.split_first()?;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        loop {
            let (&b, r) = rest.split_first()?;
            rest = r;
            tag = tag.checked_shl(8)? | u32::from(b);
            if tag > 0xFF_FFFF {
                return None;
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = match len {
        0..=0x7F => usize::from(len),
        0x81 => {
            let (&l, r) = rest.split_first()?;
            rest = r;
            usize::from(l)
        }
        0x82 => {
            let (l, r) = rest.split_first_chunk::<2>()?;
            rest = r;
            usize::from(u16::from_be_bytes(*l))
        }
        _ => return None,
    };
    let value = rest.get(..len)?;
    Some((tag, first & 0x20 != 0, value, rest.get(len..)?))
}

/// Walks the objects of `data` (padding bytes 00 and FF between them skipped), into
/// constructed ones, calling `each` with every primitive one.
fn walk<'a>(mut data: &'a [u8], depth: u8, each: &mut impl FnMut(u32, &'a [u8])) -> Option<()> {
    if depth > 4 {
        return None;
    }
    while let Some((&b, rest)) = data.split_first() {
        if b == 0x00 || b == 0xFF {
            data = rest;
            continue;
        }
        let (tag, constructed, value, rest) = tlv(data)?;
        if constructed {
            walk(value, depth + 1, each)?;
        } else {
            each(tag, value);
        }
        data = rest;
    }
    Some(())
}

/// Compressed numeric (BCD, padded with F) as digits, in zeroizing memory.
fn bcd(value: &[u8], separator: Option<u8>) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for nibble in value.iter().flat_map(|b| [b >> 4, b & 0x0F]) {
        match nibble {
            0..=9 => out.push(b'0' + nibble),
            0x0D if separator.is_some() => out.push(b'='),
            0x0F => break,
            _ => return None,
        }
    }
    Some(out)
}

fn emv(data: &[u8]) -> Option<CardData> {
    let (mut pan_tag, mut expiry, mut name, mut service, mut track2_eq) =
        (None, None, None, None, None);
    walk(data, 0, &mut |tag, value| match tag {
        0x5A => pan_tag = Some(value),
        0x5F24 => expiry = Some(value),
        0x5F20 => name = Some(value),
        0x5F30 => service = Some(value),
        0x57 => track2_eq = Some(value),
        _ => {}
    })?;
    let mut card = match track2_eq {
        Some(t) => track2(&bcd(t, Some(b'='))?, b'=')?,
        None => {
            let digits = bcd(pan_tag?, None)?;
            let expiry = bcd(expiry?, None)?;
            let (exp_month, exp_year) = yymm(expiry.get(..4)?)?;
            CardData {
                pan: pan(&digits)?,
                exp_month,
                exp_year,
                service_code: None,
                name: None,
            }
        }
    };
    if let Some(pan_tag) = pan_tag {
        // Both given: they must agree.
        if bcd(pan_tag, None)?.as_slice() != card.pan.as_bytes() {
            return None;
        }
    }
    if let Some(s) = service {
        let s = bcd(s, None)?;
        card.service_code = Some(
            std::str::from_utf8(s.get(s.len().checked_sub(3)?..)?)
                .ok()?
                .to_owned(),
        );
    }
    if let Some(n) = name {
        let n = std::str::from_utf8(n).ok()?;
        let n = match n.split_once('/') {
            Some((surname, first)) => format!("{} {}", first.trim(), surname.trim()),
            None => n.trim().to_owned(),
        };
        card.name = (!n.trim().is_empty()).then(|| Zeroizing::new(n.trim().to_owned()));
    }
    Some(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad_zero(s: &[u8], block: usize) -> Vec<u8> {
        let mut v = s.to_vec();
        v.resize(s.len().div_ceil(block) * block, 0);
        v
    }

    fn pad_pkcs7(s: &[u8], block: usize) -> Vec<u8> {
        let n = block - s.len() % block;
        let mut v = s.to_vec();
        v.extend(std::iter::repeat_n(u8::try_from(n).unwrap(), n));
        v
    }

    #[test]
    fn track2_with_and_without_sentinels_and_either_padding() {
        for raw in [
            &b";4111111111111111=25121011234567890?"[..],
            b";4111111111111111=25121011234567890?5",
            b"4111111111111111=25121011234567890",
        ] {
            for data in [pad_zero(raw, 16), pad_pkcs7(raw, 16), pad_pkcs7(raw, 8)] {
                let block = if data.len() % 16 == 0 { 16 } else { 8 };
                let card = parse(TrackKind::Track2, &data, block).expect("parses");
                assert_eq!(card.pan.as_str(), "4111111111111111");
                assert_eq!((card.exp_month, card.exp_year), (12, 2025));
                assert_eq!(card.service_code.as_deref(), Some("101"));
                assert!(card.name.is_none());
            }
        }
    }

    #[test]
    fn track1_keeps_the_name_in_reading_order() {
        let raw = b"%B5452300551227189^HOGAN/PAUL      ^08043210000000725000000?";
        let card = parse(TrackKind::Track1, &pad_zero(raw, 8), 8).unwrap();
        assert_eq!(card.pan.as_str(), "5452300551227189");
        assert_eq!((card.exp_month, card.exp_year), (4, 2008));
        assert_eq!(card.service_code.as_deref(), Some("321"));
        assert_eq!(card.name.as_deref().map(String::as_str), Some("PAUL HOGAN"));
    }

    #[test]
    fn pan_expiry_and_emv() {
        let card = parse(
            TrackKind::PanExpiry,
            &pad_pkcs7(b"4111111111111111=2712", 16),
            16,
        )
        .unwrap();
        assert_eq!(
            (card.pan.as_str(), card.exp_month, card.exp_year),
            ("4111111111111111", 12, 2027)
        );
        // 57: track 2 equivalent data; 5F20: name; inside a 70 template, zero padded.
        let tlv = hex_bytes(
            "702557134761739000010010D25122010000000000000F5F200D534D4954482F4A414E45202020",
        );
        let card = parse(TrackKind::EmvTlv, &pad_zero(&tlv, 16), 16).unwrap();
        assert_eq!(card.pan.as_str(), "4761739000010010");
        assert_eq!((card.exp_month, card.exp_year), (12, 2025));
        assert_eq!(card.service_code.as_deref(), Some("201"));
        assert_eq!(card.name.as_deref().map(String::as_str), Some("JANE SMITH"));
        // 5A and 5F24 alone.
        let tlv = hex_bytes("5A0847617390000100105F2403271231");
        let card = parse(TrackKind::EmvTlv, &pad_pkcs7(&tlv, 16), 16).unwrap();
        assert_eq!(
            (card.pan.as_str(), card.exp_month, card.exp_year),
            ("4761739000010010", 12, 2027)
        );
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn anything_else_is_refused_alike() {
        for (kind, data) in [
            (TrackKind::Track2, &b"4111111111111111D2512101"[..]),
            (TrackKind::Track2, b"4111111111111111=2513101"),
            (TrackKind::Track2, b"4111111111111111=25"),
            (TrackKind::Track2, b"41111=2512101"),
            (TrackKind::Track2, b"hello, world, this is not a track"),
            (TrackKind::Track1, b"%B4111111111111111^X^2512101?"),
            (TrackKind::Track1, b"B4111111111111111^DOE/JOHN^25"),
            (TrackKind::PanExpiry, b"4111111111111111=251201"),
            (TrackKind::EmvTlv, &[0x5A, 0x08, 0x47, 0x61]),
            (TrackKind::EmvTlv, &[0x9F, 0x02, 0x06, 0, 0, 0, 0, 1, 0]),
            (TrackKind::Track2, &[0xFF; 32]),
            (TrackKind::Track2, &[]),
        ] {
            assert!(
                parse(kind, &pad_zero(data, 16), 16).is_none(),
                "{kind:?} {data:?}"
            );
        }
        assert_eq!(
            format!(
                "{:?}",
                parse(TrackKind::PanExpiry, b"4111111111111111=2712", 8).unwrap()
            ),
            "CardData(..)"
        );
    }
}
