//! Test and live modes, API key kinds and scopes.

use crate::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Test data and live data never mix: a key of one mode sees only records of that mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Test mode: only published test card numbers are accepted.
    Test,
    /// Live mode: published test card numbers are refused.
    Live,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Test, Mode::Live];

    /// `"test"` or `"live"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }

    /// Parses `"test"` or `"live"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "test" => Some(Self::Test),
            "live" => Some(Self::Live),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of API key a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// `sk_`: server-side, every scope except `cards:reveal`.
    Secret,
    /// `pk_`: may only create cards; safe to embed in a browser.
    Publishable,
    /// `rk_`: exactly the scopes it names.
    Restricted,
}

impl KeyKind {
    /// `"secret"`, `"publishable"` or `"restricted"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Publishable => "publishable",
            Self::Restricted => "restricted",
        }
    }

    /// The scopes a stored key of this kind holds. A secret key holds exactly
    /// [`Scopes::SECRET_DEFAULT`] whatever its row says: secret keys cannot be created
    /// with other scopes, and rows written before a scope existed do not name it.
    pub fn held_scopes(self, stored: &str) -> Scopes {
        match self {
            Self::Secret => Scopes::SECRET_DEFAULT,
            Self::Publishable | Self::Restricted => Scopes::from_storage(stored),
        }
    }

    /// Parses the name given by [`KeyKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "secret" => Some(Self::Secret),
            "publishable" => Some(Self::Publishable),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    /// The secret's prefix for this kind and mode, e.g. `sk_test_`.
    pub const fn secret_prefix(self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Self::Secret, Mode::Test) => "sk_test_",
            (Self::Secret, Mode::Live) => "sk_live_",
            (Self::Publishable, Mode::Test) => "pk_test_",
            (Self::Publishable, Mode::Live) => "pk_live_",
            (Self::Restricted, Mode::Test) => "rk_test_",
            (Self::Restricted, Mode::Live) => "rk_live_",
        }
    }

    /// The scopes a key of this kind carries when it is created with `requested`.
    /// Secret keys carry every scope but `cards:reveal`; publishable keys only
    /// `cards:write`; restricted keys exactly what they name (at least one).
    pub fn effective_scopes(self, requested: Option<Scopes>) -> Result<Scopes, DomainError> {
        match (self, requested) {
            (Self::Secret, None) => Ok(Scopes::SECRET_DEFAULT),
            (Self::Publishable, None) => Ok(Scopes::from(Scope::CardsWrite)),
            (Self::Restricted, Some(s)) if !s.is_empty() => Ok(s),
            (Self::Restricted, _) => Err(DomainError::ScopesRequired),
            (_, Some(_)) => Err(DomainError::ScopesNotAllowed),
        }
    }
}

