//! DUKPT, the receiving (host) side: the per-transaction keys a card-present terminal
//! enciphers track data and PIN blocks under, derived from the base derivation key (BDK)
//! and the transaction's key serial number (KSN).
//!
//! Written here because no maintained, permissively licensed Rust crate does it; only the
//! derivation steps are: every cipher operation is AES from aws-lc-rs or DES/TDES from
//! RustCrypto's `des`. Both are checked against the published vectors in the tests below.
//!
//! - **AES-DUKPT** (ANSI X9.24-3-2017, section 6): an 8-byte Initial Key ID and a 32-bit
//!   transaction counter. The initial key is derived from the BDK and the Initial Key ID;
//!   then, for each 1 bit of the counter from the most significant down, the derivation
//!   key is replaced by one derived under it with the counter so far; the working key of
//!   the wanted usage is derived last. Each derivation enciphers a 16-byte derivation
//!   data block (version, block counter, key usage, algorithm, length, and the Initial Key
//!   ID or its right half with the counter) once per output block. A terminal never uses
//!   a counter with more than 16 one bits ([`aes_counter_valid`]).
//! - **TDES-DUKPT** (ANSI X9.24-1-2009, Annex A): a 10-byte KSN whose right 21 bits are the
//!   counter. The initial key (IPEK) is the KSN's left 8 bytes, counter cleared, under the
//!   BDK and under the BDK XOR `C0C0C0C000000000…`; the transaction key comes from the
//!   non-reversible key generation process, once per 1 bit of the counter. The PIN key is
//!   its PIN variant; the data key its data (request) variant passed through the one-way
//!   function of Figure A-2. A terminal never uses a counter with more than 10 one bits
//!   ([`tdes_counter_valid`]).

use crate::CryptoError;
use crate::components::KeyAlgorithm;
use aws_lc_rs::cipher::EncryptingKey;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use zeroize::Zeroizing;

/// What a working key is for (X9.24-3, table 2: the key usage indicator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// PIN encryption.
    Pin,
    /// Data encryption, the terminal enciphering (the key the host deciphers with).
    DataEncrypt,
    /// MAC generation.
    MacGenerate,
}

impl Usage {
    fn indicator(self) -> u16 {
        match self {
            Self::Pin => 0x1000,
            Self::MacGenerate => 0x2000,
            Self::DataEncrypt => 0x3000,
        }
    }
}

/// Key usage of an intermediate derivation key.
const KEY_DERIVATION: u16 = 0x8000;
/// Key usage of the initial key.
const INITIAL_KEY: u16 = 0x8001;
/// Most 1 bits of an AES-DUKPT counter a terminal uses (X9.24-3, `MAX_WORK`).
pub const AES_MAX_ONE_BITS: u32 = 16;
/// Most 1 bits of a TDES-DUKPT counter a terminal uses (X9.24-1, A.2).
pub const TDES_MAX_ONE_BITS: u32 = 10;
/// The 21-bit TDES-DUKPT counter.
const TDES_COUNTER_MASK: u32 = 0x1F_FFFF;

/// An AES-DUKPT key serial number: the Initial Key ID and the transaction counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AesKsn {
    /// The Initial Key ID: the BDK's id (4 bytes) and the device's (4 bytes).
    pub initial_key_id: [u8; 8],
    /// The transaction counter.
    pub counter: u32,
}

impl AesKsn {
    /// A KSN of 12 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (id, counter) = bytes.split_first_chunk::<8>().ok_or(CryptoError::Decrypt)?;
        let counter: [u8; 4] = counter.try_into().map_err(|_| CryptoError::Decrypt)?;
        Ok(Self {
            initial_key_id: *id,
            counter: u32::from_be_bytes(counter),
        })
    }
}

/// Whether a terminal can have used this AES-DUKPT counter: not 0, at most 16 one bits.
pub fn aes_counter_valid(counter: u32) -> bool {
    counter != 0 && counter.count_ones() <= AES_MAX_ONE_BITS
}

/// Whether a terminal can have used this TDES-DUKPT counter: within 21 bits, not 0, at
/// most 10 one bits.
pub fn tdes_counter_valid(counter: u32) -> bool {
    counter != 0 && counter <= TDES_COUNTER_MASK && counter.count_ones() <= TDES_MAX_ONE_BITS
}

