//! Card-present terminals (docs/card-present.md): a terminal is registered under one of
//! the account's imported base derivation keys with its device identity; what it
//! enciphers under its per-transaction DUKPT keys is deciphered here, parsed, and
//! tokenized exactly as `POST /v1/cards` tokenizes. The transaction counter of each key
//! serial number must move forward, so a captured transaction cannot be sent again.
//!
//! The deciphered buffer, the track data in it and every key derived for it live only in
//! zeroizing memory for the length of the call; nothing of them is stored, logged or
//! answered. Whatever goes wrong between the key serial number and the parsed track is
//! one generic `decryption_failed`.

use crate::auth::Principal;
use crate::custody::pkcs11::{HSM_KEY, Hsm, TokenKey};
use crate::service::cards::{self, Claim, NewCard, Tokenized};
use crate::service::{List, Result, ServiceError, key_imports, object_name, secs};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use strongroom_core::track::{self, CardData, TrackKind};
use strongroom_core::{DomainError, IdKind, Scope, Sensitive};
use strongroom_crypto::components::KeyAlgorithm;
use strongroom_crypto::dukpt::{self, AesKsn, TdesKsn, Usage};
use strongroom_crypto::pin;
use strongroom_store::{ImportedKeyRecord, KeyImportStore, TerminalRecord, TerminalStore};
use utoipa::ToSchema;
use zeroize::Zeroizing;

object_name!(
    /// `terminal`.
    TerminalObject = "terminal"
);

/// The most enciphered data a terminal may send, in bytes (deciphered).
const MAX_DATA: usize = 4096;
/// The most terminals one account may register in a mode.
const MAX_TERMINALS: usize = 10_000;

/// Body of `POST /v1/terminals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTerminal {
    /// The base derivation key the terminal's keys come from: a `bdk_…` imported into
    /// this account under dual control.
    #[schema(pattern = "^bdk_[0-9a-f]{32}$")]
    pub bdk: String,
    /// AES-DUKPT (an AES BDK): the terminal's Initial Key ID, 8 bytes as 16 hex digits.
    #[schema(pattern = "^[0-9A-Fa-f]{16}$")]
    pub initial_key_id: Option<String>,
    /// TDES-DUKPT (a double-length TDES BDK): the terminal's initial key serial number,
    /// 10 bytes as 20 hex digits (its counter bits, the right 21, are ignored), or its
    /// 59-bit identity as the left 8 bytes (16 hex digits).
    #[schema(pattern = "^[0-9A-Fa-f]{16}([0-9A-Fa-f]{4})?$")]
    pub ksn_prefix: Option<String>,
    /// The device's serial number (1 to 64 printable characters).
    #[schema(min_length = 1, max_length = 64)]
    pub serial: String,
    /// Where it stands (at most 200 characters).
    #[schema(max_length = 200)]
    pub location: Option<String>,
}

/// A terminal: its identity and state, never a key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TerminalView {
    /// `term_…`
    #[schema(pattern = "^term_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `terminal`.
    pub object: TerminalObject,
    /// The base derivation key (`bdk_…`).
    pub bdk: String,
    /// `aes-dukpt` (ANSI X9.24-3) or `tdes-dukpt` (ANSI X9.24-1).
    #[schema(example = "aes-dukpt")]
    pub scheme: &'static str,
    /// AES-DUKPT: the Initial Key ID (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_key_id: Option<String>,
    /// TDES-DUKPT: the initial key serial number, counter cleared (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ksn_prefix: Option<String>,
    /// The device's serial number.
    pub serial: String,
    /// Where it stands.
    pub location: Option<String>,
    /// The highest transaction counter accepted so far for card data (0: none).
    pub transaction_counter: i64,
    /// The highest transaction counter accepted so far for PIN blocks (0: none).
    pub pin_transaction_counter: i64,
    /// `active` or `disabled`.
    #[schema(example = "active")]
    pub status: &'static str,
    /// Whether the key is live.
    pub livemode: bool,
    /// Unix seconds.
    pub created: i64,
}

impl TerminalView {
    fn new(r: &TerminalRecord) -> Self {
        let aes = r.scheme == AES;
        Self {
            id: r.id.clone(),
            object: TerminalObject::default(),
            bdk: r.bdk_id.clone(),
            scheme: if aes { "aes-dukpt" } else { "tdes-dukpt" },
            initial_key_id: aes.then(|| r.device.clone()),
            ksn_prefix: (!aes).then(|| r.device.clone()),
            serial: r.serial.clone(),
            location: r.location.clone(),
            transaction_counter: r.counter,
            pin_transaction_counter: r.pin_counter,
            status: if r.disabled_ms.is_some() {
                "disabled"
            } else {
                "active"
            },
            livemode: r.mode == strongroom_core::Mode::Live,
            created: secs(r.created_ms),
        }
    }
}

