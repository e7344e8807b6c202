//! Inbound routes (docs/relay.md, "Inbound routes"): the relay's reverse direction. A
//! merchant makes a route (`POST /v1/inbound_routes`); a processor or partner then
//! sends its requests, card numbers and all, to `https://<vault>/in/{route_id}/…`.
//! The vault tokenizes the card in each field the route names into the route's account
//! and mode, masks every other card number in the request (body, query and headers),
//! removes a CVC it was told where to find (holding it for the card's first relay), and
//! forwards the cleaned request to the route's `forward_to`, an approved relay
//! destination of the account. The merchant's answer goes back to the partner, cleaned
//! the same way. The merchant's server never receives a card number.
//!
//! The route's id is the capability: 74 random bits, unguessable, and every unknown id
//! is the same `404`. Like every relay send, the forward is checked against the
//! account's approved destinations at every request (a destination removed since the
//! route was made stops the route), its host resolved and pinned then.
//!
//! Order of work, so that a refusal forwards nothing and half-writes nothing: the route
//! and its path, the destination (approved, address checked), then every named field
//! parsed and checked (an invalid card refuses the whole request, no card stored),
//! then the cards stored, then the request sent.

use super::send;
use super::{Approved, approve, check_path_prefix, path_matches};
use crate::audit::RequestAudit;
use crate::auth::Principal;
use crate::service::cards::{self, NewCard};
use crate::service::events::EventType;
use crate::service::{List, Result, ServiceError, object_name, secs};
use crate::state::AppState;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::relay::{BodyKind, Escape, JsonPointer, Tokenized, find_json_fields, scrub};
use strongroom_core::{IdKind, KeyKind, Scope, Scopes};
use strongroom_store::{AuditScope, InboundRouteRecord, InboundRouteStore};
use utoipa::ToSchema;
use zeroize::Zeroizing;

/// The most routes an account may have in one mode.
pub const MAX_ROUTES: usize = 100;
/// The most tokenize rules of a route.
pub const MAX_RULES: usize = 20;
/// The longest description, in characters.
pub const DESCRIPTION_MAX: usize = 200;
/// The longest `forward_to`.
pub const FORWARD_TO_MAX: usize = 2048;

/// Where, in a partner's JSON body, one card's fields are: JSON pointers (RFC 6901).
/// `number` is required, with either `exp_month` and `exp_year` (each a number or a
/// string; a year of 2 or 4 digits) or `expiry` (`MM/YY`, `MM/YYYY`, `MMYY`, `MM-YY`).
/// `cardholder_name` is stored with the card when present. `cvc`, when present, is
/// removed from the forwarded request and held for the card's first relay, as a CVC
/// given to `POST /v1/cards` is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeFields {
    /// The card number's field; it becomes the card's id (`card_…`).
    #[schema(max_length = 256)]
    pub number: String,
    /// The expiry month's field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub exp_month: Option<String>,
    /// The expiry year's field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub exp_year: Option<String>,
    /// The field holding month and year together.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub expiry: Option<String>,
    /// The cardholder name's field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub cardholder_name: Option<String>,
    /// The CVC's field: removed from what is forwarded, held for the first relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub cvc: Option<String>,
}

/// One tokenize rule as a merchant writes it: a pointer to the card number (its
/// siblings `exp_month`, `exp_year` and, if present, `cardholder_name` hold the rest:
/// `/card/number` reads `/card/exp_month` and `/card/exp_year`), or the fields spelled
/// out.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TokenizeRule {
    /// The card number's field, its expiry beside it.
    Pointer(String),
    /// Every field named.
    Fields(TokenizeFields),
}

impl TokenizeRule {
    /// The rule with every field named: a pointer's siblings spelled out.
    fn normalize(&self) -> TokenizeFields {
        match self {
            Self::Fields(f) => f.clone(),
            Self::Pointer(p) => {
                let parent = p.rsplit_once('/').map_or("", |(parent, _)| parent);
                TokenizeFields {
                    number: p.clone(),
                    exp_month: Some(format!("{parent}/exp_month")),
                    exp_year: Some(format!("{parent}/exp_year")),
                    expiry: None,
                    cardholder_name: Some(format!("{parent}/cardholder_name")),
                    cvc: None,
                }
            }
        }
    }
}

