//! Rows, as the store reads and writes them. Times are Unix milliseconds.

pub use strongroom_core::Mode;

/// An account (a merchant or tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// `acct_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// Where live-mode OTP codes are POSTed, if configured.
    pub otp_delivery_url: Option<String>,
    /// When it was created.
    pub created_ms: i64,
}

/// An API key. Only a keyed digest of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// `key_…`
    pub id: String,
    /// Owning account; `None` for an admin key.
    pub account_id: Option<String>,
    /// `secret`, `publishable`, `restricted` or `admin`.
    pub kind: String,
    /// `test` or `live` (admin keys: `live`).
    pub mode: Mode,
    /// The first characters of the secret, for people to recognise it (e.g. `sk_test_4f3a`).
    pub prefix: String,
    /// Keyed digest (HMAC-SHA256) of the whole secret; unique.
    pub digest: Vec<u8>,
    /// Space-separated scope names.
    pub scopes: String,
    /// When it was created.
    pub created_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<i64>,
    /// Admin keys: the custodian it belongs to, if named.
    pub name: Option<String>,
}

/// What a data key protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Encrypts card data.
    Cards,
    /// Keys the PAN fingerprint HMAC.
    Fingerprint,
    /// Enciphers ISO 9564-1 format 4 PIN blocks (AES-256).
    Pin,
}

impl KeyPurpose {
    /// Every purpose.
    pub const ALL: [KeyPurpose; 3] = [KeyPurpose::Cards, KeyPurpose::Fingerprint, KeyPurpose::Pin];

    /// `cards` or `fingerprint`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cards => "cards",
            Self::Fingerprint => "fingerprint",
            Self::Pin => "pin",
        }
    }

    /// Parses [`KeyPurpose::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The life of a data key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The writer: new records use it. One per account and purpose.
    Active,
    /// Still decrypts records not yet re-wrapped.
    DecryptOnly,
    /// Gone: the wrapped key has been erased.
    Retired,
}

impl KeyState {
    /// `active`, `decrypt_only` or `retired`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::DecryptOnly => "decrypt_only",
            Self::Retired => "retired",
        }
    }

    /// Parses [`KeyState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::DecryptOnly, Self::Retired]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One version of a data key, wrapped by the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    /// Owning account.
    pub account_id: String,
    /// What it protects.
    pub purpose: KeyPurpose,
    /// 1, 2, …
    pub version: i64,
    /// The key, wrapped by the root key (empty once retired).
    pub wrapped: Vec<u8>,
    /// Its state.
    pub state: KeyState,
    /// When it was created.
    pub created_ms: i64,
    /// When it was retired.
    pub retired_ms: Option<i64>,
}

/// A card: ciphertext plus the fields that may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// `card_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Test or live.
    pub mode: Mode,
    /// HMAC-SHA256 of the PAN under the fingerprint key version `fp_version`.
    pub fingerprint: Vec<u8>,
    /// Fingerprint key version.
    pub fp_version: i64,
    /// Cards key version that sealed `sealed`.
    pub key_version: i64,
    /// AES-256-GCM nonce ‖ ciphertext ‖ tag of the card's secret fields.
    pub sealed: Vec<u8>,
    /// Brand name.
    pub brand: String,
    /// First six digits.
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// 1–12.
    pub exp_month: i64,
    /// Four-digit year.
    pub exp_year: i64,
    /// When it was created.
    pub created_ms: i64,
}

/// The outcome of [`crate::Writes::insert_card`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertCard {
    /// A new card was written.
    Created(CardRecord),
    /// The PAN was already there; nothing was written.
    Existing(CardRecord),
}

/// A page request for cards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCards {
    /// Only cards with this fingerprint (any version).
    pub fingerprint: Option<Vec<u8>>,
    /// Only cards older than this id.
    pub starting_after: Option<String>,
    /// How many at most.
    pub limit: i64,
}

/// A batch of cards still under an older key version, read by the re-wrap worker: one
/// mode at a time, in id order, after a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapQuery<'a> {
    /// The mode whose cards to read.
    pub mode: Mode,
    /// Only cards whose id sorts after this one (`""` at the start of a pass).
    pub after: &'a str,
    /// Only cards whose version of the purpose's key is below this one.
    pub below_version: i64,
    /// How many at most.
    pub limit: i64,
}

/// One re-wrap of a card, applied only if the row still has the expected versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRewrap {
    /// The card.
    pub id: String,
    /// The `key_version` it must still have.
    pub expect_key_version: i64,
    /// The `fp_version` it must still have.
    pub expect_fp_version: i64,
    /// New sealed data.
    pub sealed: Vec<u8>,
    /// New cards key version.
    pub key_version: i64,
    /// New fingerprint.
    pub fingerprint: Vec<u8>,
    /// New fingerprint key version.
    pub fp_version: i64,
}

/// The outcome of [`crate::Writes::retire_data_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireOutcome {
    /// Retired now (or was already).
    Retired,
    /// Records still use it.
    InUse(i64),
    /// It is the writer; rotate first.
    Active,
    /// No such version.
    NotFound,
}

/// A one-time password for a step-up. Only a digest of the code is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpRecord {
    /// `otp_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Test or live.
    pub mode: Mode,
    /// What it authorises, e.g. `card.reveal`.
    pub purpose: String,
    /// The card it is bound to, if any.
    pub card_id: Option<String>,
    /// The API key that created it.
    pub api_key_id: String,
    /// Keyed digest of the code.
    pub code_digest: Vec<u8>,
    /// When it was created.
    pub created_ms: i64,
    /// When it stops working.
    pub expires_ms: i64,
    /// Wrong codes so far.
    pub attempts: i64,
    /// When it was used, if it was.
    pub used_ms: Option<i64>,
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// `evt_…`
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Test or live.
    pub mode: Mode,
    /// e.g. `card.created`.
    pub event_type: String,
    /// When it happened.
    pub created_ms: i64,
    /// The event body as JSON text (never a secret).
    pub data: String,
}

/// A page request for events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEvents {
    /// Only this type.
    pub event_type: Option<String>,
    /// Created at or after.
    pub created_gte: Option<i64>,
    /// Created before.
    pub created_lt: Option<i64>,
    /// Only events older than this id.
    pub starting_after: Option<String>,
    /// How many at most.
    pub limit: i64,
}
