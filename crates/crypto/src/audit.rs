//! The audit log's primitives: the SHA-256 chain step and the Ed25519 key that signs
//! checkpoints of the chain head.
//!
//! The signing key is derived from the root key (HKDF, label `audit-signing/v1`), so it
//! lives in the key hierarchy without being stored: whoever holds the root key can
//! re-derive the public key and check a checkpoint; whoever can only write the database
//! cannot forge one.

use crate::{CryptoError, RootKey};
use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Length of a chain hash.
pub const HASH_LEN: usize = 32;

/// The hash before the first record.
pub const GENESIS: [u8; HASH_LEN] = [0u8; HASH_LEN];

/// One chain step: `SHA-256(prev ‖ record)`, `record` being the canonical encoding.
pub fn chain_hash(prev: &[u8; HASH_LEN], record: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(record);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The message a checkpoint signs: a domain label, the head's sequence number, its
/// hash and the checkpoint time.
pub fn checkpoint_message(seq: i64, hash: &[u8], time_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + hash.len());
    m.extend_from_slice(b"strongroom/audit-checkpoint/v1\n");
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&time_ms.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// What a chained checkpoint signs. Each checkpoint names the one before it by its
/// [`CheckpointBody::digest`], so a checkpoint cannot be deleted, replaced or inserted
/// without breaking the next one's signature, and its place in the chain (`count`), so
/// a copy kept outside the database says how many checkpoints the database must hold.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointBody<'a> {
    /// The head's sequence number.
    pub seq: i64,
    /// The head's chain hash.
    pub hash: &'a [u8],
    /// When the checkpoint was taken (Unix milliseconds).
    pub time_ms: i64,
    /// The link to the checkpoint before it; `None` for a checkpoint made before
    /// checkpoints were chained (it signs [`checkpoint_message`]).
    pub link: Option<CheckpointLink<'a>>,
}

/// A chained checkpoint's link to its predecessor.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointLink<'a> {
    /// The digest of the previous checkpoint ([`GENESIS`] for the first).
    pub prev: &'a [u8],
    /// This checkpoint's place in the chain of checkpoints, from 1.
    pub count: i64,
}

impl CheckpointBody<'_> {
    /// The signed message: the v1 message for an unchained checkpoint; else a v2 domain
    /// label, `count`, `seq`, `time_ms` (8 bytes big-endian each), the previous
    /// checkpoint's digest and the head's hash, each with a 4-byte length.
    pub fn message(&self) -> Vec<u8> {
        let Some(link) = self.link else {
            return checkpoint_message(self.seq, self.hash, self.time_ms);
        };
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"strongroom/audit-checkpoint/v2\n");
        m.extend_from_slice(&link.count.to_be_bytes());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.time_ms.to_be_bytes());
        for field in [link.prev, self.hash] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(field);
        }
        m
    }

    /// What the next checkpoint names this one by: SHA-256 of its signed message.
    pub fn digest(&self) -> [u8; HASH_LEN] {
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(digest::digest(&digest::SHA256, &self.message()).as_ref());
        out
    }
}

/// The Ed25519 key that signs checkpoints.
pub struct AuditSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditSigner([REDACTED])")
    }
}

impl AuditSigner {
    /// Derives the audit signing key from the root key.
    pub fn derive(root: &RootKey) -> Result<Self, CryptoError> {
        let seed = root.derive_subkey("audit-signing/v1")?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_slice())
            .map_err(|_| CryptoError::Operation)?;
        Ok(Self { pair })
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs a checkpoint (chained, or unchained when `body.link` is `None`).
    pub fn sign_body(&self, body: &CheckpointBody<'_>) -> Vec<u8> {
        self.pair.sign(&body.message()).as_ref().to_vec()
    }

    /// Signs an unchained checkpoint of the head (`seq`, `hash`) taken at `time_ms`.
    pub fn sign_checkpoint(&self, seq: i64, hash: &[u8], time_ms: i64) -> Vec<u8> {
        self.pair
            .sign(&checkpoint_message(seq, hash, time_ms))
            .as_ref()
            .to_vec()
    }
}

