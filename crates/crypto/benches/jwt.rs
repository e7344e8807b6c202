//! JWT verification on the request path: a bearer token's signature, algorithm, issuer,
//! audience and times, for EdDSA and RS256, and signing for comparison.
//! `cargo bench -p strongroom-crypto --bench jwt`

// Fixed, valid inputs: a failure here is a broken benchmark, not a runtime condition.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strongroom_crypto::jwt::{Claims, Expectations, JwtAlg, JwtPrivateKey, JwtVerifier};

fn claims() -> Claims {
    Claims {
        iss: "strongroom".into(),
        aud: "strongroom-api".into(),
        sub: "key_0123456789abcdefghijklmn".into(),
        acct: "acct_0123456789abcdefghijklmn".into(),
        mode: "test".into(),
        scope: "cards:write cards:read cards:delete".into(),
        iat: 1_000_000,
        nbf: 1_000_000,
        exp: 1_003_600,
        jti: "tok_0123456789abcdefghijklmn".into(),
    }
}

fn jwt(c: &mut Criterion) {
    let expect = Expectations {
        issuer: "strongroom".into(),
        audience: "strongroom-api".into(),
        leeway_s: 5,
    };
    for alg in [JwtAlg::EdDsa, JwtAlg::Rs256] {
        let key = JwtPrivateKey::generate(alg).expect("key");
        let signer = key.signer("kid").expect("signer");
        let mut verifier = JwtVerifier::new();
        verifier
            .add_jwk(&key.public_jwk("kid").expect("jwk"))
            .expect("add");
        let token = signer.sign(&claims()).expect("sign");
        verifier
            .verify(&token, &expect, 1_000_010)
            .expect("a valid token");
        c.bench_function(&format!("jwt_verify_{}", alg.as_str()), |b| {
            b.iter(|| verifier.verify(black_box(&token), &expect, 1_000_010))
        });
        c.bench_function(&format!("jwt_sign_{}", alg.as_str()), |b| {
            b.iter(|| signer.sign(black_box(&claims())))
        });
    }
    c.bench_function("jwt_token_digest", |b| {
        let token = "x".repeat(400);
        b.iter(|| strongroom_crypto::jwt::token_digest(black_box(&token)))
    });
}

criterion_group!(benches, jwt);
criterion_main!(benches);