/// What a merchant sends to make a route.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInboundRoute {
    /// `https://host[:port]/path`, matching a relay destination approved for the
    /// account and this mode; no query or fragment. A request to
    /// `/in/{id}/rest?query` is forwarded to `forward_to` + `/rest?query`.
    #[schema(min_length = 1, max_length = 2048)]
    pub forward_to: String,
    /// The path prefix (after `/in/{id}`) the route accepts, at a segment boundary;
    /// default `/` (any). Other paths are `404`.
    #[schema(min_length = 1, max_length = 512, pattern = "^/[!-~]*$")]
    pub path: Option<String>,
    /// The card fields to tokenize in JSON bodies, at most 20. Every other card
    /// number in the request is masked.
    #[schema(max_items = 20)]
    pub tokenize: Vec<TokenizeRule>,
    /// A note for the merchant, at most 200 characters.
    #[schema(max_length = 200)]
    pub description: Option<String>,
    /// The networks (IPv4 or IPv6 addresses or CIDRs, at most 100) partners may send
    /// from; absent or empty: any. A request from elsewhere is `403 ip_not_allowed`.
    #[schema(max_items = 100)]
    pub allowed_ips: Option<Vec<String>>,
}

object_name!(
    /// `inbound_route`.
    InboundRouteObject = "inbound_route"
);

/// An inbound route.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboundRouteView {
    /// Always `inbound_route`.
    pub object: InboundRouteObject,
    /// `inr_…`. Partners send to `https://<vault>/in/{id}/…`: the id admits them, so
    /// it is shared with the partner only.
    #[schema(pattern = "^inr_[0-9a-f]{32}$")]
    pub id: String,
    /// The path prefix the route accepts.
    pub path: String,
    /// Where cleaned requests go.
    pub forward_to: String,
    /// The fields tokenized, every pointer spelled out.
    pub tokenize: Vec<TokenizeFields>,
    /// The merchant's note.
    pub description: Option<String>,
    /// The networks partners may send from (canonical CIDRs); empty: any.
    pub allowed_ips: Vec<String>,
    /// `test` or `live`: cards are tokenized in this mode.
    pub mode: &'static str,
    /// Unix seconds.
    pub created_at: i64,
}

impl InboundRouteView {
    fn new(r: &InboundRouteRecord) -> Result<Self> {
        Ok(Self {
            object: InboundRouteObject::Value,
            id: r.id.clone(),
            path: r.path.clone(),
            forward_to: r.forward_to.clone(),
            tokenize: rules_of(r)?,
            description: r.description.clone(),
            allowed_ips: allowed_of(r)?,
            mode: r.mode.as_str(),
            created_at: secs(r.created_ms),
        })
    }
}

fn allowed_of(r: &InboundRouteRecord) -> Result<Vec<String>> {
    match &r.allowed_ips {
        None => Ok(Vec::new()),
        Some(j) => serde_json::from_str(j)
            .map_err(|_| ServiceError::internal("stored inbound route networks are not JSON")),
    }
}

fn rules_of(r: &InboundRouteRecord) -> Result<Vec<TokenizeFields>> {
    serde_json::from_str(&r.tokenize)
        .map_err(|_| ServiceError::internal("stored inbound route rules are not JSON"))
}

/// Every pointer of a rule, checked.
fn check_rule(f: &TokenizeFields) -> Result<()> {
    let has_expiry = f.expiry.is_some() || (f.exp_month.is_some() && f.exp_year.is_some());
    if !has_expiry || (f.expiry.is_some() && (f.exp_month.is_some() || f.exp_year.is_some())) {
        return Err(ServiceError::InboundRouteInvalid);
    }
    let pointers = [
        Some(&f.number),
        f.exp_month.as_ref(),
        f.exp_year.as_ref(),
        f.expiry.as_ref(),
        f.cardholder_name.as_ref(),
        f.cvc.as_ref(),
    ];
    for p in pointers.into_iter().flatten() {
        JsonPointer::parse(p)?;
    }
    if f.number.is_empty() {
        return Err(ServiceError::InboundRouteInvalid);
    }
    Ok(())
}

