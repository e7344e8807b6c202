//! PAN parsing and the Luhn check: run on every card a client sends.
//! `cargo bench -p strongroom-core --bench pan`

// A wrong input would silently benchmark an error path: check them first.
#![allow(clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strongroom_core::Pan;
use strongroom_core::pan::luhn_valid;

fn pan(c: &mut Criterion) {
    for valid in [
        "4242424242424242",
        "4242 4242 4242 4242",
        "6212345678901234569",
    ] {
        assert!(Pan::parse(valid).is_ok(), "bench input must parse");
    }
    let mut g = c.benchmark_group("pan");
    g.bench_function("parse/16_digits", |b| {
        b.iter(|| Pan::parse(black_box("4242424242424242")).is_ok())
    });
    g.bench_function("parse/spaced", |b| {
        b.iter(|| Pan::parse(black_box("4242 4242 4242 4242")).is_ok())
    });
    g.bench_function("parse/19_digits_unionpay", |b| {
        b.iter(|| Pan::parse(black_box("6212345678901234569")).is_ok())
    });
    g.bench_function("parse/luhn_failure", |b| {
        b.iter(|| Pan::parse(black_box("4242424242424241")).is_err())
    });
    g.bench_function("luhn_valid/16_digits", |b| {
        b.iter(|| luhn_valid(black_box(b"4242424242424242")))
    });
    g.finish();
}

criterion_group!(benches, pan);
criterion_main!(benches);