/// The stored scheme of an AES-DUKPT terminal.
const AES: &str = "aes";
/// The stored scheme of a TDES-DUKPT terminal.
const TDES: &str = "tdes";

fn hex_exact(s: &str, bytes: usize) -> Option<Vec<u8>> {
    (s.len() == bytes * 2)
        .then(|| hex::decode(s).ok())
        .flatten()
}

/// The account's BDK named `id`, with its algorithm.
async fn bdk(
    state: &AppState,
    account: &str,
    id: &str,
) -> Result<(ImportedKeyRecord, KeyAlgorithm)> {
    strongroom_core::parse_id(IdKind::Bdk, id).map_err(|_| ServiceError::BdkUnknown)?;
    let key = state
        .store()
        .imported_key(id)
        .await?
        .filter(|k| k.account_id == account && k.kind == "bdk")
        .ok_or(ServiceError::BdkUnknown)?;
    let alg = KeyAlgorithm::parse(&key.algorithm)
        .ok_or_else(|| ServiceError::internal("imported key algorithm"))?;
    Ok((key, alg))
}

/// Registers a terminal (`terminals:write`).
pub async fn create(state: &AppState, who: &Principal, new: &NewTerminal) -> Result<TerminalView> {
    who.require(Scope::TerminalsWrite)?;
    let serial = new.serial.trim();
    if serial.is_empty() || serial.chars().count() > 64 || serial.chars().any(char::is_control) {
        return Err(ServiceError::InvalidParameter);
    }
    let location = new
        .location
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    if location.is_some_and(|l| l.chars().count() > 200 || l.chars().any(char::is_control)) {
        return Err(ServiceError::InvalidParameter);
    }
    let (key, alg) = bdk(state, &who.account_id, &new.bdk).await?;
    let (scheme, device) = match (alg, &new.initial_key_id, &new.ksn_prefix) {
        (KeyAlgorithm::Aes128 | KeyAlgorithm::Aes192 | KeyAlgorithm::Aes256, Some(id), None) => {
            let id = hex_exact(id, 8).ok_or(ServiceError::InvalidParameter)?;
            (AES, hex::encode_upper(id))
        }
        (KeyAlgorithm::Tdes2, None, Some(prefix)) => {
            let mut ksn = [0u8; 10];
            let bytes = hex_exact(prefix, 10)
                .or_else(|| hex_exact(prefix, 8))
                .ok_or(ServiceError::InvalidParameter)?;
            ksn.get_mut(..bytes.len())
                .ok_or(ServiceError::InvalidParameter)?
                .copy_from_slice(&bytes);
            (TDES, hex::encode_upper(TdesKsn(ksn).initial()))
        }
        // ANSI X9.24-1-2009 derives from double-length keys only.
        (KeyAlgorithm::Tdes3, ..) => return Err(ServiceError::BdkUnsupported),
        _ => return Err(ServiceError::InvalidParameter),
    };
    if state
        .store()
        .terminals(&who.account_id, who.mode)
        .await?
        .len()
        >= MAX_TERMINALS
    {
        return Err(ServiceError::LimitReached);
    }
    let record = TerminalRecord {
        id: state.new_id(IdKind::Terminal)?,
        account_id: who.account_id.clone(),
        mode: who.mode,
        bdk_id: key.id,
        scheme: scheme.to_owned(),
        device,
        serial: serial.to_owned(),
        location: location.map(str::to_owned),
        counter: 0,
        pin_counter: 0,
        created_ms: state.now_ms(),
        disabled_ms: None,
    };
    crate::audit::set_resource(&who.audit, "terminal", &record.id);
    match state
        .store()
        .audited(&who.audit)
        .insert_terminal(&record)
        .await
    {
        Err(strongroom_store::StoreError::Conflict(_)) => Err(ServiceError::TerminalExists),
        other => other.map_err(ServiceError::from),
    }?;
    Ok(TerminalView::new(&record))
}

