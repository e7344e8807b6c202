//! Which database the test suites run on, read in one place by the store's, the server's
//! and the CLI's tests.
//!
//! - `STRONGROOM_TEST_BACKEND`: `sqlite` (the default) or `postgres`. Anything else fails
//!   the test that asks, so a typo never quietly runs the other backend.
//! - `STRONGROOM_TEST_PG_URL`: the PostgreSQL server (default
//!   `postgres://postgres@127.0.0.1:5432/test`); each test makes its own schema there.
//!
//! A test that cannot run on the selected backend (several nodes sharing one database need
//! PostgreSQL; a SQLite file-format test needs SQLite) calls [`runs_on`] and returns when
//! it answers false. Rust's test harness has no way to mark a test skipped at run time, so
//! the skip is made visible and countable instead: a `SKIPPED` line goes to the real
//! standard error (past the harness's output capture), and, with
//! `STRONGROOM_TEST_SKIP_LOG` set to a file, a line is appended there, which
//! `scripts/test` counts and lists at the end of the run.

use std::io::Write as _;

/// The variable that selects the backend.
pub const BACKEND_VAR: &str = "STRONGROOM_TEST_BACKEND";
/// The variable that gives the PostgreSQL URL.
pub const PG_URL_VAR: &str = "STRONGROOM_TEST_PG_URL";
/// The variable naming the file that skips are appended to.
pub const SKIP_LOG_VAR: &str = "STRONGROOM_TEST_SKIP_LOG";
/// The PostgreSQL URL when [`PG_URL_VAR`] is unset.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database backend of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded file.
    Sqlite,
    /// A PostgreSQL server at [`pg_url`].
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`, as [`BACKEND_VAR`] spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The backend this run tests, from [`BACKEND_VAR`].
///
/// # Panics
/// On a value other than `sqlite` or `postgres`.
pub fn backend() -> Backend {
    match std::env::var(BACKEND_VAR).as_deref() {
        Err(_) | Ok("" | "sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        #[allow(clippy::panic)]
        Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected sqlite or postgres"),
    }
}

/// The PostgreSQL server to test against, from [`PG_URL_VAR`].
pub fn pg_url() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// Whether the test `name` runs in this run: true when it needs `needs` and that is the
/// backend under test. Otherwise the skip is reported (see the module documentation) and
/// the test should return at once.
pub fn runs_on(needs: Backend, name: &str) -> bool {
    let on = backend();
    if on == needs {
        return true;
    }
    let line = format!(
        "SKIPPED {name}: needs {}, this run tests {} ({BACKEND_VAR})\n",
        needs.as_str(),
        on.as_str()
    );
    // Straight to the process's standard error: the harness captures only `eprint!`.
    std::io::stderr().write_all(line.as_bytes()).ok();
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        // One `write` of one short line on an append-only file: lines from tests running
        // in parallel do not interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .ok();
    }
    false
}
