//! Client sessions (docs/client-side.md): how a browser tokenizes a card without the
//! merchant's servers touching it, and without the customer being able to change what
//! the merchant asked for.
//!
//! The merchant's back end (a secret key) makes a session and fixes its parameters:
//! the origins allowed to embed the fields or post cards, and the amount, currency,
//! order id, metadata and CVC choice that travel with the card. The browser only ever
//! holds the client secret (`cs_…_secret_…`, stored as a keyed digest) and the
//! publishable key; it never sends the parameters, so it cannot change them. A session
//! collects at most `max_cards` cards (one by default) before it expires; the slot is
//! claimed in the same transaction that stores the card.

use crate::auth::Principal;
use crate::service::assessments::{Action, Implicit};
use crate::service::cards::{self, CardTokenView, NewCard, Through};
use crate::service::{Result, ServiceError, secs};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strongroom_core::{IdKind, KeyKind, Mode, Scope};
use strongroom_crypto::ct_eq;
use strongroom_store::{ClientSessionRecord, ClientSessionStore};
use utoipa::ToSchema;

pub use crate::service::session_params::{CardSession, SessionParams, SessionPurpose};

/// Default lifetime, in seconds.
pub const DEFAULT_TTL_S: i64 = 900;
/// Shortest lifetime a merchant may ask for, in seconds.
pub const MIN_TTL_S: i64 = 60;
/// Longest lifetime, in seconds.
pub const MAX_TTL_S: i64 = 3600;
/// Most origins a session may allow.
pub const MAX_ORIGINS: usize = 10;
/// Most cards one session may collect.
pub const MAX_CARDS: i64 = 100;
/// Most metadata keys, and the longest key and value.
pub const METADATA_KEYS: usize = 20;
const METADATA_KEY_MAX: usize = 40;
const METADATA_VALUE_MAX: usize = 500;
/// Longest order id.
pub const ORDER_ID_MAX: usize = 200;
/// Largest amount, in minor units.
pub const AMOUNT_MAX: i64 = 99_999_999_999;
/// Between a session's id and the random part of its client secret.
const SECRET_SEPARATOR: &str = "_secret_";
/// Random bytes in a client secret.
const SECRET_BYTES: usize = 24;
/// Domain of the client secret's keyed digest.
const DIGEST_DOMAIN: &str = "client-session";

/// Body of `POST /v1/client_sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientSession {
    /// Always `tokenize`.
    pub purpose: SessionPurpose,
    /// The web origins (`https://shop.example`, exactly scheme, host and port) that may
    /// embed the hosted fields and post cards with this session: 1 to 10. Plain HTTP
    /// only to a loopback host (`localhost`, `127.0.0.1`, `[::1]`) in test mode.
    #[schema(min_items = 1, max_items = 10)]
    pub allowed_origins: Vec<String>,
    /// In minor units (cents), 0 to 99 999 999 999; needs `currency`.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 0, maximum = 99_999_999_999_i64)]
    pub amount: Option<i64>,
    /// ISO 4217 code, three letters (answered in lowercase).
    #[schema(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// The merchant's order reference: at most 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub order_id: Option<String>,
    /// Up to 20 string values under keys of at most 40 characters; values at most 500.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Whether the fields ask for the CVC (default true). The CVC is never stored: it
    /// is held sealed in memory for the card's first relay, at most ten minutes.
    pub collect_cvc: Option<bool>,
    /// How many cards the session may collect (1 to 100, default 1).
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_cards: Option<i64>,
    /// Seconds until it expires: 60 to 3600, default 900.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 60, maximum = 3600)]
    pub expires_in: Option<i64>,
}

/// A client session, as the back end sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientSessionView {
    /// `cs_…`
    pub id: String,
    /// Always `client_session`.
    pub object: &'static str,
    /// What the browser presents, once, when it creates the session; never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// `open`, `complete` (it collected `max_cards` cards) or `expired`.
    pub status: &'static str,
    /// `test` or `live`.
    pub mode: &'static str,
    /// The fixed parameters.
    #[serde(flatten)]
    pub params: SessionParams,
    /// How many cards it may collect.
    pub max_cards: i64,
    /// How many it has collected.
    pub cards_collected: i64,
    /// The cards it collected (`card_…`), in order; a number vaulted before is its
    /// existing card.
    pub cards: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub created: i64,
}

/// A session read from the store, its parameters parsed.
pub struct Session {
    /// As stored.
    pub record: ClientSessionRecord,
    /// Its parameters.
    pub params: SessionParams,
}