/// The algorithm indicator and length in bits of an AES key type.
fn aes_type(alg: KeyAlgorithm) -> Result<(u16, u16), CryptoError> {
    match alg {
        KeyAlgorithm::Aes128 => Ok((2, 128)),
        KeyAlgorithm::Aes192 => Ok((3, 192)),
        KeyAlgorithm::Aes256 => Ok((4, 256)),
        KeyAlgorithm::Tdes2 | KeyAlgorithm::Tdes3 => Err(CryptoError::Operation),
    }
}

/// Enciphers one block under an AES key of any length.
fn aes_block(key: &[u8], block: &mut [u8; 16]) -> Result<(), CryptoError> {
    let ecb = EncryptingKey::ecb(crate::aes_key(key)?).map_err(|_| CryptoError::Operation)?;
    ecb.encrypt(block)
        .map(drop)
        .map_err(|_| CryptoError::Operation)
}

/// X9.24-3 6.3.2/6.3.3: the derivation data (block counter 1) of a key of type `alg`
/// for `usage` and, for the initial key, the whole Initial Key ID or, otherwise, its right
/// half and `counter`.
fn derivation_data(
    alg: KeyAlgorithm,
    usage: u16,
    ksn: &AesKsn,
    counter: u32,
) -> Result<[u8; 16], CryptoError> {
    let (indicator, bits) = aes_type(alg)?;
    let mut data = [0u8; 16];
    data[0] = 1;
    data[1] = 1;
    data[2..4].copy_from_slice(&usage.to_be_bytes());
    data[4..6].copy_from_slice(&indicator.to_be_bytes());
    data[6..8].copy_from_slice(&bits.to_be_bytes());
    if usage == INITIAL_KEY {
        data[8..16].copy_from_slice(&ksn.initial_key_id);
    } else {
        data[8..12].copy_from_slice(&ksn.initial_key_id[4..8]);
        data[12..16].copy_from_slice(&counter.to_be_bytes());
    }
    Ok(data)
}

/// One AES-DUKPT derivation: a key of type `alg` under the previous key, from
/// derivation data whose block counter (byte 1) counts the 16-byte blocks of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AesStep {
    /// The type of the key derived.
    pub alg: KeyAlgorithm,
    /// The derivation data of its first block.
    pub data: [u8; 16],
}

/// The derivations from an AES BDK of type `bdk_alg` to the working key of `usage` and
/// type `working` for a transaction: the initial key, then one derivation key per 1 bit of
/// the counter from the most significant down, then the working key. Each step enciphers
/// its data under the key the step before derived (the first, under the BDK). The working
/// key may be as strong as the BDK, not stronger. Any counter is derived (the published
/// tables include ones a terminal skips): whether a terminal can have used it is
/// [`aes_counter_valid`]'s to say.
pub fn aes_path(
    bdk_alg: KeyAlgorithm,
    ksn: &AesKsn,
    usage: Usage,
    working: KeyAlgorithm,
) -> Result<Vec<AesStep>, CryptoError> {
    if working.key_len() > bdk_alg.key_len() {
        return Err(CryptoError::Operation);
    }
    let step = |alg, usage, counter| {
        derivation_data(alg, usage, ksn, counter).map(|data| AesStep { alg, data })
    };
    let mut path = vec![step(bdk_alg, INITIAL_KEY, 0)?];
    let mut so_far = 0u32;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if ksn.counter & bit != 0 {
            so_far |= bit;
            path.push(step(bdk_alg, KEY_DERIVATION, so_far)?);
        }
        bit >>= 1;
    }
    path.push(step(working, usage.indicator(), ksn.counter)?);
    Ok(path)
}

/// The key a step derives under `key`.
fn aes_derive(key: &[u8], step: &AesStep) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut data = step.data;
    let mut out = Zeroizing::new(Vec::with_capacity(32));
    for block_counter in 1..=step.alg.key_len().div_ceil(16) {
        data[1] = u8::try_from(block_counter).map_err(|_| CryptoError::Operation)?;
        let mut block = Zeroizing::new(data);
        aes_block(key, &mut block)?;
        out.extend_from_slice(block.as_slice());
    }
    out.truncate(step.alg.key_len());
    Ok(out)
}

