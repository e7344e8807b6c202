//! The one module that draws randomness (the operating system's CSPRNG via aws-lc-rs).

use crate::CryptoError;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Operation)?;
    Ok(out)
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` random characters from `[0-9A-Za-z]`, unbiased (rejection sampling), for API
/// secrets. 40 characters carry about 238 bits.
pub fn base62(len: usize) -> Result<Zeroizing<String>, CryptoError> {
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut pool = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        SystemRandom::new()
            .fill(pool.as_mut_slice())
            .map_err(|_| CryptoError::Operation)?;
        // 248 = 4 * 62: bytes at or above it would bias the result.
        for b in pool.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            if let Some(c) = BASE62.get(usize::from(*b % 62)) {
                out.push(char::from(*c));
            }
        }
    }
    Ok(out)
}

/// A uniformly random decimal code of `digits` digits (at most 9), e.g. an OTP.
pub fn decimal_code(digits: u32) -> Result<Zeroizing<String>, CryptoError> {
    let digits = digits.clamp(1, 9);
    let modulus = 10u32.pow(digits);
    // Reject draws at or above the largest multiple of `modulus` to stay unbiased.
    let limit = u32::MAX - (u32::MAX % modulus);
    loop {
        let v = u32::from_be_bytes(bytes::<4>()?);
        if v < limit {
            let width = digits as usize;
            return Ok(Zeroizing::new(format!("{:0width$}", v % modulus)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_has_the_length_and_alphabet() {
        let s = base62(40).unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(*s, *base62(40).unwrap());
    }

    #[test]
    fn codes_are_zero_padded_digits() {
        for _ in 0..200 {
            let c = decimal_code(6).unwrap();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
