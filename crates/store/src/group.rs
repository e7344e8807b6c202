//! Group commit, shared by both backends: one writer task per store takes every queued
//! write and applies the lot in one transaction, so one commit (one fsync on SQLite,
//! one WAL flush on PostgreSQL) acknowledges the whole batch. A failing write rolls back
//! only itself: the batch is re-run with a savepoint around each write. Replies are sent
//! after `COMMIT` returns, so an acknowledged write is durable.

use tokio::sync::{mpsc, oneshot};

use crate::audit::{Head, head_of};
use crate::dialect::Dialect;
use crate::exec::Exec;
use crate::sql::{self, Batch, WriteOp, WriteReply};
use crate::{StoreError, StoreResult};

/// Most writes in one group commit.
pub(crate) const MAX_BATCH: usize = 256;
/// Writes waiting for the writer before senders wait too (back-pressure).
pub(crate) const QUEUE: usize = 4096;

const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
const SAVEPOINT: &str = "SAVEPOINT op";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT op";
const RELEASE: &str = "RELEASE SAVEPOINT op";

/// The answer to a write, and the write itself: sent back so that its strings and buffers
/// are freed on the thread that allocated them. Freed on the writer, every one of them was a
/// cross-thread free, which the allocator must hand back to the owning thread's heap (an
/// atomic push there, a collection pass and cold cache lines here).
pub(crate) type Reply = oneshot::Sender<(StoreResult<WriteReply>, WriteOp)>;

/// What a store sends its writer.
// Moved once into the channel; boxing would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Write(WriteOp, Reply),
    Close(oneshot::Sender<()>),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Write(..) => "Write",
            Self::Close(_) => "Close",
        })
    }
}

pub(crate) fn closed() -> StoreError {
    StoreError::Unavailable("store closed".into())
}

/// Queues a write on a writer and waits until its group commit is durable.
pub(crate) async fn write(writer: &mpsc::Sender<Msg>, op: WriteOp) -> StoreResult<WriteReply> {
    let (tx, rx) = oneshot::channel();
    writer
        .send(Msg::Write(op, tx))
        .await
        .map_err(|_| closed())?;
    let (result, op) = rx.await.map_err(|_| closed())?;
    drop(op);
    result
}

/// Asks a writer to finish what is queued and stop; returns when it has.
pub(crate) async fn stop(writer: &mpsc::Sender<Msg>) {
    let (tx, rx) = oneshot::channel();
    if writer.send(Msg::Close(tx)).await.is_ok() {
        // An error only means the writer is gone already.
        rx.await.ok();
    }
}

/// Runs a store's writer on a thread named `name` with a current-thread runtime of its own,
/// so that it is woken at once rather than queued behind request tasks on a busy runtime,
/// and its statements never hold up a runtime worker.
pub(crate) fn spawn_thread(
    name: &str,
    writer: impl Future<Output = ()> + Send + 'static,
) -> StoreResult<()> {
    let failed =
        |e: std::io::Error| StoreError::Unavailable(format!("cannot start the writer: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed)?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(writer))
        .map(drop)
        .map_err(failed)
}

/// A backend's side of its writer: where the writer gets its connection for each batch,
/// and what it does around a batch.
pub(crate) trait WriterConn: Send {
    /// The connection type (a pooled guard or an owned connection).
    type C: Exec;
    /// The connection for the next batch.
    fn get(&mut self) -> impl Future<Output = StoreResult<&mut Self::C>> + Send;
    /// The batch is answered: let go of what `get` took (a pooled connection goes back
    /// to the pool, which may be as small as one connection).
    fn done(&mut self) {}
    /// The batch failed as a whole: the connection may be broken.
    fn failed(&mut self) {}
    /// The batch's transaction has ended; its writes are about to be answered. `data`:
    /// it held more than audit records appended alone ([`sql::audit_only`]).
    fn committed(&mut self, _data: bool) {}
    /// What the backend's database does differently.
    fn dialect(&self) -> &'static dyn Dialect;
    /// The writer has stopped: close the connection. Runs before a closing store is
    /// answered, so that when `close` returns the writer's connection is closed too
    /// (on SQLite the last connection to close removes the WAL file).
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// The writer task: waits for a write, takes whatever else is queued (up to
/// [`MAX_BATCH`]), commits it all; on `Close`, refuses what is left, closes `conn` and
/// answers.
pub(crate) async fn writer<K: WriterConn>(mut conn: K, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(MAX_BATCH);
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(op, reply) => batch.push((op, reply)),
                Msg::Close(done) => closing.push(done),
            }
            if closing.is_empty() && batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(&mut conn, &mut batch).await;
        }
        if !closing.is_empty() {
            break;
        }
    }
    // Refuse what is still queued.
    rx.close();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Write(op, reply) => {
                reply.send((Err(closed()), op)).ok();
            }
            Msg::Close(done) => closing.push(done),
        }
    }
    conn.close().await;
    for done in closing {
        done.send(()).ok();
    }
}

