//! The cli crate's one integration-test binary: runs the real `strongroom` binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod audit_cli;
mod bench;
mod config;
mod dev_audit;
mod webhooks;