impl Session {
    fn from_record(record: ClientSessionRecord) -> Result<Self> {
        let params = serde_json::from_str(&record.params)
            .map_err(|_| ServiceError::internal("client session parameters"))?;
        Ok(Self { record, params })
    }

    /// `open`, `complete` or `expired` at `now_ms`.
    pub fn status(&self, now_ms: i64) -> &'static str {
        if self.record.cards_collected >= self.record.max_cards {
            "complete"
        } else if self.record.expires_ms <= now_ms {
            "expired"
        } else {
            "open"
        }
    }

    /// Whether `origin` (as a browser sends it) is one the session allows.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.params.allowed_origins.iter().any(|o| o == origin)
    }

    /// The card object's view of the session.
    pub fn card_view(&self) -> CardSession {
        CardSession {
            id: self.record.id.clone(),
            params: self.params.clone(),
        }
    }

    fn view(
        &self,
        now_ms: i64,
        client_secret: Option<String>,
        cards: Vec<String>,
    ) -> ClientSessionView {
        ClientSessionView {
            id: self.record.id.clone(),
            object: "client_session",
            client_secret,
            status: self.status(now_ms),
            mode: self.record.mode.as_str(),
            params: self.params.clone(),
            max_cards: self.record.max_cards,
            cards_collected: self.record.cards_collected,
            cards,
            expires_at: secs(self.record.expires_ms),
            created: secs(self.record.created_ms),
        }
    }
}

/// Checks one allowed origin: exactly the serialization a browser sends in `Origin`
/// (lowercase scheme and host, no default port, no path, no trailing slash). HTTPS; plain
/// HTTP only to a loopback host, and only in test mode.
fn check_origin(origin: &str, mode: Mode) -> Result<()> {
    let url = url::Url::parse(origin).map_err(|_| ServiceError::OriginInvalid)?;
    if url.origin().ascii_serialization() != origin {
        return Err(ServiceError::OriginInvalid);
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback && mode == Mode::Test => Ok(()),
        _ => Err(ServiceError::OriginInvalid),
    }
}

fn printable(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Validates a new session's body into its parameters.
fn params_of(new: &NewClientSession, mode: Mode) -> Result<SessionParams> {
    let origins = &new.allowed_origins;
    if origins.is_empty() || origins.len() > MAX_ORIGINS {
        return Err(ServiceError::OriginInvalid);
    }
    for (i, o) in origins.iter().enumerate() {
        check_origin(o, mode)?;
        if origins.iter().take(i).any(|p| p == o) {
            return Err(ServiceError::OriginInvalid);
        }
    }
    if new.amount.is_some_and(|a| !(0..=AMOUNT_MAX).contains(&a)) {
        return Err(ServiceError::InvalidParameter);
    }
    let currency = match &new.currency {
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_lowercase())
        }
        Some(_) => return Err(ServiceError::InvalidParameter),
        None => None,
    };
    if new.amount.is_some() && currency.is_none() {
        return Err(ServiceError::MissingField);
    }
    if let Some(o) = &new.order_id
        && (o.is_empty() || !printable(o, ORDER_ID_MAX))
    {
        return Err(ServiceError::InvalidParameter);
    }
    let metadata = new.metadata.clone().unwrap_or_default();
    if metadata.len() > METADATA_KEYS
        || metadata.iter().any(|(k, v)| {
            k.is_empty() || !printable(k, METADATA_KEY_MAX) || !printable(v, METADATA_VALUE_MAX)
        })
    {
        return Err(ServiceError::InvalidParameter);
    }
    Ok(SessionParams {
        purpose: new.purpose,
        allowed_origins: origins.clone(),
        amount: new.amount,
        currency,
        order_id: new.order_id.clone(),
        metadata,
        collect_cvc: new.collect_cvc.unwrap_or(true),
    })
}

