//! The crypto on the hot path of tokenize and read: AES-256-GCM seal/open of a card
//! record, its HMAC fingerprint, and the keyed digest of an API key.
//! `cargo bench -p strongroom-crypto --bench envelope`

// Fixed, valid inputs: a failure here is a broken benchmark, not a runtime condition.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strongroom_crypto::{DataKey, RootKey, SealingKey};

/// 40 bytes: about what a sealed card record holds (PAN, expiry, name).
const PLAINTEXT: &[u8; 40] = b"4242424242424242|12|2030|Ada Lovelace...";
/// 60 bytes of AAD: account, record id, purpose and key version.
const AAD: &[u8; 60] = b"acct_0123456789abcdefghijklmn|card_0123456789abcdefghij|v1|x";

/// 400 bytes: about a stored idempotent response (a card view).
const RESPONSE: &[u8; 400] = &[b'x'; 400];
/// The idempotency AAD: scope and client key.
const IDEM_AAD: &[u8] =
    b"idempotency\0acct_0123456789abcdefghijklmn|test|key_0123456789abcdef\0order-1234";
/// A data key's wrap context.
const WRAP_CONTEXT: &str = "strongroom/datakey/v1|acct_0123456789abcdefghijklmn|cards|1";

fn envelope(c: &mut Criterion) {
    let key = DataKey::from_bytes(&[7u8; 32]).expect("data key");
    let root = RootKey::from_bytes(&[9u8; 32]).expect("root key");
    let sealed = key.seal(PLAINTEXT, AAD).expect("seal");

    let mut g = c.benchmark_group("data_key");
    g.throughput(Throughput::Bytes(PLAINTEXT.len() as u64));
    g.bench_function("seal/40B_aad60B", |b| {
        b.iter(|| key.seal(black_box(PLAINTEXT), black_box(AAD)).is_ok())
    });
    g.bench_function("open/40B_aad60B", |b| {
        b.iter(|| key.open(black_box(&sealed), black_box(AAD)).is_ok())
    });
    g.bench_function("fingerprint/16_digits", |b| {
        b.iter(|| key.fingerprint(black_box(b"4242424242424242")))
    });
    g.finish();

    // The idempotent path: one seal of a stored response (about a card view) per request,
    // and the open a retry pays; and the root key wrapping a data key.
    let idem = SealingKey::from_bytes(&[5u8; 32]).expect("idempotency key");
    let sealed_response = idem.seal(RESPONSE, IDEM_AAD).expect("seal");
    let mut g = c.benchmark_group("idempotency");
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("seal/400B", |b| {
        b.iter(|| idem.seal(black_box(RESPONSE), black_box(IDEM_AAD)).is_ok())
    });
    g.bench_function("open/400B", |b| {
        b.iter(|| {
            idem.open(black_box(&sealed_response), black_box(IDEM_AAD))
                .is_ok()
        })
    });
    g.finish();
    let wrapped = root.wrap(&key, WRAP_CONTEXT).expect("wrap");
    c.bench_function("root_key/wrap/data_key", |b| {
        b.iter(|| root.wrap(black_box(&key), black_box(WRAP_CONTEXT)).is_ok())
    });
    c.bench_function("root_key/unwrap/data_key", |b| {
        b.iter(|| {
            root.unwrap_key(black_box(&wrapped), black_box(WRAP_CONTEXT))
                .is_ok()
        })
    });

    c.bench_function("root_key/digest/api_key", |b| {
        b.iter(|| {
            root.digest(
                black_box("api_key"),
                black_box(b"sk_test_0123456789abcdefghijklmnopqrstuv"),
            )
        })
    });
}

criterion_group!(benches, envelope);
criterion_main!(benches);
