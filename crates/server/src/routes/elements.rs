//! The hosted card fields and strongroom.js (docs/client-side.md): the only pages the
//! vault serves. `/elements/v1/{field}` is the page a merchant frames, where the
//! shopper types the card; it posts the card to `/v1/client_sessions/{id}/cards` from
//! the vault's own origin. The files live in `web/` and are built into the binary.

use crate::error::{ApiError, codes};
use crate::extract::ApiQuery;
use crate::service::client_sessions::{self, Session};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    REFERRER_POLICY,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

const FIELD_HTML: &str = include_str!("../../../../web/elements/field.html");
const ELEMENTS_JS: &str = include_str!("../../../../web/elements/elements.js");
const STRONGROOM_JS: &str = include_str!("../../../../web/js/strongroom.js");
const STRONGROOM_DTS: &str = include_str!("../../../../web/js/strongroom.d.ts");

/// The fields a page can hold: the whole card, or one part of a split form.
const FIELDS: &[&str] = &["card", "number", "expiry", "cvc", "name"];

/// How long browsers keep the scripts: a day. strongroom.js is loaded with a published
/// integrity hash, which changes only with a release.
const SCRIPT_CACHE: &str = "public, max-age=86400";

/// `sha384-…` of a file, as `integrity` attributes name it.
pub fn integrity(text: &str) -> String {
    let digest = strongroom_crypto::httpsig::sha384(text.as_bytes());
    format!("sha384-{}", STANDARD.encode(digest))
}

/// The integrity hash of strongroom.js, for merchants' `<script integrity>`.
pub fn strongroom_js_integrity() -> &'static str {
    static SRI: OnceLock<String> = OnceLock::new();
    SRI.get_or_init(|| integrity(STRONGROOM_JS))
}

fn elements_js_integrity() -> &'static str {
    static SRI: OnceLock<String> = OnceLock::new();
    SRI.get_or_init(|| integrity(ELEMENTS_JS))
}

/// The brand rules the page checks numbers with: the vault's own IIN table, so the
/// field and the API never disagree about a brand.
#[derive(Serialize)]
struct Brands {
    /// `[digits, lo, hi, brand]`, first match wins.
    iins: Vec<(u32, u32, u32, &'static str)>,
    /// Brand → `[shortest, longest]` number length.
    lengths: BTreeMap<&'static str, (usize, usize)>,
    /// Brand → CVC length, where it is not 3.
    cvc: BTreeMap<&'static str, u8>,
}

fn brands() -> &'static Brands {
    static BRANDS: OnceLock<Brands> = OnceLock::new();
    BRANDS.get_or_init(|| {
        let mut iins = Vec::new();
        let mut lengths = BTreeMap::new();
        for (digits, lo, hi, brand) in strongroom_core::pan::iin_rows() {
            iins.push((digits, lo, hi, brand.as_str()));
            lengths.insert(brand.as_str(), brand.lengths());
        }
        Brands {
            iins,
            lengths,
            cvc: BTreeMap::from([("amex", 4)]),
        }
    })
}

/// What the page's script is told (`#sr-config`): nothing secret.
#[derive(Serialize)]
struct PageConfig<'a> {
    field: &'a str,
    session: &'a str,
    frame: &'a str,
    origin: &'a str,
    state: &'static str,
    collect_cvc: bool,
    mode: &'static str,
    api: String,
    brands: &'static Brands,
}

fn script(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(SCRIPT_CACHE));
    // Merchants' pages load it cross-origin with an integrity hash, which needs CORS.
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    res
}

/// strongroom.js, the merchant's SDK.
pub async fn strongroom_js() -> Response {
    script(STRONGROOM_JS, "text/javascript; charset=utf-8")
}

/// Its TypeScript declarations.
pub async fn strongroom_dts() -> Response {
    script(STRONGROOM_DTS, "application/typescript; charset=utf-8")
}

/// The hosted field page's script.
pub async fn elements_js() -> Response {
    script(ELEMENTS_JS, "text/javascript; charset=utf-8")
}

