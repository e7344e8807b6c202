//! Local verification of Google Play Integrity tokens, for apps that chose "decrypt and
//! verify locally" in the Play Console
//! (<https://developer.android.com/google/play/integrity/classic#decrypt-verify-locally>).
//!
//! A token is a compact JWE (RFC 7516) with exactly `alg: A256KW` and `enc: A256GCM`: the
//! content key is wrapped with AES-256 Key Wrap (RFC 3394, RFC 7518 4.4) under the app's
//! decryption key, and the content is AES-256-GCM with the protected header as AAD (RFC
//! 7516 5.1 step 14). The plaintext is a compact JWS (RFC 7515) with exactly `alg: ES256`
//! (RFC 7518 3.4: P-256, SHA-256, `r ‖ s`) under the app's verification key; its payload
//! is the verdict JSON, which the caller reads and judges.
//!
//! No JOSE crate: jsonwebtoken, already in the workspace, does no JWE, and aws-lc-rs gives
//! every primitive (key wrap, GCM, ECDSA). Every other algorithm, a `zip`, or a `crit`
//! header is refused, in either layer.

use crate::CryptoError;
use aws_lc_rs::aead;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine;
use base64::alphabet;
use base64::decoded_len_estimate;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Largest token accepted (a verdict is a few hundred bytes, a token about a kilobyte).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The one key-management algorithm accepted.
const ALG: &str = "A256KW";
/// The one content-encryption algorithm accepted.
const ENC: &str = "A256GCM";
/// The one signature algorithm accepted.
const SIG_ALG: &str = "ES256";
const KEY_LEN: usize = 32;
/// A wrapped content key: the key and the 8-byte integrity block of RFC 3394.
const WRAPPED_LEN: usize = KEY_LEN + 8;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// `r ‖ s`, 32 bytes each.
const SIG_LEN: usize = 64;

/// The Play Console's keys are standard base64; padding is accepted with or without.
const CONSOLE_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused (the server maps all to one `integrity_token_invalid` code but
/// logs which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a compact JWE holding a compact JWS, a header that cannot be read, or too long.
    Malformed,
    /// An `alg`, `enc`, `zip` or `crit` other than the one profile we accept.
    Unsupported,
    /// The content key did not unwrap or the content did not authenticate: another
    /// decryption key, or a tampered token.
    Decrypt,
    /// The signature does not verify under the verification key.
    Signature,
}

/// A decryption key: exactly 32 bytes (standard base64 in the Play Console). Masked
/// `Debug`; zeroized on drop.
pub struct DecryptionKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptionKey([REDACTED])")
    }
}

impl DecryptionKey {
    /// The key as the Play Console gives it: standard base64 of 32 bytes (surrounding
    /// whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            CONSOLE_B64
                .decode(s.trim())
                .map_err(|_| CryptoError::Operation)?,
        );
        Self::from_bytes(&bytes)
    }

    /// The key from its 32 bytes. The caller zeroizes its copy.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if b.len() != KEY_LEN {
            return Err(CryptoError::Operation);
        }
        key.copy_from_slice(b);
        Ok(Self(key))
    }

    /// The key's bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A verification key: the DER `SubjectPublicKeyInfo` of an EC P-256 public key.
#[derive(Clone)]
pub struct VerificationKey {
    key: ParsedPublicKey,
    der: Vec<u8>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerificationKey({})", CONSOLE_B64.encode(&self.der))
    }
}