/// The initial key a terminal was loaded with, from an AES BDK of type `bdk_alg`.
pub fn aes_initial_key(
    bdk: &[u8],
    bdk_alg: KeyAlgorithm,
    initial_key_id: [u8; 8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if bdk.len() != bdk_alg.key_len() {
        return Err(CryptoError::Operation);
    }
    let ksn = AesKsn {
        initial_key_id,
        counter: 0,
    };
    aes_derive(
        bdk,
        &AesStep {
            alg: bdk_alg,
            data: derivation_data(bdk_alg, INITIAL_KEY, &ksn, 0)?,
        },
    )
}

/// The working key of `usage` and type `working` for a transaction, from the AES BDK
/// (type `bdk_alg`): [`aes_path`], each step in software.
pub fn aes_working_key(
    bdk: &[u8],
    bdk_alg: KeyAlgorithm,
    ksn: &AesKsn,
    usage: Usage,
    working: KeyAlgorithm,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if bdk.len() != bdk_alg.key_len() {
        return Err(CryptoError::Operation);
    }
    let mut key = Zeroizing::new(bdk.to_vec());
    for step in aes_path(bdk_alg, ksn, usage, working)? {
        key = aes_derive(&key, &step)?;
    }
    Ok(key)
}

/// A TDES-DUKPT key serial number (10 bytes; the right 21 bits are the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdesKsn(pub [u8; 10]);

impl TdesKsn {
    /// A KSN of 10 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes.try_into().map(Self).map_err(|_| CryptoError::Decrypt)
    }

    /// The transaction counter.
    pub fn counter(&self) -> u32 {
        let [.., a, b, c] = self.0;
        u32::from_be_bytes([0, a, b, c]) & TDES_COUNTER_MASK
    }

    /// The initial KSN: the counter cleared. Every transaction of one terminal has the
    /// same.
    pub fn initial(&self) -> [u8; 10] {
        let mut ksn = self.0;
        ksn[7] &= 0xE0;
        ksn[8] = 0;
        ksn[9] = 0;
        ksn
    }
}

/// The mask of the IPEK's right half and the non-reversible key generation process.
const KEY_MASK: [u8; 16] = [
    0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0, 0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0,
];
/// A.4.1 table A-1: the PIN variant.
const PIN_VARIANT: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF];
/// A.4.1 table A-1: the data (request) variant.
const DATA_VARIANT: [u8; 16] = [0, 0, 0, 0, 0, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0];

/// A double-length TDES key (16 bytes), zeroized on drop.
pub type TdesKey = Zeroizing<[u8; 16]>;

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> TdesKey {
    let mut out = Zeroizing::new(*a);
    out.iter_mut().zip(b).for_each(|(o, m)| *o ^= m);
    out
}

/// A key of two halves.
fn join(left: [u8; 8], right: [u8; 8]) -> TdesKey {
    let mut out = Zeroizing::new([0u8; 16]);
    let (l, r) = out.split_at_mut(8);
    l.copy_from_slice(&left);
    r.copy_from_slice(&right);
    out
}

fn halves(key: &[u8; 16]) -> (&[u8; 8], &[u8; 8]) {
    let (left, right) = key.split_at(8);
    // Both halves are 8 bytes: the split of a 16-byte array.
    (
        left.try_into().unwrap_or(&[0; 8]),
        right.try_into().unwrap_or(&[0; 8]),
    )
}

/// Enciphers one block under a double-length TDES key.
pub fn tdes_encrypt(key: &[u8; 16], block: &[u8; 8]) -> [u8; 8] {
    let cipher = des::TdesEde2::new(key.into());
    let mut b = des::cipher::Block::<des::TdesEde2>::from(*block);
    cipher.encrypt_block(&mut b);
    b.into()
}

/// Deciphers one block under a double-length TDES key.
pub fn tdes_decrypt(key: &[u8; 16], block: &[u8; 8]) -> [u8; 8] {
    let cipher = des::TdesEde2::new(key.into());
    let mut b = des::cipher::Block::<des::TdesEde2>::from(*block);
    cipher.decrypt_block(&mut b);
    b.into()
}

