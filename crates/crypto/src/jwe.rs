//! The PIN transport key (RSA-3072) and decryption of JWE compact serialisations with
//! exactly `alg: RSA-OAEP-256` and `enc: A256GCM` (RFC 7516, RFC 7518 4.3 and 5.3).
//!
//! No JWE crate: for these two algorithms decryption is RSA-OAEP (SHA-256, MGF1-SHA-256)
//! of the content key and AES-256-GCM of the content, both aws-lc-rs. Every other
//! algorithm, a `zip`, or a `crit` header is refused. The `rsa` crate is never used.

use crate::{CryptoError, random};
use aws_lc_rs::aead;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// The one key-management algorithm accepted.
pub const ALG: &str = "RSA-OAEP-256";
/// The one content-encryption algorithm accepted.
pub const ENC: &str = "A256GCM";
/// Largest compact JWE accepted (a PIN payload is a few hundred bytes).
pub const MAX_COMPACT_LEN: usize = 8 * 1024;

/// Why a JWE was refused. The server maps these to stable codes; none says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JweError {
    /// Not a well-formed compact JWE, or a header that cannot be read.
    Malformed,
    /// An `alg`, `enc`, `zip` or `crit` other than the one profile we accept.
    Unsupported,
    /// Decryption failed (wrong key, tampered, or bad padding): deliberately vague.
    Decrypt,
}

/// An RSA-3072 private key for PIN transport. Masked `Debug`.
pub struct TransportKey {
    key: OaepPrivateDecryptingKey,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportKey([REDACTED])")
    }
}

impl TransportKey {
    /// A fresh RSA-3072 key. Returns it and its PKCS#8 DER, to be wrapped for storage.
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let key =
            PrivateDecryptingKey::generate(KeySize::Rsa3072).map_err(|_| CryptoError::Operation)?;
        let der = Zeroizing::new(
            AsDer::as_der(&key)
                .map_err(|_| CryptoError::Operation)?
                .as_ref()
                .to_vec(),
        );
        Ok((Self::from_pkcs8(&der)?, der))
    }

    /// A key from PKCS#8 DER (as unwrapped from storage). Only 3072-bit keys are used.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let private = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| CryptoError::Operation)?;
        if private.key_size_bits() != 3072 {
            return Err(CryptoError::Operation);
        }
        // The public components come from the same PKCS#8 read as an RSA key pair.
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| CryptoError::Operation)?;
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let key = OaepPrivateDecryptingKey::new(private).map_err(|_| CryptoError::Operation)?;
        Ok(Self { key, n, e })
    }

    /// The public key as a JWK (RFC 7517) for `kid`: `{kty, kid, use, alg, n, e}`.
    pub fn public_jwk(&self, kid: &str) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "kid": kid,
            "use": "enc",
            "alg": ALG,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// Modulus length in bits.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// Decrypts a parsed JWE. The caller has already checked that its `kid` names this key.
    pub fn decrypt(&self, jwe: &CompactJwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
        // RSA-OAEP-256 unwraps the content key. On failure, continue with a random key so
        // that an OAEP failure and a GCM failure look alike (RFC 7516, 11.5).
        let mut buf = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let cek: Zeroizing<[u8; 32]> =
            match self
                .key
                .decrypt(&OAEP_SHA256_MGF1SHA256, &jwe.encrypted_key, &mut buf, None)
            {
                Ok(k) if k.len() == 32 => {
                    let mut out = Zeroizing::new([0u8; 32]);
                    out.copy_from_slice(k);
                    out
                }
                _ => Zeroizing::new(random::bytes::<32>().map_err(|_| JweError::Decrypt)?),
            };
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, cek.as_slice())
            .map_err(|_| JweError::Decrypt)?;
        let key = aead::LessSafeKey::new(key);
        let nonce =
            aead::Nonce::try_assume_unique_for_key(&jwe.iv).map_err(|_| JweError::Malformed)?;
        let mut body = Zeroizing::new(Vec::with_capacity(jwe.ciphertext.len() + 16));
        body.extend_from_slice(&jwe.ciphertext);
        body.extend_from_slice(&jwe.tag);
        let len = key
            .open_in_place(nonce, aead::Aad::from(jwe.aad.as_bytes()), &mut body)
            .map_err(|_| JweError::Decrypt)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// The client side, for tests and SDKs: encrypts `plaintext` to an RSA public JWK