/// Query of a field page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldQuery {
    /// `cs_…`
    session: String,
    /// The framing page's origin, as strongroom.js read it from `location.origin`.
    origin: String,
    /// The element's id (letters, digits, `-`, `_`; 8 to 64), which the page and
    /// strongroom.js name each message with.
    frame: String,
}

fn frame_ok(frame: &str) -> bool {
    (8..=64).contains(&frame.len())
        && frame
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The page's security headers: nothing but its own nonce-bearing script and style
/// runs, it talks only to the vault, and only the session's origins may frame it.
fn page_headers(res: &mut Response, nonce: &str, ancestors: &str) -> Result<(), ApiError> {
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let h = res.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).map_err(|_| codes::INTERNAL)?,
    );
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(())
}

/// JSON safe inside a `<script type="application/json">` element.
fn script_json(v: &impl Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A page that shows nothing: for a request that names no usable session, framed by
/// the session's origins when there is one (so the merchant's page shows the refusal)
/// and by nobody otherwise.
fn refusal(status: StatusCode, ancestors: &str) -> Response {
    let mut res = (status, "").into_response();
    if page_headers(&mut res, "none", ancestors).is_err() {
        return codes::INTERNAL.into_response();
    }
    res
}

/// A hosted field page (`card`, or `number`, `expiry`, `cvc`, `name` of a split form)
/// for a client session, framed by one of its allowed origins. No key: the page holds
/// nothing until strongroom.js, in the framing page, hands it the publishable key and
/// client secret by `postMessage`. An expired or spent session gets a page that says
/// so; an unknown session, or an origin the session does not allow, gets nothing.
pub async fn field(
    State(state): State<AppState>,
    Path(field): Path<String>,
    ApiQuery(q): ApiQuery<FieldQuery>,
) -> Result<Response, ApiError> {
    if !FIELDS.contains(&field.as_str()) || !frame_ok(&q.frame) {
        return Ok(refusal(StatusCode::NOT_FOUND, "'none'"));
    }
    let Some(session) = client_sessions::find(&state, &q.session).await? else {
        return Ok(refusal(StatusCode::NOT_FOUND, "'none'"));
    };
    let ancestors = session.params.allowed_origins.join(" ");
    if !session.allows_origin(&q.origin) {
        return Ok(refusal(StatusCode::FORBIDDEN, &ancestors));
    }
    let nonce = STANDARD.encode(strongroom_crypto::random::bytes::<18>()?);
    let html = render(&state, &session, &field, &q, &nonce);
    let mut res = html.into_response();
    page_headers(&mut res, &nonce, &ancestors)?;
    Ok(res)
}

fn render(state: &AppState, s: &Session, field: &str, q: &FieldQuery, nonce: &str) -> String {
    let config = PageConfig {
        field,
        session: &s.record.id,
        frame: &q.frame,
        origin: &q.origin,
        state: s.status(state.now_ms()),
        collect_cvc: s.params.collect_cvc,
        mode: s.record.mode.as_str(),
        api: format!("/v1/client_sessions/{}/cards", s.record.id),
        brands: brands(),
    };
    FIELD_HTML
        .replace("{{NONCE}}", nonce)
        .replace("{{ELEMENTS_SRI}}", elements_js_integrity())
        .replace("{{CONFIG}}", &script_json(&config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_cannot_close_its_script_element() {
        let v =
            std::collections::BTreeMap::from([("origin", "</script><script>alert(1)</script>&")]);
        let out = script_json(&v);
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('&'));
        let back: std::collections::BTreeMap<String, String> = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back.get("origin").map(String::as_str),
            v.get("origin").copied()
        );
    }

    #[test]
    fn frame_ids_are_plain() {
        assert!(frame_ok("j0lC3Q4D6DTavO27wJJX-card"));
        assert!(!frame_ok("short"));
        assert!(!frame_ok("abc\"><script>x"));
    }

    #[test]
    fn the_page_has_every_placeholder_once_or_more() {
        for p in ["{{NONCE}}", "{{ELEMENTS_SRI}}", "{{CONFIG}}"] {
            assert!(FIELD_HTML.contains(p), "{p}");
        }
    }
}
