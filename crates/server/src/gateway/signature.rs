//! RFC 9421 HTTP message signatures with the account's Ed25519 keys, and the RFC 9530
//! `Content-Digest` (sha-256) of the body.
//!
//! Every label in `Signature-Input` must have a `Signature` and verify. Each signature
//! must cover `@method`, `@target-uri` (or `@authority` + `@path`, plus `@query` when
//! the request has a query), and `content-digest` when there is a body; it must carry
//! `created` (within the configured window of now) and `keyid` (a live signing key of
//! the caller's account). `alg`, when given, must be `ed25519`; `expires`, when given,
//! must not have passed; a `nonce`, when given, is accepted once per key.

use super::sfv::{self, Bare, Member};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, codes};
use crate::state::AppState;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use strongroom_crypto::{ct_eq, httpsig};
use strongroom_store::ControlStore;

/// Longest `nonce` accepted.
const MAX_NONCE: usize = 128;
/// Most signatures on one request.
const MAX_SIGNATURES: usize = 4;

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

fn parse(headers: &HeaderMap) -> ApiResult<Vec<Parsed>> {
    let input = header_text(headers, "signature-input")?.ok_or(codes::SIGNATURE_INVALID)?;
    let sigs = header_text(headers, "signature")?.ok_or(codes::SIGNATURE_INVALID)?;
    let input = sfv::parse_dictionary(&input).map_err(|_| codes::SIGNATURE_INVALID)?;
    let sigs = sfv::parse_dictionary(&sigs).map_err(|_| codes::SIGNATURE_INVALID)?;
    if input.is_empty() || input.len() > MAX_SIGNATURES {
        return Err(codes::SIGNATURE_INVALID);
    }
    let mut out = Vec::new();
    for (label, member) in &input {
        let Member::InnerList(items, params) = member else {
            return Err(codes::SIGNATURE_INVALID);
        };
        let signature = match sigs.iter().find(|(l, _)| l == label) {
            Some((
                _,
                Member::Item(sfv::Item {
                    bare: Bare::Bytes(b),
                    ..
                }),
            )) => b.clone(),
            _ => return Err(codes::SIGNATURE_INVALID),
        };
        let mut components = Vec::new();
        for item in items {
            // Parameterised components (`;sf`, `;key`, `;req`…) are not supported.
            match (&item.bare, item.params.is_empty()) {
                (Bare::String(s), true) if !components.contains(s) => components.push(s.clone()),
                _ => return Err(codes::SIGNATURE_INVALID),
            }
        }
        let (mut created, mut expires, mut keyid, mut nonce) = (None, None, None, None);
        for (k, v) in params {
            match (k.as_str(), v) {
                ("created", Bare::Integer(n)) => created = Some(*n),
                ("expires", Bare::Integer(n)) => expires = Some(*n),
                ("keyid", Bare::String(s)) => keyid = Some(s.clone()),
                ("nonce", Bare::String(s)) if !s.is_empty() && s.len() <= MAX_NONCE => {
                    nonce = Some(s.clone());
                }
                ("alg", Bare::String(s)) if s == "ed25519" => {}
                ("tag", Bare::String(_)) => {}
                _ => return Err(codes::SIGNATURE_INVALID),
            }
        }
        out.push(Parsed {
            params_line: sfv::serialize_inner_list(items, params),
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

/// Checks the `Content-Digest` header against the body (sha-256 required).
pub fn check_content_digest(headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let text = header_text(headers, "content-digest")
        .map_err(|_| codes::CONTENT_DIGEST_MISMATCH)?
        .ok_or(codes::CONTENT_DIGEST_MISMATCH)?;
    let dict = sfv::parse_dictionary(&text).map_err(|_| codes::CONTENT_DIGEST_MISMATCH)?;
    let claimed = dict
        .iter()
        .find_map(|(k, m)| match (k.as_str(), m) {
            (
                "sha-256",
                Member::Item(sfv::Item {
                    bare: Bare::Bytes(b),
                    ..
                }),
            ) => Some(b),
            _ => None,
        })
        .ok_or(codes::CONTENT_DIGEST_MISMATCH)?;
    if ct_eq(claimed, &httpsig::sha256(body)) {
        Ok(())
    } else {
        Err(codes::CONTENT_DIGEST_MISMATCH)
    }
}

/// Verifies every signature of the request for `who`'s account. `body` is the whole
/// request body.
pub async fn verify(
    state: &AppState,
    who: &Principal,
    req: &RequestView<'_>,
    body: &[u8],
) -> Result<(), ApiError> {
    let sigs = parse(req.headers)?;
    let now_s = state.now_ms().div_euclid(1000);
    let window = i64::try_from(state.config().signature_window.as_secs()).unwrap_or(300);
    let has_query = req.uri.query().is_some();
    for s in &sigs {
        let covers = |c: &str| s.components.iter().any(|x| x == c);
        let target = covers("@target-uri")
            || (covers("@authority") && covers("@path") && (!has_query || covers("@query")));
        if !covers("@method") || !target || (!body.is_empty() && !covers("content-digest")) {
            return Err(codes::SIGNATURE_INVALID);
        }
        // The signature base (RFC 9421 §2.5).
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

        let key = state
            .store()
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
            let fresh = state
                .store()
                .use_nonce(
                    &key.id,
                    nonce,
                    state.now_ms(),
                    expires_ms,
                    super::sweep_now(),
                )
                .await?;
            if !fresh {
                return Err(codes::SIGNATURE_INVALID);
            }
        }
    }
    Ok(())
}
