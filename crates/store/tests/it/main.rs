//! The store's behaviour, run against the backend `strongroom_testenv` selects
//! (`STRONGROOM_TEST_BACKEND`): SQLite in a temporary directory, or PostgreSQL
//! (`STRONGROOM_TEST_PG_URL`) in a fresh schema per test. A test about one backend only
//! is skipped, visibly and counted, on the other.

// Test helpers are not `#[test]` fns, so clippy's allow-*-in-tests does not reach them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit;
mod cards;
mod controls;
mod keys;
mod misc;
mod pin;
mod relay;
mod tokens;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;
use strongroom_core::{IdKind, new_id};
use strongroom_store::{
    AccountRecord, CardRecord, DataKeyRecord, EventRecord, KeyPurpose, KeyState, Mode, Store,
    StoreConfig, Writes,
};

pub const T0: i64 = 1_700_000_000_000;

pub use strongroom_testenv::{Backend, pg_url, runs_on};

/// A random u64 (std's hasher keys are random per `RandomState`).
pub fn random_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A fresh id of `kind` at `ms`.
pub fn id(kind: IdKind, ms: i64) -> String {
    let mut r = [0u8; 10];
    r[..8].copy_from_slice(&random_u64().to_le_bytes());
    new_id(kind, ms, r)
}

/// Runs `test` against a fresh store of `backend`, then cleans up.
pub async fn with_store<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("nested/dir/vault.db");
            let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
            assert_eq!(store.backend_name(), "sqlite");
            test(store.clone()).await;
            store.close().await;
        }
        Backend::Postgres => {
            let schema = format!("t_{:016x}", random_u64());
            let cfg = StoreConfig {
                url: pg_url(),
                schema: Some(schema.clone()),
                max_connections: 8,
            };
            let store = Store::connect(&cfg).await.unwrap();
            assert_eq!(store.backend_name(), "postgres");
            test(store.clone()).await;
            store.close().await;
            let mut c = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

pub fn sqlite_cfg(path: &std::path::Path) -> StoreConfig {
    StoreConfig {
        url: format!("sqlite://{}", path.display()),
        schema: None,
        max_connections: 4,
    }
}

/// `store_test!(name)`: a test `name::on_backend` running `async fn name(Store)` on a
/// fresh store of the backend under test.
#[macro_export]
macro_rules! store_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_backend() {
                $crate::with_store(strongroom_testenv::backend(), super::$name).await
            }
        }
    };
}

pub fn event(account_id: &str, mode: Mode, event_type: &str, ms: i64) -> EventRecord {
    EventRecord {
        id: id(IdKind::Event, ms),
        account_id: account_id.to_owned(),
        mode,
        event_type: event_type.to_owned(),
        created_ms: ms,
        data: format!("{{\"type\":\"{event_type}\"}}"),
    }
}

pub fn data_key(account_id: &str, purpose: KeyPurpose, version: i64) -> DataKeyRecord {
    DataKeyRecord {
        account_id: account_id.to_owned(),
        purpose,
        version,
        wrapped: vec![version as u8; 40],
        state: KeyState::Active,
        created_ms: T0 + version,
        retired_ms: None,
    }
}

/// Creates an account with version 1 of both data keys; returns its id.
/// The store's writes, carrying no audit scope: these tests are about the store itself
/// (the audit tests make their own scopes and write through `store.audited`).
#[allow(clippy::disallowed_methods)]
pub fn writes(store: &Store) -> Writes<'_> {
    store.unaudited()
}

pub async fn account(store: &Store) -> String {
    let acct = AccountRecord {
        id: id(IdKind::Account, T0),
        name: "Acme".to_owned(),
        otp_delivery_url: None,
        created_ms: T0,
    };
    let keys = [
        data_key(&acct.id, KeyPurpose::Cards, 1),
        data_key(&acct.id, KeyPurpose::Fingerprint, 1),
    ];
    let events = [event(&acct.id, Mode::Live, "account.created", T0)];
    writes(store)
        .create_account(&acct, &keys, &events)
        .await
        .unwrap();
    acct.id
}

/// A card at `ms` with the given fingerprint (fp version 1, key version 1).
pub fn card(account_id: &str, mode: Mode, ms: i64, fingerprint: &[u8]) -> CardRecord {
    CardRecord {
        id: id(IdKind::Card, ms),
        account_id: account_id.to_owned(),
        mode,
        fingerprint: fingerprint.to_vec(),
        fp_version: 1,
        key_version: 1,
        sealed: vec![7; 64],
        brand: "visa".to_owned(),
        bin: "424242".to_owned(),
        last4: "4242".to_owned(),
        exp_month: 12,
        exp_year: 2030,
        created_ms: ms,
    }
}

/// A distinct 32-byte fingerprint.
pub fn fp(n: u64) -> Vec<u8> {
    let mut v = vec![0u8; 32];
    v[..8].copy_from_slice(&n.to_be_bytes());
    v[8..16].copy_from_slice(&random_u64().to_be_bytes());
    v
}
