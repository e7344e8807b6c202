//! Bearer tokens: JWTs signed with Ed25519 (`EdDSA`, the default) or RSA (`RS256`), on
//! `jsonwebtoken` with its aws-lc-rs backend. Signing keys are generated here with
//! aws-lc-rs; the server stores them wrapped by the root key (see
//! [`crate::RootKey::wrap_bytes`]) and publishes their public halves as a JWKS.
//!
//! Verification fixes the algorithm allowlist in code (`EdDSA`, `RS256`), takes the
//! algorithm from the *key* found by `kid` (never from the token alone), and checks
//! `iss`, `aud` and the times against a clock the caller passes in.

use crate::CryptoError;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use zeroize::Zeroizing;

/// The signature algorithms a deployment may choose. Nothing else is ever accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlg {
    /// Ed25519 (RFC 8037). The default.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
}

impl JwtAlg {
    /// The JOSE name: `EdDSA` or `RS256`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// Parses a JOSE name; only the two allowed algorithms.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    fn jose(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

/// The claims of a Strongroom access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (the deployment).
    pub iss: String,
    /// Audience (the API).
    pub aud: String,
    /// The API key the token was issued from.
    pub sub: String,
    /// The account.
    pub acct: String,
    /// `test` or `live`.
    pub mode: String,
    /// Space-separated scopes: the key's or fewer.
    pub scope: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a token was refused. Deliberately coarse: a client learns only whether to get a
/// new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Malformed, bad signature, algorithm not allowed, wrong issuer or audience, or
    /// not yet valid.
    #[error("token invalid")]
    Invalid,
    /// Signed by a key id we do not know (the caller may reload its keys once).
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// Past its `exp` (plus leeway).
    #[error("token expired")]
    Expired,
}

/// A private signing key (PKCS#8 DER). Never printed; zeroized on drop.
pub struct JwtPrivateKey {
    alg: JwtAlg,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for JwtPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtPrivateKey({}, [REDACTED])", self.alg.as_str())
    }
}

impl JwtPrivateKey {
    /// A fresh key from the system CSPRNG (aws-lc-rs).
    pub fn generate(alg: JwtAlg) -> Result<Self, CryptoError> {
        let pkcs8 = match alg {
            JwtAlg::EdDsa => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map_err(|_| CryptoError::Operation)?
                .as_ref()
                .to_vec(),
            JwtAlg::Rs256 => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| CryptoError::Operation)?;
                let der: Pkcs8V1Der<'static> = kp.as_der().map_err(|_| CryptoError::Operation)?;
                der.as_ref().to_vec()
            }
        };
        Ok(Self {
            alg,
            pkcs8: Zeroizing::new(pkcs8),
        })
    }

    /// A key from its PKCS#8 DER (as unwrapped from storage). Checked by parsing.
    pub fn from_pkcs8(alg: JwtAlg, pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let key = Self {
            alg,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
        };
        key.public_jwk("check")?;
        Ok(key)
    }

    /// The algorithm.
    pub fn alg(&self) -> JwtAlg {
        self.alg
    }

    /// The PKCS#8 DER, for wrapping by the root key. The one place it leaves this type.
    pub fn expose_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK with `kid`, `alg` and `use: "sig"`.
    pub fn public_jwk(&self, kid: &str) -> Result<serde_json::Value, CryptoError> {
        let mut jwk = match self.alg {
            JwtAlg::EdDsa => {
                let kp =
                    Ed25519KeyPair::from_pkcs8(&self.pkcs8).map_err(|_| CryptoError::Operation)?;
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": B64.encode(kp.public_key().as_ref()),
                })
            }
            JwtAlg::Rs256 => {
                let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&self.pkcs8)
                    .map_err(|_| CryptoError::Operation)?;
                let public = kp.public_key();
                serde_json::json!({
                    "kty": "RSA",
                    "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
                })
            }
        };
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), kid.into());
            o.insert("alg".into(), self.alg.as_str().into());
            o.insert("use".into(), "sig".into());
        }
        Ok(jwk)
    }

    /// A signer for this key under `kid`.
    pub fn signer(&self, kid: &str) -> Result<JwtSigner, CryptoError> {
        let key = match self.alg {
            JwtAlg::EdDsa => EncodingKey::from_ed_der(&self.pkcs8),
            JwtAlg::Rs256 => {
                // jsonwebtoken signs RSA from PKCS#1; its PEM reader unwraps PKCS#8 for us.
                let pem = Zeroizing::new(format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    base64::engine::general_purpose::STANDARD.encode(self.pkcs8.as_slice())
                ));
                EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| CryptoError::Operation)?
            }
        };
        Ok(JwtSigner {
            kid: kid.to_owned(),
            alg: self.alg,
            key,
        })
    }
}

