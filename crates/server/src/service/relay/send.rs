//! Sending: `POST /v1/relay` (docs/relay.md, "Sending"). The caller names an approved
//! destination and writes `{{card_…:field}}` expressions where card data must go; the
//! vault substitutes the values, sends the request, and returns the destination's
//! answer cleaned of every card number and substituted value.
//!
//! The order of work is what makes a refusal send nothing and spend nothing: every
//! check that needs no I/O (method, headers, expressions, pointers), then the
//! destination (approved, its address checked now), then the cards (each of the
//! account and mode), then a trial render with a stand-in CVC (so a value that cannot
//! be placed refuses before a CVC is spent), then the CVCs, then the request.

use crate::auth::Principal;
use crate::service::cards;
use crate::service::events::EventType;
use crate::service::relay::{Approved, approve, loopback_for};
use crate::service::{Result, ServiceError};
use crate::state::AppState;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use strongroom_core::relay::{
    BodyKind, Escape, Field, JsonPointer, RelayError, Template, Tokenized, find_json_pans, scrub,
};
use strongroom_core::{Pan, Scope};
use zeroize::Zeroizing;

/// The most headers a relay request may set.
pub const MAX_HEADERS: usize = 50;
/// The most `tokenize_response_fields`.
pub const MAX_TOKENIZE_FIELDS: usize = 20;
/// Methods the relay sends.
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Whether the relay sets this request header itself (or never sends it): the raw
/// form leaves such headers of the incoming request behind instead of refusing them.
pub fn header_set_by_relay(name: &HeaderName) -> bool {
    header_refused(name)
}

/// Request headers a caller may not set: the connection's own (hop-by-hop, framing,
/// `Host`), the vault's (`Strongroom-…`), and `Accept-Encoding` (the relay asks for an
/// unencoded answer, which it can clean).
pub(super) fn header_refused(name: &HeaderName) -> bool {
    const REFUSED: [&str; 13] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
    ];
    let n = name.as_str();
    REFUSED.contains(&n) || n.starts_with("strongroom-")
}

/// Response headers that never reach the caller: hop-by-hop ones, framing (the body
/// is rewritten, its length is the vault's), and cookies (the destination's session is
/// not the merchant's).
pub(super) fn header_dropped(name: &HeaderName) -> bool {
    const DROPPED: [&str; 12] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "set-cookie",
        "set-cookie2",
    ];
    DROPPED.contains(&name.as_str())
}

/// How values are escaped in a body of this `Content-Type`: JSON (`application/json`,
/// `+json`), a form (`application/x-www-form-urlencoded`), XML (`application/xml`,
/// `text/xml`, `+xml`), or as they are (anything else, `text/plain`).
pub fn escape_for(content_type: Option<&str>) -> Escape {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/json" || essence.ends_with("+json") {
        Escape::Json
    } else if essence == "application/x-www-form-urlencoded" {
        Escape::Form
    } else if essence == "application/xml" || essence == "text/xml" || essence.ends_with("+xml") {
        Escape::Xml
    } else {
        Escape::None
    }
}

/// What the caller asks the relay to send.
pub struct RelayRequest {
    /// `https://host[:port]/path[?query]`: an approved destination.
    pub url: String,
    /// One of [`METHODS`].
    pub method: String,
    /// Header names and values; values may hold expressions.
    pub headers: Vec<(String, String)>,
    /// The body, which may hold expressions; escaped by its `Content-Type` header.
    pub body: Option<String>,
    /// JSON pointers into the destination's JSON answer whose card numbers become
    /// tokens instead of masks.
    pub tokenize_response_fields: Vec<String>,
}

/// The destination's answer, cleaned.
pub struct Relayed {
    /// Its status.
    pub status: u16,
    /// Its headers, less hop-by-hop, framing and cookies, cleaned like the body.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body, cleaned.
    pub body: Vec<u8>,
    /// From sending the request to having read the whole answer.
    pub latency: Duration,
}

/// Why a relay that was sent failed (`relay.failed`); see [`ServiceError`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    Timeout,
    Upstream,
    TooLarge,
    Encoded,
}