/// Makes a route for the caller's account and mode (scopes `cards:write` and
/// `cards:relay`: it both stores cards and sends to a destination).
pub async fn create(
    state: &AppState,
    who: &Principal,
    new: &NewInboundRoute,
) -> Result<InboundRouteView> {
    who.require(Scope::CardsRelay)?;
    who.require(Scope::CardsWrite)?;
    if new.tokenize.len() > MAX_RULES {
        return Err(ServiceError::InboundRouteInvalid);
    }
    let rules: Vec<TokenizeFields> = new.tokenize.iter().map(TokenizeRule::normalize).collect();
    for r in &rules {
        check_rule(r)?;
    }
    let path = new.path.clone().unwrap_or_else(|| "/".to_owned());
    if !check_path_prefix(&path) {
        return Err(ServiceError::InboundRouteInvalid);
    }
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_MAX || d.chars().any(char::is_control))
    {
        return Err(ServiceError::InboundRouteInvalid);
    }
    if new.forward_to.len() > FORWARD_TO_MAX
        || new.forward_to.contains(['?', '#'])
        || new.forward_to.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(ServiceError::InboundRouteInvalid);
    }
    let nets = crate::gateway::parse_cidrs(new.allowed_ips.as_deref().unwrap_or_default())?;
    let allowed_ips = (!nets.is_empty())
        .then(|| serde_json::to_string(&nets.iter().map(ToString::to_string).collect::<Vec<_>>()))
        .transpose()
        .map_err(|_| ServiceError::internal("inbound route networks"))?;
    let approved = approve(state, &who.account_id, who.mode, &new.forward_to).await?;
    let existing = state
        .store()
        .inbound_routes(&who.account_id, who.mode)
        .await?;
    if existing.len() >= MAX_ROUTES {
        return Err(ServiceError::TooManyInboundRoutes);
    }
    let now = state.now_ms();
    let record = InboundRouteRecord {
        id: capability_id(now)?,
        account_id: who.account_id.clone(),
        mode: who.mode,
        path,
        forward_to: approved.url.to_string(),
        tokenize: serde_json::to_string(&rules)
            .map_err(|_| ServiceError::internal("inbound route rules"))?,
        description: new.description.clone(),
        allowed_ips,
        created_ms: now,
    };
    crate::audit::set_resource(&who.audit, "inbound_route", &record.id);
    state
        .store()
        .audited(&who.audit)
        .insert_inbound_route(&record)
        .await?;
    InboundRouteView::new(&record)
}

/// A route id with 74 random bits from the operating system: the id is the capability
/// that admits a partner, so it is never the sequence-carrying kind other ids are.
fn capability_id(now_ms: i64) -> Result<String> {
    let random = strongroom_crypto::random::bytes::<10>()?;
    Ok(strongroom_core::new_id(
        IdKind::InboundRoute,
        now_ms,
        random,
    ))
}

/// The caller's route (of its account and mode), or `NotFound`.
async fn own(state: &AppState, who: &Principal, id: &str) -> Result<InboundRouteRecord> {
    strongroom_core::parse_id(IdKind::InboundRoute, id)?;
    match state.store().inbound_route(id).await? {
        Some(r) if r.account_id == who.account_id && r.mode == who.mode => Ok(r),
        _ => Err(ServiceError::NotFound),
    }
}

/// The caller's route.
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<InboundRouteView> {
    who.require(Scope::CardsRelay)?;
    InboundRouteView::new(&own(state, who, id).await?)
}

/// The caller's routes in its mode, oldest first.
pub async fn list(state: &AppState, who: &Principal) -> Result<List<InboundRouteView>> {
    who.require(Scope::CardsRelay)?;
    let routes = state
        .store()
        .inbound_routes(&who.account_id, who.mode)
        .await?;
    let views = routes
        .iter()
        .map(InboundRouteView::new)
        .collect::<Result<Vec<_>>>()?;
    Ok(List::all(views))
}

/// The answer to a delete.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboundRouteDeletedView {
    /// The route's id.
    #[schema(pattern = "^inr_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `inbound_route`.
    pub object: InboundRouteObject,
    /// Always `true`.
    pub deleted: bool,
}