impl VerificationKey {
    /// The key as the Play Console gives it: standard base64 of the DER
    /// `SubjectPublicKeyInfo`. Refuses anything that is not a P-256 public key.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let der = CONSOLE_B64
            .decode(s.trim())
            .map_err(|_| CryptoError::Operation)?;
        Self::from_der(&der)
    }

    /// The key from its DER `SubjectPublicKeyInfo`: algorithm id-ecPublicKey, curve
    /// prime256v1, a point on the curve. Refuses anything else.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        // aws-lc-rs parses the SPKI, checks the curve and that the point is on it.
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, der)
            .map_err(|_| CryptoError::Operation)?;
        // It would also take a bare SEC1 point, or an SPKI followed by other bytes: insist
        // that the input is exactly the SPKI it parsed.
        let again: PublicKeyX509Der<'static> = key.as_der().map_err(|_| CryptoError::Operation)?;
        if again.as_ref() != der {
            return Err(CryptoError::Operation);
        }
        Ok(Self {
            key,
            der: der.to_vec(),
        })
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

/// Decrypts and verifies a token; returns the JWS payload (the verdict JSON) in zeroizing
/// memory. Reads nothing of the verdict: its package name, nonce and timestamp are the
/// caller's to check.
pub fn open(
    token: &str,
    decryption: &DecryptionKey,
    verification: &VerificationKey,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, ek, iv, ct, tag] = parts.as_slice() else {
        return Err(TokenError::Malformed);
    };
    let h = header_of(header)?;
    if h.get("alg").and_then(|v| v.as_str()) != Some(ALG)
        || h.get("enc").and_then(|v| v.as_str()) != Some(ENC)
        || h.contains_key("zip")
        || h.contains_key("crit")
    {
        return Err(TokenError::Unsupported);
    }
    let ek = b64(ek)?;
    let iv = b64(iv)?;
    let ct = b64(ct)?;
    let tag = b64(tag)?;
    if ek.len() != WRAPPED_LEN || iv.len() != IV_LEN || tag.len() != TAG_LEN {
        return Err(TokenError::Malformed);
    }

    // AES-256 Key Wrap: a wrong key or a tampered wrapped key fails its integrity check.
    let kek = AesKek::new(&AES_256, decryption.expose_bytes()).map_err(|_| TokenError::Decrypt)?;
    let mut cek = Zeroizing::new([0u8; KEY_LEN]);
    let unwrapped = kek
        .unwrap(&ek, cek.as_mut_slice())
        .map_err(|_| TokenError::Decrypt)?;
    if unwrapped.len() != KEY_LEN {
        return Err(TokenError::Decrypt);
    }
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, cek.as_slice())
            .map_err(|_| TokenError::Decrypt)?,
    );
    let nonce = aead::Nonce::try_assume_unique_for_key(&iv).map_err(|_| TokenError::Malformed)?;
    let mut body = Zeroizing::new(Vec::with_capacity(ct.len() + TAG_LEN));
    body.extend_from_slice(&ct);
    body.extend_from_slice(&tag);
    let len = key
        .open_in_place(nonce, aead::Aad::from(header.as_bytes()), &mut body)
        .map_err(|_| TokenError::Decrypt)?
        .len();
    body.truncate(len);

    verify_jws(&body, verification)
}

/// Verifies the compact JWS the JWE held and returns its decoded payload.
fn verify_jws(jws: &[u8], key: &VerificationKey) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let jws = std::str::from_utf8(jws).map_err(|_| TokenError::Malformed)?;
    let parts: Vec<&str> = jws.split('.').collect();
    let [header, payload, sig] = parts.as_slice() else {
        return Err(TokenError::Malformed);
    };
    let h = header_of(header)?;
    if h.get("alg").and_then(|v| v.as_str()) != Some(SIG_ALG)
        || h.contains_key("zip")
        || h.contains_key("crit")
    {
        return Err(TokenError::Unsupported);
    }
    let sig = b64(sig)?;
    if sig.len() != SIG_LEN {
        return Err(TokenError::Signature);
    }
    // The signing input is `header.payload` exactly as sent (RFC 7515 5.2 step 8).
    let signed = jws
        .get(..header.len() + 1 + payload.len())
        .ok_or(TokenError::Malformed)?;
    key.key
        .verify_sig(signed.as_bytes(), &sig)
        .map_err(|_| TokenError::Signature)?;
    // Decoded in place, so the verdict is never in memory that is not zeroized.
    let mut out = Zeroizing::new(vec![0u8; decoded_len_estimate(payload.len())]);
    let n = URL_SAFE_NO_PAD
        .decode_slice(payload, out.as_mut_slice())
        .map_err(|_| TokenError::Malformed)?;
    out.truncate(n);
    Ok(out)
}

