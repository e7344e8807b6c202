//! RFC 9421 HTTP message signatures with the account's Ed25519 keys, and the RFC 9530
//! `Content-Digest` (sha-256) of the body.
//!
//! Every label in `Signature-Input` must have a `Signature` and verify. Each signature
//! must cover `@method`, `@target-uri` (or `@authority` + `@path`, plus `@query` when
//! the request has a query), and `content-digest` when there is a body; it must carry
//! `created` (within the configured window of now) and `keyid` (a live signing key of
//! the caller's account). `alg`, when given, must be `ed25519`; `expires`, when given,
//! must not have passed; a `nonce`, when given, is accepted once per key. When the
//! account requires signatures, each must also carry a `nonce` and cover
//! `authorization`: otherwise a captured request could be replayed for the whole
//! window, or re-sent with another credential under the same signature.
//!
//! The three headers are RFC 8941 dictionaries, parsed and re-serialized by the `sfv`
//! crate (RFC 8941 mode: no dates or display strings). Malformed input is refused with
//! the header's error code, and the parser's message, which could quote it, is dropped.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, codes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use sfv::{BareItem, Dictionary, FieldType, InnerList, ListEntry, Parser, Version};
use std::time::Duration;
use strongroom_crypto::{ct_eq, httpsig};
use strongroom_store::{ControlStore, Store};

/// Longest `nonce` accepted.
const MAX_NONCE: usize = 128;
/// Most signatures on one request.
const MAX_SIGNATURES: usize = 4;
/// Longest structured header value parsed (signature headers are small).
const MAX_FIELD_LEN: usize = 8 * 1024;

/// Whether the request carries a signature (then it is always verified).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers.contains_key("signature-input") || headers.contains_key("signature")
}

/// What the signature base needs to know about the request.
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// `https` or `http`: how this server is reached.
    pub scheme: &'static str,
}

impl<'a> RequestView<'a> {
    /// From request parts.
    pub fn new(parts: &'a Parts, scheme: &'static str) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            scheme,
        }
    }

    /// `@authority`: the host (and port unless it is the scheme's default), lowercased.
    fn authority(&self) -> ApiResult<String> {
        let raw = match self.uri.authority() {
            Some(a) => a.as_str().to_owned(),
            None => self
                .headers
                .get(axum::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .ok_or(codes::SIGNATURE_INVALID)?
                .to_owned(),
        };
        let mut a = raw.trim().to_ascii_lowercase();
        let default_port = if self.scheme == "https" {
            ":443"
        } else {
            ":80"
        };
        if let Some(stripped) = a.strip_suffix(default_port) {
            a = stripped.to_owned();
        }
        Ok(a)
    }

    fn path(&self) -> &str {
        match self.uri.path() {
            "" => "/",
            p => p,
        }
    }

    fn query(&self) -> String {
        format!("?{}", self.uri.query().unwrap_or_default())
    }

    fn component(&self, name: &str) -> ApiResult<String> {
        Ok(match name {
            "@method" => self.method.as_str().to_owned(),
            "@authority" => self.authority()?,
            "@scheme" => self.scheme.to_owned(),
            "@path" => self.path().to_owned(),
            "@query" => self.query(),
            "@request-target" => match self.uri.query() {
                Some(q) => format!("{}?{q}", self.path()),
                None => self.path().to_owned(),
            },
            "@target-uri" => {
                let mut s = format!("{}://{}{}", self.scheme, self.authority()?, self.path());
                if let Some(q) = self.uri.query() {
                    s.push('?');
                    s.push_str(q);
                }
                s
            }
            n if n.starts_with('@') => return Err(codes::SIGNATURE_INVALID),
            field => {
                if field.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(codes::SIGNATURE_INVALID);
                }
                let mut values = Vec::new();
                for v in self.headers.get_all(field) {
                    let v = v.to_str().map_err(|_| codes::SIGNATURE_INVALID)?;
                    values.push(v.trim());
                }
                if values.is_empty() {
                    return Err(codes::SIGNATURE_INVALID);
                }
                values.join(", ")
            }
        })
    }
}

/// One parsed signature, ready to verify.
struct Parsed {
    components: Vec<String>,
    params_line: String,
    created: i64,
    expires: Option<i64>,
    keyid: String,
    nonce: Option<String>,
    signature: Vec<u8>,
}

