//! TR-31 key blocks (ANSI X9.143), versions B (TDES) and D (AES): a key wrapped under a
//! key-block protection key (KBPK) with its attributes bound in a clear header. Written
//! here because no maintained Rust crate reads them; the primitives (AES and TDES CMAC,
//! AES-CBC from aws-lc-rs, TDES-CBC from RustCrypto's `des` and `cbc`) are not.
//!
//! Unwrapping (the only direction the vault needs): the header and optional blocks are
//! parsed; the encryption and MAC keys are derived from the KBPK with the CMAC-based
//! counter KDF of NIST SP 800-108 (one 8-byte input per output block: counter, key usage
//! `0000` encryption / `0001` MAC, separator `00`, algorithm, length in bits); the key
//! data is deciphered in CBC mode with the block's MAC as IV; the MAC, a CMAC over the
//! header and the clear key data, must match. Any failure is one error, with nothing of
//! which check failed.

use crate::CryptoError;
use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptingKey, DecryptionContext, UnboundCipherKey,
};
use aws_lc_rs::cmac;
use zeroize::Zeroizing;

/// A TR-31 key block's clear header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `B` or `D`.
    pub version: char,
    /// Key usage, e.g. `B0` (BDK), `P0` (PIN encryption), `K0`/`K1` (key encryption).
    pub key_usage: String,
    /// `T` (TDES) or `A` (AES).
    pub algorithm: char,
    /// Mode of use, e.g. `E`, `D`, `B`, `X`, `N`.
    pub mode_of_use: char,
    /// Key version number (two characters).
    pub key_version: String,
    /// Exportability: `E`, `N` or `S`.
    pub exportability: char,
}

/// The header's fixed part.
const FIXED: usize = 16;

fn field(s: &str, at: usize, len: usize) -> Result<&str, CryptoError> {
    s.get(at..at + len).ok_or(CryptoError::Decrypt)
}

fn digits(s: &str, radix: u32) -> Result<usize, CryptoError> {
    usize::from_str_radix(s, radix).map_err(|_| CryptoError::Decrypt)
}

fn char_at(s: &str, at: usize) -> Result<char, CryptoError> {
    s.get(at..)
        .and_then(|r| r.chars().next())
        .ok_or(CryptoError::Decrypt)
}

/// Unwraps a version B or D key block under `kbpk`: its header and the key.
pub fn unwrap(kbpk: &[u8], block: &str) -> Result<(Header, Zeroizing<Vec<u8>>), CryptoError> {
    if !block.is_ascii() {
        return Err(CryptoError::Decrypt);
    }
    let version = char_at(block, 0)?;
    if digits(field(block, 1, 4)?, 10)? != block.len() {
        return Err(CryptoError::Decrypt);
    }
    let header = Header {
        version,
        key_usage: field(block, 5, 2)?.to_owned(),
        algorithm: char_at(block, 7)?,
        mode_of_use: char_at(block, 8)?,
        key_version: field(block, 9, 2)?.to_owned(),
        exportability: char_at(block, 11)?,
    };
    // Optional blocks: an id, a length in hex (the whole block's), the data.
    let mut end = FIXED;
    for _ in 0..digits(field(block, 12, 2)?, 10)? {
        let len = digits(field(block, end + 2, 2)?, 16)?;
        if len < 4 {
            return Err(CryptoError::Decrypt);
        }
        end += len;
    }
    let header_text = field(block, 0, end)?;
    let rest = block.get(end..).ok_or(CryptoError::Decrypt)?;
    let (mac_len, block_len) = match version {
        'B' => (8, 8),
        'D' => (16, 16),
        _ => return Err(CryptoError::Decrypt),
    };
    let rest = hex::decode(rest).map_err(|_| CryptoError::Decrypt)?;
    let split = rest
        .len()
        .checked_sub(mac_len)
        .filter(|n| *n > 0 && n % block_len == 0)
        .ok_or(CryptoError::Decrypt)?;
    let (enc, mac) = rest.split_at(split);
    let clear = match version {
        'B' => unwrap_b(kbpk, enc, mac, header_text)?,
        _ => unwrap_d(kbpk, enc, mac, header_text)?,
    };
    // Clear key data: the key's length in bits (2 bytes), the key, padding.
    let (len, key) = clear.split_at_checked(2).ok_or(CryptoError::Decrypt)?;
    let len: [u8; 2] = len.try_into().map_err(|_| CryptoError::Decrypt)?;
    let bits = usize::from(u16::from_be_bytes(len));
    if bits % 8 != 0 {
        return Err(CryptoError::Decrypt);
    }
    let key = key.get(..bits / 8).ok_or(CryptoError::Decrypt)?;
    Ok((header, Zeroizing::new(key.to_vec())))
}