/// Checks a checkpoint's signature (chained or not) under a raw Ed25519 public key.
pub fn verify_body(public_key: &[u8], body: &CheckpointBody<'_>, sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&body.message(), sig)
        .is_ok()
}

/// Checks an unchained checkpoint's signature under a raw Ed25519 public key.
pub fn verify_checkpoint(
    public_key: &[u8],
    seq: i64,
    hash: &[u8],
    time_ms: i64,
    sig: &[u8],
) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&checkpoint_message(seq, hash, time_ms), sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer_and_chaining() {
        // FIPS 180-2 "abc" vector, with an empty prefix.
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"abc");
        assert_eq!(
            hex::encode(ctx.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // chain_hash is SHA-256 over prev ‖ record.
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&GENESIS);
        ctx.update(b"abc");
        assert_eq!(
            chain_hash(&GENESIS, b"abc").as_slice(),
            ctx.finish().as_ref()
        );
        assert_ne!(chain_hash(&GENESIS, b"abc"), chain_hash(&GENESIS, b"abd"));
    }

    #[test]
    fn checkpoints_verify_only_under_the_derived_key() {
        let root = RootKey::from_bytes(&[7u8; 32]).unwrap();
        let s = AuditSigner::derive(&root).unwrap();
        assert_eq!(
            s.public_key(),
            AuditSigner::derive(&root).unwrap().public_key()
        );
        let h = chain_hash(&GENESIS, b"x");
        let sig = s.sign_checkpoint(5, &h, 1000);
        assert!(verify_checkpoint(&s.public_key(), 5, &h, 1000, &sig));
        assert!(!verify_checkpoint(&s.public_key(), 6, &h, 1000, &sig));
        assert!(!verify_checkpoint(&s.public_key(), 5, &h, 1001, &sig));
        let other = AuditSigner::derive(&RootKey::from_bytes(&[8u8; 32]).unwrap()).unwrap();
        assert!(!verify_checkpoint(&other.public_key(), 5, &h, 1000, &sig));
    }

    #[test]
    fn chained_checkpoints_sign_their_link() {
        let s = AuditSigner::derive(&RootKey::from_bytes(&[7u8; 32]).unwrap()).unwrap();
        let h = chain_hash(&GENESIS, b"x");
        let first = CheckpointBody {
            seq: 5,
            hash: &h,
            time_ms: 1000,
            link: Some(CheckpointLink {
                prev: &GENESIS,
                count: 1,
            }),
        };
        let sig = s.sign_body(&first);
        assert!(verify_body(&s.public_key(), &first, &sig));
        let prev = first.digest();
        let second = CheckpointBody {
            seq: 9,
            link: Some(CheckpointLink {
                prev: &prev,
                count: 2,
            }),
            ..first
        };
        let sig2 = s.sign_body(&second);
        assert!(verify_body(&s.public_key(), &second, &sig2));
        // Every linked field is signed: another predecessor, place or time fails.
        let other_prev = chain_hash(&GENESIS, b"y");
        for forged in [
            CheckpointBody {
                link: Some(CheckpointLink {
                    prev: &other_prev,
                    count: 2,
                }),
                ..second
            },
            CheckpointBody {
                link: Some(CheckpointLink {
                    prev: &prev,
                    count: 3,
                }),
                ..second
            },
            CheckpointBody {
                time_ms: 1001,
                ..second
            },
            CheckpointBody {
                link: None,
                ..second
            },
        ] {
            assert!(!verify_body(&s.public_key(), &forged, &sig2), "{forged:?}");
        }
        // An unchained body is the v1 message, signed as before.
        let v1 = CheckpointBody {
            link: None,
            ..first
        };
        let sig1 = s.sign_checkpoint(5, &h, 1000);
        assert!(verify_body(&s.public_key(), &v1, &sig1));
        assert!(!verify_body(&s.public_key(), &first, &sig1));
        assert_ne!(v1.digest(), first.digest());
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1 TEST 1: empty message.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        assert_eq!(
            hex::encode(pair.public_key().as_ref()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(pair.sign(b"").as_ref()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
