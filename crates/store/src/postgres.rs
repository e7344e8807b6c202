//! The scale-out backend: PostgreSQL through a connection pool. Reads take any pooled
//! connection; writes go through one writer task per node, on a connection of its own
//! besides the pool, that group-commits whatever is queued in one transaction (see [`crate::group`]), as on SQLite. Races between
//! nodes are settled by the database: a unique index for card dedup, conditional
//! updates for one-time passwords, the primary key for data key versions.
//!
//! Every write transaction takes the audit chain's head row lock first. Audited writes
//! need it anyway (the chain is one sequence across nodes), and taking it before
//! anything else gives every node the same lock order: a batch can never hold a card's
//! unique-index entry while waiting for the head that another node's batch holds while
//! waiting for that entry.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

use tokio::sync::{mpsc, watch};

use crate::exec::db_err;

mod card_reads;
mod readers;
use crate::group::{self, Msg};
use crate::sql::{WriteOp, WriteReply};
use crate::{StoreError, StoreResult};
use card_reads::CardReads;
pub(crate) use readers::PgReader;
use readers::Readers;

/// The migrations. sqlx stores a checksum of each applied file and refuses to start when
/// a file it applied has changed, so a committed migration is never edited, comments
/// included: the headers of 0002 to 0007 still name the work items that added them (what
/// each table is for is in ARCHITECTURE.md and the docs of its feature).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL backend. Cheap to clone: a pool handle.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// The read connections.
    readers: Arc<Readers>,
    /// Card reads by id, coalesced ([`card_reads`]).
    card_reads: CardReads,
    /// For the migrations and the change watcher's `LISTEN` connection.
    pool: PgPool,
    writer: mpsc::Sender<Msg>,
    /// Set on [`PgStore::close`]: stops the change watcher.
    closed: Arc<watch::Sender<bool>>,
}

/// What the change watcher reports ([`PgStore::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// Listening (again): what was cached before may be stale; caching may resume.
    Listening,
    /// A change to a cached table committed (on any node).
    Changed,
    /// The listening connection is gone: changes may go unheard until `Listening`.
    Lost,
}

/// The channel the `0007_cache_notify` triggers notify.
const CACHE_CHANNEL: &str = "strongroom_cache";

/// The writer's connection: its own, outside the pool, opened on the first write and
/// kept between batches. sqlx's pool pings a connection when it is handed out and again
/// when it comes back, two round trips per batch for nothing on a connection that is in
/// use all the time. A batch that fails as a whole (the connection broke, the primary
/// went away) drops the connection; the next batch connects again, to whatever the URL
/// names then.
struct PgWriter {
    opts: PgConnectOptions,
    conn: Option<PgConnection>,
}

impl group::WriterConn for PgWriter {
    type C = PgConnection;
    async fn get(&mut self) -> StoreResult<&mut PgConnection> {
        if self.conn.is_none() {
            // Boxed as in [`PgStore::reader`]: keeps the writer task's future small.
            let c = Box::pin(PgConnection::connect_with(&self.opts))
                .await
                .map_err(db_err)?;
            self.conn = Some(c);
        }
        self.conn.as_mut().ok_or_else(group::closed)
    }
    fn failed(&mut self) {
        self.conn = None;
    }
    fn dialect(&self) -> &'static dyn crate::dialect::Dialect {
        &crate::exec::Postgres
    }
    async fn close(self) {
        if let Some(c) = self.conn {
            // An error only means the server has gone already.
            c.close().await.ok();
        }
    }
}

/// A schema name we are willing to put into SQL: an unquoted identifier of ASCII
/// letters, digits and underscores, not starting with a digit (PostgreSQL folds it to
/// lower case, consistently in `CREATE SCHEMA` and in `search_path`).
pub(crate) fn valid_schema(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 63
}

/// How long the writer waits for a row lock (`lock_timeout`) unless the URL sets one
/// (`options=-c lock_timeout=…`). Every write transaction takes the audit chain's head row
/// first; a session that holds it and neither commits nor dies (a node killed behind a
/// proxy that keeps its connection open, a transaction left open by hand) would otherwise
/// stall every node's writes until the database lets the lock go, each request ending in
/// the request timeout's `408` with the write's fate unknown. With a bound, the batch
/// fails, nothing of it is written, and its requests get `503` with `Retry-After`.
/// Waits behind other nodes' commits last milliseconds. Only lock waits are bounded: a
/// `COMMIT` waiting for a synchronous standby is left alone, since cancelling that wait
/// would report a commit that reached only one copy.
pub(crate) const WRITER_LOCK_TIMEOUT: &str = "5s";

/// The writer's connection options: `opts` with [`WRITER_LOCK_TIMEOUT`], unless they set a
/// `lock_timeout` of their own.
pub(crate) fn writer_options(opts: PgConnectOptions) -> PgConnectOptions {
    if opts
        .get_options()
        .is_some_and(|o| o.contains("lock_timeout"))
    {
        opts
    } else {
        opts.options([("lock_timeout", WRITER_LOCK_TIMEOUT)])
    }
}