/// The CMAC counter KDF: `len` bytes for `usage` (0 encryption, 1 MAC).
fn derive(
    alg: cmac::Algorithm,
    kbpk: &[u8],
    usage: u8,
    alg_id: u8,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = cmac::Key::new(alg, kbpk).map_err(|_| CryptoError::Operation)?;
    let bits = u16::try_from(len * 8).map_err(|_| CryptoError::Operation)?;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut counter = 1u8;
    while out.len() < len {
        let [hi, lo] = bits.to_be_bytes();
        let input = [counter, 0, usage, 0, 0, alg_id, hi, lo];
        let tag = cmac::sign(&key, &input).map_err(|_| CryptoError::Operation)?;
        out.extend_from_slice(tag.as_ref());
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

fn check_mac(
    alg: cmac::Algorithm,
    kbmk: &[u8],
    header: &str,
    clear: &[u8],
    mac: &[u8],
) -> Result<(), CryptoError> {
    let key = cmac::Key::new(alg, kbmk).map_err(|_| CryptoError::Operation)?;
    let mut data = Zeroizing::new(header.as_bytes().to_vec());
    data.extend_from_slice(clear);
    let tag = cmac::sign(&key, &data).map_err(|_| CryptoError::Operation)?;
    let full = tag.as_ref();
    let ok = full.get(..mac.len()).is_some_and(|t| crate::ct_eq(t, mac));
    if ok {
        Ok(())
    } else {
        Err(CryptoError::Decrypt)
    }
}

/// Version D: an AES KBPK of 16, 24 or 32 bytes.
fn unwrap_d(
    kbpk: &[u8],
    enc: &[u8],
    mac: &[u8],
    header: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (alg, cipher, alg_id) = match kbpk.len() {
        16 => (cmac::AES_128, &AES_128, 2),
        24 => (cmac::AES_192, &AES_192, 3),
        32 => (cmac::AES_256, &AES_256, 4),
        _ => return Err(CryptoError::Decrypt),
    };
    let kbek = derive(alg, kbpk, 0, alg_id, kbpk.len())?;
    let kbmk = derive(alg, kbpk, 1, alg_id, kbpk.len())?;
    let iv: [u8; 16] = mac.try_into().map_err(|_| CryptoError::Decrypt)?;
    let key = UnboundCipherKey::new(cipher, &kbek).map_err(|_| CryptoError::Operation)?;
    let key = DecryptingKey::cbc(key).map_err(|_| CryptoError::Operation)?;
    let mut clear = Zeroizing::new(enc.to_vec());
    let plain_len = key
        .decrypt(&mut clear, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    clear.truncate(plain_len);
    check_mac(alg, &kbmk, header, &clear, mac)?;
    Ok(clear)
}

/// Version B: a TDES KBPK of 16 (two-key) or 24 bytes.
fn unwrap_b(
    kbpk: &[u8],
    enc: &[u8],
    mac: &[u8],
    header: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
    let (full, alg_id) = match kbpk.len() {
        16 => (triple(kbpk)?, 0),
        24 => (Zeroizing::new(kbpk.to_vec()), 1),
        _ => return Err(CryptoError::Decrypt),
    };
    let kbek = derive(
        cmac::DES_EDE3_FOR_LEGACY_USE_ONLY,
        &full,
        0,
        alg_id,
        kbpk.len(),
    )?;
    let kbmk = derive(
        cmac::DES_EDE3_FOR_LEGACY_USE_ONLY,
        &full,
        1,
        alg_id,
        kbpk.len(),
    )?;
    let kbek = if kbpk.len() == 16 {
        triple(&kbek)?
    } else {
        kbek
    };
    let kbmk = if kbpk.len() == 16 {
        triple(&kbmk)?
    } else {
        kbmk
    };
    let dec = cbc::Decryptor::<des::TdesEde3>::new_from_slices(&kbek, mac)
        .map_err(|_| CryptoError::Decrypt)?;
    let mut clear = Zeroizing::new(enc.to_vec());
    let n = dec
        .decrypt_padded_mut::<NoPadding>(&mut clear)
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    clear.truncate(n);
    check_mac(
        cmac::DES_EDE3_FOR_LEGACY_USE_ONLY,
        &kbmk,
        header,
        &clear,
        mac,
    )?;
    Ok(clear)
}

/// A double-length TDES key as triple length (K1 K2 K1).
fn triple(k: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let k1 = k.get(..8).ok_or(CryptoError::Operation)?;
    let mut out = Zeroizing::new(k.to_vec());
    out.extend_from_slice(k1);
    Ok(out)
}
