//! The scale-out backend: PostgreSQL through a connection pool, each write in its own
//! transaction. Races between nodes are settled by the database: a unique index for
//! card dedup, conditional updates for one-time passwords, the primary key for data
//! key versions.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::{AssertSqlSafe, Connection};

use crate::exec::{db_err, impl_exec};
use crate::sql::{self, WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

impl_exec!(PgConnection, Postgres);

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL backend. Cheap to clone: a pool handle.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(Self { pool })
    }

    /// A connection from the pool.
    pub(crate) async fn reader(&self) -> StoreResult<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(db_err)
    }

    /// Applies a write in its own transaction.
    pub(crate) async fn write(&self, op: WriteOp) -> StoreResult<WriteReply> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        match sql::apply(&mut *tx, &op).await {
            Ok(reply) => {
                tx.commit().await.map_err(db_err)?;
                Ok(reply)
            }
            Err(e) => {
                // Dropping would roll back too; doing it here returns the connection clean.
                tx.rollback().await.ok();
                Err(e)
            }
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