fn b64(s: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)
}

/// A protected header: base64url of a JSON object.
fn header_of(part: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    match serde_json::from_slice(&b64(part)?) {
        Ok(serde_json::Value::Object(h)) => Ok(h),
        _ => Err(TokenError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
        ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    };
    use serde_json::{Value, json};

    const VERDICT: &[u8] = br#"{"requestDetails":{"requestPackageName":"com.example.app","nonce":"bm9uY2U"},"appIntegrity":{"appRecognitionVerdict":"PLAY_RECOGNIZED"}}"#;

    fn enc(b: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    /// The app's keys as the Play Console would give them, and the signing key Google keeps.
    struct Keys {
        decryption: DecryptionKey,
        verification: VerificationKey,
        signing: EcdsaKeyPair,
    }

    fn keys() -> Keys {
        let signing = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let spki = signing.public_key().as_der().unwrap();
        Keys {
            decryption: DecryptionKey::from_bytes(&random::bytes::<32>().unwrap()).unwrap(),
            verification: VerificationKey::from_der(spki.as_ref()).unwrap(),
            signing,
        }
    }

    fn sign(pair: &EcdsaKeyPair, header: &Value, payload: &[u8]) -> String {
        let input = format!("{}.{}", enc(header.to_string()), enc(payload));
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", enc(sig))
    }

    /// Encrypts `plaintext` as Google does, under the JWE `header` as given, with a random
    /// content key.
    fn encrypt(kek: &[u8], header: &Value, plaintext: &[u8]) -> String {
        encrypt_with_cek(kek, &random::bytes::<32>().unwrap(), header, plaintext)
    }

    fn encrypt_with_cek(kek: &[u8], cek: &[u8; 32], header: &Value, plaintext: &[u8]) -> String {
        let mut ek = [0u8; WRAPPED_LEN];
        AesKek::new(&AES_256, kek)
            .unwrap()
            .wrap(cek, &mut ek)
            .unwrap();
        seal(&ek, cek, header, plaintext)
    }

    /// The JWE around an already wrapped content key.
    fn seal(ek: &[u8], cek: &[u8; 32], header: &Value, plaintext: &[u8]) -> String {
        let h = enc(header.to_string());
        let iv = random::bytes::<12>().unwrap();
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, cek).unwrap());
        let mut body = plaintext.to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(iv),
                aead::Aad::from(h.as_bytes()),
                &mut body,
            )
            .unwrap();
        format!("{h}.{}.{}.{}.{}", enc(ek), enc(iv), enc(body), enc(tag))
    }

    fn jwe_header() -> Value {
        json!({"alg": ALG, "enc": ENC})
    }

    fn jws_header() -> Value {
        json!({"alg": SIG_ALG})
    }

    fn token(k: &Keys, payload: &[u8]) -> String {
        let jws = sign(&k.signing, &jws_header(), payload);
        encrypt(k.decryption.expose_bytes(), &jwe_header(), jws.as_bytes())
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn a_good_token_opens() {
        let k = keys();
        let t = token(&k, VERDICT);
        let verdict = open(&t, &k.decryption, &k.verification).unwrap();
        assert_eq!(verdict.as_slice(), VERDICT);
    }

    #[test]
    fn a_jwcrypto_token_opens() {
        // Built by `tests/interop/integrity/play_token.py` (jwcrypto 1.6.1): `keys`, then
        // `token` of the verdict below (with `echo`'s newline). Its JWE header has JSON
        // spaces, as Python writes it.
        let decryption =
            DecryptionKey::from_base64("rPxHTWq0Xt/dqgUu/qQay6BHZ0h4jKcGqDSXK08cuUc=").unwrap();
        let verification = VerificationKey::from_base64(
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE584uNpueYHv/MsyLP3D3uS/3ZAveIDH73AYRhKswycFC\
             XRaSrv0UvexHTaJdqptsBiQdfZF8OVoIkhItOTOW/A==",
        )
        .unwrap();
        let token = "eyJhbGciOiAiQTI1NktXIiwgImVuYyI6ICJBMjU2R0NNIn0.0XJZztZICky40xh0f78clKcU94O\
             pp8f6wk1KXpSQXXTHKzAdO9_G4A.MSYhkc1Vlwp7aPji.swF7s3vViLJlxl0A2fd7zEsBhp_Jg1ZSvRJl_\
             eRENbZ-PSV_upJLJqY4XfaNWjJiDq7r5dbB9uDLO7vamChPO91OgdJSmWgbp5JqUVFcRgtR1m1zNzm7MJ0Q\
             ML89F8waf_qplKezwO-kEGYyxEQ0USDHoUVQX9k8v_A6yBPPknIQjW-GOgtvT5TrYEGL5m1Nfo9KSpwe7iZ\
             z8DxgegYSkXsS2uY7Mnrrec55yMr-lwwBNaJkDQlE9KfwjhPZsZWPv_iiKMw4xx2gnTxczhVqvsp9CnoDq3Z\
             nDallDaIPV7tVw4UFZE2W2Qsf9huY1bzIMC9-nrVTe9ZnnsdViePGmWOdxxWn7vyt_VCPMI4zkNN77VRHVx\
             Yqvdcj.S4M8qwxFnus2dX70ZFEyrg";
        assert_eq!(
            open(token, &decryption, &verification).unwrap().as_slice(),
            concat!(
                r#"{"requestDetails":{"requestPackageName":"com.example","nonce":"abc"},"#,
                r#""appIntegrity":{"appRecognitionVerdict":"PLAY_RECOGNIZED"}}"#,
                "\n"
            )
            .as_bytes()
        );
        let other = keys();
        assert_eq!(
            open(token, &other.decryption, &verification).err(),
            Some(TokenError::Decrypt)
        );
        assert_eq!(
            open(token, &decryption, &other.verification).err(),
            Some(TokenError::Signature)
        );
    }

    #[test]
    fn key_wrap_is_rfc_3394() {
        // RFC 3394 4.6: 256 bits of key data wrapped with a 256-bit KEK. A token whose
        // wrapped key is that ciphertext opens only if its key data is the content key.
        let kek: Vec<u8> = (0u8..32).collect();
        let cek: [u8; 32] =
            hex::decode("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f")
                .unwrap()
                .try_into()
                .unwrap();
        let ek = hex::decode(
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21",
        )
        .unwrap();
        let signing = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let verification =
            VerificationKey::from_der(signing.public_key().as_der().unwrap().as_ref()).unwrap();
        let jws = sign(&signing, &jws_header(), VERDICT);
        let t = seal(&ek, &cek, &jwe_header(), jws.as_bytes());
        let decryption = DecryptionKey::from_bytes(&kek).unwrap();
        assert_eq!(
            open(&t, &decryption, &verification).unwrap().as_slice(),
            VERDICT
        );
        assert_eq!(
            encrypt_with_cek(&kek, &cek, &jwe_header(), b"x")
                .split('.')
                .nth(1),
            Some(enc(&ek).as_str())
        );
    }

    #[test]
    fn another_decryption_key_or_tampering_fails_to_decrypt() {
        let k = keys();
        let t = token(&k, VERDICT);
        let other = keys();
        assert_eq!(
            open(&t, &other.decryption, &k.verification).err(),
            Some(TokenError::Decrypt)
        );
        // Every part but the header, one bit at a time in a few places.
        for part in 1..5 {
            let p = parts(&t);
            let raw = URL_SAFE_NO_PAD.decode(&p[part]).unwrap();
            for at in [0, raw.len() / 2, raw.len() - 1] {
                let mut bad = p.clone();
                let mut r = raw.clone();
                r[at] ^= 1;
                bad[part] = enc(&r);
                assert_eq!(
                    open(&bad.join("."), &k.decryption, &k.verification).err(),
                    Some(TokenError::Decrypt),
                    "part {part} byte {at}"
                );
            }
        }
        // The header is authenticated: the same fields, written another way, fail.
        let mut p = parts(&t);
        p[0] = enc(json!({"alg": ALG, "enc": ENC, "kid": "1"}).to_string());
        assert_eq!(
            open(&p.join("."), &k.decryption, &k.verification).err(),
            Some(TokenError::Decrypt)
        );
    }

    #[test]
    fn another_verification_key_or_a_forged_signature_fails() {
        let k = keys();
        let t = token(&k, VERDICT);
        let other = keys();
        assert_eq!(
            open(&t, &k.decryption, &other.verification).err(),
            Some(TokenError::Signature)
        );
        // A verdict signed by someone else, encrypted under the right key.
        let forged = sign(&other.signing, &jws_header(), VERDICT);
        let t = encrypt(
            k.decryption.expose_bytes(),
            &jwe_header(),
            forged.as_bytes(),
        );
        assert_eq!(
            open(&t, &k.decryption, &k.verification).err(),
            Some(TokenError::Signature)
        );
        // A changed payload or header under the original signature.
        let good = sign(&k.signing, &jws_header(), VERDICT);
        let mut p = parts(&good);
        p[1] = enc(br#"{"appIntegrity":{"appRecognitionVerdict":"PLAY_RECOGNIZED"}}"#);
        let t = encrypt(
            k.decryption.expose_bytes(),
            &jwe_header(),
            p.join(".").as_bytes(),
        );
        assert_eq!(
            open(&t, &k.decryption, &k.verification).err(),
            Some(TokenError::Signature)
        );
        let mut p = parts(&good);
        p[0] = enc(json!({"alg": SIG_ALG, "kid": "x"}).to_string());
        let t = encrypt(
            k.decryption.expose_bytes(),
            &jwe_header(),
            p.join(".").as_bytes(),
        );
        assert_eq!(
            open(&t, &k.decryption, &k.verification).err(),
            Some(TokenError::Signature)
        );
        // A DER (ASN.1) signature is not ES256's `r ‖ s`.
        let asn1 = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let input = format!("{}.{}", enc(jws_header().to_string()), enc(VERDICT));
        let sig = asn1.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        let verification =
            VerificationKey::from_der(asn1.public_key().as_der().unwrap().as_ref()).unwrap();
        let t = encrypt(
            k.decryption.expose_bytes(),
            &jwe_header(),
            format!("{input}.{}", enc(sig)).as_bytes(),
        );
        assert_eq!(
            open(&t, &k.decryption, &verification).err(),
            Some(TokenError::Signature)
        );
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        let k = keys();
        let jws = sign(&k.signing, &jws_header(), VERDICT);
        for h in [
            json!({"alg": "A128KW", "enc": ENC}),
            json!({"alg": "dir", "enc": ENC}),
            json!({"alg": "RSA-OAEP-256", "enc": ENC}),
            json!({"alg": "A256GCMKW", "enc": ENC}),
            json!({"alg": ALG, "enc": "A128GCM"}),
            json!({"alg": ALG, "enc": "A256CBC-HS512"}),
            json!({"enc": ENC}),
            json!({"alg": ALG}),
            json!({"alg": ALG, "enc": ENC, "zip": "DEF"}),
            json!({"alg": ALG, "enc": ENC, "crit": ["exp"], "exp": 1}),
        ] {
            let t = encrypt(k.decryption.expose_bytes(), &h, jws.as_bytes());
            assert_eq!(
                open(&t, &k.decryption, &k.verification).err(),
                Some(TokenError::Unsupported),
                "{h}"
            );
        }
        for h in [
            json!({"alg": "ES384"}),
            json!({"alg": "RS256"}),
            json!({"alg": "HS256"}),
            json!({"alg": "none"}),
            json!({"alg": "EdDSA"}),
            json!({}),
            json!({"alg": SIG_ALG, "crit": ["b64"], "b64": false}),
        ] {
            let inner = sign(&k.signing, &h, VERDICT);
            let t = encrypt(k.decryption.expose_bytes(), &jwe_header(), inner.as_bytes());
            assert_eq!(
                open(&t, &k.decryption, &k.verification).err(),
                Some(TokenError::Unsupported),
                "{h}"
            );
        }
        // `alg: none` with an empty signature.
        let none = format!("{}.{}.", enc(r#"{"alg":"none"}"#), enc(VERDICT));
        let t = encrypt(k.decryption.expose_bytes(), &jwe_header(), none.as_bytes());
        assert_eq!(
            open(&t, &k.decryption, &k.verification).err(),
            Some(TokenError::Unsupported)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let k = keys();
        let t = token(&k, VERDICT);
        let p = parts(&t);
        let malformed = [
            String::new(),
            ".".repeat(4),
            t[..t.len() / 2].to_owned(),
            p[..4].join("."),
            format!("{t}.{}", p[4]),
            format!("{t}="),
            format!("!{t}"),
            [
                p[0].clone(),
                format!("+{}", &p[1][1..]),
                p[2].clone(),
                p[3].clone(),
                p[4].clone(),
            ]
            .join("."),
            [
                p[0].clone(),
                p[1].clone(),
                enc([0u8; 16]),
                p[3].clone(),
                p[4].clone(),
            ]
            .join("."),
            [
                p[0].clone(),
                enc([0u8; 32]),
                p[2].clone(),
                p[3].clone(),
                p[4].clone(),
            ]
            .join("."),
            [
                p[0].clone(),
                p[1].clone(),
                p[2].clone(),
                p[3].clone(),
                enc([0u8; 12]),
            ]
            .join("."),
            [
                enc("[]"),
                p[1].clone(),
                p[2].clone(),
                p[3].clone(),
                p[4].clone(),
            ]
            .join("."),
            [
                enc("{"),
                p[1].clone(),
                p[2].clone(),
                p[3].clone(),
                p[4].clone(),
            ]
            .join("."),
            format!("{}.{}", p[0], "A".repeat(MAX_TOKEN_LEN)),
        ];
        for bad in &malformed {
            assert_eq!(
                open(bad, &k.decryption, &k.verification).err(),
                Some(TokenError::Malformed),
                "{bad:.80}"
            );
        }
        // A JWE that decrypts to something that is not a compact JWS.
        let jws = sign(&k.signing, &jws_header(), VERDICT);
        for inner in [
            b"not a jws".to_vec(),
            jws.rsplit_once('.').unwrap().0.as_bytes().to_vec(),
            format!("{jws}.x").into_bytes(),
            vec![0xff, b'.', b'.'],
            Vec::new(),
        ] {
            let t = encrypt(k.decryption.expose_bytes(), &jwe_header(), &inner);
            assert_eq!(
                open(&t, &k.decryption, &k.verification).err(),
                Some(TokenError::Malformed)
            );
        }
        // A payload that is not base64url, under a good signature.
        let input = format!("{}.{}", enc(jws_header().to_string()), "a");
        let sig = k
            .signing
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        let inner = format!("{input}.{}", enc(sig));
        let t = encrypt(k.decryption.expose_bytes(), &jwe_header(), inner.as_bytes());
        assert_eq!(
            open(&t, &k.decryption, &k.verification).err(),
            Some(TokenError::Malformed)
        );
        // A long verdict is fine up to the limit.
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(8 * 1024));
        let t = token(&k, big.as_bytes());
        assert!(t.len() <= MAX_TOKEN_LEN);
        assert_eq!(
            open(&t, &k.decryption, &k.verification).unwrap().as_slice(),
            big.as_bytes()
        );
    }

    #[test]
    fn open_survives_arbitrary_input() {
        // A cheap stand-in for a fuzz target: mutated and random inputs never panic.
        let k = keys();
        let good = token(&k, VERDICT);
        for i in 0..2000usize {
            let r = random::bytes::<64>().unwrap();
            let mut s = good.as_bytes().to_vec();
            let at = usize::from(r[0]) * s.len() / 256;
            s[at] = r[1];
            if i % 3 == 0 {
                s.truncate(usize::from(r[2]) * s.len() / 256);
            }
            let text = String::from_utf8_lossy(&s);
            // A byte replaced by itself leaves the token good.
            assert_eq!(
                open(&text, &k.decryption, &k.verification).is_ok(),
                text == good
            );
            let junk: String = r
                .iter()
                .map(|b| char::from(b"ab.-_=+/{}x"[usize::from(*b) % 11]))
                .collect();
            assert!(open(&junk, &k.decryption, &k.verification).is_err());
        }
    }

    #[test]
    fn decryption_keys_are_32_bytes_and_masked() {
        let k =
            DecryptionKey::from_base64(" rPxHTWq0Xt/dqgUu/qQay6BHZ0h4jKcGqDSXK08cuUc=\n").unwrap();
        assert_eq!(k.expose_bytes().len(), 32);
        assert_eq!(
            DecryptionKey::from_base64("rPxHTWq0Xt/dqgUu/qQay6BHZ0h4jKcGqDSXK08cuUc")
                .unwrap()
                .expose_bytes(),
            k.expose_bytes()
        );
        assert_eq!(format!("{k:?}"), "DecryptionKey([REDACTED])");
        for bad in [
            "",
            "AAAA",
            "rPxHTWq0Xt_dqgUu_qQay6BHZ0h4jKcGqDSXK08cuUc=",
            "rPxHTWq0Xt/dqgUu/qQay6BHZ0h4jKcGqDSXK08cuUcA",
            "!!!!",
        ] {
            assert!(DecryptionKey::from_base64(bad).is_err(), "{bad}");
        }
        assert!(DecryptionKey::from_bytes(&[0u8; 31]).is_err());
        assert!(DecryptionKey::from_bytes(&[0u8; 33]).is_err());
        assert!(DecryptionKey::from_bytes(&[0u8; 16]).is_err());
    }

    #[test]
    fn verification_keys_are_p256_spki_only() {
        let k = keys();
        let der = k.verification.der().to_vec();
        assert_eq!(der.len(), 91);
        let again = VerificationKey::from_base64(&CONSOLE_B64.encode(&der)).unwrap();
        assert_eq!(again.der(), der.as_slice());
        assert!(
            format!("{again:?}")
                .starts_with("VerificationKey(MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
        );
        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let point = k.signing.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        let mut trailing = der.clone();
        trailing.push(0);
        let mut off_curve = der.clone();
        let last = off_curve.len() - 1;
        off_curve[last] ^= 1;
        // The curve OID 1.2.840.10045.3.1.7 (prime256v1) made .3.1.6 (prime239v3).
        let mut other_curve = der.clone();
        assert_eq!(other_curve[22], 7);
        other_curve[22] = 6;
        for (what, bad) in [
            (
                "P-384",
                p384.public_key().as_der().unwrap().as_ref().to_vec(),
            ),
            (
                "Ed25519",
                ed.public_key().as_der().unwrap().as_ref().to_vec(),
            ),
            ("bare point", point),
            ("trailing byte", trailing),
            ("off the curve", off_curve),
            ("another curve", other_curve),
            ("truncated", der[..der.len() - 1].to_vec()),
            ("empty", Vec::new()),
        ] {
            assert!(VerificationKey::from_der(&bad).is_err(), "{what}");
        }
        assert!(VerificationKey::from_base64("not base64!").is_err());
        assert!(VerificationKey::from_base64(&CONSOLE_B64.encode([0u8; 91])).is_err());
    }
}