/// The caller's terminal `id` (any state).
async fn terminal(state: &AppState, who: &Principal, id: &str) -> Result<TerminalRecord> {
    strongroom_core::parse_id(IdKind::Terminal, id)?;
    state
        .store()
        .terminal(id)
        .await?
        .filter(|t| t.account_id == who.account_id && t.mode == who.mode)
        .ok_or(ServiceError::NotFound)
}

/// One of the caller's terminals (`terminals:write`).
pub async fn get(state: &AppState, who: &Principal, id: &str) -> Result<TerminalView> {
    who.require(Scope::TerminalsWrite)?;
    Ok(TerminalView::new(&terminal(state, who, id).await?))
}

/// The caller's terminals in its mode, oldest first (`terminals:write`).
pub async fn list(state: &AppState, who: &Principal) -> Result<List<TerminalView>> {
    who.require(Scope::TerminalsWrite)?;
    let all = state.store().terminals(&who.account_id, who.mode).await?;
    Ok(List::all(all.iter().map(TerminalView::new).collect()))
}

/// Disables a terminal for good: what it sends from now on is refused
/// (`terminal_disabled`). Disabling one already disabled changes nothing.
pub async fn disable(state: &AppState, who: &Principal, id: &str) -> Result<TerminalView> {
    who.require(Scope::TerminalsWrite)?;
    let mut t = terminal(state, who, id).await?;
    crate::audit::set_resource(&who.audit, "terminal", &t.id);
    if t.disabled_ms.is_none() {
        let now = state.now_ms();
        state
            .store()
            .audited(&who.audit)
            .disable_terminal(&t.id, now)
            .await?;
        t.disabled_ms = Some(now);
    }
    Ok(TerminalView::new(&t))
}

/// What a terminal sent: `POST /v1/terminals/{id}/cards`.
pub struct Enciphered<'a> {
    /// The key serial number, hex (AES: 12 bytes; TDES: 10).
    pub ksn: &'a str,
    /// The enciphered data, hex or base64.
    pub data: &'a Sensitive<String>,
    /// What it holds.
    pub kind: TrackKind,
    /// `aes-cbc` or `tdes-cbc`.
    pub cipher: &'a str,
}

/// A working key: in zeroizing memory, or a session object on the HSM (an AES-128
/// BDK kept on the token derives there).
enum Working {
    Clear(Zeroizing<Vec<u8>>),
    Token(TokenKey),
}

impl Working {
    /// Deciphers `data` in CBC mode with a zero IV (`tdes`: 8-byte blocks).
    fn decipher_cbc(&self, tdes: bool, data: &mut [u8]) -> Result<()> {
        match self {
            Self::Clear(k) => dukpt::decipher_cbc(k, tdes, data),
            Self::Token(k) => k.decipher_cbc(data),
        }
        .map_err(|_| ServiceError::DecryptionFailed)
    }
}

/// A BDK: unwrapped into zeroizing memory, or on the HSM.
enum Bdk {
    Clear(Zeroizing<Vec<u8>>),
    Token(std::sync::Arc<Hsm>, String),
}

/// The terminal's BDK, as it is kept.
fn open_bdk(state: &AppState, key: &ImportedKeyRecord) -> Result<Bdk> {
    if key.wrapped == HSM_KEY {
        let hsm = state
            .hsm()
            .ok_or_else(|| ServiceError::internal("a BDK on an HSM the vault has not opened"))?;
        return Ok(Bdk::Token(hsm.clone(), key.id.clone()));
    }
    Ok(Bdk::Clear(state.root().unwrap_bytes(
        &key.wrapped,
        &key_imports::wrap_context(&key.id),
    )?))
}

/// A transaction's key serial number, checked against the terminal: its counter, and
/// the working key it gives for `usage`. `Err(KsnInvalid)` for a KSN that is not the
/// terminal's shape or a counter a terminal never uses; a KSN of another device is
/// `decryption_failed`.
struct Transaction {
    counter: u32,
    key: Working,
}