/// Runs a batch as one transaction and answers every write (after `COMMIT`).
async fn commit<K: WriterConn>(conn: &mut K, batch: &mut Vec<(WriteOp, Reply)>) {
    let dialect = conn.dialect();
    let outcome = match conn.get().await {
        Ok(c) => grouped(c, dialect, batch).await,
        Err(e) => Err(e),
    };
    conn.committed(batch.iter().any(|(op, _)| !sql::audit_only(op)));
    match outcome {
        Ok(results) => {
            for ((op, reply), result) in batch.drain(..).zip(results) {
                reply.send((result, op)).ok();
            }
        }
        Err(e) => {
            conn.failed();
            tracing::error!(error = %e, writes = batch.len(), backend = dialect.name(), "group commit failed");
            for (op, reply) in batch.drain(..) {
                reply.send((Err(e.clone()), op)).ok();
            }
        }
    }
    // After the answers: what `done` does between batches (on SQLite, at times, the
    // writer's own checkpoint, a copy and an fsync of several milliseconds) must not hold
    // up the answers of a batch that is durable already.
    conn.done();
}

/// Opens the batch's transaction ([`Exec::begin`]); the audit head, where that read it.
async fn open<C: Exec>(c: &mut C) -> StoreResult<Option<Head>> {
    let Some(row) = c.begin().await? else {
        return Ok(None);
    };
    match head_of(&row) {
        Ok(h) => Ok(Some(h)),
        Err(e) => {
            c.exec(ROLLBACK, &[]).await.ok();
            Err(e)
        }
    }
}

/// Writes rarely fail, so a batch first runs without savepoints (two statements fewer
/// per write). If one write fails, that attempt is rolled back whole; a write alone has
/// its answer then (its transaction was its savepoint), a batch runs again with a
/// savepoint around each write, so only the failing one is lost. The audit records of
/// all writes are appended together before `COMMIT` ([`Batch`]). Where the dialect says
/// so, the first attempt inserts the batch's new cards in one statement before the
/// writes run.
async fn grouped<C: Exec>(
    c: &mut C,
    dialect: &'static dyn Dialect,
    batch: &[(WriteOp, Reply)],
) -> StoreResult<Vec<StoreResult<WriteReply>>> {
    let mut results = Vec::with_capacity(batch.len());
    let mut b = Batch {
        head: open(c).await?,
        ..Batch::default()
    };
    let Err(e) = apply_all(c, &mut b, dialect.bulk_insert(), batch, &mut results).await else {
        b.commit(c, batch, &mut results).await?;
        return Ok(results);
    };
    finish(c, ROLLBACK).await?;
    if batch.len() == 1 {
        return Ok(vec![Err(e)]);
    }
    results.clear();

    let mut b = Batch {
        head: open(c).await?,
        ..Batch::default()
    };
    for (i, (op, _)) in batch.iter().enumerate() {
        b.current = i;
        match savepoint(c, &mut b, op).await {
            Ok(r) => results.push(r),
            Err(e) => {
                finish(c, ROLLBACK).await.ok();
                return Err(e);
            }
        }
    }
    b.commit(c, batch, &mut results).await?;
    Ok(results)
}

/// The first attempt at a batch: the bulk card insert (with `bulk`), then every write
/// in order, without savepoints. The first error stops it.
async fn apply_all<C: Exec>(
    c: &mut C,
    b: &mut Batch,
    bulk: bool,
    batch: &[(WriteOp, Reply)],
    results: &mut Vec<StoreResult<WriteReply>>,
) -> StoreResult<()> {
    if bulk {
        b.cards = sql::insert_cards_bulk(c, batch.iter().map(|(op, _)| op)).await?;
    }
    for (i, (op, _)) in batch.iter().enumerate() {
        b.current = i;
        results.push(Ok(sql::apply(c, b, op).await?));
    }
    Ok(())
}

impl Batch {
    /// Appends the deferred audit records, then commits; rolls back if the append fails.
    async fn commit<C: Exec>(
        &self,
        c: &mut C,
        batch: &[(WriteOp, Reply)],
        results: &mut [StoreResult<WriteReply>],
    ) -> StoreResult<()> {
        let op_at = |i: usize| batch.get(i).map(|(op, _)| op);
        if let Err(e) = crate::sql::flush_audit(c, self.head, op_at, &self.deferred, results).await
        {
            finish(c, ROLLBACK).await.ok();
            return Err(e);
        }
        finish(c, COMMIT).await
    }
}

/// One write inside its savepoint. The outer error means the transaction is unusable.
async fn savepoint<C: Exec>(
    c: &mut C,
    b: &mut Batch,
    op: &WriteOp,
) -> StoreResult<StoreResult<WriteReply>> {
    c.exec(SAVEPOINT, &[]).await?;
    let result = sql::apply(c, b, op).await;
    if result.is_err() {
        c.exec(ROLLBACK_TO, &[]).await?;
    }
    c.exec(RELEASE, &[]).await?;
    Ok(result)
}

/// `COMMIT` or `ROLLBACK`; a failed `COMMIT` is rolled back.
async fn finish<C: Exec>(c: &mut C, end: &'static str) -> StoreResult<()> {
    match c.exec(end, &[]).await {
        Ok(_) => Ok(()),
        Err(e) => {
            if end == COMMIT {
                c.exec(ROLLBACK, &[]).await.ok();
            }
            Err(StoreError::Unavailable(format!("{end} failed: {e}")))
        }
    }
}