/// Deletes the caller's route: its URL answers `404` from now on.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<InboundRouteDeletedView> {
    who.require(Scope::CardsRelay)?;
    let route = own(state, who, id).await?;
    crate::audit::set_resource(&who.audit, "inbound_route", &route.id);
    let gone = state
        .store()
        .audited(&who.audit)
        .delete_inbound_route(&route.id, &who.account_id, who.mode)
        .await?;
    if !gone {
        return Err(ServiceError::NotFound);
    }
    Ok(InboundRouteDeletedView {
        id: route.id,
        object: InboundRouteObject::Value,
        deleted: true,
    })
}

// ---- forwarding ----

/// A partner's request to `/in/{route}/{rest}`.
pub struct InboundRequest<'a> {
    /// The route id from the URL.
    pub route_id: &'a str,
    /// The path after the route id: empty or starting with `/`.
    pub rest: &'a str,
    /// The query string, without `?`, if any.
    pub query: Option<&'a str>,
    /// One of the relay's methods.
    pub method: reqwest::Method,
    /// The partner's headers, less the connection's and the vault's.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The partner's body.
    pub body: &'a [u8],
    /// The partner's address (as the gateway resolved it, trusted proxies considered).
    pub client_ip: std::net::IpAddr,
}

/// The merchant's answer, cleaned, and the route's account (for the response's audit).
pub struct Forwarded {
    /// The merchant's status.
    pub status: u16,
    /// Its headers, less hop-by-hop ones, framing and cookies, cleaned.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body, cleaned.
    pub body: Vec<u8>,
    /// From sending to having read the whole answer.
    pub latency: Duration,
}

/// One card read from the partner's body, checked, ready to store.
struct Found {
    number_range: std::ops::Range<usize>,
    card: NewCard,
}

/// The `object` of `inbound_route.forwarded` and `inbound_route.failed` events: the
/// route, the path forwarded (never the query), the cards tokenized, how it ended.
#[derive(Debug, Serialize)]
pub struct InboundEventObject<'a> {
    /// Always `inbound_route`.
    pub object: &'static str,
    /// The route.
    pub route: &'a str,
    /// The path forwarded to.
    pub path: &'a str,
    /// The method.
    pub method: &'a str,
    /// The cards the request carried, as stored.
    pub cards: Vec<&'a str>,
    /// How it ended: `status` (`inbound_route.forwarded`) or `failure_code`
    /// (`inbound_route.failed`), and `latency_ms`.
    #[serde(flatten)]
    pub ended: send::Ended,
}

/// Parses an expiry month (1–12) and year (2 digits: 20YY; or 4).
fn month_year(month: &str, year: &str) -> Option<(i64, i64)> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (m, y) = (month.trim(), year.trim());
    if !digits(m) || m.len() > 2 || !digits(y) || !(y.len() == 2 || y.len() == 4) {
        return None;
    }
    let month: i64 = m.parse().ok()?;
    let mut year: i64 = y.parse().ok()?;
    if y.len() == 2 {
        year += 2000;
    }
    (1..=12).contains(&month).then_some((month, year))
}

/// Parses `MM/YY`, `MM/YYYY`, `MM-YY`, `MM-YYYY` or `MMYY`.
fn expiry(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    if let Some((m, y)) = s.split_once(['/', '-']) {
        return month_year(m, y);
    }
    if s.len() == 4 {
        return month_year(s.get(..2)?, s.get(2..)?);
    }
    None
}