fn transaction(
    t: &TerminalRecord,
    bdk: &Bdk,
    alg: KeyAlgorithm,
    ksn: &str,
    usage: Usage,
) -> Result<Transaction> {
    let fail = |_| ServiceError::DecryptionFailed;
    if t.scheme == AES {
        let bytes = hex_exact(ksn, 12).ok_or(ServiceError::KsnInvalid)?;
        let ksn = AesKsn::from_bytes(&bytes).map_err(|_| ServiceError::KsnInvalid)?;
        if !dukpt::aes_counter_valid(ksn.counter) {
            return Err(ServiceError::KsnInvalid);
        }
        if hex::encode_upper(ksn.initial_key_id) != t.device {
            return Err(ServiceError::DecryptionFailed);
        }
        let key = match bdk {
            Bdk::Clear(b) => {
                Working::Clear(dukpt::aes_working_key(b, alg, &ksn, usage, alg).map_err(fail)?)
            }
            Bdk::Token(hsm, id) => {
                let path = dukpt::aes_path(alg, &ksn, usage, alg).map_err(fail)?;
                Working::Token(hsm.aes128_dukpt(id, &path)?)
            }
        };
        Ok(Transaction {
            counter: ksn.counter,
            key,
        })
    } else {
        let bytes = hex_exact(ksn, 10).ok_or(ServiceError::KsnInvalid)?;
        let ksn = TdesKsn::from_bytes(&bytes).map_err(|_| ServiceError::KsnInvalid)?;
        if !dukpt::tdes_counter_valid(ksn.counter()) {
            return Err(ServiceError::KsnInvalid);
        }
        if hex::encode_upper(ksn.initial()) != t.device {
            return Err(ServiceError::DecryptionFailed);
        }
        let Bdk::Clear(bdk) = bdk else {
            return Err(ServiceError::internal("a TDES BDK on the HSM"));
        };
        let ipek = dukpt::tdes_ipek(bdk, &ksn).map_err(fail)?;
        let current = dukpt::tdes_transaction_key(&ipek, &ksn);
        let key = match usage {
            Usage::Pin => dukpt::tdes_pin_key(&current),
            _ => dukpt::tdes_data_key(&current),
        };
        Ok(Transaction {
            counter: ksn.counter(),
            key: Working::Clear(Zeroizing::new(key.to_vec())),
        })
    }
}

/// The caller's active terminal `id`, and the transaction of `ksn` on it for `usage`,
/// checked to move its counter (card data or PIN blocks) forward.
async fn begin(
    state: &AppState,
    who: &Principal,
    id: &str,
    ksn: &str,
    usage: Usage,
) -> Result<(TerminalRecord, Transaction)> {
    who.require(Scope::TerminalsUse)?;
    strongroom_core::parse_id(IdKind::Terminal, id)?;
    let (t, key) = state
        .store()
        .terminal_with_bdk(id)
        .await?
        .filter(|(t, k)| {
            t.account_id == who.account_id && t.mode == who.mode && k.account_id == t.account_id
        })
        .ok_or(ServiceError::NotFound)?;
    crate::audit::set_resource(&who.audit, "terminal", &t.id);
    if t.disabled_ms.is_some() {
        return Err(ServiceError::TerminalDisabled);
    }
    let alg = KeyAlgorithm::parse(&key.algorithm)
        .ok_or_else(|| ServiceError::internal("imported key algorithm"))?;
    let bdk = open_bdk(state, &key)?;
    let tx = transaction(&t, &bdk, alg, ksn, usage)?;
    drop(bdk);
    let seen = if usage == Usage::Pin {
        t.pin_counter
    } else {
        t.counter
    };
    if i64::from(tx.counter) <= seen {
        return Err(ServiceError::KsnReplayed);
    }
    Ok((t, tx))
}

/// Moves the terminal's counter to the transaction's, once what it sent was read:
/// `ksn_replayed` if another request took the counter meanwhile.
async fn advance(
    state: &AppState,
    who: &Principal,
    t: &TerminalRecord,
    counter: u32,
    pin: bool,
) -> Result<()> {
    let moved = state
        .store()
        .audited(&who.audit)
        .advance_terminal(&t.id, i64::from(counter), pin)
        .await?;
    if moved {
        Ok(())
    } else {
        Err(ServiceError::KsnReplayed)
    }
}

/// Hex or standard base64 (padded or not), into zeroizing memory.
fn enciphered_bytes(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    let s = s.trim();
    if s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(s).ok().map(Zeroizing::new);
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .ok()
        .map(Zeroizing::new)
}

