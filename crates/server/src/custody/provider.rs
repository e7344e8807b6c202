//! The root-key providers.

/// Where the root key is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// A 0600 file (development and tests; `serve` asks for an explicit switch).
    File,
    /// Nowhere: it is rebuilt in memory from k of n custodians' shares.
    Shamir,
    /// Wrapped by a non-extractable key in an HSM (PKCS#11).
    Pkcs11,
}

impl Provider {
    /// The name in the configuration and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Shamir => "shamir",
            Self::Pkcs11 => "pkcs11",
        }
    }

    /// The provider of a name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::File, Self::Shamir, Self::Pkcs11]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}
