//! What a service says went wrong, in the service's own terms. It carries no HTTP
//! status and no client message: `error.rs` maps each variant to its status, code and
//! message once (`From<ServiceError> for ApiError`), so a handler just uses `?`.
//!
//! A failure of the store, of crypto or of an invariant keeps its detail and the place
//! it arose (the `?` in the service), for the log; neither is ever returned.

use std::fmt;
use std::panic::Location;
use strongroom_core::DomainError;
use strongroom_crypto::CryptoError;
use strongroom_store::StoreError;

/// The result of a service function.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Why a service refused or failed a request.
#[derive(Debug)]
pub enum ServiceError {
    /// A parameter has a value the operation cannot take.
    InvalidParameter,
    /// A required field is missing.
    MissingField,
    /// No such object (or it belongs to another account or mode).
    NotFound,
    /// The state changed under the request; a retry may succeed.
    Conflict,
    /// The account already has as many of these as it may have.
    LimitReached,
    /// The caller's key lacks the scope the operation needs.
    PermissionDenied,
    /// The caller's address is not among those allowed (an inbound route's networks).
    IpNotAllowed,
    /// A requested token scope is empty, unknown or not held by the key.
    InvalidScope,
    /// A CVC is not three digits (four for American Express).
    CvcInvalid,
    /// A card token is malformed, expired, or from another account or mode.
    CardTokenInvalid,
    /// An OTP is unknown, wrong, expired, used or for something else.
    OtpInvalid,
    /// A key component does not have the check value given with it.
    KcvMismatch,
    /// This admin key already gave a component to the import.
    CustodianRepeated,
    /// A TR-31 key block does not unwrap under the key-encryption key.
    KeyBlockInvalid,
    /// A TR-31 key block holds another kind of key than the one imported.
    KeyBlockUsage,
    /// A terminal's `bdk` is not a base derivation key imported into the account.
    BdkUnknown,
    /// A base derivation key of an algorithm DUKPT does not derive from (triple-length
    /// TDES).
    BdkUnsupported,
    /// A zone PIN key named is not one imported into the account.
    ZoneKeyUnknown,
    /// A terminal with the same device identity is already registered under the BDK.
    TerminalExists,
    /// The terminal is disabled.
    TerminalDisabled,
    /// A key serial number is malformed, or its counter is one a terminal never uses.
    KsnInvalid,
    /// A key serial number's counter does not move forward (a replay).
    KsnReplayed,
    /// What a terminal sent did not decipher to card data (one error, whatever failed).
    DecryptionFailed,
    /// The application named is not registered, or the token names another package.
    IntegrityApplicationInvalid,
    /// The integrity hash is not a live one of this caller and application, or not the
    /// token's.
    IntegrityHashInvalid,
    /// The integrity token does not decrypt, verify or parse.
    IntegrityTokenInvalid,
    /// The integrity token is too old (or from the future).
    IntegrityTokenExpired,
    /// Play does not recognize the app, or its package or certificate is not registered.
    IntegrityAppUnrecognized,
    /// The app's version code is below the minimum.
    IntegrityAppVersion,
    /// A required device verdict is missing.
    IntegrityDevice,
    /// The app is not licensed and must be.
    IntegrityLicensing,
    /// The application is already registered for the account.
    IntegrityAppExists,
    /// The step-up needs a device attestation and none was sent.
    AttestationRequired,
    /// The attestation sent is unknown, expired, used, or another caller's.
    AttestationInvalid,
    /// Live OTPs need a delivery URL and the account has none.
    OtpDeliveryNotConfigured,
    /// An encrypted PIN could not be read (malformed, unknown key, not decryptable).
    PinPayloadInvalid,
    /// An encrypted PIN uses an algorithm other than RSA-OAEP-256 / A256GCM.
    PinPayloadUnsupported,
    /// An encrypted PIN was made for another card.
    PinPayloadCardMismatch,
    /// An encrypted PIN is too old or from the future.
    PinPayloadStale,
    /// An encrypted PIN's `jti` was used before.
    PinPayloadReplayed,
    /// A PIN is not 4 to 12 digits.
    PinLength,
    /// A PIN is too easy to guess.
    PinTooWeak,
    /// The current PIN given does not match.
    PinIncorrect,
    /// The PIN is locked after too many failures.
    PinLocked,
    /// The card has no PIN.
    PinNotSet,
    /// The card already has a PIN.
    PinAlreadySet,
    /// A bearer token is invalid.
    TokenInvalid,
    /// A bearer token has expired.
    TokenExpired,
    /// A bearer token's key has been revoked.
    TokenRevoked,
    /// A URL is not HTTPS or does not reach a public address.
    UrlNotAllowed,
    /// A relay destination is malformed (host, port, path prefix, CA certificates) or
    /// repeated.
    DestinationInvalid,
    /// A relay destination is, or resolves to, an address that is not public.
    DestinationNotPublic,
    /// More relay destinations than an account may have.
    TooManyDestinations,
    /// A URL is not HTTPS to a destination approved for the account and mode.
    DestinationNotApproved,
    /// An approved destination's name does not resolve now.
    DestinationUnreachable,
    /// An inbound route's settings are malformed (a tokenize rule without an expiry, a
    /// `forward_to` with a query, a description too long).
    InboundRouteInvalid,
    /// An account has as many inbound routes in a mode as it may.
    TooManyInboundRoutes,
    /// A field an inbound route tokenizes holds no valid card number with a valid,
    /// unexpired expiry: nothing was forwarded.
    InboundCardInvalid,
    /// A client secret is wrong or malformed, or its session is another account's or
    /// mode's.
    ClientSessionInvalid,
    /// A client session has expired.
    ClientSessionExpired,
    /// A client session has collected all the cards it may.
    ClientSessionUsed,
    /// A client session's allowed origins are malformed (or plain HTTP off loopback, or
    /// in live mode).
    OriginInvalid,
    /// A card, address, email or device is suspended (the message stays generic).
    Suspended {
        /// Seconds until the suspension ends.
        retry_after: u64,
    },
    /// The risk assessment of this card use said `block`, and the account enforces it.
    RiskBlocked,
    /// A suspension's target is malformed, or names no card or key of the account.
    SuspensionTargetInvalid,
    /// An uploaded BIN table was refused: where (a 1-based line) and why, never the data.
    BinTableInvalid {
        /// The line at fault, when one is.
        line: Option<usize>,
        /// What is wrong.
        problem: String,
    },
    /// An uploaded IP database was refused: why, never the data.
    IpDatabaseInvalid {
        /// What is wrong.
        problem: String,
    },
    /// A list entry's value is malformed for its type, or names no card of the account.
    ListEntryInvalid,
    /// The list already holds the same subject, live.
    ListEntryExists,
    /// A risk rule set was refused whole: which rule, and why.
    RulesInvalid(strongroom_risk::RuleError),
    /// The rules in force are not the version the put said it replaces.
    RulesVersionConflict,
    /// A relay expression, value or pointer was refused (its code says which).
    Relay(strongroom_core::relay::RelayError),
    /// A card named in a relay request is not one of the account's in this mode.
    RelayCardUnknown,
    /// A relay header is malformed, one the caller may not set, or one too many.
    RelayHeaderInvalid,
    /// The relay could not reach the destination or lost the connection.
    RelayUpstreamFailed,
    /// The destination did not answer in time.
    RelayUpstreamTimeout,
    /// The destination's answer is larger than the relay reads.
    RelayResponseTooLarge,
    /// The destination's answer is content-encoded (compressed), which the relay cannot
    /// clean.
    RelayResponseEncoded,
    /// A rule of the domain was broken.
    Domain(DomainError),
    /// The store failed or refused a write.
    Store {
        /// What the store said (for the log).
        source: StoreError,
        /// Where it reached the service.
        at: &'static Location<'static>,
    },
    /// A cryptographic operation failed.
    Crypto {
        /// What failed (says nothing about why).
        source: CryptoError,
        /// Where it reached the service.
        at: &'static Location<'static>,
    },
    /// An invariant does not hold (a stored record or key is not what it must be).
    Internal {
        /// What does not hold (for the log; never input or secrets).
        detail: String,
        /// Where it was found.
        at: &'static Location<'static>,
    },
}