/// (`n`, `e`) with RSA-OAEP-256 and A256GCM, under the protected `header` as given (so
/// tests can also label it with algorithms we refuse).
pub fn encrypt_compact(
    jwk: &serde_json::Value,
    header: &serde_json::Value,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents};
    let part = |name: &str| {
        jwk.get(name)
            .and_then(|v| v.as_str())
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(CryptoError::Operation)
    };
    let public: PublicEncryptingKey = PublicKeyComponents {
        n: part("n")?,
        e: part("e")?,
    }
    .try_into()
    .map_err(|_| CryptoError::Operation)?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| CryptoError::Operation)?;
    let cek = Zeroizing::new(random::bytes::<32>()?);
    let mut ek = vec![0u8; oaep.ciphertext_size()];
    let ek = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, cek.as_slice(), &mut ek, None)
        .map_err(|_| CryptoError::Operation)?
        .to_vec();
    let iv = random::bytes::<12>()?;
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, cek.as_slice())
            .map_err(|_| CryptoError::Operation)?,
    );
    let mut body = Zeroizing::new(plaintext.to_vec());
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(iv),
            aead::Aad::from(h.as_bytes()),
            body.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Operation)?;
    Ok(format!(
        "{h}.{}.{}.{}.{}",
        URL_SAFE_NO_PAD.encode(ek),
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(body.as_slice()),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    ))
}

/// A compact JWE, parsed and checked against the one accepted profile.
#[derive(Debug)]
pub struct CompactJwe {
    /// The `kid` of the protected header.
    pub kid: String,
    aad: String,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn b64(s: &str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JweError::Malformed)
}

impl CompactJwe {
    /// Parses `header.encrypted_key.iv.ciphertext.tag`. The protected header must carry
    /// `alg: RSA-OAEP-256`, `enc: A256GCM` and a string `kid`; `zip` and `crit` are
    /// refused.
    pub fn parse(compact: &str) -> Result<Self, JweError> {
        if compact.len() > MAX_COMPACT_LEN {
            return Err(JweError::Malformed);
        }
        let parts: Vec<&str> = compact.split('.').collect();
        let [header, ek, iv, ct, tag] = parts.as_slice() else {
            return Err(JweError::Malformed);
        };
        let header_json = b64(header)?;
        let h: serde_json::Value =
            serde_json::from_slice(&header_json).map_err(|_| JweError::Malformed)?;
        let h = h.as_object().ok_or(JweError::Malformed)?;
        if h.get("alg").and_then(|v| v.as_str()) != Some(ALG)
            || h.get("enc").and_then(|v| v.as_str()) != Some(ENC)
            || h.contains_key("zip")
            || h.contains_key("crit")
        {
            return Err(JweError::Unsupported);
        }
        let kid = h
            .get("kid")
            .and_then(|v| v.as_str())
            .filter(|k| !k.is_empty() && k.len() <= 128)
            .ok_or(JweError::Malformed)?
            .to_owned();
        let jwe = Self {
            kid,
            aad: (*header).to_owned(),
            encrypted_key: b64(ek)?,
            iv: b64(iv)?,
            ciphertext: b64(ct)?,
            tag: b64(tag)?,
        };
        if jwe.iv.len() != 12 || jwe.tag.len() != 16 || jwe.encrypted_key.is_empty() {
            return Err(JweError::Malformed);
        }
        Ok(jwe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static (TransportKey, Vec<u8>) {
        static K: OnceLock<(TransportKey, Vec<u8>)> = OnceLock::new();
        K.get_or_init(|| {
            let (k, der) = TransportKey::generate().unwrap();
            (k, der.to_vec())
        })
    }

    fn encrypt(jwk: &serde_json::Value, header: &serde_json::Value, plain: &[u8]) -> String {
        encrypt_compact(jwk, header, plain).unwrap()
    }

    fn header(alg: &str, enc: &str) -> serde_json::Value {
        serde_json::json!({"alg": alg, "enc": enc, "kid": "pinkey_1"})
    }

    #[test]
    fn jwk_is_rsa_3072_for_encryption() {
        let (k, der) = key();
        assert_eq!(k.bits(), 3072);
        let jwk = k.public_jwk("pinkey_1");
        assert_eq!(jwk["alg"], "RSA-OAEP-256");
        assert_eq!(jwk["use"], "enc");
        assert_eq!(jwk["kid"], "pinkey_1");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["n"].as_str().unwrap())
                .unwrap()
                .len(),
            384
        );
        assert_eq!(jwk["e"], "AQAB");
        // Survives a trip through PKCS#8 (as it does through the store).
        let again = TransportKey::from_pkcs8(der).unwrap();
        assert_eq!(again.public_jwk("x")["n"], jwk["n"]);
        assert_eq!(format!("{k:?}"), "TransportKey([REDACTED])");
    }

