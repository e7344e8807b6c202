//! The read connections of the PostgreSQL backend: a small pool of our own. sqlx's pool
//! pings every connection that comes back to it (a round trip each, on every read, with
//! no setting to turn it off); this one keeps a connection that finished its statements
//! and closes one that did not: a read cancelled mid-statement (its request dropped) or
//! failed may have left a reply unread on the socket. A connection that broke while idle
//! (the server restarted, the primary moved) fails its next statement, which the request
//! answers with `503` and `Retry-After`, and is closed then.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dialect::Dialect;
use crate::exec::{Arg, Exec, db_err};
use crate::{StoreError, StoreResult};

/// How long a read waits for a connection (one to be free, or a new one to connect).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Readers {
    opts: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    /// One per connection that may be open; closed when the store closes.
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(opts: PgConnectOptions, max: u32) -> Arc<Self> {
        let max = usize::try_from(max.max(1)).unwrap_or(1);
        Arc::new(Self {
            opts,
            idle: Mutex::new(Vec::with_capacity(max)),
            permits: Arc::new(Semaphore::new(max)),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PgConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: an idle one, or a new one while fewer than the maximum are open.
    pub(crate) async fn acquire(self: &Arc<Self>) -> StoreResult<PgReader> {
        let timeout = || StoreError::Unavailable("pool timed out".into());
        let closed = || StoreError::Unavailable("pool closed".into());
        let get = async {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| closed())?;
            let idle = self.idle().pop();
            let conn = match idle {
                Some(c) => c,
                None => PgConnection::connect_with(&self.opts)
                    .await
                    .map_err(db_err)?,
            };
            Ok::<_, StoreError>((conn, permit))
        };
        let (conn, permit) = tokio::time::timeout(ACQUIRE_TIMEOUT, Box::pin(get))
            .await
            .map_err(|_| timeout())??;
        if self.permits.is_closed() {
            return Err(closed());
        }
        Ok(PgReader {
            conn: Some(conn),
            clean: true,
            home: Arc::clone(self),
            _permit: permit,
        })
    }

    /// Refuses new reads and closes the idle connections (those in use close when
    /// they come back).
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle: Vec<PgConnection> = std::mem::take(&mut *self.idle());
        for c in idle {
            c.close().await.ok();
        }
    }
}

/// A read connection, back to its pool when dropped if its last statement finished.
#[derive(Debug)]
pub(crate) struct PgReader {
    conn: Option<PgConnection>,
    /// False from the start of a statement until it succeeds.
    clean: bool,
    home: Arc<Readers>,
    _permit: OwnedSemaphorePermit,
}

impl PgReader {
    /// The connection, for a statement about to run: not clean until it finishes.
    fn start(&mut self) -> StoreResult<&mut PgConnection> {
        self.clean = false;
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("pool closed".into()))
    }

    fn finished<T>(&mut self, r: StoreResult<T>) -> StoreResult<T> {
        self.clean = r.is_ok();
        r
    }
}

impl Drop for PgReader {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && self.clean
            && !self.home.permits.is_closed()
        {
            self.home.idle().push(c);
        }
        // Otherwise the connection drops here, which closes its socket.
    }
}

impl Exec for PgReader {
    type Row = PgRow;

    fn dialect(&self) -> &'static dyn Dialect {
        &crate::exec::Postgres
    }

    async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        let r = self.start()?.exec(sql, args).await;
        self.finished(r)
    }

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Vec<PgRow>> {
        let r = self.start()?.all(sql, args).await;
        self.finished(r)
    }

    async fn opt(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Option<PgRow>> {
        let r = self.start()?.opt(sql, args).await;
        self.finished(r)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn readers(max: u32) -> Option<Arc<Readers>> {
        if !strongroom_testenv::runs_on(
            strongroom_testenv::Backend::Postgres,
            "postgres::readers::tests",
        ) {
            return None;
        }
        let opts = PgConnectOptions::from_str(&strongroom_testenv::pg_url()).unwrap();
        Some(Readers::new(opts, max))
    }

    fn backend_pid(row: &PgRow) -> i32 {
        sqlx::Row::get(row, 0)
    }

    /// A connection whose statement finished goes back and is used again; one whose
    /// statement was cut short (its request dropped mid-read) is closed, and the next read
    /// gets a fresh one that works.
    #[tokio::test]
    async fn finished_connections_are_kept_and_cut_ones_closed() {
        let Some(pool) = readers(1) else { return };
        const PID: &str = "SELECT pg_backend_pid()";
        let mut r = pool.acquire().await.unwrap();
        let first = backend_pid(&r.opt(PID, &[]).await.unwrap().unwrap());
        drop(r);
        assert_eq!(pool.idle().len(), 1);
        let mut r = pool.acquire().await.unwrap();
        assert_eq!(backend_pid(&r.opt(PID, &[]).await.unwrap().unwrap()), first);

        let cut = tokio::time::timeout(
            Duration::from_millis(200),
            r.exec("SELECT pg_sleep(5)", &[]),
        )
        .await;
        assert!(cut.is_err(), "the sleep was cut short");
        drop(r);
        assert!(pool.idle().is_empty(), "a cut connection is not kept");
        let mut r = pool.acquire().await.unwrap();
        let next = backend_pid(&r.opt(PID, &[]).await.unwrap().unwrap());
        assert_ne!(next, first);
        drop(r);

        pool.close().await;
        assert!(pool.acquire().await.is_err());
    }
}