impl ServiceError {
    /// A broken invariant, with the caller's location for the log.
    #[track_caller]
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::Internal {
            detail: detail.to_string(),
            at: Location::caller(),
        }
    }

    /// Whether this is a lost race (a retry or a re-read may succeed).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::Conflict
                | Self::Store {
                    source: StoreError::Conflict(_),
                    ..
                }
        )
    }

    /// The detail and location of a failure that is not the caller's fault (store,
    /// crypto, invariant), for the log.
    pub fn failure(&self) -> Option<(&dyn fmt::Display, &'static Location<'static>)> {
        match self {
            Self::Store { source, at } => Some((source, *at)),
            Self::Crypto { source, at } => Some((source, *at)),
            Self::Internal { detail, at } => Some((detail, *at)),
            _ => None,
        }
    }
}

impl From<strongroom_core::relay::RelayError> for ServiceError {
    fn from(e: strongroom_core::relay::RelayError) -> Self {
        Self::Relay(e)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.failure()) {
            (Self::Domain(e), _) => e.fmt(f),
            (_, Some((detail, at))) => write!(f, "{detail} (at {}:{})", at.file(), at.line()),
            (other, None) => fmt::Debug::fmt(other, f),
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<DomainError> for ServiceError {
    fn from(e: DomainError) -> Self {
        Self::Domain(e)
    }
}

impl From<StoreError> for ServiceError {
    #[track_caller]
    fn from(source: StoreError) -> Self {
        Self::Store {
            source,
            at: Location::caller(),
        }
    }
}

impl From<CryptoError> for ServiceError {
    #[track_caller]
    fn from(source: CryptoError) -> Self {
        Self::Crypto {
            source,
            at: Location::caller(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_call() -> std::result::Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }

    /// A store failure keeps the `?` where it reached the service, for the log.
    #[test]
    fn a_failure_keeps_where_it_arose() {
        let line = line!() + 1;
        let e = (|| -> Result<()> { Ok(store_call()?) })().unwrap_err();
        let (detail, at) = e.failure().unwrap();
        assert_eq!((at.file(), at.line()), (file!(), line));
        assert_eq!(detail.to_string(), "store unavailable: down");
        assert!(!e.is_conflict());
        assert!(ServiceError::from(StoreError::Conflict("taken")).is_conflict());
        assert!(ServiceError::NotFound.failure().is_none());
    }
}
