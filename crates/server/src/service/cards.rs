//! Tokenize, read, list, delete and reveal cards.

use crate::auth::Principal;
use crate::keyring::AccountKeys;
use crate::service::assessments::Implicit;
use crate::service::session_params::CardSession;
use crate::service::{List, secs};
use crate::service::{Result, ServiceError};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use strongroom_core::DomainError;
use strongroom_core::{Expiry, IdKind, Mode, Pan, Sensitive};
use strongroom_crypto::DataKey;
use strongroom_store::{CardRecord, Collected, InsertCard, KeyPurpose, ListCards, VaultStore};
use zeroize::Zeroizing;

/// The masked card object: everything a card may show without a reveal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardView {
    /// `card_…`
    pub id: String,
    /// Always `card`.
    pub object: &'static str,
    /// Card brand.
    pub brand: String,
    /// First six digits.
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// `XXXX` + last four.
    pub masked_number: String,
    /// Keyed fingerprint of the number: equal numbers in one account have equal
    /// fingerprints until the fingerprint key is rotated.
    pub fingerprint: String,
    /// 1–12.
    pub exp_month: i64,
    /// Four digits.
    pub exp_year: i64,
    /// `test` or `live`.
    pub mode: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// Whether a CVC sent when the card was created is held for its first payment: at
    /// most ten minutes, and spent by its first use in a relay (`{{card_…:cvc}}`).
    pub cvc_available: bool,
    /// The client session the card was collected through, with the parameters the
    /// back end fixed for it: shown on the redemption of that session's card token and
    /// in `card.created`, absent elsewhere (`GET /v1/client_sessions/{id}` lists a
    /// session's cards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_session: Option<CardSession>,
}

impl CardView {
    /// The card object of a record; `cvc_available` as [`crate::service::cvc`] says.
    pub fn new(c: &CardRecord, cvc_available: bool) -> Self {
        Self {
            id: c.id.clone(),
            object: "card",
            brand: c.brand.clone(),
            bin: c.bin.clone(),
            masked_number: format!("XXXX{}", c.last4),
            last4: c.last4.clone(),
            fingerprint: URL_SAFE_NO_PAD.encode(&c.fingerprint),
            exp_month: c.exp_month,
            exp_year: c.exp_year,
            mode: c.mode.as_str(),
            created: secs(c.created_ms),
            cvc_available,
            client_session: None,
        }
    }
}

/// The card object of a record, with whether a CVC is held for it now.
pub async fn view(state: &AppState, c: &CardRecord) -> Result<CardView> {
    let held = state
        .cvcs()
        .available(&c.account_id, c.mode, &c.id, state.now_ms())
        .await?;
    Ok(CardView::new(c, held))
}

/// What `POST /v1/cards` answers: the card to a caller that may read cards, a card
/// token to one that may not.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TokenizeView {
    /// For keys and tokens that hold `cards:read`.
    Card(CardView),
    /// For publishable keys and others without `cards:read`.
    Token(CardTokenView),
}

/// Result of deleting a card.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeletedCardView {
    /// `card_…`
    pub id: String,
    /// Always `card`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

/// The clear card that `POST /v1/cards/{id}/reveal` answers. Its body is written
/// straight from zeroizing buffers; this type only describes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RevealedView {
    /// `card_…`
    pub id: String,
    /// Always `revealed_card`.
    pub object: &'static str,
    /// The full number (digits only).
    pub number: String,
    /// 1–12.
    pub exp_month: i64,
    /// Four digits.
    pub exp_year: i64,
    /// As stored; null when none was.
    pub cardholder_name: Option<String>,
}

/// What a client sends to tokenize a card.
pub struct NewCard {
    /// The number as sent.
    pub number: Sensitive<String>,
    /// Expiry month.
    pub exp_month: i64,
    /// Expiry year.
    pub exp_year: i64,
    /// Cardholder name.
    pub cardholder_name: Option<Sensitive<String>>,
    /// The card verification code, held for the first payment and never stored.
    pub cvc: Option<Sensitive<String>>,
}

/// The clear card data after a reveal.
pub struct RevealedCard {
    /// Digits.
    pub number: Zeroizing<String>,
    /// Cardholder name, if one was stored.
    pub cardholder_name: Option<Zeroizing<String>>,
}