/// Deciphers what a terminal sent and tokenizes the card in it (`terminals:use`),
/// exactly as `POST /v1/cards` would with the same number, expiry and name. The
/// transaction counter moves forward in the card's own write (both or neither): a
/// replay of the same transaction is `ksn_replayed`.
pub async fn tokenize(
    state: &AppState,
    who: &Principal,
    id: &str,
    sent: Enciphered<'_>,
) -> Result<Tokenized> {
    let (t, tx) = begin(state, who, id, sent.ksn, Usage::DataEncrypt).await?;
    let wanted = if t.scheme == AES {
        "aes-cbc"
    } else {
        "tdes-cbc"
    };
    if sent.cipher != wanted {
        return Err(ServiceError::InvalidParameter);
    }
    let card = read_card(&tx.key, &sent)?;
    drop(tx.key);
    let new = NewCard {
        number: Sensitive::new(String::from(card.pan.as_str())),
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        cardholder_name: card
            .name
            .as_ref()
            .map(|n| Sensitive::new(String::from(n.as_str()))),
        cvc: None,
    };
    drop(card);
    let risk = crate::service::assessments::Implicit {
        action: crate::service::assessments::Action::Tokenize,
        ip: None,
    };
    // The counter moves in the card's own write: both, or neither.
    let claim = Claim::Terminal {
        id: &t.id,
        counter: i64::from(tx.counter),
    };
    cards::tokenize_through(state, who, new, Some(claim), Some(&risk))
        .await
        .map_err(|e| match e {
            // A number that fails its check digit came out of a bad decipherment as far
            // as anyone outside can tell.
            ServiceError::Domain(DomainError::CardNumberInvalid | DomainError::CardNumberLuhn) => {
                ServiceError::DecryptionFailed
            }
            other => other,
        })
}

/// Deciphers and parses: every failure is `decryption_failed`.
fn read_card(key: &Working, sent: &Enciphered<'_>) -> Result<CardData> {
    let fail = ServiceError::DecryptionFailed;
    let data = enciphered_bytes(sent.data.expose()).ok_or(ServiceError::InvalidParameter)?;
    let block = if sent.cipher == "tdes-cbc" { 8 } else { 16 };
    if data.is_empty() || data.len() > MAX_DATA || !data.len().is_multiple_of(block) {
        return Err(fail);
    }
    let mut clear = data;
    key.decipher_cbc(block == 8, &mut clear)?;
    track::parse(sent.kind, &clear, block).ok_or(fail)
}

/// An ISO 9564-1 PIN block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PinFormat {
    /// Format 0 (TDES, 8 bytes): TDES-DUKPT terminals, TDES zone PIN keys.
    Iso0,
    /// Format 4 (AES, 16 bytes): AES-DUKPT terminals, AES zone PIN keys.
    Iso4,
}

impl PinFormat {
    /// The format a key of `alg` enciphers.
    fn of(alg: KeyAlgorithm) -> Self {
        match alg {
            KeyAlgorithm::Tdes2 | KeyAlgorithm::Tdes3 => Self::Iso0,
            _ => Self::Iso4,
        }
    }
}

/// What a terminal enciphered a PIN into: `POST /v1/terminals/{id}/pin_translations`.
pub struct PinSent<'a> {
    /// The key serial number, hex.
    pub ksn: &'a str,
    /// The PIN block, hex.
    pub pin_block: &'a Sensitive<String>,
    /// Its format.
    pub format: PinFormat,
    /// The card it was entered for (`card_…`).
    pub card: &'a str,
    /// The processor's zone PIN key (`zpk_…`).
    pub zone_key: &'a str,
    /// The format wanted under it.
    pub to_format: PinFormat,
}

/// How long a translated block may be used in a relay request.
pub const TRANSLATION_TTL_MS: i64 = 60_000;

object_name!(
    /// `pin_translation`.
    PinTranslationObject = "pin_translation"
);

/// A PIN block translated to a zone PIN key: the new block, never the PIN.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PinTranslationView {
    /// `pint_…`: names the block in one relay request within 60 seconds
    /// (`{{card_…:pin_block:pint_…}}`).
    #[schema(pattern = "^pint_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `pin_translation`.
    pub object: PinTranslationObject,
    /// The card (`card_…`).
    pub card: String,
    /// The zone PIN key it is enciphered under (`zpk_…`).
    pub zone_key: String,
    /// `iso0` or `iso4`.
    pub format: PinFormat,
    /// The PIN block under the zone PIN key, hex (16 digits for `iso0`, 32 for `iso4`).
    pub pin_block: String,
    /// When the relay stops accepting it (Unix seconds).
    pub expires_at: i64,
}

