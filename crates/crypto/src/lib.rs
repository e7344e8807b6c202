//! Cryptography for Strongroom, on one backend: aws-lc-rs. Nothing here knows about
//! HTTP or SQL; the service layer in `server` is where a key meets a record.
//!
//! - [`RootKey`]: the top of the hierarchy; wraps data keys, keys the digests of API
//!   secrets and OTP codes.
//! - [`DataKey`]: a per-account, per-purpose AES-256-GCM key (or HMAC key for
//!   fingerprints), versioned, stored only wrapped.
//! - [`SealingKey`]: a long-lived key that seals without a budget (the root wrap key,
//!   the idempotency key): every seal uses a one-use key derived from a random salt.
//! - [`random`]: the one module that draws randomness.
//! - [`pin`]: ISO 9564-1 format 4 PIN blocks; [`jwe`]: the PIN transport key and
//!   RSA-OAEP-256 + A256GCM JWE decryption.

pub mod audit;
pub mod components;
pub mod dukpt;
pub mod httpsig;
pub mod integrity;
pub mod jwe;
pub mod jwt;
pub mod pin;
pub mod random;
pub mod shamir;
pub mod tr31;

use aws_lc_rs::{aead, constant_time, hkdf, hmac};
use std::sync::{Arc, RwLock};
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
///
/// It has two halves. The *wrap key* wraps every stored key and changes when the root
/// key is rotated: while a rotation runs, the previous wrap key still opens what it
/// wrapped, new wraps use the next one, and [`RootKey::rewrap`] moves a wrapped key
/// across; [`RootKey::finish_rotation`] then drops the previous one. The *digest key*
/// keys the digests of API secrets and OTP codes and derives the long-lived subkeys:
/// those digests are stored, so it must outlive a rotation. The first root key derives
/// it; each later one carries it, wrapped under itself ([`RootKey::carry_digest`]).
pub struct RootKey {
    wraps: RwLock<Wraps>,
    digest: hmac::Key,
    digest_seed: Zeroizing<[u8; KEY_LEN]>,
}

/// The wrap keys of a [`RootKey`]: the one in force and, during a rotation, the one
/// before it.
struct Wraps {
    current: Arc<SealingKey>,
    verifier: [u8; 32],
    previous: Option<Arc<SealingKey>>,
}

/// What a rotation to a next root key gives the vault to record (none of it secret
/// without a root key).
pub struct NextRoot {
    /// The next root key's verifier.
    pub verifier: [u8; 32],
    /// The digest key's seed wrapped under the next root key, for
    /// [`RootKey::carry_digest`].
    pub digest_wrapped: Vec<u8>,
    /// The next root key wrapped under the previous one: kept only while the rotation
    /// runs, so that an interrupted rotation (or another node) can pick it up.
    pub transit: Vec<u8>,
}

/// What the digest key's seed is bound to when a root key carries it.
const DIGEST_CARRY: &str = "strongroom/root/digest-seed/v1";
/// What a next root key is bound to while it is wrapped under the previous one.
const NEXT_ROOT: &str = "strongroom/root/next/v1";