/// Reads every card the rules name in a JSON body. A rule whose number field is
/// absent is skipped (a partner's request need not carry a card); one whose number is
/// there but is no card number, or whose expiry is missing or malformed, refuses the
/// request. Also returns the CVCs' ranges, to be removed. `None` fields: the body is
/// no JSON document, and is then only masked.
fn read_cards(
    body: &[u8],
    rules: &[TokenizeFields],
) -> Result<(Vec<Found>, Vec<Zeroizing<String>>)> {
    // Every pointer of every rule, and for each, (rule, which field).
    let mut pointers = Vec::new();
    let mut owners = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let fields = [
            (0, Some(&r.number)),
            (1, r.exp_month.as_ref()),
            (2, r.exp_year.as_ref()),
            (3, r.expiry.as_ref()),
            (4, r.cardholder_name.as_ref()),
            (5, r.cvc.as_ref()),
        ];
        for (field, p) in fields {
            if let Some(p) = p {
                pointers.push(JsonPointer::parse(p)?);
                owners.push((i, field));
            }
        }
    }
    let Some(hits) = find_json_fields(body, &pointers) else {
        return Ok((Vec::new(), Vec::new()));
    };
    // For each rule, its six fields' values (the first at each pointer).
    type Slot = Option<(std::ops::Range<usize>, Zeroizing<String>)>;
    let mut slots: Vec<[Slot; 6]> = (0..rules.len()).map(|_| Default::default()).collect();
    for h in hits {
        // A pointer shared by several rules' fields is read for each of them.
        for (k, (rule, field)) in owners.iter().enumerate() {
            if pointers.get(k) == pointers.get(h.pointer)
                && let Some(slot) = slots.get_mut(*rule).and_then(|s| s.get_mut(*field))
                && slot.is_none()
            {
                *slot = Some((h.range.clone(), h.text.clone()));
            }
        }
    }
    let mut found = Vec::new();
    let mut cvcs = Vec::new();
    for [number, month, year, both, name, cvc] in slots {
        let Some((range, number)) = number else {
            continue;
        };
        let text = |s: &Slot| s.as_ref().map(|(_, t)| t.as_str().to_owned());
        let exp = match (text(&both), text(&month), text(&year)) {
            (Some(b), _, _) => expiry(&b),
            (None, Some(m), Some(y)) => month_year(&m, &y),
            _ => None,
        };
        let (exp_month, exp_year) = exp.ok_or(ServiceError::InboundCardInvalid)?;
        let cvc = cvc.map(|(_, c)| c);
        if let Some(c) = &cvc {
            cvcs.push(c.clone());
        }
        found.push(Found {
            number_range: range,
            card: NewCard {
                number: strongroom_core::Sensitive::new(number.as_str().to_owned()),
                exp_month,
                exp_year,
                cardholder_name: name
                    .map(|(_, n)| strongroom_core::Sensitive::new(n.as_str().to_owned())),
                cvc: cvc.map(|c| strongroom_core::Sensitive::new(c.as_str().to_owned())),
            },
        });
    }
    Ok((found, cvcs))
}

/// The route's stand-in caller: the route's account and mode, allowed to store cards
/// only, recorded in the request's audit scope as the route.
fn route_principal(route: &InboundRouteRecord, audit: Arc<AuditScope>) -> Principal {
    Principal {
        key_id: route.id.clone(),
        account_id: route.account_id.clone(),
        mode: route.mode,
        kind: KeyKind::Restricted,
        scopes: Scopes::from(Scope::CardsWrite),
        token_id: None,
        attestation: None,
        application: None,
        audit,
    }
}

/// Whether a partner's header stays behind: the connection's own, framing, `Host`,
/// `Accept-Encoding` (the vault asks for an unencoded answer), cookies, proxy headers a
/// partner could forge, and the vault's.
pub fn inbound_header_dropped(name: &HeaderName) -> bool {
    const DROPPED: [&str; 8] = [
        "cookie",
        "cookie2",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "content-encoding",
    ];
    send::header_refused(name) || DROPPED.contains(&name.as_str())
}

/// `Strongroom-Inbound-Route`: the route a forwarded request came through.
pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("strongroom-inbound-route");
/// `Strongroom-Inbound-Cards`: the cards tokenized from it, comma-separated.
pub const CARDS_HEADER: HeaderName = HeaderName::from_static("strongroom-inbound-cards");

