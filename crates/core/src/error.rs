//! Domain errors: what went wrong with the input or the rules, never how it looked.

use thiserror::Error;

/// A rule of the domain was broken. Each variant has a stable `code`; no variant holds
/// the input that broke it, so no error can echo a card number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DomainError {
    /// Not 12–19 digits after removing spaces and dashes, or a non-digit.
    #[error("The card number is not a valid card number.")]
    CardNumberInvalid,
    /// The check digit is wrong.
    #[error("The card number failed its check digit.")]
    CardNumberLuhn,
    /// No known card brand issues numbers in this range.
    #[error("The card number does not belong to a supported card brand.")]
    CardBrandUnknown,
    /// Month outside 1–12 or an implausible year.
    #[error("The expiry month or year is invalid.")]
    ExpiryInvalid,
    /// The expiry is in the past.
    #[error("The card has expired.")]
    CardExpired,
    /// A published test card number was sent with a live key.
    #[error("Test card numbers cannot be used in live mode.")]
    TestCardInLiveMode,
    /// A real card number was sent with a test key.
    #[error("Only test card numbers are accepted in test mode.")]
    LiveCardInTestMode,
    /// An unknown scope name.
    #[error("A requested scope is unknown.")]
    ScopeUnknown,
    /// Restricted keys must name their scopes.
    #[error("Restricted keys must name at least one scope.")]
    ScopesRequired,
    /// Only restricted keys take explicit scopes.
    #[error("Only restricted keys take explicit scopes.")]
    ScopesNotAllowed,
    /// The thing named does not exist (or is not visible to this credential).
    #[error("No such resource.")]
    NotFound,
}

impl DomainError {
    /// The stable error code sent to clients.
    pub const fn code(self) -> &'static str {
        match self {
            Self::CardNumberInvalid => "card_number_invalid",
            Self::CardNumberLuhn => "card_number_luhn",
            Self::CardBrandUnknown => "card_brand_unknown",
            Self::ExpiryInvalid => "expiry_invalid",
            Self::CardExpired => "card_expired",
            Self::TestCardInLiveMode => "test_card_in_live_mode",
            Self::LiveCardInTestMode => "live_card_in_test_mode",
            Self::ScopeUnknown => "scope_unknown",
            Self::ScopesRequired => "scopes_required",
            Self::ScopesNotAllowed => "scopes_not_allowed",
            Self::NotFound => "not_found",
        }
    }
}