impl RootKey {
    /// Builds the root key from 32 bytes. The caller zeroizes its copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (wrap, verifier) = wrap_half(bytes)?;
        // Two independent subkeys, so wrapping and digesting never share a key.
        let digest_seed = derive(bytes, b"strongroom/v1/digest")?;
        Ok(Self {
            wraps: RwLock::new(Wraps {
                current: Arc::new(wrap),
                verifier,
                previous: None,
            }),
            digest: hmac::Key::new(hmac::HMAC_SHA256, digest_seed.as_slice()),
            digest_seed,
        })
    }

    /// Takes the digest key a rotated root key carries (`digest_wrapped` of its
    /// [`NextRoot`]) in place of the one its bytes derive.
    pub fn carry_digest(&mut self, digest_wrapped: &[u8]) -> Result<(), CryptoError> {
        let seed = self.unwrap_bytes(digest_wrapped, DIGEST_CARRY)?;
        let mut carried = Zeroizing::new([0u8; KEY_LEN]);
        if seed.len() != KEY_LEN {
            return Err(CryptoError::Decrypt);
        }
        carried.copy_from_slice(seed.as_slice());
        self.digest = hmac::Key::new(hmac::HMAC_SHA256, carried.as_slice());
        self.digest_seed = carried;
        Ok(())
    }

    fn wraps(&self) -> std::sync::RwLockReadGuard<'_, Wraps> {
        self.wraps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A value that tells this key from another without revealing it (a one-way
    /// derivation, independent of every other subkey): the vault keeps it to refuse a
    /// wrong root key, or wrong unseal shares, before any data is touched. During a
    /// rotation, the next key's.
    pub fn verifier(&self) -> [u8; 32] {
        self.wraps().verifier
    }

    /// The verifier the root key of `bytes` would have.
    pub fn verifier_of(bytes: &[u8]) -> Result<[u8; 32], CryptoError> {
        Ok(wrap_half(bytes)?.1)
    }

    /// What the vault records before a rotation to the root key of `next` begins: its
    /// verifier, the digest key wrapped under it, and `next` wrapped under the key in
    /// force (under the previous one if the rotation has begun). Changes nothing.
    pub fn prepare_rotation(&self, next: &[u8]) -> Result<NextRoot, CryptoError> {
        let (wrap, verifier) = wrap_half(next)?;
        let before = {
            let w = self.wraps();
            w.previous.clone().unwrap_or_else(|| w.current.clone())
        };
        Ok(NextRoot {
            verifier,
            digest_wrapped: wrap.seal(self.digest_seed.as_slice(), DIGEST_CARRY.as_bytes())?,
            transit: before.seal(next, NEXT_ROOT.as_bytes())?,
        })
    }

    /// Starts a rotation to the root key of `next`: from now on wraps use it, and
    /// unwrapping tries it first, then the key in force until now. Starting again with
    /// the same next key (a resumed rotation) changes nothing; another is refused until
    /// [`RootKey::finish_rotation`].
    pub fn begin_rotation(&self, next: &[u8]) -> Result<(), CryptoError> {
        let (wrap, verifier) = wrap_half(next)?;
        let mut w = self
            .wraps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.previous.is_some() {
            return if ct_eq(&w.verifier, &verifier) {
                Ok(())
            } else {
                Err(CryptoError::Operation)
            };
        }
        let before = std::mem::replace(&mut w.current, Arc::new(wrap));
        w.previous = Some(before);
        w.verifier = verifier;
        Ok(())
    }

    /// The next root key's bytes from a [`NextRoot::transit`] wrapped under this key (or,
    /// during the rotation, under the key before it).
    pub fn open_transit(&self, transit: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.unwrap_bytes(transit, NEXT_ROOT)
    }

    /// Whether a rotation has begun and not finished.
    pub fn rotating(&self) -> bool {
        self.wraps().previous.is_some()
    }

    /// Moves a wrapped key under the key in force: `None` if it is there already, the
    /// new wrapping if the previous key opened it. Fails if neither opens it.
    pub fn rewrap(&self, wrapped: &[u8], context: &str) -> Result<Option<Vec<u8>>, CryptoError> {
        let (current, previous) = {
            let w = self.wraps();
            (w.current.clone(), w.previous.clone())
        };
        if current.open(wrapped, context.as_bytes()).is_ok() {
            return Ok(None);
        }
        let previous = previous.ok_or(CryptoError::Decrypt)?;
        let secret = previous.open(wrapped, context.as_bytes())?;
        current.seal(&secret, context.as_bytes()).map(Some)
    }

    /// Ends a rotation: the previous wrap key leaves memory. `false` if none ran.
    pub fn finish_rotation(&self) -> bool {
        let mut w = self
            .wraps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.previous.take().is_some()
    }

    /// Wraps a data key. `context` names the account, purpose and version, so a wrapped
    /// key moved to another row does not unwrap.
    pub fn wrap(&self, key: &DataKey, context: &str) -> Result<Vec<u8>, CryptoError> {
        self.wrap_bytes(key.bytes.as_slice(), context)
    }

    /// Unwraps a data key wrapped under the same `context`.
    pub fn unwrap_key(&self, wrapped: &[u8], context: &str) -> Result<DataKey, CryptoError> {
        let bytes = self.unwrap_bytes(wrapped, context)?;
        DataKey::from_bytes(&bytes)
    }

    /// Wraps other key material (e.g. a JWT signing key's or the PIN transport key's
    /// PKCS#8) under `context`.
    pub fn wrap_bytes(&self, secret: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let current = self.wraps().current.clone();
        current.seal(secret, context.as_bytes())
    }

    /// Unwraps what [`RootKey::wrap_bytes`] wrapped under the same `context`.
    pub fn unwrap_bytes(
        &self,
        wrapped: &[u8],
        context: &str,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (current, previous) = {
            let w = self.wraps();
            (w.current.clone(), w.previous.clone())
        };
        match current.open(wrapped, context.as_bytes()) {
            Ok(plain) => Ok(plain),
            Err(e) => match previous {
                Some(p) => p.open(wrapped, context.as_bytes()),
                None => Err(e),
            },
        }
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

/// The wrap key and the verifier of a root key's bytes.
fn wrap_half(bytes: &[u8]) -> Result<(SealingKey, [u8; 32]), CryptoError> {
    if bytes.len() != KEY_LEN {
        return Err(CryptoError::Operation);
    }
    let wrap = derive(bytes, b"strongroom/v1/wrap")?;
    let verifier = derive(bytes, b"strongroom/v1/verifier")?;
    Ok((SealingKey::from_bytes(wrap.as_slice())?, *verifier))
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

    /// The key check value: the first 3 bytes of AES-256 enciphering a zero block (the
    /// usual KCV of payment key management, ANSI X9.24). It identifies the key in an
    /// inventory without revealing it.
    pub fn check_value(&self) -> Result<[u8; 3], CryptoError> {
        aes_kcv(self.bytes.as_slice())
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

/// The first bytes of a blob in the salted format (version 1 of it).
const SALTED_V1: [u8; 2] = [0xa5, 0x01];
/// The random salt a one-use key is derived from.
const SALT_LEN: usize = 16;
/// Tag, salt and nonce before the ciphertext.
const SALTED_HEADER_LEN: usize = SALTED_V1.len() + SALT_LEN + NONCE_LEN;

/// A long-lived AES-256-GCM key that may seal any number of times: the root wrap key
/// and the idempotency key, which seal for as long as the root key lives.
///
/// AES-GCM with random 96-bit nonces must stay far below 2^32 seals per key, and
/// nothing bounds how often these keys seal. So each seal derives a one-use key,
/// HKDF-SHA256(ikm = this key, salt = "strongroom/v2/salted-seal", info =
/// "strongroom/v2/seal" ‖ a fresh random 128-bit salt), and stores
/// `a5 01 ‖ salt ‖ nonce ‖ ciphertext ‖ tag`: an AES key then sees one nonce, and a
/// one-use key repeats only if two salts collide (about 2^-60 after 2^34 seals). The
/// AAD is exactly what the caller gives, as before.
///
/// [`SealingKey::open`] also opens blobs sealed before this format (`nonce ‖
/// ciphertext ‖ tag` directly under the key), so everything already stored still
/// opens; nothing seals in that format any more.
pub struct SealingKey {
    /// HKDF-Extract of the key under a label of this format, done once: each seal then
    /// costs one HKDF-Expand. (The key's bytes enter HMAC as its message, never as an
    /// HMAC key beside their use as the old format's AES key.)
    prk: hkdf::Prk,
    /// The key itself, only to open blobs in the old format.
    legacy: aead::LessSafeKey,
}

impl SealingKey {
    /// A sealing key from 32 bytes (a root-derived subkey). The caller zeroizes its copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::Operation);
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"strongroom/v2/salted-seal").extract(bytes);
        let legacy =
            aead::UnboundKey::new(&aead::AES_256_GCM, bytes).map_err(|_| CryptoError::Operation)?;
        Ok(Self {
            prk,
            legacy: aead::LessSafeKey::new(legacy),
        })
    }

    /// Seals `plaintext` under a one-use key; `aad` binds it as for [`DataKey::seal`].
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let fresh = random::bytes::<{ SALT_LEN + NONCE_LEN }>()?;
        self.seal_with_salt_and_nonce(&fresh, plaintext, aad)
    }

    /// Opens what [`SealingKey::seal`] sealed under the same `aad`, or a blob sealed
    /// directly under this key before the salted format existed.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if let Some(rest) = sealed.strip_prefix(&SALTED_V1)
            && let Ok(plain) = self.open_salted(rest, aad)
        {
            return Ok(plain);
        }
        // An old blob whose random nonce happens to begin with the tag (one in 65536)
        // fails above and opens here; a tampered new one fails both.
        open_with(&self.legacy, sealed, aad)
    }

    fn one_use_key(&self, salt: &[u8]) -> Result<aead::LessSafeKey, CryptoError> {
        let info = [b"strongroom/v2/seal".as_slice(), salt];
        let okm = self
            .prk
            .expand(&info, &aead::AES_256_GCM)
            .map_err(|_| CryptoError::Operation)?;
        Ok(aead::LessSafeKey::new(aead::UnboundKey::from(okm)))
    }

    /// The seal with a given salt ‖ nonce: random in [`SealingKey::seal`], fixed in
    /// known-answer tests.
    fn seal_with_salt_and_nonce(
        &self,
        fresh: &[u8; SALT_LEN + NONCE_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (salt, nonce) = fresh.split_at(SALT_LEN);
        let key = self.one_use_key(salt)?;
        let nonce =
            aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Operation)?;
        // Sized once so that the plaintext is encrypted where it lies and never left
        // behind by a reallocation.
        let mut out = Vec::with_capacity(SALTED_HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&SALTED_V1);
        out.extend_from_slice(fresh);
        out.extend_from_slice(plaintext);
        let body = out
            .get_mut(SALTED_HEADER_LEN..)
            .ok_or(CryptoError::Operation)?;
        let tag = key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), body)
            .map_err(|_| CryptoError::Operation)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens `salt ‖ nonce ‖ ciphertext ‖ tag`.
    fn open_salted(&self, rest: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (salt, body) = rest
            .split_at_checked(SALT_LEN)
            .ok_or(CryptoError::Decrypt)?;
        open_with(&self.one_use_key(salt)?, body, aad)
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([REDACTED])")
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

/// An AES key of 16, 24 or 32 bytes, for aws-lc-rs's block-cipher modes.
pub(crate) fn aes_key(key: &[u8]) -> Result<aws_lc_rs::cipher::UnboundCipherKey, CryptoError> {
    use aws_lc_rs::cipher::{AES_128, AES_192, AES_256, UnboundCipherKey};
    let alg = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        _ => return Err(CryptoError::Operation),
    };
    UnboundCipherKey::new(alg, key).map_err(|_| CryptoError::Operation)
}