/// The initial key (IPEK) of the terminal that sent `ksn`, from a double-length BDK.
/// X9.24-1-2009 defines TDES-DUKPT for double-length keys only.
pub fn tdes_ipek(bdk: &[u8], ksn: &TdesKsn) -> Result<TdesKey, CryptoError> {
    let bdk: Zeroizing<[u8; 16]> =
        Zeroizing::new(bdk.try_into().map_err(|_| CryptoError::Operation)?);
    let initial = ksn.initial();
    let (left8, _) = initial
        .split_first_chunk::<8>()
        .ok_or(CryptoError::Operation)?;
    Ok(join(
        tdes_encrypt(&bdk, left8),
        tdes_encrypt(&xor16(&bdk, &KEY_MASK), left8),
    ))
}

/// A.2: the non-reversible key generation process.
fn non_reversible(key: &[u8; 16], register: &[u8; 8]) -> TdesKey {
    fn half(key: &[u8; 16], register: &[u8; 8]) -> [u8; 8] {
        let (left, right) = halves(key);
        let mut block = des::cipher::Block::<des::Des>::default();
        block
            .iter_mut()
            .zip(register.iter().zip(right))
            .for_each(|(b, (r, k))| *b = r ^ k);
        des::Des::new(left.into()).encrypt_block(&mut block);
        let mut out = [0u8; 8];
        out.iter_mut()
            .zip(block.iter().zip(right))
            .for_each(|(o, (b, k))| *o = b ^ k);
        out
    }
    join(half(&xor16(key, &KEY_MASK), register), half(key, register))
}

/// The transaction key for `ksn` from the terminal's IPEK (A.3, the host's "calculation
/// of the current key"). Any counter is derived: [`tdes_counter_valid`] says whether a
/// terminal can have used it.
pub fn tdes_transaction_key(ipek: &[u8; 16], ksn: &TdesKsn) -> TdesKey {
    let counter = ksn.counter();
    let [.., r0, r1, r2, r3, r4, r5, r6, r7] = ksn.initial();
    let mut register = u64::from_be_bytes([r0, r1, r2, r3, r4, r5, r6, r7]);
    let mut key = Zeroizing::new(*ipek);
    let mut bit = 1u32 << 20;
    while bit != 0 {
        if counter & bit != 0 {
            register |= u64::from(bit);
            key = non_reversible(&key, &register.to_be_bytes());
        }
        bit >>= 1;
    }
    key
}

/// The PIN encryption key of a transaction key.
pub fn tdes_pin_key(key: &[u8; 16]) -> TdesKey {
    xor16(key, &PIN_VARIANT)
}

/// The data encryption key of a transaction key: the data variant, each half then
/// enciphered under the variant itself (A.4.1, figure A-2).
pub fn tdes_data_key(key: &[u8; 16]) -> TdesKey {
    let variant = xor16(key, &DATA_VARIANT);
    let (left, right) = halves(&variant);
    join(tdes_encrypt(&variant, left), tdes_encrypt(&variant, right))
}

/// Deciphers what a terminal enciphered in CBC mode with a zero IV (the usual practice
/// of DUKPT data encryption), in place: AES under a 16-, 24- or 32-byte key (`tdes`
/// false), TDES under a double-length key. Padding is the caller's to remove. A length
/// that is not a whole number of blocks is an error.
pub fn decipher_cbc(key: &[u8], tdes: bool, data: &mut [u8]) -> Result<(), CryptoError> {
    use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext};
    use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
    if tdes {
        let dec = cbc::Decryptor::<des::TdesEde2>::new_from_slices(key, &[0; 8])
            .map_err(|_| CryptoError::Operation)?;
        dec.decrypt_padded_mut::<NoPadding>(data)
            .map(drop)
            .map_err(|_| CryptoError::Decrypt)
    } else {
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err(CryptoError::Decrypt);
        }
        let dec = DecryptingKey::cbc(crate::aes_key(key)?).map_err(|_| CryptoError::Operation)?;
        dec.decrypt(data, DecryptionContext::Iv128([0u8; 16].into()))
            .map(drop)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// The terminal's side of [`decipher_cbc`], for the load generator and tests: enciphers