/// One permission an API key may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Create cards.
    CardsWrite,
    /// Read masked cards and list them.
    CardsRead,
    /// Reveal a card's number (with an OTP).
    CardsReveal,
    /// Delete cards.
    CardsDelete,
    /// Set, reset and change card PINs (with an OTP), and create PIN OTPs.
    PinsWrite,
    /// Verify card PINs.
    PinsVerify,
    /// Read the account's gateway settings, IP allowlist and request-signing keys.
    AccountRead,
    /// Change the account's gateway settings and IP allowlist (live mode only: they
    /// protect live traffic too).
    AccountWrite,
    /// Register and revoke request-signing keys (live mode only).
    SigningKeysWrite,
    /// Read events and their deliveries.
    EventsRead,
    /// Read webhook endpoints and their attempts.
    WebhooksRead,
    /// Create, change, rotate, recover and delete webhook endpoints (their responses
    /// carry signing secrets), and redeliver events.
    WebhooksWrite,
    /// Send card data to the account's approved relay destinations (`POST /v1/relay`).
    /// The caller never sees the data, so secret keys hold it.
    CardsRelay,
    /// Read suspensions (and, later, risk assessments and rules).
    RiskRead,
    /// Create and lift suspensions.
    RiskWrite,
    /// Register, list and disable card-present terminals.
    TerminalsWrite,
    /// Send what a terminal enciphered: decrypt and tokenize its card data, translate its
    /// PIN blocks.
    TerminalsUse,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 17] = [
        Scope::CardsWrite,
        Scope::CardsRead,
        Scope::CardsReveal,
        Scope::CardsDelete,
        Scope::PinsWrite,
        Scope::PinsVerify,
        Scope::AccountRead,
        Scope::AccountWrite,
        Scope::SigningKeysWrite,
        Scope::EventsRead,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::CardsRelay,
        Scope::RiskRead,
        Scope::RiskWrite,
        Scope::TerminalsWrite,
        Scope::TerminalsUse,
    ];

    /// The scope's name, e.g. `cards:read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CardsWrite => "cards:write",
            Self::CardsRead => "cards:read",
            Self::CardsReveal => "cards:reveal",
            Self::CardsDelete => "cards:delete",
            Self::PinsWrite => "pins:write",
            Self::PinsVerify => "pins:verify",
            Self::AccountRead => "account:read",
            Self::AccountWrite => "account:write",
            Self::SigningKeysWrite => "signing_keys:write",
            Self::EventsRead => "events:read",
            Self::WebhooksRead => "webhooks:read",
            Self::WebhooksWrite => "webhooks:write",
            Self::CardsRelay => "cards:relay",
            Self::RiskRead => "risk:read",
            Self::RiskWrite => "risk:write",
            Self::TerminalsWrite => "terminals:write",
            Self::TerminalsUse => "terminals:use",
        }
    }

    const fn bit(self) -> u32 {
        match self {
            Self::CardsWrite => 1,
            Self::CardsRead => 2,
            Self::CardsReveal => 4,
            Self::CardsDelete => 8,
            Self::PinsWrite => 16,
            Self::PinsVerify => 32,
            Self::AccountRead => 64,
            Self::AccountWrite => 128,
            Self::SigningKeysWrite => 256,
            Self::EventsRead => 512,
            Self::WebhooksRead => 1024,
            Self::WebhooksWrite => 2048,
            Self::CardsRelay => 4096,
            Self::RiskRead => 8192,
            Self::RiskWrite => 16384,
            Self::TerminalsWrite => 32768,
            Self::TerminalsUse => 65536,
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u32);

impl Scopes {
    /// A secret key's scopes: all but `cards:reveal` (the PIN scopes included: no PIN
    /// operation returns a PIN, and setting or changing one needs an OTP).
    pub const SECRET_DEFAULT: Scopes = Scopes(
        Scope::CardsWrite.bit()
            | Scope::CardsRead.bit()
            | Scope::CardsDelete.bit()
            | Scope::PinsWrite.bit()
            | Scope::PinsVerify.bit()
            | Scope::AccountRead.bit()
            | Scope::AccountWrite.bit()
            | Scope::SigningKeysWrite.bit()
            | Scope::EventsRead.bit()
            | Scope::WebhooksRead.bit()
            | Scope::WebhooksWrite.bit()
            | Scope::CardsRelay.bit()
            | Scope::RiskRead.bit()
            | Scope::RiskWrite.bit()
            | Scope::TerminalsWrite.bit()
            | Scope::TerminalsUse.bit(),
    );

    /// Whether `scope` is in the set.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Adds a scope.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// The scope names, in display order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// Parses scope names; an unknown name is an error.
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, DomainError> {
        let mut out = Scopes::default();
        for n in names {
            out.insert(Scope::parse(n).ok_or(DomainError::ScopeUnknown)?);
        }
        Ok(out)
    }

    /// Space-separated names, the form kept in storage.
    pub fn to_storage(self) -> String {
        self.names().join(" ")
    }

    /// Parses the storage form; unknown names are ignored so that an older binary can
    /// read rows written by a newer one.
    pub fn from_storage(s: &str) -> Self {
        let mut out = Scopes::default();
        for sc in s.split_whitespace().filter_map(Scope::parse) {
            out.insert(sc);
        }
        out
    }
}

impl From<Scope> for Scopes {
    fn from(s: Scope) -> Self {
        Scopes(s.bit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_cannot_reveal() {
        let s = KeyKind::Secret.effective_scopes(None).unwrap();
        // Every scope but `cards:reveal`, the account's controls included.
        for sc in Scope::ALL {
            assert_eq!(s.contains(sc), sc != Scope::CardsReveal, "{}", sc.as_str());
        }
        // A row written before the control scopes existed still holds them.
        let old = "cards:write cards:read cards:delete pins:write pins:verify";
        assert_eq!(KeyKind::Secret.held_scopes(old), Scopes::SECRET_DEFAULT);
        assert_eq!(
            KeyKind::Restricted.held_scopes("cards:read"),
            Scopes::from(Scope::CardsRead)
        );
    }

    #[test]
    fn scope_names_and_bits_are_distinct() {
        let mut all = Scopes::default();
        for sc in Scope::ALL {
            assert!(!all.contains(sc), "{} shares a bit", sc.as_str());
            all.insert(sc);
            assert_eq!(Scope::parse(sc.as_str()), Some(sc));
        }
        assert_eq!(all.names().len(), Scope::ALL.len());
    }

    #[test]
    fn publishable_keys_only_write() {
        let s = KeyKind::Publishable.effective_scopes(None).unwrap();
        assert_eq!(s.names(), vec!["cards:write"]);
        assert!(
            KeyKind::Publishable
                .effective_scopes(Some(Scopes::SECRET_DEFAULT))
                .is_err()
        );
    }

    #[test]
    fn restricted_keys_need_scopes() {
        assert_eq!(
            KeyKind::Restricted.effective_scopes(None),
            Err(DomainError::ScopesRequired)
        );
        let s = Scopes::parse_list(["cards:reveal", "cards:read"]).unwrap();
        assert_eq!(KeyKind::Restricted.effective_scopes(Some(s)).unwrap(), s);
        assert_eq!(Scopes::from_storage(&s.to_storage()), s);
        assert!(Scopes::parse_list(["cards:everything"]).is_err());
    }
}