    #[test]
    fn decrypts_the_accepted_profile() {
        let (k, _) = key();
        let jwe = encrypt(
            &k.public_jwk("pinkey_1"),
            &header(ALG, ENC),
            br#"{"pin":"1234"}"#,
        );
        let parsed = CompactJwe::parse(&jwe).unwrap();
        assert_eq!(parsed.kid, "pinkey_1");
        assert_eq!(k.decrypt(&parsed).unwrap().as_slice(), br#"{"pin":"1234"}"#);
    }

    #[test]
    fn refuses_other_algorithms_and_tampering() {
        let (k, _) = key();
        let jwk = k.public_jwk("pinkey_1");
        for (alg, enc) in [
            ("RSA1_5", ENC),
            ("RSA-OAEP", ENC),
            ("dir", ENC),
            (ALG, "A128GCM"),
            (ALG, "A256CBC-HS512"),
        ] {
            let jwe = encrypt(&jwk, &header(alg, enc), b"x");
            assert_eq!(
                CompactJwe::parse(&jwe).err(),
                Some(JweError::Unsupported),
                "{alg} {enc}"
            );
        }
        let mut h = header(ALG, ENC);
        h["zip"] = "DEF".into();
        assert_eq!(
            CompactJwe::parse(&encrypt(&jwk, &h, b"x")).err(),
            Some(JweError::Unsupported)
        );
        // The header is authenticated: swap in another header with the same fields.
        let jwe = encrypt(&jwk, &header(ALG, ENC), b"secret");
        let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"alg": ALG, "enc": ENC, "kid": "pinkey_1", "typ": "JOSE"})
                .to_string(),
        );
        let swapped = CompactJwe::parse(&parts.join(".")).unwrap();
        assert_eq!(k.decrypt(&swapped).err(), Some(JweError::Decrypt));
        // Tampered ciphertext or wrapped key.
        let jwe = encrypt(&jwk, &header(ALG, ENC), b"secret");
        let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        let mut ek = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        ek[10] ^= 1;
        parts[1] = URL_SAFE_NO_PAD.encode(ek);
        let bad = CompactJwe::parse(&parts.join(".")).unwrap();
        assert_eq!(k.decrypt(&bad).err(), Some(JweError::Decrypt));
        // Another key.
        let (other, _) = TransportKey::generate().unwrap();
        let parsed = CompactJwe::parse(&jwe).unwrap();
        assert_eq!(other.decrypt(&parsed).err(), Some(JweError::Decrypt));
        // Malformed.
        for bad in [
            "",
            "a.b.c.d",
            "a.b.c.d.e.f",
            "!!.a.b.c.d",
            &"a".repeat(9000),
        ] {
            assert!(CompactJwe::parse(bad).is_err());
        }
    }

    #[test]
    fn parse_survives_arbitrary_input() {
        // A cheap stand-in for a fuzz target: random and mutated inputs never panic.
        let (k, _) = key();
        let good = encrypt(&k.public_jwk("pinkey_1"), &header(ALG, ENC), b"{}");
        for i in 0..3000usize {
            let r = random::bytes::<64>().unwrap();
            let mut s: Vec<u8> = good.as_bytes().to_vec();
            let at = usize::from(r[0]) * s.len() / 256;
            s[at] = r[1];
            if i % 3 == 0 {
                s.truncate(usize::from(r[2]) * s.len() / 256);
            }
            let text = String::from_utf8_lossy(&s);
            if let Ok(j) = CompactJwe::parse(&text) {
                let _ = k.decrypt(&j);
            }
            let junk: String = r
                .iter()
                .map(|b| char::from(b"ab.-_=+/{}x"[usize::from(*b) % 11]))
                .collect();
            let _ = CompactJwe::parse(&junk);
        }
    }
}
