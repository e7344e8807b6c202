//! Primitives for verifying RFC 9421 HTTP message signatures: Ed25519 verification
//! and the SHA-256 content digest (RFC 9530). The parsing of the HTTP side lives in
//! the server; this module only sees bytes.

use aws_lc_rs::{digest, signature};

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_LEN: usize = 32;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The raw public key in an Ed25519 SPKI DER, if that is what `der` is.
pub fn ed25519_public_from_spki(der: &[u8]) -> Option<[u8; ED25519_PUBLIC_LEN]> {
    let key = der.strip_prefix(ED25519_SPKI_PREFIX.as_slice())?;
    <[u8; ED25519_PUBLIC_LEN]>::try_from(key).ok()
}

/// Whether `sig` is a valid Ed25519 signature of `msg` by `public` (raw 32 bytes).
pub fn ed25519_verify(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    if public.len() != ED25519_PUBLIC_LEN {
        return false;
    }
    signature::UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(msg, sig)
        .is_ok()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// SHA-384 of `data` (Subresource Integrity hashes).
pub fn sha384(data: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(digest::digest(&digest::SHA384, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte).
    #[test]
    fn rfc8032_vectors_verify_and_tampering_fails() {
        let pk = unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let sig = unhex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        assert!(ed25519_verify(&pk, b"", &sig));
        assert!(!ed25519_verify(&pk, b"x", &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!ed25519_verify(&pk, b"", &bad));
        assert!(!ed25519_verify(&pk[..31], b"", &sig));

        let pk2 = unhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
        let sig2 = unhex(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        );
        assert!(ed25519_verify(&pk2, &[0x72], &sig2));
        assert!(!ed25519_verify(&pk, &[0x72], &sig2));
    }

    #[test]
    fn spki_prefix_is_recognised() {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&[9u8; 32]);
        assert_eq!(ed25519_public_from_spki(&der), Some([9u8; 32]));
        assert_eq!(ed25519_public_from_spki(&der[..43]), None);
        der[7] = 0x71; // X448's OID
        assert_eq!(ed25519_public_from_spki(&der), None);
    }

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 "abc".
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