fn header_text(headers: &HeaderMap, name: &str) -> ApiResult<Option<String>> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v.to_str().map_err(|_| codes::SIGNATURE_INVALID)?;
        out = Some(match out {
            Some(prev) => format!("{prev}, {v}"),
            None => v.to_owned(),
        });
    }
    Ok(out)
}

/// Parses a structured dictionary (RFC 8941 §4.2.2); `None` when it is malformed or
/// longer than [`MAX_FIELD_LEN`]. A repeated key keeps its last value, as the RFC says.
fn dictionary(text: &str) -> Option<Dictionary> {
    if text.len() > MAX_FIELD_LEN {
        return None;
    }
    Parser::new(text)
        .with_version(Version::Rfc8941)
        .parse_dictionary()
        .ok()
}

/// The `@signature-params` value (RFC 9421 §2.3): the canonical serialization of the
/// label's inner list, which is what a one-member list serializes to.
fn params_line(list: &InnerList) -> Option<String> {
    vec![ListEntry::InnerList(list.clone())].serialize()
}

fn parse(headers: &HeaderMap) -> ApiResult<Vec<Parsed>> {
    let input = header_text(headers, "signature-input")?.ok_or(codes::SIGNATURE_INVALID)?;
    let sigs = header_text(headers, "signature")?.ok_or(codes::SIGNATURE_INVALID)?;
    let input = dictionary(&input).ok_or(codes::SIGNATURE_INVALID)?;
    let sigs = dictionary(&sigs).ok_or(codes::SIGNATURE_INVALID)?;
    if input.is_empty() || input.len() > MAX_SIGNATURES {
        return Err(codes::SIGNATURE_INVALID);
    }
    let mut out = Vec::new();
    for (label, member) in &input {
        let ListEntry::InnerList(list) = member else {
            return Err(codes::SIGNATURE_INVALID);
        };
        let signature = match sigs.get(label.as_str()) {
            Some(ListEntry::Item(sfv::Item {
                bare_item: BareItem::ByteSequence(b),
                ..
            })) => b.clone(),
            _ => return Err(codes::SIGNATURE_INVALID),
        };
        let mut components: Vec<String> = Vec::new();
        for item in &list.items {
            // Parameterised components (`;sf`, `;key`, `;req`…) are not supported.
            match (&item.bare_item, item.params.is_empty()) {
                (BareItem::String(s), true) if !components.iter().any(|c| c == s.as_str()) => {
                    components.push(s.as_str().to_owned());
                }
                _ => return Err(codes::SIGNATURE_INVALID),
            }
        }
        let (mut created, mut expires, mut keyid, mut nonce) = (None, None, None, None);
        for (k, v) in &list.params {
            match (k.as_str(), v) {
                ("created", BareItem::Integer(n)) => created = Some(i64::from(*n)),
                ("expires", BareItem::Integer(n)) => expires = Some(i64::from(*n)),
                ("keyid", BareItem::String(s)) => keyid = Some(s.as_str().to_owned()),
                ("nonce", BareItem::String(s))
                    if !s.as_str().is_empty() && s.as_str().len() <= MAX_NONCE =>
                {
                    nonce = Some(s.as_str().to_owned());
                }
                ("alg", BareItem::String(s)) if s.as_str() == "ed25519" => {}
                ("tag", BareItem::String(_)) => {}
                _ => return Err(codes::SIGNATURE_INVALID),
            }
        }
        out.push(Parsed {
            params_line: params_line(list).ok_or(codes::SIGNATURE_INVALID)?,
            components,
            created: created.ok_or(codes::SIGNATURE_INVALID)?,
            expires,
            keyid: keyid.ok_or(codes::SIGNATURE_INVALID)?,
            nonce,
            signature,
        });
    }
    Ok(out)
}

/// The signature base (RFC 9421 §2.5).
fn signature_base(req: &RequestView<'_>, s: &Parsed) -> ApiResult<String> {
    let mut base = String::new();
    for c in &s.components {
        let value = req.component(c)?;
        if value.contains('\n') {
            return Err(codes::SIGNATURE_INVALID);
        }
        base.push_str(&format!("\"{c}\": {value}\n"));
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&s.params_line);
    Ok(base)
}