impl PgStore {
    /// Connects, creates `schema` if given (and uses it as every connection's
    /// `search_path`), and runs the migrations.
    pub async fn open(url: &str, schema: Option<&str>, max_connections: u32) -> StoreResult<Self> {
        // The URL may hold a password: never echo it.
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Unavailable("invalid PostgreSQL URL".into()))?;
        if let Some(schema) = schema {
            if !valid_schema(schema) {
                return Err(StoreError::Unavailable("invalid schema name".into()));
            }
            let mut conn = PgConnection::connect_with(&opts).await.map_err(db_err)?;
            // Safe: `valid_schema` admits only an unquoted identifier.
            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            sqlx::raw_sql(AssertSqlSafe(create))
                .execute(&mut conn)
                .await
                .map_err(db_err)?;
            conn.close().await.map_err(db_err)?;
            opts = opts.options([("search_path", schema)]);
        }
        // The listener holds one connection for good; the migrations and the listener's
        // schema query take the other at times.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts.clone())
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let (tx, rx) = mpsc::channel(group::QUEUE);
        let readers = Readers::new(opts.clone(), max_connections, readers::IDLE_TIMEOUT);
        let card_reads = CardReads::start(Arc::clone(&readers));
        let conn = PgWriter {
            opts: writer_options(opts),
            conn: None,
        };
        // The writer gets a thread (and a runtime) of its own, as on SQLite: each of its
        // round trips wakes it, and on the server's busy runtime every wake-up waited
        // behind the request tasks queued there, which stretched each batch's four round
        // trips and so every write's wait. Its connection is opened there too.
        group::spawn_thread("pg-writer", group::writer(conn, rx))?;
        Ok(Self {
            readers,
            card_reads,
            pool,
            writer: tx,
            closed: Arc::new(watch::channel(false).0),
        })
    }

    /// Listens for committed changes to the tables nodes cache (API keys, controls,
    /// data keys, JWT keys) and reports them to `on`, from a task of its own, until the
    /// store closes (or the returned task is aborted). The first report is `Listening` once `LISTEN` is in place; a lost
    /// connection reports `Lost` and is retried (backing off up to 5 s).
    pub fn watch(
        &self,
        on: impl Fn(CacheEvent) + Send + Sync + 'static,
    ) -> tokio::task::AbortHandle {
        let pool = self.pool.clone();
        let mut closed = self.closed.subscribe();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                tokio::select! {
                    () = listen(&pool, &on, &mut backoff) => {}
                    _ = closed.wait_for(|c| *c) => return,
                }
                on(CacheEvent::Lost);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = closed.wait_for(|c| *c) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        task.abort_handle()
    }

    /// A read connection ([`readers`]).
    ///
    /// Boxed: connecting is a large future, kept out of every future that reads the store,
    /// SQLite's included (they are sized for either backend), and so out of every request
    /// future the server moves into a box on each request.
    pub(crate) async fn reader(&self) -> StoreResult<PgReader> {
        Box::pin(self.readers.acquire()).await
    }

    /// The card `id` of `account_id` in `mode`: a read coalesced with the others queued
    /// at the time ([`card_reads`]).
    pub(crate) async fn get_card(
        &self,
        account_id: &str,
        mode: strongroom_core::Mode,
        id: &str,
    ) -> StoreResult<Option<crate::model::CardRecord>> {
        self.card_reads.get(account_id, mode, id).await
    }

    /// Queues a write and waits until its group commit is durable.
    pub(crate) async fn write(&self, op: WriteOp) -> StoreResult<WriteReply> {
        group::write(&self.writer, op).await
    }

    /// Finishes the queued writes, stops the writer and closes the pool.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        group::stop(&self.writer).await;
        self.readers.close().await;
        self.pool.close().await;
    }
}

/// One listening session: returns when the connection fails or is lost.
async fn listen(pool: &PgPool, on: &impl Fn(CacheEvent), backoff: &mut Duration) {
    // Notifications carry the schema of the changed table; ours is the pool's.
    let schema: Result<String, _> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await;
    let Ok(schema) = schema else { return };
    let Ok(mut listener) = PgListener::connect_with(pool).await else {
        return;
    };
    if let Err(e) = listener.listen(CACHE_CHANNEL).await {
        tracing::warn!(error = %db_err(e), "cannot listen for cache invalidations");
        return;
    }
    *backoff = Duration::from_millis(100);
    on(CacheEvent::Listening);
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.payload() == schema => on(CacheEvent::Changed),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                tracing::warn!("lost the cache invalidation connection; reading through");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn the_postgres_writer_bounds_lock_waits_unless_the_url_does() {
        let opts = |url: &str| PgConnectOptions::from_str(url).unwrap();
        let plain = writer_options(opts("postgres://u@127.0.0.1/db"));
        assert_eq!(
            plain.get_options(),
            Some(format!("-c lock_timeout={WRITER_LOCK_TIMEOUT}").as_str())
        );
        let own = writer_options(opts(
            "postgres://u@127.0.0.1/db?options=-c%20lock_timeout%3D250ms",
        ));
        assert_eq!(own.get_options(), Some("-c lock_timeout=250ms"));
    }

    #[test]
    fn schema_names_are_validated() {
        assert!(valid_schema("t_0123abcd"));
        assert!(valid_schema("Tenant_1"));
        for bad in ["", "1abc", "a-b", "a;b", "a b", "\"x\"", &"a".repeat(64)] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