/// Makes a session for the caller's account and mode (a secret or restricted key with
/// `cards:write`; never a publishable key, which lives in browsers).
pub async fn create(
    state: &AppState,
    who: &Principal,
    new: &NewClientSession,
) -> Result<ClientSessionView> {
    who.require(Scope::CardsWrite)?;
    if who.kind == KeyKind::Publishable {
        return Err(ServiceError::PermissionDenied);
    }
    let params = params_of(new, who.mode)?;
    let max_cards = new.max_cards.unwrap_or(1);
    let ttl_s = new.expires_in.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_CARDS).contains(&max_cards) || !(MIN_TTL_S..=MAX_TTL_S).contains(&ttl_s) {
        return Err(ServiceError::InvalidParameter);
    }
    let now = state.now_ms();
    let id = state.new_id(IdKind::ClientSession)?;
    let random = strongroom_crypto::random::bytes::<SECRET_BYTES>()?;
    let secret = format!("{id}{SECRET_SEPARATOR}{}", URL_SAFE_NO_PAD.encode(random));
    let record = ClientSessionRecord {
        id,
        account_id: who.account_id.clone(),
        mode: who.mode,
        secret_digest: state
            .root()
            .digest(DIGEST_DOMAIN, secret.as_bytes())
            .to_vec(),
        params: serde_json::to_string(&params)
            .map_err(|_| ServiceError::internal("client session parameters"))?,
        max_cards,
        cards_collected: 0,
        expires_ms: now.saturating_add(ttl_s.saturating_mul(1000)),
        created_ms: now,
    };
    crate::audit::set_resource(&who.audit, "client_session", &record.id);
    state
        .store()
        .audited(&who.audit)
        .insert_client_session(&record)
        .await?;
    let session = Session { record, params };
    Ok(session.view(now, Some(secret), Vec::new()))
}

/// A session by id, whatever its account (`None` when there is none, or the id is
/// malformed).
pub async fn find(state: &AppState, id: &str) -> Result<Option<Session>> {
    if strongroom_core::parse_id(IdKind::ClientSession, id).is_err() {
        return Ok(None);
    }
    state
        .store()
        .client_session(id)
        .await?
        .map(Session::from_record)
        .transpose()
}

/// One session of the caller's account and mode, with the cards it collected.
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<ClientSessionView> {
    who.require(Scope::CardsRead)?;
    let session = find(state, id)
        .await?
        .filter(|s| s.record.account_id == who.account_id && s.record.mode == who.mode)
        .ok_or(ServiceError::NotFound)?;
    let cards = state.store().client_session_cards(id).await?;
    Ok(session.view(state.now_ms(), None, cards))
}

/// What a browser sends to collect a card through a session.
pub struct Collect {
    /// `cs_…_secret_…`
    pub client_secret: String,
    /// The browser's address (for the risk assessment).
    pub ip: Option<std::net::IpAddr>,
    /// The card.
    pub card: NewCard,
}

/// Collects a card through a session, for a publishable key of the session's account
/// and mode: the client secret must be the session's, the session open, and the CVC
/// present exactly when the session collects it. Answers with a card token (the browser
/// never learns whether the number was vaulted before) that names the session.
pub async fn collect(
    state: &AppState,
    who: &Principal,
    session_id: &str,
    c: Collect,
) -> Result<CardTokenView> {
    who.require(Scope::CardsWrite)?;
    if who.kind != KeyKind::Publishable {
        return Err(ServiceError::PermissionDenied);
    }
    let session = find(state, session_id)
        .await?
        .ok_or(ServiceError::ClientSessionInvalid)?;
    let r = &session.record;
    let secret_ok = c
        .client_secret
        .strip_prefix(session_id)
        .is_some_and(|rest| rest.starts_with(SECRET_SEPARATOR))
        && ct_eq(
            &state
                .root()
                .digest(DIGEST_DOMAIN, c.client_secret.as_bytes()),
            &r.secret_digest,
        );
    if !secret_ok || r.account_id != who.account_id || r.mode != who.mode {
        return Err(ServiceError::ClientSessionInvalid);
    }
    match session.status(state.now_ms()) {
        "open" => {}
        "expired" => return Err(ServiceError::ClientSessionExpired),
        _ => return Err(ServiceError::ClientSessionUsed),
    }
    match (session.params.collect_cvc, c.card.cvc.is_some()) {
        (true, false) => return Err(ServiceError::MissingField),
        (false, true) => return Err(ServiceError::InvalidParameter),
        _ => {}
    }
    crate::audit::set_resource(&who.audit, "client_session", session_id);
    let through = Through {
        id: session.record.id.clone(),
        expires_ms: session.record.expires_ms,
        view: session.card_view(),
    };
    let risk = Implicit {
        action: Action::Tokenize,
        ip: c.ip,
    };
    let t = cards::tokenize_through(
        state,
        who,
        c.card,
        Some(cards::Claim::Session(&through)),
        Some(&risk),
    )
    .await?;
    cards::card_token(state, who, &t, Some(session_id))
}
