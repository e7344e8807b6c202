//! The read connections of the PostgreSQL backend: a small pool of our own. sqlx's pool
//! pings every connection that comes back to it (a round trip each, on every read, with
//! no setting to turn it off); this one keeps a connection that finished its statements
//! and closes one that did not: a read cancelled mid-statement (its request dropped) or
//! failed may have left a reply unread on the socket. A connection that broke while idle
//! (the server restarted, the primary moved) fails its next statement, which the request
//! answers with `503` and `Retry-After`, and is closed then. A connection idle for
//! longer than [`IDLE_TIMEOUT`] is closed rather than used: after a burst the pool
//! shrinks back to what the load needs (several nodes' peaks held for good could use up
//! the database's connection slots), and after a quiet spell, during which the primary
//! may have moved, a read gets a fresh connection instead of a dead one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dialect::Dialect;
use crate::exec::{Arg, Exec, db_err};
use crate::{StoreError, StoreResult};

/// How long a read waits for a connection (one to be free, or a new one to connect).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may wait unused before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Readers {
    opts: PgConnectOptions,
    /// Idle connections and when each came back, most recently used last.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// [`IDLE_TIMEOUT`], shorter in tests.
    idle_timeout: Duration,
    /// One per connection that may be open; closed when the store closes.
    permits: Arc<Semaphore>,
}

impl Readers {
    pub(crate) fn new(opts: PgConnectOptions, max: u32, idle_timeout: Duration) -> Arc<Self> {
        let max = usize::try_from(max.max(1)).unwrap_or(1);
        Arc::new(Self {
            opts,
            idle: Mutex::new(Vec::with_capacity(max)),
            idle_timeout,
            permits: Arc::new(Semaphore::new(max)),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection that has not idled too long; those that
    /// have (the oldest ones, at the front) are closed.
    fn take_idle(&self) -> Option<PgConnection> {
        let (conn, stale) = {
            let mut idle = self.idle();
            let stale = self.drain_stale(&mut idle, Instant::now());
            (idle.pop().map(|(c, _)| c), stale)
        };
        close_all(stale);
        conn
    }

    /// Takes the connections idle for longer than the timeout out of `idle`.
    fn drain_stale(
        &self,
        idle: &mut Vec<(PgConnection, Instant)>,
        now: Instant,
    ) -> Vec<PgConnection> {
        let fresh = idle.partition_point(|(_, at)| now.duration_since(*at) > self.idle_timeout);
        idle.drain(..fresh).map(|(c, _)| c).collect()
    }

    /// Back from a read that finished its statements.
    fn put_back(&self, conn: PgConnection) {
        let now = Instant::now();
        let stale = {
            let mut idle = self.idle();
            idle.push((conn, now));
            self.drain_stale(&mut idle, now)
        };
        close_all(stale);
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
            let idle = self.take_idle();
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
        let idle = std::mem::take(&mut *self.idle());
        for (c, _) in idle {
            c.close().await.ok();
        }
    }
}

/// Closes idle connections politely (a `Terminate` each) from a task where there is a
/// runtime; without one, dropping them closes their sockets.
fn close_all(conns: Vec<PgConnection>) {
    if conns.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            for c in conns {
                c.close().await.ok();
            }
        });
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
            self.home.put_back(c);
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

    fn readers(max: u32, idle_timeout: Duration) -> Option<Arc<Readers>> {
        if !strongroom_testenv::runs_on(
            strongroom_testenv::Backend::Postgres,
            "postgres::readers::tests",
        ) {
            return None;
        }
        let opts = PgConnectOptions::from_str(&strongroom_testenv::pg_url()).unwrap();
        Some(Readers::new(opts, max, idle_timeout))
    }

    fn backend_pid(row: &PgRow) -> i32 {
        sqlx::Row::get(row, 0)
    }

    /// A connection whose statement finished goes back and is used again; one whose
    /// statement was cut short (its request dropped mid-read) is closed, and the next read
    /// gets a fresh one that works.
    #[tokio::test]
    async fn finished_connections_are_kept_and_cut_ones_closed() {
        let Some(pool) = readers(1, IDLE_TIMEOUT) else {
            return;
        };
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

    /// Connections idle past the timeout are closed: when one comes back (the pool
    /// shrinks after a burst) and when a read finds only stale ones (it gets a new one).
    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed() {
        let Some(pool) = readers(3, Duration::from_millis(300)) else {
            return;
        };
        const PID: &str = "SELECT pg_backend_pid()";
        let mut burst = Vec::new();
        for _ in 0..3 {
            burst.push(pool.acquire().await.unwrap());
        }
        let mut pids = Vec::new();
        for r in &mut burst {
            pids.push(backend_pid(&r.opt(PID, &[]).await.unwrap().unwrap()));
        }
        drop(burst);
        assert_eq!(pool.idle().len(), 3);

        // Quiet for longer than the timeout: the next read gets a new connection, and
        // the stale ones are closed (on the database too).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut r = pool.acquire().await.unwrap();
        assert!(pool.idle().is_empty(), "stale connections kept");
        let fresh = backend_pid(&r.opt(PID, &[]).await.unwrap().unwrap());
        assert!(!pids.contains(&fresh));
        let wide: Vec<i64> = pids.iter().map(|&p| i64::from(p)).collect();
        let mut left = pids.clone();
        for _ in 0..50 {
            let alive: Vec<i32> = r
                .all(
                    "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[Arg::Ints(&wide)],
                )
                .await
                .unwrap()
                .iter()
                .map(backend_pid)
                .collect();
            left = alive;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(left.is_empty(), "still open on the database: {left:?}");

        // A connection coming back closes those that idled past the timeout meanwhile.
        let mut other = pool.acquire().await.unwrap();
        other.opt(PID, &[]).await.unwrap();
        drop(other);
        assert_eq!(pool.idle().len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(r);
        assert_eq!(
            pool.idle().len(),
            1,
            "the stale one was kept beside the fresh one"
        );
        pool.close().await;
    }
}