/// Signs tokens with one key.
pub struct JwtSigner {
    kid: String,
    alg: JwtAlg,
    key: EncodingKey,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtSigner({}, {})", self.kid, self.alg.as_str())
    }
}

impl JwtSigner {
    /// The key id this signer puts in the header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> JwtAlg {
        self.alg
    }

    /// A compact JWS of `claims` with `typ: JWT`, `alg` and `kid` in the header.
    pub fn sign(&self, claims: &Claims) -> Result<String, CryptoError> {
        let mut header = Header::new(self.alg.jose());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|_| CryptoError::Operation)
    }
}

/// A public verification key built from a JWK we published.
#[derive(Clone)]
struct PublicKey {
    alg: JwtAlg,
    key: DecodingKey,
}

/// What a token must say besides its signature.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The only accepted `aud`.
    pub audience: String,
    /// Allowed clock skew for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: i64,
}

/// Verifies tokens against a set of public keys (by `kid`).
#[derive(Clone, Default)]
pub struct JwtVerifier {
    keys: HashMap<String, PublicKey>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn b64_field(jwk: &serde_json::Value, name: &str) -> Result<Vec<u8>, CryptoError> {
    let s = jwk
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or(CryptoError::Operation)?;
    B64.decode(s).map_err(|_| CryptoError::Operation)
}

impl JwtVerifier {
    /// An empty verifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a public key from a JWK as produced by [`JwtPrivateKey::public_jwk`].
    pub fn add_jwk(&mut self, jwk: &serde_json::Value) -> Result<(), CryptoError> {
        let kid = jwk
            .get("kid")
            .and_then(|v| v.as_str())
            .ok_or(CryptoError::Operation)?;
        let alg = jwk
            .get("alg")
            .and_then(|v| v.as_str())
            .and_then(JwtAlg::parse)
            .ok_or(CryptoError::Operation)?;
        let key = match alg {
            JwtAlg::EdDsa => {
                let x = b64_field(jwk, "x")?;
                if x.len() != 32 || jwk.get("crv").and_then(|v| v.as_str()) != Some("Ed25519") {
                    return Err(CryptoError::Operation);
                }
                DecodingKey::from_ed_der(&x)
            }
            JwtAlg::Rs256 => {
                let n = b64_field(jwk, "n")?;
                let e = b64_field(jwk, "e")?;
                if n.len() < 256 {
                    return Err(CryptoError::Operation);
                }
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
        };
        self.keys.insert(kid.to_owned(), PublicKey { alg, key });
        Ok(())
    }

    /// Whether a key id is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verifies signature, algorithm (that of the key named by `kid`), `iss`, `aud`,
    /// `nbf`/`iat` and `exp` (each with the leeway) at `now_s`.
    pub fn verify(&self, token: &str, exp: &Expectations, now_s: i64) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid)?;
        let kid = header.kid.as_deref().ok_or(JwtError::Invalid)?;
        let key = self.keys.get(kid).ok_or(JwtError::UnknownKey)?;
        if header.alg != key.alg.jose() {
            return Err(JwtError::Invalid);
        }
        let mut v = Validation::new(key.alg.jose());
        // Times are checked below against the caller's clock, not the wall clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.set_issuer(&[&exp.issuer]);
        v.set_audience(&[&exp.audience]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &v).map_err(|_| JwtError::Invalid)?;
        let c = data.claims;
        if c.nbf > now_s.saturating_add(exp.leeway_s) || c.iat > now_s.saturating_add(exp.leeway_s)
        {
            return Err(JwtError::Invalid);
        }
        if now_s >= c.exp.saturating_add(exp.leeway_s) {
            return Err(JwtError::Expired);
        }
        Ok(c)
    }
}

