//! The small seam between the shared SQL and the two drivers: bind values, run a
//! statement on a connection, read columns of a row. The SQL and the operations in
//! [`crate::sql`] are written once against these traits; each backend only says how to
//! reach a connection.

use std::future::Future;

use sqlx::error::ErrorKind;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::dialect::Dialect;
use crate::{StoreError, StoreResult};

/// One bind value. Every SQL text numbers its parameters `$1, $2 …`; both drivers bind
/// them by number (SQLite treats `$N` as a named parameter and sqlx maps it to N).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
    /// Arrays, for PostgreSQL's `UNNEST` (one statement for many rows); SQLite refuses them.
    Texts(&'a [&'a str]),
    Ints(&'a [i64]),
    Blobs(&'a [&'a [u8]]),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::OptText(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Self::Blob(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Self::OptBlob(v)
    }
}

/// `args![a, b, c]`: a slice of [`Arg`]s.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::exec::Arg::from($v)),*]
    };
}
pub(crate) use args;

/// Runs one SQL text with its arguments on a connection (or transaction).
/// Statements are prepared once per connection and cached (`persistent`).
pub(crate) trait Exec: Send {
    /// The driver's row.
    type Row: RowGet + Send;

    /// What this connection's database does differently.
    fn dialect(&self) -> &'static dyn Dialect;

    /// Executes; returns the number of rows affected.
    fn exec(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Every row.
    fn all(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send;

    /// The first row, if any.
    fn opt(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send;

    /// Opens a group commit's transaction ([`Dialect::begin`]). Returns the audit chain's
    /// head row `(seq, hash)` where opening locked and read it ([`crate::audit::append`]
    /// then need not). A failure leaves no transaction open.
    fn begin(&mut self) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send {
        async move { self.exec(self.dialect().begin(), &[]).await.map(|_| None) }
    }
}

/// PostgreSQL: a group commit's transaction opens, locks the audit chain's head (first,
/// so that every node takes its locks in the same order) and reads it, in one round trip:
/// a simple query may hold several statements, where each parameterised one is a round
/// trip of its own.
const PG_BEGIN: &str = "BEGIN; UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash";

/// PostgreSQL's connection (SQLite's is [`crate::sqlite::SyncConn`]).
impl Exec for sqlx::PgConnection {
    type Row = sqlx::postgres::PgRow;

    fn dialect(&self) -> &'static dyn Dialect {
        &Postgres
    }

    async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<u64> {
        pg_query(sql, args)
            .execute(&mut *self)
            .await
            .map(|r| r.rows_affected())
            .map_err(db_err)
    }

    async fn all(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Vec<Self::Row>> {
        pg_query(sql, args)
            .fetch_all(&mut *self)
            .await
            .map_err(db_err)
    }

    async fn opt(&mut self, sql: &'static str, args: &[Arg<'_>]) -> StoreResult<Option<Self::Row>> {
        pg_query(sql, args)
            .fetch_optional(&mut *self)
            .await
            .map_err(db_err)
    }

    async fn begin(&mut self) -> StoreResult<Option<Self::Row>> {
        let begin = self.dialect().begin();
        let row = match sqlx::raw_sql(begin).fetch_optional(&mut *self).await {
            Ok(Some(row)) => Ok(row),
            Ok(None) => Err(StoreError::Corrupt("audit head missing".into())),
            Err(e) => Err(db_err(e)),
        };
        if row.is_err() {
            // Whatever part of the query ran: no transaction stays open.
            sqlx::raw_sql("ROLLBACK").execute(&mut *self).await.ok();
        }
        row.map(Some)
    }
}

/// A PostgreSQL statement with its arguments bound in order.
fn pg_query<'q>(
    sql: &'static str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, <sqlx::Postgres as sqlx::Database>::Arguments> {
    let mut q = sqlx::query::<sqlx::Postgres>(sql);
    for a in args {
        q = match *a {
            Arg::Text(v) => q.bind(v),
            Arg::OptText(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::OptInt(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
            Arg::OptBlob(v) => q.bind(v),
            Arg::Texts(v) => q.bind(v),
            Arg::Ints(v) => q.bind(v),
            Arg::Blobs(v) => q.bind(v),
        };
    }
    q
}

/// Reads typed columns of a row by position; a wrong type or NULL is [`StoreError::Corrupt`].
pub(crate) trait RowGet {
    fn text(&self, i: usize) -> StoreResult<String>;
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>>;
    fn int(&self, i: usize) -> StoreResult<i64>;
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>>;
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>>;
    fn opt_blob(&self, i: usize) -> StoreResult<Option<Vec<u8>>>;
}

impl<R> RowGet for R
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, i: usize) -> StoreResult<String> {
        get(self, i)
    }
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>> {
        get(self, i)
    }
    fn int(&self, i: usize) -> StoreResult<i64> {
        get(self, i)
    }
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>> {
        get(self, i)
    }
    fn blob(&self, i: usize) -> StoreResult<Vec<u8>> {
        get(self, i)
    }
    fn opt_blob(&self, i: usize) -> StoreResult<Option<Vec<u8>>> {
        get(self, i)
    }
}

fn get<'r, R, T>(row: &'r R, i: usize) -> StoreResult<T>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get::<T, usize>(i).map_err(|e| {
        StoreError::Corrupt(format!(
            "column {i}: {}",
            match e {
                sqlx::Error::ColumnDecode { .. } => "cannot decode",
                sqlx::Error::ColumnIndexOutOfBounds { .. } => "missing",
                _ => "unreadable",
            }
        ))
    })
}

/// Maps a driver error to a [`StoreError`]. Only the database's own message goes into
/// the detail (never bound values; PostgreSQL's `detail()` can quote them, so it is not
/// used).
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) => match d.kind() {
            ErrorKind::UniqueViolation => StoreError::Conflict("already exists"),
            ErrorKind::ForeignKeyViolation => StoreError::Conflict("refers to a missing row"),
            ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                StoreError::Conflict("violates a table constraint")
            }
            _ => StoreError::Unavailable(format!("database error: {}", d.message())),
        },
        sqlx::Error::ColumnDecode { index, .. } => {
            StoreError::Corrupt(format!("column {index}: cannot decode"))
        }
        sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
        sqlx::Error::PoolTimedOut => StoreError::Unavailable("pool timed out".into()),
        sqlx::Error::PoolClosed => StoreError::Unavailable("pool closed".into()),
        sqlx::Error::Io(io) => StoreError::Unavailable(format!("i/o: {}", io.kind())),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// PostgreSQL, over the network through sqlx.
pub(crate) struct Postgres;

impl Dialect for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn begin(&self) -> &'static str {
        PG_BEGIN
    }
    fn fingerprint_lookup(&self) -> bool {
        false
    }
    fn row_id_from_id(&self) -> bool {
        false
    }
    fn bulk_insert(&self) -> bool {
        true
    }
}