/// `pin` for `pan` in the zone key's format, hex, enciphered under the zone key: on the
/// HSM where it is kept there.
fn encipher_for_zone(
    state: &AppState,
    zpk: &ImportedKeyRecord,
    alg: KeyAlgorithm,
    pin: &pin::Pin,
    pan: &str,
) -> Result<String> {
    let tdes = PinFormat::of(alg) == PinFormat::Iso0;
    if zpk.wrapped == HSM_KEY {
        let hsm = state.hsm().ok_or_else(|| {
            ServiceError::internal("a zone key on an HSM the vault has not opened")
        })?;
        let key = hsm.imported(&zpk.id, alg)?;
        return Ok(if tdes {
            let mut block = pin::iso0::clear_block(pin, pan)?;
            key.encipher_tdes(&mut block)?;
            hex::encode_upper(block.as_slice())
        } else {
            hex::encode_upper(pin::encipher(&key, pin, pan)?.expose_bytes())
        });
    }
    let zone = state
        .root()
        .unwrap_bytes(&zpk.wrapped, &key_imports::wrap_context(&zpk.id))?;
    Ok(if tdes {
        hex::encode_upper(pin::iso0::encipher(&zone, pin, pan)?)
    } else {
        let key = pin::PinKey::from_bytes(&zone)?;
        hex::encode_upper(pin::encipher(&key, pin, pan)?.expose_bytes())
    })
}

/// Re-enciphers a terminal's PIN block under a processor's zone PIN key
/// (`terminals:use`): deciphered under the transaction's DUKPT PIN key, checked against the
/// card's PAN, enciphered under the zone key in the format asked. The clear PIN exists
/// only in zeroizing memory during the call. The PIN counter of the terminal moves forward
/// as the card-data one does, on its own: one transaction sends both under one KSN.
pub async fn translate_pin(
    state: &AppState,
    who: &Principal,
    id: &str,
    sent: PinSent<'_>,
) -> Result<PinTranslationView> {
    let (t, tx) = begin(state, who, id, sent.ksn, Usage::Pin).await?;
    let theirs = if t.scheme == AES {
        PinFormat::Iso4
    } else {
        PinFormat::Iso0
    };
    let zpk = state
        .store()
        .imported_key(sent.zone_key)
        .await?
        .filter(|k| k.account_id == who.account_id && k.kind == "zone_pin_key")
        .ok_or(ServiceError::ZoneKeyUnknown)?;
    let zpk_alg = KeyAlgorithm::parse(&zpk.algorithm)
        .ok_or_else(|| ServiceError::internal("imported key algorithm"))?;
    if sent.format != theirs || sent.to_format != PinFormat::of(zpk_alg) {
        return Err(ServiceError::InvalidParameter);
    }
    let card = cards::get(state, who, sent.card).await?;
    let keys = state.keyring().account(&who.account_id).await?;
    let clear = cards::open(&keys, &card)?;
    let pan = clear.number.as_str();
    let fail = |_| ServiceError::DecryptionFailed;
    let block = hex_exact(
        sent.pin_block.expose(),
        if theirs == PinFormat::Iso0 { 8 } else { 16 },
    )
    .ok_or(ServiceError::InvalidParameter)?;
    let pin = match (theirs, &tx.key) {
        (PinFormat::Iso0, Working::Clear(key)) => {
            let b: [u8; 8] = block
                .as_slice()
                .try_into()
                .map_err(|_| ServiceError::InvalidParameter)?;
            pin::iso0::decipher(key, &b, pan).map_err(fail)?
        }
        (PinFormat::Iso4, key) => {
            let b =
                pin::PinBlock::from_bytes(&block).map_err(|_| ServiceError::InvalidParameter)?;
            match key {
                Working::Clear(k) => pin::decipher(&pin::PinKey::from_bytes(k)?, &b, pan),
                Working::Token(k) => pin::decipher(k, &b, pan),
            }
            .map_err(fail)?
        }
        (PinFormat::Iso0, Working::Token(_)) => {
            return Err(ServiceError::internal("a TDES PIN key on the HSM"));
        }
    };
    drop(tx.key);
    advance(state, who, &t, tx.counter, true).await?;
    let out = encipher_for_zone(state, &zpk, zpk_alg, &pin, pan)?;
    drop((pin, clear));
    let now = state.now_ms();
    let translation = state.new_id(IdKind::PinTranslation)?;
    let held = format!("{}:{out}", card.id);
    state
        .cvcs()
        .hold_for(
            &who.account_id,
            who.mode,
            &translation,
            &held,
            now,
            TRANSLATION_TTL_MS,
        )
        .await?;
    Ok(PinTranslationView {
        id: translation,
        object: PinTranslationObject::default(),
        card: card.id,
        zone_key: zpk.id,
        format: sent.to_format,
        pin_block: out,
        expires_at: secs(now + TRANSLATION_TTL_MS),
    })
}