/// SHA-256 of a presented token: the key of a cache of verified tokens, so the cache
/// never holds a token itself.
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "strongroom".into(),
            aud: "strongroom-api".into(),
            sub: "key_1".into(),
            acct: "acct_1".into(),
            mode: "test".into(),
            scope: "cards:read".into(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            jti: "tok_1".into(),
        }
    }

    fn expect() -> Expectations {
        Expectations {
            issuer: "strongroom".into(),
            audience: "strongroom-api".into(),
            leeway_s: 5,
        }
    }

    fn setup(alg: JwtAlg) -> (JwtSigner, JwtVerifier) {
        let k = JwtPrivateKey::generate(alg).unwrap();
        let mut v = JwtVerifier::new();
        v.add_jwk(&k.public_jwk("kid1").unwrap()).unwrap();
        (k.signer("kid1").unwrap(), v)
    }

    #[test]
    fn round_trip_both_algorithms_and_storage_form() {
        for alg in [JwtAlg::EdDsa, JwtAlg::Rs256] {
            let (s, v) = setup(alg);
            let t = s.sign(&claims(1000)).unwrap();
            assert_eq!(v.verify(&t, &expect(), 1000).unwrap(), claims(1000));
            let h = jsonwebtoken::decode_header(&t).unwrap();
            assert_eq!(h.kid.as_deref(), Some("kid1"));
            assert_eq!(h.alg, alg.jose());
            // The stored form (PKCS#8) reloads into the same key.
            let k = JwtPrivateKey::generate(alg).unwrap();
            let again = JwtPrivateKey::from_pkcs8(alg, k.expose_pkcs8()).unwrap();
            assert_eq!(k.public_jwk("a").unwrap(), again.public_jwk("a").unwrap());
            assert!(!format!("{k:?}").contains(&hex::encode(k.expose_pkcs8())));
        }
        assert!(JwtPrivateKey::from_pkcs8(JwtAlg::EdDsa, b"junk").is_err());
    }

    #[test]
    fn times_issuer_and_audience() {
        let (s, v) = setup(JwtAlg::EdDsa);
        let t = s.sign(&claims(1000)).unwrap();
        // Leeway on both ends.
        assert!(v.verify(&t, &expect(), 1000 + 3600 + 4).is_ok());
        assert_eq!(
            v.verify(&t, &expect(), 1000 + 3600 + 5),
            Err(JwtError::Expired)
        );
        assert!(v.verify(&t, &expect(), 1000 - 5).is_ok());
        assert_eq!(v.verify(&t, &expect(), 1000 - 6), Err(JwtError::Invalid));
        let mut e = expect();
        e.audience = "other".into();
        assert_eq!(v.verify(&t, &e, 1000), Err(JwtError::Invalid));
        let mut e = expect();
        e.issuer = "other".into();
        assert_eq!(v.verify(&t, &e, 1000), Err(JwtError::Invalid));
    }

    #[test]
    fn tampering_none_and_algorithm_confusion_are_refused() {
        let (s, v) = setup(JwtAlg::EdDsa);
        let t = s.sign(&claims(1000)).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        // A changed claim under the old signature.
        let mut c = claims(1000);
        c.scope = "cards:reveal".into();
        let forged_body = B64.encode(serde_json::to_vec(&c).unwrap());
        let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(v.verify(&forged, &expect(), 1000), Err(JwtError::Invalid));
        // One flipped signature character.
        let mut sig = parts[2].as_bytes().to_vec();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let bad = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8(sig).unwrap()
        );
        assert_eq!(v.verify(&bad, &expect(), 1000), Err(JwtError::Invalid));
        // alg: none, no signature.
        let none = B64.encode(br#"{"alg":"none","typ":"JWT","kid":"kid1"}"#);
        for t in [
            format!("{none}.{}.", parts[1]),
            format!("{none}.{}", parts[1]),
        ] {
            assert_eq!(v.verify(&t, &expect(), 1000), Err(JwtError::Invalid));
        }
        // HS256 "signed" with the public key as the HMAC secret (algorithm confusion).
        let hs = jsonwebtoken::encode(
            &Header {
                kid: Some("kid1".into()),
                ..Header::new(Algorithm::HS256)
            },
            &claims(1000),
            &EncodingKey::from_secret(b"anything"),
        )
        .unwrap();
        assert_eq!(v.verify(&hs, &expect(), 1000), Err(JwtError::Invalid));
        // RS256 header on an Ed25519 kid.
        let rs = B64.encode(br#"{"alg":"RS256","typ":"JWT","kid":"kid1"}"#);
        let t = format!("{rs}.{}.{}", parts[1], parts[2]);
        assert_eq!(v.verify(&t, &expect(), 1000), Err(JwtError::Invalid));
        // Unknown or missing kid.
        let other = B64.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"nope"}"#);
        let t = format!("{other}.{}.{}", parts[1], parts[2]);
        assert_eq!(v.verify(&t, &expect(), 1000), Err(JwtError::UnknownKey));
        let nokid = B64.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        let t = format!("{nokid}.{}.{}", parts[1], parts[2]);
        assert_eq!(v.verify(&t, &expect(), 1000), Err(JwtError::Invalid));
        // Another key's signature under this kid.
        let (s2, _) = setup(JwtAlg::EdDsa);
        assert_eq!(
            v.verify(&s2.sign(&claims(1000)).unwrap(), &expect(), 1000),
            Err(JwtError::Invalid)
        );
        for junk in ["", "a.b.c", "....", "eyJ.eyJ.x"] {
            assert_eq!(v.verify(junk, &expect(), 1000), Err(JwtError::Invalid));
        }
    }

    #[test]
    fn ed25519_matches_rfc8037_vector() {
        // RFC 8037 appendix A: the public key of the example private key.
        let d = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let mut pkcs8 = hex::decode("302e020100300506032b657004220420").unwrap();
        pkcs8.extend_from_slice(&d);
        let k = JwtPrivateKey::from_pkcs8(JwtAlg::EdDsa, &pkcs8).unwrap();
        assert_eq!(
            k.public_jwk("x").unwrap()["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
    }
}
