//! Cryptography for Strongroom, on one backend: aws-lc-rs. Nothing here knows about
//! HTTP or SQL; the service layer in `server` is where a key meets a record.
//!
//! - [`RootKey`]: the top of the hierarchy; wraps data keys, keys the digests of API
//!   secrets and OTP codes.
//! - [`DataKey`]: a per-account, per-purpose AES-256-GCM key (or HMAC key for
//!   fingerprints), versioned, stored only wrapped.
//! - [`random`]: the one module that draws randomness.
//! - [`pin`]: ISO 9564-1 format 4 PIN blocks; [`jwe`]: the PIN transport key and
//!   RSA-OAEP-256 + A256GCM JWE decryption.

pub mod audit;
pub mod httpsig;
pub mod jwe;
pub mod jwt;
pub mod pin;
pub mod random;

use aws_lc_rs::{aead, constant_time, hkdf, hmac};
use thiserror::Error;
use zeroize::Zeroizing;

/// A cryptographic operation failed. Deliberately says nothing about why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// Decryption or unwrapping failed (wrong key, wrong AAD, or tampered data).
    #[error("decryption failed")]
    Decrypt,
    /// Encryption failed, or a key had the wrong length.
    #[error("cryptographic operation failed")]
    Operation,
}

const NONCE_LEN: usize = aead::NONCE_LEN;
const TAG_LEN: usize = 16;

/// Length of a root or data key.
pub const KEY_LEN: usize = 32;

/// The root key. Loaded from a key provider, never stored by Strongroom.
pub struct RootKey {
    wrap: aead::LessSafeKey,
    digest: hmac::Key,
}

impl RootKey {
    /// Builds the root key from 32 bytes. The caller zeroizes its copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::Operation);
        }
        // Two independent subkeys, so wrapping and digesting never share a key.
        let wrap = derive(bytes, b"strongroom/v1/wrap")?;
        let digest = derive(bytes, b"strongroom/v1/digest")?;
        let wrap = aead::UnboundKey::new(&aead::AES_256_GCM, wrap.as_slice())
            .map_err(|_| CryptoError::Operation)?;
        Ok(Self {
            wrap: aead::LessSafeKey::new(wrap),
            digest: hmac::Key::new(hmac::HMAC_SHA256, digest.as_slice()),
        })
    }

    /// Wraps a data key. `context` names the account, purpose and version, so a wrapped
    /// key moved to another row does not unwrap.
    pub fn wrap(&self, key: &DataKey, context: &str) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.wrap, key.bytes.as_slice(), context.as_bytes())
    }

    /// Unwraps a data key wrapped under the same `context`.
    pub fn unwrap_key(&self, wrapped: &[u8], context: &str) -> Result<DataKey, CryptoError> {
        let bytes = open_with(&self.wrap, wrapped, context.as_bytes())?;
        DataKey::from_bytes(&bytes)
    }

    /// Wraps other key material (e.g. a JWT signing key's or the PIN transport key's
    /// PKCS#8) under `context`.
    pub fn wrap_bytes(&self, secret: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.wrap, secret, context.as_bytes())
    }

    /// Unwraps what [`RootKey::wrap_bytes`] wrapped under the same `context`.
    pub fn unwrap_bytes(
        &self,
        wrapped: &[u8],
        context: &str,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_with(&self.wrap, wrapped, context.as_bytes())
    }

    /// Keyed digest (HMAC-SHA256) of a high-entropy secret such as an API key, under a
    /// domain label. API secrets are random, so a fast keyed digest is the right tool:
    /// never Argon2 on the hot path.
    pub fn digest(&self, domain: &str, secret: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.digest);
        ctx.update(&(domain.len() as u64).to_be_bytes());
        ctx.update(domain.as_bytes());
        ctx.update(secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A subkey for a named purpose (e.g. signing OTP deliveries), derived with HKDF.
    pub fn derive_subkey(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        // Derive from the digest key's output rather than the root bytes, which we do not keep.
        let seed = self.digest("subkey", label.as_bytes());
        derive(&seed, label.as_bytes())
    }
}

/// A data key: 32 bytes of AES-256-GCM (cards) or HMAC-SHA256 (fingerprint) key.
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    aead: aead::LessSafeKey,
    mac: hmac::Key,
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(random::bytes::<KEY_LEN>()?);
        Self::from_bytes(bytes.as_slice())
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::Operation)?;
        let unbound =
            aead::UnboundKey::new(&aead::AES_256_GCM, &arr).map_err(|_| CryptoError::Operation)?;
        Ok(Self {
            aead: aead::LessSafeKey::new(unbound),
            mac: hmac::Key::new(hmac::HMAC_SHA256, &arr),
            bytes: Zeroizing::new(arr),
        })
    }

    /// AES-256-GCM with a random 96-bit nonce. Returns nonce ‖ ciphertext ‖ tag. The
    /// `aad` must bind account, record and key version.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.aead, plaintext, aad)
    }

    /// Opens what [`DataKey::seal`] produced under the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_with(&self.aead, sealed, aad)
    }

    /// HMAC-SHA256 of `data` under this key: the PAN fingerprint.
    pub fn fingerprint(&self, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.mac, data).as_ref());
        out
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