impl Failure {
    pub(super) fn error(self) -> ServiceError {
        match self {
            Self::Timeout => ServiceError::RelayUpstreamTimeout,
            Self::Upstream => ServiceError::RelayUpstreamFailed,
            Self::TooLarge => ServiceError::RelayResponseTooLarge,
            Self::Encoded => ServiceError::RelayResponseEncoded,
        }
    }

    pub(super) fn code(self) -> &'static str {
        match self {
            Self::Timeout => "relay_upstream_timeout",
            Self::Upstream => "relay_upstream_failed",
            Self::TooLarge => "relay_response_too_large",
            Self::Encoded => "relay_response_encoded",
        }
    }

    fn of(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Upstream
        }
    }
}

/// The `object` of `relay.completed` and `relay.failed` events. No card data: card ids,
/// where the request went (the path, never the query), and how it ended.
#[derive(Debug, Serialize)]
pub struct RelayEventObject<'a> {
    /// Always `relay`.
    pub object: &'static str,
    /// The destination's host.
    pub host: &'a str,
    /// The destination's port.
    pub port: i64,
    /// The request's path (without its query).
    pub path: &'a str,
    /// The method sent.
    pub method: &'a str,
    /// The cards whose data was sent.
    pub cards: Vec<&'a str>,
    /// How it ended: `status` (`relay.completed`) or `failure_code` (`relay.failed`),
    /// and `latency_ms`.
    #[serde(flatten)]
    pub ended: Ended,
}

/// A card's values, opened for one relay.
struct Values {
    /// The card's fingerprint (not a secret: a keyed digest), for the risk counters.
    fingerprint: Vec<u8>,
    number: Zeroizing<String>,
    name: Option<Zeroizing<String>>,
    exp_month: String,
    exp_year: String,
    exp_year2: String,
    cvc: Option<Zeroizing<String>>,
    /// The translated PIN block the request names for this card, once taken.
    pin_block: Option<Zeroizing<String>>,
}

impl Values {
    fn get(&self, field: Field, cvc_stand_in: bool) -> Option<&str> {
        Some(match field {
            Field::Number => self.number.as_str(),
            Field::ExpMonth => &self.exp_month,
            Field::ExpYear => &self.exp_year,
            Field::ExpYear2 => &self.exp_year2,
            Field::CardholderName => self.name.as_deref()?.as_str(),
            Field::Cvc if cvc_stand_in => "000",
            Field::Cvc => self.cvc.as_deref()?.as_str(),
            Field::PinBlock if cvc_stand_in => "0000000000000000",
            Field::PinBlock => self.pin_block.as_deref()?.as_str(),
        })
    }
}

/// A rendered body handed to the HTTP client: zeroized when the client drops it.
struct SecretBody(Zeroizing<String>);

impl AsRef<[u8]> for SecretBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The templates of one request: its body and each header value.
struct Templates<'a> {
    body: Option<Template<'a>>,
    headers: Vec<(HeaderName, Template<'a>)>,
}