/// whole blocks in place, CBC with a zero IV.
pub fn encipher_cbc(key: &[u8], tdes: bool, data: &mut [u8]) -> Result<(), CryptoError> {
    use cbc::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
    let len = data.len();
    if tdes {
        let enc = cbc::Encryptor::<des::TdesEde2>::new_from_slices(key, &[0; 8])
            .map_err(|_| CryptoError::Operation)?;
        enc.encrypt_padded_mut::<NoPadding>(data, len)
            .map(drop)
            .map_err(|_| CryptoError::Operation)
    } else {
        if data.is_empty() || !len.is_multiple_of(16) {
            return Err(CryptoError::Operation);
        }
        let enc = EncryptingKey::cbc(crate::aes_key(key)?).map_err(|_| CryptoError::Operation)?;
        let iv = aws_lc_rs::cipher::EncryptionContext::Iv128([0u8; 16].into());
        enc.less_safe_encrypt(data, iv)
            .map(drop)
            .map_err(|_| CryptoError::Operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    const IKID: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 0x90, 0x12, 0x34, 0x56];
    const AES_BDK: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";

    fn aes(
        bdk: &str,
        alg: KeyAlgorithm,
        counter: u32,
        usage: Usage,
        working: KeyAlgorithm,
    ) -> String {
        let ksn = AesKsn {
            initial_key_id: IKID,
            counter,
        };
        hex::encode_upper(
            aes_working_key(&h(bdk), alg, &ksn, usage, working)
                .unwrap()
                .as_slice(),
        )
    }

    /// X9.24-3-2017 supplement: initial keys for the AES-128, AES-192 and AES-256 BDKs.
    #[test]
    fn aes_initial_keys_match_the_published_vectors() {
        for (bdk, alg, expected) in [
            (
                AES_BDK,
                KeyAlgorithm::Aes128,
                "1273671EA26AC29AFA4D1084127652A1",
            ),
            (
                "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210",
                KeyAlgorithm::Aes192,
                "5B6DEE2B5B7FABFFA32591F35BF8F23DD9329AE85131E584",
            ),
            (
                "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1",
                KeyAlgorithm::Aes256,
                "CE9CE0C101D1138F97FB6CAD4DF045A7083D4EAE2D35A31789D01CCF0949550F",
            ),
        ] {
            let key = aes_initial_key(&h(bdk), alg, IKID).unwrap();
            assert_eq!(hex::encode_upper(key.as_slice()), expected, "{alg:?}");
        }
    }

    /// X9.24-3-2017 supplement, AES-128 BDK: PIN, MAC and data working keys along the
    /// counter, across the 0x1FFFF/0x20000 carry.
    #[test]
    fn aes_128_working_keys_match_the_published_vectors() {
        let table = [
            (
                1,
                "AF8CB133A78F8DC2D1359F18527593FB",
                "A2DC23DE6FDE0824A2BC321E08E4B8B7",
                "A35C412EFD41FDB98B69797C02DCD08F",
            ),
            (
                2,
                "D30BDC73EC9714B000BEC66BDB7B6D09",
                "484C3B06E8562704528CD5B46FB12FB6",
                "D639514AA33AC43AD9229E433D6D4E5B",
            ),
            (
                3,
                "7D69F01F3B45449F62C7816ECE723268",
                "A5DF7D9D800CA769766F0C77CA4E6E6C",
                "EF17F6AB45B4820C93A3DCB21BC491AD",
            ),
            (
                4,
                "91A0588318EC2673214271F70137896E",
                "E6E4679647D8A9057C1FC15537CB4C4E",
                "B3BD44C08BB6BA27C3BB4711D7D70387",
            ),
            (
                5,
                "35A43BC9EFEB09C756204B57E3FB7D4D",
                "0588185FE1FF8C7E22FAD78C1C61F065",
                "CA02DF6F30B39E14BD0B4A30E460920F",
            ),
            (
                0x1FFFE,
                "DDF7E08A84B5478C498D007C743BF762",
                "6D7623AD652734B8FAE1B6E093EACE3D",
                "8E4E5D5E0F01C54F01F4ACA1C8F8EDCE",
            ),
            (
                0x1FFFF,
                "73BA667D6368A2086E72576DF41A4037",
                "8B543DCF4A31EA3AB47DAD16B8ABD404",
                "D18ACA30B4D63DB61CE474D3F57733D3",
            ),
            (
                0x20000,
                "AB828BE7B58C7EC5D5ED0D5D320A0C9D",
                "0B59D3D7D93028D97135FB895CACE24E",
                "13361208975755318FE7AE28C9616014",
            ),
        ];
        let a = KeyAlgorithm::Aes128;
        for (counter, pin, mac, data) in table {
            assert_eq!(aes(AES_BDK, a, counter, Usage::Pin, a), pin, "{counter:#x}");
            assert_eq!(
                aes(AES_BDK, a, counter, Usage::MacGenerate, a),
                mac,
                "{counter:#x}"
            );
            assert_eq!(
                aes(AES_BDK, a, counter, Usage::DataEncrypt, a),
                data,
                "{counter:#x}"
            );
        }
    }

    /// X9.24-3-2017 supplement, AES-256 BDK: AES-256 and AES-128 working keys at counter 1;
    /// AES-192 BDK at counters 1, 3 and 0x1FFFF.
    #[test]
    fn aes_192_and_256_working_keys_match_the_published_vectors() {
        let b256 = "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1";
        let (a128, a192, a256) = (
            KeyAlgorithm::Aes128,
            KeyAlgorithm::Aes192,
            KeyAlgorithm::Aes256,
        );
        assert_eq!(
            aes(b256, a256, 1, Usage::Pin, a256),
            "8C1AB7BEE973829E30242E0BBBDD4946D540C98FC1B5BDCF94790001A23FD502"
        );
        assert_eq!(
            aes(b256, a256, 1, Usage::DataEncrypt, a256),
            "71EB36C9A6B7F801D1D1700C29741FC5A5C4E9B45D742DA7AF6992B8AA29AF58"
        );
        assert_eq!(
            aes(b256, a256, 1, Usage::Pin, a128),
            "09C9C432966811D6B2C3336BAC1B1202"
        );
        assert_eq!(
            aes(b256, a256, 1, Usage::DataEncrypt, a128),
            "616D59AE91F8CC7016F89FDA29605FA4"
        );
        let b192 = "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210";
        for (counter, pin, data) in [
            (
                1,
                "C5043EDC7F2C001097974D40FF82A050B64A1AB27879F3DB",
                "C1D4541AE0E33949DD03F2A10B5E5486BBCAC1C520320E0C",
            ),
            (
                3,
                "64AE12F5E0FB2001B22520CED9C5CF1A8AA45AAA3F264882",
                "A5DDCE36A4ECC8781C466C2270BA499EC4654AA166392EFC",
            ),
            (
                0x1FFFF,
                "2ED63AC853F1DE1C510A66B165BA33D6DDC744C282F9D420",
                "92E250B33BC93E9BF213EA343AD7465758EEB67569C9ED90",
            ),
        ] {
            assert_eq!(
                aes(b192, a192, counter, Usage::Pin, a192),
                pin,
                "{counter:#x}"
            );
            assert_eq!(
                aes(b192, a192, counter, Usage::DataEncrypt, a192),
                data,
                "{counter:#x}"
            );
        }
        assert_eq!(
            aes(b192, a192, 3, Usage::Pin, a128),
            "6DE9A0A37D6927280B7E223C4BE7580F"
        );
    }

    #[test]
    fn a_working_key_stronger_than_the_bdk_or_a_tdes_type_is_refused() {
        let ksn = AesKsn {
            initial_key_id: IKID,
            counter: 1,
        };
        let bdk = h(AES_BDK);
        for working in [KeyAlgorithm::Aes256, KeyAlgorithm::Tdes2] {
            assert!(
                aes_working_key(&bdk, KeyAlgorithm::Aes128, &ksn, Usage::Pin, working).is_err()
            );
        }
        assert!(aes_initial_key(&bdk, KeyAlgorithm::Aes256, IKID).is_err());
        assert!(AesKsn::from_bytes(&[0; 11]).is_err());
        assert_eq!(
            AesKsn::from_bytes(&h("123456789012345600000005")).unwrap(),
            AesKsn {
                initial_key_id: IKID,
                counter: 5
            }
        );
    }

    /// A terminal skips counters with too many one bits, and never sends 0.
    #[test]
    fn counters_a_terminal_never_uses_are_refused() {
        assert!(aes_counter_valid(1) && aes_counter_valid(0x1FFFE) && aes_counter_valid(0x20000));
        assert!(aes_counter_valid(0xFFFF_0000));
        assert!(
            !aes_counter_valid(0) && !aes_counter_valid(0x1FFFF) && !aes_counter_valid(u32::MAX)
        );
        assert!(tdes_counter_valid(1) && tdes_counter_valid(0x3FF) && tdes_counter_valid(0x1FF800));
        assert!(
            !tdes_counter_valid(0) && !tdes_counter_valid(0x7FF) && !tdes_counter_valid(0x20_0000)
        );
    }

    const TDES_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";

    fn tdes_key(counter: u32) -> TdesKey {
        let mut ksn = TdesKsn::from_bytes(&h("FFFF9876543210E00000")).unwrap();
        let [_, a, b, c] = counter.to_be_bytes();
        ksn.0[7] |= a;
        ksn.0[8] = b;
        ksn.0[9] = c;
        let ipek = tdes_ipek(&h(TDES_BDK), &ksn).unwrap();
        tdes_transaction_key(&ipek, &ksn)
    }

    /// X9.24-1-2009 Annex A.4: the IPEK and the PIN keys of the first transactions and
    /// around the counter's carries.
    #[test]
    fn tdes_keys_match_the_published_vectors() {
        let ksn = TdesKsn::from_bytes(&h("FFFF9876543210E00008")).unwrap();
        assert_eq!(ksn.counter(), 8);
        let ipek = tdes_ipek(&h(TDES_BDK), &ksn).unwrap();
        assert_eq!(
            hex::encode_upper(ipek.as_slice()),
            "6AC292FAA1315B4D858AB3A3D7D5933A"
        );
        // The transaction keys of counters 1 to 3; the PIN block of counter 1 (PIN 1234,
        // PAN 4012345678909) under its PIN variant.
        for (counter, key) in [
            (1, "042666B49184CFA368DE9628D0397BC9"),
            (2, "C46551CEF9FD24B0AA9AD834130D3BC7"),
            (3, "0DF3D9422ACA56E547676D07AD6BADFA"),
        ] {
            assert_eq!(
                hex::encode_upper(tdes_key(counter).as_slice()),
                key,
                "{counter:#x}"
            );
        }
        let clear: [u8; 8] = h("041274EDCBA9876F").try_into().unwrap();
        let block = tdes_encrypt(&tdes_pin_key(&tdes_key(1)), &clear);
        assert_eq!(hex::encode_upper(block), "1B9C1845EB993A7A");
        // Further along the counter, as pydukpt 0.1.0 (an independent implementation)
        // derives them: the PIN variant of counter 8 and the last counter a terminal uses.
        let pin8 = tdes_pin_key(&tdes_key(8));
        assert_eq!(
            hex::encode_upper(pin8.as_slice()),
            "27F66D5244FF621EAA6F6120EDEB427F"
        );
        let data = tdes_data_key(&tdes_key(0x1FF800));
        assert_eq!(
            hex::encode_upper(data.as_slice()),
            "F7E1F5AB5FEB800960775E87810C70E8"
        );
    }

    #[test]
    fn cbc_round_trips_and_refuses_partial_blocks() {
        for (key, tdes) in [
            (vec![7u8; 16], true),
            (vec![7u8; 16], false),
            (vec![9u8; 32], false),
        ] {
            let clear = b"4111111111111111=30121010000000000000000000000000".to_vec();
            let mut data = clear.clone();
            data.truncate(48);
            let want = data.clone();
            encipher_cbc(&key, tdes, &mut data).unwrap();
            assert_ne!(data, want);
            decipher_cbc(&key, tdes, &mut data).unwrap();
            assert_eq!(data, want);
            let mut odd = vec![0u8; 12];
            assert!(encipher_cbc(&key, tdes, &mut odd).is_err());
            assert!(decipher_cbc(&key, tdes, &mut odd).is_err());
        }
    }

    #[test]
    fn the_tdes_data_key_is_the_variant_through_the_one_way_function() {
        let key = tdes_key(1);
        let variant = xor16(&key, &DATA_VARIANT);
        let data = tdes_data_key(&key);
        assert_ne!(data.as_slice(), variant.as_slice());
        let (left, _) = halves(&variant);
        assert_eq!(&data[..8], tdes_encrypt(&variant, left).as_slice());
        let back = tdes_decrypt(&variant, &data[..8].try_into().unwrap());
        assert_eq!(&back, left);
        assert!(tdes_ipek(&[0; 24], &TdesKsn([0; 10])).is_err());
    }
}
