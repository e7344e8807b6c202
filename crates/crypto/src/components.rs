//! Keys that enter from outside under dual control (docs/key-custody.md, "Importing
//! keys"): clear components that custodians key in separately, combined by XOR, each
//! checked by its key check value (KCV) before it counts.
//!
//! The KCV is the first three bytes of enciphering a zero block under the key (ANSI
//! X9.24-1: AES-ECB for AES keys, TDES-ECB for double- and triple-length TDES keys).
//! TDES comes from RustCrypto's `des`: aws-lc-rs offers it only behind a feature that
//! generates every binding at build time.

use crate::CryptoError;
use des::cipher::{BlockEncrypt, KeyInit};
use zeroize::Zeroizing;

/// The algorithm of an imported key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// AES-128.
    Aes128,
    /// AES-192.
    Aes192,
    /// AES-256.
    Aes256,
    /// Double-length TDES (two 8-byte keys, K1 K2 K1).
    Tdes2,
    /// Triple-length TDES.
    Tdes3,
}

impl KeyAlgorithm {
    /// Every algorithm.
    pub const ALL: [Self; 5] = [
        Self::Aes128,
        Self::Aes192,
        Self::Aes256,
        Self::Tdes2,
        Self::Tdes3,
    ];

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes128 => "aes128",
            Self::Aes192 => "aes192",
            Self::Aes256 => "aes256",
            Self::Tdes2 => "tdes2",
            Self::Tdes3 => "tdes3",
        }
    }

    /// The algorithm of a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128 | Self::Tdes2 => 16,
            Self::Aes192 | Self::Tdes3 => 24,
            Self::Aes256 => 32,
        }
    }
}

/// The key check value of `key` under `alg`.
pub fn kcv(alg: KeyAlgorithm, key: &[u8]) -> Result<[u8; 3], CryptoError> {
    if key.len() != alg.key_len() {
        return Err(CryptoError::Operation);
    }
    match alg {
        KeyAlgorithm::Aes128 | KeyAlgorithm::Aes192 | KeyAlgorithm::Aes256 => crate::aes_kcv(key),
        KeyAlgorithm::Tdes2 => zero_block::<des::TdesEde2>(key),
        KeyAlgorithm::Tdes3 => zero_block::<des::TdesEde3>(key),
    }
}

/// The first three bytes of a zero block enciphered under `key` with `C`.
fn zero_block<C: BlockEncrypt + KeyInit>(key: &[u8]) -> Result<[u8; 3], CryptoError> {
    let c = C::new_from_slice(key).map_err(|_| CryptoError::Operation)?;
    let mut block = des::cipher::Block::<C>::default();
    c.encrypt_block(&mut block);
    match &block[..] {
        [a, b, c, ..] => Ok([*a, *b, *c]),
        _ => Err(CryptoError::Operation),
    }
}

/// The XOR of components of `alg`'s length (a key so far, while more are to come).
/// Refused if a component has the wrong length.
pub fn xor(alg: KeyAlgorithm, components: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut key = Zeroizing::new(vec![0u8; alg.key_len()]);
    for c in components {
        if c.len() != alg.key_len() {
            return Err(CryptoError::Operation);
        }
        for (k, b) in key.iter_mut().zip(c.iter()) {
            *k ^= b;
        }
    }
    Ok(key)
}

/// The key the components make: their [`xor`]. Refused also if the key is all zeros
/// (two equal components, or a blank one keyed twice).
pub fn combine(alg: KeyAlgorithm, components: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = xor(alg, components)?;
    if key.iter().all(|b| *b == 0) {
        return Err(CryptoError::Operation);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_tdes_test_key_has_its_published_check_value() {
        // ANSI X9.24-1 annex A's test BDK; its KCV is printed beside it: 08D7B4.
        let bdk = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        assert_eq!(
            hex::encode_upper(kcv(KeyAlgorithm::Tdes2, &bdk).unwrap()),
            "08D7B4"
        );
        // A triple-length key whose thirds are K1 K2 K1 is the same key.
        let mut three = bdk.clone();
        three.extend_from_slice(&bdk[..8]);
        assert_eq!(
            kcv(KeyAlgorithm::Tdes3, &three).unwrap(),
            kcv(KeyAlgorithm::Tdes2, &bdk).unwrap()
        );
    }

    #[test]
    fn components_combine_by_xor_and_refuse_what_is_wrong() {
        let a = [0x11u8; 16];
        let b = [0x22u8; 16];
        let key = combine(KeyAlgorithm::Aes128, &[&a, &b]).unwrap();
        assert_eq!(key.as_slice(), &[0x33u8; 16]);
        assert!(combine(KeyAlgorithm::Aes128, &[&a, &a]).is_err());
        assert!(combine(KeyAlgorithm::Aes256, &[&a, &b]).is_err());
        assert!(kcv(KeyAlgorithm::Aes192, &a).is_err());
        assert_eq!(KeyAlgorithm::parse("tdes3"), Some(KeyAlgorithm::Tdes3));
        assert_eq!(KeyAlgorithm::parse("des"), None);
    }
}