impl<'a> Templates<'a> {
    fn parse(req: &'a RelayRequest) -> Result<Self> {
        if req.headers.len() > MAX_HEADERS {
            return Err(ServiceError::RelayHeaderInvalid);
        }
        let mut headers = Vec::with_capacity(req.headers.len());
        let mut content_type = None;
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ServiceError::RelayHeaderInvalid)?;
            if header_refused(&name) {
                return Err(ServiceError::RelayHeaderInvalid);
            }
            if name == reqwest::header::CONTENT_TYPE {
                content_type = Some(value.as_str());
            }
            headers.push((name, Template::parse(value, Escape::None)?));
        }
        let body = match &req.body {
            Some(b) => Some(Template::parse(b, escape_for(content_type))?),
            None => None,
        };
        Ok(Self { body, headers })
    }

    /// Every card named, once, in order of first use.
    fn cards(&self) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        let all = self.body.iter().chain(self.headers.iter().map(|(_, t)| t));
        for id in all.flat_map(|t| t.cards().iter().copied()) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// The cards whose CVC is asked for.
    fn cvc_cards(&self) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        let all = self.body.iter().chain(self.headers.iter().map(|(_, t)| t));
        for (id, f) in all.flat_map(Template::expressions) {
            if f == Field::Cvc && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// The translated PIN blocks asked for, as (card, `pint_…`), once each.
    fn pin_blocks(&self) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        let all = self.body.iter().chain(self.headers.iter().map(|(_, t)| t));
        for pair in all.flat_map(Template::pin_blocks) {
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
        out
    }

    /// The body and header values with every expression replaced.
    fn render(
        &self,
        values: &HashMap<&str, Values>,
        cvc_stand_in: bool,
    ) -> Result<(Option<Zeroizing<String>>, HeaderMap)> {
        let lookup = |id: &str, f: Field| values.get(id).and_then(|v| v.get(f, cvc_stand_in));
        let body = match &self.body {
            Some(t) => Some(t.render(lookup)?),
            None => None,
        };
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, t) in &self.headers {
            let v = t.render(lookup)?;
            let mut value =
                HeaderValue::from_str(&v).map_err(|_| ServiceError::RelayHeaderInvalid)?;
            value.set_sensitive(!t.is_literal());
            headers.append(name.clone(), value);
        }
        Ok((body, headers))
    }
}

/// The writes of a relay's risk assessments (one per card), started: settled after the
/// relay's own record, whose group commit they join, rather than each taking a commit
/// of its own before anything is sent. Dropped unsettled (the relay refused later),
/// they are still stored.
#[must_use = "settle them after the relay's own record"]
struct Assessments(Vec<crate::service::assessments::Recording>);

impl Assessments {
    async fn settle(self) {
        for r in self.0 {
            r.settle().await;
        }
    }
}

/// Opens the named cards of the caller's account and mode, and assesses each use. One
/// that does not exist there (unknown, another account's or mode's, deleted) refuses the
/// relay.
async fn open_cards<'a>(
    state: &AppState,
    who: &Principal,
    ids: &[&'a str],
) -> Result<(HashMap<&'a str, Values>, Assessments)> {
    let mut out = HashMap::with_capacity(ids.len());
    let mut assessments = Assessments(Vec::with_capacity(ids.len()));
    if ids.is_empty() {
        return Ok((out, assessments));
    }
    let keys = state.keyring().account(&who.account_id).await?;
    for id in ids {
        let record = match cards::get(state, who, id).await {
            Ok(r) => r,
            Err(ServiceError::NotFound | ServiceError::Domain(_)) => {
                return Err(ServiceError::RelayCardUnknown);
            }
            Err(e) => return Err(e),
        };
        let fingerprint = [record.fingerprint.as_slice()];
        crate::service::suspensions::check_card(state, &who.account_id, who.mode, fingerprint)
            .await?;
        let risk = crate::service::assessments::Implicit {
            action: crate::service::assessments::Action::Relay,
            ip: None,
        };
        let (fp, bin) = (&record.fingerprint, &record.bin);
        let assessment = crate::service::assessments::implicit(state, who, &risk, fp, bin).await?;
        assessments.0.push(assessment);
        let clear = cards::open(&keys, &record)?;
        out.insert(
            *id,
            Values {
                fingerprint: record.fingerprint.clone(),
                number: clear.number,
                name: clear.cardholder_name,
                exp_month: format!("{:02}", record.exp_month),
                exp_year: format!("{:04}", record.exp_year),
                exp_year2: format!("{:02}", record.exp_year.rem_euclid(100)),
                cvc: None,
                pin_block: None,
            },
        );
    }
    Ok((out, assessments))
}