/// AAD for a card's ciphertext: binds account, record, mode and key version.
fn card_aad(account_id: &str, card_id: &str, mode: Mode, version: i64) -> Vec<u8> {
    format!(
        "strongroom/card/v1|{account_id}|{card_id}|{}|{version}",
        mode.as_str()
    )
    .into_bytes()
}

// The sealed plaintext is a tiny length-prefixed layout written by hand: serde would
// leave unzeroized intermediate strings behind. Layout: 0x01, PAN length (1 byte),
// PAN digits, then the cardholder name's UTF-8 bytes (possibly empty).
fn encode_secret(pan: &str, name: Option<&str>) -> Result<Zeroizing<Vec<u8>>> {
    let pan_len = u8::try_from(pan.len()).map_err(|_| DomainError::CardNumberInvalid)?;
    let name = name.unwrap_or_default();
    let mut out = Zeroizing::new(Vec::with_capacity(2 + pan.len() + name.len()));
    out.push(1);
    out.push(pan_len);
    out.extend_from_slice(pan.as_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

fn decode_secret(bytes: &[u8]) -> Result<RevealedCard> {
    let corrupt = || ServiceError::internal("sealed card layout");
    let (&ver, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (&len, rest) = rest.split_first().ok_or_else(corrupt)?;
    if ver != 1 || rest.len() < usize::from(len) {
        return Err(corrupt());
    }
    let (pan, name) = rest.split_at(usize::from(len));
    let number = Zeroizing::new(String::from_utf8(pan.to_vec()).map_err(|_| corrupt())?);
    let name = Zeroizing::new(String::from_utf8(name.to_vec()).map_err(|_| corrupt())?);
    Ok(RevealedCard {
        number,
        cardholder_name: (!name.is_empty()).then_some(name),
    })
}

/// Seals a card's secret fields under the writer key.
fn seal(
    keys: &AccountKeys,
    c: &CardRecord,
    pan: &str,
    name: Option<&str>,
) -> Result<(i64, Vec<u8>)> {
    let (version, key) = keys.writer(KeyPurpose::Cards)?;
    let plain = encode_secret(pan, name)?;
    let sealed = key.seal(&plain, &card_aad(&c.account_id, &c.id, c.mode, version))?;
    Ok((version, sealed))
}

/// Opens a card's secret fields with the key version that sealed them.
pub fn open(keys: &AccountKeys, c: &CardRecord) -> Result<RevealedCard> {
    let key = keys.version(KeyPurpose::Cards, c.key_version)?;
    let plain = key.open(
        &c.sealed,
        &card_aad(&c.account_id, &c.id, c.mode, c.key_version),
    )?;
    decode_secret(&plain)
}

/// Re-seals an existing card under the current writers (used by re-wrap).
pub fn reseal(keys: &AccountKeys, c: &CardRecord) -> Result<strongroom_store::CardRewrap> {
    let clear = open(keys, c)?;
    let (key_version, sealed) = seal(
        keys,
        c,
        &clear.number,
        clear.cardholder_name.as_deref().map(String::as_str),
    )?;
    let (fp_version, fk) = keys.writer(KeyPurpose::Fingerprint)?;
    Ok(strongroom_store::CardRewrap {
        id: c.id.clone(),
        expect_key_version: c.key_version,
        expect_fp_version: c.fp_version,
        sealed,
        key_version,
        fingerprint: fk.fingerprint(clear.number.as_bytes()).to_vec(),
        fp_version,
    })
}

fn fingerprint(key: &DataKey, pan: &Pan) -> Vec<u8> {
    key.fingerprint(pan.expose_digits().as_bytes()).to_vec()
}

/// Validates a cardholder name: at most 200 characters, no control characters.
fn check_name(name: Option<&Sensitive<String>>) -> Result<()> {
    if let Some(n) = name {
        let n = n.expose();
        if n.chars().count() > 200 || n.chars().any(char::is_control) {
            return Err(ServiceError::InvalidParameter);
        }
    }
    Ok(())
}

/// The client session a card is collected through
/// ([`crate::service::client_sessions::collect`]).
pub struct Through {
    /// `cs_…`
    pub id: String,
    /// When it stops collecting.
    pub expires_ms: i64,
    /// What the card object and `card.created` show of it.
    pub view: CardSession,
}

/// What a card's own write claims besides the card, refused whole when it cannot.
pub enum Claim<'a> {
    /// A slot of the client session the card is collected through.
    Session(&'a Through),
    /// The terminal's card-data transaction counter (docs/card-present.md): it must move
    /// forward (`ksn_replayed` otherwise).
    Terminal {
        /// `term_…`
        id: &'a str,
        /// The transaction's counter.
        counter: i64,
    },
}

/// The outcome of a tokenization.
pub struct Tokenized {
    /// The card as stored (after a renewal of its expiry).
    pub card: CardView,
    /// Whether it was created (false: the number was already vaulted in this account
    /// and mode).
    pub created: bool,
    /// The expiry the caller sent, normalized (month, four-digit year).
    pub submitted_expiry: (i64, i64),
    /// Whether this request sent a CVC, now held for the card.
    pub cvc_held: bool,
}

/// Tokenizes a card. A number already vaulted in this account and mode returns its
/// card; if the caller sent a later expiry (a renewed card), the stored expiry moves to
/// it (`card.updated`), never back. A CVC sent is held for the card, the existing one
/// too (it is the customer's fresh CVC), replacing any held before.
pub async fn tokenize(state: &AppState, who: &Principal, new: NewCard) -> Result<Tokenized> {
    let risk = Implicit {
        action: crate::service::assessments::Action::Tokenize,
        ip: None,
    };
    tokenize_through(state, who, new, None, Some(&risk)).await
}

/// [`tokenize`], with a claim in the card's own write when one is given: through a
/// client session, the session's slot (a session that expired or filled up meanwhile
/// refuses, and nothing is written), the card is linked to it, and `card.created`
/// carries its parameters; from a terminal, its transaction counter.
pub async fn tokenize_through(
    state: &AppState,
    who: &Principal,
    new: NewCard,
    claim: Option<Claim<'_>>,
    risk: Option<&Implicit>,
) -> Result<Tokenized> {
    let session = match &claim {
        Some(Claim::Session(s)) => Some(*s),
        _ => None,
    };
    let pan = Pan::parse(new.number.expose())?;
    let expiry = Expiry::new(new.exp_month, new.exp_year, state.clock().now())?;
    pan.check_mode(who.mode)?;
    check_name(new.cardholder_name.as_ref())?;
    let cvc = new.cvc.as_ref().map(|c| c.expose().as_str());
    if let Some(cvc) = cvc {
        crate::service::cvc::check(pan.brand(), cvc)?;
    }
    let submitted_expiry = (i64::from(expiry.month), i64::from(expiry.year));

    let keys = state.keyring().account(&who.account_id).await?;
    let (fp_version, fp_key) = keys.writer(KeyPurpose::Fingerprint)?;
    let dedup: Vec<(i64, Vec<u8>)> = keys
        .usable(KeyPurpose::Fingerprint)
        .iter()
        .map(|(v, k)| (*v, fingerprint(k, &pan)))
        .collect();
    let fingerprints = dedup.iter().map(|(_, f)| f.as_slice());
    crate::service::suspensions::check_card(state, &who.account_id, who.mode, fingerprints).await?;
    let mut card = CardRecord {
        id: state.new_id(IdKind::Card)?,
        account_id: who.account_id.clone(),
        mode: who.mode,
        fingerprint: fingerprint(&fp_key, &pan),
        fp_version,
        key_version: 0,
        sealed: Vec::new(),
        brand: pan.brand().as_str().to_owned(),
        bin: pan.bin().to_owned(),
        last4: pan.last4().to_owned(),
        exp_month: submitted_expiry.0,
        exp_year: submitted_expiry.1,
        created_ms: state.now_ms(),
    };
    // Assessed before anything is held or stored, so a block leaves nothing behind.
    let recording = match risk {
        Some(ctx) => {
            crate::service::assessments::implicit(state, who, ctx, &card.fingerprint, &card.bin)
                .await?
        }
        None => crate::service::assessments::Recording::none(),
    };
    let name = new.cardholder_name.as_ref().map(|n| n.expose().as_str());
    let (key_version, sealed) = seal(&keys, &card, pan.expose_digits(), name)?;
    card.key_version = key_version;
    card.sealed = sealed;

    // Held before the card is written, so that `card.created` says true only of a CVC
    // that is held, and a store that cannot hold it refuses before anything is written.
    let cvcs = state.cvcs();
    if let Some(cvc) = cvc {
        cvcs.hold(&card.account_id, card.mode, &card.id, cvc, card.created_ms)
            .await?;
    }
    let mut view = CardView::new(&card, cvc.is_some());
    view.client_session = session.map(|s| s.view.clone());
    let event = state.event_of(
        &card.account_id,
        card.mode,
        crate::service::events::EventType::CardCreated,
        &view,
    )?;
    crate::audit::set_resource(&who.audit, "card", &card.id);
    let vault = state.store().audited(&who.audit);
    let inserted = match claim {
        None => vault.insert_card(&card, &dedup, &[event]).await,
        Some(Claim::Terminal { id, counter }) => {
            match vault
                .tokenize_at_terminal(id, counter, &card, &dedup, &[event])
                .await
            {
                Ok(Collected::Card(c)) => Ok(c),
                Ok(Collected::Refused) => {
                    let _ = cvcs.forget(&card.account_id, card.mode, &card.id).await;
                    return Err(ServiceError::KsnReplayed);
                }
                Err(e) => Err(e),
            }
        }
        Some(Claim::Session(s)) => {
            let now = state.now_ms();
            match vault
                .collect_card(&s.id, now, &card, &dedup, &[event])
                .await
            {
                Ok(Collected::Card(c)) => Ok(c),
                Ok(Collected::Refused) => {
                    let _ = cvcs.forget(&card.account_id, card.mode, &card.id).await;
                    return Err(if s.expires_ms <= now {
                        ServiceError::ClientSessionExpired
                    } else {
                        ServiceError::ClientSessionUsed
                    });
                }
                Err(e) => Err(e),
            }
        }
    };
    recording.settle().await;
    if cvc.is_some() && !matches!(inserted, Ok(InsertCard::Created(_))) {
        // No card has this id: nothing will use what was held for it.
        let _ = cvcs.forget(&card.account_id, card.mode, &card.id).await;
    }
    let (card, created, cvc_available) = match inserted? {
        InsertCard::Created(c) => (c, true, cvc.is_some()),
        InsertCard::Existing(c) => {
            crate::audit::set_resource(&who.audit, "card", &c.id);
            let held = match cvc {
                Some(cvc) => {
                    cvcs.hold(&c.account_id, c.mode, &c.id, cvc, state.now_ms())
                        .await?;
                    true
                }
                None => {
                    cvcs.available(&c.account_id, c.mode, &c.id, state.now_ms())
                        .await?
                }
            };
            let c = renew_expiry(state, who, c, submitted_expiry, held).await?;
            (c, false, held)
        }
    };
    let mut view = CardView::new(&card, cvc_available);
    view.client_session = session.map(|s| s.view.clone());
    Ok(Tokenized {
        card: view,
        created,
        submitted_expiry,
        cvc_held: cvc.is_some(),
    })
}

/// Moves a vaulted card's expiry to `(month, year)` if that is later than the stored
/// one; the card as it is afterwards.
async fn renew_expiry(
    state: &AppState,
    who: &Principal,
    c: CardRecord,
    (month, year): (i64, i64),
    cvc_available: bool,
) -> Result<CardRecord> {
    if (year, month) <= (c.exp_year, c.exp_month) {
        return Ok(c);
    }
    let mut view = CardView::new(&c, cvc_available);
    (view.exp_month, view.exp_year) = (month, year);
    let event = state.event_of(
        &c.account_id,
        c.mode,
        crate::service::events::EventType::CardUpdated,
        &view,
    )?;
    let renewed = state
        .store()
        .audited(&who.audit)
        .renew_card_expiry(&c.account_id, c.mode, &c.id, (month, year), &[event])
        .await?;
    // None: a concurrent renewal went further, or the card was deleted meanwhile.
    Ok(renewed.unwrap_or(c))
}

/// Prefix of card tokens.
pub const CARD_TOKEN_PREFIX: &str = "ctok_";
/// How long a card token can be redeemed.
pub const CARD_TOKEN_TTL_MS: i64 = 60 * 60 * 1000;
/// Random salt of a card token, from which its one-use sealing key is derived.
const CARD_TOKEN_SALT: usize = 16;

/// What a tokenization answers to a caller that may not read cards (a publishable key,
/// a key or token without `cards:read`): the same `201` whether or not the number was
/// vaulted before, with only what the caller sent and a token that the account's back
/// end redeems for the card (`POST /v1/card_tokens/redeem`). Nothing in it tells a new
/// card from an old one: not the card id (its time would show the card's age), not the
/// stored expiry, not the creation time, not the fingerprint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CardTokenView {
    /// `ctok_…`: redeemable for the card by the account's keys that hold `cards:read`.
    pub id: String,
    /// Always `card_token`.
    pub object: &'static str,
    /// Card brand.
    pub brand: String,
    /// First six digits.
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// `XXXX` + last four.
    pub masked_number: String,
    /// The expiry month sent.
    pub exp_month: i64,
    /// The expiry year sent (four digits).
    pub exp_year: i64,
    /// `test` or `live`.
    pub mode: &'static str,
    /// Unix seconds: now.
    pub created: i64,
    /// Unix seconds: the token cannot be redeemed after this.
    pub expires_at: i64,
    /// Whether the CVC sent with this request is held for the card's first payment
    /// (false when none was sent; a CVC held before says nothing here).
    pub cvc_available: bool,
    /// The client session the card was collected through (`cs_…`), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_session: Option<String>,
}

fn card_token_aad(account_id: &str, mode: Mode) -> Vec<u8> {
    format!("strongroom/card-token/v1|{account_id}|{}", mode.as_str()).into_bytes()
}

/// The one-use key a card token is sealed under: derived from the root key and the
/// token's random salt, so no key seals more than one token (no nonce budget to keep).
fn card_token_key(state: &AppState, salt: &[u8]) -> Result<DataKey> {
    let label = format!("card-token|{}", URL_SAFE_NO_PAD.encode(salt));
    let bytes = state.root().derive_subkey(&label)?;
    Ok(DataKey::from_bytes(bytes.as_slice())?)
}

/// The token view of a tokenization, for a caller without `cards:read`.
pub fn card_token(
    state: &AppState,
    who: &Principal,
    t: &Tokenized,
    session: Option<&str>,
) -> Result<CardTokenView> {
    let now = state.now_ms();
    let expires_ms = now.saturating_add(CARD_TOKEN_TTL_MS);
    let salt = strongroom_crypto::random::bytes::<CARD_TOKEN_SALT>()?;
    // The session, when there is one, goes inside the seal: the back end that redeems
    // the token learns which session (and so which fixed parameters) collected it.
    let plain = match session {
        Some(s) => format!("{}|{expires_ms}|{s}", t.card.id),
        None => format!("{}|{expires_ms}", t.card.id),
    };
    let sealed = card_token_key(state, &salt)?
        .seal(plain.as_bytes(), &card_token_aad(&who.account_id, who.mode))?;
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&sealed);
    Ok(CardTokenView {
        id: format!("{CARD_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)),
        object: "card_token",
        brand: t.card.brand.clone(),
        bin: t.card.bin.clone(),
        last4: t.card.last4.clone(),
        masked_number: t.card.masked_number.clone(),
        exp_month: t.submitted_expiry.0,
        exp_year: t.submitted_expiry.1,
        mode: who.mode.as_str(),
        created: secs(now),
        expires_at: secs(expires_ms),
        cvc_available: t.cvc_held,
        client_session: session.map(str::to_owned),
    })
}

/// The card a card token names, for a key of the same account and mode. A token that
/// is malformed, forged, expired, or of another account or mode is `card_token_invalid`.
pub async fn redeem_card_token(
    state: &AppState,
    who: &Principal,
    token: &str,
) -> Result<(CardRecord, Option<String>)> {
    let raw = token
        .strip_prefix(CARD_TOKEN_PREFIX)
        .filter(|t| t.len() <= 256)
        .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
        .ok_or(ServiceError::CardTokenInvalid)?;
    if raw.len() <= CARD_TOKEN_SALT {
        return Err(ServiceError::CardTokenInvalid);
    }
    let (salt, sealed) = raw.split_at(CARD_TOKEN_SALT);
    let plain = card_token_key(state, salt)?
        .open(sealed, &card_token_aad(&who.account_id, who.mode))
        .map_err(|_| ServiceError::CardTokenInvalid)?;
    let text = std::str::from_utf8(&plain).map_err(|_| ServiceError::CardTokenInvalid)?;
    let mut fields = text.split('|');
    let (Some(card_id), Some(expires), session) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(ServiceError::CardTokenInvalid);
    };
    let expires_ms: i64 = expires
        .parse()
        .map_err(|_| ServiceError::CardTokenInvalid)?;
    if expires_ms <= state.now_ms() {
        return Err(ServiceError::CardTokenInvalid);
    }
    Ok((get(state, who, card_id).await?, session.map(str::to_owned)))
}

/// One card of the principal's account and mode.
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<CardRecord> {
    strongroom_core::parse_id(IdKind::Card, id)?;
    state
        .store()
        .get_card(&who.account_id, who.mode, id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// The card of the principal's account and mode with this number, if it holds one
/// (looked up by fingerprint under every usable fingerprint key version).
pub async fn find_by_number(
    state: &AppState,
    who: &Principal,
    pan: &Pan,
) -> Result<Option<CardRecord>> {
    let keys = state.keyring().account(&who.account_id).await?;
    for (_, key) in keys.usable(KeyPurpose::Fingerprint) {
        let query = ListCards {
            fingerprint: Some(fingerprint(&key, pan)),
            starting_after: None,
            limit: 1,
        };
        let rows = state
            .store()
            .list_cards(&who.account_id, who.mode, &query)
            .await?;
        if let Some(card) = rows.into_iter().next() {
            return Ok(Some(card));
        }
    }
    Ok(None)
}

/// Deletes a card: its ciphertext is gone, and so is any CVC held for it.
pub async fn delete(state: &AppState, who: &Principal, id: &str) -> Result<DeletedCardView> {
    let card = get(state, who, id).await?;
    // First, so that a store that cannot forget it refuses before the card is gone.
    state
        .cvcs()
        .forget(&who.account_id, who.mode, &card.id)
        .await?;
    let view = DeletedCardView {
        id: card.id,
        object: "card",
        deleted: true,
    };
    let event = state.event_of(
        &who.account_id,
        who.mode,
        crate::service::events::EventType::CardDeleted,
        &view,
    )?;
    if state
        .store()
        .audited(&who.audit)
        .delete_card(&who.account_id, who.mode, id, &[event])
        .await?
    {
        Ok(view)
    } else {
        Err(ServiceError::NotFound)
    }
}

/// A page of the principal's cards, newest first, optionally of one fingerprint.
pub async fn list(
    state: &AppState,
    who: &Principal,
    fingerprint: Option<&str>,
    starting_after: Option<String>,
    limit: i64,
) -> Result<List<CardView>> {
    if !(1..=100).contains(&limit) {
        return Err(ServiceError::InvalidParameter);
    }
    if let Some(after) = &starting_after {
        strongroom_core::parse_id(IdKind::Card, after)
            .map_err(|_| ServiceError::InvalidParameter)?;
    }
    let query = ListCards {
        fingerprint: fingerprint.map(parse_fingerprint).transpose()?,
        starting_after,
        limit: limit.saturating_add(1),
    };
    let mut rows = state
        .store()
        .list_cards(&who.account_id, who.mode, &query)
        .await?;
    let has_more = crate::extract::page(&mut rows, limit);
    let ids: Vec<&str> = rows.iter().map(|c| c.id.as_str()).collect();
    let held = state
        .cvcs()
        .available_many(&who.account_id, who.mode, &ids, state.now_ms())
        .await?;
    let views = rows
        .iter()
        .zip(held.iter().chain(std::iter::repeat(&false)))
        .map(|(c, &h)| CardView::new(c, h))
        .collect();
    Ok(List::page(views, has_more))
}

/// Parses a fingerprint as shown in the card object.
pub fn parse_fingerprint(s: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or(ServiceError::InvalidParameter)
}
