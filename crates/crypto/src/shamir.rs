//! Shamir's secret sharing of the root key over GF(256), for a sealed start: the root key
//! is split into `n` shares of which any `k` rebuild it, and fewer say nothing about it.
//!
//! The arithmetic is the `blahaj` crate's (a maintained fork of `sharks`); this module
//! only draws its randomness from [`crate::random`]'s source, frames a share as text, and
//! gives each share a digest so that a wrong one is refused as it is handed in.

use crate::{CryptoError, KEY_LEN};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use blahaj::Sharks;
use zeroize::Zeroizing;

/// The text every share begins with (and its format version).
pub const SHARE_PREFIX: &str = "srshare1_";

/// The most shares a root key may be split into.
pub const MAX_SHARES: u8 = 32;

/// One share: its index (1 to 255) and one byte per byte of the secret.
pub struct Share(Zeroizing<Vec<u8>>);

impl Share {
    /// Reads a share's text. Anything else is [`CryptoError::Decrypt`], which says
    /// nothing about what was wrong.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let body = text
            .trim()
            .strip_prefix(SHARE_PREFIX)
            .ok_or(CryptoError::Decrypt)?;
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| CryptoError::Decrypt)?,
        );
        // The index byte, then one byte per byte of the key; index 0 would be the secret.
        if bytes.len() != KEY_LEN + 1 || bytes.first() == Some(&0) {
            return Err(CryptoError::Decrypt);
        }
        Ok(Self(bytes))
    }

    /// The share's text.
    pub fn text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::from(SHARE_PREFIX));
        URL_SAFE_NO_PAD.encode_string(self.0.as_slice(), &mut out);
        out
    }

    /// The share's index (1 to 255), the same for the same custodian's share.
    pub fn index(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }

    /// A digest of the share, which the vault keeps to know a share it was given (a
    /// share holds 256 random bits, so its digest cannot be searched back to it).
    pub fn digest(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"strongroom/v1/unseal-share");
        ctx.update(self.0.as_slice());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({}, [REDACTED])", self.index())
    }
}

/// Splits `secret` into `shares` shares, any `threshold` of which rebuild it.
/// `2 <= threshold <= shares <= MAX_SHARES`.
pub fn split(secret: &[u8; KEY_LEN], shares: u8, threshold: u8) -> Result<Vec<Share>, CryptoError> {
    if threshold < 2 || threshold > shares || shares > MAX_SHARES {
        return Err(CryptoError::Operation);
    }
    let mut rng = SystemRng { failed: false };
    let out: Vec<Share> = Sharks(threshold)
        .dealer_rng(secret, &mut rng)
        .take(usize::from(shares))
        .map(|s| Share(Zeroizing::new(Vec::from(&s))))
        .collect();
    // A polynomial drawn while the system's generator failed is not random: discard it.
    if rng.failed || out.len() != usize::from(shares) {
        return Err(CryptoError::Operation);
    }
    Ok(out)
}

/// Rebuilds the secret from at least `threshold` distinct shares. Shares that do not
/// belong together rebuild a wrong secret: the caller checks the result against what it
/// knows of the right one.
pub fn combine(threshold: u8, shares: &[Share]) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let parsed = shares
        .iter()
        .map(|s| blahaj::Share::try_from(s.0.as_slice()).map_err(|_| CryptoError::Decrypt))
        .collect::<Result<Vec<_>, _>>()?;
    let secret = Zeroizing::new(
        Sharks(threshold)
            .recover(parsed.iter())
            .map_err(|_| CryptoError::Decrypt)?,
    );
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if secret.len() != KEY_LEN {
        return Err(CryptoError::Decrypt);
    }
    out.copy_from_slice(secret.as_slice());
    Ok(out)
}

/// The operating system's generator (as in [`crate::random`]) behind the interface
/// `blahaj` asks for. That interface cannot fail, so a failure is remembered and the
/// caller throws the output away.
struct SystemRng {
    failed: bool,
}

impl SystemRng {
    fn fill(&mut self, dst: &mut [u8]) {
        if SystemRandom::new().fill(dst).is_err() {
            self.failed = true;
        }
    }
}

impl rand_core::TryRng for SystemRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SystemRng {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; KEY_LEN] {
        core::array::from_fn(|i| u8::try_from(i).unwrap().wrapping_mul(7))
    }

    #[test]
    fn any_threshold_of_the_shares_rebuild_the_key_and_fewer_do_not() {
        let shares = split(&key(), 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        let indexes: Vec<u8> = shares.iter().map(Share::index).collect();
        assert_eq!(indexes, [1, 2, 3, 4, 5]);
        // Every 3-subset opens, through the text form.
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let pick: Vec<Share> = [a, b, c]
                        .iter()
                        .map(|i| Share::parse(&shares[*i].text()).unwrap())
                        .collect();
                    assert_eq!(*combine(3, &pick).unwrap(), key());
                }
            }
        }
        let two: Vec<Share> = shares[..2]
            .iter()
            .map(|s| Share::parse(&s.text()).unwrap())
            .collect();
        assert!(combine(3, &two).is_err());
        // The same share twice is one share.
        let dup: Vec<Share> = [0, 0, 1]
            .iter()
            .map(|i| Share::parse(&shares[*i].text()).unwrap())
            .collect();
        assert!(combine(3, &dup).is_err());
    }

    #[test]
    fn a_corrupted_share_rebuilds_a_different_key_and_has_another_digest() {
        let shares = split(&key(), 3, 3).unwrap();
        let mut bad = shares[2].0.clone();
        bad[5] ^= 1;
        let bad = Share(bad);
        assert_ne!(bad.digest(), shares[2].digest());
        let pick = [
            Share::parse(&shares[0].text()).unwrap(),
            Share::parse(&shares[1].text()).unwrap(),
            bad,
        ];
        assert_ne!(*combine(3, &pick).unwrap(), key());
    }

    #[test]
    fn two_splits_of_one_key_share_nothing() {
        let a = split(&key(), 3, 2).unwrap();
        let b = split(&key(), 3, 2).unwrap();
        assert_ne!(a[0].digest(), b[0].digest());
        assert_ne!(a[0].text().as_str(), b[0].text().as_str());
    }

    #[test]
    fn malformed_shares_and_bad_parameters_are_refused() {
        let good = split(&key(), 3, 2).unwrap().remove(0).text();
        for bad in [
            "",
            "srshare1_",
            &good[1..],
            &format!("srshare1_{}", &good[SHARE_PREFIX.len() + 4..]),
            &format!("{}AA", good.as_str()),
            "srshare1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "srshare1_!!!!",
        ] {
            assert!(Share::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Share::parse(&format!("  {}\n", good.as_str())).is_ok());
        assert!(split(&key(), 3, 1).is_err());
        assert!(split(&key(), 2, 3).is_err());
        assert!(split(&key(), MAX_SHARES + 1, 2).is_err());
        assert!(format!("{:?}", Share::parse(&good).unwrap()).contains("REDACTED"));
    }
}