/// Sends `req` for `who` and returns the cleaned answer (see the module's docs).
pub async fn relay(state: &AppState, who: &Principal, req: &RelayRequest) -> Result<Relayed> {
    who.require(Scope::CardsRelay)?;
    crate::service::integrity::require(state, who, "relay").await?;
    let method = METHODS
        .iter()
        .find(|m| **m == req.method)
        .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
        .ok_or(ServiceError::InvalidParameter)?;
    if req.tokenize_response_fields.len() > MAX_TOKENIZE_FIELDS {
        return Err(ServiceError::Relay(RelayError::PointerInvalid));
    }
    let pointers = req
        .tokenize_response_fields
        .iter()
        .map(|p| JsonPointer::parse(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let templates = Templates::parse(req)?;
    let approved = approve(state, &who.account_id, who.mode, &req.url).await?;
    let ids = templates.cards();
    let (mut values, assessments) = open_cards(state, who, &ids).await?;
    // A trial render: a value that is missing or cannot be placed refuses the relay
    // before any CVC or PIN block is spent.
    let cvc_cards = templates.cvc_cards();
    let pin_blocks = templates.pin_blocks();
    if !cvc_cards.is_empty() || !pin_blocks.is_empty() {
        templates.render(&values, true)?;
    }
    for id in cvc_cards {
        let cvc = take_cvc(state, who, id).await?;
        match (values.get_mut(id), cvc) {
            (Some(v), Some(cvc)) => v.cvc = Some(cvc),
            _ => return Err(RelayError::ValueUnavailable { field: Field::Cvc }.into()),
        }
    }
    for (id, translation) in pin_blocks {
        let block = take_pin_block(state, who, id, translation).await?;
        match values.get_mut(id) {
            Some(v) if v.pin_block.is_none() => v.pin_block = Some(block),
            // Not loaded, or a second translation for the card (body and header).
            _ => {
                return Err(RelayError::ValueUnavailable {
                    field: Field::PinBlock,
                }
                .into());
            }
        }
    }
    let (body, mut headers) = templates.render(&values, false)?;
    headers.insert(
        reqwest::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    // The CVCs are removed wherever they appear; card numbers (every one the vault
    // holds is Luhn-valid) are masked, like any other number in the answer.
    let secrets: Vec<&str> = values
        .values()
        .flat_map(|v| [v.cvc.as_deref(), v.pin_block.as_deref()])
        .flatten()
        .map(String::as_str)
        .collect();
    let sent = send(state, &approved, method.clone(), headers, body).await;
    let mut ev = RelayEventObject {
        object: "relay",
        host: &approved.destination.host,
        port: approved.destination.port,
        path: approved.url.path(),
        method: method.as_str(),
        cards: ids.clone(),
        ended: Ended::default(),
    };
    let (status, raw_headers, raw_body, latency) = match sent {
        Ok(s) => s,
        Err((failure, latency)) => {
            ev.ended = Ended::failed(failure, latency);
            record(state, who, EventType::RelayFailed, &ev, "failed").await;
            assessments.settle().await;
            return Err(failure.error());
        }
    };
    ev.ended = Ended::answered(status, latency);
    if status == 402 {
        // 402 Payment Required: the processor declined; each card counts it for a day.
        for v in values.values() {
            let failure = crate::risk::velocity::Failure::Decline;
            let (acct, mode) = (&who.account_id, who.mode);
            crate::service::risk_failures::card_failed(state, acct, mode, &v.fingerprint, failure)
                .await;
        }
    }
    let kind = answer_kind(&raw_headers);
    let tokens = response_tokens(state, who, &raw_body, kind, &pointers, &values).await?;
    let secret_bytes: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    let reps: Vec<Tokenized<'_>> = tokens
        .iter()
        .map(|(range, token)| Tokenized {
            range: range.clone(),
            token,
        })
        .collect();
    let (clean_headers, clean_body) =
        clean_answer(&raw_headers, &raw_body, kind, &secret_bytes, &reps);
    record(state, who, EventType::RelayCompleted, &ev, "completed").await;
    assessments.settle().await;
    Ok(Relayed {
        status,
        headers: clean_headers,
        body: clean_body,
        latency,
    })
}

/// How a destination's answer is cleaned: as JSON when it says it is JSON.
pub(super) fn answer_kind(headers: &HeaderMap) -> BodyKind {
    match headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) if escape_for(Some(ct)) == Escape::Json => BodyKind::Json,
        _ => BodyKind::Other,
    }
}

/// A destination's answer cleaned: headers less hop-by-hop ones, framing and cookies,
/// each value and the body with every card number masked (or replaced by its token,
/// `reps`) and every one of `secrets` removed.
pub(super) fn clean_answer(
    headers: &HeaderMap,
    body: &[u8],
    kind: BodyKind,
    secrets: &[&[u8]],
    reps: &[Tokenized<'_>],
) -> (Vec<(HeaderName, HeaderValue)>, Vec<u8>) {
    // A second pass for numbers a byte scan cannot see (JSON escapes, percent-encoding).
    let clean_body = match escape_for(
        headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    ) {
        Escape::Json => deep_clean_json(scrub(body, kind, secrets, reps)),
        Escape::Form => deep_clean_form(scrub(body, kind, secrets, reps)),
        _ => scrub(body, kind, secrets, reps),
    };
    let mut clean_headers = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if header_dropped(name) {
            continue;
        }
        let cleaned = scrub(value.as_bytes(), BodyKind::Other, secrets, &[]);
        if let Ok(v) = HeaderValue::from_bytes(&cleaned) {
            clean_headers.push((name.clone(), v));
        }
    }
    (clean_headers, clean_body)
}

/// Masks the card numbers in a decoded text; `None` if it has none.
fn masked(text: &str) -> Option<String> {
    let out = scrub(text.as_bytes(), BodyKind::Other, &[], &[]);
    (out != text.as_bytes()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// A second pass over a cleaned JSON body, for the spelling the first cannot see: a
/// number hidden by JSON escapes (`"\u0034242…"`). The document is parsed and every
/// string, member name and integer scanned as decoded; only if one holds a card number
/// is the document rewritten, masked (so a clean body keeps the bytes the partner
/// wrote). Card ids the vault wrote are left alone. Not JSON: as it is.
pub(super) fn deep_clean_json(body: Vec<u8>) -> Vec<u8> {
    fn walk(v: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::String(s) => {
                if strongroom_core::parse_id(strongroom_core::IdKind::Card, s).is_ok() {
                    return false;
                }
                match masked(s) {
                    Some(m) => {
                        *s = m;
                        true
                    }
                    None => false,
                }
            }
            Value::Number(n) => match n.as_u64().map(|n| n.to_string()).and_then(|t| masked(&t)) {
                Some(m) => {
                    *v = Value::String(m);
                    true
                }
                None => false,
            },
            Value::Array(items) => items.iter_mut().fold(false, |hit, i| walk(i) | hit),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                let mut hit = false;
                for (k, mut val) in entries {
                    hit |= walk(&mut val);
                    let key = masked(&k).inspect(|_| hit = true).unwrap_or(k);
                    map.insert(key, val);
                }
                hit
            }
            Value::Bool(_) | Value::Null => false,
        }
    }
    // A digit or a separator can be hidden only by a `\u` escape: without one, the
    // decoded text is what the first pass read, and the parse is skipped.
    if !body.windows(2).any(|w| w == b"\\u") {
        return body;
    }
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    if walk(&mut doc) {
        serde_json::to_vec(&doc).unwrap_or_default()
    } else {
        body
    }
}

/// The same second pass for a form body or a query string: a number hidden by
/// percent-encoding (`4242%204242…`, `%34242…`). Every name and value is decoded and
/// scanned; only if one holds a card number is the whole re-encoded, masked.
pub(super) fn deep_clean_form(body: Vec<u8>) -> Vec<u8> {
    // Only `%` and `+` decode to something else: without them there is nothing hidden.
    if !body.iter().any(|b| *b == b'%' || *b == b'+') {
        return body;
    }
    let mut hit = false;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| {
            let k = masked(&k)
                .inspect(|_| hit = true)
                .unwrap_or_else(|| k.into_owned());
            let v = masked(&v)
                .inspect(|_| hit = true)
                .unwrap_or_else(|| v.into_owned());
            (k, v)
        })
        .collect();
    if !hit {
        return body;
    }
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

/// The tokens for the card numbers in the fields the caller named: a number that is
/// one of the relayed cards, or a card the account already holds in this mode, becomes
/// that card's id. Any other number stays to be masked: the answer does not say its
/// expiry, and a card is never stored without one.
async fn response_tokens(
    state: &AppState,
    who: &Principal,
    body: &[u8],
    kind: BodyKind,
    pointers: &[JsonPointer],
    values: &HashMap<&str, Values>,
) -> Result<Vec<(std::ops::Range<usize>, String)>> {
    if kind != BodyKind::Json || pointers.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for hit in find_json_pans(body, pointers) {
        let relayed = values
            .iter()
            .find(|(_, v)| v.number.as_str() == hit.pan.expose_digits())
            .map(|(id, _)| (*id).to_owned());
        let id = match relayed {
            Some(id) => Some(id),
            None => held_card(state, who, &hit.pan).await?,
        };
        if let Some(id) = id {
            out.push((hit.range, id));
        }
    }
    Ok(out)
}

/// The card of the caller's account and mode with this number, if it holds one.
async fn held_card(state: &AppState, who: &Principal, pan: &Pan) -> Result<Option<String>> {
    Ok(cards::find_by_number(state, who, pan).await?.map(|c| c.id))
}

pub(super) type Answer = (u16, HeaderMap, Zeroizing<Vec<u8>>, Duration);

/// Sends the request to the approved destination and reads the whole answer, up to
/// the configured size, unencoded.
pub(super) async fn send(
    state: &AppState,
    approved: &Approved,
    method: reqwest::Method,
    headers: HeaderMap,
    body: Option<Zeroizing<String>>,
) -> std::result::Result<Answer, (Failure, Duration)> {
    let config = &state.config().relay;
    let loopback = loopback_for(state, &approved.destination);
    let started = Instant::now();
    let client = state
        .relay_clients()
        .client_of(config, &approved.destination, loopback)
        .map_err(|_| (Failure::Upstream, started.elapsed()))?;
    let mut rb = client
        .request(method, approved.url.clone())
        .headers(headers);
    if let Some(b) = body {
        rb = rb.body(bytes::Bytes::from_owner(SecretBody(b)));
    }
    let mut resp = rb
        .send()
        .await
        .map_err(|e| (Failure::of(&e), started.elapsed()))?;
    let encoded = resp
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err((Failure::Encoded, started.elapsed()));
    }
    let max = config.max_response_bytes;
    let declared = resp.content_length().unwrap_or(0);
    if declared > max as u64 {
        return Err((Failure::TooLarge, started.elapsed()));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(declared).unwrap_or(0)));
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| (Failure::of(&e), started.elapsed()))?
    {
        if buf.len() + chunk.len() > max {
            return Err((Failure::TooLarge, started.elapsed()));
        }
        buf.extend_from_slice(&chunk);
    }
    let latency = started.elapsed();
    Ok((
        resp.status().as_u16(),
        std::mem::take(resp.headers_mut()),
        buf,
        latency,
    ))
}