/// Forwards a partner's request through its route (see the module's docs).
pub async fn forward(
    state: &AppState,
    audit: &RequestAudit,
    req: InboundRequest<'_>,
) -> Result<Forwarded> {
    strongroom_core::parse_id(IdKind::InboundRoute, req.route_id)
        .map_err(|_| ServiceError::NotFound)?;
    let route = state
        .store()
        .inbound_route(req.route_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let rest = if req.rest.is_empty() { "/" } else { req.rest };
    if !path_matches(&route.path, rest) {
        return Err(ServiceError::NotFound);
    }
    let allowed = allowed_of(&route)?;
    if !allowed.is_empty()
        && !allowed
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .any(|n| n.contains(&req.client_ip))
    {
        crate::audit::arm(Some(audit), &route.id, &route.account_id, None);
        return Err(ServiceError::IpNotAllowed);
    }
    // The request is recorded as the route's, on the route's account.
    crate::audit::arm(Some(audit), &route.id, &route.account_id, None);
    let who = route_principal(&route, audit.scope.clone());
    // The URL: forward_to, the rest of the path, and the query with card numbers masked.
    let mut url = if req.rest.is_empty() {
        route.forward_to.clone()
    } else {
        format!("{}{}", route.forward_to.trim_end_matches('/'), req.rest)
    };
    if let Some(q) = req.query.filter(|q| !q.is_empty()) {
        url.push('?');
        let masked = send::deep_clean_form(scrub(q.as_bytes(), BodyKind::Other, &[], &[]));
        url.push_str(&String::from_utf8_lossy(&masked));
    }
    let approved = approve(state, &route.account_id, route.mode, &url).await?;
    // The rest of the path may not climb out of forward_to's path (`..`, encoded
    // separators): what a partner reaches is what the route names, or below it.
    let base = url::Url::parse(&route.forward_to).map_err(|_| ServiceError::NotFound)?;
    if !rest_ok(req.rest) || !path_matches(base.path(), approved.url.path()) {
        return Err(ServiceError::NotFound);
    }
    let content_type = req
        .headers
        .iter()
        .find(|(n, _)| *n == reqwest::header::CONTENT_TYPE)
        .and_then(|(_, v)| v.to_str().ok());
    let escape = send::escape_for(content_type);
    let json = escape == Escape::Json;
    let rules = rules_of(&route)?;
    let (found, cvcs) = if json && !rules.is_empty() {
        read_cards(req.body, &rules)?
    } else {
        (Vec::new(), Vec::new())
    };
    // Every card checked before any is stored: one bad card stores none.
    for f in &found {
        check_card(state, &who, &f.card)?;
    }
    let mut ids = Vec::with_capacity(found.len());
    for f in found {
        let t = cards::tokenize(state, &who, f.card)
            .await
            .map_err(invalid_card)?;
        ids.push((f.number_range, t.card.id));
    }
    let reps: Vec<Tokenized<'_>> = ids
        .iter()
        .map(|(range, id)| Tokenized {
            range: range.clone(),
            token: id,
        })
        .collect();
    let secrets: Vec<&[u8]> = cvcs.iter().map(|c| c.as_bytes()).collect();
    let kind = if json {
        BodyKind::Json
    } else {
        BodyKind::Other
    };
    let first = scrub(req.body, kind, &secrets, &reps);
    let clean = Zeroizing::new(match escape {
        Escape::Json => send::deep_clean_json(first),
        Escape::Form => send::deep_clean_form(first),
        _ => first,
    });
    let mut headers = HeaderMap::with_capacity(req.headers.len() + 3);
    for (name, value) in &req.headers {
        if inbound_header_dropped(name) {
            continue;
        }
        let cleaned = scrub(value.as_bytes(), BodyKind::Other, &secrets, &[]);
        if let Ok(v) = HeaderValue::from_bytes(&cleaned) {
            headers.append(name.clone(), v);
        }
    }
    headers.insert(
        reqwest::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Ok(v) = HeaderValue::from_str(&route.id) {
        headers.insert(ROUTE_HEADER, v);
    }
    let card_ids: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    if !card_ids.is_empty()
        && let Ok(v) = HeaderValue::from_str(&card_ids.join(","))
    {
        headers.insert(CARDS_HEADER, v);
    }
    let body = (!req.body.is_empty())
        .then(|| Zeroizing::new(String::from_utf8_lossy(&clean).into_owned()));
    let sent = send::send(state, &approved, req.method.clone(), headers, body).await;
    let mut ev = InboundEventObject {
        object: "inbound_route",
        route: &route.id,
        path: approved.url.path(),
        method: req.method.as_str(),
        cards: card_ids.clone(),
        ended: send::Ended::default(),
    };
    let (status, raw_headers, raw_body, latency) = match sent {
        Ok(s) => s,
        Err((failure, latency)) => {
            ev.ended = send::Ended::failed(failure, latency);
            record(state, &who, &approved, EventType::InboundRouteFailed, &ev).await;
            return Err(failure.error());
        }
    };
    ev.ended = send::Ended::answered(status, latency);
    let kind = send::answer_kind(&raw_headers);
    let (clean_headers, clean_body) =
        send::clean_answer(&raw_headers, &raw_body, kind, &secrets, &[]);
    record(
        state,
        &who,
        &approved,
        EventType::InboundRouteForwarded,
        &ev,
    )
    .await;
    Ok(Forwarded {
        status,
        headers: clean_headers,
        body: clean_body,
        latency,
    })
}

/// Whether the path after the route id is plain: no dot segments, no `//`, no
/// backslash, no encoded dot, slash or backslash (which a server could decode into a
/// separator after the vault checked the path).
fn rest_ok(rest: &str) -> bool {
    let lower = rest.to_ascii_lowercase();
    !rest.contains('\\')
        && !rest.contains("//")
        && !rest.split('/').any(|s| s == "." || s == "..")
        && !["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
}

/// The checks `cards::tokenize` makes before it writes, made for every card first so
/// that a bad card stores no card at all.
fn check_card(state: &AppState, who: &Principal, c: &NewCard) -> Result<()> {
    let pan = strongroom_core::Pan::parse(c.number.expose()).map_err(invalid_card_domain)?;
    strongroom_core::Expiry::new(c.exp_month, c.exp_year, state.clock().now())
        .map_err(invalid_card_domain)?;
    pan.check_mode(who.mode).map_err(invalid_card_domain)?;
    if let Some(cvc) = &c.cvc {
        crate::service::cvc::check(pan.brand(), cvc.expose()).map_err(invalid_card)?;
    }
    if let Some(n) = &c.cardholder_name {
        let n = n.expose();
        if n.chars().count() > 200 || n.chars().any(char::is_control) {
            return Err(ServiceError::InboundCardInvalid);
        }
    }
    Ok(())
}

fn invalid_card_domain(_: strongroom_core::DomainError) -> ServiceError {
    ServiceError::InboundCardInvalid
}

/// A card the partner sent that the vault refuses is the partner's error, said with
/// one code; anything else (the store) stays what it is.
fn invalid_card(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Domain(_) | ServiceError::InvalidParameter => {
            ServiceError::InboundCardInvalid
        }
        e => e,
    }
}

/// Writes the request's event with its audit records and counts it: the request's
/// record names the route; one `card.inbound` record per card names the card with the
/// merchant's status or the failure's code.
async fn record(
    state: &AppState,
    who: &Principal,
    approved: &Approved,
    kind: EventType,
    ev: &InboundEventObject<'_>,
) {
    let outcome = if ev.ended.status.is_some() {
        "inbound_completed"
    } else {
        "inbound_failed"
    };
    state.metrics().relay(&approved.destination.host, outcome);
    crate::audit::set_resource(&who.audit, "inbound_route", ev.route);
    send::record_ended(state, who, kind, ev, "card.inbound", &ev.cards, ev.ended).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_parse_in_the_usual_spellings() {
        assert_eq!(expiry("03/30"), Some((3, 2030)));
        assert_eq!(expiry("3/2030"), Some((3, 2030)));
        assert_eq!(expiry("12-31"), Some((12, 2031)));
        assert_eq!(expiry("0330"), Some((3, 2030)));
        assert_eq!(expiry(" 03 / 30 "), Some((3, 2030)));
        for bad in [
            "13/30", "00/30", "03/3", "03/203", "ab/cd", "", "033", "03/30/1",
        ] {
            assert_eq!(expiry(bad), None, "{bad}");
        }
        assert_eq!(month_year("7", "2031"), Some((7, 2031)));
        assert_eq!(month_year("07", "31"), Some((7, 2031)));
        assert_eq!(month_year("-1", "31"), None);
    }

    #[test]
    fn a_pointer_rule_reads_its_siblings() {
        let f = TokenizeRule::Pointer("/card/number".into()).normalize();
        assert_eq!(f.exp_month.as_deref(), Some("/card/exp_month"));
        assert_eq!(f.exp_year.as_deref(), Some("/card/exp_year"));
        assert_eq!(f.cardholder_name.as_deref(), Some("/card/cardholder_name"));
        let top = TokenizeRule::Pointer("/pan".into()).normalize();
        assert_eq!(top.exp_month.as_deref(), Some("/exp_month"));
        assert!(check_rule(&f).is_ok());
        let no_expiry = TokenizeFields {
            number: "/n".into(),
            exp_month: Some("/m".into()),
            exp_year: None,
            expiry: None,
            cardholder_name: None,
            cvc: None,
        };
        assert!(matches!(
            check_rule(&no_expiry),
            Err(ServiceError::InboundRouteInvalid)
        ));
    }

    #[test]
    fn cards_are_read_with_their_expiry_and_cvc() {
        let rules = vec![TokenizeFields {
            number: "/card/pan".into(),
            exp_month: None,
            exp_year: None,
            expiry: Some("/card/exp".into()),
            cardholder_name: Some("/card/name".into()),
            cvc: Some("/card/cvv".into()),
        }];
        let body = br#"{"card":{"pan":"4242424242424242","exp":"03/30","name":"A B","cvv":"737"}}"#;
        let (found, cvcs) = read_cards(body, &rules).unwrap();
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(&body[f.number_range.clone()], br#""4242424242424242""#);
        assert_eq!((f.card.exp_month, f.card.exp_year), (3, 2030));
        assert_eq!(f.card.cardholder_name.as_ref().unwrap().expose(), "A B");
        assert_eq!(cvcs.len(), 1);
        assert_eq!(cvcs[0].as_str(), "737");
        // No card in this request: nothing to tokenize, nothing refused.
        let (none, _) = read_cards(br#"{"event":"ping"}"#, &rules).unwrap();
        assert!(none.is_empty());
        // A card without its expiry refuses the request.
        let bad = br#"{"card":{"pan":"4242424242424242"}}"#;
        assert!(matches!(
            read_cards(bad, &rules),
            Err(ServiceError::InboundCardInvalid)
        ));
        // Not JSON: nothing read (the body is masked instead).
        let (none, _) = read_cards(b"pan=4242424242424242", &rules).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn escaped_and_encoded_numbers_are_found_on_the_second_pass() {
        use super::send::{deep_clean_form, deep_clean_json};
        let card = "card_0192f3a4b5c67d8e9f00112233445566";
        let body = format!(
            r#"{{"a":"\u0034242 4242 4242 4242","n":[4000056655665556,7],"4111111111111111":1,"id":"{card}","r":"x"}}"#
        );
        let out = String::from_utf8(deep_clean_json(body.into_bytes())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], "XXXX4242");
        assert_eq!(v["n"], serde_json::json!(["XXXX5556", 7]));
        assert_eq!(v["XXXX1111"], 1);
        assert_eq!(v["id"], card);
        // Clean bodies keep their bytes, spacing and all.
        let clean = br#"{ "amount": 1.50, "id": "x" }"#.to_vec();
        assert_eq!(deep_clean_json(clean.clone()), clean);
        assert_eq!(deep_clean_json(b"not json".to_vec()), b"not json");

        let form = b"pan=4242%204242%204242%204242&x=%34111111111111111&amount=5".to_vec();
        let out = String::from_utf8(deep_clean_form(form)).unwrap();
        assert_eq!(out, "pan=XXXX4242&x=XXXX1111&amount=5");
        let clean = b"a=1&b=two%20words".to_vec();
        assert_eq!(deep_clean_form(clean.clone()), clean);
    }

    #[test]
    fn the_rest_of_a_path_cannot_climb() {
        for ok in ["", "/", "/notify", "/a/b.json", "/a%20b"] {
            assert!(rest_ok(ok), "{ok}");
        }
        for bad in [
            "/..",
            "/a/../b",
            "/./a",
            "//a",
            "/a\\b",
            "/%2e%2e/x",
            "/a%2Fb",
            "/%5C",
        ] {
            assert!(!rest_ok(bad), "{bad}");
        }
    }

    #[test]
    fn partner_headers_that_stay_behind() {
        let h = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        for n in [
            "cookie",
            "host",
            "x-forwarded-for",
            "strongroom-inbound-route",
            "content-encoding",
        ] {
            assert!(inbound_header_dropped(&h(n)), "{n}");
        }
        for n in ["authorization", "content-type", "x-partner-signature"] {
            assert!(!inbound_header_dropped(&h(n)), "{n}");
        }
    }
}
