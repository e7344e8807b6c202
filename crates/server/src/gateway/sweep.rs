//! When to sweep expired nonces and idempotency records.

/// True about once in 64 calls.
pub(crate) fn sweep_now() -> bool {
    strongroom_crypto::random::bytes::<1>().is_ok_and(|[b]| b < 4)
}
