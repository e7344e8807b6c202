//! PIN-block work on the path of every PIN operation: format 4 encipher and decipher
//! under an AES-256 PIN key; and the DUKPT derivations of every card-present
//! transaction. `cargo bench -p strongroom-crypto --bench pin`

// Fixed, valid inputs: a failure here is a broken benchmark, not a runtime condition.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strongroom_crypto::pin::{self, Pin, PinKey};

const PAN: &str = "4242424242424242";

fn pin_blocks(c: &mut Criterion) {
    let key = PinKey::from_bytes(&[7u8; 32]).expect("pin key");
    let pin = Pin::new("583920").expect("pin");
    let block = pin::encipher(&key, &pin, PAN).expect("encipher");

    let mut g = c.benchmark_group("pin_block_iso4");
    g.bench_function("encipher/aes256", |b| {
        b.iter(|| pin::encipher(black_box(&key), black_box(&pin), black_box(PAN)).is_ok())
    });
    g.bench_function("decipher/aes256", |b| {
        b.iter(|| pin::decipher(black_box(&key), black_box(&block), black_box(PAN)).is_ok())
    });
    g.bench_function("pan_field", |b| {
        b.iter(|| pin::pan_field(black_box(PAN)).is_ok())
    });
    g.finish();
}

/// A transaction's key from the BDK: the initial key, one derivation per 1 bit of the
/// counter (10 here, a terminal's typical worst), the working key.
fn dukpt(c: &mut Criterion) {
    use strongroom_crypto::components::KeyAlgorithm;
    use strongroom_crypto::dukpt::{self, AesKsn, TdesKsn, Usage};
    let bdk = [0x5Au8; 16];
    let ksn = AesKsn {
        initial_key_id: [1, 2, 3, 4, 5, 6, 7, 8],
        counter: 0x3FF,
    };
    let tdes = TdesKsn([0xFF, 0xFF, 0x98, 0x76, 0x54, 0x32, 0x10, 0xE0, 0x03, 0xFF]);
    let mut g = c.benchmark_group("dukpt");
    g.bench_function("aes128/data_key/10_bits", |b| {
        b.iter(|| {
            dukpt::aes_working_key(
                black_box(&bdk),
                KeyAlgorithm::Aes128,
                black_box(&ksn),
                Usage::DataEncrypt,
                KeyAlgorithm::Aes128,
            )
            .is_ok()
        })
    });
    g.bench_function("tdes/data_key/10_bits", |b| {
        b.iter(|| {
            let ipek = dukpt::tdes_ipek(black_box(&bdk), black_box(&tdes)).expect("ipek");
            dukpt::tdes_data_key(&dukpt::tdes_transaction_key(&ipek, &tdes))
        })
    });
    g.finish();
}

criterion_group!(benches, pin_blocks, dukpt);
criterion_main!(benches);