/// Constant-time equality for MACs, digests and codes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

fn seal_with(
    key: &aead::LessSafeKey,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce_bytes = random::bytes::<NONCE_LEN>()?;
    let nonce = aead::Nonce::assume_unique_for_key(nonce_bytes);
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(nonce, aead::Aad::from(aad), &mut body)
        .map_err(|_| CryptoError::Operation)?;
    out.append(&mut body);
    Ok(out)
}

fn open_with(
    key: &aead::LessSafeKey,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, aead::Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn derive(ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"strongroom");
    let prk = salt.extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, Len32)
        .map_err(|_| CryptoError::Operation)?;
    let mut out = Zeroizing::new([0u8; 32]);
    okm.fill(out.as_mut_slice())
        .map_err(|_| CryptoError::Operation)?;
    Ok(out)
}

/// HMAC-SHA256 of `data` under `key`, e.g. to sign an outbound delivery.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&k, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> RootKey {
        RootKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = DataKey::generate().unwrap();
        let sealed = k.seal(b"4242424242424242", b"acct_a|card_1|v1").unwrap();
        assert_eq!(sealed.len(), 12 + 16 + 16);
        assert!(!sealed.windows(16).any(|w| w == b"4242424242424242"));
        assert_eq!(
            k.open(&sealed, b"acct_a|card_1|v1").unwrap().as_slice(),
            b"4242424242424242"
        );
        // Moved to another record, account or version: refuses.
        assert_eq!(
            k.open(&sealed, b"acct_a|card_2|v1").err(),
            Some(CryptoError::Decrypt)
        );
        assert_eq!(
            k.open(&sealed, b"acct_b|card_1|v1").err(),
            Some(CryptoError::Decrypt)
        );
        // Tampered: refuses.
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(k.open(&bad, b"acct_a|card_1|v1").is_err());
        assert!(k.open(&sealed[..20], b"acct_a|card_1|v1").is_err());
        // Another key: refuses.
        let other = DataKey::generate().unwrap();
        assert!(other.open(&sealed, b"acct_a|card_1|v1").is_err());
    }

    #[test]
    fn nonces_are_fresh() {
        let k = DataKey::generate().unwrap();
        let a = k.seal(b"x", b"").unwrap();
        let b = k.seal(b"x", b"").unwrap();
        assert_ne!(a[..12], b[..12]);
    }

    #[test]
    fn wrap_unwrap_is_bound_to_context() {
        let r = root();
        let k = DataKey::generate().unwrap();
        let wrapped = r.wrap(&k, "acct_a/cards/1").unwrap();
        let back = r.unwrap_key(&wrapped, "acct_a/cards/1").unwrap();
        assert_eq!(back.fingerprint(b"x"), k.fingerprint(b"x"));
        assert!(r.unwrap_key(&wrapped, "acct_a/cards/2").is_err());
        let other_root = RootKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other_root.unwrap_key(&wrapped, "acct_a/cards/1").is_err());
    }

    #[test]
    fn fingerprint_is_hmac_sha256() {
        // Cross-checked against an independent implementation (Python's hmac module):
        // hmac.new(bytes(range(32)), b"4242424242424242", "sha256").hexdigest()
        let k = DataKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            hex::encode(k.fingerprint(b"4242424242424242")),
            "48d3ef48958e5d182cfa74268ab27bf11de5fab824385436670ecf7242d0002c"
        );
    }

    #[test]
    fn digests_are_keyed_and_domain_separated() {
        let r = root();
        let a = r.digest("api_key", b"sk_test_abc");
        assert_eq!(a, r.digest("api_key", b"sk_test_abc"));
        assert_ne!(a, r.digest("otp", b"sk_test_abc"));
        assert_ne!(
            a,
            RootKey::from_bytes(&[8u8; 32])
                .unwrap()
                .digest("api_key", b"sk_test_abc")
        );
        assert!(ct_eq(&a, &a));
        assert!(!ct_eq(&a, &r.digest("api_key", b"sk_test_abd")));
    }

    #[test]
    fn wrong_key_lengths_are_refused() {
        assert!(RootKey::from_bytes(&[0u8; 31]).is_err());
        assert!(DataKey::from_bytes(&[0u8; 33]).is_err());
    }
}

pub mod webhook;
