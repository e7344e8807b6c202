//! The server's one integration-test binary. Every test boots the real app on
//! 127.0.0.1:0 with TLS and talks to it over HTTPS.
//!
//! Backend: `STRONGROOM_TEST_BACKEND=sqlite` (default) or `postgres`
//! (`STRONGROOM_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`; each
//! server gets its own schema).

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod admin;
mod audit;
mod bad_input;
mod browser;
mod canary;
mod cards;
mod client_sessions;
mod contract;
mod controls;
mod custody;
mod cvc;
mod echo;
mod harness;
mod inbound_routes;
mod integrity;
mod key_imports;
mod leaks;
mod metrics;
mod pin;
mod relay;
mod relay_send;
mod risk;
mod risk_data;
mod risk_lists;
mod risk_signals;
mod root_rotation;
mod rotation;
mod security;
mod suspensions;
mod terminals;
mod tls;
mod tokens;
mod webhooks;