/// Checks the `Content-Digest` header against the body (sha-256 required).
pub fn check_content_digest(headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let text = header_text(headers, "content-digest")
        .map_err(|_| codes::CONTENT_DIGEST_MISMATCH)?
        .ok_or(codes::CONTENT_DIGEST_MISMATCH)?;
    let dict = dictionary(&text).ok_or(codes::CONTENT_DIGEST_MISMATCH)?;
    let claimed = match dict.get("sha-256") {
        Some(ListEntry::Item(sfv::Item {
            bare_item: BareItem::ByteSequence(b),
            ..
        })) => b,
        _ => return Err(codes::CONTENT_DIGEST_MISMATCH),
    };
    if ct_eq(claimed, &httpsig::sha256(body)) {
        Ok(())
    } else {
        Err(codes::CONTENT_DIGEST_MISMATCH)
    }
}

/// Verifies every signature of the request for `who`'s account. `body` is the whole
/// request body; `required`: the account requires signatures (then a nonce and the
/// `authorization` header must be covered too).
pub async fn verify(
    store: &Store,
    now_ms: i64,
    window: Duration,
    who: &Principal,
    req: &RequestView<'_>,
    body: &[u8],
    required: bool,
) -> Result<(), ApiError> {
    let sigs = parse(req.headers)?;
    let now_s = now_ms.div_euclid(1000);
    let window = i64::try_from(window.as_secs()).unwrap_or(300);
    let has_query = req.uri.query().is_some();
    for s in &sigs {
        let covers = |c: &str| s.components.iter().any(|x| x == c);
        let target = covers("@target-uri")
            || (covers("@authority") && covers("@path") && (!has_query || covers("@query")));
        if !covers("@method") || !target || (!body.is_empty() && !covers("content-digest")) {
            return Err(codes::SIGNATURE_INVALID);
        }
        if required && (s.nonce.is_none() || !covers("authorization")) {
            return Err(codes::SIGNATURE_INVALID);
        }
        let base = signature_base(req, s)?;
        let key = store
            .signing_key(&who.account_id, &s.keyid)
            .await?
            .filter(|k| k.revoked_ms.is_none())
            .ok_or(codes::SIGNATURE_INVALID)?;
        if !httpsig::ed25519_verify(&key.public_key, base.as_bytes(), &s.signature) {
            return Err(codes::SIGNATURE_INVALID);
        }
        // Only a genuine signature gets to the time and replay checks.
        if (now_s - s.created).abs() > window || s.expires.is_some_and(|e| e < now_s) {
            return Err(codes::SIGNATURE_EXPIRED);
        }
        if covers("content-digest") {
            check_content_digest(req.headers, body)?;
        }
        if let Some(nonce) = &s.nonce {
            let expires_ms = s
                .created
                .saturating_add(window)
                .saturating_add(1)
                .saturating_mul(1000);
            // The nonce is the gateway's bookkeeping and carries no audit record: the
            // request's record rides with the handler's write, or is appended after it,
            // with the real outcome (carried here it would say `success` too early).
            #[allow(clippy::disallowed_methods)]
            let nonces = store.unaudited();
            let fresh = nonces
                .use_nonce(
                    &key.id,
                    nonce,
                    now_ms,
                    expires_ms,
                    super::sweep::sweep_now(),
                )
                .await?;
            if !fresh {
                return Err(codes::SIGNATURE_INVALID);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::Engine;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn line(input: &str) -> String {
        let dict = dictionary(input).unwrap();
        let Some(ListEntry::InnerList(list)) = dict.values().next() else {
            panic!("not an inner list")
        };
        params_line(list).unwrap()
    }

    /// RFC 9421 §B.2.6: the Ed25519 example request, its `Signature-Input` and
    /// `Signature`, and the B.1.4 public key. The base must be byte-identical to the
    /// RFC's for the RFC's signature to verify.
    #[test]
    fn rfc9421_b26_known_answer() {
        let input = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        let h = headers(&[
            ("host", "example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            ("content-length", "18"),
            ("signature-input", input),
            (
                "signature",
                "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
            ),
        ]);
        let parsed = parse(&h).unwrap();
        assert_eq!(parsed.len(), 1);
        let s = &parsed[0];
        assert_eq!(s.created, 1_618_884_473);
        assert_eq!(s.keyid, "test-key-ed25519");
        assert_eq!(
            s.params_line,
            input.strip_prefix("sig-b26=").unwrap(),
            "the @signature-params line"
        );
        let uri: Uri = "/foo?param=Value&Pet=dog".parse().unwrap();
        let req = RequestView {
            method: &Method::POST,
            uri: &uri,
            headers: &h,
            scheme: "https",
        };
        let base = signature_base(&req, s).unwrap();
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\
             \"@authority\": example.com\n\"content-type\": application/json\n\
             \"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \
             \"@authority\" \"content-type\" \"content-length\");created=1618884473;\
             keyid=\"test-key-ed25519\""
        );
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs")
            .unwrap();
        assert!(httpsig::ed25519_verify(
            &public,
            base.as_bytes(),
            &s.signature
        ));
    }

    #[test]
    fn params_lines_are_canonical() {
        // RFC 9421 §2.3 / B.2.1 and B.2.2, and string escapes.
        for input in [
            r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#,
            r#"sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example""#,
            r#"a=("x\"y" "b\\c");k="v""#,
            "a=(\"x\");expires=-5;flag",
        ] {
            let (label, _) = input.split_once('=').unwrap();
            assert_eq!(format!("{label}={}", line(input)), input);
        }
        // Whitespace that the grammar allows is not part of the canonical form.
        assert_eq!(
            line("a=(  \"x\"   \"y\" );created=1, b=1"),
            r#"("x" "y");created=1"#
        );
    }

    #[test]
    fn malformed_signature_headers_are_signature_invalid() {
        let sig = "a=:AAAA:";
        let cases: Vec<String> = vec![
            String::new(),
            "Sig=()".into(),
            "a=(".into(),
            "a=(\"x\"".into(),
            "a=\"unterminated".into(),
            "a=1,".into(),
            "a=1 b=2".into(),
            "a=(\"x\"\"y\")".into(),
            "a=(\"@method\");created=1234567890123456;keyid=\"k\"".into(),
            "a=(\"@method\");created=1.5;keyid=\"k\"".into(),
            // RFC 9651 dates and display strings are not RFC 8941.
            "a=(\"@method\");created=@1618884473;keyid=\"k\"".into(),
            "a=(\"@method\");created=1;keyid=%\"k\"".into(),
            // An item, not an inner list.
            "a=\"@method\"".into(),
            // Parameterised or repeated components, unknown parameters, missing keyid.
            "a=(\"@query-param\";name=\"x\");created=1;keyid=\"k\"".into(),
            "a=(\"@method\" \"@method\");created=1;keyid=\"k\"".into(),
            "a=(\"@method\");created=1;keyid=\"k\";foo=1".into(),
            "a=(\"@method\");created=1".into(),
            "a=(\"@method\");created=1;keyid=\"k\";alg=\"rsa-pss-sha512\"".into(),
            // Too many signatures, and too long.
            "a=(),b=(),c=(),d=(),e=()".into(),
            format!(
                "a=(\"@method\");created=1;keyid=\"{}\"",
                "k".repeat(MAX_FIELD_LEN)
            ),
        ];
        for input in &cases {
            let h = headers(&[("signature-input", input), ("signature", sig)]);
            assert!(
                matches!(parse(&h), Err(e) if e.code == "signature_invalid"),
                "accepted {input:?}"
            );
        }
        // A label without a signature, or a signature that is not a byte sequence.
        let good = "a=(\"@method\");created=1;keyid=\"k\"";
        for sig in ["b=:AAAA:", "a=\"AAAA\"", "a=:not base64!:", "a=:AAAA"] {
            let h = headers(&[("signature-input", good), ("signature", sig)]);
            assert!(parse(&h).is_err(), "accepted {sig:?}");
        }
        let h = headers(&[("signature-input", good), ("signature", sig)]);
        assert_eq!(
            parse(&h).unwrap()[0].params_line,
            r#"("@method");created=1;keyid="k""#
        );
    }

    #[test]
    fn content_digest() {
        let body = br#"{"hello": "world"}"#;
        // RFC 9530 §B.1's digest of this body.
        let good = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
        check_content_digest(&headers(&[("content-digest", good)]), body).unwrap();
        check_content_digest(
            &headers(&[("content-digest", &format!("sha-512=:AAAA:, {good}"))]),
            body,
        )
        .unwrap();
        for bad in [
            "sha-256=:AAAA:",
            "sha-512=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            "sha-256=\"X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=\"",
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:;",
            "",
        ] {
            let r = check_content_digest(&headers(&[("content-digest", bad)]), body);
            assert!(
                matches!(r, Err(e) if e.code == "content_digest_mismatch"),
                "accepted {bad:?}"
            );
        }
        let long = format!("{good}, x=\"{}\"", "a".repeat(MAX_FIELD_LEN));
        assert!(check_content_digest(&headers(&[("content-digest", &long)]), body).is_err());
        assert!(check_content_digest(&HeaderMap::new(), body).is_err());
    }
}