/// Spends a translated PIN block held for the card (`pint_…`, docs/card-present.md):
/// taken is gone, whatever happens next. One held for another card is spent too, and
/// refused.
async fn take_pin_block(
    state: &AppState,
    who: &Principal,
    card_id: &str,
    translation: &str,
) -> Result<Zeroizing<String>> {
    let unavailable = || {
        ServiceError::from(RelayError::ValueUnavailable {
            field: Field::PinBlock,
        })
    };
    let held = state
        .cvcs()
        .take(&who.account_id, who.mode, translation, state.now_ms())
        .await?
        .ok_or_else(unavailable)?;
    match held.split_once(':') {
        Some((card, block)) if card == card_id => Ok(Zeroizing::new(block.to_owned())),
        _ => Err(unavailable()),
    }
}

/// Spends the card's held CVC, if it has one: taken is gone, whatever happens next.
async fn take_cvc(
    state: &AppState,
    who: &Principal,
    card_id: &str,
) -> Result<Option<Zeroizing<String>>> {
    state
        .cvcs()
        .take(&who.account_id, who.mode, card_id, state.now_ms())
        .await
}

/// Writes the relay's event with the request's audit records, and counts it: the
/// request's record names the destination host, and one `card.relay` record per card
/// names the card, with the destination's status or the failure's code. The
/// destination has answered (or failed) by now: a failure to record is logged, and the
/// answer still goes back (the request's audit record is then appended on its own).
async fn record(
    state: &AppState,
    who: &Principal,
    kind: EventType,
    ev: &RelayEventObject<'_>,
    outcome: &'static str,
) {
    state.metrics().relay(ev.host, outcome);
    crate::audit::set_relay_destination(&who.audit, ev.host, ev.port);
    record_ended(state, who, kind, ev, "card.relay", &ev.cards, ev.ended).await;
}