/// The check value of an AES key: the first 3 bytes of enciphering a zero block.
pub fn aes_kcv(key: &[u8]) -> Result<[u8; 3], CryptoError> {
    use aws_lc_rs::cipher::EncryptingKey;
    let unbound = aes_key(key)?;
    let ecb = EncryptingKey::ecb(unbound).map_err(|_| CryptoError::Operation)?;
    let mut block = [0u8; 16];
    ecb.encrypt(&mut block)
        .map_err(|_| CryptoError::Operation)?;
    Ok([block[0], block[1], block[2]])
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

    #[test]
    fn key_check_values_match_the_published_aes_vectors() {
        // FIPS-197 / NIST: AES under an all-zero key of a zero block.
        assert_eq!(aes_kcv(&[0u8; 16]).unwrap(), [0x66, 0xe9, 0x4b]);
        assert_eq!(aes_kcv(&[0u8; 24]).unwrap(), [0xaa, 0xe0, 0x69]);
        assert_eq!(aes_kcv(&[0u8; 32]).unwrap(), [0xdc, 0x95, 0xc0]);
        assert_eq!(
            DataKey::from_bytes(&[0u8; 32])
                .unwrap()
                .check_value()
                .unwrap(),
            [0xdc, 0x95, 0xc0]
        );
        assert!(aes_kcv(&[0u8; 20]).is_err());
    }

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

    /// What sealing under a long-lived key did before the salted format: `nonce ‖
    /// ciphertext ‖ tag` directly under the key, with a chosen nonce.
    fn legacy_seal(key: &[u8], nonce: [u8; NONCE_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let k = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).unwrap());
        let mut body = plaintext.to_vec();
        k.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            &mut body,
        )
        .unwrap();
        [nonce.as_slice(), &body].concat()
    }

    /// `RootKey::wrap_bytes` as it was before the salted format (random nonce).
    fn legacy_root_wrap(root_bytes: &[u8], secret: &[u8], context: &str) -> Vec<u8> {
        let wrap = derive(root_bytes, b"strongroom/v1/wrap").unwrap();
        let k = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, wrap.as_slice()).unwrap(),
        );
        seal_with(&k, secret, context.as_bytes()).unwrap()
    }

    const KAT_KEY: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];
    const KAT_PLAIN: &[u8] = b"a data key or a stored response";
    const KAT_AAD: &[u8] = b"strongroom/datakey/v1|acct_1|cards|1";

    #[test]
    fn salted_seal_known_answer() {
        // Cross-checked with Python `cryptography`:
        //   k = HKDF(SHA256, 32, salt=b"strongroom/v2/salted-seal",
        //            info=b"strongroom/v2/seal" + salt).derive(key)
        //   a5 01 ‖ salt ‖ nonce ‖ AESGCM(k).encrypt(nonce, plain, aad)
        // with key = 00..1f, salt = 40..4f, nonce = 60..6b.
        let k = SealingKey::from_bytes(&KAT_KEY).unwrap();
        let mut fresh = [0u8; SALT_LEN + NONCE_LEN];
        for (i, b) in fresh.iter_mut().enumerate() {
            *b = if i < SALT_LEN {
                0x40 + i
            } else {
                0x60 + i - SALT_LEN
            } as u8;
        }
        let sealed = k
            .seal_with_salt_and_nonce(&fresh, KAT_PLAIN, KAT_AAD)
            .unwrap();
        assert_eq!(
            hex::encode(&sealed),
            "a501404142434445464748494a4b4c4d4e4f606162636465666768696a6b0d95388c2bfb36a5fcb8e3\
             a06e85a345a5ba6a1222ca29fbefffa76b46577e0a1ec13b2192b906ec44a55f02a4df17"
        );
        assert_eq!(k.open(&sealed, KAT_AAD).unwrap().as_slice(), KAT_PLAIN);
        // The old format, same inputs, from the same Python session: AESGCM(key) directly.
        let legacy = hex::decode(
            "606162636465666768696a6b8bfbff34cf21a304196fd94400ada0635501e6fbe10012abc6d2f003\
             128192ada0fdb0687be2afe246af6491f83304",
        )
        .unwrap();
        assert_eq!(
            legacy,
            legacy_seal(
                &KAT_KEY,
                [
                    0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b
                ],
                KAT_PLAIN,
                KAT_AAD
            )
        );
        assert_eq!(k.open(&legacy, KAT_AAD).unwrap().as_slice(), KAT_PLAIN);
    }

    #[test]
    fn salted_seals_are_fresh_and_bound_to_aad_and_key() {
        let k = SealingKey::from_bytes(&KAT_KEY).unwrap();
        let a = k.seal(KAT_PLAIN, KAT_AAD).unwrap();
        let b = k.seal(KAT_PLAIN, KAT_AAD).unwrap();
        assert_eq!(a.len(), 2 + 16 + 12 + KAT_PLAIN.len() + 16);
        assert_eq!(a[..2], SALTED_V1);
        assert_ne!(a, b);
        assert_ne!(a[2..18], b[2..18], "salts repeat");
        assert!(!a.windows(KAT_PLAIN.len()).any(|w| w == KAT_PLAIN));
        assert_eq!(k.open(&b, KAT_AAD).unwrap().as_slice(), KAT_PLAIN);
        assert_eq!(
            k.open(&a, b"another context").err(),
            Some(CryptoError::Decrypt)
        );
        assert_eq!(k.open(&a, b"").err(), Some(CryptoError::Decrypt));
        let other = SealingKey::from_bytes(&[9u8; 32]).unwrap();
        assert_eq!(other.open(&a, KAT_AAD).err(), Some(CryptoError::Decrypt));
        assert!(SealingKey::from_bytes(&[9u8; 31]).is_err());
    }

    #[test]
    fn salted_seals_refuse_any_tampering() {
        let k = SealingKey::from_bytes(&KAT_KEY).unwrap();
        let sealed = k.seal(KAT_PLAIN, KAT_AAD).unwrap();
        // Every byte: the version tag, the salt, the nonce, the ciphertext and the tag.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                k.open(&bad, KAT_AAD).err(),
                Some(CryptoError::Decrypt),
                "byte {i}"
            );
        }
        for n in 0..sealed.len() {
            assert!(k.open(&sealed[..n], KAT_AAD).is_err(), "cut to {n}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(k.open(&longer, KAT_AAD).is_err());
    }

    #[test]
    fn legacy_blobs_still_open() {
        let k = SealingKey::from_bytes(&KAT_KEY).unwrap();
        let nonce = random::bytes::<NONCE_LEN>().unwrap();
        let old = legacy_seal(&KAT_KEY, nonce, KAT_PLAIN, KAT_AAD);
        assert_eq!(k.open(&old, KAT_AAD).unwrap().as_slice(), KAT_PLAIN);
        assert!(k.open(&old, b"another context").is_err());
        let mut bad = old.clone();
        bad[20] ^= 1;
        assert!(k.open(&bad, KAT_AAD).is_err());
        // An old blob whose random nonce begins with the new format's tag still opens.
        let mut nonce = nonce;
        nonce[..2].copy_from_slice(&SALTED_V1);
        let old = legacy_seal(&KAT_KEY, nonce, KAT_PLAIN, KAT_AAD);
        assert_eq!(k.open(&old, KAT_AAD).unwrap().as_slice(), KAT_PLAIN);
        // Keys and secrets the root key wrapped before still unwrap, under their context only.
        let r = root();
        let dk = DataKey::generate().unwrap();
        let old = legacy_root_wrap(&[7u8; 32], dk.bytes.as_slice(), "acct_a/cards/1");
        let back = r.unwrap_key(&old, "acct_a/cards/1").unwrap();
        assert_eq!(back.fingerprint(b"x"), dk.fingerprint(b"x"));
        assert!(r.unwrap_key(&old, "acct_a/cards/2").is_err());
        let old = legacy_root_wrap(&[7u8; 32], b"whsec material", "webhook|we_1");
        assert_eq!(
            r.unwrap_bytes(&old, "webhook|we_1").unwrap().as_slice(),
            b"whsec material"
        );
        // What the root key wraps now is in the salted format.
        let new = r.wrap_bytes(b"whsec material", "webhook|we_1").unwrap();
        assert_eq!(new[..2], SALTED_V1);
        assert_eq!(
            r.unwrap_bytes(&new, "webhook|we_1").unwrap().as_slice(),
            b"whsec material"
        );
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
    fn a_rotation_moves_wrapped_keys_and_keeps_the_digests() {
        let r = root();
        let old_verifier = r.verifier();
        let digest = r.digest("api_key", b"sk_live_x");
        let before = r.wrap_bytes(b"secret one", "ctx/1").unwrap();
        let next = [9u8; 32];
        let n = r.prepare_rotation(&next).unwrap();
        assert!(!r.rotating());
        assert_eq!(r.verifier(), old_verifier);
        r.begin_rotation(&next).unwrap();
        assert!(r.rotating());
        assert_eq!(r.verifier(), n.verifier);
        assert_ne!(n.verifier, old_verifier);
        // Again with the same next key: a resumed rotation; another key is refused.
        r.begin_rotation(&next).unwrap();
        assert!(r.begin_rotation(&[10u8; 32]).is_err());
        // Prepared again mid-rotation, the transit is still under the old key.
        let again = r.prepare_rotation(&next).unwrap();
        assert_eq!(
            root().open_transit(&again.transit).unwrap().as_slice(),
            next.as_slice()
        );
        // Both keys open while it runs; new wraps are the next key's.
        assert_eq!(
            r.unwrap_bytes(&before, "ctx/1").unwrap().as_slice(),
            b"secret one"
        );
        let during = r.wrap_bytes(b"secret two", "ctx/2").unwrap();
        assert_eq!(r.rewrap(&during, "ctx/2").unwrap(), None);
        let moved = r.rewrap(&before, "ctx/1").unwrap().unwrap();
        assert!(r.rewrap(&before, "ctx/other").is_err());
        assert_eq!(
            r.open_transit(&n.transit).unwrap().as_slice(),
            next.as_slice()
        );
        assert!(r.finish_rotation());
        assert!(!r.finish_rotation());
        // The old key is gone: what it wrapped no longer opens; what moved does.
        assert!(r.unwrap_bytes(&before, "ctx/1").is_err());
        assert_eq!(
            r.unwrap_bytes(&moved, "ctx/1").unwrap().as_slice(),
            b"secret one"
        );
        // A restart with the next key alone: it carries the digest key.
        let mut restarted = RootKey::from_bytes(&next).unwrap();
        assert_ne!(restarted.digest("api_key", b"sk_live_x"), digest);
        restarted.carry_digest(&n.digest_wrapped).unwrap();
        assert_eq!(restarted.digest("api_key", b"sk_live_x"), digest);
        assert_eq!(restarted.verifier(), n.verifier);
        assert_eq!(
            restarted.unwrap_bytes(&during, "ctx/2").unwrap().as_slice(),
            b"secret two"
        );
        // The old key neither opens the carried digest nor the next key's wraps.
        assert!(root().carry_digest(&n.digest_wrapped).is_err());
        assert!(root().unwrap_bytes(&moved, "ctx/1").is_err());
        assert_eq!(RootKey::verifier_of(&next).unwrap(), n.verifier);
    }

    #[test]
    fn wrong_key_lengths_are_refused() {
        assert!(RootKey::from_bytes(&[0u8; 31]).is_err());
        assert!(DataKey::from_bytes(&[0u8; 33]).is_err());
    }
}

pub mod webhook;
