//! PIN-block work on the path of every PIN operation: format 4 encipher and decipher
//! under an AES-256 PIN key. `cargo bench -p strongroom-crypto --bench pin`

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

criterion_group!(benches, pin_blocks);
criterion_main!(benches);