/// How a request that was sent ended: the other side's status, or why it failed, and
/// the time from sending to the end of the answer (or the failure). Part of the
/// relay's and the inbound route's events.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ended {
    /// The other side's status (`relay.completed`, `inbound_route.forwarded`).
    pub status: Option<u16>,
    /// Why it failed (`relay.failed`, `inbound_route.failed`).
    pub failure_code: Option<&'static str>,
    /// Milliseconds from sending to the end of the answer (or the failure).
    pub latency_ms: f64,
}

impl Ended {
    pub(super) fn answered(status: u16, latency: Duration) -> Self {
        Self {
            status: Some(status),
            failure_code: None,
            latency_ms: latency.as_secs_f64() * 1000.0,
        }
    }

    pub(super) fn failed(failure: Failure, latency: Duration) -> Self {
        Self {
            status: None,
            failure_code: Some(failure.code()),
            latency_ms: latency.as_secs_f64() * 1000.0,
        }
    }
}

/// Queues one `card_action` audit record per card (the status, or the failure's code)
/// and writes the event `kind` of `object` with the request's audit records. A failure
/// to record is logged: the other side has answered by now, and the request's own
/// record is then appended on its own.
pub(super) async fn record_ended<T: Serialize>(
    state: &AppState,
    who: &Principal,
    kind: EventType,
    object: &T,
    card_action: &str,
    cards: &[&str],
    ended: Ended,
) {
    let (result, code) = match (ended.status, ended.failure_code) {
        (Some(status), _) => (crate::audit::SUCCESS, status.to_string()),
        (None, code) => (crate::audit::FAILURE, code.unwrap_or_default().to_owned()),
    };
    for id in cards {
        crate::audit::event(
            &who.audit,
            card_action,
            &format!("card:{id}"),
            result,
            &code,
        );
    }
    let event = match state.event_of(&who.account_id, who.mode, kind, object) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, event = kind.as_str(), "event not built");
            return;
        }
    };
    if let Err(e) = state
        .store()
        .audited(&who.audit)
        .record_relay(vec![event])
        .await
    {
        tracing::error!(error = %e, event = kind.as_str(), "event not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_escaped_by_content_type() {
        assert_eq!(escape_for(Some("application/json")), Escape::Json);
        assert_eq!(
            escape_for(Some("Application/JSON; charset=utf-8")),
            Escape::Json
        );
        assert_eq!(escape_for(Some("application/vnd.api+json")), Escape::Json);
        assert_eq!(
            escape_for(Some("application/x-www-form-urlencoded")),
            Escape::Form
        );
        assert_eq!(escape_for(Some("text/xml")), Escape::Xml);
        assert_eq!(escape_for(Some("application/soap+xml")), Escape::Xml);
        assert_eq!(escape_for(Some("text/plain")), Escape::None);
        assert_eq!(escape_for(None), Escape::None);
    }

    #[test]
    fn connection_headers_are_refused_and_dropped() {
        let h = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        for n in [
            "host",
            "Content-Length",
            "transfer-encoding",
            "strongroom-x",
            "accept-encoding",
        ] {
            assert!(header_refused(&h(n)), "{n}");
        }
        for n in [
            "authorization",
            "content-type",
            "x-api-key",
            "idempotency-key",
        ] {
            assert!(!header_refused(&h(n)), "{n}");
        }
        for n in [
            "set-cookie",
            "connection",
            "content-length",
            "transfer-encoding",
        ] {
            assert!(header_dropped(&h(n)), "{n}");
        }
        assert!(!header_dropped(&h("content-type")));
    }
}
